use half::f16;

use super::*;
use crate::tensor::TensorData;

const LIMITS: DecodeLimits = DecodeLimits {
    max_elements: 1_000,
    max_depth: 16,
};

fn decode(body: &str) -> Result<InferRequest, DecodeError> {
    decode_request(body.as_bytes(), LIMITS)
}

fn one(datatype: &str, shape: &str, data: &str) -> Result<TensorData, DecodeError> {
    let body = format!(
        r#"{{"inputs":[{{"name":"x","datatype":"{datatype}","shape":{shape},"data":{data}}}]}}"#
    );
    decode(&body).map(|mut r| r.inputs.remove(0).data)
}

#[test]
fn flat_and_nested_data_decode_row_major() {
    let flat = one("FP32", "[2,2]", "[1,2,3.5,4]").unwrap();
    let nested = one("FP32", "[2,2]", "[[1,2],[3.5,4]]").unwrap();
    assert_eq!(flat, TensorData::Fp32(vec![1.0, 2.0, 3.5, 4.0]));
    assert_eq!(flat, nested);
}

#[test]
fn every_datatype_decodes() {
    assert_eq!(
        one("BOOL", "[2]", "[true,false]").unwrap(),
        TensorData::Bool(vec![true, false])
    );
    assert_eq!(
        one("UINT8", "[2]", "[0,255]").unwrap(),
        TensorData::Uint8(vec![0, 255])
    );
    assert_eq!(
        one("UINT16", "[1]", "[65535]").unwrap(),
        TensorData::Uint16(vec![65535])
    );
    assert_eq!(
        one("UINT32", "[1]", "[4294967295]").unwrap(),
        TensorData::Uint32(vec![u32::MAX])
    );
    assert_eq!(
        one("UINT64", "[1]", "[18446744073709551615]").unwrap(),
        TensorData::Uint64(vec![u64::MAX])
    );
    assert_eq!(
        one("INT8", "[2]", "[-128,127]").unwrap(),
        TensorData::Int8(vec![-128, 127])
    );
    assert_eq!(
        one("INT16", "[1]", "[-32768]").unwrap(),
        TensorData::Int16(vec![i16::MIN])
    );
    assert_eq!(
        one("INT32", "[1]", "[2.0]").unwrap(),
        TensorData::Int32(vec![2])
    );
    assert_eq!(
        one("INT64", "[1]", "[-9223372036854775808]").unwrap(),
        TensorData::Int64(vec![i64::MIN])
    );
    assert_eq!(
        one("FP16", "[1]", "[1.5]").unwrap(),
        TensorData::Fp16(vec![f16::from_f32(1.5)])
    );
    assert_eq!(
        one("FP64", "[1]", "[0.1]").unwrap(),
        TensorData::Fp64(vec![0.1])
    );
    assert_eq!(
        one("BYTES", "[2]", r#"["a","h\u00e9"]"#).unwrap(),
        TensorData::Bytes(vec!["a".into(), "hé".into()])
    );
}

#[test]
fn wrong_element_kinds_are_named() {
    let cases = [
        (
            "FP32",
            r#"["abc"]"#,
            "expected FP32 element, got string \"abc\"",
        ),
        ("UINT8", "[300]", "expected UINT8 element, got number 300"),
        ("UINT8", "[-1]", "expected UINT8 element, got number -1"),
        ("INT32", "[1.5]", "expected INT32 element, got number 1.5"),
        ("BOOL", "[1]", "expected BOOL element, got number 1"),
        ("BYTES", "[1]", "expected BYTES element, got number 1"),
        ("FP32", "[null]", "expected FP32 element, got null"),
        ("FP32", "[1e300]", "expected FP32 element, got number 1e300"),
        (
            "INT64",
            r#"[{"a":1}]"#,
            "expected INT64 element, got an object",
        ),
    ];
    for (dtype, data, want) in cases {
        let err = one(dtype, "[1]", data).unwrap_err().to_string();
        assert!(err.starts_with("input 'x': "), "{err}");
        assert!(err.contains(want), "{dtype} {data}: {err}");
    }
}

#[test]
fn element_count_must_match_shape() {
    let err = one("FP32", "[2,2]", "[1,2,3]").unwrap_err();
    assert_eq!(
        err,
        DecodeError::ElementCount {
            input: "x".into(),
            shape: vec![2, 2],
            expected: 4,
            given: 3
        }
    );
    let err = one("FP32", "[2]", "[1,2,3]").unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooMuchData {
            input: "x".into(),
            shape: vec![2],
            expected: 2
        }
    );
}

