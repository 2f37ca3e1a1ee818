//! Untrusted text made safe to show: alert titles, model answers and anything else
//! that came from outside, before it reaches a terminal or a document.

/// `text` with every control character (C0 and C1, ESC and BEL included, and any
/// newline unless `keep_newlines`) and every bidirectional override or isolate
/// replaced by a visible `\u{FFFD}`, so it cannot move the cursor, rewrite or hide
/// lines, ring the bell, or reorder what the reader sees.
pub fn printable(text: &str, keep_newlines: bool) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}');
            if (c == '\n' && keep_newlines) || c == ' ' || !(c.is_control() || bidi) {
                c
            } else {
                '\u{FFFD}'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn escapes_and_overrides_become_visible_and_text_survives() {
        let hostile = "ok\u{1b}[1A\u{1b}[2KRoute: autonomous\u{7}\r\u{9b}31m\u{202E}gnp.exe\u{2066}x\tend";
        let shown = printable(hostile, false);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(!shown.contains('\u{202E}') && !shown.contains('\u{2066}'));
        assert!(shown.contains("Route: autonomous"), "text itself is kept: {shown}");
        assert_eq!(printable("CVE-2019-1549 in openssl 1.1.1c\nline two", true), "CVE-2019-1549 in openssl 1.1.1c\nline two");
        assert_eq!(printable("a\nb", false), "a\u{FFFD}b");
    }
}
