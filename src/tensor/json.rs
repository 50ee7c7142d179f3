//! The V2 (Open Inference Protocol) JSON codec: request bodies in, response bodies out.
//!
//! Each input's `data` is first kept as raw JSON text (`RawValue`, a borrowed slice of the body) until its
//! `datatype` and `shape` are known, then parsed in one pass straight into the typed buffer, flattening nested
//! arrays row-major. No `serde_json::Value` tree is built for tensor data. Element kinds are checked while parsing
//! (a string in FP32, 300 in UINT8, 1.5 in INT32 are errors), and parsing stops at the element count the shape
//! declares, so a body cannot make the server allocate more than the shape (itself bounded) allows.

use std::fmt;

use half::f16;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{element_count, DataType, Tensor, TensorData};

/// Why a request body could not be decoded. Every message names the input concerned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("malformed inference request: {0}")]
    Json(String),
    #[error("request JSON is nested more than {limit} levels deep (limits.max_json_depth)")]
    TooDeep { limit: usize },
    #[error("input '{input}': unknown datatype '{given}'; expected one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES")]
    UnknownDatatype { input: String, given: String },
    #[error("input '{input}': shape {shape:?} has a negative dimension")]
    NegativeDimension { input: String, shape: Vec<i64> },
    #[error("input '{input}': shape {shape:?} holds more than {limit} elements, the server's limit (limits.max_tensor_elements)")]
    TooManyElements {
        input: String,
        shape: Vec<i64>,
        limit: usize,
    },
    #[error("input '{input}': no 'data' given (and no parameters.binary_data_size)")]
    MissingData { input: String },
    #[error("input '{input}': shape {shape:?} needs {expected} elements but 'data' holds {given}")]
    ElementCount {
        input: String,
        shape: Vec<usize>,
        expected: usize,
        given: usize,
    },
    #[error("input '{input}': shape {shape:?} needs {expected} elements but 'data' holds more")]
    TooMuchData {
        input: String,
        shape: Vec<usize>,
        expected: usize,
    },
    #[error("input '{input}': {message}")]
    Data { input: String, message: String },
}

/// A decoded V2 inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// Echoed in the response.
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Output names the client asked for; `None` means all outputs.
    pub outputs: Option<Vec<String>>,
    /// Which outputs the client wants as binary data (Triton's extension).
    pub binary_outputs: BinaryOutputs,
}

/// Outputs requested as raw binary data: all of them (`parameters.binary_data_output`) or those named with
/// `parameters.binary_data: true`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BinaryOutputs {
    pub all: bool,
    pub named: Vec<String>,
}

impl BinaryOutputs {
    pub fn wants(&self, output: &str) -> bool {
        self.all || self.named.iter().any(|n| n == output)
    }
}

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<WireInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<WireOutput>>,
    #[serde(default)]
    parameters: WireParameters,
}

/// The `parameters` objects sluice reads (others are ignored, as the protocol allows).
#[derive(Deserialize, Default)]
struct WireParameters {
    #[serde(default)]
    binary_data_output: bool,
    #[serde(default)]
    binary_data: bool,
    binary_data_size: Option<u64>,
}

#[derive(Deserialize)]
struct WireInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    parameters: WireParameters,
}

#[derive(Deserialize)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: WireParameters,
}

/// Bounds a decode enforces before it allocates.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Most elements one input may declare.
    pub max_elements: usize,
    /// Deepest nesting of JSON arrays and objects.
    pub max_depth: usize,
}

/// Decodes a V2 JSON inference request within `limits`.
pub fn decode_request(body: &[u8], limits: DecodeLimits) -> Result<InferRequest, DecodeError> {
    decode_with_binary(body, &[], limits)
}

/// Decodes a request of Triton's binary extension: `header` is the JSON part (the first
/// `Inference-Header-Content-Length` bytes), `binary` the raw tensor bytes of the inputs that declare
/// `parameters.binary_data_size`, in input order.
pub fn decode_with_binary(
    header: &[u8],
    binary: &[u8],
    limits: DecodeLimits,
) -> Result<InferRequest, DecodeError> {
    check_depth(header, limits.max_depth)?;
    let max_elements = limits.max_elements;
    let wire: WireRequest<'_> =
        serde_json::from_slice(header).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut rest = binary;
    let inputs = wire
        .inputs
        .into_iter()
        .map(|input| decode_input(input, max_elements, &mut rest))
        .collect::<Result<Vec<_>, _>>()?;
    if !rest.is_empty() {
        return Err(DecodeError::Json(format!(
            "{} bytes of binary data follow the inputs that declare binary_data_size",
            rest.len()
        )));
    }
    let named = wire
        .outputs
        .iter()
        .flatten()
        .filter(|o| o.parameters.binary_data)
        .map(|o| o.name.clone())
        .collect();
    Ok(InferRequest {
        id: wire.id,
        inputs,
        outputs: wire
            .outputs
            .map(|outs| outs.into_iter().map(|o| o.name).collect()),
        binary_outputs: BinaryOutputs {
            all: wire.parameters.binary_data_output,
            named,
        },
    })
}

