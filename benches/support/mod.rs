//! Set-up shared by the in-process request benchmarks (`request`: CPU time, `allocations`: heap allocations): the
//! small model served by sluice's real application state, without sockets, and the V2 request they all send.
//!
//! The model is `models/iris/2` (gradient-boosted trees, 1×4 FP32) as model `m` on 2 sessions × 1 intra-op thread, as
//! in the load benchmark. Needs ONNX Runtime (`scripts/fetch-onnxruntime.sh`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

use axum::body::{Body, Bytes};
use axum::http::Request;
use axum::Router;
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use sluice::api::AppState;
use sluice::config::{Overrides, Settings};
use sluice::inference::{InferCall, Payload};
use sluice::middleware::ApiKeys;
use sluice::middleware::App;

/// The V2 JSON request every benchmark sends (the load benchmark's small-model body).
pub const BODY: &str = r#"{"inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[0.0,0.4375,0.875,0.25]}]}"#;

/// The model file the repository serves, for benchmarks that open their own session (the floor).
pub fn model_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/2/model.onnx")
}

/// sluice's state with the model loaded, the whole application (every middleware layer) and the same handlers with
/// no middleware, on a two-worker runtime.
pub struct Fixture<A> {
    pub rt: tokio::runtime::Runtime,
    pub env: Environment,
    pub state: AppState,
    pub app: A,
    pub handlers: Router,
    _repository: tempfile::TempDir,
}

/// What a fixture's server runs with beyond the defaults: more of the model's `model.toml`, more `SLUICE__*`
/// settings.
#[derive(Default)]
pub struct Variant {
    pub model_toml: &'static str,
    pub env: Vec<(&'static str, &'static str)>,
}

/// Tracing on, sampling `ratio` (as `SLUICE__TRACING__SAMPLE_RATIO`), exporting to a port where nothing listens.
pub fn tracing(ratio: &'static str) -> Variant {
    Variant {
        model_toml: "",
        env: vec![
            ("SLUICE__TRACING__ENABLED", "true"),
            ("SLUICE__TRACING__ENDPOINT", "http://127.0.0.1:9/v1/traces"),
            ("SLUICE__TRACING__SAMPLE_RATIO", ratio),
        ],
    }
}

/// Outcome feedback on the model: its label and probabilities kept for every request (as `scripts/perf/feedback.sh`).
pub fn feedback() -> Variant {
    Variant {
        model_toml: "[feedback]\ntask = \"classification\"\nlabel_output = \"label\"\nscore_output = \"probabilities\"\n",
        env: Vec::new(),
    }
}

impl Fixture<()> {
    /// The fixture; the application's type is the server's concrete middleware stack, which has no name.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Fixture<impl App<Body>> {
        let (_, env) =
            sluice::runtime::load(None).expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh)");
        Fixture::with(env, Variant::default())
    }

    /// The fixture with `variant`'s settings, on ONNX Runtime's `env` (loaded once per process).
    pub fn with(env: Environment, variant: Variant) -> Fixture<impl App<Body>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let repository = tempfile::tempdir().unwrap();
        let version = repository.path().join("m").join("1");
        std::fs::create_dir_all(&version).unwrap();
        std::fs::copy(model_path(), version.join("model.onnx")).unwrap();
        std::fs::write(
            repository.path().join("m").join("model.toml"),
            format!(
                "[session]\npool_size = 2\nintra_op_threads = 1\n{}",
                variant.model_toml
            ),
        )
        .unwrap();
        let overrides = Overrides {
            models: Some(repository.path().to_path_buf()),
            ..Default::default()
        };
        let mut vars = HashMap::from([
            ("SLUICE__LOG__LEVEL".to_owned(), "warn".to_owned()),
            ("SLUICE__MODELS__SETTLE_MS".to_owned(), "0".to_owned()),
        ]);
        vars.extend(
            variant
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let settings =
            Settings::load_with_env(&overrides, Some(vars.into_iter().collect())).unwrap();
        let state = {
            let _guard = rt.enter();
            sluice::server::build_state(&settings, env.clone()).unwrap()
        };
        rt.block_on(state.manager.reconcile()).unwrap();
        let app = sluice::middleware::app(
            state.clone(),
            &settings,
            ApiKeys::new(Vec::new(), settings.server.max_body_bytes),
            sluice::middleware::Overload::from_settings(&settings, Arc::clone(&state.metrics)),
        );
        let handlers = sluice::api::model_routes().with_state(state.clone());
        Fixture {
            rt,
            env,
            state,
            app,
            handlers,
            _repository: repository,
        }
    }
}

/// `POST /v2/models/m/infer` with [`BODY`].
pub fn infer_request() -> Request<Body> {
    Request::post("/v2/models/m/infer")
        .header("content-type", "application/json")
        .body(Body::from(BODY))
        .unwrap()
}

/// The same request as the inference stack receives it from the handler: model `m`, no version, [`BODY`].
pub fn infer_call() -> InferCall {
    InferCall::new(
        "m".to_owned(),
        None,
        Default::default(),
        Payload::Json {
            body: Bytes::from_static(BODY.as_bytes()),
            binary_header_len: None,
        },
    )
}

/// The floor: the same model on the same session settings with no protocol work — raw little-endian FP32 bytes in,
/// the FP32 outputs' raw bytes out — as the load benchmark's bare handler does. One session, run on the calling
/// thread (where sluice runs this model's short runs).
pub struct Floor(Mutex<Session>);

impl Floor {
    pub fn new(env: &Environment) -> Floor {
        Floor(Mutex::new(
            Session::builder(env)
                .unwrap()
                .with_intra_threads(1)
                .unwrap()
                .with_inter_threads(1)
                .unwrap()
                .commit_from_file(model_path())
                .unwrap(),
        ))
    }

    /// [`BODY`]'s input as raw little-endian FP32 bytes.
    pub fn body() -> Vec<u8> {
        [0.0f32, 0.4375, 0.875, 0.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect()
    }

    pub fn run(&self, body: &[u8]) -> Vec<u8> {
        let floats: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut session = self.0.lock().unwrap();
        let input = Tensor::from_array(([1usize, 4], floats)).unwrap();
        let outputs = session.run(ort::inputs![input]).unwrap();
        let mut out = Vec::new();
        for (_, value) in outputs.iter() {
            if let Ok((_, data)) = value.try_extract_tensor::<f32>() {
                out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        out
    }
}
