//! Start-up, configuration, ONNX Runtime discovery, failure isolation, logging and shutdown of the real binary.

mod common;

use common::{get_json, post_json, repo_with, run_sluice, TestServer};
use serde_json::json;

fn models_arg() -> String {
    common::models_dir().display().to_string()
}

#[test]
fn unknown_configuration_keys_exit_64_naming_the_key() {
    let models = models_arg();
    let (code, out) = run_sluice(&["--models", &models], &[("SLUICE__SERVER__PROT", "9000")]);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("unknown configuration key `server.prot`"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "[limits]\nmax_elements = 5\n").unwrap();
    let (code, out) = run_sluice(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("`limits.max_elements`"), "{out}");
}

#[test]
fn invalid_configuration_values_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "[server]\nport = \"high\"\n").unwrap();
    let (code, out) = run_sluice(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("server.port"), "{out}");

    let (code, out) = run_sluice(&[], &[("SLUICE__LOG__FORMAT", "xml")]);
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("log.format") && out.contains("'xml'") && out.contains("text or json"),
        "{out}"
    );
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");

    // A TOML syntax error: one line with the file and the place.
    std::fs::write(&file, "[server\nport = 1\n").unwrap();
    let (code, out) = run_sluice(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("sluice.toml line 1, column 8"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");

    // /metrics on the main port's number: named before anything binds.
    let (code, out) = run_sluice(
        &["--models", &models_arg(), "--port", "18999"],
        &[("SLUICE__SERVER__METRICS_PORT", "18999")],
    );
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("server.metrics_port") && out.contains("also server.port"),
        "{out}"
    );
    // The management API on the main port's number, likewise.
    let (code, out) = run_sluice(
        &["--models", &models_arg(), "--port", "18999"],
        &[("SLUICE__ADMIN__PORT", "18999")],
    );
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("admin.port") && out.contains("also server.port"),
        "{out}"
    );
    // gRPC on the main port's number, likewise.
    let (code, out) = run_sluice(
        &["--models", &models_arg(), "--port", "18999"],
        &[("SLUICE__SERVER__GRPC_PORT", "18999")],
    );
    assert_eq!(code, Some(64), "{out}");
    assert!(
        out.contains("server.grpc_port") && out.contains("give gRPC a port of its own"),
        "{out}"
    );
    // The management API open without a token: only on a port of its own, and not beside a token.
    for (env, needle) in [
        (vec![], "open on the inference port"),
        (
            vec![
                ("SLUICE__ADMIN__PORT", "18998"),
                ("SLUICE__ADMIN__TOKEN", "t"),
            ],
            "admin.token or admin.token_file is set",
        ),
    ] {
        let mut env = env;
        env.push(("SLUICE__ADMIN__REQUIRE_TOKEN", "false"));
        let (code, out) = run_sluice(&["--models", &models_arg(), "--port", "18999"], &env);
        assert_eq!(code, Some(64), "{out}");
        assert!(
            out.contains("admin.require_token") && out.contains(needle),
            "{out}"
        );
    }

    let (code, out) = run_sluice(&["--port", "99999"], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("--port"), "{out}");

    let (code, out) = run_sluice(&["--config", "/nonexistent/sluice.toml"], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("/nonexistent/sluice.toml"), "{out}");
}

