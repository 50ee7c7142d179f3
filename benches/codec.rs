//! Criterion benchmarks of the request path's CPU work: V2 JSON (compact, nested as Python writes it, flat as
//! `json.dumps` writes a list) and binary decode of a 1×3×224×224 FP32 request,
//! JSON encoding of large FP32 outputs (1×1000 and 1×3×224×224), validation, dynamic-batching merge and split, and the routing decision.
//!
//! Run: `cargo bench --bench codec`. Numbers are for comparison between commits on one machine; the figures in
//! `benches/RESULTS.md` name the command that produced them.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sluice::model::batch::{merge, split};
use sluice::model::{IoKind, IoSpec, Signature};
use sluice::routing::policy::{bucket_for_key, RoutingPolicy, Variant};
use sluice::tensor::json::{
    decode_request, decode_with_binary, encode_response, DecodeLimits, InferResponse,
};
use sluice::tensor::{DataType, Tensor, TensorData};
use sluice::validate::validate;

const LIMITS: DecodeLimits = DecodeLimits {
    max_elements: 1 << 24,
    max_depth: 32,
};
const IMAGE: usize = 3 * 224 * 224;

fn image_values() -> Vec<f32> {
    (0..IMAGE).map(|i| (i % 255) as f32 / 255.0).collect()
}

fn image_json() -> String {
    let data: Vec<String> = image_values().iter().map(|x| format!("{x:.4}")).collect();
    format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,3,224,224],"data":[{}]}}]}}"#,
        data.join(",")
    )
}

fn image_binary() -> (Vec<u8>, Vec<u8>) {
    let header = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,3,224,224],"parameters":{{"binary_data_size":{}}}}}]}}"#,
        IMAGE * 4
    );
    let raw = image_values()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    (header.into_bytes(), raw)
}

/// The same image as Python clients send it: `json.dumps(array.tolist())`, nested lists with `", "` between
/// elements, each float32 written as the shortest repr of its float64 (up to 17 digits).
fn image_json_python() -> String {
    let values = image_values();
    let rows: Vec<String> = values
        .chunks(224)
        .map(|row| {
            let row: Vec<String> = row.iter().map(|&x| format!("{:?}", f64::from(x))).collect();
            format!("[{}]", row.join(", "))
        })
        .collect();
    let planes: Vec<String> = rows
        .chunks(224)
        .map(|p| format!("[{}]", p.join(", ")))
        .collect();
    format!(
        r#"{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224], "data": [[{}]]}}]}}"#,
        planes.join(", ")
    )
}

/// The load benchmark's CNN request: a flat list as `json.dumps` writes it (`", "` between elements), short
/// decimals (sixteenths).
fn image_json_dumps_flat() -> String {
    let data: Vec<String> = (0..IMAGE)
        .map(|i| format!("{:?}", ((i * 7) % 17) as f64 / 16.0))
        .collect();
    format!(
        r#"{{"inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 224, 224, 3], "data": [{}]}}]}}"#,
        data.join(", ")
    )
}

/// The encode bench's output values, each written as its shortest decimal (as the encoder writes them), so that
/// the decode and encode of the same numbers compare per value.
fn encoded_values() -> Vec<f32> {
    (0..IMAGE).map(|i| (i % 255) as f32 / 255.0 - 0.3).collect()
}

fn image_json_shortest() -> String {
    let data: Vec<String> = encoded_values().iter().map(|x| format!("{x}")).collect();
    format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,3,224,224],"data":[{}]}}]}}"#,
        data.join(",")
    )
}

const IRIS: &str = r#"{"id":"1","inputs":[{"name":"float_input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}"#;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(IRIS.len() as u64));
    group.bench_function("json_iris_1x4_fp32", |b| {
        b.iter(|| decode_request(black_box(IRIS.as_bytes()), LIMITS))
    });
    let json = image_json();
    group.throughput(Throughput::Elements(IMAGE as u64));
    group.bench_function("json_image_1x3x224x224_fp32", |b| {
        b.iter(|| decode_request(black_box(json.as_bytes()), LIMITS))
    });
    let python = image_json_python();
    group.bench_function("json_image_python_1x3x224x224_fp32", |b| {
        b.iter(|| decode_request(black_box(python.as_bytes()), LIMITS))
    });
    let dumps = image_json_dumps_flat();
    group.bench_function("json_image_dumps_flat_1x224x224x3_fp32", |b| {
        b.iter(|| decode_request(black_box(dumps.as_bytes()), LIMITS))
    });
    let shortest = image_json_shortest();
    group.bench_function("json_image_shortest_1x3x224x224_fp32", |b| {
        b.iter(|| decode_request(black_box(shortest.as_bytes()), LIMITS))
    });
    let (header, raw) = image_binary();
    group.bench_function("binary_image_1x3x224x224_fp32", |b| {
        b.iter(|| decode_with_binary(black_box(&header), black_box(&raw), LIMITS))
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, shape) in [
        ("json_1x1000_fp32", vec![1, 1000]),
        ("json_1x3x224x224_fp32", vec![1, 3, 224, 224]),
    ] {
        let n: usize = shape.iter().product();
        let mut values = encoded_values();
        values.truncate(n);
        let response = InferResponse {
            model_name: "model",
            model_version: 1,
            id: None,
            outputs: vec![Tensor {
                name: "output".into(),
                shape,
                data: TensorData::Fp32(values),
            }],
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(name, |b| b.iter(|| encode_response(black_box(&response))));
    }
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
    let request = decode_request(image_json().as_bytes(), LIMITS).unwrap();
    c.bench_function("validate_1x3x224x224", |b| {
        b.iter(|| validate(black_box(&signature), black_box(&request)))
    });
}

fn batching(c: &mut Criterion) {
    let row = |v: f32| {
        vec![Tensor {
            name: "float_input".into(),
            shape: vec![1, 64],
            data: TensorData::Fp32(vec![v; 64]),
        }]
    };
    let requests: Vec<Vec<Tensor>> = (0..32).map(|i| row(i as f32)).collect();
    let parts: Vec<&[Tensor]> = requests.iter().map(Vec::as_slice).collect();
    c.bench_function("batch_merge_32x64_fp32", |b| {
        b.iter(|| merge(black_box(&parts), 32))
    });
    let output = Tensor {
        name: "probabilities".into(),
        shape: vec![32, 10],
        data: TensorData::Fp32(vec![0.1; 320]),
    };
    let counts = vec![1; 32];
    c.bench_function("batch_split_32x10_fp32", |b| {
        b.iter(|| split(black_box(vec![output.clone()]), &counts, 32))
    });
}

fn routing(c: &mut Criterion) {
    let policy = RoutingPolicy {
        stable: Some(1),
        variants: vec![
            Variant {
                name: "canary".into(),
                version: 2,
                weight: 10.0,
            },
            Variant {
                name: "b".into(),
                version: 3,
                weight: 20.0,
            },
        ],
        ..Default::default()
    };
    c.bench_function("routing_sticky_decision", |b| {
        b.iter(|| policy.choose(bucket_for_key(black_box("iris"), black_box("user-12345"))))
    });
}

criterion_group!(benches, decode, encode, validation, batching, routing);
criterion_main!(benches);