#[test]
fn shapes_are_bounded_before_any_allocation() {
    // The errors carry the shape as the client sent it.
    let err = one("FP32", "[100000,100000]", "[]").unwrap_err();
    assert!(
        matches!(&err, DecodeError::TooManyElements { limit: 1000, shape, .. } if shape == &[100000, 100000]),
        "{err}"
    );
    let err = one("FP32", "[4294967296,4294967296,4294967296]", "[]").unwrap_err();
    assert!(
        matches!(&err, DecodeError::TooManyElements { shape, .. } if shape == &[1 << 32; 3]),
        "{err}"
    );
    let err = one("FP32", "[2,-1]", "[]").unwrap_err();
    assert!(
        matches!(&err, DecodeError::NegativeDimension { shape, .. } if shape == &[2, -1]),
        "{err}"
    );
}

#[test]
fn malformed_requests_are_errors() {
    for body in [
        "",
        "{",
        "[]",
        r#"{"inputs":{}}"#,
        r#"{"inputs":[{"name":"x"}]}"#,
        "null",
    ] {
        assert!(matches!(decode(body), Err(DecodeError::Json(_))), "{body}");
    }
    assert!(matches!(
        one("FP8", "[1]", "[1]"),
        Err(DecodeError::UnknownDatatype { .. })
    ));
    let missing = decode(r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}"#);
    assert_eq!(missing, Err(DecodeError::MissingData { input: "x".into() }));
}

#[test]
fn id_and_requested_outputs_are_kept() {
    let req = decode(
        r#"{"id":"r1","inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[5],"parameters":{}}],
            "outputs":[{"name":"label"}],"parameters":{"a":1}}"#,
    )
    .unwrap();
    assert_eq!(req.id.as_deref(), Some("r1"));
    assert_eq!(req.outputs, Some(vec!["label".to_string()]));
}

#[test]
fn response_serialises_typed_buffers() {
    let response = InferResponse {
        model_name: "m",
        model_version: 2,
        id: Some("r1".into()),
        outputs: vec![
            Tensor {
                name: "p".into(),
                shape: vec![2],
                data: TensorData::Fp16(vec![f16::from_f32(0.5); 2]),
            },
            Tensor {
                name: "s".into(),
                shape: vec![1],
                data: TensorData::Bytes(vec!["ok".into()]),
            },
        ],
    };
    let json = serde_json::to_string(&response).unwrap();
    assert_eq!(
        json,
        r#"{"model_name":"m","model_version":"2","id":"r1","outputs":[{"name":"p","datatype":"FP16","shape":[2],"data":[0.5,0.5]},{"name":"s","datatype":"BYTES","shape":[1],"data":["ok"]}]}"#
    );
}

#[test]
fn a_response_is_written_as_v2_json_with_shortest_floats_and_escaped_names() {
    let response = InferResponse {
        model_name: "m",
        model_version: 12,
        id: Some("say \"hi\"".into()),
        outputs: vec![
            Tensor {
                name: "p".into(),
                shape: vec![1, 5],
                data: TensorData::Fp32(vec![0.3, -1.5, 1e-7, f32::NAN, 16_777_216.0]),
            },
            Tensor {
                name: "l\n".into(),
                shape: vec![1],
                data: TensorData::Int64(vec![-7]),
            },
        ],
    };
    let body = encode_response(&response).unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"model_name":"m","model_version":"12","id":"say \"hi\"","outputs":[{"name":"p","datatype":"FP32","shape":[1,5],"data":[0.3,-1.5,1e-7,null,16777216.0]},{"name":"l\n","datatype":"INT64","shape":[1],"data":[-7]}]}"#
    );
}

