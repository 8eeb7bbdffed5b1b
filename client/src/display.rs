//! Text from the peer, made safe to show on a terminal: control characters, terminal escape
//! sequences and invisible or direction-changing Unicode are shown escaped, never obeyed.

/// Is `c` invisible or able to reorder what follows it on screen?
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` with every control and format character escaped (`\u{1b}`); newlines and tabs too
/// unless `keep_lines`.
pub fn safe(s: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if keep_lines && (c == '\n' || c == '\t') {
            out.push(c);
        } else if c.is_control() || is_format_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
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
        assert_eq!(safe("résumé ✓", false), "résumé ✓");
    }
}
