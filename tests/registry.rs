//! The hot-swappable registry end to end: live reload under load, broken and half-written files, unload with
//! requests in flight, load/unload memory, the management API, version policy, rollback and the schema guard.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{client, get_json, iris_body, post_json, rss_kib, wait_for, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token";

fn iris_file(version: u32) -> Vec<u8> {
    std::fs::read(common::models_dir().join(format!("iris/{version}/model.onnx"))).unwrap()
}

fn start(root: &Path) -> TestServer {
    TestServer::start_with(
        root,
        &[],
        &[
            ("SLUICE__ADMIN__TOKEN", TOKEN),
            ("SLUICE__MODELS__POLL_INTERVAL_MS", "200"),
        ],
    )
}

fn admin(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(server.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn index(server: &TestServer) -> Vec<Value> {
    let (status, body) = admin(server, "/v2/repository/index", json!({}));
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

fn row(server: &TestServer, model: &str, version: u64) -> Option<Value> {
    index(server)
        .into_iter()
        .find(|r| r["name"] == model && r["version"].as_str() == Some(version.to_string().as_str()))
}

fn ready(server: &TestServer, model: &str, version: u64) -> u16 {
    client()
        .get(server.url(&format!("/v2/models/{model}/versions/{version}/ready")))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn repo_with_m(versions: &[u64]) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("m")).unwrap();
    std::fs::write(
        repo.path().join("m/model.toml"),
        "version_policy = \"all\"\n",
    )
    .unwrap();
    for v in versions {
        common::place(repo.path(), "m", *v, &iris_file(2));
    }
    repo
}

struct Sample {
    start: Instant,
    end: Instant,
    status: u16,
    version: Option<u64>,
    header: Option<String>,
}

/// Four clients infer without a version while versions are added, replaced and removed 20 times: no request fails,
/// and each response comes from a version that was loaded during the request.
#[test]
fn versions_swap_under_load_without_a_failed_request() {
    let repo = repo_with_m(&[1]);
    let root = repo.path();
    let server = start(root);
    // When each version appeared (file placed) and when its removal was confirmed (404 seen).
    let lifetimes: Mutex<HashMap<u64, (Instant, Option<Instant>)>> =
        Mutex::new(HashMap::from([(1, (Instant::now(), None))]));
    let samples = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let response = client
                        .post(server.url("/v2/models/m/infer"))
                        .json(&iris_body())
                        .send()
                        .unwrap();
                    let status = response.status().as_u16();
                    let header = response
                        .headers()
                        .get("x-model-version")
                        .map(|h| h.to_str().unwrap().to_owned());
                    let body: Value = response.json().unwrap();
                    let version = body["model_version"].as_str().and_then(|v| v.parse().ok());
                    samples.lock().unwrap().push(Sample {
                        start,
                        end: Instant::now(),
                        status,
                        version,
                        header,
                    });
                }
            });
        }
        let mut oldest = 1;
        for cycle in 0..20u64 {
            let new = cycle + 2;
            lifetimes
                .lock()
                .unwrap()
                .insert(new, (Instant::now(), None));
            common::place(root, "m", new, &iris_file(2));
            wait_for("the new version", || ready(&server, "m", new) == 200);
            // Replace the previous version's file (same bytes, new file): it is reloaded in place.
            common::place(root, "m", new - 1, &iris_file(2));
            if cycle % 2 == 1 {
                std::fs::remove_dir_all(root.join(format!("m/{oldest}"))).unwrap();
                wait_for("the removal", || ready(&server, "m", oldest) == 404);
                lifetimes.lock().unwrap().get_mut(&oldest).unwrap().1 = Some(Instant::now());
                oldest += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });
    let samples = samples.into_inner().unwrap();
    let lifetimes = lifetimes.into_inner().unwrap();
    assert!(
        samples.len() > 100,
        "only {} requests were made",
        samples.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for s in &samples {
        assert_eq!(s.status, 200, "a request failed during the swaps");
        let v = s.version.unwrap();
        assert_eq!(
            s.header.as_deref(),
            Some(v.to_string().as_str()),
            "x-model-version matches model_version"
        );
        let (added, removed) = lifetimes[&v];
        assert!(added <= s.end, "version {v} answered before it was placed");
        assert!(
            removed.is_none_or(|r| r >= s.start),
            "version {v} answered after its removal was confirmed"
        );
        seen.insert(v);
    }
    assert!(
        seen.len() >= 10,
        "the default version moved only through {seen:?}"
    );
    eprintln!(
        "{} requests, all 200, served by versions {seen:?}",
        samples.len()
    );
}

