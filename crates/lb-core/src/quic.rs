//! The version-independent properties of QUIC packets (RFC 8999): what a
//! load balancer may read from a packet of any QUIC version without
//! decrypting it. A long header carries its version and both connection
//! IDs with their lengths; a short header carries only the destination
//! connection ID, whose length the receiver must know.

/// Longest connection ID QUIC version 1 allows (RFC 9000 §17.2). RFC 8999
/// allows up to 255 bytes in long headers of other versions; such packets
/// are reported as [`Malformed::LongConnectionId`].
pub const MAX_CID_LEN: usize = 20;

/// Smallest datagram a client may carry its first packet in (RFC 9000
/// §14.1): the anti-amplification floor a server enforces, and what keeps
/// small spoofed datagrams from opening sessions.
pub const MIN_INITIAL_DATAGRAM: usize = 1200;

/// The version field of a version negotiation packet.
pub const VERSION_NEGOTIATION: u32 = 0;

/// A connection ID, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    len: u8,
    bytes: [u8; MAX_CID_LEN],
}

impl ConnectionId {
    /// `bytes` as a connection ID; `None` when longer than
    /// [`MAX_CID_LEN`].
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut id = Self {
            len: u8::try_from(bytes.len()).ok()?,
            bytes: [0; MAX_CID_LEN],
        };
        id.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(id)
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether it is the zero-length ID.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A packet's header, as far as every version agrees on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header<'a> {
    /// A long header: the handshake and version negotiation packets.
    Long {
        /// The version; [`VERSION_NEGOTIATION`] for a version negotiation.
        version: u32,
        /// Destination connection ID.
        dcid: ConnectionId,
        /// Source connection ID.
        scid: ConnectionId,
    },
    /// A short header: the destination connection ID starts at the
    /// second byte, its length known only to its receiver.
    Short {
        /// The packet after its first byte.
        rest: &'a [u8],
    },
}

/// Why a datagram is not a QUIC packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// No bytes.
    Empty,
    /// A long header cut before the end of its connection IDs.
    Truncated,
    /// A connection ID longer than [`MAX_CID_LEN`].
    LongConnectionId,
}

/// Read the header of the first packet in `datagram`.
pub fn parse(datagram: &[u8]) -> Result<Header<'_>, Malformed> {
    let (&first, rest) = datagram.split_first().ok_or(Malformed::Empty)?;
    if first & 0x80 == 0 {
        return Ok(Header::Short { rest });
    }
    let (version, rest) = rest.split_first_chunk::<4>().ok_or(Malformed::Truncated)?;
    let (dcid, rest) = connection_id(rest)?;
    let (scid, _) = connection_id(rest)?;
    Ok(Header::Long {
        version: u32::from_be_bytes(*version),
        dcid,
        scid,
    })
}

/// A length-prefixed connection ID and what follows it.
fn connection_id(bytes: &[u8]) -> Result<(ConnectionId, &[u8]), Malformed> {
    let (&len, rest) = bytes.split_first().ok_or(Malformed::Truncated)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(Malformed::Truncated);
    }
    let (id, rest) = rest.split_at(len);
    let id = ConnectionId::new(id).ok_or(Malformed::LongConnectionId)?;
    Ok((id, rest))
}

/// The server ID in a destination connection ID that starts `cid`: the
/// `length` bytes after the first `offset`, big-endian (the plaintext
/// form of QUIC-LB). `None` when `cid` is too short.
pub fn server_id(cid: &[u8], offset: usize, length: usize) -> Option<u64> {
    let field = cid.get(offset..offset.checked_add(length)?)?;
    if field.len() > 8 {
        return None;
    }
    Some(field.iter().fold(0u64, |id, b| (id << 8) | u64::from(*b)))
}

