//! Many models per replica: lazy models are listed and described at once and loaded on their first request
//! (concurrent first requests share one load), `models.max_loaded_models` keeps what is resident under the cap by
//! unloading the least recently used lazy model, eager models are never evicted, and a load slower than
//! `models.lazy_load_timeout_ms` answers 503 with Retry-After while it goes on.

mod common;

use std::path::Path;

use common::{client, get_json, iris_body, metrics_text, wait_for, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "lazy-admin";

/// `n` copies of the iris classifier (m00, m01, …) and an eager digits model.
fn repo(n: usize) -> tempfile::TempDir {
    let repo = common::repo_with(&["digits_mlp"]);
    std::fs::write(
        repo.path().join("digits_mlp/model.toml"),
        "load = \"eager\"\n",
    )
    .unwrap();
    let iris = std::fs::read(common::models_dir().join("iris/2/model.onnx")).unwrap();
    for i in 0..n {
        let dir = repo.path().join(format!("m{i:02}/1"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), &iris).unwrap();
    }
    repo
}

fn start(root: &Path, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![
        ("SLUICE__MODELS__DEFAULT_LOAD", "lazy"),
        ("SLUICE__ADMIN__TOKEN", TOKEN),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with(root, &[], &env)
}

fn infer(server: &TestServer, model: &str) -> (u16, Value) {
    let response = client()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&iris_body())
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

fn index(server: &TestServer) -> Vec<Value> {
    server
        .client
        .post(server.url("/v2/repository/index"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn row(server: &TestServer, model: &str) -> Value {
    index(server)
        .into_iter()
        .find(|r| r["name"] == model)
        .unwrap_or_else(|| panic!("no index row for {model}"))
}

/// The value of the metric line that starts with `prefix` (0 when absent).
fn metric(server: &TestServer, prefix: &str) -> f64 {
    metrics_text(server)
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn lazy_models_load_on_first_request_and_the_least_recently_used_leave_at_the_cap() {
    let repo = repo(8);
    let server = start(repo.path(), &[("SLUICE__MODELS__MAX_LOADED_MODELS", "4")]);

    // Listed and described at once, nothing loaded but the eager model.
    let m00 = row(&server, "m00");
    assert_eq!(m00["state"], "UNLOADED", "{m00}");
    assert!(m00["reason"].as_str().unwrap().contains("lazy"), "{m00}");
    assert_eq!(row(&server, "digits_mlp")["state"], "READY");
    assert_eq!(metric(&server, "sluice_models_resident "), 1.0);
    assert_eq!(
        metric(&server, "sluice_model_loads_total{cause=\"startup\"} "),
        1.0
    );
    let (status, described) = get_json(&server, "/v2/models/m00");
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["inputs"][0]["name"], "float_input");
    assert_eq!(described["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(
        row(&server, "m00")["state"],
        "UNLOADED",
        "describing does not load"
    );
    let (status, _) = get_json(&server, "/v2/health/ready");
    assert_eq!(status, 200, "lazy models do not hold readiness back");

    // Eight concurrent first requests: all answered, one load.
    let answers: Vec<u16> = std::thread::scope(|s| {
        let requests: Vec<_> = (0..8)
            .map(|_| s.spawn(|| infer(&server, "m00").0))
            .collect();
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(answers, [200; 8]);
    assert_eq!(
        metric(&server, "sluice_model_loads_total{cause=\"lazy\"} "),
        1.0
    );
    assert_eq!(row(&server, "m00")["state"], "READY");

    // Five more models, one after another: the cap (4, the eager one included) holds; m00, used least recently,
    // goes first.
    for model in ["m01", "m02", "m03", "m04", "m05"] {
        assert_eq!(infer(&server, model).0, 200, "{model}");
        assert!(metric(&server, "sluice_models_resident ") <= 4.0);
    }
    assert_eq!(metric(&server, "sluice_models_resident "), 4.0);
    assert_eq!(
        metric(&server, "sluice_model_loads_total{cause=\"lazy\"} "),
        6.0
    );
    let evicted = row(&server, "m00");
    assert_eq!(evicted["state"], "UNLOADED", "{evicted}");
    assert!(
        evicted["reason"].as_str().unwrap().contains("evicted"),
        "{evicted}"
    );
    assert_eq!(
        metric(&server, "sluice_model_evictions_total{model=\"m00\"} "),
        1.0
    );
    assert_eq!(
        row(&server, "digits_mlp")["state"],
        "READY",
        "an eager model is never evicted"
    );

    // Evicted, then asked for again: loaded again.
    assert_eq!(infer(&server, "m00").0, 200);
    assert_eq!(row(&server, "m00")["state"], "READY");
    assert!(metric(&server, "sluice_model_first_request_wait_seconds_count ") >= 7.0);
}

/// A load longer than the timeout: 503 with Retry-After, the load goes on, and the retry is answered.
#[test]
fn a_lazy_load_past_its_timeout_answers_503_and_goes_on() {
    let repo = common::slow_repo(&[]);
    // A warmup of 2000 long rows makes the load far slower than the 1 ms the request waits.
    let rows = common::SLOW_ROWS;
    let warmup = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 256],
        "data": vec![0.5; rows * 256]}]});
    std::fs::write(repo.path().join("slow/warmup.json"), warmup.to_string()).unwrap();
    std::fs::write(
        repo.path().join("slow/model.toml"),
        "load = \"lazy\"\n[warmup]\nrequest = \"warmup.json\"\n",
    )
    .unwrap();
    let server = start(
        repo.path(),
        &[("SLUICE__MODELS__LAZY_LOAD_TIMEOUT_MS", "1")],
    );
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256], "data": vec![0.5; 256]}]});
    let response = client()
        .post(server.url("/v2/models/slow/infer"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error: Value = response.json().unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("did not load within 1 ms"),
        "{error}"
    );
    wait_for("the load to finish", || {
        row(&server, "slow")["state"] == "READY"
    });
    let response = client()
        .post(server.url("/v2/models/slow/infer"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// Six clients, each on its own lazy model, under a cap of two: models are evicted and loaded again all the time,
/// and no request fails (a model evicted between its load and its request is loaded again).
#[test]
fn no_request_fails_while_models_churn_through_a_small_cap() {
    let repo = repo(6);
    std::fs::remove_dir_all(repo.path().join("digits_mlp")).unwrap();
    let server = start(repo.path(), &[("SLUICE__MODELS__MAX_LOADED_MODELS", "2")]);
    let failures: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..6)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    let model = format!("m{i:02}");
                    (0..30)
                        .map(|_| infer(server, &model))
                        .filter(|(status, _)| *status != 200)
                        .map(|(status, body)| format!("{model}: {status} {body}"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(metric(&server, "sluice_models_resident ") <= 2.0);
    assert!(
        metric(&server, "sluice_model_loads_total{cause=\"lazy\"} ") > 6.0,
        "models were evicted and reloaded"
    );
}

/// Gives m00 a second version, and a policy that serves both.
fn second_version(root: &Path) {
    let iris = std::fs::read(common::models_dir().join("iris/2/model.onnx")).unwrap();
    common::place(root, "m00", 2, &iris);
    std::fs::write(root.join("m00/model.toml"), "version_policy = \"all\"\n").unwrap();
}

/// A lazy model with two versions: each loads on its own first request, and the index shows each version's
/// residency.
#[test]
fn each_version_of_a_lazy_model_loads_on_its_own_first_request() {
    let repo = repo(1);
    std::fs::remove_dir_all(repo.path().join("digits_mlp")).unwrap();
    second_version(repo.path());
    let server = start(repo.path(), &[]);
    let state = |v: u64| common::index_row(&server, TOKEN, "m00", v).unwrap()["state"].clone();
    assert_eq!((state(1), state(2)), (json!("UNLOADED"), json!("UNLOADED")));

    // Version 1, named: only it loads; the default (2) stays unloaded.
    assert_eq!(infer(&server, "m00/versions/1").0, 200);
    assert_eq!((state(1), state(2)), (json!("READY"), json!("UNLOADED")));
    let (status, described) = get_json(&server, "/v2/models/m00/versions/2");
    assert_eq!(status, 200, "an unloaded version is described: {described}");
    assert_eq!(row(&server, "m00")["state"], "READY");

    // No version: the default, 2, loads.
    let response = client()
        .post(server.url("/v2/models/m00/infer"))
        .json(&iris_body())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-model-version"], "2");
    assert_eq!((state(1), state(2)), (json!("READY"), json!("READY")));
    assert_eq!(
        metric(&server, "sluice_model_loads_total{cause=\"lazy\"} "),
        2.0
    );
}

/// `models.max_loaded_bytes`: versions leave one at a time, least recently used first, to keep the estimated
/// resident bytes under the cap; a version that cannot fit beside what may not leave is refused with 503.
#[test]
fn the_byte_cap_evicts_single_versions_and_refuses_what_cannot_fit() {
    let repo = repo(2);
    second_version(repo.path());
    // What one iris version and the eager digits model are estimated to hold, measured on a server without a cap.
    let (one, eager) = {
        let server = start(repo.path(), &[]);
        let eager = metric(&server, "sluice_models_resident_bytes ");
        assert_eq!(infer(&server, "m01").0, 200);
        (
            metric(&server, "sluice_models_resident_bytes ") - eager,
            eager,
        )
    };
    assert!(one > 0.0 && eager > 0.0, "{one} {eager}");

    // Room for the eager model and two iris versions.
    let cap = (eager + 2.5 * one) as u64;
    let server = start(
        repo.path(),
        &[("SLUICE__MODELS__MAX_LOADED_BYTES", &cap.to_string())],
    );
    let state = |m: &str, v: u64| common::index_row(&server, TOKEN, m, v).unwrap();
    assert_eq!(infer(&server, "m00/versions/1").0, 200);
    assert_eq!(infer(&server, "m00/versions/2").0, 200);
    assert_eq!(infer(&server, "m00/versions/2").0, 200);
    // A third version: the least recently used one (m00 version 1) leaves, its sibling stays.
    assert_eq!(infer(&server, "m01").0, 200);
    let v1 = state("m00", 1);
    assert_eq!(v1["state"], "UNLOADED", "{v1}");
    assert!(v1["reason"].as_str().unwrap().contains("evicted"), "{v1}");
    assert_eq!(state("m00", 2)["state"], "READY");
    assert_eq!(state("m01", 1)["state"], "READY");
    assert!(metric(&server, "sluice_models_resident_bytes ") <= cap as f64);
    assert_eq!(
        metric(&server, "sluice_model_evictions_total{model=\"m00\"} "),
        1.0
    );
    drop(server);

    // A cap the eager model alone fills: a lazy version cannot fit, and is refused, saying why.
    let server = start(
        repo.path(),
        &[(
            "SLUICE__MODELS__MAX_LOADED_BYTES",
            &(eager as u64).to_string(),
        )],
    );
    let (status, body) = infer(&server, "m01");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("models.max_loaded_bytes"),
        "{body}"
    );
    assert_eq!(row(&server, "m01")["state"], "UNLOADED");
}

/// A lazy version whose load fails: 503 saying why, shown as unloaded and failed in the index, and not tried again
/// on every request (only once its files change).
#[test]
fn a_lazy_version_that_fails_to_load_says_why_and_is_not_retried_until_it_changes() {
    let repo = repo(1);
    std::fs::write(
        repo.path().join("m00/model.toml"),
        "[warmup]\nrequest = \"missing.json\"\n",
    )
    .unwrap();
    let server = start(repo.path(), &[]);
    for _ in 0..3 {
        let (status, body) = infer(&server, "m00");
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("missing.json"),
            "{body}"
        );
    }
    assert_eq!(
        metric(&server, "sluice_model_load_failures_total{model=\"m00\"} "),
        1.0,
        "tried once"
    );
    let failed = row(&server, "m00");
    assert_eq!(failed["state"], "UNLOADED", "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("failed to load"),
        "{failed}"
    );
    let (status, _) = get_json(&server, "/v2/health/ready");
    assert_eq!(status, 200, "a lazy model does not hold readiness back");

    // Fixed: the next request loads it.
    std::fs::write(repo.path().join("m00/model.toml"), "").unwrap();
    wait_for("the fixed model to load on request", || {
        infer(&server, "m00").0 == 200
    });
    assert_eq!(row(&server, "m00")["state"], "READY");
}

/// What routing refers to and a `default_version` are pinned: they stay resident while other lazy models churn
/// through the cap, and count towards it.
#[test]
fn versions_that_routing_or_default_version_pin_are_never_evicted() {
    let repo = repo(5);
    std::fs::remove_dir_all(repo.path().join("digits_mlp")).unwrap();
    std::fs::write(repo.path().join("m00/model.toml"), "default_version = 1\n").unwrap();
    let routing = repo.path().join("routing.toml");
    std::fs::write(&routing, "[m01]\nstable = 1\n").unwrap();
    let server = start(
        repo.path(),
        &[
            ("SLUICE__MODELS__MAX_LOADED_MODELS", "3"),
            ("SLUICE__ROUTING__FILE", routing.to_str().unwrap()),
        ],
    );
    // Routing's version loads with the policy; the default_version one on its first request.
    wait_for("routing's version to load", || {
        row(&server, "m01")["state"] == "READY"
    });
    assert_eq!(infer(&server, "m00").0, 200);
    for _ in 0..2 {
        for model in ["m02", "m03", "m04"] {
            assert_eq!(infer(&server, model).0, 200, "{model}");
            assert_eq!(row(&server, "m00")["state"], "READY");
            assert_eq!(row(&server, "m01")["state"], "READY");
            assert!(metric(&server, "sluice_models_resident ") <= 3.0);
        }
    }
    assert_eq!(
        metric(&server, "sluice_model_evictions_total{model=\"m03\"} "),
        2.0,
        "the unpinned models took turns in the one free place"
    );
}
