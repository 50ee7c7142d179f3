//! Production behaviour of the real binary under load, faults, hostile input and shutdown: load shedding, draining
//! on SIGTERM, limits, authentication, timeouts, CORS, compression, TLS and the metrics port.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{client, get_json, iris_body, post_json, repo_with, rss_kib, TestServer};
use serde_json::{json, Value};

fn slow_body(rows: usize) -> Value {
    json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 256], "data": vec![0.5; rows * 256]}]})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// 200 concurrent clients against a server that runs 2 requests at once and queues 4: only 200s and 503s (with
/// Retry-After), no crash, bounded memory, and accepted requests finish well inside the timeout.
#[test]
fn overload_sheds_with_503_and_keeps_accepted_requests_fast() {
    let repo = repo_with(&["slow"]);
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS", "2"),
            ("SLUICE__LIMITS__MAX_QUEUED_REQUESTS", "4"),
            ("SLUICE__SERVER__REQUEST_TIMEOUT_MS", "10000"),
        ],
    );
    let body = slow_body(40);
    let rss_before = rss_kib(server.pid());
    let accepted = Mutex::new(Vec::new());
    let (shed, other) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..200 {
            s.spawn(|| {
                let client = client();
                for _ in 0..3 {
                    let t = Instant::now();
                    let response = client
                        .post(server.url("/v2/models/slow/infer"))
                        .json(&body)
                        .send()
                        .unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let reply: Value = response.json().unwrap();
                    match status {
                        200 => accepted
                            .lock()
                            .unwrap()
                            .push(t.elapsed().as_secs_f64() * 1000.0),
                        503 => {
                            assert!(
                                retry_after
                                    && reply["error"].as_str().unwrap().contains("overloaded"),
                                "{reply}"
                            );
                            shed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let rss_after = rss_kib(server.pid());
    let mut ok = accepted.into_inner().unwrap();
    ok.sort_by(f64::total_cmp);
    let (shed, other) = (shed.into_inner(), other.into_inner());
    eprintln!(
        "overload: 600 requests from 200 clients in {elapsed:?}: {} accepted (p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms), {shed} shed with 503; RSS {rss_before} -> {rss_after} KiB",
        ok.len(),
        percentile(&ok, 0.5),
        percentile(&ok, 0.99),
        ok[ok.len() - 1],
    );
    assert_eq!(other, 0, "only 200 and 503 are acceptable");
    assert!(!ok.is_empty() && shed > 0);
    assert!(
        percentile(&ok, 0.99) < 10_000.0,
        "accepted requests must finish inside the timeout"
    );
    assert!(
        rss_after < rss_before + 200 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
    // Still serving afterwards, and the shed requests were counted.
    assert_eq!(
        post_json(&server, "/v2/models/slow/infer", &slow_body(1)).0,
        200
    );
    let metrics = common::metrics_text(&server);
    assert!(
        metrics.contains(&format!("sluice_requests_shed_total {shed}")),
        "shed count"
    );
}

/// Requests waiting for one version's sessions are bounded too: beyond the bound, 503 at once.
#[test]
fn per_version_queues_are_bounded() {
    let repo = repo_with(&["slow"]);
    std::fs::write(
        repo.path().join("slow/model.toml"),
        "[session]\npool_size = 1\n",
    )
    .unwrap();
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__LIMITS__MAX_QUEUE_PER_VERSION", "2")],
    );
    let body = slow_body(200);
    let statuses = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| {
                let (status, reply) = post_json(&server, "/v2/models/slow/infer", &body);
                if status == 503 {
                    assert!(
                        reply["error"]
                            .as_str()
                            .unwrap()
                            .contains("requests are already waiting"),
                        "{reply}"
                    );
                }
                statuses.lock().unwrap().push(status);
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
}

/// SIGTERM while 50 clients send requests: readiness turns false at once while the server keeps answering; the
/// clients, like a load balancer, stop sending new requests once readiness is false; every request the server
/// accepted gets a complete response, and afterwards connections are refused.
#[test]
fn sigterm_drains_without_losing_accepted_requests() {
    let repo = repo_with(&["slow"]);
    let mut server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__SERVER__SHUTDOWN_DELAY_MS", "3000")],
    );
    let body = slow_body(20);
    let (completed, refused, lost) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        Mutex::new(Vec::new()),
    );
    let not_ready = std::sync::atomic::AtomicBool::new(false);
    let base = server.base.clone();
    std::thread::scope(|s| {
        for _ in 0..50 {
            s.spawn(|| {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap();
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline && !not_ready.load(Ordering::Relaxed) {
                    match client
                        .post(format!("{base}/v2/models/slow/infer"))
                        .json(&body)
                        .send()
                    {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            match response.json::<Value>() {
                                Ok(reply)
                                    if status == 200
                                        && reply["outputs"][0]["shape"] == json!([20, 256]) =>
                                {
                                    completed.fetch_add(1, Ordering::Relaxed);
                                }
                                other => lost.lock().unwrap().push(format!("{status}: {other:?}")),
                            }
                        }
                        Err(e) if e.is_connect() => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => lost.lock().unwrap().push(e.to_string()),
                    }
                }
            });
        }
        // SIGTERM once requests are answered (however loaded the machine is, so at least one is).
        let started = Instant::now();
        while completed.load(Ordering::Relaxed) == 0 && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let before = completed.load(Ordering::Relaxed);
        let status = std::process::Command::new("kill")
            .args(["-TERM", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Draining: readiness turns false while the server still answers (within the 3 s accepting window).
        let draining = Instant::now();
        loop {
            let ready = client()
                .get(format!("{base}/v2/health/ready"))
                .send()
                .unwrap();
            if ready.status() == 503 {
                let reply: Value = ready.json().unwrap();
                assert!(
                    reply["error"].as_str().unwrap().contains("shutting down"),
                    "{reply}"
                );
                not_ready.store(true, Ordering::Relaxed);
                break;
            }
            assert!(
                draining.elapsed() < Duration::from_millis(2500),
                "readiness stayed true after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(before > 0);
    });
    let status = server.terminate_wait();
    let after = client().get(format!("{base}/v2/health/live")).send();
    assert!(
        after.is_err_and(|e| e.is_connect()),
        "the listener is closed after the drain"
    );
    let lost = lost.into_inner().unwrap();
    eprintln!(
        "SIGTERM under load: {} completed, {} refused at connect, {} lost",
        completed.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "requests accepted but not answered: {lost:?}"
    );
    assert!(status.success());
}

/// Giant body, decompression bomb, 2^62-element shape, deeply nested JSON, invalid UTF-8: all 4xx with V2 bodies,
/// quickly, with memory bounded.
#[test]
fn hostile_inputs_get_quick_4xx_and_bounded_memory() {
    let repo = repo_with(&["iris"]);
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__SERVER__MAX_BODY_BYTES", "4194304")],
    );
    let rss_before = rss_kib(server.pid());
    let url = server.url("/v2/models/iris/infer");
    let error = |reply: &Value| reply["error"].as_str().unwrap_or_default().to_owned();
    let raw = |body: Vec<u8>, encoding: Option<&str>| {
        let mut request = client().post(&url).body(body);
        if let Some(e) = encoding {
            request = request.header("content-encoding", e);
        }
        let t = Instant::now();
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let reply: Value = response.json().unwrap();
        (status, reply, t.elapsed())
    };
    // 16 MiB of JSON: over the 4 MiB limit.
    let giant = format!(
        r#"{{"inputs":[{{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[{}1]}}]}}"#,
        "1,".repeat(8 << 20)
    );
    let (status, reply, took) = raw(giant.into_bytes(), None);
    assert_eq!(status, 413, "{reply}");
    eprintln!("giant body: 413 in {took:?}");
    // 1 GiB of zeros gzipped to about 1 MiB: refused once the inflated size passes the limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..1024 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let (status, reply, took) = raw(bomb, Some("gzip"));
    assert_eq!(status, 413, "{reply}");
    assert!(
        error(&reply).contains("more than 4194304 bytes (server.max_body_bytes)"),
        "{reply}"
    );
    eprintln!("decompression bomb: 413 in {took:?}");
    // A gzip header followed by garbage: the body cannot be inflated.
    let (status, reply, _) = raw(b"\x1f\x8b\x08\x00garbage".to_vec(), Some("gzip"));
    assert_eq!(status, 400, "{reply}");
    assert!(
        error(&reply).starts_with("request body could not be read"),
        "{reply}"
    );
    let huge_shape = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1u64 << 62], "data": []}]});
    let (status, reply, _) = raw(huge_shape.to_string().into_bytes(), None);
    assert_eq!(status, 400);
    assert!(error(&reply).contains("holds more than"), "{reply}");
    let nested = format!(
        r#"{{"inputs":[{{"name":"float_input","datatype":"FP32","shape":[1,4],"data":{}{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, reply, _) = raw(nested.into_bytes(), None);
    assert_eq!(status, 400);
    assert!(error(&reply).contains("nested"), "{reply}");
    let (status, reply, _) = raw(b"{\"id\":\"\xff\xfe\",\"inputs\":[]}".to_vec(), None);
    assert_eq!(status, 400, "{reply}");
    let (status, reply, _) = raw(b"{}".to_vec(), Some("br"));
    assert_eq!(status, 415, "{reply}");
    assert!(error(&reply).contains("Content-Encoding"), "{reply}");
    // A small gzipped request is accepted.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}).to_string().as_bytes()).unwrap();
    let (status, reply, _) = raw(gz.finish().unwrap(), Some("gzip"));
    assert_eq!(status, 200, "{reply}");
    let rss_after = rss_kib(server.pid());
    eprintln!("hostile inputs: RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after < rss_before + 150 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}

const KEY: &str = "inference-key-123";

/// Every protected endpoint without, with a wrong and with the right key; health stays open; no key in the logs.
#[test]
fn api_keys_protect_inference_and_metadata_only() {
    let repo = repo_with(&["iris"]);
    let keys_file = repo.path().join("keys.txt");
    std::fs::write(&keys_file, format!("\n{KEY}\n")).unwrap();
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            // A comma-separated list as operators write it: the space after the comma is not part of a key.
            ("SLUICE__AUTH__API_KEYS", "other-key, spaced-key"),
            ("SLUICE__AUTH__API_KEYS_FILE", keys_file.to_str().unwrap()),
        ],
    );
    let infer = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    let protected: [(&str, &str); 7] = [
        ("GET", "/v2"),
        ("GET", "/v2/models/iris"),
        ("GET", "/v2/models/iris/versions/2"),
        ("GET", "/v2/models/iris/config"),
        ("GET", "/v2/models/iris/routing"),
        ("POST", "/v2/models/iris/infer"),
        ("POST", "/v2/models/iris/versions/2/infer"),
    ];
    let send = |method: &str, path: &str, auth: Option<(&str, String)>| {
        let mut request = match method {
            "GET" => client().get(server.url(path)),
            _ => client().post(server.url(path)).json(&infer),
        };
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        let response = request.send().unwrap();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status().as_u16(), challenge)
    };
    for (method, path) in protected {
        let (status, challenge) = send(method, path, None);
        assert_eq!(
            (status, challenge.as_deref()),
            (401, Some("Bearer realm=\"sluice\"")),
            "{path} without a key"
        );
        assert_eq!(
            send(method, path, Some(("authorization", "Bearer wrong".into()))).0,
            401,
            "{path} wrong key"
        );
        assert_eq!(
            send(
                method,
                path,
                Some(("authorization", format!("Bearer {KEY}")))
            )
            .0,
            200,
            "{path} bearer"
        );
        assert_eq!(
            send(method, path, Some(("x-api-key", "other-key".into()))).0,
            200,
            "{path} x-api-key"
        );
        // The scheme is case-insensitive (RFC 9110); the second key of the list works.
        for header in ["bearer spaced-key", "BEARER  spaced-key "] {
            assert_eq!(
                send(method, path, Some(("authorization", header.into()))).0,
                200,
                "{path} {header:?}"
            );
        }
    }
    // Outcome feedback is behind the keys too (iris keeps no predictions: past the key, its handler answers 400).
    for (method, path) in [
        ("POST", "/v2/models/iris/feedback"),
        ("GET", "/v2/models/iris/quality"),
    ] {
        assert_eq!(send(method, path, None).0, 401, "{path} without a key");
        assert_eq!(
            send(method, path, Some(("x-api-key", "other-key".into()))).0,
            400,
            "{path} x-api-key"
        );
    }
    // Health, model readiness included (probes send no credentials, as with Triton and KServe), and metrics.
    for path in [
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/iris/ready",
        "/v2/models/iris/versions/2/ready",
        "/metrics",
    ] {
        assert_eq!(send("GET", path, None).0, 200, "{path} stays open");
    }
    let logs = server.logs().join("\n");
    assert!(
        !logs.contains(KEY) && !logs.contains("other-key") && !logs.contains("spaced-key"),
        "a key appeared in the logs"
    );
}

/// A request that takes longer than the timeout gets 504 with a V2 body.
#[test]
fn slow_requests_time_out_with_504() {
    let repo = repo_with(&["slow"]);
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__SERVER__REQUEST_TIMEOUT_MS", "100")],
    );
    let (status, reply) = post_json(&server, "/v2/models/slow/infer", &slow_body(3000));
    assert_eq!(status, 504, "{reply}");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("request_timeout_ms"),
        "{reply}"
    );
    assert_eq!(get_json(&server, "/v2/health/live").0, 200);
}

