//! The session pool of the load benchmark's floors (`bare.rs` for HTTP, `bare_grpc.rs` for gRPC): the same ONNX
//! Runtime sessions as sluice (count and intra-op threads as configured), round-robin, FP32 in, each output's raw
//! little-endian bytes out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

pub struct Pool {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    shape: Vec<usize>,
    /// Run on the async worker (as sluice does for runs it predicts short), else through `spawn_blocking`.
    pub inline: bool,
}

impl Pool {
    /// From the examples' common arguments: `<model.onnx> <shape,comma,separated> <sessions> <intra_threads>
    /// <inline|blocking>`.
    pub fn from_args(model: &str, shape: &str, sessions: &str, intra: &str, mode: &str) -> Pool {
        let inline = match mode {
            "inline" => true,
            "blocking" => false,
            other => panic!("the run mode is inline or blocking, not {other}"),
        };
        let (_, env) = sluice::runtime::load(None).expect("ONNX Runtime");
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
        Pool {
            sessions,
            next: AtomicUsize::new(0),
            shape: shape.split(',').map(|d| d.parse().unwrap()).collect(),
            inline,
        }
    }

    /// One run on `input` (raw little-endian FP32): each output's raw bytes (FP32 scores, INT64 labels).
    pub fn run(&self, input: &[u8]) -> Vec<Vec<u8>> {
        let floats: Vec<f32> = input
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let mut session = self.sessions[i].lock().unwrap();
        let input = Tensor::from_array((self.shape.clone(), floats)).unwrap();
        let outputs = session.run(ort::inputs![input]).unwrap();
        outputs
            .iter()
            .map(|(_, value)| match value.try_extract_tensor::<f32>() {
                Ok((_, data)) => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Err(_) => value
                    .try_extract_tensor::<i64>()
                    .unwrap()
                    .1
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
            })
            .collect()
    }
}
