//! The raw `[xdp]` table: the in-kernel fast path for L4 virtual IPs.

use serde::Deserialize;

/// `[xdp]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawXdp {
    /// The network interface client packets arrive on.
    pub interface: String,
    /// How the program is attached: `native` or `generic`.
    pub mode: Option<RawXdpMode>,
    /// Virtual IPs served in the kernel.
    #[serde(default)]
    pub vips: Vec<RawXdpVip>,
}

/// `[xdp] mode` tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawXdpMode {
    /// In the network driver.
    Native,
    /// In the kernel's generic network path, for drivers without XDP
    /// support.
    Generic,
}

/// `[[xdp.vips]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawXdpVip {
    /// `ip:port` of the virtual IP.
    pub address: String,
    /// `tcp` or `udp`.
    pub transport: RawXdpTransport,
    /// The named cluster whose backends serve it.
    pub cluster: String,
}

/// `[[xdp.vips]] transport` tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawXdpTransport {
    /// TCP segments.
    Tcp,
    /// UDP datagrams.
    Udp,
}
