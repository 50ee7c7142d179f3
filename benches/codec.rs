//! Criterion benchmarks of the request path's CPU work: V2 JSON decode and validation.
//!
//! Run: `cargo bench --bench codec`. Numbers are for comparison between commits on one machine.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::model::{IoKind, IoSpec, Signature};
use sluice::tensor::json::{decode_request, DecodeLimits};

const LIMITS: DecodeLimits = DecodeLimits {
    max_elements: 1 << 24,
    max_depth: 32,
};
use sluice::tensor::DataType;
use sluice::validate::validate;

fn image_request() -> String {
    let n = 3 * 224 * 224;
    let data: Vec<String> = (0..n)
        .map(|i| format!("{:.4}", (i % 255) as f32 / 255.0))
        .collect();
    format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,3,224,224],"data":[{}]}}]}}"#,
        data.join(",")
    )
}

const IRIS: &str = r#"{"id":"1","inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_json");
    group.throughput(Throughput::Bytes(IRIS.len() as u64));
    group.bench_function("iris_1x4_fp32", |b| {
        b.iter(|| decode_request(black_box(IRIS.as_bytes()), LIMITS))
    });
    let image = image_request();
    group.throughput(Throughput::Bytes(image.len() as u64));
    group.bench_function("image_1x3x224x224_fp32", |b| {
        b.iter(|| decode_request(black_box(image.as_bytes()), LIMITS))
    });
    group.finish();
}

fn validation(c: &mut Criterion) {
    let signature = Signature {
        inputs: vec![IoSpec {
            name: "input".into(),
            kind: IoKind::Tensor {
                datatype: DataType::Fp32,
                shape: vec![-1, 3, 224, 224],
            },
        }],
        outputs: vec![IoSpec {
            name: "probabilities".into(),
            kind: IoKind::Tensor {
                datatype: DataType::Fp32,
                shape: vec![-1, 1000],
            },
        }],
    };
    let request = decode_request(image_request().as_bytes(), LIMITS).unwrap();
    c.bench_function("validate_1x3x224x224", |b| {
        b.iter(|| validate(black_box(&signature), black_box(&request)))
    });
}

criterion_group!(benches, decode, validation);
criterion_main!(benches);