/// `--check-config` validates the whole configuration as a start would, and exits without loading or binding: the
/// lint runs it on the sluice.toml each Kubernetes overlay ships.
#[test]
fn check_config_validates_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    let k8s = common::models_dir().join("../k8s/base/sluice.toml");
    // The token file is the mounted Secret in a pod; a stand-in here, as in scripts/lib/lint-deploy.sh.
    let token = dir.path().join("token");
    std::fs::write(&token, "check-token\n").unwrap();
    let (code, out) = run_sluice(
        &["--config", k8s.to_str().unwrap(), "--check-config"],
        &[("SLUICE__ADMIN__TOKEN_FILE", token.to_str().unwrap())],
    );
    assert_eq!((code, out.trim()), (Some(0), "configuration OK"));
    std::fs::write(&file, "[models]\nrepositry = \"/models\"\n").unwrap();
    let (code, out) = run_sluice(&["--config", file.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("`models.repositry`"), "{out}");
    std::fs::write(&file, "[admin]\ntoken_file = \"/nonexistent/token\"\n").unwrap();
    let (code, out) = run_sluice(&["--config", file.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(code, Some(64), "{out}");
    assert!(out.contains("admin.token_file"), "{out}");
}

#[test]
fn help_documents_every_flag() {
    let (code, out) = run_sluice(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in [
        "--config",
        "--models",
        "--host",
        "--port",
        "--onnxruntime",
        "--check-config",
    ] {
        assert!(out.contains(flag), "{flag} missing from help:\n{out}");
    }
}

#[test]
fn a_missing_onnx_runtime_is_one_clear_message() {
    let models = models_arg();
    let (code, out) = run_sluice(
        &[
            "--models",
            &models,
            "--onnxruntime",
            "/nonexistent/libonnxruntime.so",
        ],
        &[],
    );
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("/nonexistent/libonnxruntime.so"), "{out}");
    assert!(out.contains("scripts/fetch-onnxruntime.sh"), "{out}");
    assert!(
        !out.contains("panicked") && !out.contains("backtrace"),
        "{out}"
    );

    let (code, out) = run_sluice(
        &["--models", &models],
        &[("ORT_DYLIB_PATH", "/nonexistent/ort.so")],
    );
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.contains("ORT_DYLIB_PATH") && out.contains("scripts/fetch-onnxruntime.sh"),
        "{out}"
    );
}

#[test]
fn a_file_that_is_not_onnx_runtime_is_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"this is not a shared library").unwrap();
    let (code, out) = run_sluice(
        &[
            "--models",
            &models_arg(),
            "--onnxruntime",
            fake.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.contains("too old or unusable") && out.contains("scripts/fetch-onnxruntime.sh"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
}

/// `scripts/test.sh` fetches an older ONNX Runtime (1.20) and passes its path in `SLUICE_TEST_OLD_ORT`.
#[test]
fn a_too_old_onnx_runtime_is_refused() {
    let Ok(old) = std::env::var("SLUICE_TEST_OLD_ORT") else {
        eprintln!("SLUICE_TEST_OLD_ORT not set (scripts/test.sh sets it): not checked in this run");
        return;
    };
    let (code, out) = run_sluice(&["--models", &models_arg(), "--onnxruntime", &old], &[]);
    assert_eq!(code, Some(69), "{out}");
    assert!(out.contains("too old") && out.contains("1.20"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn a_port_in_use_exits_69_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, out) = run_sluice(
        &[
            "--models",
            &models_arg(),
            "--host",
            "127.0.0.1",
            "--port",
            &port,
        ],
        &[],
    );
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{out}"
    );
}

#[test]
fn a_missing_repository_exits_66() {
    let (code, out) = run_sluice(&["--models", "/nonexistent/models"], &[]);
    assert_eq!(code, Some(66), "{out}");
    assert!(out.contains("/nonexistent/models"), "{out}");
}

/// Broken models are reported (log, metric, model and server readiness with the reason) and the good ones still
/// serve.
#[test]
fn a_model_that_fails_to_load_does_not_stop_the_others() {
    let repo = repo_with(&["iris"]);
    let root = repo.path();
    std::fs::create_dir_all(root.join("corrupt/1")).unwrap();
    std::fs::write(root.join("corrupt/1/model.onnx"), b"\x08\x07garbage").unwrap();
    std::fs::create_dir_all(root.join("badconf/1")).unwrap();
    std::fs::copy(
        root.join("iris/2/model.onnx"),
        root.join("badconf/1/model.onnx"),
    )
    .unwrap();
    std::fs::write(root.join("badconf/model.toml"), "[session]\npool = 2\n").unwrap();
    std::fs::create_dir_all(root.join("empty/1")).unwrap();
    // A broken version next to a good one: the good one still serves.
    std::fs::create_dir_all(root.join("iris/4")).unwrap();

    let server = TestServer::start(root);
    let row = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    let (status, body) = post_json(&server, "/v2/models/iris/infer", &row);
    assert_eq!(
        (status, &body["model_version"]),
        (200, &json!("2")),
        "{body}"
    );

    let (status, body) = get_json(&server, "/v2/models/corrupt/ready");
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("model 'corrupt' is not ready: version 1:"),
        "{body}"
    );
    let (status, body) = get_json(&server, "/v2/models/badconf/versions/1/ready");
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid model.toml"),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `pool`"),
        "{body}"
    );
    let (status, body) = get_json(&server, "/v2/models/empty/ready");
    assert_eq!(status, 503);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("model.onnx does not exist"),
        "{body}"
    );
    let (status, body) = post_json(&server, "/v2/models/iris/versions/4/infer", &row);
    assert_eq!(status, 503, "{body}");
    assert_eq!(post_json(&server, "/v2/models/corrupt/infer", &row).0, 503);
    // Strict readiness (the default): unready, naming each model without a ready version and why.
    let (status, body) = get_json(&server, "/v2/health/ready");
    assert_eq!(status, 503, "{body}");
    let reasons = body["error"].as_str().unwrap();
    for model in ["badconf", "corrupt", "empty"] {
        assert!(reasons.contains(&format!("model '{model}': ")), "{reasons}");
    }
    assert!(!reasons.contains("model 'iris'"), "{reasons}");

    let metrics = common::metrics_text(&server);
    for line in [
        r#"sluice_model_load_failures_total{model="corrupt"} 1"#,
        r#"sluice_model_load_failures_total{model="badconf"} 1"#,
        r#"sluice_model_ready{model="corrupt",version="1"} 0"#,
        r#"sluice_model_ready{model="iris",version="4"} 0"#,
        r#"sluice_model_ready{model="iris",version="2"} 1"#,
        "sluice_models_loaded 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("model version failed to load") && logs.contains("corrupt"),
        "{logs}"
    );
}

