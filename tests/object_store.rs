//! A model repository in a bucket, against a real S3-compatible store: SeaweedFS (`scripts/lib/fetch-seaweedfs.sh`
//! installs its `weed` binary; `SLUICE_WEED` or `.venv-s3/.weed`). One SeaweedFS (master, volume, filer) serves the
//! whole file; each test gets buckets of its own, and S3 gateways (`weed s3`) it may stop and start. The buckets are
//! filled with `object_store`, the client sluice itself uses.
//!
//! Served from a bucket; a new version uploaded under load; a corrupt one; one uploaded in pieces (never loaded
//! half-done, nor with a checksum that does not match its card); the store stopped for 10 s under load; a version
//! deleted; the routing file in the bucket steering two replicas alike.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{client, get_json, iris_body, metrics_text, wait_for, TestServer};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::Value;

const ACCESS_KEY: &str = "sluice-test";
const SECRET_KEY: &str = "sluice-test-secret";
const TOKEN: &str = "bucket-admin";

fn weed_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_WEED") {
        return path.into();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-s3/.weed");
    assert!(
        path.exists(),
        "SeaweedFS not installed: run scripts/lib/fetch-seaweedfs.sh (scripts/test.sh does) or set SLUICE_WEED"
    );
    path
}

/// Starts `command` so that it dies with this test process: from one long-lived thread, with a parent-death signal
/// (tied to the thread that spawned it, hence the thread that lives as long as the process).
fn spawn_kept(command: Command) -> Child {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl in the child before exec touches no memory of the parent.
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let _ = reply.send(command.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    keeper.lock().unwrap().send((command, tx)).unwrap();
    rx.recv().unwrap().expect("weed starts")
}

/// A loopback port below 55000 whose +10000 (SeaweedFS's gRPC port) is free too.
fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize % 200) * 100;
    loop {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 20_000) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The SeaweedFS cluster the tests share: master, volume server and filer in one `weed server`.
struct Cluster {
    filer: u16,
    config: PathBuf,
    _dir: tempfile::TempDir,
    _server: Child,
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.json");
        let identities = serde_json::json!({"identities": [{"name": "sluice",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]});
        std::fs::write(&config, identities.to_string()).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (master, volume, filer) = (free_port(), free_port(), free_port());
        let mut command = Command::new(weed_binary());
        command
            .arg("server")
            .arg("-filer")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-dir={}", data.display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg("-master.volumeSizeLimitMB=64")
            .arg("-volume.max=100")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = spawn_kept(command);
        wait_port(filer, "the SeaweedFS filer");
        Cluster {
            filer,
            config,
            _dir: dir,
            _server: server,
        }
    })
}

/// One S3 gateway (`weed s3`) in front of the shared cluster, which a test may stop and start again.
struct Gateway {
    port: u16,
    child: Option<Child>,
}

impl Gateway {
    fn start() -> Gateway {
        let mut gateway = Gateway {
            port: free_port(),
            child: None,
        };
        gateway.resume();
        gateway
    }

