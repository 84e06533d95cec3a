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

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("1é日😀x", 4), "1é日😀");
        assert_eq!(clip("é", 0), "");
    }
}
