//! The PROXY protocol (v1 text, v2 binary): the header a proxy in front
//! puts before a connection's bytes to say whom the connection is for,
//! taken from trusted peers on the way in and written to backends that
//! ask for it on the way out. Parsing and building are the `ppp` crate's.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lb_config::{ProxyAccept, ProxyProtocol, ProxyVersion};
use ppp::v2;
use ppp::{HeaderResult, PartialResult as _};
use thiserror::Error;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The longest header taken: a v1 line is at most 107 bytes; v2 TLVs
/// beyond this are refused rather than buffered.
const MAX_HEADER: usize = 1024;

/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;

/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// How long a header's pieces may straggle in.
const PIECE_WAIT: Duration = Duration::from_millis(5);

/// Who a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// Why a connection was closed before anything else was read.
#[derive(Debug, Error)]
pub enum Refused {
    /// A trusted peer's connection did not begin with a header.
    #[error("no PROXY protocol header from a trusted peer")]
    Missing,
    /// The header was malformed or too long.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// A header of a version the listener does not take.
    #[error("PROXY protocol {0} header; the listener takes {1}")]
    Version(&'static str, &'static str),
    /// A peer outside `from` sent a header, or (without `direct`)
    /// connected at all.
    #[error("connection from an untrusted peer {0}")]
    Untrusted(IpAddr),
    /// The connection failed or closed first.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Take the PROXY header of a connection from `peer` as `settings` say:
/// the addresses it carries (`None` for a `LOCAL` header or a direct
/// connection, which are served as themselves). The header's bytes are
/// consumed; nothing after them is.
pub async fn accept(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &ProxyProtocol,
) -> Result<Option<Addresses>, Refused> {
    if !settings.trusts(peer.ip()) {
        if !settings.direct {
            return Err(Refused::Untrusted(peer.ip()));
        }
        // A header from anyone else is a forgery: look at the first bytes
        // without taking them.
        let mut first = [0u8; 12];
        let n = peek_at_least(stream, &mut first, |seen| {
            !(is_prefix(seen, b"PROXY ") || is_prefix(seen, V2_SIGNATURE))
                || seen.len() >= V2_SIGNATURE.len()
        })
        .await?;
        let seen = first.get(..n).unwrap_or_default();
        if seen.starts_with(b"PROXY ") || seen.starts_with(V2_SIGNATURE) {
            return Err(Refused::Untrusted(peer.ip()));
        }
        return Ok(None);
    }
    let mut buf = vec![0u8; MAX_HEADER];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(Refused::Missing);
        }
        let seen = buf.get(..n).unwrap_or_default();
        if !(is_prefix(seen, b"PROXY ") || is_prefix(seen, V2_SIGNATURE)) {
            return Err(Refused::Missing);
        }
        let parsed = HeaderResult::parse(seen);
        if parsed.is_incomplete() {
            // A v1 line is whole at its CRLF (and at most 107 bytes): one
            // the parser still waits on is one it cannot read.
            let v1_done = seen.starts_with(b"PROXY ")
                && (seen.windows(2).any(|w| w == b"\r\n") || n >= V1_MAX);
            if v1_done {
                return Err(Refused::Malformed("v1 line not understood".to_owned()));
            }
            if n == buf.len() {
                return Err(Refused::Malformed(format!(
                    "longer than {MAX_HEADER} bytes"
                )));
            }
            tokio::time::sleep(PIECE_WAIT).await;
            continue;
        }
        let (length, addresses, version) = match parsed {
            HeaderResult::V1(Ok(header)) => {
                (header.header.len(), v1_addresses(&header.addresses), "v1")
            }
            HeaderResult::V2(Ok(header)) => (header.len(), v2_addresses(&header), "v2"),
            HeaderResult::V1(Err(e)) => return Err(Refused::Malformed(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(Refused::Malformed(e.to_string())),
        };
        let takes = match settings.accept {
            ProxyAccept::V1 => "v1",
            ProxyAccept::V2 => "v2",
            ProxyAccept::Any => version,
        };
        if takes != version {
            return Err(Refused::Version(version, takes));
        }
        let mut header = vec![0u8; length];
        stream.read_exact(&mut header).await?;
        return Ok(addresses);
    }
}

/// Peek until `enough` says the bytes seen decide, or the peer stops.
async fn peek_at_least(
    stream: &mut TcpStream,
    buf: &mut [u8],
    enough: impl Fn(&[u8]) -> bool,
) -> io::Result<usize> {
    loop {
        let n = stream.peek(buf).await?;
        let seen = buf.get(..n).unwrap_or_default();
        if n == 0 || n == buf.len() || enough(seen) {
            return Ok(n);
        }
        tokio::time::sleep(PIECE_WAIT).await;
    }
}

/// Whether `seen` and `signature` agree as far as both go.
fn is_prefix(seen: &[u8], signature: &[u8]) -> bool {
    let n = seen.len().min(signature.len());
    seen.get(..n) == signature.get(..n)
}

fn v1_addresses(addresses: &ppp::v1::Addresses) -> Option<Addresses> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(Addresses {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        }),
        ppp::v1::Addresses::Tcp6(a) => Some(Addresses {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        }),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_addresses(header: &v2::Header<'_>) -> Option<Addresses> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Some(Addresses {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        }),
        v2::Addresses::IPv6(a) => Some(Addresses {
            source: (a.source_address, a.source_port).into(),
            destination: (a.destination_address, a.destination_port).into(),
        }),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

/// What a v2 header tells a backend about the client's TLS.
#[derive(Debug, Default, Clone)]
pub struct TlsFacts {
    /// The server name the client asked for (`PP2_TYPE_AUTHORITY`).
    pub sni: Option<String>,
    /// The protocol negotiated by ALPN (`PP2_TYPE_ALPN`).
    pub alpn: Option<Vec<u8>>,
    /// The verified client certificate's identity (`PP2_SUBTYPE_SSL_CN`
    /// inside `PP2_TYPE_SSL`).
    pub client_identity: Option<String>,
}

/// The header to send a backend for a connection between `addresses`.
/// Both addresses are given as the same family (an IPv4 one mapped into
/// IPv6 when they differ), as the protocol wants.
pub fn header(
    version: ProxyVersion,
    addresses: Addresses,
    tls: Option<&TlsFacts>,
) -> io::Result<Vec<u8>> {
    let (source, destination) = same_family(addresses.source, addresses.destination);
    match version {
        ProxyVersion::V1 => Ok(ppp::v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes()),
        ProxyVersion::V2 => {
            let mut builder = v2::Builder::with_addresses(
                v2::Version::Two | v2::Command::Proxy,
                v2::Protocol::Stream,
                (source, destination),
            );
            if let Some(tls) = tls {
                if let Some(alpn) = &tls.alpn {
                    builder = builder.write_tlv(v2::Type::ALPN, alpn)?;
                }
                if let Some(sni) = &tls.sni {
                    builder = builder.write_tlv(v2::Type::Authority, sni.as_bytes())?;
                }
                // PP2_TYPE_SSL: client flags (PP2_CLIENT_SSL, and
                // PP2_CLIENT_CERT_CONN with a certificate), verify result
                // 0 (verified), then sub-TLVs.
                let mut ssl = vec![0x01, 0, 0, 0, 0];
                if let Some(identity) = &tls.client_identity {
                    if let Some(flags) = ssl.first_mut() {
                        *flags |= 0x02;
                    }
                    let len = u16::try_from(identity.len())
                        .map_err(|_| io::Error::other("client identity too long"))?;
                    ssl.push(v2::Type::SSLCommonName as u8);
                    ssl.extend_from_slice(&len.to_be_bytes());
                    ssl.extend_from_slice(identity.as_bytes());
                }
                builder = builder.write_tlv(v2::Type::SSL, &ssl)?;
            }
            builder.build()
        }
    }
}

fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| -> SocketAddr {
        match a.ip() {
            IpAddr::V4(v4) => (v4.to_ipv6_mapped(), a.port()).into(),
            IpAddr::V6(_) => a,
        }
    };
    let v4 = |a: SocketAddr| -> Option<SocketAddr> {
        match a.ip() {
            IpAddr::V4(_) => Some(a),
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(|v4| (v4, a.port()).into()),
        }
    };
    match (v4(source), v4(destination)) {
        (Some(s), Some(d)) => (s, d),
        _ => (v6(source), v6(destination)),
    }
}

/// Write the header for `addresses` to a fresh upstream connection.
pub async fn send(
    stream: &mut TcpStream,
    version: ProxyVersion,
    addresses: Addresses,
    tls: Option<&TlsFacts>,
) -> io::Result<()> {
    let bytes = header(version, addresses, tls)?;
    stream.write_all(&bytes).await
}

/// The unspecified address of `ip`'s family, port 0: the destination of a
/// header when the gateway cannot tell its own address.
pub fn unspecified_like(ip: IpAddr) -> SocketAddr {
    match ip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(accept: ProxyAccept, direct: bool) -> ProxyProtocol {
        ProxyProtocol {
            accept,
            from: vec![lb_config::IpNet::parse("127.0.0.0/8").unwrap()],
            direct,
        }
    }

    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        (client, server, peer)
    }

