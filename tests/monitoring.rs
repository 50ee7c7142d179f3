//! Monitoring end to end: input drift (PSI) against the generator's reference profiles with real traffic, the drift
//! webhook, model cards and checksums, and the metrics that describe them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::{client, get_json, iris_body, post_json, repo_with, TestServer};
use serde_json::{json, Value};

/// Deterministic uniform numbers in [0, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rows drawn from the reference profile itself: a bucket by its expected share, then a value inside it.
fn rows_like_reference(reference: &Value, n: usize, shift: f64, rng: &mut Rng) -> Vec<f32> {
    let features = reference["inputs"]["float_input"]["features"]
        .as_array()
        .unwrap();
    let mut data = Vec::with_capacity(n * features.len());
    for _ in 0..n {
        for f in features {
            let edges: Vec<f64> = f["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_f64().unwrap())
                .collect();
            let shares: Vec<f64> = f["proportions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect();
            let mut pick = rng.next() * shares.iter().sum::<f64>();
            let bucket = shares.iter().position(|s| {
                pick -= s;
                pick < 0.0
            });
            let bucket = bucket.unwrap_or(shares.len() - 1);
            let low = if bucket == 0 {
                edges[0] - 0.5
            } else {
                edges[bucket - 1]
            };
            let high = if bucket == edges.len() {
                edges[edges.len() - 1] + 0.5
            } else {
                edges[bucket]
            };
            data.push((low + (high - low) * rng.next() * 0.999 + shift) as f32);
        }
    }
    data
}

fn send_rows(server: &TestServer, data: &[f32]) {
    for chunk in data.chunks(4 * 50) {
        let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [chunk.len() / 4, 4], "data": chunk}]});
        let (status, reply) = post_json(server, "/v2/models/iris/versions/2/infer", &body);
        assert_eq!(status, 200, "{reply}");
    }
}

fn overall_psi(server: &TestServer) -> f64 {
    let (_, drift) = get_json(server, "/v2/models/iris/drift");
    let v2 = drift["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "2")
        .unwrap()
        .clone();
    v2["report"]["overall_psi"].as_f64().unwrap()
}

/// A one-shot HTTP receiver for the webhook: returns the body of every POST it gets.
fn webhook_receiver() -> (String, mpsc::Receiver<Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/retrain", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
    });
    (url, rx)
}

