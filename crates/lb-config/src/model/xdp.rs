//! The validated `[xdp]` section: virtual IPs the kernel balances before
//! the network stack sees their packets.

use std::net::SocketAddrV4;

/// The in-kernel XDP fast path: an XDP program on `interface` takes the
/// packets of each virtual IP and forwards them, encapsulated IP-in-IP, to
/// a backend of the VIP's cluster chosen by maglev; the backend answers the
/// client directly (direct server return).
///
/// A cluster named by a VIP serves XDP VIPs only. Its policy is
/// [`Policy::Maglev`](crate::Policy::Maglev), its `maglev_table_size` at
/// most [`Xdp::MAX_MAGLEV_TABLE_SIZE`], its backends IPv4 addresses on the
/// VIP's port whose protocol is the VIP's transport, and its health check,
/// if any, a `tcp` one. The keys that mean nothing there are refused, and
/// hold these values: no hash key (the kernel program hashes each flow
/// itself), no retries (`attempts` 0), no outlier detection, no connect
/// failure backoff, no circuit breaker limits, no panic mode (threshold
/// 0), and the defaults for timeouts, pool and ring size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xdp {
    /// The network interface client packets arrive on; it exists on this
    /// host.
    pub interface: String,
    /// How the program is attached.
    pub mode: XdpMode,
    /// Virtual IPs, at least one, in file order; no two share an address
    /// and a transport.
    pub vips: Vec<XdpVip>,
}

impl Xdp {
    /// The most entries of a cluster's maglev table the kernel program
    /// has room for (a prime).
    pub const MAX_MAGLEV_TABLE_SIZE: usize = 65_537;
}

/// How the XDP program is attached to its interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// In the network driver, before any socket buffer is allocated: the
    /// fast one, for drivers that support XDP.
    Native,
    /// In the kernel's generic receive path: works on every interface,
    /// at a fraction of native speed.
    Generic,
}

impl XdpMode {
    /// The config token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }
}

/// A virtual IP the XDP program serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpVip {
    /// The IPv4 address and port clients send to (port not 0).
    pub address: SocketAddrV4,
    /// Which packets to that address and port it takes.
    pub transport: XdpTransport,
    /// The named cluster whose backends serve it.
    pub cluster: String,
}

/// The transport of an XDP virtual IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpTransport {
    /// TCP segments.
    Tcp,
    /// UDP datagrams.
    Udp,
}

impl XdpTransport {
    /// The config token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}