    fn addrs() -> Addresses {
        Addresses {
            source: "192.0.2.7:4321".parse().unwrap(),
            destination: "198.51.100.1:443".parse().unwrap(),
        }
    }

    #[tokio::test]
    async fn both_versions_are_read_and_only_the_header_is_consumed() {
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let (mut client, mut server, peer) = pair().await;
            let mut bytes = header(version, addrs(), Some(&TlsFacts::default())).unwrap();
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            // In two pieces, the header cut in its middle.
            let (a, b) = bytes.split_at(9);
            client.write_all(a).await.unwrap();
            let (b, _) = (b.to_vec(), ());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                client.write_all(&b).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
            let got = accept(&mut server, peer, &settings(ProxyAccept::Any, false))
                .await
                .unwrap();
            assert_eq!(got, Some(addrs()), "{version:?}");
            let mut rest = [0u8; 16];
            server.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
        }
    }

    #[tokio::test]
    async fn refusals() {
        // Plain bytes from a trusted peer.
        let (mut client, mut server, peer) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let got = accept(&mut server, peer, &settings(ProxyAccept::Any, false)).await;
        assert!(matches!(got, Err(Refused::Missing)), "{got:?}");
        // A version the listener does not take.
        let (mut client, mut server, peer) = pair().await;
        client
            .write_all(&header(ProxyVersion::V1, addrs(), None).unwrap())
            .await
            .unwrap();
        let got = accept(&mut server, peer, &settings(ProxyAccept::V2, false)).await;
        assert!(matches!(got, Err(Refused::Version("v1", "v2"))), "{got:?}");
        // Garbage after the signature.
        let (mut client, mut server, peer) = pair().await;
        client.write_all(b"PROXY TCP4 nonsense\r\n").await.unwrap();
        let got = accept(&mut server, peer, &settings(ProxyAccept::Any, false)).await;
        assert!(matches!(got, Err(Refused::Malformed(_))), "{got:?}");
        // Untrusted peers: closed, or with `direct` served unless they
        // send a header.
        let untrusted = ProxyProtocol {
            from: vec![lb_config::IpNet::parse("10.0.0.0/8").unwrap()],
            ..settings(ProxyAccept::Any, false)
        };
        let (_client, mut server, peer) = pair().await;
        assert!(matches!(
            accept(&mut server, peer, &untrusted).await,
            Err(Refused::Untrusted(_))
        ));
        let direct = ProxyProtocol {
            direct: true,
            ..untrusted.clone()
        };
        let (mut client, mut server, peer) = pair().await;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(accept(&mut server, peer, &direct).await, Ok(None)));
        let (mut client, mut server, peer) = pair().await;
        client
            .write_all(&header(ProxyVersion::V2, addrs(), None).unwrap())
            .await
            .unwrap();
        assert!(matches!(
            accept(&mut server, peer, &direct).await,
            Err(Refused::Untrusted(_))
        ));
    }

    #[test]
    fn mixed_families_are_sent_as_ipv6() {
        let mixed = Addresses {
            source: "192.0.2.7:4321".parse().unwrap(),
            destination: "[2001:db8::1]:443".parse().unwrap(),
        };
        let text = String::from_utf8(header(ProxyVersion::V1, mixed, None).unwrap()).unwrap();
        assert_eq!(text, "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 4321 443\r\n");
        let tls = TlsFacts {
            sni: Some("example.com".into()),
            alpn: Some(b"h2".to_vec()),
            client_identity: Some("CN=client".into()),
        };
        let bytes = header(ProxyVersion::V2, addrs(), Some(&tls)).unwrap();
        let parsed = v2::Header::try_from(bytes.as_slice()).unwrap();
        let tlvs: Vec<_> = parsed.tlvs().map(|t| t.unwrap()).collect();
        assert_eq!(tlvs[0].kind, v2::Type::ALPN as u8);
        assert_eq!(&*tlvs[0].value, b"h2");
        assert_eq!(tlvs[1].kind, v2::Type::Authority as u8);
        assert_eq!(&*tlvs[1].value, b"example.com");
        assert_eq!(tlvs[2].kind, v2::Type::SSL as u8);
        assert!(tlvs[2].value.ends_with(b"CN=client"));
    }
}
