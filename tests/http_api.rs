//! The V2 REST API end to end: the real binary on a loopback port, real example models.

mod common;

use common::{client, get_json, post_json, repo_with, TestServer};
use serde_json::{json, Value};

const ALL_MODELS: &[&str] = &[
    "iris",
    "digits_mlp",
    "digits_mlp_int8",
    "tumor_risk",
    "echo",
];

fn server() -> (tempfile::TempDir, TestServer) {
    let repo = repo_with(ALL_MODELS);
    let server = TestServer::start(repo.path());
    (repo, server)
}

fn iris_request(data: Value, shape: Value) -> Value {
    json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": shape, "data": data}]})
}

#[test]
fn health_and_server_metadata() {
    let (_repo, server) = server();
    assert_eq!(
        get_json(&server, "/v2/health/live"),
        (200, json!({"live": true}))
    );
    assert_eq!(
        get_json(&server, "/v2/health/ready"),
        (200, json!({"ready": true}))
    );
    let (status, meta) = get_json(&server, "/v2");
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "sluice");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["extensions"].is_array());
}

#[test]
fn model_metadata_comes_from_the_onnx_files() {
    let (_repo, server) = server();
    let (status, meta) = get_json(&server, "/v2/models/iris");
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "iris");
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["versions"], json!(["1", "2", "3"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}
        ])
    );

    // Version 1 has scikit-learn's ZipMap output: listed honestly, marked as not a tensor.
    let (_, v1) = get_json(&server, "/v2/models/iris/versions/1");
    assert_eq!(v1["versions"], json!(["1"]));
    let zipmap = &v1["outputs"][1];
    assert_eq!(zipmap["name"], "output_probability");
    assert!(
        zipmap["datatype"]
            .as_str()
            .unwrap()
            .starts_with("Sequence<Map"),
        "{zipmap}"
    );
    assert_eq!(zipmap["parameters"]["tensor"], false);

    let (_, tumor) = get_json(&server, "/v2/models/tumor_risk");
    let types: Vec<_> = tumor["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["datatype"].clone())
        .collect();
    assert_eq!(
        types,
        [json!("FP32"), json!("FP32"), json!("INT64"), json!("BYTES")]
    );
}

#[test]
fn model_readiness_and_unknown_models() {
    let (_repo, server) = server();
    assert_eq!(get_json(&server, "/v2/models/iris/ready").0, 200);
    assert_eq!(get_json(&server, "/v2/models/iris/versions/1/ready").0, 200);
    let (status, body) = get_json(&server, "/v2/models/nope/ready");
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Request for unknown model: 'nope' is not found"})
        )
    );
    let (status, body) = get_json(&server, "/v2/models/iris/versions/7/ready");
    assert_eq!(
        (status, body),
        (
            404,
            json!({"error": "Request for unknown model: 'iris' version 7 is not found; versions: 1, 2, 3"})
        )
    );
    let (status, body) = get_json(&server, "/v2/models/iris/versions/x/ready");
    assert_eq!(status, 404, "{body}");
    assert_eq!(get_json(&server, "/v2/models/nope").0, 404);
    assert_eq!(get_json(&server, "/v2/models/iris/versions/9").0, 404);
}

#[test]
fn triton_model_configuration() {
    let (_repo, server) = server();
    let (status, config) = get_json(&server, "/v2/models/iris/config");
    assert_eq!(status, 200);
    assert_eq!(config["name"], "iris");
    assert_eq!(config["platform"], "onnxruntime_onnx");
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(
        config["input"],
        json!([{"name": "float_input", "data_type": "TYPE_FP32", "dims": [-1, 4]}])
    );
    assert_eq!(
        config["output"][0],
        json!({"name": "label", "data_type": "TYPE_INT64", "dims": [-1]})
    );
    let (_, v1) = get_json(&server, "/v2/models/iris/versions/1/config");
    assert_eq!(
        v1["output"].as_array().unwrap().len(),
        1,
        "the ZipMap output has no Triton type: {v1}"
    );
    let (_, tumor) = get_json(&server, "/v2/models/tumor_risk/config");
    assert_eq!(tumor["input"][3]["data_type"], "TYPE_STRING");
    assert_eq!(get_json(&server, "/v2/models/nope/config").0, 404);
}

