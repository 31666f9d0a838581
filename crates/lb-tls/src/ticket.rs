//! Session ticket keys with a rotation schedule: a new key every
//! `interval`; the key it replaces still decrypts (never encrypts) for
//! `overlap`, then is dropped. rustls' own rotator ties both to one
//! lifetime, so the gateway keeps its own.
//!
//! Tickets are sealed with AES-256-GCM-SIV under a random nonce: a busy
//! listener issues billions of tickets per key, and GCM-SIV stays safe
//! where random 96-bit nonces would start to collide under plain GCM.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

const NAME_LEN: usize = 16;

/// One ticket key, named so a ticket says which key sealed it.
struct TicketKey {
    name: [u8; NAME_LEN],
    aead: LessSafeKey,
}

impl TicketKey {
    fn generate() -> Option<Self> {
        let rng = SystemRandom::new();
        let mut secret = [0u8; 32];
        let mut name = [0u8; NAME_LEN];
        rng.fill(&mut secret).ok()?;
        rng.fill(&mut name).ok()?;
        let key = UnboundKey::new(&AES_256_GCM_SIV, &secret).ok()?;
        Some(Self {
            name,
            aead: LessSafeKey::new(key),
        })
    }

    /// `name ‖ nonce ‖ ciphertext ‖ tag`.
    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut body = plain.to_vec();
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.name),
                &mut body,
            )
            .ok()?;
        let mut ticket = Vec::with_capacity(NAME_LEN + NONCE_LEN + body.len());
        ticket.extend_from_slice(&self.name);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(&body);
        Some(ticket)
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = ticket.split_at_checked(NAME_LEN)?;
        if name != self.name {
            return None;
        }
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(&self.name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

struct Keys {
    current: TicketKey,
    /// The replaced key and when it stops decrypting.
    previous: Option<(TicketKey, Instant)>,
    next_rotation: Instant,
}

/// The ticketer of one listener.
pub(crate) struct RotatingTicketer {
    interval: Duration,
    overlap: Duration,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for RotatingTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingTicketer")
            .field("interval", &self.interval)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl RotatingTicketer {
    /// `None` when the system random generator fails.
    pub(crate) fn new(interval: Duration, overlap: Duration) -> Option<Self> {
        let now = Instant::now();
        Some(Self {
            interval,
            overlap,
            keys: RwLock::new(Keys {
                current: TicketKey::generate()?,
                previous: None,
                next_rotation: now.checked_add(interval)?,
            }),
        })
    }

    /// The rotation settings, to tell whether a reload may keep this
    /// ticketer.
    pub(crate) fn schedule(&self) -> (Duration, Duration) {
        (self.interval, self.overlap)
    }

    /// Rotate when a rotation is due and drop a previous key whose overlap
    /// ended. Rotations follow the schedule set at start, not the time of
    /// the call, so an idle listener keeps the same boundaries.
    fn maintain(&self, now: Instant) {
        let due = match self.keys.read() {
            Ok(keys) => {
                now >= keys.next_rotation
                    || keys
                        .previous
                        .as_ref()
                        .is_some_and(|(_, until)| now >= *until)
            }
            Err(_) => false,
        };
        if !due {
            return;
        }
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        let mut rotated = false;
        while now >= keys.next_rotation {
            let Some(fresh) = TicketKey::generate() else {
                tracing::error!("cannot generate a session ticket key; keeping the current one");
                break;
            };
            let rotation = keys.next_rotation;
            let old = std::mem::replace(&mut keys.current, fresh);
            keys.previous = rotation.checked_add(self.overlap).map(|until| (old, until));
            keys.next_rotation = rotation.checked_add(self.interval).unwrap_or(now);
            rotated = true;
        }
        if keys
            .previous
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            keys.previous = None;
            tracing::info!("previous session ticket key retired");
        }
        if rotated {
            tracing::info!(
                overlap_s = self.overlap.as_secs(),
                "session ticket key rotated; the previous key still decrypts during the overlap"
            );
        }
    }

    fn encrypt_at(&self, now: Instant, plain: &[u8]) -> Option<Vec<u8>> {
        self.maintain(now);
        self.keys.read().ok()?.current.seal(plain)
    }

    fn decrypt_at(&self, now: Instant, ticket: &[u8]) -> Option<Vec<u8>> {
        self.maintain(now);
        let keys = self.keys.read().ok()?;
        keys.current.open(ticket).or_else(|| {
            let (key, until) = keys.previous.as_ref()?;
            if now < *until {
                key.open(ticket)
            } else {
                None
            }
        })
    }
}

impl ProducesTickets for RotatingTicketer {
    fn enabled(&self) -> bool {
        true
    }

    /// A ticket is usable until the overlap after the next rotation ends.
    fn lifetime(&self) -> u32 {
        u32::try_from(self.interval.saturating_add(self.overlap).as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(Instant::now(), plain)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(Instant::now(), ticket)
    }
}

/// No tickets: sessions resume from the server-side store only.
#[derive(Debug)]
pub(crate) struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _ticket: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn previous_key_decrypts_through_the_overlap_only() {
        let t = RotatingTicketer::new(10 * S, 4 * S).unwrap();
        let start = Instant::now();
        let ticket = t.encrypt_at(start, b"state").unwrap();
        assert_eq!(t.decrypt_at(start + S, &ticket).unwrap(), b"state");
        // Rotated at +10 s: the ticket's key is now the previous one.
        let after_rotation = t.encrypt_at(start + 11 * S, b"new").unwrap();
        assert_eq!(t.decrypt_at(start + 13 * S, &ticket).unwrap(), b"state");
        // The overlap ends at +14 s, whenever the check happens.
        assert_eq!(t.decrypt_at(start + 14 * S + S / 2, &ticket), None);
        assert_eq!(
            t.decrypt_at(start + 15 * S, &after_rotation).unwrap(),
            b"new"
        );
        assert_eq!(t.lifetime(), 14);
    }

    #[test]
    fn an_idle_gap_of_several_intervals_retires_everything_old() {
        let t = RotatingTicketer::new(10 * S, 10 * S).unwrap();
        let start = Instant::now();
        let ticket = t.encrypt_at(start, b"state").unwrap();
        assert_eq!(t.decrypt_at(start + 35 * S, &ticket), None);
    }

    #[test]
    fn tampered_and_foreign_tickets_are_refused() {
        let t = RotatingTicketer::new(10 * S, 10 * S).unwrap();
        let other = RotatingTicketer::new(10 * S, 10 * S).unwrap();
        let mut ticket = t.encrypt(b"state").unwrap();
        assert_eq!(other.decrypt(&ticket), None);
        if let Some(last) = ticket.last_mut() {
            *last ^= 1;
        }
        assert_eq!(t.decrypt(&ticket), None);
        assert_eq!(t.decrypt(&[]), None);
    }
}
