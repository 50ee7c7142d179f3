//! Criterion benchmarks of one small-model request through sluice in-process, without sockets, so the server's own
//! per-request work can be measured apart from the kernel and the load generator: the whole application (every
//! middleware layer, the handler, the inference stack, the session run) via `oneshot`, the same handlers without any
//! middleware, the inference stack alone, and the floor — the same ONNX Runtime session run with no protocol work.
//! sluice runs this model's sessions inline on the polling thread (its runs are predicted at a few µs, under
//! `inline_run_max_us`), so the floor does too, as the load benchmark's bare handler does.
//!
//! Run: `cargo bench --bench request` (needs ONNX Runtime: `scripts/fetch-onnxruntime.sh`). The model is
//! `models/iris/2` (gradient-boosted trees, 1×4 FP32) on 2 sessions × 1 intra-op thread, as in the load benchmark.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Request;
use cpu_time::ThreadTime;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use ort::session::Session;
use ort::value::Tensor;
use sluice::config::{Overrides, Settings};
use sluice::inference::InferCall;
use sluice::middleware::ApiKeys;
use tower::ServiceExt;

const BODY: &str = r#"{"inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[0.0,0.4375,0.875,0.25]}]}"#;

/// A repository holding only iris v2 as model `m`, with the load benchmark's session settings.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("m").join("1");
    std::fs::create_dir_all(&version).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("models/iris/2/model.onnx"),
        version.join("model.onnx"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("m").join("model.toml"),
        "[session]\npool_size = 2\nintra_op_threads = 1\n",
    )
    .unwrap();
    dir
}

/// Runs `once` `iters` times and returns the CPU time of the calling thread, which polls the request future: the
/// protocol work (middleware, handler, decoding, validation, encoding) and the session run (inline for this model),
/// without wall-clock noise from idle threads waking.
/// Under load the server is CPU-bound, so this per-request CPU is what its throughput depends on.
fn cpu_time<T>(iters: u64, mut once: impl FnMut() -> T) -> Duration {
    let start = ThreadTime::now();
    for _ in 0..iters {
        std::hint::black_box(once());
    }
    start.elapsed()
}

fn request_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let repo = repository();
    let (_, env) =
        sluice::runtime::load(None).expect("ONNX Runtime (run scripts/fetch-onnxruntime.sh)");
    let overrides = Overrides {
        models: Some(repo.path().to_path_buf()),
        ..Default::default()
    };
    let vars = HashMap::from([
        ("SLUICE__LOG__LEVEL".to_owned(), "warn".to_owned()),
        ("SLUICE__MODELS__SETTLE_MS".to_owned(), "0".to_owned()),
    ]);
    let settings = Settings::load_with_env(&overrides, Some(vars.into_iter().collect())).unwrap();
    let state = {
        let _guard = rt.enter();
        sluice::server::build_state(&settings, env.clone()).unwrap()
    };
    rt.block_on(state.manager.reconcile()).unwrap();
    let app = sluice::middleware::app(
        state.clone(),
        &settings,
        ApiKeys::new(Vec::new(), settings.server.max_body_bytes),
    );

    // The same handlers with no middleware at all: the difference to the whole application is what the middleware
    // stack costs per request.
    let bare_routes = sluice::api::model_routes().with_state(state.clone());

    let mut group = c.benchmark_group("small model request");
    for (name, service) in [
        ("whole application (oneshot)", app),
        ("handlers without middleware", bare_routes),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cpu_time(iters, || {
                    rt.block_on(async {
                        let request = Request::post("/v2/models/m/infer")
                            .header("content-type", "application/json")
                            .body(Body::from(BODY))
                            .unwrap();
                        let response = service.clone().oneshot(request).await.unwrap();
                        assert!(response.status().is_success());
                        response.into_body().collect().await.unwrap().to_bytes()
                    })
                })
            })
        });
    }
    group.bench_function("inference stack only", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                rt.block_on(async {
                    let call = InferCall::new(
                        "m",
                        None,
                        Default::default(),
                        Bytes::from_static(BODY.as_bytes()),
                    );
                    state.pipeline.clone().oneshot(call).await.unwrap().outputs
                })
            })
        })
    });

    // The floor: the same model on the same session settings, raw floats in, raw bytes out, run where sluice runs it.
    // One session: the floor runs one request at a time, inline.
    let session = Mutex::new(
        Session::builder(&env)
            .unwrap()
            .with_intra_threads(1)
            .unwrap()
            .with_inter_threads(1)
            .unwrap()
            .commit_from_file(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/2/model.onnx"),
            )
            .unwrap(),
    );
    let raw: Vec<u8> = [0.0f32, 0.4375, 0.875, 0.25]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    group.bench_function("floor: session run inline", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                rt.block_on(async {
                    let body = raw.clone();
                    let floats: Vec<f32> = body
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    let mut session = session.lock().unwrap();
                    let input = Tensor::from_array(([1usize, 4], floats)).unwrap();
                    let outputs = session.run(ort::inputs![input]).unwrap();
                    let mut out = Vec::new();
                    for (_, value) in outputs.iter() {
                        if let Ok((_, data)) = value.try_extract_tensor::<f32>() {
                            out.extend(data.iter().flat_map(|x| x.to_le_bytes()));
                        }
                    }
                    out
                })
            })
        })
    });
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
