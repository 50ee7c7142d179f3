//! The fast path for numeric data, the bulk of large JSON requests (images, embeddings): an input's `data` (flat or
//! nested arrays of numbers) read from the body in one loop at the reader's position. Each number is checked against
//! JSON's number grammar as it is read: a number of up to seven bytes from one eight-byte word, a longer decimal
//! eight digits at a time, anything else byte by byte. Conversion is exact: an FP32 element is the correctly rounded
//! f64 narrowed (found with one multiplication, see [`narrow`]), an FP64 element is converted with one division for
//! up to 19 digits without an exponent (Clinger's fast path), any other number by the standard library's correct
//! parser; integers must be plain integers in the datatype's range. That is what the general reader accepts,
//! correctly rounded (serde_json's reader can be one unit off in an f64's last place). Anything else (strings,
//! `null`, an exponent on an integer, more elements than the shape declares) gives `None`, and the general reader
//! reads the request and words the error.

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
    let l = limits;
    Some(match dtype {
        DataType::Fp32 => TensorData::Fp32(scan(body, at, l)?),
        DataType::Fp64 => TensorData::Fp64(scan(body, at, l)?),
        DataType::Int8 => TensorData::Int8(scan(body, at, l)?),
        DataType::Int16 => TensorData::Int16(scan(body, at, l)?),
        DataType::Int32 => TensorData::Int32(scan(body, at, l)?),
        DataType::Int64 => TensorData::Int64(scan(body, at, l)?),
        DataType::Uint8 => TensorData::Uint8(scan(body, at, l)?),
        DataType::Uint16 => TensorData::Uint16(scan(body, at, l)?),
        DataType::Uint32 => TensorData::Uint32(scan(body, at, l)?),
        DataType::Uint64 => TensorData::Uint64(scan(body, at, l)?),
        DataType::Bool | DataType::Fp16 | DataType::Bytes => return None,
    })
}

/// An element type this path reads: one number from the start of a text, and its length.
trait Number: Sized {
    fn take(s: &[u8]) -> Option<(Self, usize)>;
}

impl Number for f32 {
    #[inline(always)]
    fn take(s: &[u8]) -> Option<(Self, usize)> {
        float32(s)
    }
}

impl Number for f64 {
    #[inline(always)]
    fn take(s: &[u8]) -> Option<(Self, usize)> {
        float(s)
    }
}

