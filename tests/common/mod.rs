//! Shared helpers for integration tests: the real `sluice` binary on a loopback port, and temporary repositories.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn models_dir() -> PathBuf {
    Path::new(ROOT).join("models")
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(ROOT).join("tests/fixtures")
}

/// A temporary repository holding copies of the named models, looked up in `models/` then the test fixtures.
pub fn repo_with(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in models {
        let source = [
            models_dir().join(name),
            fixtures_dir().join("models").join(name),
        ]
        .into_iter()
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no model {name}"));
        copy_dir(&source, &dir.path().join(name));
    }
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The `sluice` binary running on 127.0.0.1 with an OS-chosen port. Killed on drop.
pub struct TestServer {
    child: Child,
    pub base: String,
    logs: Arc<Mutex<Vec<String>>>,
    /// A client that trusts this server (its TLS certificate, when it has one).
    pub client: reqwest::blocking::Client,
}

pub fn sluice_command() -> Command {
    clean_env(Command::new(env!("CARGO_BIN_EXE_sluice")))
}

/// `sluice` started by a shell that first moves itself into the cgroup whose `cgroup.procs` file is `procs`, then
/// execs it: the server runs under the group's limits from its first allocation.
pub fn sluice_command_in_cgroup(procs: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$0" && exec "$@""#)
        .arg(procs)
        .arg(env!("CARGO_BIN_EXE_sluice"));
    clean_env(cmd)
}

fn clean_env(mut cmd: Command) -> Command {
    cmd.env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("SLUICE__") {
            cmd.env_remove(key);
        }
    }
    // Tests run in parallel: no fixed gRPC port (the gRPC tests give a free one).
    cmd.env("SLUICE__SERVER__GRPC_PORT", "0");
    cmd
}

impl TestServer {
    pub fn start(models: &Path) -> TestServer {
        Self::start_with(models, &[], &[])
    }

    /// Starts the server with TLS (set through `env`) and a client that trusts `ca_pem`.
    pub fn start_tls(models: &Path, env: &[(&str, &str)], ca_pem: &[u8]) -> TestServer {
        let root = reqwest::Certificate::from_pem(ca_pem).unwrap();
        let client = reqwest::blocking::Client::builder()
            .add_root_certificate(root)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self::launch(sluice_command(), models, &[], env, "https", client)
    }

    /// Starts the server and waits until it is listening and ready.
    pub fn start_with(models: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        Self::launch(sluice_command(), models, args, env, "http", client())
    }

