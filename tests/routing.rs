//! Traffic management end to end: canary shares, sticky keys across replicas, shadow mirroring and its numbers,
//! promote and rollback under load, automatic rollback, per-variant metrics.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{client, get_json, iris_body, post_json, wait_for, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "routing-admin";

/// `m`: versions 1 and 2 are the same iris classifier; the version policy alone would load only v2.
fn repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let iris = std::fs::read(common::models_dir().join("iris/2/model.onnx")).unwrap();
    for v in [1, 2] {
        std::fs::create_dir_all(repo.path().join(format!("m/{v}"))).unwrap();
        std::fs::write(repo.path().join(format!("m/{v}/model.onnx")), &iris).unwrap();
    }
    repo
}

fn start(root: &Path, routing: &Path, extra: &[(&str, &str)]) -> TestServer {
    let mut env = vec![
        ("SLUICE__ROUTING__FILE", routing.to_str().unwrap()),
        ("SLUICE__ADMIN__TOKEN", TOKEN),
        ("SLUICE__MODELS__POLL_INTERVAL_MS", "200"),
    ];
    env.extend_from_slice(extra);
    TestServer::start_with(root, &[], &env)
}

fn write_policy(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// (status, x-sluice-variant, x-model-version) of one request.
fn infer(
    server: &TestServer,
    client: &reqwest::blocking::Client,
    key: Option<&str>,
) -> (u16, String, String) {
    let mut request = client
        .post(server.url("/v2/models/m/infer"))
        .json(&iris_body());
    if let Some(key) = key {
        request = request.header("x-user", key);
    }
    let response = request.send().unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map_or(String::new(), |v| v.to_str().unwrap().to_owned())
    };
    (
        response.status().as_u16(),
        header("x-sluice-variant"),
        header("x-model-version"),
    )
}

fn policy_weight(server: &TestServer) -> f64 {
    get_json(server, "/v2/models/m/routing").1["policy"]["variants"][0]["weight"]
        .as_f64()
        .unwrap_or(-1.0)
}

fn canary_policy(weight: f64) -> String {
    format!(
        "[m]\nstable = 1\nkey_header = \"x-user\"\nvariants = [{{ name = \"canary\", version = 2, weight = {weight:.1} }}]\n"
    )
}

/// 20,000 keyless requests with a 10 % canary: the canary's share is 10 % ± 1 %.
#[test]
fn a_ten_percent_canary_takes_ten_percent() {
    let repo = repo();
    let routing = repo.path().join("routing.toml");
    write_policy(&routing, &canary_policy(10.0));
    let server = start(repo.path(), &routing, &[]);
    let canary = AtomicUsize::new(0);
    let total = 20_000;
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let client = client();
                for _ in 0..total / 8 {
                    let (status, variant, version) = infer(&server, &client, None);
                    assert_eq!(status, 200);
                    match variant.as_str() {
                        "canary" => {
                            assert_eq!(version, "2");
                            canary.fetch_add(1, Ordering::Relaxed);
                        }
                        "stable" => assert_eq!(version, "1"),
                        other => panic!("unexpected variant {other}"),
                    }
                }
            });
        }
    });
    let share = canary.load(Ordering::Relaxed) as f64 / total as f64 * 100.0;
    eprintln!("canary share over {total} keyless requests: {share:.2} %");
    assert!((9.0..=11.0).contains(&share), "canary share {share:.2} %");
    // Per-variant metrics: comparable in PromQL.
    let metrics = common::metrics_text(&server);
    assert!(metrics.contains(
        r#"sluice_requests_total{model="m",outcome="success",protocol="http",variant="canary",version="2"}"#
    ));
    assert!(metrics.contains(
        r#"sluice_request_duration_seconds_count{model="m",protocol="http",variant="stable",version="1"}"#
    ));
}