/// Every case the generator recorded with Python onnxruntime gives the same outputs here.
#[test]
fn outputs_equal_python_onnxruntime_for_every_example_model_and_datatype() {
    let (_repo, server) = server();
    let text = std::fs::read_to_string(common::fixtures_dir().join("reference.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let path = format!(
            "/v2/models/{}/versions/{}/infer",
            case["model"].as_str().unwrap(),
            case["version"].as_str().unwrap()
        );
        let (status, body) = post_json(&server, &path, &json!({"inputs": case["inputs"]}));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["model_name"], case["model"]);
        assert_eq!(body["model_version"], case["version"]);
        let got = body["outputs"].as_array().unwrap();
        let want = case["outputs"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{path}: {body}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (&g["name"], &g["datatype"], &g["shape"]),
                (&w["name"], &w["datatype"], &w["shape"]),
                "{path}"
            );
            assert_same_data(&g["data"], &w["data"], &format!("{path} {}", w["name"]));
        }
    }
}

fn assert_same_data(got: &Value, want: &Value, what: &str) {
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        match (g, w) {
            (Value::Number(g), Value::Number(w)) if w.is_f64() || g.is_f64() => {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "{what}: {g} != {w}"
                );
            }
            _ => assert_eq!(g, w, "{what}"),
        }
    }
}

#[test]
fn id_output_selection_nested_data_and_no_content_type() {
    let (_repo, server) = server();
    let body = json!({
        "id": "req-42",
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [2, 4],
                    "data": [[5.1, 3.5, 1.4, 0.2], [6.9, 3.2, 5.7, 2.3]]}],
        "outputs": [{"name": "label"}]
    });
    // No Content-Type header at all, as some clients send.
    let response = client()
        .post(server.url("/v2/models/iris/infer"))
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let out: Value = response.json().unwrap();
    assert_eq!(out["id"], "req-42");
    assert_eq!(out["model_version"], "2");
    assert_eq!(
        out["outputs"],
        json!([{"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]}])
    );
}

#[test]
fn concurrent_requests_share_the_session_pool() {
    let (_repo, server) = server();
    let text = std::fs::read_to_string(common::fixtures_dir().join("reference.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let digits = cases
        .iter()
        .find(|c| c["model"] == "digits_mlp")
        .unwrap()
        .clone();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    post_json(
                        &server,
                        "/v2/models/digits_mlp/infer",
                        &json!({"inputs": digits["inputs"]}),
                    )
                })
            })
            .collect();
        for h in handles {
            let (status, body) = h.join().unwrap();
            assert_eq!(status, 200);
            assert_eq!(body["outputs"][0]["data"], digits["outputs"][0]["data"]);
        }
    });
}