/// With `log.access`, every request gets one JSON line with its id, method, path, status, version and variant.
#[test]
fn access_log_lines_carry_the_request_context() {
    let repo = repo_with(&["iris"]);
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[
            ("SLUICE__LOG__FORMAT", "json"),
            ("SLUICE__LOG__ACCESS", "true"),
        ],
    );
    let row = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    let response = common::client()
        .post(server.url("/v2/models/iris/versions/1/infer"))
        .header("x-request-id", "trace-me-42")
        .json(&row)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let line = server.wait_for_log_line(|v| {
        v["fields"]["message"] == "request" && v["fields"]["request_id"] == "trace-me-42"
    });
    let fields = &line["fields"];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(fields["method"], "POST", "{line}");
    assert_eq!(fields["path"], "/v2/models/iris/versions/1/infer", "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    assert_eq!(fields["model_version"], "1", "{line}");
    assert_eq!(fields["variant"], "pinned", "{line}");
    assert!(fields["latency_ms"].as_f64().unwrap() > 0.0, "{line}");
    assert!(fields.get("error").is_none(), "{line}");
}

#[test]
fn settings_from_a_file_and_flags_reach_the_server() {
    let repo = repo_with(&["iris"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    // The file says port 1 and a tiny element limit; the --port flag (0) must win over the file's port.
    std::fs::write(
        &file,
        "[server]\nport = 1\n[limits]\nmax_tensor_elements = 4\n",
    )
    .unwrap();
    let server = TestServer::start_with(repo.path(), &["--config", file.to_str().unwrap()], &[]);
    let request = |rows: usize| json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [rows, 4], "data": vec![1.0; rows * 4]}]});
    assert_eq!(
        post_json(&server, "/v2/models/iris/infer", &request(1)).0,
        200
    );
    let (status, body) = post_json(&server, "/v2/models/iris/infer", &request(2));
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("more than 4 elements"),
        "{body}"
    );
}

#[test]
fn oversized_bodies_get_413_in_v2_shape() {
    let repo = repo_with(&["iris"]);
    let server = TestServer::start_with(
        repo.path(),
        &[],
        &[("SLUICE__SERVER__MAX_BODY_BYTES", "1000")],
    );
    let data = vec![1.0; 400];
    let body = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [100, 4], "data": data}]});
    let (status, reply) = post_json(&server, "/v2/models/iris/infer", &body);
    assert_eq!(status, 413);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 1000"),
        "{reply}"
    );
}

