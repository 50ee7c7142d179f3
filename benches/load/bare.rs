//! The floor of the load benchmark: a bare axum handler that runs the same ONNX Runtime session with no protocol
//! work (raw little-endian FP32 bytes in, raw output bytes out), so the table shows what HTTP and the load generator
//! cost on this machine by themselves.
//!
//! The run happens where sluice would do it: `inline` on the async worker (sluice does that for runs it predicts to
//! take at most 50 µs, such as the small model's), `blocking` through `spawn_blocking` (compute-heavy models). So the
//! floor never pays a hand-off that sluice skips.
//!
//! `cargo run --release --example bare -- <model.onnx> <port> <shape,comma,separated> <sessions> <intra_threads>
//! <inline|blocking>`

#[path = "pool.rs"]
mod pool;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;

use self::pool::Pool;

async fn infer(State(pool): State<Arc<Pool>>, body: Bytes) -> Vec<u8> {
    let inline = pool.inline;
    // Every output's raw bytes, one after another.
    let run = move || pool.run(&body).concat();
    if inline {
        run()
    } else {
        tokio::task::spawn_blocking(run).await.unwrap()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pool = Arc::new(Pool::from_args(
        &args[1], &args[3], &args[4], &args[5], &args[6],
    ));
    let app = Router::new().route("/infer", post(infer)).with_state(pool);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{}", args[2]))
        .await
        .unwrap();
    // Ends on SIGINT or SIGTERM as sluice does, returning from `main` (so that a profiling build writes its profile).
    axum::serve(listener, app)
        .with_graceful_shutdown(sluice::shutdown::signal())
        .await
        .unwrap();
}
