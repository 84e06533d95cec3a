//! The HMAC keys of the gateway ↔ aggregator link as written in config files: hex (e.g. from
//! `openssl rand -hex 32`), at least 32 digits (128 bits), upper or lower case. Blanks around
//! the key are ignored (a key pasted with its newline works the same in both daemons).

/// The fewest hex digits a key may have.
pub const MIN_HEX_DIGITS: usize = 32;

/// Hex → key bytes (see the module doc). The error says what is wrong, never the key.
pub fn parse_key(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if text.len() < MIN_HEX_DIGITS || text.len() % 2 != 0 {
        return Err(format!(
            "the key must be an even number (at least {MIN_HEX_DIGITS}) of hex digits, e.g. from \
             `openssl rand -hex 32` (got {} characters)",
            text.chars().count()
        ));
    }
    hex::decode(text).map_err(|_| "the key must contain only hex digits 0-9 a-f".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex_trimmed_and_long_enough() {
        let k = "00112233445566778899aabbccddeeff";
        assert_eq!(parse_key(k).map(|b| b.len()), Ok(16));
        assert_eq!(parse_key(&format!(" {k}\n")), parse_key(k));
        assert_eq!(parse_key(&k.to_uppercase()), parse_key(k));
        assert!(parse_key(k.trim_start_matches("00")).is_err());
        assert!(parse_key(&format!("{k}0")).is_err());
        let e = parse_key(&k.replace('a', "g")).expect_err("not hex");
        assert!(e.contains("only hex digits"), "{e}");
        assert!(parse_key(&"é".repeat(16)).is_err());
    }
}
