//! Client and backend datagrams as a passthrough listener reads them:
//! never a panic; what parses as a long header re-encodes to the
//! datagram's prefix, and a server ID is read wherever the ID is long
//! enough.
#![no_main]

use lb_core::quic::{self, Header};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match quic::parse(data) {
        Ok(Header::Long { version, dcid, scid }) => {
            let mut again = vec![data[0]];
            again.extend_from_slice(&version.to_be_bytes());
            again.push(dcid.len() as u8);
            again.extend_from_slice(dcid.as_bytes());
            again.push(scid.len() as u8);
            again.extend_from_slice(scid.as_bytes());
            assert_eq!(&data[..again.len()], &again[..]);
            let _ = quic::is_version_negotiation(data, scid.as_bytes());
        }
        Ok(Header::Short { rest }) => {
            for (offset, length) in [(0, 1), (1, 2), (3, 8), (12, 8)] {
                let id = quic::server_id(rest, offset, length);
                assert_eq!(id.is_some(), rest.len() >= offset + length);
            }
        }
        Err(_) => assert!(data.is_empty() || data[0] & 0x80 != 0),
    }
});