/// Refuses bodies nested deeper than `max` before any parsing (strings are skipped, escapes honoured).
fn check_depth(body: &[u8], max: usize) -> Result<(), DecodeError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(DecodeError::TooDeep { limit: max });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn decode_input(
    input: WireInput<'_>,
    max_elements: usize,
    binary: &mut &[u8],
) -> Result<Tensor, DecodeError> {
    let WireInput {
        name,
        shape: raw_shape,
        datatype,
        data,
        parameters,
    } = input;
    let Some(dtype) = DataType::parse(&datatype) else {
        return Err(DecodeError::UnknownDatatype {
            input: name,
            given: datatype,
        });
    };
    let Ok(shape) = raw_shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
    else {
        return Err(DecodeError::NegativeDimension {
            input: name,
            shape: raw_shape,
        });
    };
    let expected = match element_count(&shape) {
        Some(n) if n <= max_elements => n,
        _ => {
            return Err(DecodeError::TooManyElements {
                input: name,
                shape: raw_shape,
                limit: max_elements,
            })
        }
    };
    if let Some(size) = parameters.binary_data_size {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > binary.len() {
            return Err(DecodeError::Data {
                input: name,
                message: format!(
                    "binary_data_size {size} is more than the {} bytes of binary data left",
                    binary.len()
                ),
            });
        }
        let (bytes, rest) = binary.split_at(size);
        *binary = rest;
        let data =
            super::binary::decode(dtype, bytes, expected).map_err(|message| DecodeError::Data {
                input: name.clone(),
                message,
            })?;
        return Ok(Tensor { name, shape, data });
    }
    let Some(raw) = data else {
        return Err(DecodeError::MissingData { input: name });
    };
    let data = parse_data(raw.get(), dtype, expected).map_err(|e| match e {
        ParseError::TooMany => DecodeError::TooMuchData {
            input: name.clone(),
            shape: shape.clone(),
            expected,
        },
        ParseError::Json(message) => DecodeError::Data {
            input: name.clone(),
            message,
        },
    })?;
    if data.len() != expected {
        return Err(DecodeError::ElementCount {
            input: name,
            shape,
            expected,
            given: data.len(),
        });
    }
    Ok(Tensor { name, shape, data })
}

enum ParseError {
    /// More elements than the shape declares (parsing stopped there).
    TooMany,
    Json(String),
}

/// Parses `raw` (a JSON array, possibly nested, or a single scalar) into a buffer of `dtype`.
fn parse_data(raw: &str, dtype: DataType, expected: usize) -> Result<TensorData, ParseError> {
    fn typed<T: Element>(raw: &str, expected: usize) -> Result<Vec<T>, ParseError> {
        // Preallocate what the (already bounded) shape declares, but not absurdly much for tiny bodies.
        let mut out = Vec::with_capacity(expected.min(raw.len()));
        let mut overflow = false;
        let mut de = serde_json::Deserializer::from_str(raw);
        let seed = Flatten {
            out: &mut out,
            limit: expected,
            overflow: &mut overflow,
        };
        let result = seed.deserialize(&mut de).and_then(|()| de.end());
        match result {
            Ok(()) => Ok(out),
            Err(_) if overflow => Err(ParseError::TooMany),
            Err(e) => Err(ParseError::Json(e.to_string())),
        }
    }
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(typed(raw, expected)?),
        DataType::Uint8 => TensorData::Uint8(typed(raw, expected)?),
        DataType::Uint16 => TensorData::Uint16(typed(raw, expected)?),
        DataType::Uint32 => TensorData::Uint32(typed(raw, expected)?),
        DataType::Uint64 => TensorData::Uint64(typed(raw, expected)?),
        DataType::Int8 => TensorData::Int8(typed(raw, expected)?),
        DataType::Int16 => TensorData::Int16(typed(raw, expected)?),
        DataType::Int32 => TensorData::Int32(typed(raw, expected)?),
        DataType::Int64 => TensorData::Int64(typed(raw, expected)?),
        DataType::Fp16 => TensorData::Fp16(typed(raw, expected)?),
        DataType::Fp32 => TensorData::Fp32(typed(raw, expected)?),
        DataType::Fp64 => TensorData::Fp64(typed(raw, expected)?),
        DataType::Bytes => TensorData::Bytes(typed(raw, expected)?),
    })
}

/// One JSON scalar as the parser met it.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'a str),
}

impl fmt::Display for Scalar<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "boolean {b}"),
            Scalar::Unsigned(n) => write!(f, "number {n}"),
            Scalar::Signed(n) => write!(f, "number {n}"),
            Scalar::Float(x) => write!(f, "number {x:?}"),
            Scalar::Str(s) => write!(f, "string {s:?}"),
        }
    }
}