#[test]
fn binary_response_header_describes_raw_outputs_and_inlines_the_rest() {
    let response = InferResponse {
        model_name: "m",
        model_version: 3,
        id: Some("r2".into()),
        outputs: vec![
            Tensor {
                name: "p".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![0.25, -1.5]),
            },
            Tensor {
                name: "s".into(),
                shape: vec![1],
                data: TensorData::Bytes(vec!["ok".into()]),
            },
            Tensor {
                name: "l".into(),
                shape: vec![1],
                data: TensorData::Int64(vec![7]),
            },
        ],
    };
    let binary = BinaryOutputs {
        all: false,
        named: vec!["p".into(), "s".into()],
    };
    let (body, header_len) = encode_binary_response(&response, &binary).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&body[..header_len]).unwrap();
    assert_eq!(
        header,
        serde_json::json!({
            "model_name": "m", "model_version": "3", "id": "r2",
            "outputs": [
                {"name": "p", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
                {"name": "s", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}},
                {"name": "l", "datatype": "INT64", "shape": [1], "data": [7]},
            ]
        })
    );
    // The raw bytes follow the header in output order: FP32 little-endian, then BYTES with a 4-byte length prefix.
    let mut raw = Vec::new();
    raw.extend(0.25f32.to_le_bytes());
    raw.extend((-1.5f32).to_le_bytes());
    raw.extend(2u32.to_le_bytes());
    raw.extend(b"ok");
    assert_eq!(&body[header_len..], &raw[..]);
}

#[test]
fn deep_nesting_is_refused_before_parsing() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let body =
        format!(r#"{{"inputs":[{{"name":"x","datatype":"FP32","shape":[1],"data":{deep}}}]}}"#);
    assert_eq!(decode(&body), Err(DecodeError::TooDeep { limit: 16 }));
    // Brackets inside strings do not count.
    let body = format!(
        r#"{{"id":"{}","inputs":[{{"name":"x","datatype":"FP32","shape":[1],"data":[1]}}]}}"#,
        "[".repeat(100)
    );
    assert!(decode(&body).is_ok());
    let escaped = r#"{"id":"\"[[[[[[[[[[[[[[[[[[[[","inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1]}]}"#;
    assert!(decode(escaped).is_ok());
}

#[test]
fn data_after_datatype_and_shape_is_parsed_in_one_pass() {
    let body = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2.5]},{"data":[3],"name":"k","datatype":"INT64","shape":[1]}]}"#;
    let wire = in_place::request(body, LIMITS).expect("read in one pass");
    // The first input's data came after its datatype and shape, the second's before them.
    assert!(
        matches!(&wire.inputs[0].data, Some(WireData::Parsed(TensorData::Fp32(v))) if v == &[1.0, 2.5])
    );
    assert!(matches!(&wire.inputs[1].data, Some(WireData::Raw(raw)) if raw.get() == "[3]"));
    let request = decode_request(body, LIMITS).unwrap();
    assert_eq!(request.inputs[1].data, TensorData::Int64(vec![3]));
    // A datatype with escapes cannot be borrowed from the body: the general decode reads it.
    let escaped =
        br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP\u0033\u0032","data":[1]}]}"#;
    assert!(in_place::request(escaped, LIMITS).is_none());
    let request = decode_request(escaped, LIMITS).unwrap();
    assert_eq!(request.inputs[0].data, TensorData::Fp32(vec![1.0]));
    // Bad data is left to the general decode, which names the input.
    let bad = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,"a"]}]}"#;
    assert!(in_place::request(bad, LIMITS).is_none());
    assert!(
        matches!(decode_request(bad, LIMITS), Err(DecodeError::Data { input, .. }) if input == "x")
    );
}

