//! Memory admission inside a real memory limit: the `sluice` binary runs in a memory cgroup of its own (v2's
//! `memory.max`, or v1's `memory.limit_in_bytes`) and is sent bursts that would take it past the limit without
//! admission. The kernel is the judge: the process must not be killed, and the group's peak usage must stay under
//! its limit.
//!
//! Creating a cgroup needs root and a mounted memory controller (the development and CI machines have both). Where
//! they are missing the tests fail and say so; `SLUICE_TEST_NO_CGROUP=1` skips them on purpose.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use common::{client, digit_images, iris_body, post_json, repo_with, TestServer};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// A child memory cgroup with a hard limit, removed on drop (after its processes are gone).
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// `None` only when `SLUICE_TEST_NO_CGROUP=1`; otherwise a group, or a panic that says what is missing.
    fn create(tag: &str, limit: u64) -> Option<Cgroup> {
        if std::env::var("SLUICE_TEST_NO_CGROUP").as_deref() == Ok("1") {
            eprintln!("SLUICE_TEST_NO_CGROUP=1: memory-limit test skipped on purpose");
            return None;
        }
        let name = format!("sluice-test-{}-{tag}", std::process::id());
        let unified = Path::new("/sys/fs/cgroup/cgroup.controllers");
        let v2 = std::fs::read_to_string(unified)
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let dir = if v2 {
            Path::new("/sys/fs/cgroup").join(&name)
        } else {
            Path::new("/sys/fs/cgroup/memory").join(&name)
        };
        if let Err(e) = std::fs::create_dir(&dir) {
            panic!(
                "cannot create the memory cgroup {} ({e}): this test needs root and a mounted memory controller \
                 (cgroup v2, or v1 at /sys/fs/cgroup/memory); set SLUICE_TEST_NO_CGROUP=1 to skip it",
                dir.display()
            );
        }
        let group = Cgroup { dir, v2 };
        if v2 {
            group.write("memory.max", &limit.to_string());
            group.write("memory.swap.max", "0");
        } else {
            group.write("memory.limit_in_bytes", &limit.to_string());
        }
        Some(group)
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        // memory.swap.max is missing where swap accounting is off; nothing can swap then.
        if let Err(e) = std::fs::write(&path, value) {
            assert!(
                file == "memory.swap.max",
                "writing {value} to {}: {e}",
                path.display()
            );
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// The most the group has used, in bytes.
    fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        let text = self.read(file);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{file} of {}: {text:?}", self.dir.display()))
    }

    /// Processes the kernel's OOM killer killed in the group.
    fn oom_kills(&self) -> u64 {
        let text = self.read(if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        });
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The server was killed just before; the group empties a moment later.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// A V2 JSON request of `rows` iris rows (4 FP32 each), about 16 bytes a row.
fn iris_rows(rows: usize) -> Bytes {
    let mut body = String::with_capacity(rows * 16 + 128);
    body.push_str(r#"{"inputs":[{"name":"float_input","datatype":"FP32","shape":["#);
    body.push_str(&format!("{rows},4],\"data\":["));
    for _ in 0..rows {
        body.push_str("5.1,3.5,1.4,0.2,");
    }
    body.pop();
    body.push_str("]}]}");
    Bytes::from(body)
}

/// A client of a small model that sends one request after another until `stop`; returns the statuses that were
/// not 200, with their bodies, and how many were answered.
fn small_client(server: &TestServer, stop: &AtomicBool) -> (usize, Vec<(u16, Value)>) {
    let image = &digit_images(1, 7)[0];
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 64], "data": image}]});
    let (mut answered, mut failures) = (0, Vec::new());
    while !stop.load(Ordering::Relaxed) {
        let (status, reply) = post_json(server, "/v2/models/digits_mlp/infer", &body);
        answered += 1;
        if status != 200 {
            failures.push((status, reply));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (answered, failures)
}

/// Runs `burst` while the small client runs, then checks what the kernel saw: sluice alive, no OOM kill, the
/// group's peak under its limit, and every small request answered 200.
fn under_limit(group: &Cgroup, server: &mut TestServer, limit: u64, burst: impl FnOnce()) {
    let stop = AtomicBool::new(false);
    let (answered, failures) = std::thread::scope(|s| {
        let small = s.spawn(|| small_client(server, &stop));
        burst();
        stop.store(true, Ordering::Relaxed);
        small.join().unwrap()
    });
    let (peak, kills) = (group.peak(), group.oom_kills());
    eprintln!(
        "cgroup peak {} MiB of {} MiB; small client: {answered} requests",
        peak / MIB,
        limit / MIB
    );
    assert_eq!(kills, 0, "the OOM killer killed in the group");
    assert!(
        server.try_wait().is_none(),
        "sluice exited; logs:\n{}",
        server.logs().join("\n")
    );
    assert!(peak < limit, "peak {peak} reached the limit {limit}");
    assert!(answered > 0);
    assert!(
        failures.is_empty(),
        "small-model requests failed: {failures:?}"
    );
    let (status, _) = post_json(server, "/v2/models/iris/infer", &iris_body());
    assert_eq!(status, 200);
}

/// 24 concurrent 45 MB requests (3,000,000 iris rows each, within every configured limit) in a 512 MiB group:
/// each is answered 200 or 503 with Retry-After; the process lives and the group never reaches its limit.
#[test]
fn a_burst_of_large_requests_stays_under_the_memory_limit() {
    let limit = 512 * MIB;
    let Some(group) = Cgroup::create("burst", limit) else {
        return;
    };
    let repo = repo_with(&["iris", "digits_mlp"]);
    let mut server = TestServer::start_in_cgroup(&group.procs(), repo.path(), &[], &[]);
    let metrics = common::metrics_text(&server);
    let budget = metric(&metrics, "sluice_memory_budget_bytes");
    assert!(
        budget > 0.0 && budget < limit as f64,
        "budget {budget} within the limit"
    );
    assert_eq!(metric(&metrics, "sluice_memory_limit_bytes"), limit as f64);
    let body = iris_rows(3_000_000);
    assert!(body.len() > 45_000_000);
    let url = server.url("/v2/models/iris/infer");
    let mut answers: Vec<(u16, Option<String>, String)> = Vec::new();
    under_limit(&group, &mut server, limit, || {
        answers = std::thread::scope(|s| {
            let sends: Vec<_> = (0..24)
                .map(|_| {
                    let (url, body) = (&url, body.clone());
                    s.spawn(move || {
                        let response = client()
                            .post(url)
                            .header("content-type", "application/json")
                            .timeout(Duration::from_secs(600))
                            .body(body)
                            .send()
                            .expect("an answer, not a dropped connection");
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let text = response.text().unwrap();
                        // The 200s are long: keep their start only.
                        (status, retry_after, text.chars().take(300).collect())
                    })
                })
                .collect();
            sends.into_iter().map(|h| h.join().unwrap()).collect()
        });
    });
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let refused = answers.iter().filter(|a| a.0 == 503).count();
    eprintln!("large requests: {ok} x 200, {refused} x 503");
    for (status, retry_after, text) in &answers {
        assert!(
            *status == 200 || *status == 503,
            "large request answered {status}: {text}"
        );
        if *status == 200 {
            // Decoded and encoded off the async workers: the answer is whole and well-formed JSON from the start.
            assert!(text.starts_with(r#"{"model_name":"iris""#), "{text}");
        }
        if *status == 503 {
            assert!(retry_after.is_some(), "503 without Retry-After: {text}");
            assert!(
                text.contains("limits.max_inflight_bytes"),
                "503 says why: {text}"
            );
        }
    }
    assert!(ok > 0, "some large requests are served");
    let metrics = common::metrics_text(&server);
    assert_eq!(
        metric(&metrics, "sluice_memory_refused_total"),
        refused as f64
    );
    // Everything was given back.
    common::wait_for("the budget to empty", || {
        metric(
            &common::metrics_text(&server),
            "sluice_memory_reserved_bytes",
        ) < 64.0 * MIB as f64
    });
}

/// A flood of hostile input (oversized and malformed bodies, decompression bombs, huge shapes, deep nesting) from 16
/// clients at once in a 512 MiB group: each gets a 4xx (or 503 when memory is short), the group stays under its
/// limit and a small-model client sees no failure.
#[test]
fn a_flood_of_hostile_inputs_stays_under_the_memory_limit() {
    let limit = 512 * MIB;
    let Some(group) = Cgroup::create("hostile", limit) else {
        return;
    };
    let repo = repo_with(&["iris", "digits_mlp"]);
    let mut server = TestServer::start_in_cgroup(&group.procs(), repo.path(), &[], &[]);
    let url = server.url("/v2/models/iris/infer");
    let inputs = hostile_inputs();
    let mut statuses: Vec<(u16, String)> = Vec::new();
    under_limit(&group, &mut server, limit, || {
        statuses = std::thread::scope(|s| {
            let senders: Vec<_> = (0..16)
                .map(|k| {
                    let (url, inputs) = (&url, &inputs);
                    s.spawn(move || {
                        let mut seen = Vec::new();
                        for round in 0..3 {
                            for i in 0..inputs.len() {
                                let (body, encoding) = &inputs[(i + k + round) % inputs.len()];
                                let mut request = client()
                                    .post(url)
                                    .timeout(Duration::from_secs(600))
                                    .body(body.clone());
                                if let Some(e) = encoding {
                                    request = request.header("content-encoding", *e);
                                }
                                let response = request.send().expect("an answer");
                                let status = response.status().as_u16();
                                let text: String =
                                    response.text().unwrap().chars().take(300).collect();
                                seen.push((status, text));
                            }
                        }
                        seen
                    })
                })
                .collect();
            senders
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
    });
    eprintln!("hostile requests: {}", statuses.len());
    for (status, text) in &statuses {
        assert!(
            (400..500).contains(status) || *status == 503,
            "hostile input answered {status}: {text}"
        );
    }
}

/// Bodies and their Content-Encoding: each is refused with a 4xx by a healthy server.
fn hostile_inputs() -> Vec<(Bytes, Option<&'static str>)> {
    use std::io::Write;
    // 80 MB: over server.max_body_bytes (64 MiB).
    let giant = format!(
        r#"{{"inputs":[{{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[{}1]}}]}}"#,
        "1,".repeat(40_000_000)
    );
    // 1 GiB of spaces gzipped to about 1 MiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&spaces).unwrap();
    }
    let bomb = gz.finish().unwrap();
    // 45 MB of valid rows whose shape does not match their count: read and decoded, then refused.
    let mismatched = String::from_utf8(iris_rows(3_000_000).to_vec())
        .unwrap()
        .replacen("3000000,4", "3000001,4", 1);
    // 45 MB whose last value is not a number.
    let mut broken = String::from_utf8(iris_rows(3_000_000).to_vec()).unwrap();
    broken.truncate(broken.len() - 8);
    broken.push_str("x]}]}");
    let huge_shape = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1u64 << 62], "data": []}]});
    let nested = format!(
        r#"{{"inputs":[{{"name":"float_input","datatype":"FP32","shape":[1,4],"data":{}{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    vec![
        (Bytes::from(giant), None),
        (Bytes::from(bomb), Some("gzip")),
        (Bytes::from_static(b"\x1f\x8b\x08\x00garbage"), Some("gzip")),
        (Bytes::from(mismatched), None),
        (Bytes::from(broken), None),
        (Bytes::from(huge_shape.to_string()), None),
        (Bytes::from(nested), None),
        (
            Bytes::from_static(b"{\"id\":\"\xff\xfe\",\"inputs\":[]}"),
            None,
        ),
        (Bytes::from_static(b"{}"), Some("br")),
    ]
}