/// Each validation failure is a 400 whose V2 error names the input, what the model expects and what was sent.
#[test]
fn every_validation_error_is_a_clear_400() {
    let (_repo, server) = server();
    let fp = |name: &str, shape: Value, data: Value| json!({"name": name, "datatype": "FP32", "shape": shape, "data": data});
    let row = json!([5.1, 3.5, 1.4, 0.2]);
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "missing input",
            json!({"inputs": []}),
            &["input 'float_input' is missing", "FP32", "[-1, 4]"],
        ),
        (
            "duplicate input",
            json!({"inputs": [fp("float_input", json!([1, 4]), row.clone()), fp("float_input", json!([1, 4]), row.clone())]}),
            &["input 'float_input' is given more than once"],
        ),
        (
            "unknown input",
            json!({"inputs": [fp("float_input", json!([1, 4]), row.clone()), fp("extra", json!([1]), json!([1]))]}),
            &["input 'extra' is not an input", "'float_input'"],
        ),
        (
            "datatype mismatch",
            json!({"inputs": [{"name": "float_input", "datatype": "FP64", "shape": [1, 4], "data": row}]}),
            &["input 'float_input'", "expects datatype FP32", "has FP64"],
        ),
        (
            "rank mismatch",
            iris_request(row.clone(), json!([4])),
            &["input 'float_input'", "[-1, 4]", "rank 2", "[4]"],
        ),
        (
            "fixed dimension mismatch",
            iris_request(json!([1, 2, 3]), json!([1, 3])),
            &["input 'float_input'", "dimension 1 must be 4", "[1, 3]"],
        ),
        (
            "too few elements",
            iris_request(json!([1, 2, 3]), json!([1, 4])),
            &["input 'float_input'", "needs 4 elements", "holds 3"],
        ),
        (
            "too many elements",
            iris_request(json!([1, 2, 3, 4, 5]), json!([1, 4])),
            &["input 'float_input'", "needs 4 elements", "holds more"],
        ),
        (
            "string in FP32",
            iris_request(json!(["a", 2, 3, 4]), json!([1, 4])),
            &[
                "input 'float_input'",
                "expected FP32 element, got string \"a\"",
            ],
        ),
        (
            "bool in FP32",
            iris_request(json!([true, 2, 3, 4]), json!([1, 4])),
            &["expected FP32 element, got boolean true"],
        ),
        (
            "negative dimension",
            iris_request(json!([]), json!([-1, 4])),
            &["input 'float_input'", "negative"],
        ),
        (
            "shape overflow",
            iris_request(
                json!([]),
                json!([4294967296u64, 4294967296u64, 4294967296u64]),
            ),
            &[
                "input 'float_input'",
                "holds more than",
                "limits.max_tensor_elements",
            ],
        ),
        (
            "unknown datatype",
            json!({"inputs": [{"name": "float_input", "datatype": "FP8", "shape": [1, 4], "data": row}]}),
            &["input 'float_input'", "unknown datatype 'FP8'"],
        ),
        (
            "unknown output",
            json!({"inputs": [fp("float_input", json!([1, 4]), row.clone())], "outputs": [{"name": "nope"}]}),
            &[
                "output 'nope' is not an output",
                "'label'",
                "'probabilities'",
            ],
        ),
        (
            "inputs not a list",
            json!({"inputs": {}}),
            &["malformed inference request"],
        ),
    ];
    for (what, body, needles) in cases {
        let (status, reply) = post_json(&server, "/v2/models/iris/infer", &body);
        assert_eq!(status, 400, "{what}: {reply}");
        let message = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no V2 error body: {reply}"));
        for needle in needles {
            assert!(
                message.contains(needle),
                "{what}: {message:?} lacks {needle:?}"
            );
        }
    }
}

