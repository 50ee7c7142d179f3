//! The fast path for numeric data, the bulk of large JSON requests (images, embeddings): an input's `data` (flat or
//! nested arrays of numbers) read from the body in one loop at the reader's position. Each number is checked against
//! JSON's number grammar as its digits are read; a decimal of at most 19 digits without an exponent is converted
//! exactly with one division (Clinger's fast path), any other number by the standard library's correct parser.
//! Floats are read as f64 and narrowed for FP32; integers must be plain integers in the datatype's range. That is
//! what the general reader accepts, correctly rounded (serde_json's reader can be one unit off in an f64's last
//! place). Anything else (strings, `null`, an exponent on an integer, more elements than the shape declares) gives
//! `None`, and the general reader reads the request and words the error.

use crate::tensor::{DataType, TensorData};

/// Reads numeric `data` of `dtype` from `body` at `*at` (just before the value), at most `expected` elements with
/// room for `capacity` reserved and arrays nested at most `max_nesting` deep, and moves `*at` past it; `None` for a
/// datatype this path does not read (BOOL, FP16, BYTES) or anything it does not accept.
pub(super) fn read_numbers(
    body: &[u8],
    at: &mut usize,
    dtype: DataType,
    limits: (usize, usize, usize),
) -> Option<TensorData> {
    fn floats<T>(
        body: &[u8],
        at: &mut usize,
        limits: (usize, usize, usize),
        narrow: impl Fn(f64) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(limits.1);
        scan(body, at, limits, |s| {
            let (value, len) = float(s)?;
            out.push(narrow(value)?);
            Some(len)
        })?;
        Some(out)
    }
    fn integers<T: TryFrom<i64>>(
        body: &[u8],
        at: &mut usize,
        limits: (usize, usize, usize),
    ) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(limits.1);
        scan(body, at, limits, |s| {
            let len = number_len(s)?;
            out.push(T::try_from(integer(&s[..len])?).ok()?);
            Some(len)
        })?;
        Some(out)
    }
    let l = limits;
    Some(match dtype {
        DataType::Fp32 => TensorData::Fp32(floats(body, at, l, |x| {
            Some(x as f32).filter(|x| x.is_finite())
        })?),
        DataType::Fp64 => TensorData::Fp64(floats(body, at, l, Some)?),
        DataType::Int8 => TensorData::Int8(integers(body, at, l)?),
        DataType::Int16 => TensorData::Int16(integers(body, at, l)?),
        DataType::Int32 => TensorData::Int32(integers(body, at, l)?),
        DataType::Int64 => TensorData::Int64(integers(body, at, l)?),
        DataType::Uint8 => TensorData::Uint8(integers(body, at, l)?),
        DataType::Uint16 => TensorData::Uint16(integers(body, at, l)?),
        DataType::Uint32 => TensorData::Uint32(integers(body, at, l)?),
        DataType::Uint64 => TensorData::Uint64(integers(body, at, l)?),
        DataType::Bool | DataType::Fp16 | DataType::Bytes => return None,
    })
}

