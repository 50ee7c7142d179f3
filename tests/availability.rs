//! A model never goes dark because of its files: corrupt or half-written versions, versions removed before their
//! successor is ready, failed warmups. Each test moves real files in and out of a repository while clients infer,
//! and asserts that not one request fails while the model had a ready version. Also: strict readiness, and removing
//! a model's whole directory (the one file operation that does unload a model).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::{client, get_json, iris_body, metrics_text, post_json, wait_for, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token";

fn iris_file() -> Vec<u8> {
    std::fs::read(common::models_dir().join("iris/2/model.onnx")).unwrap()
}

const CORRUPT: &[u8] = b"\x08\x07 a few hundred bytes of garbage, not an onnx model";

/// A repository with model `m` (iris v2's file) at `versions`, under `model_toml`.
fn repo(versions: &[u64], model_toml: &str) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("m")).unwrap();
    std::fs::write(repo.path().join("m/model.toml"), model_toml).unwrap();
    for v in versions {
        common::place(repo.path(), "m", *v, &iris_file());
    }
    repo
}

fn start(root: &Path, settle_ms: &str) -> TestServer {
    TestServer::start_with(
        root,
        &[],
        &[
            ("SLUICE__ADMIN__TOKEN", TOKEN),
            ("SLUICE__MODELS__POLL_INTERVAL_MS", "100"),
            ("SLUICE__MODELS__SETTLE_MS", settle_ms),
            ("SLUICE__LOG__FORMAT", "json"),
        ],
    )
}

fn row(server: &TestServer, model: &str, version: u64) -> Option<Value> {
    common::index_row(server, TOKEN, model, version)
}

fn reason(server: &TestServer, model: &str, version: u64) -> String {
    row(server, model, version).map_or_else(String::new, |r| {
        r["reason"].as_str().unwrap_or_default().to_owned()
    })
}

/// The version that answers requests naming none, as a model-ready call reports it.
fn default_version(server: &TestServer, model: &str) -> Option<String> {
    let (status, body) = get_json(server, &format!("/v2/models/{model}/ready"));
    (status == 200).then(|| body["version"].as_str().unwrap().to_owned())
}

/// Clients sending `body` to a model without a version until stopped; every answer is recorded: the status and the
/// version that answered, or the error.
struct Traffic<'a> {
    stop: &'a AtomicBool,
    answers: &'a Mutex<Vec<(u16, String)>>,
    body: &'a Value,
}

impl Traffic<'_> {
    fn run(&self, server: &TestServer, model: &str) {
        let client = client();
        while !self.stop.load(Ordering::Relaxed) {
            let response = client
                .post(server.url(&format!("/v2/models/{model}/infer")))
                .json(self.body)
                .send()
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().unwrap();
            let version = if status == 200 {
                body["model_version"].as_str().unwrap().to_owned()
            } else {
                body["error"].as_str().unwrap_or_default().to_owned()
            };
            self.answers.lock().unwrap().push((status, version));
        }
    }
}

/// Runs `steps` while four clients infer on `model` with the iris request; returns every answer.
fn under_load(server: &TestServer, model: &str, steps: impl FnOnce()) -> Vec<(u16, String)> {
    under_load_with(server, model, &iris_body(), steps)
}

/// Runs `steps` while four clients send `body` to `model`; returns every answer.
fn under_load_with(
    server: &TestServer,
    model: &str,
    body: &Value,
    steps: impl FnOnce(),
) -> Vec<(u16, String)> {
    let stop = AtomicBool::new(false);
    let answers = Mutex::new(Vec::new());
    let traffic = Traffic {
        stop: &stop,
        answers: &answers,
        body,
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| traffic.run(server, model));
        }
        steps();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
    });
    let answers = answers.into_inner().unwrap();
    assert!(
        answers.len() > 20,
        "only {} requests were made",
        answers.len()
    );
    answers
}

fn assert_all_served(answers: &[(u16, String)]) {
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
}