/// A version whose sessions cannot fit beside what is resident is not loaded, with that reason; the version before
/// it keeps serving and the process lives.
#[test]
fn a_version_that_cannot_fit_is_refused_and_the_old_one_serves() {
    let limit = 160 * MIB;
    let Some(group) = Cgroup::create("load", limit) else {
        return;
    };
    let cnn = std::fs::read(cnn_path()).unwrap();
    let repo = repo_with(&["iris"]);
    let mut server = TestServer::start_in_cgroup(
        &group.procs(),
        repo.path(),
        &[],
        &[
            ("SLUICE__ADMIN__TOKEN", "memory-admin"),
            ("SLUICE__MODELS__POLL_INTERVAL_MS", "300"),
        ],
    );
    common::place(repo.path(), "iris", 9, &cnn);
    let mut row = Value::Null;
    common::wait_for("version 9 to be refused", || {
        row = common::index_row(&server, "memory-admin", "iris", 9).unwrap_or_default();
        row["state"] == "UNAVAILABLE"
    });
    let reason = row["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("not enough memory to load it"),
        "reason: {row}"
    );
    assert!(server
        .logs()
        .iter()
        .any(|l| l.contains("model version not loaded")));
    let (status, reply) = post_json(&server, "/v2/models/iris/infer", &iris_body());
    assert_eq!(status, 200, "{reply}");
    assert_ne!(reply["model_version"], "9");
    assert!(server.try_wait().is_none());
    assert_eq!(group.oom_kills(), 0);
    drop(server);
}

/// The compute-heavy CNN (open-nsfw, 23 MB): `SLUICE_TEST_CNN`, as `scripts/test.sh` sets it, else fetched.
fn cnn_path() -> PathBuf {
    if let Ok(path) = std::env::var("SLUICE_TEST_CNN") {
        return path.into();
    }
    let out = std::process::Command::new(Path::new(common::ROOT).join("scripts/lib/fetch-cnn.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/lib/fetch-cnn.sh failed");
    String::from_utf8(out.stdout).unwrap().trim().into()
}

/// A metric's value (the first sample of that name) from the text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}
