//! The plainest event lines, read byte by byte instead of through a JSON decoder.
//!
//! Nearly every line of an export is one flat object of strings, with `properties` or `traits`
//! objects of strings inside. Such a line is read here in one pass, each string taken as it
//! stands in the text. Anything else (an escape, a number, an array, deeper nesting, a control
//! character, broken JSON) makes the scan give up, and the line goes to the decoder, which
//! judges every case; giving up says nothing about whether the line is valid.

use beckon_core::Props;
use serde_json::Value;

use crate::segment::Fields;

/// The fields of `line` when it has one of the plain shapes above, as the decoder would read
/// them: a repeated key keeps its last value, and `null` counts as absent.
pub(crate) fn fields(line: &str) -> Option<Fields> {
    let mut s = Scanner { line, at: 0 };
    let mut f = Fields::default();
    s.expect(b'{')?;
    if !s.eat(b'}') {
        loop {
            let key = s.string()?;
            s.expect(b':')?;
            match key {
                "type" => f.kind = s.text_or_null()?,
                "userId" => f.user_id = s.text_or_null()?,
                "anonymousId" => f.anonymous_id = s.text_or_null()?,
                "timestamp" => f.timestamp = s.text_or_null()?,
                "event" => f.event = s.text_or_null()?,
                "name" => f.name = s.text_or_null()?,
                "previousId" => f.previous_id = s.text_or_null()?,
                "messageId" => f.message_id = s.text_or_null()?,
                "properties" => f.properties = s.object_or_null()?,
                "traits" => f.traits = s.object_or_null()?,
                _ => {
                    s.flat_value()?;
                }
            }
            if s.eat(b',') {
                continue;
            }
            s.expect(b'}')?;
            break;
        }
    }
    s.skip_whitespace();
    (s.at == line.len()).then_some(f)
}

struct Scanner<'a> {
    line: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    /// Whitespace as JSON defines it, the only kind the decoder skips.
    fn skip_whitespace(&mut self) {
        let bytes = self.line.as_bytes();
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.line.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.line.get(self.at..)?;
        rest.starts_with(word).then(|| self.at += word.len())
    }

    /// A string with no escape and no control character in it, as it stands in the line.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = self.line.as_bytes();
        let end = start + plain_run(bytes.get(start..)?);
        if bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        self.line.get(start..end)
    }

    /// A string, or `null` for none.
    fn text_or_null(&mut self) -> Option<Option<String>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        self.string().map(|s| Some(s.to_owned()))
    }

    /// A string, `true`, `false` or `null`.
    fn flat_value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.string().map(Value::from),
            b't' => self.literal("true").map(|()| Value::Bool(true)),
            b'f' => self.literal("false").map(|()| Value::Bool(false)),
            b'n' => self.literal("null").map(|()| Value::Null),
            _ => None,
        }
    }

    /// An object of flat values, or `null` for none.
    fn object_or_null(&mut self) -> Option<Option<Props>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            return Some(None);
        }
        self.expect(b'{')?;
        let mut props = Props::new();
        if self.eat(b'}') {
            return Some(Some(props));
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.flat_value()?;
            // As in a decoded object: a repeated key takes the new value in its first place.
            props.insert(key.to_owned(), value);
            if self.eat(b',') {
                continue;
            }
            self.expect(b'}')?;
            return Some(Some(props));
        }
    }
}