/// 10,000 keys against two replicas with the same file get the same variants; growing the canary from 10 % to 20 %
/// moves no key out of it.
#[test]
fn sticky_keys_agree_across_replicas_and_stay_when_the_canary_grows() {
    let repo = repo();
    let routing = repo.path().join("routing.toml");
    write_policy(&routing, &canary_policy(10.0));
    let a = start(repo.path(), &routing, &[]);
    let b = start(repo.path(), &routing, &[]);
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let assign = |server: &TestServer| -> Vec<String> {
        let chunks: Vec<Vec<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .chunks(1250)
                .map(|chunk| {
                    s.spawn(move || {
                        let client = client();
                        chunk
                            .iter()
                            .map(|k| {
                                let (status, variant, _) = infer(server, &client, Some(k));
                                assert_eq!(status, 200);
                                variant
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        chunks.concat()
    };
    let first_a = assign(&a);
    let first_b = assign(&b);
    assert_eq!(
        first_a, first_b,
        "two replicas with one configuration route every key alike"
    );
    let in_canary = first_a.iter().filter(|v| *v == "canary").count();
    assert!(
        (900..=1100).contains(&in_canary),
        "{in_canary} keys in a 10 % canary"
    );

    write_policy(&routing, &canary_policy(20.0));
    wait_for("both replicas to apply 20 %", || {
        policy_weight(&a) == 20.0 && policy_weight(&b) == 20.0
    });
    let second_a = assign(&a);
    let second_b = assign(&b);
    assert_eq!(second_a, second_b);
    let moved_out = first_a
        .iter()
        .zip(&second_a)
        .filter(|(x, y)| *x == "canary" && *y != "canary")
        .count();
    assert_eq!(moved_out, 0, "keys left the canary when it grew");
    let grown = second_a.iter().filter(|v| *v == "canary").count();
    eprintln!("keys in canary: {in_canary} at 10 %, {grown} at 20 %; none moved out");
    assert!(
        (1850..=2150).contains(&grown),
        "{grown} keys in a 20 % canary"
    );
}

/// A version in the URL bypasses routing; a variant whose version is not loaded falls back to stable.
#[test]
fn explicit_versions_bypass_routing_and_missing_variants_fall_back() {
    let repo = repo();
    let routing = repo.path().join("routing.toml");
    write_policy(
        &routing,
        "[m]\nstable = 1\nvariants = [{ name = \"canary\", version = 9, weight = 100.0 }]\n",
    );
    let server = start(repo.path(), &routing, &[]);
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            infer(&server, &client, None),
            (200, "stable".into(), "1".into())
        );
    }
    let response = client
        .post(server.url("/v2/models/m/versions/2/infer"))
        .json(&iris_body())
        .send()
        .unwrap();
    assert_eq!(response.headers()["x-sluice-variant"], "pinned");
    assert_eq!(response.headers()["x-model-version"], "2");
    // v1 is loaded although the default policy (latest 1) alone would load only v2: routing refers to it.
    let (_, index) = {
        let r = client
            .post(server.url("/v2/repository/index"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        (r.status(), r.json::<Value>().unwrap())
    };
    let v1 = index
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "m" && r["version"] == "1")
        .unwrap();
    assert_eq!(v1["state"], "READY", "{v1}");
    // The missing version is reported once, when the policy is applied, and in the routing state; not per request.
    let warnings = || {
        server
            .logs()
            .iter()
            .filter(|l| l.contains("WARN") && (l.contains("version 9") || l.contains("not ready")))
            .cloned()
            .collect::<Vec<_>>()
    };
    common::wait_for("the warning", || !warnings().is_empty());
    let w = warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("cannot serve") && w[0].contains("canary (version 9)"),
        "{w:?}"
    );
    let (status, state) = common::get_json(&server, "/v2/models/m/routing");
    assert_eq!(status, 200);
    let not_ready = state["not_ready"].as_array().unwrap();
    assert_eq!(not_ready.len(), 1, "{state}");
    assert!(
        not_ready[0]
            .as_str()
            .unwrap()
            .starts_with("canary (version 9): "),
        "{state}"
    );
}

fn digits_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for (v, source) in [(1, "digits_mlp"), (2, "digits_mlp_int8")] {
        let target = repo.path().join(format!("digits/{v}"));
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(
            common::models_dir().join(format!("{source}/1/model.onnx")),
            target.join("model.onnx"),
        )
        .unwrap();
    }
    std::fs::write(
        repo.path().join("digits/model.toml"),
        "version_policy = \"all\"\ndefault_version = 1\n",
    )
    .unwrap();
    repo
}

fn digits_body(image: &[f32]) -> Value {
    json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 64], "data": image}]})
}