    fn resume(&mut self) {
        let cluster = cluster();
        let mut command = Command::new(weed_binary());
        command
            .arg("s3")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-port={}", self.port))
            .args(["-port.iceberg=0", "-port.lance=0"])
            .arg(format!("-filer=127.0.0.1:{}", cluster.filer))
            .arg(format!("-config={}", cluster.config.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn_kept(command));
        wait_port(self.port, "the S3 gateway");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new bucket (a directory under the filer's /buckets) and a client for it.
    fn bucket(&self, name: &str) -> Bucket {
        let url = format!("http://127.0.0.1:{}/buckets/{name}/", cluster().filer);
        let status = client().post(&url).send().unwrap().status();
        assert!(status.is_success(), "creating bucket {name}: {status}");
        let store = AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_bucket_name(name)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .build()
            .unwrap();
        Bucket {
            name: name.into(),
            store,
            runtime: tokio::runtime::Runtime::new().unwrap(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared gateway, for tests that never stop it.
fn shared_gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(Gateway::start)
}

struct Bucket {
    name: String,
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    fn put(&self, key: &str, bytes: Vec<u8>) {
        self.runtime
            .block_on(self.store.put(&Key::from(key), PutPayload::from(bytes)))
            .unwrap();
    }

    fn delete(&self, key: &str) {
        self.runtime
            .block_on(self.store.delete(&Key::from(key)))
            .unwrap();
    }

    /// Uploads a copy of the example model's version `from` as `<model>/<version>/` under `prefix`.
    fn put_version(&self, prefix: &str, model: &str, version: u64, from: &str) {
        for file in ["model.onnx", "card.toml"] {
            let bytes = std::fs::read(common::models_dir().join(from).join(file)).unwrap();
            self.put(&format!("{prefix}/{model}/{version}/{file}"), bytes);
        }
    }

    fn delete_version(&self, prefix: &str, model: &str, version: u64) {
        for file in ["model.onnx", "card.toml"] {
            self.delete(&format!("{prefix}/{model}/{version}/{file}"));
        }
    }
}

/// sluice on `s3://<bucket>/<prefix>`, polling every 200 ms, with a cache directory of its own.
fn start(
    gateway: &Gateway,
    bucket: &Bucket,
    prefix: &str,
    extra: &[(&str, &str)],
) -> (TestServer, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = gateway.endpoint();
    let mut env = vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("SLUICE__MODELS__CACHE_DIR", cache.path().to_str().unwrap()),
        ("SLUICE__MODELS__POLL_INTERVAL_MS", "200"),
        ("SLUICE__ADMIN__TOKEN", TOKEN),
    ];
    env.extend_from_slice(extra);
    let url = format!("s3://{}/{prefix}", bucket.name);
    (TestServer::start_with(Path::new(&url), &[], &env), cache)
}

/// Requests to `model` without a version from `threads` clients until `stop`; returns (answered, failures).
fn under_load<T>(
    server: &TestServer,
    model: &str,
    threads: usize,
    during: impl FnOnce() -> T,
) -> (T, usize, Vec<String>) {
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let result = std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let client = client();
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .post(server.url(&format!("/v2/models/{model}/infer")))
                        .json(&iris_body())
                        .send()
                    {
                        Ok(r) if r.status() == 200 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.lock().unwrap().push(format!(
                            "{}: {}",
                            r.status(),
                            r.text().unwrap_or_default()
                        )),
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
        let result = during();
        stop.store(true, Ordering::Relaxed);
        result
    });
    (
        result,
        answered.into_inner(),
        failures.into_inner().unwrap(),
    )
}

/// No request of a load run failed, and enough were made to mean something.
fn assert_all_answered(answered: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answered > 100, "only {answered} requests answered");
}

/// The version that answers `model` without a version in the URL.
fn served_version(server: &TestServer, model: &str) -> String {
    let response = server
        .client
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&iris_body())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-model-version"]
        .to_str()
        .unwrap()
        .to_owned()
}

fn index(server: &TestServer) -> Vec<Value> {
    let response = server
        .client
        .post(server.url("/v2/repository/index"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Vec<Value>>().unwrap()
}

fn metric(server: &TestServer, line_start: &str) -> f64 {
    let text = metrics_text(server);
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// Served from a bucket; a new version uploaded under load takes over, a corrupt one never serves, a deleted one
/// hands back to its predecessor; no request fails throughout.
#[test]
fn a_bucket_serves_and_its_changes_apply_under_load_without_a_failed_request() {
    let gateway = shared_gateway();
    let bucket = gateway.bucket("changes");
    bucket.put_version("team/models", "m", 1, "iris/2");
    let (server, cache) = start(gateway, &bucket, "team/models", &[]);
    assert_eq!(served_version(&server, "m"), "1");
    assert!(cache.path().join("repository/m/1/model.onnx").exists());
    assert_eq!(metric(&server, "sluice_store_up "), 1.0);

    let ((), answered, failures) = under_load(&server, "m", 4, || {
        bucket.put_version("team/models", "m", 2, "iris/3");
        wait_for("v2 to serve", || served_version(&server, "m") == "2");
        // Not ONNX: the load fails, v2 keeps serving, the index says why.
        bucket.put("team/models/m/3/model.onnx", b"not a model".to_vec());
        wait_for("v3 to fail", || {
            index(&server).iter().any(|r| {
                r["version"] == "3"
                    && r["state"] == "UNAVAILABLE"
                    && !r["reason"].as_str().unwrap().is_empty()
            })
        });
        assert_eq!(served_version(&server, "m"), "2");
        bucket.delete("team/models/m/3/model.onnx");
        bucket.delete_version("team/models", "m", 2);
        wait_for("v1 to serve again", || served_version(&server, "m") == "1");
        wait_for("v2 to leave the cache", || {
            !cache.path().join("repository/m/2").exists()
        });
    });
    assert_all_answered(answered, &failures);
    assert!(metric(&server, "sluice_store_downloaded_bytes_total ") > 0.0);
}

/// A version uploaded file by file, its model in a multipart upload held open: nothing of it loads until the
/// upload completes; a model that does not match its card's sha256 is never installed.
#[test]
fn a_version_uploaded_in_pieces_loads_only_whole_and_checked() {
    let gateway = shared_gateway();
    let bucket = gateway.bucket("pieces");
    bucket.put_version("p", "m", 1, "iris/2");
    let (server, _cache) = start(gateway, &bucket, "p", &[]);
    let model = std::fs::read(common::models_dir().join("iris/3/model.onnx")).unwrap();
    let card = std::fs::read(common::models_dir().join("iris/3/card.toml")).unwrap();

    // The card (with the model's sha256) first; then a truncated model: it must never be installed.
    bucket.put("p/m/2/card.toml", card);
    bucket.put("p/m/2/model.onnx", model[..model.len() / 2].to_vec());
    let verify = "sluice_store_failures_total{operation=\"verify\"} ";
    wait_for("the checksum failure", || metric(&server, verify) >= 1.0);
    let row = index(&server)
        .into_iter()
        .find(|r| r["version"] == "1")
        .unwrap();
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("checksum mismatch"),
        "{row}"
    );
    assert_eq!(served_version(&server, "m"), "1");

    // The whole model, in a multipart upload left open for a while.
    let mut upload = bucket
        .runtime
        .block_on(bucket.store.put_multipart(&Key::from("p/m/2/model.onnx")))
        .unwrap();
    bucket
        .runtime
        .block_on(upload.put_part(PutPayload::from(model.clone())))
        .unwrap();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            served_version(&server, "m"),
            "1",
            "a version loaded before its upload completed"
        );
        let (status, _) = get_json(&server, "/v2/models/m/versions/2/ready");
        assert_ne!(status, 200);
    }
    bucket.runtime.block_on(upload.complete()).unwrap();
    wait_for("v2 to serve", || served_version(&server, "m") == "2");
    let (status, _) = get_json(&server, "/v2/models/m/versions/2/ready");
    assert_eq!(status, 200);
}

/// The S3 server stopped for 10 s under load: no request fails, readiness stays, its body, the index and the
/// metrics say why; when the store returns, sluice catches up with what changed meanwhile.
#[test]
fn a_store_outage_under_load_fails_no_request_and_is_reported_until_it_ends() {
    let mut gateway = Gateway::start();
    let bucket = gateway.bucket("outage");
    bucket.put_version("o", "m", 1, "iris/2");
    let (server, _cache) = start(&gateway, &bucket, "o", &[]);
    let list_failures = "sluice_store_failures_total{operation=\"list\"} ";

    let (reported, answered, failures) = under_load(&server, "m", 4, || {
        gateway.stop();
        let started = Instant::now();
        wait_for("the outage to show", || {
            metric(&server, "sluice_store_up ") == 0.0
        });
        let (status, ready) = get_json(&server, "/v2/health/ready");
        let rows = index(&server);
        let failed_listings = metric(&server, list_failures);
        std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
        gateway.resume();
        (status, ready, rows, failed_listings)
    });
    let (status, ready, rows, failed_listings) = reported;
    assert_all_answered(answered, &failures);
    assert_eq!(
        status, 200,
        "a store outage does not take the replica out: {ready}"
    );
    let why = ready["repository"].as_str().unwrap_or_default();
    assert!(why.contains("unreachable"), "{ready}");
    assert!(
        rows[0]["reason"].as_str().unwrap().contains("unreachable"),
        "{rows:?}"
    );
    assert!(failed_listings >= 1.0);

    // Back: the failure clears, and a version uploaded now is picked up.
    wait_for("the store to be up again", || {
        metric(&server, "sluice_store_up ") == 1.0
    });
    bucket.put_version("o", "m", 2, "iris/3");
    wait_for("v2 to serve", || served_version(&server, "m") == "2");
    let (status, ready) = get_json(&server, "/v2/health/ready");
    assert_eq!((status, ready.get("repository")), (200, None));
}

/// The routing file in the bucket: two replicas read it from there and route alike; a change in the bucket
/// reaches both.
#[test]
fn the_routing_file_in_the_bucket_steers_two_replicas_alike() {
    let gateway = shared_gateway();
    let bucket = gateway.bucket("routing");
    bucket.put_version("r", "m", 1, "iris/2");
    bucket.put_version("r", "m", 2, "iris/2");
    bucket.put("r/m/model.toml", b"version_policy = \"all\"\n".to_vec());
    let policy = |weight: f64| {
        format!("[m]\nstable = 1\nvariants = [{{ name = \"canary\", version = 2, weight = {weight:.1} }}]\n")
            .into_bytes()
    };
    bucket.put("r/routing.toml", policy(0.0));
    let file = [("SLUICE__ROUTING__FILE", "s3://routing/r/routing.toml")];
    let (a, _cache_a) = start(gateway, &bucket, "r", &file);
    let (b, _cache_b) = start(gateway, &bucket, "r", &file);
    for server in [&a, &b] {
        assert_eq!(served_version(server, "m"), "1");
    }
    bucket.put("r/routing.toml", policy(100.0));
    for server in [&a, &b] {
        wait_for("the canary to take all traffic", || {
            served_version(server, "m") == "2"
        });
        let (_, routing) = get_json(server, "/v2/models/m/routing");
        assert_eq!(
            routing["policy"]["variants"][0]["weight"], 100.0,
            "{routing}"
        );
    }
}

/// A repository URL of an unknown scheme is a usage error (64), naming it.
#[test]
fn an_unknown_repository_scheme_is_refused() {
    let (code, output) = common::run_sluice(&["--models", "ftp://host/models"], &[]);
    assert_eq!(code, Some(64), "{output}");
    assert!(output.contains("unsupported scheme"), "{output}");
}

/// A routing file given as a URL outside the repository is refused at start, naming the key.
#[test]
fn a_routing_file_url_outside_the_repository_is_refused() {
    let (code, output) = common::run_sluice(
        &["--models", "s3://bucket/models"],
        &[("SLUICE__ROUTING__FILE", "s3://other/routing.toml")],
    );
    assert_eq!(code, Some(64), "{output}");
    assert!(output.contains("routing.file"), "{output}");
}

/// An automatic rollback on one replica is written to the routing file in the bucket (conditionally, the rest of
/// the file kept): the other replica, which saw none of the failures, follows within a poll, and a replica started
/// afterwards does not bring the failing canary back.
#[test]
fn an_automatic_rollback_reaches_every_replica_through_the_bucket() {
    let gateway = shared_gateway();
    let bucket = gateway.bucket("rollback");
    bucket.put_version("a", "m", 1, "iris/2");
    // v2 expects other inputs: every request routed to it fails.
    let misdeclared = common::fixtures_dir().join("models/misdeclared/1/model.onnx");
    bucket.put("a/m/2/model.onnx", std::fs::read(misdeclared).unwrap());
    bucket.put("a/m/model.toml", b"version_policy = \"all\"\n".to_vec());
    let policy = "# the ML team's canary\n[m]\nstable = 1\n\
                  variants = [{ name = \"canary\", version = 2, weight = 50.0 }]\n\
                  auto_rollback = { max_error_rate = 0.5, window_seconds = 60, min_requests = 20 }\n";
    bucket.put("a/routing.toml", policy.as_bytes().to_vec());
    let file = [("SLUICE__ROUTING__FILE", "s3://rollback/a/routing.toml")];
    let (a, _cache_a) = start(gateway, &bucket, "a", &file);
    let (b, _cache_b) = start(gateway, &bucket, "a", &file);
    let weight = |server: &TestServer| {
        get_json(server, "/v2/models/m/routing").1["policy"]["variants"][0]["weight"].as_f64()
    };
    assert_eq!(weight(&b), Some(50.0));
    let client = client();
    for _ in 0..100 {
        client
            .post(a.url("/v2/models/m/infer"))
            .json(&iris_body())
            .send()
            .unwrap();
    }
    assert_eq!(weight(&a), Some(0.0), "replica a rolled the canary back");
    wait_for("replica b to follow through the bucket", || {
        weight(&b) == Some(0.0)
    });
    let stored = bucket
        .runtime
        .block_on(async {
            bucket
                .store
                .get(&Key::from("a/routing.toml"))
                .await
                .unwrap()
                .bytes()
                .await
        })
        .unwrap();
    let stored = String::from_utf8(stored.to_vec()).unwrap();
    assert!(stored.starts_with("# the ML team's canary\n"), "{stored}");
    assert!(stored.contains("weight = 0.0"), "{stored}");
    assert!(stored.contains("min_requests = 20"), "{stored}");
    // The store honours the condition the write-back relies on: a write against a stale ETag is refused.
    let stale = object_store::PutOptions {
        mode: object_store::PutMode::Update(object_store::UpdateVersion {
            e_tag: Some("\"stale\"".into()),
            version: None,
        }),
        ..Default::default()
    };
    let refused = bucket.runtime.block_on(bucket.store.put_opts(
        &Key::from("a/routing.toml"),
        PutPayload::from(policy.as_bytes().to_vec()),
        stale,
    ));
    assert!(
        matches!(refused, Err(object_store::Error::Precondition { .. })),
        "{refused:?}"
    );
    // A replica started now (a scale-up, a restart) reads the rolled-back file.
    let (c, _cache_c) = start(gateway, &bucket, "a", &file);
    assert_eq!(weight(&c), Some(0.0));
    for _ in 0..20 {
        assert_eq!(served_version(&c, "m"), "1");
    }
}
