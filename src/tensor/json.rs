//! The V2 (Open Inference Protocol) JSON codec: request bodies in, response bodies out.
//!
//! An input's `data` is parsed straight into its typed buffer, flattening nested arrays row-major; no
//! `serde_json::Value` tree is built for tensor data. A request as clients write it (each input's `datatype` and
//! `shape` before its `data`) is read in one pass by a reader that owns its position in the body (`in_place.rs`), with
//! numbers read where they stand (`numbers.rs`); any other request goes to serde's derived readers, which keep the
//! data as raw JSON text (`RawValue`, a borrowed slice of the body) until datatype and shape are known, then parse it.
//! Element kinds are checked while parsing (a string in FP32, 300 in UINT8, 1.5 in INT32 are errors), and parsing
//! stops at the element count the shape declares, so a body cannot make the server allocate more than the shape
//! (itself bounded) allows. Nesting deeper than `limits.max_json_depth` is refused: by the one-pass reader as it
//! reads, and by `depth.rs` before the general decode.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use self::elements::{parse_data, ParseError};
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
    /// Borrowed from the body unless it has escapes.
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "raw_data")]
    data: Option<WireData<'a>>,
    #[serde(default)]
    parameters: WireParameters,
}

/// An input's `data`: kept as raw JSON text (a slice of the body) until the input's datatype and shape are known, or
/// already parsed, by the one-pass decode, when they came first.
enum WireData<'a> {
    Raw(&'a RawValue),
    Parsed(TensorData),
}

fn raw_data<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<WireData<'de>>, D::Error> {
    Option::<&'de RawValue>::deserialize(d).map(|raw| raw.map(WireData::Raw))
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
    // The one-pass decode reads what clients send, within the nesting limit; anything it cannot read is read again by
    // serde's derived readers, after the nesting check, and they word the error.
    let wire = match in_place::request(header, limits) {
        Some(wire) => wire,
        None => {
            if !depth::within(header, limits.max_depth) {
                return Err(DecodeError::TooDeep {
                    limit: limits.max_depth,
                });
            }
            general(header)?
        }
    };
    complete(wire, binary, limits.max_elements)
}

/// The general decode of a request's JSON: serde's derived readers, each input's data kept raw.
fn general(header: &[u8]) -> Result<WireRequest<'_>, DecodeError> {
    serde_json::from_slice(header).map_err(|e| DecodeError::Json(e.to_string()))
}

/// Checks and converts what either decode read: inputs into typed tensors (binary data taken in input order), the
/// outputs asked for.
fn complete(
    wire: WireRequest<'_>,
    binary: &[u8],
    max_elements: usize,
) -> Result<InferRequest, DecodeError> {
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
            given: datatype.into_owned(),
        });
    };
    let (shape, expected) = match checked_shape(raw_shape, max_elements) {
        Ok(checked) => checked,
        Err(reason) => return Err(reason.into_error(name, max_elements)),
    };
    if let Some(size) = parameters.binary_data_size {
        let data = take_binary(&name, dtype, size, expected, binary)?;
        return Ok(Tensor { name, shape, data });
    }
    let data = match data {
        None => return Err(DecodeError::MissingData { input: name }),
        Some(WireData::Parsed(data)) => data,
        Some(WireData::Raw(raw)) => {
            parse_data(raw.get(), dtype, expected).map_err(|e| match e {
                ParseError::TooMany => DecodeError::TooMuchData {
                    input: name.clone(),
                    shape: shape.clone(),
                    expected,
                },
                ParseError::Json(message) => DecodeError::Data {
                    input: name.clone(),
                    message,
                },
            })?
        }
    };
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

/// Why a declared shape was refused.
enum ShapeError {
    Negative(Vec<i64>),
    TooLarge(Vec<usize>),
}

impl ShapeError {
    fn into_error(self, input: String, limit: usize) -> DecodeError {
        match self {
            ShapeError::Negative(shape) => DecodeError::NegativeDimension { input, shape },
            ShapeError::TooLarge(shape) => DecodeError::TooManyElements {
                input,
                shape: shape
                    .iter()
                    .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
                    .collect(),
                limit,
            },
        }
    }
}

/// Input `input`'s declared shape as dimensions, and its element count, within `max_elements`; the error is the one
/// the JSON decode gives (the gRPC codec checks shapes with it too).
pub(super) fn input_shape(
    input: &str,
    raw_shape: Vec<i64>,
    max_elements: usize,
) -> Result<(Vec<usize>, usize), DecodeError> {
    checked_shape(raw_shape, max_elements)
        .map_err(|reason| reason.into_error(input.to_owned(), max_elements))
}