/// Shadow numbers for FP32 vs int8 equal what the test computes itself from the two versions' own answers.
#[test]
fn shadow_comparison_numbers_are_correct() {
    let repo = digits_repo();
    let routing = repo.path().join("routing.toml");
    write_policy(
        &routing,
        "[digits]\nshadow = { version = 2, sample_rate = 1.0 }\n",
    );
    let server = start(
        repo.path(),
        &routing,
        &[("SLUICE__ROUTING__SHADOW_QUEUE_CAPACITY", "1000")],
    );
    let n = 300;
    let images = common::digit_images(n, 0x2545_f491_4f6c_dd1d);
    let (mut agree, mut abs_sum, mut abs_max, mut float_n) = (0usize, 0f64, 0f64, 0usize);
    for image in &images {
        let (status, primary) = post_json(&server, "/v2/models/digits/infer", &digits_body(image));
        assert_eq!(status, 200);
        assert_eq!(primary["model_version"], "1");
        let (_, fp32) = post_json(
            &server,
            "/v2/models/digits/versions/1/infer",
            &digits_body(image),
        );
        let (_, int8) = post_json(
            &server,
            "/v2/models/digits/versions/2/infer",
            &digits_body(image),
        );
        assert_eq!(fp32["outputs"], primary["outputs"]);
        agree += usize::from(fp32["outputs"][0]["data"] == int8["outputs"][0]["data"]);
        let (p, q) = (
            fp32["outputs"][1]["data"].as_array().unwrap(),
            int8["outputs"][1]["data"].as_array().unwrap(),
        );
        for (x, y) in p.iter().zip(q) {
            let d = (x.as_f64().unwrap() as f32 as f64 - y.as_f64().unwrap() as f32 as f64).abs();
            abs_sum += d;
            abs_max = abs_max.max(d);
            float_n += 1;
        }
    }
    wait_for("every shadow comparison", || {
        get_json(&server, "/v2/models/digits/routing").1["shadow"][0]["compared"] == n
    });
    let (_, routing_state) = get_json(&server, "/v2/models/digits/routing");
    let pair = &routing_state["shadow"][0];
    assert_eq!(
        (
            pair["primary_version"].as_str(),
            pair["shadow_version"].as_str()
        ),
        (Some("1"), Some("2"))
    );
    assert_eq!(
        (pair["errors"].as_u64(), pair["dropped"].as_u64()),
        (Some(0), Some(0))
    );
    let label = &pair["outputs"]["label"];
    let expected_agreement = agree as f64 / n as f64;
    assert_eq!(
        label["agreement_rate"].as_f64().unwrap(),
        expected_agreement
    );
    let probs = &pair["outputs"]["probabilities"];
    assert_eq!(probs["float_elements"].as_u64().unwrap(), float_n as u64);
    let mean = probs["abs_diff_mean"].as_f64().unwrap();
    assert!(
        (mean - abs_sum / float_n as f64).abs() < 1e-9,
        "{mean} vs {}",
        abs_sum / float_n as f64
    );
    assert!((probs["abs_diff_max"].as_f64().unwrap() - abs_max).abs() < 1e-9);
    assert!(
        expected_agreement < 1.0 && mean > 0.0,
        "FP32 and int8 should disagree somewhere on random inputs"
    );
    eprintln!("FP32 vs int8 over {n} random images: label agreement {expected_agreement:.3}, mean |dp| {mean:.5}, max |dp| {abs_max:.5}");
    let metrics = common::metrics_text(&server);
    let line = format!(
        r#"sluice_shadow_agreement_ratio{{model="digits",output="label",primary_version="1",shadow_version="2"}} {expected_agreement}"#
    );
    assert!(metrics.lines().any(|l| l == line), "{line} missing");
    assert!(metrics.contains(&format!(
        r#"sluice_shadow_requests_total{{model="digits",outcome="compared",primary_version="1",shadow_version="2"}} {n}"#
    )));
}