/// The echo fixture's reference inputs (one per datatype), with `data` as `input`'s data.
fn echo_inputs(input: &str, data: &Value) -> Value {
    let text = std::fs::read_to_string(common::fixtures_dir().join("reference.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    let echo = cases.iter().find(|c| c["model"] == "echo").unwrap();
    let mut inputs = echo["inputs"].clone();
    for i in inputs.as_array_mut().unwrap() {
        if i["name"] == input {
            i["data"] = data.clone();
        }
    }
    inputs
}

#[test]
fn element_kinds_are_checked_per_datatype() {
    let (_repo, server) = server();
    let with = |input: &str, data: Value| json!({"inputs": echo_inputs(input, &data)});
    let cases = [
        (
            "in_uint8",
            json!([1, 300, 2]),
            "expected UINT8 element, got number 300",
        ),
        (
            "in_int32",
            json!([1, 1.5, 2]),
            "expected INT32 element, got number 1.5",
        ),
        (
            "in_int8",
            json!([1, -129, 2]),
            "expected INT8 element, got number -129",
        ),
        (
            "in_uint64",
            json!([1, -1, 2]),
            "expected UINT64 element, got number -1",
        ),
        (
            "in_bool",
            json!([1, 0, 1]),
            "expected BOOL element, got number 1",
        ),
        (
            "in_bytes",
            json!(["a", 2, "c"]),
            "expected BYTES element, got number 2",
        ),
        (
            "in_fp16",
            json!([1, 1e6, 2]),
            "expected FP16 element, got number 1000000",
        ),
    ];
    for (input, data, needle) in cases {
        let (status, reply) = post_json(&server, "/v2/models/echo/infer", &with(input, data));
        assert_eq!(status, 400, "{input}: {reply}");
        let message = reply["error"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("input '{input}'")) && message.contains(needle),
            "{message}"
        );
    }
}

#[test]
fn bytes_elements_with_nul_bytes_round_trip() {
    let (_repo, server) = server();
    let elements = json!(["he\u{0}llo", "\u{0}\u{1}\u{2}\u{3}", ""]);
    let inputs = echo_inputs("in_bytes", &elements);
    let (status, reply) = post_json(
        &server,
        "/v2/models/echo/infer",
        &json!({"inputs": inputs, "outputs": [{"name": "out_bytes"}]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["data"], elements);
    assert_eq!(reply["outputs"][0]["data"][0].as_str().unwrap().len(), 6);
}

#[test]
fn statistics_count_each_versions_requests_in_tritons_shape() {
    let (_repo, server) = server();
    let row = iris_request(json!([5.1, 3.5, 1.4, 0.2]), json!([1, 4]));
    for _ in 0..3 {
        let (status, _) = post_json(&server, "/v2/models/iris/versions/2/infer", &row);
        assert_eq!(status, 200);
    }
    let bad = iris_request(json!([5.1, 3.5, 1.4]), json!([1, 3]));
    let (status, _) = post_json(&server, "/v2/models/iris/versions/2/infer", &bad);
    assert_eq!(status, 400);

    let (status, reply) = get_json(&server, "/v2/models/iris/versions/2/stats");
    assert_eq!(status, 200, "{reply}");
    let stats = &reply["model_stats"].as_array().unwrap()[0];
    assert_eq!(
        (&stats["name"], &stats["version"]),
        (&json!("iris"), &json!("2"))
    );
    assert_eq!(stats["inference_count"], 3);
    assert_eq!(stats["execution_count"], 3);
    assert!(stats["last_inference"].as_u64().unwrap() > 1_700_000_000_000);
    let phases = &stats["inference_stats"];
    for phase in [
        "success",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
    ] {
        assert_eq!(phases[phase]["count"], 3, "{phase}: {phases}");
    }
    assert_eq!(phases["fail"]["count"], 1);
    let ns = |phase: &str| phases[phase]["ns"].as_u64().unwrap();
    assert!(ns("compute_infer") > 0 && ns("compute_input") > 0 && ns("compute_output") > 0);
    assert!(
        ns("success") >= ns("compute_input") + ns("compute_infer") + ns("compute_output"),
        "{phases}"
    );
    assert_eq!(phases["cache_hit"], json!({"count": 0, "ns": 0}));
    assert_eq!(stats["batch_stats"], json!([]));

    // Every loaded version of the model, of every model; unknown names as Triton words them.
    let (_, reply) = get_json(&server, "/v2/models/iris/stats");
    let versions: Vec<&str> = reply["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2", "3"]);
    assert_eq!(reply["model_stats"][0]["inference_count"], 0);
    let (_, reply) = get_json(&server, "/v2/models/stats");
    let names: std::collections::BTreeSet<&str> = reply["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains("iris") && names.contains("echo"),
        "{names:?}"
    );
    let (status, reply) = get_json(&server, "/v2/models/nope/stats");
    assert_eq!(status, 404);
    assert_eq!(
        reply["error"],
        "Request for unknown model: 'nope' is not found"
    );
    let (status, _) = get_json(&server, "/v2/models/iris/versions/9/stats");
    assert_eq!(status, 404);
    let (_, meta) = get_json(&server, "/v2");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("statistics")));
}

