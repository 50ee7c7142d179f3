//! The one-pass decode of a V2 JSON request. An input whose `datatype` and `shape` come before its `data` (the order
//! every client we know writes) has its data parsed straight into the typed buffer while the request is read, rather
//! than kept as raw text and read a second time. Any other input keeps its data raw, as in the general decode.
//!
//! A request this path cannot read gives `None`: serde's derived readers then read it again, and word the error. So
//! both paths accept the same requests with the same result, and every error message comes from one place.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::elements::InPlace;
use super::{WireData, WireInput, WireOutput, WireParameters, WireRequest};
use crate::tensor::DataType;

/// Reads `body` in one pass, or `None` when it is not a request this path reads (the general decode then does).
pub(super) fn request(body: &[u8], max_elements: usize) -> Option<WireRequest<'_>> {
    let room = Cell::new(body.len());
    let bounds = Bounds {
        max_elements,
        room: &room,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let wire = RequestSeed(bounds).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(wire)
}

/// What inputs' data may take: at most `max_elements` elements each, and room reserved up front for at most `room`
/// elements more, all inputs together. `room` starts at the body's length (each element takes at least a byte), so
/// however many inputs declare large shapes, a body cannot make the server reserve more than its own size allows.
#[derive(Clone, Copy)]
struct Bounds<'r> {
    max_elements: usize,
    room: &'r Cell<usize>,
}

impl Bounds<'_> {
    /// The seed for data of `datatype` and `shape`, when both are known and within the limits.
    fn in_place(self, datatype: Option<&str>, shape: Option<&[i64]>) -> Option<InPlace> {
        let dtype = DataType::parse(datatype?)?;
        let expected = shape?.iter().try_fold(1usize, |count, &d| {
            count.checked_mul(usize::try_from(d).ok()?)
        })?;
        if expected > self.max_elements {
            return None;
        }
        let capacity = expected.min(self.room.get());
        self.room.set(self.room.get() - capacity);
        Some(InPlace {
            dtype,
            expected,
            capacity,
        })
    }
}

/// Fills a field once; a second occurrence is an error, as in the derived readers.
fn set<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::custom("duplicate field"));
    }
    Ok(())
}

struct RequestSeed<'r>(Bounds<'r>);

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = WireRequest<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = WireRequest<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut inputs, mut outputs, mut parameters) = (None, None, None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "id" => set(&mut id, map.next_value::<Option<String>>()?)?,
                "inputs" => set(&mut inputs, map.next_value_seed(InputsSeed(self.0))?)?,
                "outputs" => set(&mut outputs, map.next_value::<Option<Vec<WireOutput>>>()?)?,
                "parameters" => set(&mut parameters, map.next_value::<WireParameters>()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(WireRequest {
            id: id.flatten(),
            inputs: inputs.ok_or_else(|| de::Error::missing_field("inputs"))?,
            outputs: outputs.flatten(),
            parameters: parameters.unwrap_or_default(),
        })
    }
}

struct InputsSeed<'r>(Bounds<'r>);

impl<'de> DeserializeSeed<'de> for InputsSeed<'_> {
    type Value = Vec<WireInput<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_> {
    type Value = Vec<WireInput<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of inputs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut inputs = Vec::new();
        while let Some(input) = seq.next_element_seed(InputSeed(self.0))? {
            inputs.push(input);
        }
        Ok(inputs)
    }
}

struct InputSeed<'r>(Bounds<'r>);

impl<'de> DeserializeSeed<'de> for InputSeed<'_> {
    type Value = WireInput<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_> {
    type Value = WireInput<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut shape, mut datatype, mut data, mut parameters) =
            (None, None, None, None, None);
        while let Some(key) = map.next_key::<&str>()? {
            match key {
                "name" => set(&mut name, map.next_value::<String>()?)?,
                "shape" => set(&mut shape, map.next_value::<Vec<i64>>()?)?,
                // An escaped datatype cannot be borrowed: the general reader reads that request.
                "datatype" => set(&mut datatype, Cow::Borrowed(map.next_value::<&str>()?))?,
                "data" => {
                    let value = match self.0.in_place(datatype.as_deref(), shape.as_deref()) {
                        Some(seed) => Some(WireData::Parsed(map.next_value_seed(seed)?)),
                        // `null` is no data, as in the derived reader.
                        None => map.next_value::<Option<&RawValue>>()?.map(WireData::Raw),
                    };
                    set(&mut data, value)?;
                }
                "parameters" => set(&mut parameters, map.next_value::<WireParameters>()?)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(WireInput {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            data: data.flatten(),
            parameters: parameters.unwrap_or_default(),
        })
    }
}