/// In-distribution traffic stays below 0.1; shifted traffic goes above 0.25, exported as gauges and raising one
/// (debounced) webhook call.
#[test]
fn drift_is_measured_against_the_training_profile() {
    let repo = repo_with(&["iris"]);
    let (url, calls) = webhook_receiver();
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__MONITORING__DRIFT_WEBHOOK", &url),
            ("SLUICE__MONITORING__DRIFT_WINDOW", "1000"),
        ],
    );
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.path().join("iris/2/reference.json")).unwrap(),
    )
    .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    send_rows(
        &server,
        &rows_like_reference(&reference, 1000, 0.0, &mut rng),
    );
    let calm = overall_psi(&server);
    // Nothing is sent while traffic matches: give the watcher (every 2 s) a chance to misfire.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        calls.try_recv().is_err(),
        "the webhook fired for in-distribution traffic"
    );

    send_rows(
        &server,
        &rows_like_reference(&reference, 1000, 1.5, &mut rng),
    );
    let shifted = overall_psi(&server);
    eprintln!("drift on iris v2: PSI {calm:.4} in distribution, {shifted:.4} shifted by +1.5 cm");
    assert!(calm < 0.1, "in-distribution PSI {calm}");
    assert!(shifted > 0.25, "shifted PSI {shifted}");

    let event = calls
        .recv_timeout(Duration::from_secs(10))
        .expect("the drift webhook was called");
    assert_eq!(
        (event["model"].as_str(), event["version"].as_str()),
        (Some("iris"), Some("2"))
    );
    assert!(event["overall_psi"].as_f64().unwrap() > 0.25, "{event}");
    send_rows(
        &server,
        &rows_like_reference(&reference, 200, 1.5, &mut rng),
    );
    std::thread::sleep(Duration::from_millis(4500));
    assert!(calls.try_recv().is_err(), "the webhook is debounced");

    let metrics = common::metrics_text(&server);
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"sluice_drift_psi_overall{model="iris",version="2"}"#))
        .unwrap();
    assert!(
        line.split(' ').next_back().unwrap().parse::<f64>().unwrap() > 0.25,
        "{line}"
    );
    assert!(metrics.contains(
        r#"sluice_drift_psi{feature="petal_length",input="float_input",model="iris",version="2"}"#
    ));
    assert!(metrics.contains(r#"sluice_drift_alerts_total{model="iris",version="2"} 1"#));
    assert!(server
        .logs()
        .join("\n")
        .contains("input drift above drift_warn"));
}

/// Cards are served and exported; a checksum that does not match refuses the load with a clear reason.
#[test]
fn model_cards_and_checksums() {
    let repo = repo_with(&["iris"]);
    // Version 3: the v1 file under v2's card, whose sha256 names the v2 file.
    std::fs::create_dir_all(repo.path().join("iris/3")).unwrap();
    std::fs::copy(
        repo.path().join("iris/1/model.onnx"),
        repo.path().join("iris/3/model.onnx"),
    )
    .unwrap();
    std::fs::copy(
        repo.path().join("iris/2/card.toml"),
        repo.path().join("iris/3/card.toml"),
    )
    .unwrap();
    let server = TestServer::start(repo.path());

    let (status, card) = get_json(&server, "/v2/models/iris/versions/2/card");
    assert_eq!(status, 200);
    assert_eq!(card["card"]["owner"], "sluice maintainers");
    assert!(
        card["card"]["metrics"]["test_accuracy"].as_f64().unwrap() > 0.9,
        "{card}"
    );
    let (_, default_card) = get_json(&server, "/v2/models/iris/card");
    assert_eq!(default_card["version"], "2");

    let (status, reply) = get_json(&server, "/v2/models/iris/versions/3/ready");
    assert_eq!(status, 503);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{reply}"
    );

    let sha = card["card"]["sha256"].as_str().unwrap();
    let metrics = common::metrics_text(&server);
    let info = format!(
        r#"sluice_model_info{{model="iris",owner="sluice maintainers",sha256="{sha}",source="models/generate.py (seed 7)",version="2"}} 1"#
    );
    assert!(metrics.lines().any(|l| l == info), "{info} missing");
    // Process metrics and the queue-time histogram are there too.
    assert!(metrics.contains("process_resident_memory_bytes"));
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    assert_eq!(post_json(&server, "/v2/models/iris/infer", &body).0, 200);
    let metrics = common::metrics_text(&server);
    assert!(
        metrics.contains(r#"sluice_queue_duration_seconds_count{model="iris",version="2"} 1"#),
        "queue histogram"
    );
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Sampled predictions become JSON lines with the documented fields, redacted as each model.toml says, in
/// size-rotated files; a model without a policy logs nothing.
#[test]
fn payload_logs_are_redacted_and_rotated() {
    let repo = repo_with(&["iris", "tumor_risk", "digits_mlp"]);
    append(
        &repo.path().join("iris/model.toml"),
        "\n[payload_log]\nsample_rate = 1.0\nremove_features = { float_input = [1] }\n",
    );
    append(
        &repo.path().join("tumor_risk/model.toml"),
        "\n[payload_log]\nsample_rate = 1.0\nremove = [\"lymph_nodes\"]\nhash = [\"clinic\"]\n",
    );
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("payloads/log.jsonl");
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__PAYLOAD_LOG__SINK", "file"),
            ("SLUICE__PAYLOAD_LOG__PATH", path.to_str().unwrap()),
            ("SLUICE__PAYLOAD_LOG__MAX_FILE_BYTES", "3000"),
            ("SLUICE__PAYLOAD_LOG__MAX_FILES", "2"),
        ],
    );
    let iris = iris_body();
    for i in 0..30 {
        let response = client()
            .post(server.url("/v2/models/iris/infer"))
            .header("x-request-id", format!("req-{i}"))
            .json(&iris)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let tumor = json!({"inputs": [
        {"name": "mean_radius", "datatype": "FP32", "shape": [1, 1], "data": [17.99]},
        {"name": "mean_texture", "datatype": "FP32", "shape": [1, 1], "data": [10.38]},
        {"name": "lymph_nodes", "datatype": "INT64", "shape": [1, 1], "data": [5]},
        {"name": "clinic", "datatype": "BYTES", "shape": [1, 1], "data": ["north"]}]});
    assert_eq!(
        post_json(&server, "/v2/models/tumor_risk/infer", &tumor).0,
        200
    );
    let digits = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 64], "data": vec![0.0; 64]}]});
    assert_eq!(
        post_json(&server, "/v2/models/digits_mlp/infer", &digits).0,
        200
    );

    let read_all = || {
        let mut lines = Vec::new();
        for name in ["log.jsonl.2", "log.jsonl.1", "log.jsonl"] {
            if let Ok(text) = std::fs::read_to_string(logs.path().join("payloads").join(name)) {
                lines.extend(
                    text.lines()
                        .map(|l| serde_json::from_str::<Value>(l).unwrap()),
                );
            }
        }
        lines
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !read_all().iter().any(|r| r["model"] == "tumor_risk") {
        assert!(
            std::time::Instant::now() < deadline,
            "the tumor_risk record never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let records = read_all();
    let dir = logs.path().join("payloads");
    assert!(dir.join("log.jsonl.1").exists(), "the file was rotated");
    assert!(
        !dir.join("log.jsonl.3").exists(),
        "at most max_files old files are kept"
    );
    for name in ["log.jsonl", "log.jsonl.1"] {
        assert!(
            std::fs::metadata(dir.join(name)).unwrap().len() <= 3000 + 600,
            "{name} is size-bounded"
        );
    }
    assert!(
        records.iter().all(|r| r["model"] != "digits_mlp"),
        "no policy, no logging"
    );
    let newest_iris = records.iter().rev().find(|r| r["model"] == "iris").unwrap();
    assert_eq!(newest_iris["request_id"], "req-29");
    assert_eq!(
        (
            newest_iris["version"].as_str(),
            newest_iris["variant"].as_str()
        ),
        (Some("2"), Some("stable"))
    );
    assert_eq!(
        newest_iris["inputs"][0]["data"],
        json!([
            5.099999904632568,
            null,
            1.399999976158142,
            0.20000000298023224
        ])
    );
    assert_eq!(newest_iris["outputs"][0]["name"], "label");
    assert!(
        newest_iris["latency_ms"].as_f64().unwrap() > 0.0
            && newest_iris["time"].as_f64().unwrap() > 1.7e9
    );
    let t = records.iter().find(|r| r["model"] == "tumor_risk").unwrap();
    let names: Vec<&str> = t["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["mean_radius", "mean_texture", "clinic"],
        "lymph_nodes removed"
    );
    let clinic = t["inputs"][2]["data"][0].as_str().unwrap();
    assert!(
        clinic.starts_with("sha256:") && !clinic.contains("north"),
        "{clinic}"
    );
    let raw: String = ["log.jsonl", "log.jsonl.1"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(dir.join(n)).ok())
        .collect();
    assert!(
        !raw.contains("\"north\""),
        "the raw value never reaches the log"
    );
}

/// A sink that never answers: requests are not slowed or failed; the bounded buffer drops and counts records.
#[test]
fn a_stuck_payload_sink_drops_instead_of_slowing_requests() {
    let repo = repo_with(&["iris"]);
    append(
        &repo.path().join("iris/model.toml"),
        "\n[payload_log]\nsample_rate = 1.0\n",
    );
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/log", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__PAYLOAD_LOG__SINK", "http"),
            ("SLUICE__PAYLOAD_LOG__URL", &url),
            ("SLUICE__PAYLOAD_LOG__BUFFER", "2"),
        ],
    );
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    for _ in 0..50 {
        assert_eq!(post_json(&server, "/v2/models/iris/infer", &body).0, 200);
    }
    let metrics = common::metrics_text(&server);
    let line = metrics
        .lines()
        .find(|l| l.starts_with(r#"sluice_payload_log_dropped_total{model="iris"}"#))
        .unwrap();
    let dropped: u64 = line.split(' ').next_back().unwrap().parse().unwrap();
    eprintln!("stuck payload sink: 50 requests answered, {dropped} records dropped");
    assert!(dropped >= 45, "{line}");
}

/// One far-out row is no drift verdict: below `monitoring.drift_min_rows` only the row count is exported (no PSI
/// gauge, no warning); with the minimum at one row the same request does warn.
#[test]
fn drift_needs_a_minimum_of_rows_before_a_verdict() {
    let row = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [30.0, 30.0, 30.0, 30.0]}]});
    for (min_rows, verdict) in [("300", false), ("1", true)] {
        let repo = repo_with(&["iris"]);
        let server = TestServer::start_with(
            repo.path(),
            &[],
            &[("SLUICE__MONITORING__DRIFT_MIN_ROWS", min_rows)],
        );
        assert_eq!(
            post_json(&server, "/v2/models/iris/versions/2/infer", &row).0,
            200
        );
        common::wait_for("the row count", || {
            common::metrics_text(&server)
                .contains(r#"sluice_drift_rows{model="iris",version="2"} 1"#)
        });
        // The watcher runs every 2 s: give it a full round after counting.
        std::thread::sleep(Duration::from_millis(2200));
        let metrics = common::metrics_text(&server);
        let warned = server
            .logs()
            .iter()
            .any(|l| l.contains("input drift above drift_warn"));
        assert_eq!(
            (metrics.contains("sluice_drift_psi_overall{"), warned),
            (verdict, verdict),
            "min rows {min_rows}"
        );
    }
}