fn failures_metric(server: &TestServer, model: &str) -> String {
    let prefix = format!("sluice_model_load_failures_total{{model=\"{model}\"}} ");
    metrics_text(server)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| "0".into())
}

/// A corrupt newest version, under `latest = 1` and `latest = 2`: the versions that served keep serving, the
/// failure is reported once (index, metric, log line), and the version loads once its file is fixed.
#[test]
fn a_corrupt_newest_version_never_takes_the_model_offline() {
    for (policy, versions, serving) in [(1, &[1][..], &["1"][..]), (2, &[1, 2], &["2"])] {
        let repo = repo(
            versions,
            &format!("version_policy = {{ latest = {policy} }}\n"),
        );
        let root = repo.path();
        let server = start(root, "100");
        let bad = versions.len() as u64 + 1;
        let answers = under_load(&server, "m", || {
            common::place(root, "m", bad, CORRUPT);
            wait_for("the corrupt version to be tried", || {
                let r = reason(&server, "m", bad);
                !r.is_empty() && !r.contains("waiting")
            });
        });
        assert_all_served(&answers);
        assert!(answers.iter().all(|(_, v)| serving.contains(&v.as_str())));
        let r = row(&server, "m", bad).unwrap();
        assert_eq!(r["state"], "UNAVAILABLE", "{r}");
        for v in versions {
            assert_eq!(row(&server, "m", *v).unwrap()["state"], "READY");
        }
        assert_eq!(failures_metric(&server, "m"), "1");
        let lines = || {
            server
                .logs()
                .iter()
                .filter(|l| {
                    l.contains("failed to load") && l.contains(&format!("\"version\":{bad}"))
                })
                .count()
        };
        wait_for("the failure's log line", || lines() > 0);
        assert_eq!(lines(), 1, "one log line for the failed version");
        assert_eq!(get_json(&server, "/v2/health/ready").0, 200);

        // Not retried while the file is unchanged; loaded once it is fixed.
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(failures_metric(&server, "m"), "1");
        let answers = under_load(&server, "m", || {
            common::place(root, "m", bad, &iris_file());
            wait_for("the fixed version to serve", || {
                default_version(&server, "m") == Some(bad.to_string())
            });
        });
        assert_all_served(&answers);
        if policy == 1 {
            wait_for("the previous version to retire", || {
                reason(&server, "m", 1).contains("not selected by the version policy")
            });
        }
    }
}

/// Under `latest = 1`, a newer version that the schema guard finds incompatible loads (and answers when named) but
/// neither counts for the policy nor takes the default: the version that served keeps serving.
#[test]
fn an_incompatible_newest_version_does_not_replace_the_default() {
    let repo = repo(&[1], "");
    let root = repo.path();
    let server = start(root, "100");
    let iris_v1 = std::fs::read(common::models_dir().join("iris/1/model.onnx")).unwrap();
    let answers = under_load(&server, "m", || {
        common::place(root, "m", 2, &iris_v1);
        wait_for("v2 to load", || {
            row(&server, "m", 2).is_some_and(|r| r["state"] == "READY")
        });
    });
    assert_all_served(&answers);
    assert!(answers.iter().all(|(_, v)| v == "1"));
    let r2 = row(&server, "m", 2).unwrap();
    assert!(
        r2["reason"]
            .as_str()
            .unwrap()
            .contains("incompatible: output 'label'"),
        "{r2}"
    );
    let r1 = row(&server, "m", 1).unwrap();
    assert_eq!(
        (r1["state"].as_str(), r1["default"].as_bool()),
        (Some("READY"), Some(true))
    );
    assert_eq!(r1["reason"], "", "the default carries no verdict");
    let named = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    assert_eq!(
        post_json(&server, "/v2/models/m/versions/2/infer", &named).0,
        200
    );
}

