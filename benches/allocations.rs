//! Heap allocations per small-model request, in-process, at each depth of sluice's request path: the whole
//! application (every middleware layer), the handlers without middleware, the inference stack alone, and the floor
//! (the same ONNX Runtime session run with no protocol work, as in `benches/request.rs`).
//!
//! The counts are exact, not timed: a counting wrapper around the server's allocator (mimalloc) counts every
//! allocation and reallocation made by Rust code on any thread while a thousand requests run one after another.
//! ONNX Runtime's own C++ allocations are not counted. Allocation is the largest single item in the server's
//! per-request CPU profile under load (benches/RESULTS.md), so this is the figure to watch when trimming the path.
//!
//! The whole application is also counted with tracing (1 % and 100 % sampled) and with outcome feedback on.
//!
//! Run: `cargo bench --bench allocations` (needs ONNX Runtime: `scripts/fetch-onnxruntime.sh`).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use http_body_util::BodyExt;
use sluice::middleware::App;
use tower::ServiceExt;

mod support;
use support::{Fixture, Floor};

/// mimalloc, counting allocations and the bytes asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const REQUESTS: u64 = 1000;

/// Allocations and bytes per call of `once`, after a warm-up (lazy statics, pools and buffers fill once).
fn per_call(mut once: impl FnMut()) -> (f64, f64) {
    for _ in 0..100 {
        once();
    }
    let (allocations, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for _ in 0..REQUESTS {
        once();
    }
    (
        (ALLOCATIONS.load(Ordering::Relaxed) - allocations) as f64 / REQUESTS as f64,
        (BYTES.load(Ordering::Relaxed) - bytes) as f64 / REQUESTS as f64,
    )
}

/// Allocations per request sent through `service` (the application or the bare handlers).
fn through<S: App<Body>>(rt: &tokio::runtime::Runtime, service: &S) -> (f64, f64) {
    per_call(|| {
        rt.block_on(async {
            let response = service
                .clone()
                .oneshot(support::infer_request())
                .await
                .unwrap();
            assert!(response.status().is_success());
            response.into_body().collect().await.unwrap().to_bytes();
        })
    })
}

fn main() {
    let fixture = Fixture::new();
    let rt = &fixture.rt;
    let mut rows = Vec::new();
    rows.push(("whole application", through(rt, &fixture.app)));
    rows.push((
        "handlers without middleware",
        through(rt, &fixture.handlers),
    ));
    rows.push((
        "inference stack only",
        per_call(|| {
            rt.block_on(async {
                fixture
                    .state
                    .pipeline
                    .clone()
                    .oneshot(support::infer_call())
                    .await
                    .unwrap();
            })
        }),
    ));
    let floor = Floor::new(&fixture.env);
    let raw = Floor::body();
    rows.push((
        "floor: session run",
        per_call(|| {
            std::hint::black_box(floor.run(&raw));
        }),
    ));
    let env = &fixture.env;
    for (name, variant) in [
        ("tracing, 1 % sampled", support::tracing("0.01")),
        ("tracing, 100 % sampled", support::tracing("1")),
        ("outcome feedback", support::feedback()),
    ] {
        let fixture = Fixture::with(env.clone(), variant);
        rows.push((name, through(&fixture.rt, &fixture.app)));
    }
    println!("small model request, heap allocations by Rust code ({REQUESTS} requests after 100 warm-up)");
    println!("{:<30} {:>12} {:>14}", "", "allocations", "bytes");
    for (name, (allocations, bytes)) in rows {
        println!("{name:<30} {allocations:>12.1} {bytes:>14.0}");
    }
}