macro_rules! integer_number {
    ($($t:ty),*) => {$(
        impl Number for $t {
            #[inline(always)]
            fn take(s: &[u8]) -> Option<(Self, usize)> {
                let len = number_len(s)?;
                Some((<$t>::try_from(integer(&s[..len])?).ok()?, len))
            }
        }
    )*};
}
integer_number!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Walks one value (nested arrays of numbers, or one number) from `*at`, reading each number as a `T` into a vector
/// with room for `capacity`, and leaves `*at` just past the value; `None` at anything else, at a number `T` does not
/// read, past `expected` numbers or past `max_nesting` arrays deep. The vector is local to this loop, so its length
/// stays in a register.
fn scan<T: Number>(
    body: &[u8],
    at: &mut usize,
    (expected, capacity, max_nesting): (usize, usize, usize),
) -> Option<Vec<T>> {
    let mut out = Vec::with_capacity(capacity);
    let mut i = skip_space(body, *at);
    let mut depth = 0usize;
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
                // Numbers separated by commas, bare (compact writers) or with spaces (Python's `json.dumps`), are
                // read in this inner loop.
                loop {
                    if out.len() >= expected {
                        return None;
                    }
                    let (value, len) = T::take(body.get(i..)?)?;
                    out.push(value);
                    i += len;
                    match body.get(i..i + 2) {
                        Some([b',', b'0'..=b'9' | b'-']) => i += 1,
                        Some([b',', b' ' | b'\n' | b'\r' | b'\t']) => {
                            let next = skip_space(body, i + 2);
                            if !matches!(body.get(next), Some(b'0'..=b'9' | b'-')) {
                                break;
                            }
                            i = next;
                        }
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
                return Some(out);
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

/// Eight bytes of `s` from `at` as a little-endian word (the first byte lowest), when `s` has them.
#[inline(always)]
fn word(s: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = s.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The bytes of `word` that are not ASCII digits, each flagged by its top bit. Digits become the bytes 0..=9 and a
/// byte is flagged when it is 10 or more; adding 0x76 carries only out of a byte of 0x8a or more (not ASCII), so
/// the flags are exact up to and including the first non-ASCII byte.
#[inline(always)]
fn non_digits(word: u64) -> u64 {
    let x = word ^ (ONES * u64::from(b'0'));
    (x.wrapping_add(ONES * 0x76) | x) & (ONES * 0x80)
}

/// The decimal number the first `n` (1..=8) bytes of `word` spell, when they are ASCII digits.
#[inline(always)]
fn digits_value(word: u64, n: usize) -> u64 {
    // The digits as the bytes 0..=9, moved to the top bytes; the bytes below them read as leading zeros.
    let x = (word ^ (ONES * u64::from(b'0'))) << (8 * (8 - n));
    // Pairs, then fours, then all eight (simdjson's eight-digit conversion).
    let x = x.wrapping_mul(10).wrapping_add(x >> 8);
    (((x & 0x0000_00FF_0000_00FF).wrapping_mul(100 + (1_000_000 << 32))
        + ((x >> 16) & 0x0000_00FF_0000_00FF).wrapping_mul(1 + (10_000 << 32)))
        >> 32)
        & 0xFFFF_FFFF
}

/// The common number in a large request, `digits` or `digits.digits` in at most seven bytes (after any sign) and
/// followed by something other than an exponent, read from the eight bytes at `at`: its digits as one integer, how
/// many of them follow the point, and its length; `None` for anything else, which the byte-wise reader then reads
/// or refuses.
#[inline(always)]
fn short_number(s: &[u8], at: usize) -> Option<(u64, usize, usize)> {
    let word = word(s, at)?;
    let flagged = non_digits(word);
    // The first byte that is not a digit (8: none is, a longer number).
    let point = (flagged.trailing_zeros() / 8) as usize;
    if point == 0 || point == 8 || (point > 1 && word as u8 == b'0') {
        return None;
    }
    let (digits, fraction, end) = if (word >> (8 * point)) as u8 == b'.' {
        let end = ((flagged & (flagged - 1)).trailing_zeros() / 8) as usize;
        if end == 8 || end == point + 1 {
            return None;
        }
        // The fraction's digits moved down over the point.
        let whole = (1u64 << (8 * point)) - 1;
        let digits = (word & whole) | ((word >> 8) & !whole);
        (digits_value(digits, end - 1), end - point - 1, end)
    } else {
        (digits_value(word, point), 0, point)
    };
    if matches!((word >> (8 * end)) as u8, b'e' | b'E') {
        return None;
    }
    Some((digits, fraction, end))
}

/// The f64 nearest the JSON number `s` starts with, and its length. Inlined into the reading loop: its result
/// then stays in registers.
#[inline(always)]
fn float(s: &[u8]) -> Option<(f64, usize)> {
    let negative = s.first() == Some(&b'-');
    let at = usize::from(negative);
    if let Some((digits, fraction, len)) = short_number(s, at) {
        // At most seven digits: exact in an f64, and so is the division's result, correctly rounded.
        let magnitude = exact(digits) / POW10[fraction];
        return Some((if negative { -magnitude } else { magnitude }, at + len));
    }
    float_bytewise(s)
}

/// `n` (below 2^52) as an f64, exactly: its bits as the mantissa of 2^52, less 2^52. Unlike an integer conversion
/// instruction, which writes only part of its register and so waits for the last number's division, this starts
/// afresh for every number.
#[inline(always)]
fn exact(n: u64) -> f64 {
    const TWO_52: u64 = 0x4330_0000_0000_0000;
    f64::from_bits(TWO_52 | n) - f64::from_bits(TWO_52)
}

/// The f32 nearest the JSON number `s` starts with (finite), and its length. A short decimal (at most seven
/// digits, so below 2^24, over at most 10^6) is its digits times the f64 nearest 10^-fraction, narrowed: that
/// product is within 2^-52 of the exact quotient, which is never within 2^-48 of a point halfway between two f32s
/// unless it is an f32, so narrowing it gives the correctly rounded f32, as narrowing the correctly rounded f64
/// does, without a division.
#[inline(always)]
fn float32(s: &[u8]) -> Option<(f32, usize)> {
    let negative = s.first() == Some(&b'-');
    let at = usize::from(negative);
    if let Some((digits, fraction, len)) = short_number(s, at) {
        let magnitude = (exact(digits) * INV10[fraction]) as f32;
        return Some((if negative { -magnitude } else { magnitude }, at + len));
    }
    if let Some((digits, fraction, len)) = long_decimal(s, at) {
        if let Some(magnitude) = narrow(digits, fraction) {
            return Some((if negative { -magnitude } else { magnitude }, at + len));
        }
    }
    float32_bytewise(s)
}

/// A decimal of at most 19 digits with a fraction and no exponent (what `json.dumps` writes for a float32 as a
/// Python float: up to 17 significant digits), read eight bytes at a time from `at`: its digits, how many follow
/// the point, and its length; `None` for anything else.
#[inline(always)]
fn long_decimal(s: &[u8], at: usize) -> Option<(u64, usize, usize)> {
    let word_at = |i: usize| word(s, i).map(|w| (w, (non_digits(w).trailing_zeros() / 8) as usize));
    let (first, whole) = word_at(at)?;
    let point = at + whole;
    if whole == 0 || whole == 8 || (whole > 1 && first as u8 == b'0') || s[point] != b'.' {
        return None;
    }
    let mut digits = digits_value(first, whole);
    let mut end = point + 1;
    loop {
        let (next, n) = word_at(end)?;
        // The digits so far (all but the point) and these.
        if end - at - 1 + n > 19 {
            return None;
        }
        if n > 0 {
            digits = digits * POW10_INT[n] + digits_value(next, n);
        }
        end += n;
        if n < 8 {
            break;
        }
    }
    let fraction = end - point - 1;
    if fraction == 0 || matches!(s.get(end), Some(b'e' | b'E')) {
        return None;
    }
    Some((digits, fraction, end - at))
}

/// `digits` × 10^-`fraction` (at most 19 digits, `fraction` at most 19) narrowed to f32: the digits (rounded to an
/// f64) times the f64 nearest 10^-fraction is within 4 units of the last place of the correctly rounded f64, so it
/// narrows to the same f32 unless a point halfway between two f32s lies that close, which the 29 bits narrowing
/// drops show; `None` then.
#[inline(always)]
fn narrow(digits: u64, fraction: usize) -> Option<f32> {
    const DROPPED: u64 = (1 << 29) - 1;
    const HALFWAY: u64 = 1 << 28;
    let magnitude = digits as f64 * INV10[fraction];
    ((magnitude.to_bits() & DROPPED).abs_diff(HALFWAY) > 8).then_some(magnitude as f32)
}

/// Powers of ten up to 10^8, as integers.
const POW10_INT: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// [`float32`] one byte at a time: [`narrow`] for a decimal of at most 19 digits without an exponent, the f64
/// reader for any other number or near a halfway point.
#[inline(never)]
fn float32_bytewise(s: &[u8]) -> Option<(f32, usize)> {
    let d = decimal_bytewise(s)?;
    if d.whole + d.fraction <= 19 && !d.exponent {
        if let Some(magnitude) = narrow(d.digits, d.fraction) {
            return Some((if d.negative { -magnitude } else { magnitude }, d.end));
        }
    }
    let (value, len) = float_bytewise(s)?;
    Some((Some(value as f32).filter(|x| x.is_finite())?, len))
}

/// A JSON number read byte by byte up to any exponent part.
struct Decimal {
    negative: bool,
    /// Its digits as one integer (wrapped past 19 digits).
    digits: u64,
    whole: usize,
    /// How many digits follow the point.
    fraction: usize,
    /// Where its digits end.
    end: usize,
    /// Whether an exponent part follows.
    exponent: bool,
}

/// The digits of the JSON number `s` starts with; `None` when they are not JSON's grammar.
#[inline(always)]
fn decimal_bytewise(s: &[u8]) -> Option<Decimal> {
    let negative = s.first() == Some(&b'-');
    let mut at = usize::from(negative);
    let first = *s.get(at)?;
    let (mut digits, whole) = append_digits(s, &mut at, 0);
    if whole == 0 || (whole > 1 && first == b'0') {
        return None;
    }
    let mut fraction = 0;
    if s.get(at) == Some(&b'.') {
        at += 1;
        (digits, fraction) = append_digits(s, &mut at, digits);
        if fraction == 0 {
            return None;
        }
    }
    Some(Decimal {
        negative,
        digits,
        whole,
        fraction,
        end: at,
        exponent: matches!(s.get(at), Some(b'e' | b'E')),
    })
}

/// The f64s nearest 10^-n, for the fractions a 19-digit decimal can have.
const INV10: [f64; 20] = [
    1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12, 1e-13, 1e-14,
    1e-15, 1e-16, 1e-17, 1e-18, 1e-19,
];

/// [`float`] one byte at a time: any length, near the body's end, exponents.
#[inline(never)]
fn float_bytewise(s: &[u8]) -> Option<(f64, usize)> {
    let d = decimal_bytewise(s)?;
    // More than 19 digits (leading zeros included; rare) may have wrapped the digits.
    if d.exponent || d.whole + d.fraction > 19 || d.digits > 1 << 53 || d.fraction >= POW10.len() {
        // An exponent part, or more than the fast path converts exactly: the standard library's parser.
        let len = number_len(s)?;
        let value = std::str::from_utf8(&s[..len]).ok()?.parse().ok()?;
        return Some((value, len));
    }
    let magnitude = d.digits as f64 / POW10[d.fraction];
    Some((if d.negative { -magnitude } else { magnitude }, d.end))
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
        // Many numbers, flat and in rows, and one more than expected.
        let values: Vec<String> = (0..197).map(|i| format!("{}.{}", i % 13, i)).collect();
        let rows: Vec<String> = values
            .chunks(10)
            .map(|r| format!("[{}]", r.join(", ")))
            .collect();
        for raw in [
            format!("[{}]", values.join(",")),
            format!("[{}]", rows.join(", ")),
        ] {
            let want: Vec<f32> = numbers(&raw).iter().map(|&x| x as f32).collect();
            assert_eq!(want.len(), 197);
            assert_eq!(
                read(&raw, DataType::Fp32, 197).unwrap(),
                (TensorData::Fp32(want), raw.len())
            );
            assert_eq!(read(&raw, DataType::Fp32, 196), None);
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

    #[test]
    fn eight_bytes_give_their_leading_digits() {
        for bytes in [
            b"........",
            b"1.......",
            b"12]]]]]]",
            b"0123,567",
            b"98765,]]",
            b"123456.8",
            b"1234567e",
            b"12345678",
            b"99999999",
            b"00000000",
            b"9:::::::",
            b"/0000000",
            b"0\x8a123456",
            b"5\xff\xff\xff\xff\xff\xff\xff",
        ] {
            let n = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
            let value = std::str::from_utf8(&bytes[..n])
                .unwrap()
                .parse()
                .unwrap_or(0);
            let word = word(bytes, 0).unwrap();
            let first = (non_digits(word).trailing_zeros() / 8) as usize;
            assert_eq!(first, n, "{bytes:?}");
            if n > 0 {
                assert_eq!(digits_value(word, n), value, "{bytes:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// FP32 elements are the correctly rounded f64 narrowed, however many digits, with or without the eight-byte
        /// path, including the shortest f64 reprs of f32s that Python clients send and decimals next to a point
        /// halfway between two f32s.
        #[test]
        fn fp32_elements_are_the_f64_narrowed(
            negative in proptest::bool::ANY,
            whole in "0|[1-9][0-9]{0,12}",
            fraction in proptest::option::of("[0-9]{1,22}"),
            f32_bits in proptest::num::u32::ANY,
            halfway in proptest::num::u32::ANY,
            pick in 0u8..3,
            tail in "[],] ?[0-9 ,.\\]]{0,16}",
        ) {
            let number = match pick {
                0 => format!(
                    "{}{whole}{}",
                    if negative { "-" } else { "" },
                    fraction.map(|f| format!(".{f}")).unwrap_or_default(),
                ),
                // What `json.dumps(array.tolist())` writes for a float32.
                1 => format!("{:?}", f64::from(f32::from_bits(f32_bits & 0x7f7f_ffff | 0x3000_0000))),
                // Seventeen digits of a point halfway between two f32s.
                _ => {
                    let x = f32::from_bits(halfway & 0x3f7f_ffff | 0x3c00_0000);
                    let up = f32::from_bits(x.to_bits() + 1);
                    format!("{:.17}", (f64::from(x) + f64::from(up)) / 2.0)
                }
            };
            let text = format!("{number}{tail}");
            let want = number.parse::<f64>().unwrap() as f32;
            let (value, len) = float32(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(len, number.len());
            proptest::prop_assert_eq!(value.to_bits(), want.to_bits(), "{}", number);
        }

        /// Every JSON number, however long its parts, reads as the standard library parses it, and ends where
        /// JSON's grammar says.
        #[test]
        fn every_json_number_reads_correctly_rounded(
            negative in proptest::bool::ANY,
            whole in "0|[1-9][0-9]{0,24}",
            fraction in proptest::option::of("[0-9]{1,30}"),
            exponent in proptest::option::of("[eE][+-]?[0-9]{1,3}"),
            after in "[],] ?",
            tail in "[0-9 ,.eE\\]-]{0,16}",
        ) {
            let number = format!(
                "{}{whole}{}{}",
                if negative { "-" } else { "" },
                fraction.map(|f| format!(".{f}")).unwrap_or_default(),
                exponent.unwrap_or_default(),
            );
            // What follows lets the reader take eight bytes at a time, or not, wherever the number ends.
            let text = format!("{number}{after}{tail}");
            let want: f64 = number.parse().unwrap();
            let (value, len) = float(text.as_bytes()).unwrap();
            proptest::prop_assert_eq!(len, number.len());
            proptest::prop_assert_eq!(value.to_bits(), want.to_bits(), "{}", number);
        }
    }
}