/// How many bytes at the start of `bytes` can stand in a string as they are: none is a
/// quote, a backslash or a control character. Strings are most of a line, so they are looked
/// at eight bytes at a time.
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut run = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // A byte of `x` is zero, or below `n` for `x` itself, where the high bit of
        // `(x - n per byte) & !x` is set. Above a byte found, the borrow may set more bits;
        // the lowest one is always right, and it is the first in the line.
        let zero_in = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
        let found = zero_in(w ^ (u64::from(b'"') * ONES), 1)
            | zero_in(w ^ (u64::from(b'\\') * ONES), 1)
            | zero_in(w, 0x20);
        if found != 0 {
            return run + (found.trailing_zeros() / 8) as usize;
        }
        run += 8;
    }
    let rest = &bytes[run..];
    run + rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(line: &str) -> Option<Fields> {
        serde_json::from_str(line).ok()
    }

    #[test]
    fn plain_lines_read_as_the_decoder_reads_them() {
        let plain = [
            r#"{"type":"track","userId":"1000169","event":"Product Viewed","properties":{"product_id":"1328010","category":"959452"},"messageId":"tb-4171","timestamp":"2017-09-11T08:16:39.000Z"}"#,
            r#"{"type":"identify","userId":"u1","traits":{"timezone":"Asia/Shanghai"},"messageId":"id-1","timestamp":"2017-09-11T08:16:38.999Z"}"#,
            " \t{ \"type\" : \"page\" ,\r\n\"name\":null, \"properties\" : { } } \n",
            r#"{"type":"track","event":"A","event":"B","properties":{"x":"1"},"properties":{"y":"2"}}"#,
            r#"{"properties":{"a":"1","b":true,"a":"3","c":null,"d":false}}"#,
            r#"{"type":"track","extra":"x","flag":true,"none":null,"off":false,"traits":null}"#,
            "{\"userId\":\"ünï cödé ✓ \u{7f}\",\"timestamp\":null}",
            "{}",
            "  {  }  ",
        ];
        for line in plain {
            let scanned = fields(line);
            assert!(scanned.is_some(), "{line}");
            assert_eq!(scanned, decoded(line), "{line}");
            // Equal maps may differ in order; their printed forms may not.
            assert_eq!(format!("{scanned:?}"), format!("{:?}", decoded(line)));
        }

        // Left to the decoder: escapes, numbers, nesting, control characters, broken JSON.
        let other = [
            r#"{"userId":"u","event":"tab\u0009"}"#,
            r#"{"userId":"a\"b"}"#,
            r#"{"type":"track","userId":"u","event":"x","context":{"ip":"1.2.3.4"}}"#,
            r#"{"properties":{"n":1}}"#,
            r#"{"properties":{"list":["a"]}}"#,
            r#"{"userId":42}"#,
            r#"{"type":"track",}"#,
            r#"{"type":"track"} x"#,
            r#"{"type":"track"}{}"#,
            r#"{"type":"track""userId":"u"}"#,
            r#"{"type":"track","userId":nul}"#,
            r#"{"type":"track","userId":nullx}"#,
            "{\"userId\":\"a\u{1}b\"}",
            r#"{"type":"track","userId":"u""#,
            r#"{"type" "track"}"#,
            r#"["type"]"#,
            "",
        ];
        for line in other {
            assert!(fields(line).is_none(), "{line}");
        }
    }

    #[test]
    fn a_plain_run_stops_at_the_first_quote_backslash_or_control_character() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let stops = [b'"', b'\\', 0x00, 0x1f, b'\n'];
        let others = [b'a', b' ', 0x20, 0x21, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff];
        for len in 0..20 {
            for at in 0..=len {
                for &stop in &stops {
                    for &other in &others {
                        let mut bytes = vec![other; len];
                        if at < len {
                            bytes[at] = stop;
                        }
                        // A second stop later must not move the answer.
                        bytes.push(b'"');
                        bytes.extend([other; 9]);
                        assert_eq!(plain_run(&bytes), naive(&bytes), "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_plain_run_agrees_with_a_byte_by_byte_look_on_mixed_bytes() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        // Bytes next to the ones that stop a run, where a borrow could mislead.
        let pool = [
            0x00, 0x01, 0x1f, 0x20, 0x21, b'"', 0x23, 0x5b, b'\\', 0x5d, 0x7f, 0x80, 0xa2, 0xdc,
            0xff, b'a',
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize
        };
        for _ in 0..20_000 {
            let len = next() % 40;
            let plain = next() % 12;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let pick = next() % pool.len();
                    if i < plain { b'a' } else { pool[pick] }
                })
                .collect();
            assert_eq!(plain_run(&bytes), naive(&bytes), "{bytes:?}");
        }
    }

    /// Every line of the public Taobao sample, when it is present beside the checkout: all
    /// of them are plain, and each reads as the decoder reads it.
    #[test]
    fn the_taobao_sample_reads_alike_both_ways() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/taobao-userbehavior/events.segment.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let mut lines = 0;
        for line in text.lines() {
            let scanned = fields(line);
            assert!(scanned.is_some(), "{line}");
            assert_eq!(format!("{scanned:?}"), format!("{:?}", decoded(line)));
            lines += 1;
        }
        assert_eq!(lines, 85_290);
    }
}