#[test]
fn sigterm_and_ctrl_c_shut_down_gracefully() {
    let repo = repo_with(&["iris"]);
    let mut server = TestServer::start(repo.path());
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(server.logs().join("\n").contains("SIGTERM received"));

    let server = TestServer::start(repo.path());
    let killed = std::process::Command::new("kill")
        .args(["-INT", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut server = server;
    let status = server.terminate_wait();
    assert!(status.success(), "{status:?}");
    assert!(server.logs().join("\n").contains("ctrl-c received"));
}

#[test]
fn check_validates_a_repository_offline() {
    let (code, out) = run_sluice(&["check", &models_arg()], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("input clinic: BYTES [-1, 1]") && out.contains("repository OK"),
        "{out}"
    );

    let repo = repo_with(&["iris"]);
    let root = repo.path();
    std::fs::create_dir_all(root.join("corrupt/1")).unwrap();
    std::fs::write(root.join("corrupt/1/model.onnx"), b"garbage").unwrap();
    std::fs::create_dir_all(root.join("pinned/1")).unwrap();
    std::fs::copy(
        root.join("iris/2/model.onnx"),
        root.join("pinned/1/model.onnx"),
    )
    .unwrap();
    std::fs::write(root.join("pinned/model.toml"), "default_version = 4\n").unwrap();
    // A reference profile that does not parse, and a card whose checksum does not match its model file.
    std::fs::write(root.join("iris/1/reference.json"), "{not json").unwrap();
    std::fs::create_dir_all(root.join("swapped/1")).unwrap();
    std::fs::copy(
        root.join("iris/1/model.onnx"),
        root.join("swapped/1/model.onnx"),
    )
    .unwrap();
    std::fs::copy(
        root.join("iris/2/card.toml"),
        root.join("swapped/1/card.toml"),
    )
    .unwrap();
    let routing = root.join("routing.toml");
    std::fs::write(
        &routing,
        "[iris]\nvariants = [{ name = \"canary\", version = 7, weight = 5.0 }]\n",
    )
    .unwrap();
    let (code, out) = run_sluice(
        &[
            "check",
            root.to_str().unwrap(),
            "--routing",
            routing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "model 'corrupt' version 1",
        "model 'pinned': default_version 4 is not in the repository",
        "routing for 'iris' refers to version 7",
        "reference.json",
        "checksum mismatch",
        "5 problem(s)",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
}

/// `sluice check` refuses what the server would refuse: a shadow that cannot take its primaries' requests (iris v1
/// behind v2), while the example canary overlay's policy passes.
#[test]
fn check_refuses_a_shadow_that_cannot_take_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.toml");
    std::fs::write(
        &routing,
        "[iris]\nstable = 2\nshadow = { version = 1, sample_rate = 0.1 }\n",
    )
    .unwrap();
    let models = models_arg();
    let check = |routing: &str| run_sluice(&["check", &models, "--routing", routing], &[]);
    let (code, out) = check(routing.to_str().unwrap());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("routing for 'iris': shadow (version 1) cannot take the requests of version 2: output 'label' removed"),
        "{out}"
    );
    let overlay = common::models_dir().join("../k8s/overlays/canary/routing.toml");
    let (code, out) = check(overlay.to_str().unwrap());
    assert_eq!(code, Some(0), "{out}");
}

/// Half a TLS setup, a certificate given as the key, or a key of another certificate: exit 64 naming the setting and
/// the file, never plain HTTP served in place of HTTPS.
#[test]
fn an_incomplete_or_mismatched_tls_setup_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let cert_pem = file("cert.pem", cert.cert.pem());
    let key_pem = file("key.pem", cert.key_pair.serialize_pem());
    let other_key = file("other-key.pem", other.key_pair.serialize_pem());
    let config = file(
        "sluice.toml",
        format!("[server]\ntls_cert = \"{cert_pem}\"\n"),
    );
    let models = models_arg();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--models", models.as_str(), "--port", "0"];
        args.extend_from_slice(extra);
        run_sluice(&args, env)
    };
    // (flags, environment, what the message must name)
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: [Case; 5] = [
        (
            &[],
            vec![("SLUICE__SERVER__TLS_CERT", cert_pem.as_str())],
            &["server.tls_key", "is empty while server.tls_cert is set"],
        ),
        (
            &[],
            vec![("SLUICE__SERVER__TLS_KEY", key_pem.as_str())],
            &["server.tls_cert", "is empty while server.tls_key is set"],
        ),
        (
            &["--config", config.as_str()],
            vec![],
            &["server.tls_key", "is empty"],
        ),
        (
            &[],
            vec![
                ("SLUICE__SERVER__TLS_CERT", cert_pem.as_str()),
                ("SLUICE__SERVER__TLS_KEY", cert_pem.as_str()),
            ],
            &[
                "server.tls_key",
                "cert.pem",
                "no PEM private key",
                "is it the certificate?",
            ],
        ),
        (
            &[],
            vec![
                ("SLUICE__SERVER__TLS_CERT", cert_pem.as_str()),
                ("SLUICE__SERVER__TLS_KEY", other_key.as_str()),
            ],
            &["do not make a TLS identity", "other-key.pem"],
        ),
    ];
    for (args, env, wanted) in cases {
        let (code, out) = run(args, &env);
        assert_eq!(code, Some(64), "{env:?}: {out}");
        for w in wanted {
            assert!(out.contains(w), "{env:?}: {w:?} not in {out}");
        }
        assert!(!out.contains("listening"), "{out}");
    }
}
