//! The ceiling of the load benchmark: ONNX Runtime called in-process, with the same sessions and thread settings
//! sluice uses, for a fixed time. Prints one JSON line: requests/s, p50 and p99 in ms.
//!
//! `cargo run --release --example inprocess -- <model.onnx> <shape> <sessions> <intra_threads> <concurrency> <seconds>`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::value::Tensor;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = &args[1];
    let shape: Vec<usize> = args[2].split(',').map(|d| d.parse().unwrap()).collect();
    let (sessions, intra, concurrency, seconds): (usize, usize, usize, u64) = (
        args[3].parse().unwrap(),
        args[4].parse().unwrap(),
        args[5].parse().unwrap(),
        args[6].parse().unwrap(),
    );
    let (_, env) = sluice::runtime::load(None).expect("ONNX Runtime");
    let pool: Arc<Vec<Mutex<Session>>> = Arc::new(
        (0..sessions)
            .map(|_| {
                let builder = Session::builder(&env)
                    .unwrap()
                    .with_intra_threads(intra)
                    .unwrap();
                Mutex::new(
                    builder
                        .with_inter_threads(1)
                        .unwrap()
                        .commit_from_file(model)
                        .unwrap(),
                )
            })
            .collect(),
    );
    let elements: usize = shape.iter().product();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..concurrency)
        .map(|t| {
            let (pool, shape) = (Arc::clone(&pool), shape.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let input =
                        Tensor::from_array((shape.clone(), vec![0.5f32; elements])).unwrap();
                    let mut session = pool[t % pool.len()].lock().unwrap();
                    let outputs = session.run(ort::inputs![input]).unwrap();
                    // Read every output, as a server must (FP32 scores, INT64 labels).
                    for (_, value) in outputs.iter() {
                        if value.try_extract_tensor::<f32>().is_err() {
                            value.try_extract_tensor::<i64>().unwrap();
                        }
                    }
                    drop(outputs);
                    drop(session);
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize];
    println!(
        "{{\"rps\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}}}",
        all.len() as f64 / seconds as f64,
        pct(0.5),
        pct(0.99)
    );
}
