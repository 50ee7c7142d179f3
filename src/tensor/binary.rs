//! Triton's binary tensor data extension: raw little-endian element bytes (BOOL one byte each, FP16 as IEEE half
//! bits, BYTES elements as a 4-byte little-endian length then the bytes), decoded straight into typed buffers and
//! encoded straight from them.

use half::f16;

use super::{DataType, TensorData};

/// Decodes `count` elements of `dtype` from exactly `bytes`; the error says what did not fit.
pub fn decode(dtype: DataType, bytes: &[u8], count: usize) -> Result<TensorData, String> {
    fn fixed<T, const N: usize>(
        bytes: &[u8],
        count: usize,
        read: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        if bytes.len() != count * N {
            return Err(format!(
                "binary data holds {} bytes, the shape needs {count} elements of {N} bytes",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|c| read(c.try_into().expect("chunks_exact")))
            .collect())
    }
    Ok(match dtype {
        DataType::Bool => TensorData::Bool(fixed::<bool, 1>(bytes, count, |[b]| b != 0)?),
        DataType::Uint8 => TensorData::Uint8(fixed(bytes, count, u8::from_le_bytes)?),
        DataType::Uint16 => TensorData::Uint16(fixed(bytes, count, u16::from_le_bytes)?),
        DataType::Uint32 => TensorData::Uint32(fixed(bytes, count, u32::from_le_bytes)?),
        DataType::Uint64 => TensorData::Uint64(fixed(bytes, count, u64::from_le_bytes)?),
        DataType::Int8 => TensorData::Int8(fixed(bytes, count, i8::from_le_bytes)?),
        DataType::Int16 => TensorData::Int16(fixed(bytes, count, i16::from_le_bytes)?),
        DataType::Int32 => TensorData::Int32(fixed(bytes, count, i32::from_le_bytes)?),
        DataType::Int64 => TensorData::Int64(fixed(bytes, count, i64::from_le_bytes)?),
        DataType::Fp16 => TensorData::Fp16(fixed(bytes, count, |b| {
            f16::from_bits(u16::from_le_bytes(b))
        })?),
        DataType::Fp32 => TensorData::Fp32(fixed(bytes, count, f32::from_le_bytes)?),
        DataType::Fp64 => TensorData::Fp64(fixed(bytes, count, f64::from_le_bytes)?),
        DataType::Bytes => TensorData::Bytes(strings(bytes, count)?),
    })
}

fn strings(mut bytes: &[u8], count: usize) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
    while !bytes.is_empty() {
        if out.len() == count {
            return Err(format!(
                "binary data holds more than the {count} BYTES elements the shape needs"
            ));
        }
        let (len, rest) = bytes
            .split_at_checked(4)
            .ok_or("a BYTES element's 4-byte length is cut short")?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (element, rest) = rest
            .split_at_checked(len)
            .ok_or("a BYTES element is shorter than its length")?;
        let text = std::str::from_utf8(element)
            .map_err(|_| "a BYTES element is not UTF-8 (ONNX strings are)")?;
        out.push(text.to_owned());
        bytes = rest;
    }
    if out.len() != count {
        return Err(format!(
            "binary data holds {} BYTES elements, the shape needs {count}",
            out.len()
        ));
    }
    Ok(out)
}

/// Appends the raw bytes of `data` to `out`.
pub fn encode(data: &TensorData, out: &mut Vec<u8>) {
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Uint16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int8(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp16(v) => le!(v.iter().map(|x| x.to_bits())),
        TensorData::Fp32(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bytes(v) => {
            for s in v {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        let cases = vec![
            TensorData::Bool(vec![true, false]),
            TensorData::Uint8(vec![0, 255]),
            TensorData::Uint16(vec![1, 65535]),
            TensorData::Uint32(vec![7, u32::MAX]),
            TensorData::Uint64(vec![u64::MAX, 0]),
            TensorData::Int8(vec![-128, 127]),
            TensorData::Int16(vec![-2, 2]),
            TensorData::Int32(vec![i32::MIN, 5]),
            TensorData::Int64(vec![i64::MIN, i64::MAX]),
            TensorData::Fp16(vec![f16::from_f32(1.5), f16::from_f32(-0.25)]),
            TensorData::Fp32(vec![1.5, -3.25]),
            TensorData::Fp64(vec![0.1, 1e300]),
            TensorData::Bytes(vec!["héllo".into(), String::new()]),
        ];
        for data in cases {
            let mut bytes = Vec::new();
            encode(&data, &mut bytes);
            assert_eq!(decode(data.datatype(), &bytes, 2).unwrap(), data);
        }
    }

    #[test]
    fn sizes_must_match() {
        assert!(decode(DataType::Fp32, &[0; 7], 2)
            .unwrap_err()
            .contains("7 bytes"));
        assert!(decode(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1)
            .unwrap_err()
            .contains("shorter"));
        assert!(
            decode(DataType::Bytes, &[1, 0, 0, 0, b'a', 1, 0, 0, 0, b'b'], 1)
                .unwrap_err()
                .contains("more than")
        );
        assert!(decode(DataType::Bytes, &[2, 0, 0, 0, 0xff, 0xfe], 1)
            .unwrap_err()
            .contains("UTF-8"));
    }
}
