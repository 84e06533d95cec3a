//! Text helpers that never split a character (byte slicing of text is banned by
//! `clippy::string_slice`, see `clippy.toml`).

/// The first `max_chars` characters of `s` (all of it when shorter): for log lines and error
/// messages that quote outside input.
pub fn clip(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// `s` with XML's five special characters as entities, for text and attribute values (ONVIF
/// SOAP requests, Open311's XML answers).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{clip, xml_escape};

    #[test]
    fn xml_escape_makes_entities_of_the_five_specials_only() {
        assert_eq!(xml_escape("a<b>&\"c'é"), "a&lt;b&gt;&amp;&quot;c&apos;é");
    }

    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("1é日😀x", 4), "1é日😀");
        assert_eq!(clip("é", 0), "");
    }
}