/// A packet of a reserved version (RFC 9000 §15: versions of the form
/// `0x?a?a?a?a` are never spoken), padded to [`MIN_INITIAL_DATAGRAM`]:
/// every QUIC server answers it with a version negotiation packet whose
/// destination connection ID is `scid`.
pub fn version_probe(dcid: &[u8; 8], scid: &[u8; 8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(MIN_INITIAL_DATAGRAM);
    packet.push(0xc0);
    packet.extend_from_slice(&0x1a2a_3a4a_u32.to_be_bytes());
    packet.push(8);
    packet.extend_from_slice(dcid);
    packet.push(8);
    packet.extend_from_slice(scid);
    packet.resize(MIN_INITIAL_DATAGRAM, 0);
    packet
}

/// Whether `datagram` is a version negotiation answering a packet whose
/// source connection ID was `scid`.
pub fn is_version_negotiation(datagram: &[u8], scid: &[u8]) -> bool {
    matches!(
        parse(datagram),
        Ok(Header::Long { version: VERSION_NEGOTIATION, dcid, .. }) if dcid.as_bytes() == scid
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn long(version: u32, dcid: &[u8], scid: &[u8]) -> Vec<u8> {
        let mut p = vec![0xc3];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(dcid.len() as u8);
        p.extend_from_slice(dcid);
        p.push(scid.len() as u8);
        p.extend_from_slice(scid);
        p.extend_from_slice(&[0; 32]);
        p
    }

    #[test]
    fn long_headers_give_version_and_both_ids() {
        let p = long(1, &[1, 2, 3, 4, 5, 6, 7, 8], &[9, 9]);
        let Ok(Header::Long {
            version,
            dcid,
            scid,
        }) = parse(&p)
        else {
            panic!("not a long header");
        };
        assert_eq!(version, 1);
        assert_eq!(dcid.as_bytes(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(scid.as_bytes(), [9, 9]);
    }

    #[test]
    fn short_headers_give_the_rest() {
        assert_eq!(
            parse(&[0x40, 7, 8, 9]),
            Ok(Header::Short { rest: &[7, 8, 9] })
        );
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(parse(&[]), Err(Malformed::Empty));
        assert_eq!(parse(&[0xc0, 0, 0, 0]), Err(Malformed::Truncated));
        assert_eq!(
            parse(&[0xc0, 0, 0, 0, 1, 8, 1, 2]),
            Err(Malformed::Truncated)
        );
        assert_eq!(
            parse(&long(1, &[0; 21], &[])),
            Err(Malformed::LongConnectionId)
        );
        let mut cut = long(1, &[1; 8], &[2; 8]);
        cut.truncate(1 + 4 + 1 + 8 + 1 + 4);
        assert_eq!(parse(&cut), Err(Malformed::Truncated));
    }

    #[test]
    fn server_ids_are_read_big_endian_at_their_offset() {
        assert_eq!(server_id(&[0x01, 0xab, 0xcd, 0xff], 1, 2), Some(0xabcd));
        assert_eq!(server_id(&[0x01, 0xab], 1, 2), None);
        assert_eq!(server_id(&[0; 20], 0, 9), None);
    }

    #[test]
    fn a_version_probe_is_a_long_header_of_a_reserved_version() {
        let probe = version_probe(&[1; 8], &[2; 8]);
        assert_eq!(probe.len(), MIN_INITIAL_DATAGRAM);
        let Ok(Header::Long { version, scid, .. }) = parse(&probe) else {
            panic!("not a long header");
        };
        assert_eq!(version & 0x0f0f_0f0f, 0x0a0a_0a0a);
        assert_eq!(scid.as_bytes(), [2; 8]);
        let mut answer = long(VERSION_NEGOTIATION, &[2; 8], &[1; 8]);
        assert!(is_version_negotiation(&answer, &[2; 8]));
        assert!(!is_version_negotiation(&answer, &[3; 8]));
        answer[1] = 1;
        assert!(!is_version_negotiation(&answer, &[2; 8]));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Any bytes: no panic, and what parses as a long header re-encodes
        /// to the datagram's prefix.
        #[test]
        fn any_datagram_parses_or_is_refused(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            match parse(&data) {
                Ok(Header::Long { version, dcid, scid }) => {
                    let mut again = vec![data[0]];
                    again.extend_from_slice(&version.to_be_bytes());
                    again.push(dcid.len() as u8);
                    again.extend_from_slice(dcid.as_bytes());
                    again.push(scid.len() as u8);
                    again.extend_from_slice(scid.as_bytes());
                    prop_assert_eq!(&data[..again.len()], &again[..]);
                }
                Ok(Header::Short { rest }) => {
                    prop_assert_eq!(data[0] & 0x80, 0);
                    prop_assert_eq!(rest, &data[1..]);
                }
                Err(_) => prop_assert!(data.is_empty() || data[0] & 0x80 != 0),
            }
        }

        /// A valid long header cut anywhere inside its IDs is truncated.
        #[test]
        fn cut_long_headers_are_truncated(
            dcid in proptest::collection::vec(any::<u8>(), 0..=20),
            scid in proptest::collection::vec(any::<u8>(), 0..=20),
            cut in 0usize..48,
        ) {
            let p = long(1, &dcid, &scid);
            let end = 1 + 4 + 1 + dcid.len() + 1 + scid.len();
            let cut = cut.min(end);
            let got = parse(&p[..cut]);
            if cut == end {
                prop_assert!(got.is_ok());
            } else if cut == 0 {
                prop_assert_eq!(got, Err(Malformed::Empty));
            } else {
                prop_assert_eq!(got, Err(Malformed::Truncated));
            }
        }
    }
}