#[test]
fn room_reserved_for_data_is_bounded_by_the_body_for_all_inputs_together() {
    // Three inputs each declare 1,000 elements and send one. Reserved up front: at most the body's size in elements,
    // all inputs together (here all of it goes to the first; the others grow by what they hold), not that much for
    // each input.
    let input =
        |name: &str| format!(r#"{{"name":"{name}","datatype":"FP32","shape":[1000],"data":[1]}}"#);
    let body = format!(
        r#"{{"inputs":[{},{},{}]}}"#,
        input("a"),
        input("b"),
        input("c")
    );
    let wire = in_place::request(body.as_bytes(), LIMITS).expect("read in one pass");
    let reserved: usize = wire
        .inputs
        .iter()
        .map(|i| match &i.data {
            Some(WireData::Parsed(TensorData::Fp32(v))) => v.capacity(),
            _ => panic!("input {} not parsed in place", i.name),
        })
        .sum();
    assert!(
        reserved < 2 * body.len(),
        "{reserved} elements reserved for a {}-byte body",
        body.len()
    );
    // The request itself is refused as before: the shape needs 1,000 elements.
    assert!(matches!(
        decode_request(body.as_bytes(), LIMITS),
        Err(DecodeError::ElementCount {
            expected: 1000,
            given: 1,
            ..
        })
    ));
}

mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::model::{IoKind, IoSpec, Signature};
    use crate::validate::validate;

    fn signature() -> Signature {
        Signature {
            inputs: vec![IoSpec {
                name: "x".into(),
                kind: IoKind::Tensor {
                    datatype: DataType::Fp32,
                    shape: vec![-1, 4],
                },
            }],
            outputs: vec![IoSpec {
                name: "y".into(),
                kind: IoKind::Tensor {
                    datatype: DataType::Int64,
                    shape: vec![-1],
                },
            }],
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("inputs".to_string()),
                        Just("name".to_string()),
                        Just("datatype".to_string()),
                        Just("shape".to_string()),
                        Just("data".to_string()),
                        Just("outputs".to_string()),
                        ".{0,4}"
                    ],
                    inner,
                    0..6,
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Arbitrary bytes never panic: they decode or give a DecodeError (a 400).
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(request) = decode_request(&bytes, LIMITS) {
                let _ = validate(&signature(), &request);
            }
        }

        /// Arbitrary JSON (biased towards V2 field names) decodes and validates without panicking.
        #[test]
        fn arbitrary_json_never_panics(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap();
            if let Ok(request) = decode_request(&body, LIMITS) {
                let _ = validate(&signature(), &request);
            }
        }

        /// Structurally valid requests with arbitrary shapes, datatypes and data never panic either.
        #[test]
        fn arbitrary_v2_requests_never_panic(
            shape in proptest::collection::vec(any::<i64>(), 0..5),
            datatype in prop_oneof![
                Just("FP32".to_string()), Just("INT64".to_string()), Just("UINT8".to_string()),
                Just("BOOL".to_string()), Just("BYTES".to_string()), Just("FP16".to_string()), ".{0,5}"
            ],
            data in json_value(),
        ) {
            let body = serde_json::json!({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]});
            if let Ok(request) = decode_request(&serde_json::to_vec(&body).unwrap(), LIMITS) {
                let _ = validate(&signature(), &request);
            }
        }
    }

    /// One input object as JSON text: its fields in any order, some missing, some repeated, with data that may or may
    /// not fit the datatype and shape.
    fn input_object() -> impl Strategy<Value = String> {
        let name = prop_oneof![4 => Just(r#""x""#), 1 => Just(r#""a\"b""#), 1 => Just("7")]
            .prop_map(str::to_owned);
        let datatype = prop_oneof![
            Just("FP32"),
            Just("INT64"),
            Just("UINT8"),
            Just("FP16"),
            Just("INT8"),
            Just("BOOL"),
            Just("BYTES"),
            Just("NOPE"),
        ]
        .prop_map(|d| format!("\"{d}\""));
        let element = prop_oneof![
            6 => prop_oneof![Just("0"), Just("1"), Just("-1")],
            1 => prop_oneof![
                Just("1.5"), Just("300"), Just("1e40"), Just(r#""a""#), Just("true"), Just("null"),
            ],
        ];
        // A shape, and data holding about as many elements as it needs (one fewer, exactly, one more), flat or as
        // rows; sometimes a shape or data of the wrong kind altogether.
        let shape_and_data = proptest::collection::vec(0usize..4, 0..3).prop_flat_map(move |shape| {
            let needed: usize = shape.iter().product();
            let count = prop_oneof![Just(needed.saturating_sub(1)), Just(needed), Just(needed + 1)];
            let element = element.clone();
            // Separators as compact writers, Python's `json.dumps` and pretty-printers write them.
            let separator = prop_oneof![3 => Just(","), 2 => Just(", "), 1 => Just(" ,"), 1 => Just(",\n  ")];
            count.prop_flat_map(move |n| (proptest::collection::vec(element.clone(), n), separator.clone()))
                .prop_flat_map(move |(elements, separator)| {
                    let flat = format!("[{}]", elements.join(separator));
                    let rows = format!(
                        "[{}]",
                        elements.iter().map(|e| format!("[{e}]")).collect::<Vec<_>>().join(separator)
                    );
                    let odd = prop_oneof![Just("null"), Just("1"), Just("{}")].prop_map(str::to_owned);
                    (
                        prop_oneof![4 => Just(format!("{shape:?}")), 1 => Just("[1.5]".to_owned()),
                            1 => Just("[-1,2]".to_owned()), 1 => Just("[2000]".to_owned())],
                        prop_oneof![4 => Just(flat), 2 => Just(rows), 1 => odd],
                    )
                })
        });
        let parameters = prop_oneof![
            Just("{}"),
            Just(r#"{"binary_data_size":4}"#),
            Just("null"),
            Just(r#"{"other":[1]}"#)
        ];
        // Mostly once, as clients send it; sometimes missing or twice.
        let field = |key: &'static str, value: BoxedStrategy<String>| {
            let entries = prop_oneof![18 => Just(1usize), 1 => Just(0), 1 => Just(2)];
            entries.prop_flat_map(move |n| {
                proptest::collection::vec(
                    value.clone().prop_map(move |v| format!(r#""{key}":{v}"#)),
                    n,
                )
            })
        };
        (
            field("name", name.boxed()),
            field("datatype", datatype.boxed()),
            shape_and_data,
            field("parameters", parameters.prop_map(str::to_owned).boxed()),
            field("extra", Just(r#"{"k":[1,{"z":"]"}]}"#.to_owned()).boxed()),
        )
            .prop_map(|(name, datatype, (shape, data), parameters, extra)| {
                let (shape, data) = (
                    vec![format!(r#""shape":{shape}"#)],
                    vec![format!(r#""data":{data}"#)],
                );
                [name, datatype, shape, parameters, extra, data].concat()
            })
            // As clients write them (data last), or in any order.
            .prop_flat_map(|fields| prop_oneof![Just(fields.clone()), Just(fields).prop_shuffle()])
            .prop_map(|fields| format!("{{{}}}", fields.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The one-pass decode gives what the general decode gives, for every request it reads (the others go to
        /// the general decode anyway).
        #[test]
        fn the_one_pass_decode_agrees_with_the_general_decode(
            inputs in proptest::collection::vec(input_object(), 0..3),
            outputs in prop_oneof![Just(""), Just(r#","outputs":[{"name":"y","parameters":{"binary_data":true}}]"#)],
        ) {
            let body = format!(r#"{{"id":"r","inputs":[{}]{outputs}}}"#, inputs.join(","));
            let max = LIMITS.max_elements;
            let general = general(body.as_bytes()).and_then(|wire| complete(wire, &[], max));
            if let Some(wire) = in_place::request(body.as_bytes(), LIMITS) {
                prop_assert_eq!(complete(wire, &[], max), general);
            }
        }
    }

    fn tensor_data() -> impl Strategy<Value = TensorData> {
        let n = 0..40usize;
        prop_oneof![
            proptest::collection::vec(any::<f32>(), n.clone()).prop_map(TensorData::Fp32),
            proptest::collection::vec(any::<u16>().prop_map(f16::from_bits), n.clone())
                .prop_map(TensorData::Fp16),
            proptest::collection::vec(any::<f64>(), n.clone()).prop_map(TensorData::Fp64),
            proptest::collection::vec(any::<i64>(), n.clone()).prop_map(TensorData::Int64),
            proptest::collection::vec(any::<bool>(), n.clone()).prop_map(TensorData::Bool),
            proptest::collection::vec("[a\"\\\\\u{1}\u{7f}é ]{0,6}", n).prop_map(TensorData::Bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The response writer writes what serde writes for the same response (compared as parsed JSON: a float
        /// may be written in another exponent form, with the same digits).
        #[test]
        fn the_response_writer_agrees_with_serde(
            name in "[a\"\\\\\u{1}é]{0,6}",
            id in proptest::option::of("[a\"\\\\\u{1f}]{0,6}"),
            outputs in proptest::collection::vec(
                ("[a-z\"\\\\\n]{0,6}", tensor_data()).prop_map(|(name, data)| Tensor {
                    name,
                    shape: vec![data.len()],
                    data,
                }),
                0..4,
            ),
        ) {
            let response = InferResponse { model_name: &name, model_version: 7, id, outputs };
            let written: serde_json::Value = serde_json::from_slice(&encode_response(&response).unwrap()).unwrap();
            let serde: serde_json::Value = serde_json::from_slice(&serde_json::to_vec(&response).unwrap()).unwrap();
            prop_assert_eq!(written, serde);
        }
    }
}
