//! Router tests without a socket (`oneshot`): readiness before and after start-up loading, and extractor rejections.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sluice::api::{self, AppState};
use sluice::config::Limits;
use sluice::inference::InferenceService;
use sluice::metrics::Metrics;
use sluice::registry::{self, Registry};
use tower::ServiceExt;

fn state() -> AppState {
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::new().unwrap());
    let limits = Limits {
        max_tensor_elements: 1 << 20,
    };
    let inference = Arc::new(InferenceService::new(
        Arc::clone(&registry),
        Arc::clone(&metrics),
        limits,
    ));
    AppState {
        registry,
        metrics,
        inference,
    }
}

async fn call(state: &AppState, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = api::router(state.clone(), 1 << 20)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const IRIS: &str = r#"{"inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;

/// Not ready (503, V2 body) until the repository is loaded, then ready and serving. One test, because ONNX Runtime
/// allows one environment per process.
#[tokio::test]
async fn ready_only_after_startup_loading() {
    let state = state();
    assert_eq!(
        call(&state, "GET", "/v2/health/live", "").await,
        (StatusCode::OK, json!({"live": true}))
    );
    let (status, body) = call(&state, "GET", "/v2/health/ready", "").await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the server is still loading models"})
        )
    );
    let (status, body) = call(&state, "POST", "/v2/models/iris/infer", IRIS).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the server is still loading models"})
        )
    );

    let (_, env) =
        sluice::runtime::load(None).expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh)");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let map = registry::load_repository(&env, &root, &state.metrics).unwrap();
    state.registry.install(map);
    state.registry.set_ready(true);

    assert_eq!(
        call(&state, "GET", "/v2/health/ready", "").await,
        (StatusCode::OK, json!({"ready": true}))
    );
    let (status, body) = call(&state, "POST", "/v2/models/iris/infer", IRIS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([0]));
    assert_eq!(
        call(&state, "GET", "/v2/models/nope/ready", "").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_paths_get_v2_errors() {
    let state = state();
    let (status, body) = call(&state, "GET", "/v2/models/%FF/ready", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().starts_with("invalid path"),
        "{body}"
    );
}
