//! The kernel program's map layouts (`bpf/balancer.c`), as byte arrays:
//! every key and value is written and read here field by field.

use std::net::Ipv4Addr;

/// Virtual IPs one program serves.
pub const MAX_VIPS: u32 = 16;
/// Slots of a virtual IP's row in the Maglev map: the largest table a
/// cluster on the XDP path may have.
pub const RING_SIZE: u32 = 65537;
/// Backends across all virtual IPs.
pub const MAX_BACKENDS: u32 = 1024;

/// Why the program passed a packet to the kernel or dropped it; each is a
/// slot of the `reasons` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Passed: not for a virtual IP (another address, port or protocol).
    NotVip,
    /// Passed: an IP fragment.
    Fragment,
    /// Passed: ICMP.
    Icmp,
    /// Passed: too short to read its headers.
    Short,
    /// Dropped: its virtual IP has no usable backend.
    NoBackend,
    /// Dropped: no room to add the outer header.
    NoRoom,
}

impl Reason {
    /// Every reason, in slot order.
    pub const ALL: [Reason; 6] = [
        Reason::NotVip,
        Reason::Fragment,
        Reason::Icmp,
        Reason::Short,
        Reason::NoBackend,
        Reason::NoRoom,
    ];

    /// The slot in `reasons`.
    pub fn slot(self) -> u32 {
        match self {
            Reason::NotVip => 0,
            Reason::Fragment => 1,
            Reason::Icmp => 2,
            Reason::Short => 3,
            Reason::NoBackend => 4,
            Reason::NoRoom => 5,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotVip => "not_vip",
            Reason::Fragment => "fragment",
            Reason::Icmp => "icmp",
            Reason::Short => "short",
            Reason::NoBackend => "no_backend",
            Reason::NoRoom => "no_room",
        }
    }

    /// Whether the packet was dropped (else passed to the kernel).
    pub fn dropped(self) -> bool {
        matches!(self, Reason::NoBackend | Reason::NoRoom)
    }
}

/// `struct vip_key`: address and port in network order, the IP protocol.
pub(crate) fn vip_key(addr: Ipv4Addr, port: u16, proto: u8) -> [u8; 8] {
    let mut k = [0u8; 8];
    let (a, rest) = k.split_at_mut(4);
    a.copy_from_slice(&addr.octets());
    let (p, rest) = rest.split_at_mut(2);
    p.copy_from_slice(&port.to_be_bytes());
    if let Some(slot) = rest.first_mut() {
        *slot = proto;
    }
    k
}

/// `struct vip_meta`: the virtual IP's row and its table's size.
pub(crate) fn vip_meta(row: u32, ring_size: u32) -> [u8; 8] {
    let mut v = [0u8; 8];
    let (a, b) = v.split_at_mut(4);
    a.copy_from_slice(&row.to_ne_bytes());
    b.copy_from_slice(&ring_size.to_ne_bytes());
    v
}

/// Where a backend's packets go: its address, the outer source address,
/// the egress interface and the next hop's and the interface's MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The backend.
    pub addr: Ipv4Addr,
    /// The outer header's source.
    pub saddr: Ipv4Addr,
    /// Egress interface index.
    pub ifindex: u32,
    /// Next hop's MAC.
    pub dmac: [u8; 6],
    /// Egress interface's MAC.
    pub smac: [u8; 6],
}

/// `struct backend`; all zeroes marks an unused slot.
pub(crate) fn backend(hop: Option<&Hop>) -> [u8; 24] {
    let mut v = [0u8; 24];
    if let Some(h) = hop {
        let fields: [&[u8]; 5] = [
            &h.addr.octets(),
            &h.saddr.octets(),
            &h.ifindex.to_ne_bytes(),
            &h.dmac,
            &h.smac,
        ];
        let mut at = 0;
        for f in fields {
            if let Some(dst) = v.get_mut(at..at + f.len()) {
                dst.copy_from_slice(f);
            }
            at += f.len();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_lie_as_the_program_reads_them() {
        assert_eq!(
            vip_key(Ipv4Addr::new(10, 0, 0, 10), 80, 6),
            [10, 0, 0, 10, 0, 80, 6, 0]
        );
        assert_eq!(vip_meta(1, 7), [1, 0, 0, 0, 7, 0, 0, 0]);
        let hop = Hop {
            addr: Ipv4Addr::new(10, 1, 0, 2),
            saddr: Ipv4Addr::new(10, 1, 0, 1),
            ifindex: 3,
            dmac: [1, 2, 3, 4, 5, 6],
            smac: [7, 8, 9, 10, 11, 12],
        };
        assert_eq!(
            backend(Some(&hop)),
            [10, 1, 0, 2, 10, 1, 0, 1, 3, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        assert_eq!(
            Reason::ALL.iter().map(|r| r.slot()).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4, 5]
        );
    }
}
