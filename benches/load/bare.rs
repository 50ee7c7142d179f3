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

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use ort::session::Session;
use ort::value::Tensor;

struct Pool {
    sessions: Vec<Mutex<Session>>,
    next: std::sync::atomic::AtomicUsize,
    shape: Vec<usize>,
    inline: bool,
}

async fn infer(State(pool): State<Arc<Pool>>, body: Bytes) -> Vec<u8> {
    let inline = pool.inline;
    let run = move || {
        let floats: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let i = pool.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % pool.sessions.len();
        let mut session = pool.sessions[i].lock().unwrap();
        let input = Tensor::from_array((pool.shape.clone(), floats)).unwrap();
        let outputs = session.run(ort::inputs![input]).unwrap();
        // Every output's raw bytes, one after another (FP32 scores, INT64 labels).
        let mut out = Vec::new();
        for (_, value) in outputs.iter() {
            match value.try_extract_tensor::<f32>() {
                Ok((_, data)) => out.extend(data.iter().flat_map(|x| x.to_le_bytes())),
                Err(_) => out.extend(
                    value
                        .try_extract_tensor::<i64>()
                        .unwrap()
                        .1
                        .iter()
                        .flat_map(|x| x.to_le_bytes()),
                ),
            }
        }
        out
    };
    if inline {
        run()
    } else {
        tokio::task::spawn_blocking(run).await.unwrap()
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (model, port, shape, sessions, intra) = (&args[1], &args[2], &args[3], &args[4], &args[5]);
    let inline = match args[6].as_str() {
        "inline" => true,
        "blocking" => false,
        other => panic!("the run mode is inline or blocking, not {other}"),
    };
    let (_, env) = sluice::runtime::load(None).expect("ONNX Runtime");
    let shape: Vec<usize> = shape.split(',').map(|d| d.parse().unwrap()).collect();
    let sessions = (0..sessions.parse::<usize>().unwrap())
        .map(|_| {
            let builder = Session::builder(&env)
                .unwrap()
                .with_intra_threads(intra.parse().unwrap())
                .unwrap();
            Mutex::new(
                builder
                    .with_inter_threads(1)
                    .unwrap()
                    .commit_from_file(model)
                    .unwrap(),
            )
        })
        .collect();
    let pool = Arc::new(Pool {
        sessions,
        next: Default::default(),
        shape,
        inline,
    });
    let app = Router::new().route("/infer", post(infer)).with_state(pool);
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    // Ends on SIGINT or SIGTERM as sluice does, returning from `main` (so that a profiling build writes its profile).
    axum::serve(listener, app)
        .with_graceful_shutdown(sluice::shutdown::signal())
        .await
        .unwrap();
}