/// A connection is closed once no request has started on it, none is in flight and nothing was written for the idle
/// timeout, whether it stalls mid-head or sits idle between requests; one that keeps to the limit is served,
/// keep-alive included.
#[test]
fn stalled_and_idle_connections_are_closed_after_the_idle_timeout() {
    use std::io::Read;
    let repo = repo_with(&["iris"]);
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__SERVER__IDLE_TIMEOUT_MS", "400")],
    );
    let addr = server.base.trim_start_matches("http://").to_owned();
    let connect = || {
        let stream = std::net::TcpStream::connect(&addr).unwrap();
        // Far above the limit: a server that never closes fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
    };
    let closed_after = |stream: &mut std::net::TcpStream| {
        let started = Instant::now();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok(), "the connection was not closed: {read:?}");
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        started.elapsed()
    };

    let mut stalled = connect();
    stalled
        .write_all(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: sluice\r\n")
        .unwrap();
    closed_after(&mut stalled);

    let body = iris_body().to_string();
    let request = format!(
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut kept = connect();
    for _ in 0..2 {
        kept.write_all(request.as_bytes()).unwrap();
        // The whole response: its JSON body ends the reply.
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        while !reply.ends_with(b"}") {
            let n = kept.read(&mut chunk).unwrap();
            assert!(n > 0, "closed mid-response");
            reply.extend_from_slice(&chunk[..n]);
        }
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        // Idle for less than the limit: the connection stays open for the next request.
        std::thread::sleep(Duration::from_millis(100));
    }
    closed_after(&mut kept);
    assert_eq!(get_json(&server, "/v2/health/live").0, 200);
}

/// CORS is off by default and answers preflights when configured; responses are compressed on request.
#[test]
fn cors_and_response_compression() {
    let repo = repo_with(&["iris"]);
    let plain = TestServer::start(repo.path());
    let preflight = |server: &TestServer| {
        client()
            .request(
                reqwest::Method::OPTIONS,
                server.url("/v2/models/iris/infer"),
            )
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .send()
            .unwrap()
    };
    assert!(!preflight(&plain)
        .headers()
        .contains_key("access-control-allow-origin"));
    let cors = TestServer::start_with(
        repo.path(),
        &[],
        &[(
            "SLUICE__SERVER__CORS_ALLOWED_ORIGINS",
            "https://app.example.com",
        )],
    );
    let response = preflight(&cors);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );

    // Compression where it pays: a small answer is sent as it is, a large one gzipped, both with Vary; metadata,
    // index and error bodies never (Triton's async client reads them as they come).
    let raw = reqwest::blocking::Client::builder()
        .no_gzip()
        .build()
        .unwrap();
    let response = raw
        .get(plain.url("/v2/models/iris"))
        .header("accept-encoding", "gzip, deflate")
        .send()
        .unwrap();
    assert_eq!(response.headers().get("content-encoding"), None);
    assert_eq!(response.headers()["vary"], "accept-encoding");
    assert_eq!(response.json::<Value>().unwrap()["name"], "iris");
    let rows = 500;
    let data = [5.1, 3.5, 1.4, 0.2].repeat(rows);
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [rows, 4],
        "data": data}]});
    let response = raw
        .post(plain.url("/v2/models/iris/infer"))
        .header("accept-encoding", "gzip, deflate")
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert_eq!(response.headers()["vary"], "accept-encoding");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(response), &mut text).unwrap();
    let reply: Value = serde_json::from_str(&text).unwrap();
    assert!(text.len() > 2048, "{}", text.len());
    assert_eq!(reply["outputs"][0]["shape"][0], rows);
    let long_name = "x".repeat(4000);
    for response in [
        raw.get(plain.url("/openapi.json")),
        raw.get(plain.url(&format!("/v2/models/{long_name}"))),
        raw.post(plain.url(&format!("/v2/models/{long_name}/infer")))
            .json(&body),
    ] {
        let response = response
            .header("accept-encoding", "gzip, deflate, br")
            .send()
            .unwrap();
        assert_eq!(response.headers().get("content-encoding"), None);
        assert!(response.content_length().unwrap() > 2048, "{response:?}");
    }
    let response = raw
        .get(plain.url("/metrics"))
        .header("accept-encoding", "deflate")
        .send()
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "deflate");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::ZlibDecoder::new(response), &mut text)
        .unwrap();
    assert!(text.contains("sluice_memory_budget_bytes"), "{text}");
}