/// N+1 added and N deleted a moment later, while N+1 is still settling: N answers from memory until N+1 is ready.
/// Then N+1's directory goes while a corrupt N+2 settles: N+1 stays (shown with its files removed, gauge and one
/// WARN line) because N+2 fails; a good N+3 replaces it.
#[test]
fn a_version_serves_until_its_successor_is_ready() {
    let repo = repo(&[1], "");
    let root = repo.path();
    // A settle time well above any scheduling delay: v1's files go 200 ms after v2 arrived, and the reconcile that
    // sees them gone must come before v2 has settled, also on a loaded CI machine.
    let server = start(root, "3000");
    let answers = under_load(&server, "m", || {
        common::place(root, "m", 2, &iris_file());
        std::thread::sleep(Duration::from_millis(200));
        std::fs::remove_dir_all(root.join("m/1")).unwrap();
        wait_for("v1 to serve from memory", || {
            row(&server, "m", 1)
                .is_some_and(|r| r["reason"].as_str().unwrap_or("").contains("files removed"))
        });
        wait_for("v2 to take over", || {
            default_version(&server, "m").as_deref() == Some("2")
        });
    });
    assert_all_served(&answers);
    assert!(answers.iter().any(|(_, v)| v == "1"), "v1 served meanwhile");
    wait_for("v1 to go", || row(&server, "m", 1).is_none());

    let answers = under_load(&server, "m", || {
        common::place(root, "m", 3, CORRUPT);
        std::thread::sleep(Duration::from_millis(200));
        std::fs::remove_dir_all(root.join("m/2")).unwrap();
        wait_for("v3 to fail", || {
            reason(&server, "m", 3).contains("failed") || {
                let r = reason(&server, "m", 3);
                !r.is_empty() && !r.contains("waiting")
            }
        });
        std::thread::sleep(Duration::from_millis(300));
    });
    assert_all_served(&answers);
    assert!(answers.iter().all(|(_, v)| v == "2"));
    let r2 = row(&server, "m", 2).unwrap();
    assert_eq!(r2["state"], "READY", "{r2}");
    assert!(
        r2["reason"].as_str().unwrap().contains("files removed"),
        "{r2}"
    );
    let metrics = metrics_text(&server);
    assert!(
        metrics.contains(r#"sluice_model_files_removed{model="m",version="2"} 1"#),
        "{metrics}"
    );
    // One WARN line per version that served from memory: v1 while v2 settled, and v2 now.
    let warnings = |version: u64| {
        server
            .logs()
            .iter()
            .filter(|l| {
                l.contains("\"level\":\"WARN\"")
                    && l.contains("files removed")
                    && l.contains(&format!("\"version\":{version}"))
            })
            .count()
    };
    wait_for("both warnings", || warnings(1) > 0 && warnings(2) > 0);
    assert_eq!((warnings(1), warnings(2)), (1, 1));
    assert_eq!(get_json(&server, "/v2/health/ready").0, 200);

    let answers = under_load(&server, "m", || {
        common::place(root, "m", 4, &iris_file());
        wait_for("v4 to take over", || {
            default_version(&server, "m").as_deref() == Some("4")
        });
    });
    assert_all_served(&answers);
    wait_for("v2 to go", || row(&server, "m", 2).is_none());
    assert!(!metrics_text(&server).contains("sluice_model_files_removed{"));
}

/// Removing a model's whole directory is an explicit intent: the model is unloaded once in-flight requests finish.
#[test]
fn removing_a_model_directory_unloads_it() {
    let repo = common::slow_repo(&["iris"]);
    let server = start(repo.path(), "100");
    let answers = common::during_slow_requests(&server, || {
        std::fs::remove_dir_all(repo.path().join("slow")).unwrap();
    });
    for (status, reply) in answers {
        assert_eq!(status, 200, "{reply}");
    }
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256], "data": vec![0.5; 256]}]});
    wait_for("the model to go", || {
        post_json(&server, "/v2/models/slow/infer", &body).0 == 404
    });
    assert_eq!(
        post_json(&server, "/v2/models/iris/infer", &iris_body()).0,
        200
    );
    assert_eq!(get_json(&server, "/v2/health/ready").0, 200);
}