#[test]
fn malformed_bodies_and_unknown_targets() {
    let (_repo, server) = server();
    for body in ["{", "", "[1,2]", "not json"] {
        let response = client()
            .post(server.url("/v2/models/iris/infer"))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{body:?}");
        let reply: Value = response.json().unwrap();
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .starts_with("malformed inference request"),
            "{reply}"
        );
    }
    let row = iris_request(json!([1, 2, 3, 4]), json!([1, 4]));
    assert_eq!(
        post_json(&server, "/v2/models/nope/infer", &row),
        (
            404,
            json!({"error": "Request for unknown model: 'nope' is not found"})
        )
    );
    assert_eq!(
        post_json(&server, "/v2/models/iris/versions/9/infer", &row).0,
        404
    );
    let (status, reply) = post_json(
        &server,
        "/v2/models/iris/versions/1/infer",
        &json!({
            "inputs": row["inputs"], "outputs": [{"name": "output_probability"}]
        }),
    );
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("not a tensor, so it cannot be returned over V2"),
        "{reply}"
    );
}

#[test]
fn unknown_routes_and_methods_get_v2_errors() {
    let (_repo, server) = server();
    assert_eq!(
        get_json(&server, "/v3/nothing"),
        (404, json!({"error": "no route for /v3/nothing"}))
    );
    let response = client()
        .delete(server.url("/v2/models/iris"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
    let reply: Value = response.json().unwrap();
    assert_eq!(
        reply,
        json!({"error": "method DELETE is not allowed for /v2/models/iris"})
    );
    let response = client()
        .get(server.url("/v2/models/iris/infer"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
}

#[test]
fn a_zero_row_batch_gives_empty_outputs() {
    let (_repo, server) = server();
    let (status, reply) = post_json(
        &server,
        "/v2/models/iris/infer",
        &iris_request(json!([]), json!([0, 4])),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["shape"], json!([0]));
}

#[test]
fn metrics_count_requests_by_model_version_and_outcome() {
    let (_repo, server) = server();
    assert_eq!(
        post_json(
            &server,
            "/v2/models/iris/infer",
            &iris_request(json!([1, 2, 3, 4]), json!([1, 4]))
        )
        .0,
        200
    );
    assert_eq!(
        post_json(
            &server,
            "/v2/models/iris/infer",
            &iris_request(json!([1]), json!([1, 4]))
        )
        .0,
        400
    );
    let text = common::metrics_text(&server);
    for line in [
        r#"sluice_requests_total{model="iris",outcome="success",protocol="http",variant="stable",version="2"} 1"#,
        r#"sluice_requests_total{model="iris",outcome="client_error",protocol="http",variant="stable",version="2"} 1"#,
        r#"sluice_request_duration_seconds_count{model="iris",protocol="http",variant="stable",version="2"} 2"#,
        r#"sluice_inference_duration_seconds_count{model="iris",version="2"} 1"#,
        r#"sluice_model_ready{model="tumor_risk",version="1"} 1"#,
        "sluice_models_loaded 7",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// ONNX Runtime failing at run time is a 500 with the runtime's message, counted as a server error and logged as
/// one error line with the request's id and path (successes write no line without `log.access`); the server keeps
/// serving.
#[test]
fn onnx_runtime_failures_are_500s_and_the_server_keeps_serving() {
    let repo = repo_with(&["reshape", "misdeclared"]);
    let server = TestServer::start_with(repo.path(), &[], &[("SLUICE__LOG__FORMAT", "json")]);
    let body = |n: usize| json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [n], "data": vec![1.0; n]}]});
    let (status, reply) = post_json(&server, "/v2/models/reshape/infer", &body(4));
    assert_eq!(status, 200, "{reply}");
    let failed = client()
        .post(server.url("/v2/models/reshape/infer"))
        .header("x-request-id", "failing-1")
        .json(&body(3))
        .send()
        .unwrap();
    assert_eq!(failed.status(), 500);
    let reply: Value = failed.json().unwrap();
    let message = reply["error"].as_str().unwrap();
    assert!(
        message.starts_with("ONNX Runtime failed:") && message.contains("Reshape"),
        "{message}"
    );
    let (status, reply) = post_json(&server, "/v2/models/reshape/infer", &body(4));
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["shape"], json!([2, 2]));

    let line = server.wait_for_log_line(|v| v["fields"]["message"] == "request failed");
    assert_eq!(line["level"], "ERROR", "{line}");
    assert_eq!(line["fields"]["request_id"], "failing-1", "{line}");
    assert_eq!(line["fields"]["path"], "/v2/models/reshape/infer", "{line}");
    assert_eq!(line["fields"]["status"], 500, "{line}");
    assert_eq!(line["fields"]["error"], message, "{line}");
    // The first success was answered before the failure was logged, so its line would be there by now.
    let request_lines = server
        .logs()
        .iter()
        .filter(|l| l.contains(r#""message":"request""#))
        .count();
    assert_eq!(request_lines, 0, "{:?}", server.logs());
    let metrics = common::metrics_text(&server);
    assert!(
        metrics.contains(
            r#"sluice_requests_total{model="reshape",outcome="server_error",protocol="http",variant="stable",version="1"} 1"#
        ),
        "{metrics}"
    );
}

/// The response shape is the actual output's, not the (wrong) one the model declares.
#[test]
fn output_shapes_come_from_the_actual_tensors() {
    let repo = repo_with(&["misdeclared"]);
    let server = TestServer::start(repo.path());
    let (_, meta) = get_json(&server, "/v2/models/misdeclared");
    assert_eq!(meta["outputs"][0]["shape"], json!([1]));
    let body =
        json!({"inputs": [{"name": "x", "datatype": "INT64", "shape": [3], "data": [7, 8, 9]}]});
    let (status, reply) = post_json(&server, "/v2/models/misdeclared/infer", &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["outputs"][0],
        json!({"name": "y", "datatype": "INT64", "shape": [3], "data": [7, 8, 9]})
    );
}

/// KServe V1: `instances` (or `inputs`) in, `predictions` out, for single- and multi-input models.
#[test]
fn kserve_v1_predict_and_status() {
    let (_repo, server) = server();
    assert_eq!(
        get_json(&server, "/v1/models/iris"),
        (200, json!({"name": "iris", "ready": true}))
    );
    assert_eq!(get_json(&server, "/v1/models/nope").0, 404);
    let (status, reply) = post_json(
        &server,
        "/v1/models/iris:predict",
        &json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.9, 3.2, 5.7, 2.3]]}),
    );
    assert_eq!(status, 200, "{reply}");
    let predictions = reply["predictions"].as_array().unwrap();
    assert_eq!(
        (
            predictions[0]["label"].as_i64(),
            predictions[1]["label"].as_i64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(predictions[0]["probabilities"].as_array().unwrap().len(), 3);
    let (status, reply) = post_json(
        &server,
        "/v1/models/digits_mlp:predict",
        &json!({"inputs": [vec![0.0; 64]]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["predictions"].as_array().unwrap().len(), 1);
    let instance = json!({"mean_radius": [17.99], "mean_texture": [10.38], "lymph_nodes": [5], "clinic": ["north"]});
    let (status, reply) = post_json(
        &server,
        "/v1/models/tumor_risk:predict",
        &json!({"instances": [instance]}),
    );
    assert_eq!(status, 200, "{reply}");
    assert!(reply["predictions"][0]["label"].is_i64(), "{reply}");
    for (body, needle) in [
        (json!({"rows": []}), "needs \"instances\""),
        (json!({"instances": []}), "empty"),
        (json!({"instances": [[1, 2, 3]]}), "dimension 1 must be 4"),
        (
            json!({"instances": [{"mean_radius": [1.0]}]}),
            "lacks input",
        ),
    ] {
        let model = if needle == "lacks input" {
            "tumor_risk"
        } else {
            "iris"
        };
        let (status, reply) = post_json(&server, &format!("/v1/models/{model}:predict"), &body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains(needle), "{reply}");
    }
    assert_eq!(
        post_json(
            &server,
            "/v1/models/iris:explain",
            &json!({"instances": []})
        )
        .0,
        404
    );
}

/// `/openapi.json` documents every route the server has.
#[test]
fn openapi_documents_every_endpoint() {
    let (_repo, server) = server();
    let (status, doc) = get_json(&server, "/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{model}",
        "/v2/models/{model}/versions/{version}",
        "/v2/models/{model}/ready",
        "/v2/models/{model}/versions/{version}/ready",
        "/v2/models/{model}/config",
        "/v2/models/{model}/versions/{version}/config",
        "/v2/models/{model}/infer",
        "/v2/models/{model}/versions/{version}/infer",
        "/v2/models/{model}/routing",
        "/v2/repository/index",
        "/v2/repository/models/{model}/load",
        "/v2/repository/models/{model}/unload",
        "/v2/repository/models/{model}/default",
        "/v2/repository/models/{model}/routing",
        "/v1/models/{model}",
        "/v1/models/{model}:predict",
        "/metrics",
        "/openapi.json",
        "/v2/models/{model}/drift",
        "/v2/models/{model}/card",
        "/v2/models/{model}/versions/{version}/card",
        "/v2/models/stats",
        "/v2/models/{model}/stats",
        "/v2/models/{model}/versions/{version}/stats",
        "/v2/models/{model}/feedback",
        "/v2/models/{model}/quality",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    assert_eq!(
        paths.len(),
        29,
        "a documented path the test does not know: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

/// Triton's binary extension: a JSON header plus raw bytes in, binary outputs out; malformed framing is a 400.
#[test]
fn binary_tensor_data_requests_and_errors() {
    let (_repo, server) = server();
    let send = |header: &Value, raw: &[u8], length: Option<String>| {
        let header = header.to_string();
        let mut body = header.clone().into_bytes();
        body.extend_from_slice(raw);
        let mut request = client()
            .post(server.url("/v2/models/iris/infer"))
            .body(body);
        request = request.header(
            "inference-header-content-length",
            length.unwrap_or_else(|| header.len().to_string()),
        );
        request.send().unwrap()
    };
    let floats: Vec<u8> = [5.1f32, 3.5, 1.4, 0.2]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities"}]
    });
    let response = send(&header, &floats, None);
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().unwrap();
    let head: Value = serde_json::from_slice(&bytes[..length]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(head["outputs"][0].get("data").is_none());
    assert_eq!(
        head["outputs"][1]["data"].as_array().unwrap().len(),
        3,
        "not asked as binary: JSON data"
    );
    assert_eq!(
        i64::from_le_bytes(bytes[length..length + 8].try_into().unwrap()),
        0
    );

    for (raw, length, needle) in [
        (&floats[..12], None, "16 is more than the 12 bytes"),
        (
            &[floats.clone(), vec![0; 4]].concat()[..],
            None,
            "4 bytes of binary data follow",
        ),
        (&floats[..], Some("9999".to_owned()), "longer than"),
        (&floats[..], Some("many".to_owned()), "must be a byte count"),
    ] {
        let response = send(&header, raw, length);
        assert_eq!(response.status(), 400);
        let reply: Value = response.json().unwrap();
        assert!(reply["error"].as_str().unwrap().contains(needle), "{reply}");
    }
    let short = json!({"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 12}}]});
    let response = send(&short, &floats[..12], None);
    assert_eq!(response.status(), 400);
    assert!(response
        .text()
        .unwrap()
        .contains("the shape needs 4 elements"));
}
