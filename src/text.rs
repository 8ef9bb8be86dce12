//! Showing text that came from a device to a person.
//!
//! File names, replies and versions are chosen by whoever controls the
//! device (or the link): printed raw, an escape sequence in them could move
//! the cursor, retitle the terminal or hide lines. Human output goes through
//! [`escape_controls`]; JSON output stays exact (its encoder escapes them).

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1, and the bidirectional
/// overrides) written as a visible escape such as `\x1b` or `\u{202e}`.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let n = c as u32;
            if n < 0x100 {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(escape_controls("app/main.py"), "app/main.py");
        assert!(matches!(escape_controls("plain é"), Cow::Borrowed(_)));
        assert_eq!(escape_controls("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape_controls("x\ny\r\t\x7f"), "x\\x0ay\\x0d\\x09\\x7f");
        assert_eq!(escape_controls("\u{9b}31m"), "\\x9b31m");
        assert_eq!(escape_controls("evil\u{202e}txt.py"), "evil\\u{202e}txt.py");
    }
}
