//! The nesting-depth check that runs over a request body before the general decode parses it
//! (`limits.max_json_depth`).
//!
//! The body is scanned once without building anything. Most of a large request is tensor data (digits, commas,
//! dots), which cannot change the depth, so the scan skips such bytes eight at a time and jumps over strings with
//! `memchr`; only brackets, braces and quotes are looked at one by one.

/// Whether `body` nests arrays and objects at most `max` deep (strings are skipped, escapes honoured). Stops at the
/// first level past `max`.
pub(super) fn within(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while at < body.len() {
        at += plain_run(&body[at..]);
        let Some(&byte) = body.get(at) else { break };
        at += 1;
        match byte {
            b'"' => at += string_rest(&body[at..]),
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A byte that can change the depth or start a string.
fn structural(byte: u8) -> bool {
    matches!(byte, b'"' | b'[' | b']' | b'{' | b'}')
}

/// How many leading bytes of `bytes` are not structural.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Whether any byte of `word` equals `byte` (exact as a yes/no answer).
    let has = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        // Setting bit 5 of every byte maps `[` to `{` and `]` to `}`, and keeps `"`. Other bytes that land on one of
        // the three (only control byte 0x02) are ruled out by the exact look below.
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes")) | (ONES * 0x20);
        if has(word, b'{') || has(word, b'}') || has(word, b'"') {
            if let Some(i) = chunk.iter().position(|&b| structural(b)) {
                return at + i;
            }
        }
        at += 8;
    }
    at + chunks
        .remainder()
        .iter()
        .position(|&b| structural(b))
        .unwrap_or(chunks.remainder().len())
}

/// How many bytes of `bytes` (which follow an opening quote) belong to the string, its closing quote included; all
/// of them when it is not closed.
fn string_rest(bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(i) = memchr::memchr2(b'"', b'\\', &bytes[at..]) {
        if bytes[at + i] == b'"' {
            return at + i + 1;
        }
        // An escape: the next byte is part of it, whatever it is.
        at += i + 2;
        if at >= bytes.len() {
            return bytes.len();
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same check, one byte at a time: what `within` must agree with.
    fn within_bytewise(body: &[u8], max: usize) -> bool {
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
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        true
    }

    #[test]
    fn brackets_in_strings_and_escaped_quotes_do_not_count() {
        assert!(within(br#"{"a":"[[[[[[","b":[1,2]}"#, 2));
        assert!(!within(br#"{"a":"\"[[","b":[[1,2]]}"#, 2));
        assert!(within(br#"{"a":"\\","b":[1]}"#, 2));
        assert!(!within(br#"{"a":"\\\"","b":[[[1]]]}"#, 3));
        assert!(within(br#"{"a":"\\\"]]]","b":[[1]]}"#, 3));
        // Data long enough for the eight-byte skip, with the deepest point after it.
        let data = "0.25,".repeat(100);
        let body = format!(r#"{{"x":[{data}[[{data}1]]]}}"#);
        assert!(within(body.as_bytes(), 4));
        assert!(!within(body.as_bytes(), 3));
    }

    #[test]
    fn an_unterminated_string_or_escape_ends_the_scan() {
        assert!(within(br#"{"a":"[[[[["#, 1));
        assert!(within(br#"{"a":"\"#, 1));
        assert!(within(b"\"\\", 0));
    }

    proptest! {
        #[test]
        fn agrees_with_the_bytewise_scan(
            pieces in proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(b"[]{}\"\\".to_vec()).prop_map(|b| vec![b]),
                    // Runs of plain bytes, long enough to be skipped eight at a time, and the bytes that only look
                    // structural once bit 5 is set.
                    (0usize..24).prop_map(|n| b"0.25,".iter().cycle().take(n).copied().collect()),
                    proptest::sample::select(vec![0x02u8, 0x5b | 0x80, 0x7d | 0x80, 0x22 | 0x80]).prop_map(|b| vec![b]),
                    any::<u8>().prop_map(|b| vec![b]),
                ],
                0..60,
            ),
            max in 0usize..8,
        ) {
            let body = pieces.concat();
            prop_assert_eq!(within(&body, max), within_bytewise(&body, max));
        }
    }
}