/// The declared shape as dimensions, and its element count, within `max_elements`.
fn checked_shape(
    raw_shape: Vec<i64>,
    max_elements: usize,
) -> Result<(Vec<usize>, usize), ShapeError> {
    if raw_shape.iter().any(|&d| d < 0) {
        return Err(ShapeError::Negative(raw_shape));
    }
    // Collected in place where `i64` and `usize` have one layout (no allocation); a dimension beyond `usize` (32-bit
    // targets) becomes `usize::MAX`, which the element count below refuses.
    let shape: Vec<usize> = raw_shape
        .into_iter()
        .map(|d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    match element_count(&shape) {
        Some(n) if n <= max_elements => Ok((shape, n)),
        _ => Err(ShapeError::TooLarge(shape)),
    }
}

/// An input's raw bytes (Triton's binary extension): the next `size` bytes of `binary`, which moves past them.
fn take_binary(
    input: &str,
    dtype: DataType,
    size: u64,
    expected: usize,
    binary: &mut &[u8],
) -> Result<TensorData, DecodeError> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size > binary.len() {
        return Err(DecodeError::Data {
            input: input.to_owned(),
            message: format!(
                "binary_data_size {size} is more than the {} bytes of binary data left",
                binary.len()
            ),
        });
    }
    let (bytes, rest) = binary.split_at(size);
    *binary = rest;
    super::binary::decode(dtype, bytes, expected).map_err(|message| DecodeError::Data {
        input: input.to_owned(),
        message,
    })
}

/// Encodes a response as V2 JSON into one buffer sized from the outputs up front (`write.rs`).
pub fn encode_response(response: &InferResponse) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(encoded_size(response));
    write::response(response, &[], &mut body)?;
    Ok(body)
}

/// About how many bytes a response's JSON encoding takes (at least what its binary encoding takes).
pub fn encoded_size(response: &InferResponse) -> usize {
    ENVELOPE_BYTES + response.outputs.iter().map(json_size).sum::<usize>()
}

/// About how many bytes a response's JSON takes besides its outputs (model name and version, id, punctuation).
const ENVELOPE_BYTES: usize = 96;

/// About how many bytes an output's JSON takes: name, datatype and shape, then about a dozen bytes per element (a
/// typical float and its comma).
fn json_size(t: &Tensor) -> usize {
    64 + t.name.len() + 8 * t.shape.len() + 12 * t.data.len()
}

/// Encodes a response in Triton's binary extension: the JSON header (outputs in `binary` carry
/// `parameters.binary_data_size` instead of `data`) followed by their raw bytes. Returns the body and the header
/// length (the `Inference-Header-Content-Length` value). The header is written by the JSON response's writer.
pub fn encode_binary_response(
    response: &InferResponse<'_>,
    binary: &BinaryOutputs,
) -> Result<(Vec<u8>, usize), serde_json::Error> {
    let mut raw = Vec::new();
    let raw_sizes: Vec<Option<usize>> = response
        .outputs
        .iter()
        .map(|tensor| {
            binary.wants(&tensor.name).then(|| {
                let start = raw.len();
                super::binary::encode(&tensor.data, &mut raw);
                raw.len() - start
            })
        })
        .collect();
    // An output sent as raw bytes takes a fixed-size entry in the header.
    let estimate = ENVELOPE_BYTES
        + response
            .outputs
            .iter()
            .zip(&raw_sizes)
            .map(|(t, size)| size.map_or_else(|| json_size(t), |_| 128))
            .sum::<usize>();
    let mut body = Vec::with_capacity(estimate + raw.len());
    write::response(response, &raw_sizes, &mut body)?;
    let header_len = body.len();
    body.extend_from_slice(&raw);
    Ok((body, header_len))
}

/// A V2 inference response, serialised straight from the typed output buffers.
#[derive(Debug, Serialize)]
pub struct InferResponse<'a> {
    pub model_name: &'a str,
    /// A number, written as the string V2 specifies.
    #[serde(serialize_with = "as_string")]
    pub model_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// Writes a number as a JSON string (formatted straight into the output).
fn as_string<S: serde::Serializer>(n: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(n)
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

mod depth;
mod elements;
mod in_place;
mod numbers;
#[cfg(test)]
mod tests;
mod write;
