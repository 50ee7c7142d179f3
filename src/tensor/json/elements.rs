//! Parsing one input's `data` (flat or nested JSON arrays) straight into a typed buffer, checking each element's
//! kind against the datatype (a string in FP32, 300 in UINT8, 1.5 in INT32 are errors) and stopping at the element
//! count the shape declares.

use std::fmt;

use half::f16;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use crate::tensor::{DataType, TensorData};

pub(super) enum ParseError {
    /// More elements than the shape declares (parsing stopped there).
    TooMany,
    Json(String),
}

/// Parses `raw` (a JSON array, possibly nested, or a single scalar) into a buffer of `dtype`.
pub(super) fn parse_data(
    raw: &str,
    dtype: DataType,
    expected: usize,
) -> Result<TensorData, ParseError> {
    let mut overflow = false;
    let mut de = serde_json::Deserializer::from_str(raw);
    // Preallocate what the (already bounded) shape declares, but not absurdly much for tiny bodies.
    let result = read(&mut de, dtype, expected, raw.len(), &mut overflow)
        .and_then(|data| de.end().map(|()| data));
    match result {
        Ok(data) => Ok(data),
        Err(_) if overflow => Err(ParseError::TooMany),
        Err(e) => Err(ParseError::Json(e.to_string())),
    }
}

/// Reads a JSON value (nested arrays or one scalar) from `d` into a buffer of `dtype`, stopping with an error (and
/// `overflow` set) past `expected` elements.
fn read<'de, D: de::Deserializer<'de>>(
    d: D,
    dtype: DataType,
    expected: usize,
    capacity: usize,
    overflow: &mut bool,
) -> Result<TensorData, D::Error> {
    fn typed<'de, T: Element, D: de::Deserializer<'de>>(
        d: D,
        expected: usize,
        capacity: usize,
        overflow: &mut bool,
    ) -> Result<Vec<T>, D::Error> {
        let mut out = Vec::with_capacity(expected.min(capacity));
        let seed = Flatten {
            out: &mut out,
            limit: expected,
            overflow,
        };
        seed.deserialize(d)?;
        Ok(out)
    }
    let (n, c, o) = (expected, capacity, overflow);
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(typed(d, n, c, o)?),
        DataType::Uint8 => TensorData::Uint8(typed(d, n, c, o)?),
        DataType::Uint16 => TensorData::Uint16(typed(d, n, c, o)?),
        DataType::Uint32 => TensorData::Uint32(typed(d, n, c, o)?),
        DataType::Uint64 => TensorData::Uint64(typed(d, n, c, o)?),
        DataType::Int8 => TensorData::Int8(typed(d, n, c, o)?),
        DataType::Int16 => TensorData::Int16(typed(d, n, c, o)?),
        DataType::Int32 => TensorData::Int32(typed(d, n, c, o)?),
        DataType::Int64 => TensorData::Int64(typed(d, n, c, o)?),
        DataType::Fp16 => TensorData::Fp16(typed(d, n, c, o)?),
        DataType::Fp32 => TensorData::Fp32(typed(d, n, c, o)?),
        DataType::Fp64 => TensorData::Fp64(typed(d, n, c, o)?),
        DataType::Bytes => TensorData::Bytes(typed(d, n, c, o)?),
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
