//! The one place where text from a peer is made safe to show: every name, reason and error
//! message that can carry peer-supplied text passes through here on its way to a terminal
//! or a JSON line, in the CLI and the browser page alike. Characters are escaped by Unicode
//! general category (controls, format characters such as the bidi overrides and tag
//! characters, line and paragraph separators), never by a hand-kept list, and lines are
//! bounded so a hostile message cannot flood the screen.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Longest error or status line shown, in characters, before it is cut.
pub const MAX_LINE_CHARS: usize = 512;

/// Would a terminal (or a viewer) obey `c` instead of showing it: a control, a format
/// character (bidi controls, zero-width characters, tag characters), or a line or
/// paragraph separator?
pub fn is_unsafe_char(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Surrogate
    ) || ('\u{E0000}'..='\u{E007F}').contains(&c)
}

/// `s` with every unsafe character escaped (`\u{1b}`); newlines and tabs too unless
/// `keep_lines`.
pub fn safe(s: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if keep_lines && (c == '\n' || c == '\t') {
            out.push(c);
        } else if is_unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` escaped onto one line and cut to [`MAX_LINE_CHARS`], saying how much was left out.
pub fn line(s: &str) -> String {
    let escaped = safe(s, false);
    match escaped.char_indices().nth(MAX_LINE_CHARS) {
        None => escaped,
        Some((at, _)) => format!("{}… ({} more bytes)", &escaped[..at], escaped.len() - at),
    }
}

/// A JSON text with every unsafe character inside its strings written as a `\uXXXX`
/// escape: the same value to a JSON parser, inert on a terminal. serde_json already escapes
/// C0 controls; this adds the rest (DEL, C1, bidi, U+2028/2029, tag characters).
pub fn json_text(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_unsafe_char(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decides, chunk by chunk, whether a stream is plain text that is safe to write to a
/// terminal: valid UTF-8 with no unsafe characters other than newlines, tabs and carriage
/// returns. A character split across two chunks is judged once it is whole.
#[derive(Debug, Default)]
pub struct TextGuard {
    /// The start of a character that the previous chunk ended in the middle of.
    carry: Vec<u8>,
}

impl TextGuard {
    /// Is `bytes`, following everything checked before, still safe text?
    pub fn check(&mut self, bytes: &[u8]) -> bool {
        let joined;
        let data = if self.carry.is_empty() {
            bytes
        } else {
            joined = [self.carry.as_slice(), bytes].concat();
            &joined
        };
        let (text, rest) = match std::str::from_utf8(data) {
            Ok(t) => (t, &[][..]),
            // An incomplete character at the very end may be completed by the next chunk.
            Err(e) if e.error_len().is_none() => {
                let (valid, rest) = data.split_at(e.valid_up_to());
                (std::str::from_utf8(valid).unwrap_or_default(), rest)
            }
            Err(_) => return false,
        };
        let ok = text
            .chars()
            .all(|c| matches!(c, '\n' | '\t' | '\r') || !is_unsafe_char(c));
        self.carry = rest.to_vec();
        ok
    }

    /// The stream ended: safe only if no character was left unfinished.
    pub fn finish(&self) -> bool {
        self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_obey() {
        assert_eq!(safe("a\u{1b}[2Jb", false), "a\\u{1b}[2Jb");
        assert_eq!(safe("evil\u{202E}txt.exe", false), "evil\\u{202e}txt.exe");
        assert_eq!(safe("two\nlines", true), "two\nlines");
        assert_eq!(safe("two\nlines", false), "two\\u{a}lines");
        assert_eq!(safe("résumé ✓ 日本", false), "résumé ✓ 日本");
    }

    /// The characters a hand-kept list missed: the Arabic letter mark, the line and
    /// paragraph separators, tag characters, C1 controls and DEL.
    #[test]
    fn escapes_by_category_not_by_list() {
        for c in [
            '\u{061C}',
            '\u{2028}',
            '\u{2029}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{85}',
            '\u{7f}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{200B}',
        ] {
            assert!(is_unsafe_char(c), "{:04x} must be escaped", c as u32);
            assert!(!safe(&format!("a{c}b"), true).contains(c));
        }
        assert_eq!(safe("\u{2028}Received fake", false), "\\u{2028}Received fake");
    }

    #[test]
    fn lines_are_bounded() {
        let long = "x".repeat(100_000);
        let l = line(&long);
        assert!(l.chars().count() < MAX_LINE_CHARS + 40, "{}", l.len());
        assert!(l.ends_with("more bytes)"));
        assert_eq!(line("short"), "short");
    }

    #[test]
    fn json_text_is_the_same_value_and_inert() {
        let v = serde_json::json!({"message": "a\u{1b}]0;pwned\u{7}\u{202e}b\u{2028}c\u{E0041}"});
        let text = json_text(&v.to_string());
        assert!(text.chars().all(|c| !is_unsafe_char(c)), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn text_guard_refuses_escapes_and_binary() {
        let mut g = TextGuard::default();
        assert!(g.check(b"hello\r\nworld\t\n"));
        assert!(g.finish());
        assert!(!TextGuard::default().check(b"a\x1b]0;pwned\x07"));
        assert!(!TextGuard::default().check("\u{202e}".as_bytes()));
        assert!(!TextGuard::default().check(&[0xff, 0xfe, 0]));
        // A character split over two chunks is fine once whole.
        let snow = "☃".as_bytes();
        let mut g = TextGuard::default();
        assert!(g.check(&snow[..1]));
        assert!(!g.finish());
        assert!(g.check(&snow[1..]));
        assert!(g.finish());
    }
}