/// Walks one value (nested arrays of numbers, or one number) from `*at`, handing the text from each number on to
/// `take` (which reads the number and says how long it was), and leaves `*at` just past the value; `None` at anything
/// else, at a number `take` refuses, past `expected` numbers or past `max_nesting` arrays deep.
fn scan(
    body: &[u8],
    at: &mut usize,
    (expected, _, max_nesting): (usize, usize, usize),
    mut take: impl FnMut(&[u8]) -> Option<usize>,
) -> Option<()> {
    let mut i = skip_space(body, *at);
    let mut depth = 0usize;
    let mut count = 0usize;
    // Just after `[`: the array may close at once.
    let mut opened = false;
    loop {
        match *body.get(i)? {
            b'[' => {
                depth += 1;
                if depth > max_nesting {
                    return None;
                }
                i = skip_space(body, i + 1);
                opened = true;
                continue;
            }
            b']' if opened => {}
            _ => {
                // Numbers separated by bare commas, the common case, are read in this inner loop.
                loop {
                    count += 1;
                    if count > expected {
                        return None;
                    }
                    i += take(&body[i..])?;
                    match body.get(i..i + 2) {
                        Some([b',', b'0'..=b'9' | b'-']) => i += 1,
                        _ => break,
                    }
                }
            }
        }
        opened = false;
        // After a value: `,` and the next value, or `]`s closing arrays; the whole value ends at depth 0.
        loop {
            if depth == 0 {
                *at = i;
                return Some(());
            }
            i = skip_space(body, i);
            match *body.get(i)? {
                b',' => {
                    i = skip_space(body, i + 1);
                    break;
                }
                b']' => {
                    depth -= 1;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

fn skip_space(body: &[u8], mut i: usize) -> usize {
    while matches!(body.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// The length of the JSON number `s` starts with: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn number_len(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut at = usize::from(s.first() == Some(&b'-'));
    match s.get(at)? {
        b'0' => at += 1,
        b'1'..=b'9' => at += digits(at),
        _ => return None,
    }
    if s.get(at) == Some(&b'.') {
        let n = digits(at + 1);
        if n == 0 {
            return None;
        }
        at += 1 + n;
    }
    if matches!(s.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(s.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let n = digits(at);
        if n == 0 {
            return None;
        }
        at += n;
    }
    Some(at)
}

/// Powers of ten an f64 holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Appends the digits `s` has from `*at` on to `value` (wrapping past 19 digits), moving `*at` past them; returns
/// the value and how many digits there were.
#[inline]
fn append_digits(s: &[u8], at: &mut usize, mut value: u64) -> (u64, usize) {
    let start = *at;
    while let Some(&byte) = s.get(*at) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
        *at += 1;
    }
    (value, *at - start)
}

/// The f64 nearest the JSON number `s` starts with, and its length. Inlined into the reading loop: its result
/// then stays in registers.
#[inline(always)]
fn float(s: &[u8]) -> Option<(f64, usize)> {
    let negative = s.first() == Some(&b'-');
    let mut at = usize::from(negative);
    let first = *s.get(at)?;
    let (mut mantissa, whole) = append_digits(s, &mut at, 0);
    if whole == 0 || (whole > 1 && first == b'0') {
        return None;
    }
    let mut exponent = 0;
    if s.get(at) == Some(&b'.') {
        at += 1;
        let (value, fraction) = append_digits(s, &mut at, mantissa);
        if fraction == 0 {
            return None;
        }
        mantissa = value;
        exponent = fraction;
    }
    // More than 19 digits (leading zeros included; rare) may have wrapped the mantissa.
    if matches!(s.get(at), Some(b'e' | b'E'))
        || whole + exponent > 19
        || mantissa > 1 << 53
        || exponent >= POW10.len()
    {
        // An exponent part, or more than the fast path converts exactly: the standard library's parser.
        let len = number_len(s)?;
        let value = std::str::from_utf8(&s[..len]).ok()?.parse().ok()?;
        return Some((value, len));
    }
    let magnitude = mantissa as f64 / POW10[exponent];
    Some((if negative { -magnitude } else { magnitude }, at))
}

/// The JSON integer `token` (valid by [`number_len`]): without a fraction or exponent, and within i64.
fn integer(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    if digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str, dtype: DataType, expected: usize) -> Option<(TensorData, usize)> {
        let mut at = 0;
        let data = read_numbers(raw.as_bytes(), &mut at, dtype, (expected, expected, 8))?;
        Some((data, at))
    }

    /// The numbers of `raw` as the standard library parses them (correctly rounded).
    fn numbers(raw: &str) -> Vec<f64> {
        raw.split(['[', ']', ','])
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().unwrap())
            .collect()
    }

    #[test]
    fn numbers_are_read_as_the_general_reader_reads_them() {
        let cases = [
            "[1, -2.5, 0.1234, 3e2, -4.5E-1, 0, -0.0, 1e-45, 0.30000000000000004]",
            " [ [1,2] , [ 3 , 4 ] ]",
            "[[[0.5]], [[1.25]]]",
            "7",
            "[]",
            "[[], []]",
            "[1.0000000000000000000001, 123456789012345678901234567890, 9007199254740993]",
            "[0.000001, 123456.789, 1.7976931348623157e308, 4.9e-324]",
        ];
        for raw in cases {
            let want = numbers(raw);
            let (data, at) = read(raw, DataType::Fp64, 100).unwrap();
            assert_eq!(data, TensorData::Fp64(want.clone()), "{raw}");
            assert_eq!(at, raw.len(), "{raw}");
            if !raw.contains("e308") {
                let narrow: Vec<f32> = want.iter().map(|&x| x as f32).collect();
                assert_eq!(
                    read(raw, DataType::Fp32, 100).unwrap().0,
                    TensorData::Fp32(narrow)
                );
            }
        }
        // A value ends where its arrays close: the reader goes on from there.
        assert_eq!(read("[1, 2], \"x\"", DataType::Fp32, 2).unwrap().1, 6);
        assert_eq!(
            read("5}", DataType::Int64, 1).unwrap(),
            (TensorData::Int64(vec![5]), 1)
        );
        assert_eq!(
            read("[-128, 127]", DataType::Int8, 2).unwrap().0,
            TensorData::Int8(vec![-128, 127])
        );
        assert_eq!(
            read("[0, 255]", DataType::Uint8, 2).unwrap().0,
            TensorData::Uint8(vec![0, 255])
        );
    }

    #[test]
    fn anything_else_is_left_to_the_general_reader() {
        for raw in [
            "[1, \"2\"]",
            "[1, null]",
            "null",
            "[true]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[[1]",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[-]",
            "[NaN]",
            "[Infinity]",
            "[1e39]",
            "[1, 2, 3]",
            "",
            "[",
        ] {
            assert_eq!(read(raw, DataType::Fp32, 2), None, "{raw}");
        }
        for (raw, dtype) in [
            ("[1.5]", DataType::Int32),
            ("[1e2]", DataType::Int32),
            ("[300]", DataType::Uint8),
            ("[-1]", DataType::Uint64),
            ("[12345678901234567890]", DataType::Uint64),
            ("[1]", DataType::Bool),
            ("[1]", DataType::Fp16),
        ] {
            assert_eq!(read(raw, dtype, 2), None, "{raw}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Every JSON number, however long its parts, reads as the standard library parses it, and ends where
        /// JSON's grammar says.
        #[test]
        fn every_json_number_reads_correctly_rounded(
            negative in proptest::bool::ANY,
            whole in "0|[1-9][0-9]{0,24}",
            fraction in proptest::option::of("[0-9]{1,30}"),
            exponent in proptest::option::of("[eE][+-]?[0-9]{1,3}"),
            after in "[],] ?",
        ) {
            let number = format!(
                "{}{whole}{}{}",
                if negative { "-" } else { "" },
                fraction.map(|f| format!(".{f}")).unwrap_or_default(),
                exponent.unwrap_or_default(),
            );
            let text = format!("{number}{after}");
            let want: f64 = number.parse().unwrap();
            let (value, len) = float(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(len, number.len());
            proptest::prop_assert_eq!(value.to_bits(), want.to_bits(), "{}", number);
        }
    }
}
