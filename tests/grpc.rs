//! The gRPC front end's limits and lifecycle, with a tonic client against the real binary: deadlines, shedding
//! shared with HTTP, the message size limit, API keys, a disabled management API, and graceful shutdown. The real
//! third-party clients (tritonclient, KServe) are in `tests/conformance/grpc/`.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use sluice::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use sluice::proto::model_infer_request::InferInputTensor;
use sluice::proto::{ModelInferRequest, RepositoryIndexRequest, ServerLiveRequest};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server of `models` (the `slow` fixture among them) with gRPC on a free port, and that port.
fn start(repo: &std::path::Path, env: &[(&str, &str)]) -> (TestServer, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut all = vec![("SLUICE__SERVER__GRPC_PORT", port_text.as_str())];
    all.extend_from_slice(env);
    (TestServer::start_with(repo, &[], &all), port)
}

/// `/metrics`, read on a thread of its own (the blocking client must not run inside the async runtime).
fn server_metrics(server: &TestServer) -> String {
    std::thread::scope(|s| s.spawn(|| common::metrics_text(server)).join().unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(port: u16) -> GrpcInferenceServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// A long request for the `slow` fixture (`rows` × 256 FP32 as raw bytes).
fn slow_request(rows: usize) -> ModelInferRequest {
    let values: Vec<u8> = std::iter::repeat_n(0.5f32.to_le_bytes(), rows * 256)
        .flatten()
        .collect();
    ModelInferRequest {
        model_name: "slow".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 256],
            ..Default::default()
        }],
        raw_input_contents: vec![values.into()],
        ..Default::default()
    }
}