/// A corrupt file and a half-copied file: the old version keeps serving, the half-written file is not loaded
/// half-way, and fixing the corrupt file later loads it.
#[test]
fn broken_and_half_written_files_never_replace_a_working_version() {
    let repo = repo_with_m(&[1]);
    let root = repo.path();
    // A longer settle time than the test server's default, so the half-written file is seen while still fresh.
    let server = TestServer::start_with(
        root,
        &[],
        &[
            ("SLUICE__ADMIN__TOKEN", TOKEN),
            ("SLUICE__MODELS__POLL_INTERVAL_MS", "100"),
            ("SLUICE__MODELS__SETTLE_MS", "1500"),
        ],
    );
    let infer = || post_json(&server, "/v2/models/m/infer", &iris_body());

    common::place(root, "m", 2, b"\x08\x07 not an onnx model");
    wait_for("the corrupt version to be tried", || {
        row(&server, "m", 2).is_some_and(|r| {
            r["state"] == "UNAVAILABLE" && !r["reason"].as_str().unwrap().contains("waiting")
        })
    });
    assert_eq!(infer().1["model_version"], "1");
    let r2 = row(&server, "m", 2).unwrap();
    assert!(!r2["reason"].as_str().unwrap().is_empty(), "{r2}");

    // Overwrite the serving version's file with garbage: the previous load keeps serving.
    common::place(root, "m", 1, b"garbage");
    wait_for("the failed reload", || {
        row(&server, "m", 1)
            .is_some_and(|r| r["reason"].as_str().unwrap().contains("reload failed"))
    });
    let r1 = row(&server, "m", 1).unwrap();
    assert_eq!(r1["state"], "READY", "{r1}");
    assert_eq!(infer(), (200, infer().1));
    assert_eq!(infer().1["model_version"], "1");

    // A file written in two halves, 0.5 s apart: never loaded half-way.
    let bytes = iris_file(2);
    std::fs::create_dir_all(root.join("m/3")).unwrap();
    std::fs::write(root.join("m/3/model.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let r3 = row(&server, "m", 3).unwrap();
    assert!(
        r3["reason"]
            .as_str()
            .unwrap()
            .contains("waiting for the file to stop changing"),
        "{r3}"
    );
    std::fs::write(root.join("m/3/model.onnx"), &bytes).unwrap();
    wait_for("the completed file to load", || {
        ready(&server, "m", 3) == 200
    });
    assert_eq!(infer().1["model_version"], "3");

    // Fix the corrupt version: it loads the next time the file changes.
    common::place(root, "m", 2, &iris_file(2));
    wait_for("the fixed version to load", || {
        ready(&server, "m", 2) == 200
    });
    let metrics = common::metrics_text(&server);
    // Exactly two failures: corrupt v2 and garbage v1. The half-written v3 was never tried.
    assert!(
        metrics.contains(r#"sluice_model_load_failures_total{model="m"} 2"#),
        "{metrics}"
    );
}

/// Unloading a model while requests run on it: they all complete; later requests are refused with the reason.
#[test]
fn unload_lets_in_flight_requests_finish() {
    let repo = common::slow_repo(&[]);
    let server = start(repo.path());
    let answers = common::during_slow_requests(&server, || {
        let started = Instant::now();
        assert_eq!(
            admin(&server, "/v2/repository/models/slow/unload", json!({})).0,
            200
        );
        eprintln!("unload returned after {:?}", started.elapsed());
    });
    for (status, reply) in answers {
        assert_eq!(status, 200, "{reply}");
        assert_eq!(
            reply["outputs"][0]["shape"],
            json!([common::SLOW_ROWS, 256])
        );
    }
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256], "data": vec![0.5; 256]}]});
    let (status, reply) = post_json(&server, "/v2/models/slow/infer", &body);
    assert_eq!(status, 503);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("unloaded by an operator"),
        "{reply}"
    );
    let slow = row(&server, "slow", 1).unwrap();
    assert_eq!(
        (slow["state"].as_str(), slow["reason"].as_str()),
        (Some("UNAVAILABLE"), Some("unloaded by an operator"))
    );
    // The watcher does not bring it back on its own; a load call does.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ready(&server, "slow", 1), 503);
    assert_eq!(
        admin(&server, "/v2/repository/models/slow/load", json!({})).0,
        200
    );
    assert_eq!(ready(&server, "slow", 1), 200);
}