/// HTTPS with a certificate and key from files.
#[test]
fn tls_serves_https() {
    let repo = repo_with(&["iris"]);
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (repo.path().join("cert.pem"), repo.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let server = TestServer::start_tls(
        repo.path(),
        &[
            ("SLUICE__SERVER__TLS_CERT", cert_file.to_str().unwrap()),
            ("SLUICE__SERVER__TLS_KEY", key_file.to_str().unwrap()),
        ],
        cert.cert.pem().as_bytes(),
    );
    assert!(server.base.starts_with("https://"));
    let (status, reply) = post_json(
        &server,
        "/v2/models/iris/infer",
        &json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
    );
    assert_eq!(
        (status, &reply["model_version"]),
        (200, &json!("2")),
        "{reply}"
    );
    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::blocking::Client::new()
        .get(server.base.replace("https://", "http://") + "/v2/health/live")
        .send();
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

/// `/metrics` on its own port; the main port no longer has it.
#[test]
fn metrics_can_have_their_own_port() {
    let repo = repo_with(&["iris"]);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__SERVER__METRICS_PORT", &port.to_string())],
    );
    assert_eq!(get_json(&server, "/metrics").0, 404);
    let text = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.contains("sluice_models_loaded 3"), "{text}");
}

/// `admin.port`: the management API answers there only, with its token, and the main port no longer serves it.
#[test]
fn the_management_api_can_have_its_own_port() {
    let repo = repo_with(&["iris"]);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__ADMIN__PORT", &port.to_string()),
            ("SLUICE__ADMIN__TOKEN", "side-port-token"),
        ],
    );
    let index = |base: &str, token: Option<&str>| {
        let mut request = client()
            .post(format!("{base}/v2/repository/index"))
            .json(&json!({}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let (status, reply) = index(&server.base, Some("side-port-token"));
    assert_eq!(status, 404, "{reply}");
    let side = format!("http://127.0.0.1:{port}");
    let (status, reply) = index(&side, Some("side-port-token"));
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "iris"),
        "{reply}"
    );
    let (status, reply) = index(&side, None);
    assert_eq!(status, 401, "{reply}");
    // Only the management API is there.
    let status = client()
        .get(format!("{side}/v2/health/ready"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 404);
    assert!(server
        .logs()
        .iter()
        .any(|l| l.contains("management API listening")));
    drop(server);

    // Opened for trusted tooling that sends no token (Triton's): on its own loopback listener only.
    let open = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__ADMIN__PORT", &port.to_string()),
            ("SLUICE__ADMIN__HOST", "127.0.0.1"),
            ("SLUICE__ADMIN__REQUIRE_TOKEN", "false"),
        ],
    );
    let (status, reply) = index(&side, None);
    assert_eq!(status, 200, "{reply}");
    let (status, _) = index(&open.base, None);
    assert_eq!(status, 404);
    assert!(open
        .logs()
        .iter()
        .any(|l| l.contains("needs no token on admin.port")));
}
