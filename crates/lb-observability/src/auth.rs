//! Bearer-token check for the admin API: the config holds the SHA-256 of
//! the token, and the comparison takes the same time whatever differs.

use sha2::{Digest, Sha256};

/// Parse 64 hex digits into a SHA-256 digest.
pub fn parse_sha256_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(i * 2..i * 2 + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Whether an `Authorization` header value carries a token whose SHA-256
/// is `expected`.
pub fn bearer_matches(header: Option<&[u8]>, expected: &[u8; 32]) -> bool {
    let Some(value) = header else { return false };
    let Some(token) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    let digest = Sha256::digest(token);
    let mut diff = 0u8;
    for (a, b) in digest.iter().zip(expected.iter()) {
        diff |= a ^ b;
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check() {
        // sha256("secret")
        let h =
            parse_sha256_hex("2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b")
                .unwrap();
        assert!(bearer_matches(Some(b"Bearer secret"), &h));
        assert!(!bearer_matches(Some(b"Bearer secreT"), &h));
        assert!(!bearer_matches(Some(b"secret"), &h));
        assert!(!bearer_matches(None, &h));
        assert!(parse_sha256_hex("xyz").is_none());
    }
}