/// A version takes traffic only after its warmup succeeded: a failing warmup is a failed load and the previous
/// version keeps serving; a sample request from `[warmup]` is used when given; a model whose inputs cannot be
/// built from its signature says how to fix it.
#[test]
fn a_failed_warmup_is_a_failed_load() {
    let repo = common::repo_with(&["reshape"]);
    let root = repo.path();
    let server = start(root, "100");
    let log_line = |version: u64| {
        server.wait_for_log_line(|l| {
            l["fields"]["version"] == version
                && (l["fields"]["message"] == "model version loaded"
                    || l["fields"]["message"] == "model version failed to load")
        })
    };
    // The fixture's model.toml names a sample request of four elements, which Reshape([2, -1]) accepts.
    assert_eq!(log_line(1)["fields"]["warmup"], "request");
    let four =
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]});
    let file = std::fs::read(root.join("reshape/1/model.onnx")).unwrap();

    // A sample of three elements makes the warmup fail: v2 does not load, v1 serves.
    std::fs::write(
        root.join("reshape/bad.json"),
        r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [0, 0, 0]}]}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("reshape/model.toml"),
        "[warmup]\nrequest = \"bad.json\"\n",
    )
    .unwrap();
    let answers = under_load_with(&server, "reshape", &four, || {
        common::place(root, "reshape", 2, &file);
        let line = log_line(2);
        assert_eq!(
            line["fields"]["message"], "model version failed to load",
            "{line}"
        );
    });
    assert_all_served(&answers);
    // The log line is written during the load, the index once the reconcile installs its result.
    wait_for("the failure in the index", || {
        reason(&server, "reshape", 2).contains("warmup failed with the sample request bad.json")
    });
    assert_eq!(default_version(&server, "reshape").as_deref(), Some("1"));

    // Without a sample, the signature's one-element input cannot be reshaped to [2, -1]: the reason says what to do.
    std::fs::write(root.join("reshape/model.toml"), "").unwrap();
    wait_for("the retry without a sample", || {
        reason(&server, "reshape", 2).contains("give a sample request")
    });
    assert_eq!(default_version(&server, "reshape").as_deref(), Some("1"));

    // Turned off: v2 loads without a warmup.
    std::fs::write(
        root.join("reshape/model.toml"),
        "[warmup]\nenabled = false\n",
    )
    .unwrap();
    wait_for("v2 to load", || {
        default_version(&server, "reshape").as_deref() == Some("2")
    });
    assert_eq!(post_json(&server, "/v2/models/reshape/infer", &four).0, 200);
}

/// Strict readiness (the default): a model all of whose versions failed keeps the server unready, with the reason;
/// fixing it, or an operator's unload, makes it ready. Without strict readiness the server is ready once the
/// start-up scan finished.
#[test]
fn readiness_waits_for_every_model_in_strict_mode() {
    let repo = common::repo_with(&["iris"]);
    let root = repo.path();
    std::fs::create_dir_all(root.join("broken/1")).unwrap();
    std::fs::write(root.join("broken/1/model.onnx"), CORRUPT).unwrap();

    let lenient =
        TestServer::start_with(root, &[], &[("SLUICE__MODELS__STRICT_READINESS", "false")]);
    assert_eq!(get_json(&lenient, "/v2/health/ready").0, 200);
    drop(lenient);

    let server = start(root, "100");
    let (status, body) = get_json(&server, "/v2/health/ready");
    assert_eq!(status, 503);
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("not every model has a ready version: model 'broken': version 1:"),
        "{message}"
    );
    assert_eq!(
        post_json(&server, "/v2/models/iris/infer", &iris_body()).0,
        200
    );

    common::place(root, "broken", 1, &iris_file());
    wait_for("the fixed model", || {
        get_json(&server, "/v2/health/ready").0 == 200
    });

    // A model added later that fails makes the server unready too, until an operator unloads it.
    std::fs::create_dir_all(root.join("later")).unwrap();
    common::place(root, "later", 1, CORRUPT);
    wait_for("the new broken model to be seen", || {
        get_json(&server, "/v2/health/ready").0 == 503
    });
    let response = client()
        .post(server.url("/v2/repository/models/later/unload"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(get_json(&server, "/v2/health/ready").0, 200);
}

/// Loads recorded for `model` (`sluice_model_load_duration_seconds_count`).
fn loads(server: &TestServer, model: &str) -> u64 {
    let prefix = format!("sluice_model_load_duration_seconds_count{{model=\"{model}\"}} ");
    metrics_text(server)
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or(0)
}

/// Resident size once the released version's memory has gone back: the least of three readings 250 ms apart,
/// taken after the server's coalesced trim (`memory::Trimmer`, 200 ms after a release) has run. One reading can
/// still catch ONNX Runtime's arenas or mimalloc's pages on their way back; a leak lifts all three.
fn settled_rss(server: &TestServer) -> u64 {
    (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(250));
            common::rss_kib(server.pid())
        })
        .min()
        .unwrap()
}