/// 200 unload/load cycles: resident memory grows by less than 10 % after warm-up.
#[test]
fn load_unload_cycles_do_not_leak_memory() {
    let repo = common::repo_with(&["iris"]);
    let server = start(repo.path());
    let cycle = || {
        assert_eq!(
            admin(&server, "/v2/repository/models/iris/unload", json!({})).0,
            200
        );
        let (status, body) = admin(&server, "/v2/repository/models/iris/load", json!({}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            post_json(&server, "/v2/models/iris/infer", &iris_body()).0,
            200
        );
    };
    for _ in 0..20 {
        cycle();
    }
    let warm = rss_kib(server.pid());
    for _ in 20..200 {
        cycle();
    }
    let after = rss_kib(server.pid());
    let growth = (after as f64 - warm as f64) / warm as f64 * 100.0;
    eprintln!(
        "RSS after 20 cycles: {warm} KiB; after 200 cycles: {after} KiB; growth {growth:.1} %"
    );
    assert!(
        growth < 10.0,
        "RSS grew {growth:.1} % ({warm} -> {after} KiB)"
    );
}

#[test]
fn management_api_index_load_unload_and_errors() {
    let repo = common::repo_with(&["iris", "tumor_risk"]);
    std::fs::create_dir_all(repo.path().join("broken/1")).unwrap();
    std::fs::write(repo.path().join("broken/1/model.onnx"), b"nope").unwrap();
    let server = start(repo.path());

    let rows = index(&server);
    let states: Vec<(String, String, String, bool)> = rows
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (
                s("name"),
                s("version"),
                s("state"),
                r["default"].as_bool().unwrap(),
            )
        })
        .collect();
    let own = |a: &str, b: &str, c: &str, d| (a.to_owned(), b.to_owned(), c.to_owned(), d);
    assert_eq!(
        states,
        [
            own("broken", "1", "UNAVAILABLE", false),
            own("iris", "1", "READY", false),
            own("iris", "2", "READY", true),
            own("iris", "3", "READY", false),
            own("tumor_risk", "1", "READY", true),
        ]
    );
    assert!(!rows[0]["reason"].as_str().unwrap().is_empty());
    let (_, ready_only) = admin(&server, "/v2/repository/index", json!({"ready": true}));
    assert_eq!(ready_only.as_array().unwrap().len(), 4);

    let (status, body) = admin(&server, "/v2/repository/models/broken/load", json!({}));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("failed to load 'broken': "),
        "{body}"
    );
    let (status, body) = admin(&server, "/v2/repository/models/nope/load", json!({}));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("failed to load 'nope': "),
        "{body}"
    );
    assert_eq!(status, 404);
    assert_eq!(
        admin(&server, "/v2/repository/models/nope/unload", json!({})).0,
        404
    );
    let (status, body) = admin(
        &server,
        "/v2/repository/models/iris/load",
        json!({"parameters": "x"}),
    );
    assert_eq!(status, 400, "{body}");

    assert_eq!(
        admin(
            &server,
            "/v2/repository/models/tumor_risk/unload",
            json!({})
        )
        .0,
        200
    );
    assert_eq!(
        row(&server, "tumor_risk", 1).unwrap()["state"],
        "UNAVAILABLE"
    );
    assert_eq!(get_json(&server, "/v2/models/tumor_risk/ready").0, 503);
    assert_eq!(
        admin(&server, "/v2/repository/models/tumor_risk/load", json!({})).0,
        200
    );
    assert_eq!(row(&server, "tumor_risk", 1).unwrap()["state"], "READY");

    // Without the token: 401 with a challenge, and the token never appears in the logs.
    let response = client()
        .post(server.url("/v2/repository/index"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    // The scheme is case-insensitive (RFC 9110).
    let response = client()
        .post(server.url("/v2/repository/index"))
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!server.logs().join("\n").contains(TOKEN));
}

