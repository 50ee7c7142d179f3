//! Dynamic batching end to end: concurrent requests are merged into larger runs and every client gets exactly the
//! outputs an unbatched run gives; models without a dynamic leading dimension are refused with a clear reason.

mod common;

use common::{metrics_text, post_json, repo_with, TestServer};
use serde_json::{json, Value};

#[test]
fn batched_results_equal_unbatched_results() {
    let repo = repo_with(&["digits_mlp", "misdeclared"]);
    // The same network twice: `batched` with dynamic batching, `digits_mlp` without.
    common::copy_dir(
        &repo.path().join("digits_mlp"),
        &repo.path().join("batched"),
    );
    std::fs::write(
        repo.path().join("batched/model.toml"),
        "[session]\npool_size = 1\n[batching]\nmax_batch_size = 16\nmax_queue_delay_us = 20000\n",
    )
    .unwrap();
    std::fs::write(
        repo.path().join("misdeclared/model.toml"),
        "[batching]\nmax_batch_size = 8\n",
    )
    .unwrap();
    let server = TestServer::start(repo.path());

    let images = common::digit_images(48, 0x1234_5678_9abc_def1);
    let body = |image: &[f32]| json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 64], "data": image}]});
    let (server_ref, body) = (&server, &body);
    let batched: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = images
            .iter()
            .map(|image| {
                s.spawn(move || post_json(server_ref, "/v2/models/batched/infer", &body(image)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (status, reply) = h.join().unwrap();
                assert_eq!(status, 200, "{reply}");
                reply
            })
            .collect()
    });
    for (image, reply) in images.iter().zip(&batched) {
        let (_, plain) = post_json(&server, "/v2/models/digits_mlp/infer", &body(image));
        assert_eq!(
            reply["outputs"], plain["outputs"],
            "a batched run must answer exactly as an unbatched one"
        );
        assert_eq!(reply["outputs"][1]["shape"], json!([1, 10]));
    }
    let metrics = metrics_text(&server);
    let value = |name: &str| -> f64 {
        let prefix = format!(r#"{name}{{model="batched",version="1"}} "#);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing"))
            .parse()
            .unwrap()
    };
    let (rows, runs) = (
        value("sluice_batch_size_sum"),
        value("sluice_batch_size_count"),
    );
    eprintln!(
        "48 concurrent single-row requests ran as {runs} batches ({:.1} rows per run)",
        rows / runs
    );
    assert_eq!(rows, 48.0);
    assert!(runs < 48.0, "requests were merged");
    // The statistics extension: 48 inferences in fewer executions, each batch size's runs counted.
    let (_, reply) = common::get_json(&server, "/v2/models/batched/stats");
    let stats = &reply["model_stats"][0];
    assert_eq!(stats["inference_count"], 48);
    assert_eq!(stats["execution_count"], runs as u64);
    let batches = stats["batch_stats"].as_array().unwrap();
    let rows_run: u64 = batches
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(rows_run, 48, "{batches:?}");

    let (status, reply) = common::get_json(&server, "/v2/models/misdeclared/ready");
    assert_eq!(status, 503);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("batching needs a dynamic leading dimension"),
        "{reply}"
    );
}
