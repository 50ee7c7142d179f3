//! Criterion benchmarks of one small-model request through sluice in-process, without sockets, so the server's own
//! per-request work can be measured apart from the kernel and the load generator: the whole application (every
//! middleware layer, the handler, the inference stack, the session run) via `oneshot`, the same handlers without any
//! middleware, the inference stack alone, and the floor — the same ONNX Runtime session run with no protocol work.
//! sluice runs this model's sessions inline on the polling thread (its runs are predicted at a few µs, under
//! `inline_run_max_us`), so the floor does too, as the load benchmark's bare handler does.
//!
//! A second group runs the whole application with tracing (1 % and 100 % sampled) or outcome feedback on.
//!
//! Run: `cargo bench --bench request` (needs ONNX Runtime: `scripts/fetch-onnxruntime.sh`). The model is
//! `models/iris/2` (gradient-boosted trees, 1×4 FP32) on 2 sessions × 1 intra-op thread, as in the load benchmark.

use std::time::Duration;

use axum::body::Body;
use cpu_time::ThreadTime;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use http_body_util::BodyExt;
use sluice::middleware::App;
use tower::ServiceExt;

mod support;
use support::{Fixture, Floor};

/// The allocator the server binary uses (`src/main.rs`), so allocation costs here are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// One request at a time through `service` (the application or the bare handlers), CPU time per request.
fn bench_service<S: App<Body>>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    service: &S,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                rt.block_on(async {
                    let request = support::infer_request();
                    let response = service.clone().oneshot(request).await.unwrap();
                    assert!(response.status().is_success());
                    response.into_body().collect().await.unwrap().to_bytes()
                })
            })
        })
    });
}

fn request_path(c: &mut Criterion) {
    let fixture = Fixture::new();
    let Fixture {
        rt,
        env,
        state,
        app,
        handlers,
        ..
    } = &fixture;
    // `handlers` are the same handlers with no middleware at all: the difference to the whole application is what
    // the middleware stack costs per request.

    let mut group = c.benchmark_group("small model request");
    bench_service(&mut group, "whole application (oneshot)", rt, app);
    bench_service(&mut group, "handlers without middleware", rt, handlers);
    group.bench_function("inference stack only", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                rt.block_on(async {
                    state
                        .pipeline
                        .clone()
                        .oneshot(support::infer_call())
                        .await
                        .unwrap()
                        .outputs
                })
            })
        })
    });

    let floor = Floor::new(env);
    let raw = Floor::body();
    group.bench_function("floor: session run inline", |b| {
        b.iter_custom(|iters| cpu_time(iters, || rt.block_on(async { floor.run(&raw) })))
    });
    group.finish();
    features(c, env);
}

/// The whole application with an optional feature on, beside the same request with it off (`request_path`'s
/// first row): what tracing (1 % and 100 % sampled) and outcome feedback cost the polling thread per request. The
/// span export task's and the feedback store's other threads are not in these figures; the load runs
/// (`scripts/perf/tracing.sh`, `scripts/perf/feedback.sh`) measure the whole process.
fn features(c: &mut Criterion, env: &ort::environment::Environment) {
    let mut group = c.benchmark_group("small model request, features on");
    for (name, variant) in [
        ("tracing, 1 % sampled", support::tracing("0.01")),
        ("tracing, 100 % sampled", support::tracing("1")),
        ("outcome feedback", support::feedback()),
    ] {
        let fixture = Fixture::with(env.clone(), variant);
        bench_service(&mut group, name, &fixture.rt, &fixture.app);
    }
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