/// A slow shadow (2 s injected delay per run): primary responses never wait for it, nothing fails, and the bounded
/// queue drops (and counts) what it cannot hold.
#[test]
fn a_slow_shadow_never_slows_or_fails_the_primary() {
    let repo = digits_repo();
    let routing = repo.path().join("routing.toml");
    write_policy(&routing, "");
    let server = start(
        repo.path(),
        &routing,
        &[
            ("SLUICE__ROUTING__SHADOW_QUEUE_CAPACITY", "4"),
            ("SLUICE__ROUTING__SHADOW_DELAY_MS", "2000"),
        ],
    );
    let images = common::digit_images(50, 0x2545_f491_4f6c_dd1d);
    let run = |label: &str| -> Vec<f64> {
        let started = Instant::now();
        let mut latencies: Vec<f64> = images
            .iter()
            .map(|image| {
                let t = Instant::now();
                let (status, _) =
                    post_json(&server, "/v2/models/digits/infer", &digits_body(image));
                assert_eq!(status, 200);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        eprintln!(
            "{label}: 50 requests in {:?}, p50 {:.2} ms, max {:.2} ms",
            started.elapsed(),
            latencies[25],
            latencies[49]
        );
        latencies
    };
    run("no shadow");
    write_policy(
        &routing,
        "[digits]\nshadow = { version = 2, sample_rate = 1.0 }\n",
    );
    wait_for("the shadow policy", || {
        !get_json(&server, "/v2/models/digits/routing").1["policy"]["shadow"].is_null()
    });
    run("slow shadow on every request");
    // Every primary answered while the first shadow run was still waiting out its delay: none waited for it.
    let (_, state) = get_json(&server, "/v2/models/digits/routing");
    let pair = &state["shadow"][0];
    assert_eq!(pair["compared"], 0, "{pair}");
    let dropped = pair["dropped"].as_u64().unwrap();
    assert!(
        dropped >= 40,
        "a 4-deep queue behind a 2 s shadow must drop most of 50 jobs, dropped {dropped}"
    );
    let metrics = common::metrics_text(&server);
    let line = format!(
        r#"sluice_shadow_requests_total{{model="digits",outcome="dropped",primary_version="1",shadow_version="2"}} {dropped}"#
    );
    assert!(metrics.lines().any(|l| l == line), "{line}");
}

fn admin(server: &TestServer, body: Value) -> (u16, Value) {
    let response = client()
        .post(server.url("/v2/repository/models/m/routing"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

/// Weights set, promoted and rolled back by management calls, and a file edit, under continuous load: no request
/// fails. The file wins again once it changes.
#[test]
fn promote_and_rollback_under_load_fail_no_request() {
    let repo = repo();
    let routing = repo.path().join("routing.toml");
    write_policy(&routing, &canary_policy(10.0));
    let server = start(repo.path(), &routing, &[]);
    let stop = AtomicBool::new(false);
    let outcomes = std::sync::Mutex::new(BTreeMap::<(u16, String), usize>::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (server, stop, outcomes) = (&server, &stop, &outcomes);
            s.spawn(move || {
                let client = client();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("k{t}-{i}");
                    let (status, variant, _) = infer(server, &client, Some(&key));
                    *outcomes
                        .lock()
                        .unwrap()
                        .entry((status, variant))
                        .or_default() += 1;
                    i += 1;
                }
            });
        }
        let pause = || std::thread::sleep(Duration::from_millis(300));
        pause();
        assert_eq!(
            admin(
                &server,
                json!({"set_weight": {"variant": "canary", "weight": 50}})
            )
            .0,
            200
        );
        pause();
        let (status, body) = admin(&server, json!({"promote": "canary"}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["policy"]["stable"], 2);
        pause();
        assert_eq!(admin(&server, json!({"rollback": true})).0, 200);
        pause();
        assert_eq!(admin(&server, json!({"policy": {"stable": 1, "variants": [{"name": "b", "version": 2, "weight": 50.0}]}})).0, 200);
        pause();
        write_policy(&routing, &canary_policy(30.0));
        wait_for("the file to win again", || policy_weight(&server) == 30.0);
        pause();
        stop.store(true, Ordering::Relaxed);
    });
    let outcomes = outcomes.into_inner().unwrap();
    eprintln!("outcomes under promote/rollback: {outcomes:?}");
    assert!(
        outcomes.keys().all(|(status, _)| *status == 200),
        "{outcomes:?}"
    );
    for variant in ["canary", "stable", "b"] {
        assert!(
            outcomes.keys().any(|(_, v)| v == variant),
            "no traffic saw {variant}: {outcomes:?}"
        );
    }
    let (_, state) = get_json(&server, "/v2/models/m/routing");
    assert_eq!(state["source"], "file");
    // Bad management requests are refused clearly.
    assert_eq!(admin(&server, json!({"promote": "nope"})).0, 404);
    assert_eq!(
        admin(
            &server,
            json!({"set_weight": {"variant": "canary", "weight": 150}})
        )
        .0,
        400
    );
    assert_eq!(admin(&server, json!({"dance": true})).0, 400);
    let unauthorized = client()
        .post(server.url("/v2/repository/models/m/routing"))
        .json(&json!({"rollback": true}))
        .send()
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}

/// A canary that fails (its version expects a different input) is switched off automatically once its error rate
/// over the window passes the threshold.
#[test]
fn a_failing_canary_is_rolled_back_automatically() {
    let repo = repo();
    // v2 becomes a model with other inputs: every request routed to it is a 400.
    std::fs::copy(
        common::fixtures_dir().join("models/misdeclared/1/model.onnx"),
        repo.path().join("m/2/model.onnx"),
    )
    .unwrap();
    let routing = repo.path().join("routing.toml");
    write_policy(
        &routing,
        "[m]\nstable = 1\nvariants = [{ name = \"canary\", version = 2, weight = 50.0 }]\n\
         auto_rollback = { max_error_rate = 0.5, window_seconds = 60, min_requests = 20 }\n",
    );
    let server = start(repo.path(), &routing, &[]);
    let client = client();
    let mut canary_errors = 0;
    for _ in 0..200 {
        // Error responses carry no variant header; only the canary's version rejects these requests.
        let (status, variant, version) = infer(&server, &client, None);
        if status == 400 {
            canary_errors += 1;
        } else {
            assert_eq!(
                (status, variant.as_str(), version.as_str()),
                (200, "stable", "1")
            );
        }
    }
    assert!(
        (20..=40).contains(&canary_errors),
        "{canary_errors} requests reached the failing canary"
    );
    assert_eq!(policy_weight(&server), 0.0);
    let metrics = common::metrics_text(&server);
    assert!(
        metrics.contains(r#"sluice_routing_auto_rollbacks_total{model="m",variant="canary"} 1"#),
        "{metrics}"
    );
    assert!(server.logs().join("\n").contains("automatic rollback"));
}

/// Errors say who answered: a canary's 500 and a validation 400 carry `x-model-version` and `x-sluice-variant`, and
/// the 500's ERROR line names the version, the variant and the latency.
#[test]
fn errors_name_the_version_and_variant_that_answered() {
    let repo = common::repo_with(&["reshape"]);
    common::copy_dir(
        &repo.path().join("reshape/1"),
        &repo.path().join("reshape/2"),
    );
    std::fs::write(
        repo.path().join("reshape/model.toml"),
        "version_policy = \"all\"\n[warmup]\nrequest = \"warmup.json\"\n",
    )
    .unwrap();
    let routing = repo.path().join("routing.toml");
    write_policy(
        &routing,
        "[reshape]\nstable = 1\nvariants = [{ name = \"canary\", version = 2, weight = 100.0 }]\n",
    );
    let server = start(repo.path(), &routing, &[("SLUICE__LOG__FORMAT", "json")]);
    let client = client();
    let send = |body: Value| {
        let response = client
            .post(server.url("/v2/models/reshape/infer"))
            .json(&body)
            .send()
            .unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (
            response.status().as_u16(),
            header("x-model-version"),
            header("x-sluice-variant"),
        )
    };
    let canary = (Some("2".to_owned()), Some("canary".to_owned()));
    // Three elements cannot be reshaped to [2, -1]: ONNX Runtime fails, a 500.
    let (status, version, variant) = send(
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2, 3]}]}),
    );
    assert_eq!((status, (version, variant)), (500, canary.clone()));
    // A validation error: 400, attributed the same way.
    let (status, version, variant) = send(
        json!({"inputs": [{"name": "y", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}),
    );
    assert_eq!((status, (version, variant)), (400, canary));
    let line = server.wait_for_log_line(|l| l["fields"]["message"] == "request failed");
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["fields"]["model_version"], "2", "{line}");
    assert_eq!(line["fields"]["variant"], "canary", "{line}");
    assert!(
        line["fields"]["latency_ms"].as_f64().unwrap() > 0.0,
        "{line}"
    );
}