/// Rollback by management call and by one `model.toml` line, both without reloading any session.
#[test]
fn default_version_rolls_back_by_call_or_config_line() {
    let repo = common::repo_with(&["iris"]);
    let server = start(repo.path());
    let loads = || {
        server
            .logs()
            .iter()
            .filter(|l| l.contains("model version loaded"))
            .count()
    };
    // The log is read from the server's output on a thread of its own, so readiness can come before the versions'
    // load lines have been read: wait for all three before taking the count.
    wait_for("the three versions' load lines", || loads() == 3);
    let loads_before = loads();
    let served = || {
        let response = client()
            .post(server.url("/v2/models/iris/infer"))
            .json(&iris_body())
            .send()
            .unwrap();
        let header = response.headers()["x-model-version"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().unwrap();
        assert_eq!(body["model_version"].as_str().unwrap(), header);
        header
    };
    assert_eq!(served(), "2");

    let (status, body) = admin(
        &server,
        "/v2/repository/models/iris/default",
        json!({"version": 1}),
    );
    assert_eq!(
        (status, &body["default_version"]),
        (200, &json!("1")),
        "{body}"
    );
    assert_eq!(served(), "1");
    assert_eq!(
        admin(
            &server,
            "/v2/repository/models/iris/default",
            json!({"version": 7})
        )
        .0,
        400
    );
    assert_eq!(
        admin(
            &server,
            "/v2/repository/models/iris/default",
            json!({"v": 1})
        )
        .0,
        400
    );
    assert_eq!(
        admin(
            &server,
            "/v2/repository/models/iris/default",
            json!({"version": "2"})
        )
        .0,
        200
    );
    assert_eq!(served(), "2");

    // The config line: default_version = 1.
    let toml = repo.path().join("iris/model.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("default_version = 2", "default_version = 1");
    std::fs::write(&toml, text).unwrap();
    wait_for("the config line to apply", || served() == "1");
    let loads_after = loads();
    assert_eq!(
        loads_before, loads_after,
        "rollback must not reload sessions"
    );
}

/// A new version with an incompatible signature loads and answers by explicit version but does not become the
/// default, until forced; a compatible one becomes the default.
#[test]
fn schema_guard_holds_back_incompatible_versions() {
    let repo = repo_with_m(&[1]);
    let root = repo.path();
    let server = start(root);
    common::place(root, "m", 2, &iris_file(1));
    wait_for("v2 to load", || ready(&server, "m", 2) == 200);
    let r2 = row(&server, "m", 2).unwrap();
    assert_eq!(
        (r2["state"].as_str(), r2["default"].as_bool()),
        (Some("READY"), Some(false))
    );
    assert!(
        r2["reason"]
            .as_str()
            .unwrap()
            .contains("incompatible: output 'label' removed or renamed"),
        "{r2}"
    );
    assert_eq!(
        post_json(&server, "/v2/models/m/infer", &iris_body()).1["model_version"],
        "1"
    );
    assert_eq!(
        post_json(&server, "/v2/models/m/versions/2/infer", &iris_body()).0,
        200
    );

    // A compatible newer version (same signature as v1) becomes the default.
    common::place(root, "m", 3, &iris_file(2));
    wait_for("v3 to become the default", || {
        row(&server, "m", 3).is_some_and(|r| r["default"] == true)
    });

    // force: the incompatible version may become the default when it is the newest.
    std::fs::remove_dir_all(root.join("m/3")).unwrap();
    wait_for("v3 to go", || ready(&server, "m", 3) == 404);
    assert_eq!(
        post_json(&server, "/v2/models/m/infer", &iris_body()).1["model_version"],
        "1"
    );
    assert_eq!(
        admin(
            &server,
            "/v2/repository/models/m/load",
            json!({"parameters": {"force": true}})
        )
        .0,
        200
    );
    assert_eq!(
        post_json(&server, "/v2/models/m/infer", &iris_body()).1["model_version"],
        "2"
    );
}

/// The version policy decides what is loaded, and a policy change in `model.toml` applies live.
#[test]
fn version_policy_applies_and_changes_live() {
    let repo = repo_with_m(&[1, 2, 3]);
    let root = repo.path();
    std::fs::write(
        root.join("m/model.toml"),
        "version_policy = { latest = 2 }\n",
    )
    .unwrap();
    let server = start(root);
    let states = || {
        (1..=3)
            .map(|v| {
                row(&server, "m", v).unwrap()["state"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(states(), ["UNAVAILABLE", "READY", "READY"]);
    assert!(row(&server, "m", 1).unwrap()["reason"]
        .as_str()
        .unwrap()
        .contains("version policy"));
    std::fs::write(
        root.join("m/model.toml"),
        "version_policy = { specific = [1] }\n",
    )
    .unwrap();
    wait_for("the new policy", || {
        states() == ["READY", "UNAVAILABLE", "UNAVAILABLE"]
    });
    std::fs::write(root.join("m/model.toml"), "version_policy = \"all\"\n").unwrap();
    wait_for("the all policy", || states() == ["READY", "READY", "READY"]);
    // A broken model.toml keeps what is loaded serving and says why.
    std::fs::write(
        root.join("m/model.toml"),
        "version_policy = \"sometimes\"\n",
    )
    .unwrap();
    wait_for("the invalid config to be seen", || {
        row(&server, "m", 3).unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("invalid model.toml")
    });
    assert_eq!(states(), ["READY", "READY", "READY"]);
    assert_eq!(
        post_json(&server, "/v2/models/m/infer", &iris_body()).0,
        200
    );
}

/// The schema guard's verdict is a function of the current default: versions with the same signature get the same
/// verdict whatever order they loaded in, the default never carries one, and moving the default recomputes them. The
/// example repository (iris, default pinned to v2) starts without a warning.
#[test]
fn schema_guard_verdicts_follow_the_current_default() {
    let example = common::repo_with(&["iris"]);
    let server = TestServer::start_with(example.path(), &[], &[("SLUICE__LOG__FORMAT", "json")]);
    let warnings: Vec<String> = server
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"level\":\"WARN\""))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
    drop(server);

    let repo = repo_with_m(&[1]);
    let root = repo.path();
    std::fs::write(
        root.join("m/model.toml"),
        "version_policy = \"all\"\ndefault_version = 1\n",
    )
    .unwrap();
    common::place(root, "m", 2, &iris_file(1));
    common::place(root, "m", 3, &iris_file(1));
    let server = start(root);
    let reasons = || {
        (1..=3)
            .map(|v| {
                let r = row(&server, "m", v).unwrap();
                (
                    r["default"].as_bool().unwrap(),
                    r["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let r = reasons();
    assert_eq!(r[0], (true, String::new()));
    assert!(r[1].1.starts_with("incompatible: "), "{r:?}");
    assert_eq!(r[1], r[2], "same signature, same verdict");

    let (status, body) = admin(
        &server,
        "/v2/repository/models/m/default",
        json!({"version": 2}),
    );
    assert_eq!(status, 200, "{body}");
    let r = reasons();
    assert!(r[0].1.starts_with("incompatible: "), "{r:?}");
    assert_eq!(r[1], (true, String::new()));
    assert_eq!(r[2], (false, String::new()), "v3 is compatible with v2");
}

/// Triton's `parameters.config` on a load call: batching, the instance count and the version policy apply until the
/// next load call; anything else, a model file delivered in the call and a load that fails are 400s naming why, and
/// a failed override leaves the model serving as it was.
#[test]
fn load_config_overrides_apply_until_the_next_load() {
    let repo = common::repo_with(&["iris", "digits_mlp"]);
    common::copy_dir(
        &common::fixtures_dir().join("models/misdeclared"),
        &repo.path().join("misdeclared"),
    );
    let server = start(repo.path());
    let load = |model: &str, parameters: Value| {
        admin(
            &server,
            &format!("/v2/repository/models/{model}/load"),
            json!({ "parameters": parameters }),
        )
    };
    let instances = |model: &str| {
        let (_, config) = common::get_json(&server, &format!("/v2/models/{model}/config"));
        config["instance_group"][0]["count"].as_u64().unwrap()
    };
    let image = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 64],
        "data": common::digit_images(1, 7)[0]}]});
    let batch_sizes = || {
        let (status, reply) = post_json(&server, "/v2/models/digits_mlp/infer", &image);
        assert_eq!(status, 200, "{reply}");
        let (_, stats) = common::get_json(&server, "/v2/models/digits_mlp/stats");
        stats["model_stats"][0]["batch_stats"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((instances("digits_mlp"), batch_sizes()), (2, 0));

    let config = json!({"name": "digits_mlp", "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_microseconds": 500}, "instance_group": [{"count": 3, "kind": "KIND_CPU"}]});
    let (status, reply) = load("digits_mlp", json!({ "config": config.to_string() }));
    assert_eq!(status, 200, "{reply}");
    assert_eq!((instances("digits_mlp"), batch_sizes()), (3, 1));
    // The next load without a config goes back to model.toml.
    let (status, reply) = load("digits_mlp", json!({}));
    assert_eq!(status, 200, "{reply}");
    assert_eq!((instances("digits_mlp"), batch_sizes()), (2, 0));

    // iris loads every version (model.toml); the override keeps only v2.
    let versions = |server: &TestServer| {
        index(server)
            .iter()
            .filter(|r| r["name"] == "iris" && r["state"] == "READY")
            .map(|r| r["version"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&server), ["1", "2", "3"]);
    let policy = json!({"version_policy": {"specific": {"versions": [2]}}}).to_string();
    let (status, reply) = load("iris", json!({ "config": policy }));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(versions(&server), ["2"]);

    for (parameters, needle) in [
        (
            json!({"config": "{"}),
            "parameters.config is not valid JSON",
        ),
        (
            json!({"config": "{\"optimization\": {}}"}),
            "config.optimization is not supported",
        ),
        (
            json!({"config": "{\"instance_group\": [{\"kind\": \"KIND_GPU\"}]}"}),
            "config.instance_group[0].kind",
        ),
        (
            json!({"config": "{}", "file:1/model.onnx": "AAAA"}),
            "parameters.file:1/model.onnx: sluice loads models only from its repository",
        ),
        (
            json!({"priority": 1}),
            "parameters.priority is not a load parameter",
        ),
    ] {
        let (status, reply) = load("iris", parameters.clone());
        assert_eq!(status, 400, "{parameters}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(message.contains(needle), "{parameters}: {message}");
    }
    assert_eq!(versions(&server), ["2"], "a refused load changes nothing");

    // A model without a dynamic leading dimension cannot batch: the load fails, the version serves on as before.
    let batching = json!({"max_batch_size": 4, "dynamic_batching": {}}).to_string();
    let (status, reply) = load("misdeclared", json!({ "config": batching }));
    assert_eq!(status, 400, "{reply}");
    let message = reply["error"].as_str().unwrap();
    assert!(
        message.starts_with("failed to load 'misdeclared': ")
            && message.contains("batching needs a dynamic leading dimension"),
        "{message}"
    );
    assert_eq!(ready(&server, "misdeclared", 1), 200);
}