fn iris_request() -> ModelInferRequest {
    let values: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![InferInputTensor {
            name: "float_input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![values.into()],
        ..Default::default()
    }
}

/// `grpc-timeout` is a deadline: a call still queued or running when it passes ends with DEADLINE_EXCEEDED from the
/// server, while the same call without a deadline succeeds. Sent over plain HTTP/2, because gRPC clients (tonic's
/// too) enforce a deadline themselves and would answer first.
#[test]
fn a_call_past_its_grpc_timeout_gets_deadline_exceeded() {
    let repo = common::slow_repo(&["iris"]);
    let (server, port) = start(
        repo.path(),
        &[
            ("SLUICE__LOG__ACCESS", "true"),
            ("SLUICE__LOG__FORMAT", "json"),
        ],
    );
    let http2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let call = |timeout: Option<&str>, request: ModelInferRequest| {
        let message = prost::Message::encode_to_vec(&request);
        let mut body = vec![0u8];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        let mut post = http2
            .post(format!(
                "http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body);
        if let Some(timeout) = timeout {
            post = post.header("grpc-timeout", timeout);
        }
        let response = post.send().unwrap();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        (header("grpc-status"), header("grpc-message"))
    };
    let started = Instant::now();
    let (status, message) = call(Some("20m"), slow_request(common::SLOW_ROWS));
    assert_eq!(status.as_deref(), Some("4"), "{message:?}");
    // grpc-message is percent-encoded.
    assert!(message
        .unwrap()
        .replace("%20", " ")
        .contains("deadline of 20 ms"));
    assert!(started.elapsed() < Duration::from_secs(10));
    // Without a deadline the same kind of call is answered (the status then comes in the trailers).
    assert_eq!(call(None, slow_request(4)).0, None);
    // Both calls are in the request log (log.access), with their code.
    let line = server.wait_for_log_line(|v| v["fields"]["code"] == "DeadlineExceeded");
    assert_eq!(line["fields"]["method"], "grpc ModelInfer", "{line}");
    assert_eq!(line["fields"]["model"], "slow", "{line}");
    assert!(
        line["fields"]["request_id"].as_str().unwrap().len() >= 32,
        "{line}"
    );
    server
        .wait_for_log_line(|v| v["fields"]["code"] == "OK" && v["fields"]["model_version"] == "1");
}

/// Admission is shared with HTTP: with one slot and no queue, a gRPC call while an HTTP request runs is shed with
/// RESOURCE_EXHAUSTED; a message over `server.max_body_bytes` is refused the same way.
#[test]
fn shedding_and_the_message_limit_give_resource_exhausted() {
    let repo = common::slow_repo(&["iris"]);
    let (server, port) = start(
        repo.path(),
        &[
            ("SLUICE__LIMITS__MAX_CONCURRENT_REQUESTS", "1"),
            ("SLUICE__LIMITS__MAX_QUEUED_REQUESTS", "0"),
            ("SLUICE__SERVER__MAX_BODY_BYTES", "3000000"),
        ],
    );
    let rt = runtime();
    let answers = common::during_slow_requests_n(&server, 1, || {
        rt.block_on(async {
            let status = client(port)
                .await
                .model_infer(iris_request())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains("server overloaded"), "{status:?}");
        })
    });
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    rt.block_on(async {
        let mut client = client(port).await;
        let status = client.model_infer(slow_request(3000)).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains("the limit is: 3000000 bytes"),
            "{status:?}"
        );
        let reply = client.model_infer(iris_request()).await.unwrap();
        assert_eq!(
            reply.metadata().get("x-model-version").unwrap(),
            reply.get_ref().model_version.as_str()
        );
    });
}

/// With API keys, inference needs one (`authorization: Bearer` or `x-api-key`) while health stays open; with no
/// admin token, repository calls are PERMISSION_DENIED.
#[test]
fn api_keys_and_the_disabled_management_api() {
    let repo = common::repo_with(&["iris"]);
    let (server, port) = start(repo.path(), &[("SLUICE__AUTH__API_KEYS", "k1")]);
    runtime().block_on(async {
        let mut client = client(port).await;
        assert!(
            client
                .server_live(ServerLiveRequest {})
                .await
                .unwrap()
                .get_ref()
                .live
        );
        let status = client.model_infer(iris_request()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        for (key, value) in [("authorization", "Bearer k1"), ("x-api-key", "k1")] {
            let mut request = Request::new(iris_request());
            request.metadata_mut().insert(key, value.parse().unwrap());
            client.model_infer(request).await.unwrap();
        }
        // Counted with their transport.
        let metrics = server_metrics(&server);
        assert!(
            metrics.contains(r#"sluice_requests_total{model="iris",outcome="success",protocol="grpc",variant="stable""#),
            "{metrics}"
        );
        let mut wrong = Request::new(iris_request());
        wrong
            .metadata_mut()
            .insert("x-api-key", "k2".parse().unwrap());
        assert_eq!(
            client.model_infer(wrong).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        let status = client
            .repository_index(RepositoryIndexRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    });
}

/// SIGTERM while a gRPC call runs: the call finishes with its answer (its connection closes without a reset, see
/// `linger`), then the process exits.
#[test]
fn shutdown_lets_an_in_flight_call_finish() {
    let repo = common::slow_repo(&[]);
    let (mut server, port) = start(repo.path(), &[]);
    let rt = runtime();
    let call = rt.spawn(async move {
        client(port)
            .await
            .model_infer(slow_request(common::SLOW_ROWS))
            .await
    });
    common::wait_for_in_flight(&server, "slow", 1);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reply = rt.block_on(call).unwrap();
    let reply = reply.unwrap_or_else(|e| panic!("{e:?}\n{}", server.logs().join("\n")));
    assert_eq!(reply.get_ref().outputs.len(), 1);
    assert!(server.terminate_wait().success());
}

/// With `server.tls_cert` and `server.tls_key`, gRPC is served over TLS with the same certificate, and a plaintext
/// client is refused.
#[test]
fn tls_serves_grpc_with_the_http_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let repo = common::repo_with(&["iris"]);
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_file, key_file) = (repo.path().join("cert.pem"), repo.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let _server = TestServer::start_tls(
        repo.path(),
        &[
            ("SLUICE__SERVER__TLS_CERT", cert_file.to_str().unwrap()),
            ("SLUICE__SERVER__TLS_KEY", key_file.to_str().unwrap()),
            ("SLUICE__SERVER__GRPC_PORT", &port.to_string()),
        ],
        cert.cert.pem().as_bytes(),
    );
    runtime().block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(cert.cert.pem()))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let reply = GrpcInferenceServiceClient::new(channel)
            .model_infer(iris_request())
            .await
            .unwrap();
        assert_eq!(reply.get_ref().outputs.len(), 2);
        let plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await;
        let refused = match plain {
            Err(_) => true,
            Ok(channel) => GrpcInferenceServiceClient::new(channel)
                .model_infer(iris_request())
                .await
                .is_err(),
        };
        assert!(refused, "plaintext gRPC on the TLS port was served");
    });
}

/// Routing reads the sticky key from gRPC metadata as from an HTTP header: with a 50 % canary keyed on `x-user`, each
/// of 100 keys gets the same variant over gRPC as over REST (both variants occur), named in the response metadata
/// with the version; a call that names a version is `pinned`.
#[test]
fn sticky_routing_keys_route_alike_over_grpc_and_rest() {
    let repo = tempfile::tempdir().unwrap();
    let iris = std::fs::read(common::models_dir().join("iris/2/model.onnx")).unwrap();
    for v in [1, 2] {
        std::fs::create_dir_all(repo.path().join(format!("m/{v}"))).unwrap();
        std::fs::write(repo.path().join(format!("m/{v}/model.onnx")), &iris).unwrap();
    }
    let routing = repo.path().join("routing.toml");
    std::fs::write(
        &routing,
        "[m]\nstable = 1\nkey_header = \"x-user\"\nvariants = [{ name = \"canary\", version = 2, weight = 50.0 }]\n",
    )
    .unwrap();
    let (server, port) = start(
        repo.path(),
        &[("SLUICE__ROUTING__FILE", routing.to_str().unwrap())],
    );
    common::wait_for("the policy to be active", || {
        common::get_json(&server, "/v2/models/m/routing").1["policy"]["variants"][0]["weight"]
            .as_f64()
            == Some(50.0)
    });
    let keys: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let over_rest: Vec<(String, String)> = keys
        .iter()
        .map(|key| {
            let response = server
                .client
                .post(server.url("/v2/models/m/infer"))
                .header("x-user", key)
                .json(&common::iris_body())
                .send()
                .unwrap();
            let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
            (header("x-sluice-variant"), header("x-model-version"))
        })
        .collect();
    let mut request = iris_request();
    request.model_name = "m".into();
    let over_grpc: Vec<(String, String)> = runtime().block_on(async {
        let mut client = client(port).await;
        let mut answers = Vec::new();
        for key in &keys {
            let mut call = Request::new(request.clone());
            call.metadata_mut().insert("x-user", key.parse().unwrap());
            let reply = client.model_infer(call).await.unwrap();
            let metadata = |name: &str| {
                reply
                    .metadata()
                    .get(name)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(metadata("x-model-version"), reply.get_ref().model_version);
            answers.push((metadata("x-sluice-variant"), metadata("x-model-version")));
        }
        let mut pinned = request.clone();
        pinned.model_version = "2".into();
        let reply = client.model_infer(pinned).await.unwrap();
        assert_eq!(reply.metadata().get("x-sluice-variant").unwrap(), "pinned");
        answers
    });
    assert_eq!(over_grpc, over_rest);
    let canary = over_grpc.iter().filter(|(v, _)| v == "canary").count();
    assert!(
        (10..=90).contains(&canary),
        "{canary} of 100 keys in a 50 % canary"
    );
    assert!(over_grpc
        .iter()
        .all(|(variant, version)| (variant == "canary") == (version == "2")));
}