    /// Starts the server inside the cgroup whose `cgroup.procs` file is `procs`.
    pub fn start_in_cgroup(
        procs: &Path,
        models: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> TestServer {
        let command = sluice_command_in_cgroup(procs);
        Self::launch(command, models, args, env, "http", client())
    }

    fn launch(
        mut cmd: Command,
        models: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        scheme: &str,
        client: reqwest::blocking::Client,
    ) -> TestServer {
        cmd.arg("--models")
            .arg(models)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args);
        // Freshly copied test repositories would otherwise wait out the default 1 s settle time.
        cmd.env("SLUICE__MODELS__SETTLE_MS", "100");
        // Tests that shut down do not need load balancers to notice.
        cmd.env("SLUICE__SERVER__SHUTDOWN_DELAY_MS", "0");
        cmd.envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("sluice starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = Arc::clone(&logs);
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = listening_address(&line) {
                        let _ = tx.send(addr);
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "sluice did not start listening; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
        let server = TestServer {
            child,
            base: format!("{scheme}://{addr}"),
            logs,
            client,
        };
        server.wait_ready();
        server
    }

    /// Waits until the start-up load finished: ready, or (strict readiness) unready only because some model of the
    /// test's repository has no ready version, as tests with broken models intend.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(self.url("/v2/health/ready")).send() {
                if r.status() == 200 {
                    return;
                }
                let body = r.text().unwrap_or_default();
                if body.contains("not every model has a ready version") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sluice did not become ready; logs:\n{}",
            self.logs().join("\n")
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The first log line, parsed as JSON, that `matches` accepts, waiting (bounded) for the server to write it.
    /// For servers started with `SLUICE__LOG__FORMAT=json`.
    pub fn wait_for_log_line(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            let found = logs
                .iter()
                .map(|l| {
                    serde_json::from_str::<Value>(l)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
                })
                .find(|v| matches(v));
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line in:\n{}",
                logs.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.terminate_wait()
    }

    /// Waits (bounded) for the process to exit after a signal.
    pub fn terminate_wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds `127.0.0.1:<port>` in the "listening" log line (text or JSON format).
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("127.0.0.1:")?;
    let rest = &line[start + "127.0.0.1:".len()..];
    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (!port.is_empty()).then(|| format!("127.0.0.1:{port}"))
}

/// A one-row V2 request for the iris example models (`float_input`, 1×4 FP32).
pub fn iris_body() -> Value {
    serde_json::json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4],
        "data": [5.1, 3.5, 1.4, 0.2]}]})
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs `body` and returns (status, JSON body).
pub fn post_json(
    server: &TestServer,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = server
        .client
        .post(server.url(path))
        .json(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

pub fn get_json(server: &TestServer, path: &str) -> (u16, serde_json::Value) {
    let response = server.client.get(server.url(path)).send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

/// Runs the binary to completion with `args` and `env`; returns (exit code, stdout + stderr).
pub fn run_sluice(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = sluice_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.code(), text)
}

/// The server's `/metrics` text.
pub fn metrics_text(server: &TestServer) -> String {
    server
        .client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// Polls until `check` holds (bounded at 30 s).
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A repository with the `slow` fixture, on one session (so concurrent requests queue and stay in flight), and
/// `others` from the example models.
pub fn slow_repo(others: &[&str]) -> tempfile::TempDir {
    let mut models = vec!["slow"];
    models.extend_from_slice(others);
    let repo = repo_with(&models);
    std::fs::write(
        repo.path().join("slow/model.toml"),
        "[session]\npool_size = 1\n",
    )
    .unwrap();
    repo
}

/// Rows of each long `slow` request.
pub const SLOW_ROWS: usize = 2000;

/// Sends three long requests to `slow` at once (the body is serialised once, so they arrive together), runs
/// `during` once all three hold the version, and returns their answers.
pub fn during_slow_requests(server: &TestServer, during: impl FnOnce()) -> Vec<(u16, Value)> {
    during_slow_requests_n(server, 3, during)
}

/// As [`during_slow_requests`], with `n` requests.
pub fn during_slow_requests_n(
    server: &TestServer,
    n: usize,
    during: impl FnOnce(),
) -> Vec<(u16, Value)> {
    let body = serde_json::to_vec(
        &serde_json::json!({"inputs": [{"name": "x", "datatype": "FP32",
        "shape": [SLOW_ROWS, 256], "data": vec![0.5; SLOW_ROWS * 256]}]}),
    )
    .unwrap();
    std::thread::scope(|s| {
        let running: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let response = server
                        .client
                        .post(server.url("/v2/models/slow/infer"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .unwrap();
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().unwrap())
                })
            })
            .collect();
        wait_for_in_flight(server, "slow", n);
        during();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// Waits until `n` requests hold `model` version 1 (the in-flight gauge); on a timeout the message has the last
/// gauge line seen and the server's log, to tell requests that never arrived from requests that already finished.
pub fn wait_for_in_flight(server: &TestServer, model: &str, n: usize) {
    let prefix = format!("sluice_inflight_requests{{model=\"{model}\",version=\"1\"}} ");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let text = metrics_text(server);
        last = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or("(no gauge line)")
            .to_owned();
        if last == format!("{prefix}{n}") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "timed out waiting for {n} requests in flight; last: {last}; log:\n{}",
        server.logs().join("\n")
    );
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` deterministic pseudo-random 8x8 images (values k/16), for the digit models.
pub fn digit_images(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 17) as f32 / 16.0
                })
                .collect()
        })
        .collect()
}

/// Puts `bytes` at `<root>/<model>/<version>/model.onnx` atomically (written aside, then renamed into place), as a
/// careful operator or a sync tool does.
pub fn place(root: &Path, model: &str, version: u64, bytes: &[u8]) {
    let staging = root.join(format!(".staging-{model}-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), bytes).unwrap();
    let target = root.join(model).join(version.to_string());
    if target.exists() {
        std::fs::rename(staging.join("model.onnx"), target.join("model.onnx")).unwrap();
        std::fs::remove_dir(&staging).unwrap();
    } else {
        std::fs::rename(&staging, &target).unwrap();
    }
}

/// The repository index's row for one version (the management API, with the admin `token`).
pub fn index_row(server: &TestServer, token: &str, model: &str, version: u64) -> Option<Value> {
    let response = server
        .client
        .post(server.url("/v2/repository/index"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    let rows: Vec<Value> = response.json().unwrap();
    rows.into_iter()
        .find(|r| r["name"] == model && r["version"].as_str() == Some(version.to_string().as_str()))
}