/// A tensor element that can be read from one JSON scalar.
trait Element: Sized {
    const DATATYPE: DataType;
    fn from_scalar(s: Scalar<'_>) -> Option<Self>;
}

/// The largest integer an f64 holds exactly; integral floats beyond it are not trusted as integers.
const EXACT_F64_INT: f64 = 9_007_199_254_740_992.0;

fn integral(s: Scalar<'_>) -> Option<i128> {
    match s {
        Scalar::Unsigned(n) => Some(i128::from(n)),
        Scalar::Signed(n) => Some(i128::from(n)),
        Scalar::Float(x) if x.fract() == 0.0 && x.abs() <= EXACT_F64_INT => Some(x as i128),
        _ => None,
    }
}

macro_rules! integer_element {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DATATYPE: DataType = DataType::$d;
            fn from_scalar(s: Scalar<'_>) -> Option<Self> {
                integral(s).and_then(|n| <$t>::try_from(n).ok())
            }
        }
    )*};
}
integer_element!(u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64,
    i8 => Int8, i16 => Int16, i32 => Int32, i64 => Int64);

fn number(s: Scalar<'_>) -> Option<f64> {
    match s {
        Scalar::Unsigned(n) => Some(n as f64),
        Scalar::Signed(n) => Some(n as f64),
        Scalar::Float(x) => Some(x),
        _ => None,
    }
}

impl Element for f64 {
    const DATATYPE: DataType = DataType::Fp64;
    fn from_scalar(s: Scalar<'_>) -> Option<Self> {
        number(s)
    }
}

impl Element for f32 {
    const DATATYPE: DataType = DataType::Fp32;
    fn from_scalar(s: Scalar<'_>) -> Option<Self> {
        number(s).map(|x| x as f32).filter(|x| x.is_finite())
    }
}

impl Element for f16 {
    const DATATYPE: DataType = DataType::Fp16;
    fn from_scalar(s: Scalar<'_>) -> Option<Self> {
        number(s).map(f16::from_f64).filter(|x| x.is_finite())
    }
}

impl Element for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn from_scalar(s: Scalar<'_>) -> Option<Self> {
        match s {
            Scalar::Bool(b) => Some(b),
            _ => None,
        }
    }
}

impl Element for String {
    const DATATYPE: DataType = DataType::Bytes;
    fn from_scalar(s: Scalar<'_>) -> Option<Self> {
        match s {
            Scalar::Str(text) => Some(text.to_owned()),
            _ => None,
        }
    }
}

/// Walks nested JSON arrays, pushing each scalar into `out` (row-major order).
struct Flatten<'v, T> {
    out: &'v mut Vec<T>,
    limit: usize,
    /// Set when the data holds more elements than `limit`, so the caller can report counts, not JSON positions.
    overflow: &'v mut bool,
}

impl<T: Element> Flatten<'_, T> {
    fn push<E: de::Error>(self, s: Scalar<'_>) -> Result<(), E> {
        if self.out.len() >= self.limit {
            *self.overflow = true;
            return Err(E::custom("too many elements"));
        }
        let value = T::from_scalar(s)
            .ok_or_else(|| E::custom(format_args!("expected {} element, got {s}", T::DATATYPE)))?;
        self.out.push(value);
        Ok(())
    }
}

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} elements or (nested) arrays of them", T::DATATYPE)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            let next = Flatten {
                out: &mut *self.out,
                limit: self.limit,
                overflow: &mut *self.overflow,
            };
            if seq.next_element_seed(next)?.is_none() {
                return Ok(());
            }
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(Scalar::Unsigned(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::Signed(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(format_args!(
            "expected {} element, got null",
            T::DATATYPE
        )))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(de::Error::custom(format_args!(
            "expected {} element, got an object",
            T::DATATYPE
        )))
    }
}

/// Encodes a response in Triton's binary extension: the JSON header (outputs in `binary` carry
/// `parameters.binary_data_size` instead of `data`) followed by their raw bytes. Returns the body and the header
/// length (the `Inference-Header-Content-Length` value).
pub fn encode_binary_response(
    response: &InferResponse<'_>,
    binary: &BinaryOutputs,
) -> Result<(Vec<u8>, usize), serde_json::Error> {
    let mut raw = Vec::new();
    let outputs: Vec<serde_json::Value> = response
        .outputs
        .iter()
        .map(|t| {
            if binary.wants(&t.name) {
                let start = raw.len();
                super::binary::encode(&t.data, &mut raw);
                serde_json::json!({
                    "name": t.name, "datatype": t.datatype().as_str(), "shape": t.shape,
                    "parameters": { "binary_data_size": raw.len() - start },
                })
            } else {
                serde_json::to_value(t).unwrap_or(serde_json::Value::Null)
            }
        })
        .collect();
    let mut header = serde_json::json!({
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    });
    if let Some(id) = &response.id {
        header["id"] = serde_json::Value::from(id.as_str());
    }
    let mut body = serde_json::to_vec(&header)?;
    let header_len = body.len();
    body.extend_from_slice(&raw);
    Ok((body, header_len))
}

/// A V2 inference response, serialised straight from the typed output buffers.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    pub model_name: &'a str,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

impl Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Tensor", 4)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("datatype", self.datatype().as_str())?;
        s.serialize_field("shape", &self.shape)?;
        s.serialize_field("data", &self.data)?;
        s.end()
    }
}

#[cfg(test)]
mod tests;
