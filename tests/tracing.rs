//! Trace correlation in what sluice writes itself: with tracing on, the response's `traceparent`, the access log
//! line and the prediction-log record of a request name the same trace and server span, the caller's trace when it
//! sent a `traceparent`. (Span export, to a real OTLP collector, is tested in `tests/conformance/test_tracing.py`.)

mod common;

use common::{client, iris_body, repo_with, TestServer};

#[test]
fn the_response_the_access_log_and_the_payload_log_name_the_same_trace() {
    let repo = repo_with(&["iris"]);
    let model_toml = repo.path().join("iris/model.toml");
    let mut config = std::fs::read_to_string(&model_toml).unwrap();
    config.push_str("\n[payload_log]\nsample_rate = 1.0\n");
    std::fs::write(&model_toml, config).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let records = logs.path().join("payloads.jsonl");
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__TRACING__ENABLED", "true"),
            // No collector listens there: export fails (and is counted), requests are unaffected.
            ("SLUICE__TRACING__ENDPOINT", "http://127.0.0.1:9/v1/traces"),
            ("SLUICE__LOG__FORMAT", "json"),
            ("SLUICE__LOG__ACCESS", "true"),
            ("SLUICE__PAYLOAD_LOG__SINK", "file"),
            ("SLUICE__PAYLOAD_LOG__PATH", records.to_str().unwrap()),
        ],
    );
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = client()
        .post(server.url("/v2/models/iris/infer"))
        .header("traceparent", caller)
        .header("x-request-id", "traced-1")
        .json(&iris_body())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = answered.split('-').collect();
    assert_eq!(parts.len(), 4, "{answered}");
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "sluice's own server span");
    assert_eq!(parts[3], "01");

    let line = server.wait_for_log_line(|l| l["fields"]["request_id"] == "traced-1");
    assert_eq!(line["fields"]["trace_id"], parts[1], "{line}");
    assert_eq!(line["fields"]["span_id"], parts[2], "{line}");

    common::wait_for("the prediction record", || {
        std::fs::read_to_string(&records).is_ok_and(|t| t.contains("traced-1"))
    });
    let text = std::fs::read_to_string(&records).unwrap();
    let record: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["request_id"] == "traced-1")
        .unwrap();
    assert_eq!(record["trace_id"], parts[1]);
    assert_eq!(record["span_id"], parts[2]);

    // Without a traceparent, a new trace, named all the same.
    let response = client()
        .post(server.url("/v2/models/iris/infer"))
        .json(&iris_body())
        .send()
        .unwrap();
    let fresh = response.headers()["traceparent"].to_str().unwrap();
    assert!(
        !fresh.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{fresh}"
    );
}

#[test]
fn tracing_settings_that_cannot_work_are_refused_at_start() {
    let repo = repo_with(&["iris"]);
    for (key, value, says) in [
        ("SLUICE__TRACING__SAMPLE_RATIO", "1.5", "sample_ratio"),
        (
            "SLUICE__TRACING__RESOURCE_ATTRIBUTES",
            "team",
            "resource_attributes",
        ),
        ("SLUICE__TRACING__PROTOCOL", "carrier-pigeon", "protocol"),
    ] {
        let (code, output) = common::run_sluice(
            &["--models", repo.path().to_str().unwrap(), "--check-config"],
            &[("SLUICE__TRACING__ENABLED", "true"), (key, value)],
        );
        assert_ne!(code, Some(0), "{key}={value} accepted: {output}");
        assert!(output.contains(says), "{key}={value}: {output}");
    }
}
