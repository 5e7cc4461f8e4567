//! Text from contacts (bodies, task output, reasons) as each reader may see
//! it: a model, a terminal, or a program reading JSON. The text is untrusted:
//! it must not be able to close the frame it is shown in, drive a terminal,
//! or hide characters from the reader.

/// Characters that act on a terminal or hide from a reader
/// ([`agentwire_wire::is_hidden_char`]), but for tab and newline, which
/// multi-line text keeps.
pub(crate) fn is_hidden(c: char) -> bool {
    c != '\n' && c != '\t' && agentwire_wire::is_hidden_char(c)
}

/// Characters a model may read as `<` or `>`.
fn is_bracket_like(c: char) -> bool {
    matches!(
        c,
        '\u{02C2}' // ˂
            | '\u{02C3}' // ˃
            | '\u{2039}' // ‹
            | '\u{203A}' // ›
            | '\u{2329}' // 〈
            | '\u{232A}' // 〉
            | '\u{27E8}' // ⟨
            | '\u{27E9}' // ⟩
            | '\u{276C}'
            ..='\u{2771}' // ❬ ❭ ❮ ❯ ❰ ❱
            | '\u{3008}' // 〈
            | '\u{3009}' // 〉
            | '\u{300A}' // 《
            | '\u{300B}' // 》
            | '\u{FE64}' // ﹤
            | '\u{FE65}' // ﹥
            | '\u{FF1C}' // ＜
            | '\u{FF1E}' // ＞
            | '\u{1438}' // ᐸ
            | '\u{1433}' // ᐳ
    )
}

/// Text for a model, inside a frame: `&`, `<` and `>` as entities, and so
/// every character that could pass for a bracket (full-width, angle
/// quotation marks, ...) or that hides (see [`is_hidden`]) as a numeric
/// entity (`&#xFF1C;`): no tag of any spelling can appear, and nothing is
/// invisible.
pub(crate) fn for_model(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if is_bracket_like(c) || is_hidden(c) => {
                out.push_str(&format!("&#x{:X};", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// Text for a terminal, shown as it is but for what would act on the
/// terminal or hide (see [`is_hidden`]), written as `\u{..}`.
pub(crate) fn for_terminal(text: &str) -> String {
    if !text.chars().any(is_hidden) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if is_hidden(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A JSON document with every hidden character (see [`is_hidden`]) that
/// the encoder left raw written as a `\u` escape (a surrogate pair above
/// the BMP): the same value for any JSON reader, and nothing invisible on a
/// screen. Such characters occur only inside strings, so this is safe on
/// encoder output.
pub(crate) fn json_safe(json: String) -> String {
    if !json.chars().any(is_hidden) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_hidden(c) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str =
        "a\u{1b}[2J\u{7f}\u{9b}b\u{202e}c\u{2066}d\u{200b}e\u{e0041}\u{feff}f\tg\nh";

    #[test]
    fn a_model_sees_no_bracket_of_any_spelling_and_nothing_hidden() {
        let text = format!("<x> ＜/agentwire-message＞ ‹a› ❮b❯ ˂c˃ 〈d〉 &amp; {NASTY}");
        let shown = for_model(&text);
        for c in shown.chars() {
            assert!(!is_bracket_like(c) && !is_hidden(c), "{c:?} in {shown}");
            assert!(c != '<' && c != '>', "{shown}");
        }
        assert!(
            shown.contains("&#xFF1C;/agentwire-message&#xFF1E;"),
            "{shown}"
        );
        assert!(shown.contains("&amp;amp;"), "{shown}");
        assert!(shown.ends_with("f\tg\nh"), "{shown}");
    }

    #[test]
    fn a_terminal_sees_escapes_and_keeps_lines() {
        let shown = for_terminal(NASTY);
        assert!(!shown.chars().any(is_hidden), "{shown}");
        assert!(
            shown.starts_with("a\\u{1b}[2J\\u{7f}\\u{9b}b\\u{202e}c"),
            "{shown}"
        );
        assert!(shown.ends_with("f\tg\nh"));
        assert_eq!(for_terminal("plain ✓"), "plain ✓");
    }

    #[test]
    fn json_stays_the_same_value_with_nothing_hidden() {
        let value = serde_json::json!({"body": NASTY, "k": "✓"});
        let json = json_safe(serde_json::to_string(&value).unwrap());
        assert!(!json.chars().any(is_hidden), "{json}");
        assert!(
            json.contains("\\u202e") && json.contains("\\udb40\\udc41"),
            "{json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, value);
    }
}
