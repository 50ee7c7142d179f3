//! Writing a V2 JSON response straight into its buffer.
//!
//! The envelope and each output's name, datatype and shape are written by hand (a name needs escaping only when it
//! holds a quote, a backslash or a control character, and then serde_json escapes it). FP32 and FP16 data, the
//! bulk of large responses, are written by ryu's shortest round-trip formatting, element after element into the one
//! buffer; a value that is not finite is written `null`, as serde_json writes it. Every other datatype goes through
//! serde (`TensorData`'s `Serialize`), which writes the same JSON it always has. The header of a binary response is
//! written here too: an output sent as raw bytes carries `parameters.binary_data_size` in place of `data`.

use super::InferResponse;
use crate::tensor::{Tensor, TensorData};

/// Appends `response` as V2 JSON to `out`. `raw_sizes[i]`, when given, is the size of output `i`'s raw bytes after
/// the header (Triton's binary extension), written in place of its data.
pub(super) fn response(
    response: &InferResponse<'_>,
    raw_sizes: &[Option<usize>],
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"model_name\":");
    string(response.model_name, out)?;
    out.extend_from_slice(b",\"model_version\":\"");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(response.model_version)
            .as_bytes(),
    );
    out.push(b'"');
    if let Some(id) = &response.id {
        out.extend_from_slice(b",\"id\":");
        string(id, out)?;
    }
    out.extend_from_slice(b",\"outputs\":[");
    for (i, tensor) in response.outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        self::tensor(tensor, raw_sizes.get(i).copied().flatten(), out)?;
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

fn tensor(t: &Tensor, raw_size: Option<usize>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"name\":");
    string(&t.name, out)?;
    out.extend_from_slice(b",\"datatype\":\"");
    out.extend_from_slice(t.datatype().as_str().as_bytes());
    out.extend_from_slice(b"\",\"shape\":[");
    let mut digits = itoa::Buffer::new();
    for (i, d) in t.shape.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(digits.format(*d).as_bytes());
    }
    if let Some(size) = raw_size {
        out.extend_from_slice(b"],\"parameters\":{\"binary_data_size\":");
        out.extend_from_slice(digits.format(size).as_bytes());
        out.extend_from_slice(b"}}");
        return Ok(());
    }
    out.extend_from_slice(b"],\"data\":");
    match &t.data {
        TensorData::Fp32(v) => floats(v.iter().copied(), out),
        TensorData::Fp16(v) => floats(v.iter().map(|x| x.to_f32()), out),
        other => serde_json::to_writer(&mut *out, other)?,
    }
    out.push(b'}');
    Ok(())
}

/// A JSON array of floats, each in its shortest round-trip form.
fn floats(values: impl Iterator<Item = f32>, out: &mut Vec<u8>) {
    out.push(b'[');
    let mut digits = ryu::Buffer::new();
    for x in values {
        if x.is_finite() {
            out.extend_from_slice(digits.format_finite(x).as_bytes());
        } else {
            out.extend_from_slice(b"null");
        }
        out.push(b',');
    }
    // The last comma becomes the closing bracket (an empty array has only its opening one).
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.push(b']');
}

/// A JSON string: copied as it is when nothing in it needs escaping, else escaped by serde_json.
fn string(s: &str, out: &mut Vec<u8>) -> serde_json::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        Ok(())
    } else {
        serde_json::to_writer(out, s)
    }
}
