//! Fuzzes the V2 JSON decoder and the validator: any bytes must give a request or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::model::{IoKind, IoSpec, Signature};
use sluice::tensor::json::{decode_request, DecodeLimits};
use sluice::tensor::DataType;
use sluice::validate::validate;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_elements: 1 << 16, max_depth: 32 };
    if let Ok(request) = decode_request(data, limits) {
        let signature = Signature {
            inputs: vec![IoSpec { name: "x".into(), kind: IoKind::Tensor { datatype: DataType::Fp32, shape: vec![-1, 4] } }],
            outputs: vec![IoSpec { name: "y".into(), kind: IoKind::Tensor { datatype: DataType::Int64, shape: vec![-1] } }],
        };
        let _ = validate(&signature, &request);
    }
});
