//! Session cookies for `session_affinity`: the gateway names a backend to
//! the client by an opaque token, a keyed MAC of the backend's address. A
//! client cannot turn its token into another backend's without the key;
//! tokens stay valid across reloads and backend reordering because they
//! depend only on the key and the address.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::OnceLock;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::hash::stable_hash_seeded;

/// The cookie a cluster pins clients with.
#[derive(Debug)]
pub struct StickyCookie {
    name: String,
    /// Token of each backend, in cluster order.
    tokens: Vec<String>,
    by_token: HashMap<String, usize>,
}

impl StickyCookie {
    /// Tokens for `addresses` (the cluster's backends in order), signed with
    /// `secret`, or with this process's random key when `None`.
    pub fn new<'a>(
        name: &str,
        secret: Option<&str>,
        addresses: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let key = secret.map_or_else(process_key, derive_key);
        let tokens: Vec<String> = addresses.into_iter().map(|a| token(key, a)).collect();
        let mut by_token = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            by_token.entry(t.clone()).or_insert(i);
        }
        Self {
            name: name.to_owned(),
            tokens,
            by_token,
        }
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend a cookie value names, if it is a valid token.
    pub fn backend(&self, value: &str) -> Option<usize> {
        self.by_token.get(value).copied()
    }

    /// The token naming backend `index`.
    pub fn token(&self, index: usize) -> Option<&str> {
        self.tokens.get(index).map(String::as_str)
    }
}

/// 128-bit MAC of `address`, as 32 hex digits.
fn token(key: (u64, u64), address: &str) -> String {
    let mut mac = SipHasher24::new_with_keys(key.0, key.1);
    mac.write(address.as_bytes());
    format!("{:032x}", mac.finish128().as_u128())
}

/// A configured secret of any length, condensed to a 128-bit key.
fn derive_key(secret: &str) -> (u64, u64) {
    (
        stable_hash_seeded(1, secret.as_bytes()),
        stable_hash_seeded(2, secret.as_bytes()),
    )
}

/// One random key per process, so tokens survive configuration reloads.
/// The standard library's `RandomState` is keyed from the operating
/// system's random source; hashing through it yields secret, unpredictable
/// values without another dependency.
fn process_key() -> (u64, u64) {
    use std::hash::BuildHasher;
    static KEY: OnceLock<(u64, u64)> = OnceLock::new();
    *KEY.get_or_init(|| {
        let random = std::collections::hash_map::RandomState::new();
        (random.hash_one(1u8), random.hash_one(2u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_depend_on_the_key() {
        let a = StickyCookie::new(
            "s",
            Some("0123456789abcdef"),
            ["10.0.0.1:80", "10.0.0.2:80"],
        );
        let b = StickyCookie::new(
            "s",
            Some("0123456789abcdef"),
            ["10.0.0.2:80", "10.0.0.1:80"],
        );
        let other = StickyCookie::new("s", Some("another secret!!"), ["10.0.0.1:80"]);
        let t0 = a.token(0).unwrap();
        assert_eq!(t0.len(), 32);
        assert_eq!(a.backend(t0), Some(0));
        assert_eq!(
            b.backend(t0),
            Some(1),
            "tokens follow the address, not the order"
        );
        assert_eq!(other.backend(t0), None, "another key gives other tokens");
        assert_eq!(a.backend("00000000000000000000000000000000"), None);
        let random = StickyCookie::new("s", None, ["10.0.0.1:80"]);
        assert_ne!(random.token(0), a.token(0));
    }
}
