//! The one-pass decode of a V2 JSON request: a reader that owns its position in the body. An input whose `datatype`
//! and `shape` come before its `data` (the order every client we know writes) has numeric data read straight into
//! the typed buffer at that position (`numbers.rs`), with no second pass over it; its other fields, and every field
//! of the request but `inputs`, are small and are handed to serde's readers as slices of the body. An input whose data
//! comes first keeps it raw, as in the general decode.
//!
//! A request this path cannot read gives `None` (a string with escapes where a name or datatype is borrowed, an
//! unusual number, any error): serde's derived readers then read it again, and word the error. So both paths accept
//! the same requests with the same result, and every error message comes from one place.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::elements::parse_data;
use super::numbers::read_numbers;
use super::{DecodeLimits, WireData, WireInput, WireOutput, WireParameters, WireRequest};
use crate::tensor::DataType;

/// Reads `body` in one pass, or `None` when it is not a request this path reads (the general decode then does).
pub(super) fn request(body: &[u8], limits: DecodeLimits) -> Option<WireRequest<'_>> {
    let mut reader = Reader {
        body,
        at: 0,
        max_elements: limits.max_elements,
        max_depth: limits.max_depth,
        room: body.len(),
    };
    let wire = reader.request()?;
    reader.space();
    (reader.at == body.len()).then_some(wire)
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    /// Most elements one input may declare.
    max_elements: usize,
    /// Deepest nesting of arrays and objects (`limits.max_json_depth`): a request nested deeper is left to the general
    /// decode, which refuses it.
    max_depth: usize,
    /// Elements that may still be reserved up front, all inputs together. It starts at the body's length (each
    /// element takes at least a byte), so however many inputs declare large shapes, a body cannot make the server
    /// reserve more than its own size allows.
    room: usize,
}

/// What an input's data is read into, when its datatype and shape are known and within the limits.
struct Seed {
    dtype: DataType,
    expected: usize,
    capacity: usize,
}

/// Parses a slice of the body with serde (a small field), or gives `None`.
fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    serde_json::from_str(text).ok()
}

/// Fills a field once; a second occurrence is left to the general reader, which refuses it.
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
}

impl<'a> Reader<'a> {
    fn space(&mut self) {
        while matches!(self.body.get(self.at), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.body.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string without escapes or control characters, borrowed from the body.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = self.body[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.body[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        std::str::from_utf8(&self.body[start..start + len]).ok()
    }

    /// The text of the value at the position (not checked: serde reads it next), moving past it; `base` is the
    /// depth it sits at.
    fn value_text(&mut self, base: usize) -> Option<&'a str> {
        self.space();
        let start = self.at;
        let mut depth = 0usize;
        loop {
            match *self.body.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    loop {
                        match *self.body.get(self.at)? {
                            b'\\' => self.at += 2,
                            b'"' => break,
                            _ => self.at += 1,
                        }
                    }
                    self.at += 1;
                }
                b'[' | b'{' => {
                    depth += 1;
                    if base + depth > self.max_depth {
                        return None;
                    }
                    self.at += 1;
                }
                b']' | b'}' if depth > 0 => {
                    depth -= 1;
                    self.at += 1;
                }
                b',' | b']' | b'}' if depth == 0 => break,
                _ => self.at += 1,
            }
            if depth == 0 && matches!(self.body.get(self.at), Some(b',' | b']' | b'}') | None) {
                break;
            }
        }
        std::str::from_utf8(&self.body[start..self.at]).ok()
    }

    /// An object at `depth`: `member` reads each value after its key; `None` stops the read.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
    ) -> Option<()> {
        if depth > self.max_depth {
            return None;
        }
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.plain_string()?;
            self.eat(b':')?;
            member(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn request(&mut self) -> Option<WireRequest<'a>> {
        let (mut id, mut inputs, mut outputs, mut parameters) = (None, None, None, None);
        self.object(1, |r, key| match key {
            "id" => set(&mut id, parse::<Option<String>>(r.value_text(1)?)?),
            "inputs" => set(&mut inputs, r.inputs()?),
            "outputs" => set(
                &mut outputs,
                parse::<Option<Vec<WireOutput>>>(r.value_text(1)?)?,
            ),
            "parameters" => set(&mut parameters, parse::<WireParameters>(r.value_text(1)?)?),
            _ => parse::<IgnoredAny>(r.value_text(1)?).map(drop),
        })?;
        Some(WireRequest {
            id: id.flatten(),
            inputs: inputs?,
            outputs: outputs.flatten(),
            parameters: parameters.unwrap_or_default(),
        })
    }

    fn inputs(&mut self) -> Option<Vec<WireInput<'a>>> {
        if self.max_depth < 2 {
            return None;
        }
        self.eat(b'[')?;
        let mut inputs = Vec::new();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(inputs);
        }
        loop {
            inputs.push(self.input()?);
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(inputs);
                }
                _ => return None,
            }
        }
    }

    fn input(&mut self) -> Option<WireInput<'a>> {
        let (mut name, mut shape, mut datatype, mut data, mut parameters) =
            (None, None, None, None, None);
        self.object(3, |r, key| match key {
            "name" => set(&mut name, parse::<String>(r.value_text(3)?)?),
            "shape" => set(&mut shape, parse::<Vec<i64>>(r.value_text(3)?)?),
            "datatype" => set(&mut datatype, r.plain_string()?),
            "data" => {
                let value = match r.seed(datatype, shape.as_deref()) {
                    Some(seed) => Some(WireData::Parsed(r.data(seed)?)),
                    // `null` is no data, as in the derived reader.
                    None => parse::<Option<&RawValue>>(r.value_text(3)?)?.map(WireData::Raw),
                };
                set(&mut data, value)
            }
            "parameters" => set(&mut parameters, parse::<WireParameters>(r.value_text(3)?)?),
            _ => parse::<IgnoredAny>(r.value_text(3)?).map(drop),
        })?;
        Some(WireInput {
            name: name?,
            shape: shape?,
            datatype: Cow::Borrowed(datatype?),
            data: data.flatten(),
            parameters: parameters.unwrap_or_default(),
        })
    }

    /// Where data of `datatype` and `shape` is read into, when both are known and within the limits.
    fn seed(&mut self, datatype: Option<&str>, shape: Option<&[i64]>) -> Option<Seed> {
        let dtype = DataType::parse(datatype?)?;
        let expected = shape?.iter().try_fold(1usize, |count, &d| {
            count.checked_mul(usize::try_from(d).ok()?)
        })?;
        if expected > self.max_elements {
            return None;
        }
        let capacity = expected.min(self.room);
        self.room -= capacity;
        Some(Seed {
            dtype,
            expected,
            capacity,
        })
    }

    /// An input's data: numbers at the position; other datatypes (BOOL, FP16, BYTES) through serde.
    fn data(&mut self, seed: Seed) -> Option<super::TensorData> {
        self.space();
        // The data sits in an input object, three levels deep.
        let max_nesting = self.max_depth.saturating_sub(3);
        let limits = (seed.expected, seed.capacity, max_nesting);
        if let Some(data) = read_numbers(self.body, &mut self.at, seed.dtype, limits) {
            return Some(data);
        }
        if !matches!(
            seed.dtype,
            DataType::Bool | DataType::Fp16 | DataType::Bytes
        ) {
            return None;
        }
        parse_data(self.value_text(3)?, seed.dtype, seed.expected).ok()
    }
}
