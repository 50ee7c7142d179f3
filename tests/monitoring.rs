//! Monitoring end to end: input drift (PSI) against the generator's reference profiles with real traffic, the drift
//! webhook, model cards and checksums, and the metrics that describe them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::{client, get_json, post_json, repo_with, TestServer};
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

    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
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
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let info = format!(
        r#"sluice_model_info{{model="iris",owner="sluice maintainers",sha256="{sha}",source="models/generate.py (seed 7)",version="2"}} 1"#
    );
    assert!(metrics.lines().any(|l| l == info), "{info} missing");
    // Process metrics and the queue-time histogram are there too.
    assert!(metrics.contains("process_resident_memory_bytes"));
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    assert_eq!(post_json(&server, "/v2/models/iris/infer", &body).0, 200);
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"sluice_queue_duration_seconds_count{model="iris",version="2"} 1"#),
        "queue histogram"
    );
}