/// A shadow that cannot take its primary's requests (iris v1 behind v2: other output names): in the file read at
/// start it is reported once (WARN and `not_ready`), each failed shadow run is counted with its reason in
/// `/routing` and at most one WARN line a minute; applied later, by a call or a file edit, it is refused and the
/// previous policy stays.
#[test]
fn a_shadow_that_cannot_take_the_requests_is_reported_and_refused() {
    let repo = common::repo_with(&["iris"]);
    let routing = repo.path().join("routing.toml");
    write_policy(
        &routing,
        "[iris]\nshadow = { version = 1, sample_rate = 1.0 }\n",
    );
    let server = start(repo.path(), &routing, &[("SLUICE__LOG__FORMAT", "json")]);
    let client = client();
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    for _ in 0..20 {
        let response = client
            .post(server.url("/v2/models/iris/infer"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let shadow_state = || {
        let (_, state) = common::get_json(&server, "/v2/models/iris/routing");
        state
    };
    common::wait_for("the 20 shadow failures", || {
        shadow_state()["shadow"][0]["errors"] == 20
    });
    let state = shadow_state();
    let last_error = state["shadow"][0]["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("is not an output of this model"),
        "{state}"
    );
    assert!(
        state["not_ready"][0]
            .as_str()
            .unwrap()
            .contains("shadow (version 1) cannot take the requests of version 2"),
        "{state}"
    );
    let logs = server.logs();
    let count = |needle: &str| {
        logs.iter()
            .filter(|l| l.contains("\"level\":\"WARN\"") && l.contains(needle))
            .count()
    };
    assert_eq!(count("shadow run failed"), 1, "{logs:?}");
    assert_eq!(
        count("cannot take the requests of version 2"),
        1,
        "{logs:?}"
    );

    // Applied by a call: refused, and the file's policy stays.
    let response = client
        .post(server.url("/v2/repository/models/iris/routing"))
        .bearer_auth(TOKEN)
        .json(&json!({"policy": {"stable": 2, "shadow": {"version": 1, "sample_rate": 0.5}}}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let reply: Value = response.json().unwrap();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("refused: shadow (version 1)"),
        "{reply}"
    );
    assert_eq!(shadow_state()["policy"]["shadow"]["sample_rate"], 1.0);

    // Applied by a file edit: refused with one ERROR line, the previous policy stays.
    write_policy(
        &routing,
        "[iris]\nstable = 2\nshadow = { version = 1, sample_rate = 0.25 }\n",
    );
    let line = server.wait_for_log_line(|l| {
        l["fields"]["message"] == "routing change not applied; the previous policy stays"
    });
    assert!(
        line["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{line}"
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(shadow_state()["policy"]["shadow"]["sample_rate"], 1.0);
    let refusals = server
        .logs()
        .iter()
        .filter(|l| l.contains("routing change not applied"))
        .count();
    assert_eq!(
        refusals, 1,
        "a refused file is not retried until it changes"
    );
}