/// 200 add/replace/remove cycles of a compute-heavy CNN (open-nsfw, 23 MB) while clients infer on a small model:
/// resident memory grows by less than 10 % between cycles 21-40 and cycles 181-200, and no request fails.
/// In those windows each cycle's size is read once memory has settled ([`settled_rss`]), and each window is
/// summarised by its median: a leak lifts every cycle after it and so moves the median, a stray reading does not.
/// `scripts/test.sh` fetches the CNN (scripts/lib/fetch-cnn.sh) and passes its path in `SLUICE_TEST_CNN`.
#[test]
fn cnn_add_replace_remove_cycles_do_not_leak() {
    let Ok(cnn) = std::env::var("SLUICE_TEST_CNN") else {
        eprintln!("SLUICE_TEST_CNN not set (scripts/test.sh sets it): not checked in this run");
        return;
    };
    let cnn = std::fs::read(cnn).unwrap();
    let repo = repo(&[1], "");
    let root = repo.path();
    std::fs::create_dir_all(root.join("cnn")).unwrap();
    std::fs::write(
        root.join("cnn/model.toml"),
        "[session]\npool_size = 1\nintra_op_threads = 2\n",
    )
    .unwrap();
    common::place(root, "cnn", 1, &cnn);
    let server = start(root, "50");
    // Resident size once each cycle ended, over cycles 21-40 (warm) and 181-200.
    let (mut warm, mut last) = (Vec::new(), Vec::new());
    let answers = under_load(&server, "m", || {
        for n in 1..=200u64 {
            common::place(root, "cnn", n + 1, &cnn);
            wait_for("the new version to serve", || {
                default_version(&server, "cnn") == Some((n + 1).to_string())
            });
            let before = loads(&server, "cnn");
            common::place(root, "cnn", n + 1, &cnn);
            wait_for("the replaced file to load", || {
                loads(&server, "cnn") > before
            });
            std::fs::remove_dir_all(root.join(format!("cnn/{n}"))).unwrap();
            wait_for("the old version to go", || row(&server, "cnn", n).is_none());
            let rss = if matches!(n, 21..=40 | 181..=200) {
                settled_rss(&server)
            } else {
                common::rss_kib(server.pid())
            };
            if n % 10 == 0 {
                eprintln!("cycle {n}: RSS {rss} KiB");
            }
            match n {
                21..=40 => warm.push(rss),
                181..=200 => last.push(rss),
                _ => {}
            }
        }
    });
    assert_all_served(&answers);
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2
    };
    let (warm, after) = (median(&mut warm), median(&mut last));
    let growth = (after as f64 - warm as f64) / warm as f64 * 100.0;
    eprintln!(
        "{} small-model requests, all 200; median RSS over cycles 21-40: {warm} KiB, over cycles 181-200: {after} KiB; growth {growth:.1} %",
        answers.len()
    );
    assert!(
        growth < 10.0,
        "RSS grew {growth:.1} % ({warm} -> {after} KiB)"
    );
}
