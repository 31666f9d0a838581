//! Where a backend's packets leave: the kernel's route to it (egress
//! interface, gateway), the source address the kernel would use towards
//! it, and the next hop's MAC from the neighbour table, probed when the
//! kernel does not know it yet. Read from `/proc/net/route`,
//! `/proc/net/arp` and `/sys/class/net` of the gateway's network
//! namespace.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::layout::Hop;

/// How long a neighbour that is not known yet is waited for.
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// `RTF_UP`, `RTF_GATEWAY`.
const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;
/// `ATF_COM`: a complete neighbour entry.
const ATF_COM: u32 = 0x2;
/// The discard port: a probe sent there to make the kernel resolve a
/// neighbour asks nothing of the backend.
const DISCARD_PORT: u16 = 9;

/// The route, source address and next hop towards each of `backends`, in
/// their order. Neighbours the kernel does not know yet are probed all at
/// once and waited for together (up to 2 s in all).
pub fn resolve_all(backends: &[Ipv4Addr]) -> Vec<Result<Hop, String>> {
    let partial: Vec<Result<Toward, String>> = backends.iter().map(|&b| towards(b)).collect();
    let mut hops: Vec<Option<Result<Hop, String>>> = vec![None; backends.len()];
    let arp = read("/proc/net/arp").unwrap_or_default();
    let mut waiting = Vec::new();
    for (slot, p) in hops.iter_mut().zip(&partial) {
        match p {
            Err(e) => *slot = Some(Err(e.clone())),
            Ok(t) => match lookup_neighbour(t.next(), &t.route.interface, &arp) {
                Some(dmac) => *slot = Some(Ok(t.hop(dmac))),
                None => {
                    probe(t.next());
                    waiting.push(t.next());
                }
            },
        }
    }
    let start = Instant::now();
    while !waiting.is_empty() && start.elapsed() < PROBE_WAIT {
        std::thread::sleep(Duration::from_millis(20));
        let arp = read("/proc/net/arp").unwrap_or_default();
        for (slot, p) in hops.iter_mut().zip(&partial) {
            if let (None, Ok(t)) = (&slot, p) {
                if let Some(dmac) = lookup_neighbour(t.next(), &t.route.interface, &arp) {
                    waiting.retain(|w| *w != t.next());
                    *slot = Some(Ok(t.hop(dmac)));
                }
            }
        }
    }
    hops.into_iter()
        .zip(&partial)
        .map(|(hop, p)| {
            hop.unwrap_or_else(|| {
                let (next, interface) = match p {
                    Ok(t) => (t.next(), t.route.interface.as_str()),
                    Err(_) => (Ipv4Addr::UNSPECIFIED, ""),
                };
                Err(format!(
                    "no neighbour entry for {next} on {interface} (no answer to ARP within {} s)",
                    PROBE_WAIT.as_secs()
                ))
            })
        })
        .collect()
}

/// Everything but the next hop's MAC: the backend, its route, the source
/// address towards it, the egress interface's index and MAC.
#[derive(Debug, Clone)]
struct Toward {
    backend: Ipv4Addr,
    route: Route,
    saddr: Ipv4Addr,
    ifindex: u32,
    smac: [u8; 6],
}

impl Toward {
    /// The neighbour packets to the backend go to.
    fn next(&self) -> Ipv4Addr {
        self.route.gateway.unwrap_or(self.backend)
    }

    fn hop(&self, dmac: [u8; 6]) -> Hop {
        Hop {
            addr: self.backend,
            saddr: self.saddr,
            ifindex: self.ifindex,
            dmac,
            smac: self.smac,
        }
    }
}

fn towards(backend: Ipv4Addr) -> Result<Toward, String> {
    let route = lookup_route(backend, &read("/proc/net/route")?)?;
    let saddr = source_for(backend)?;
    let ifindex = read(&format!("/sys/class/net/{}/ifindex", route.interface))?
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("ifindex of {}: {e}", route.interface))?;
    let smac = parse_mac(read(&format!("/sys/class/net/{}/address", route.interface))?.trim())
        .ok_or_else(|| format!("{} has no Ethernet address", route.interface))?;
    Ok(Toward {
        backend,
        route,
        saddr,
        ifindex,
        smac,
    })
}

/// One empty datagram to `next`'s discard port: the kernel resolves the
/// neighbour to send it.
fn probe(next: Ipv4Addr) {
    if let Ok(socket) = UdpSocket::bind("0.0.0.0:0") {
        let _ = socket.send_to(&[], SocketAddrV4::new(next, DISCARD_PORT));
    }
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// A route's egress interface and gateway (`None`: on link).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    interface: String,
    gateway: Option<Ipv4Addr>,
}

/// The longest-prefix match in `/proc/net/route` (fields in hex, in the
/// kernel's byte order), the lowest metric among equals.
fn lookup_route(dst: Ipv4Addr, table: &str) -> Result<Route, String> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let addr = |s: &str| hex(s).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    let mut best: Option<(u32, u32, Route)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [iface, dest, gw, flags, _, _, metric, mask, ..] = f.as_slice() else {
            continue;
        };
        let (Some(dest), Some(gw), Some(flags), Some(metric), Some(mask)) = (
            addr(dest),
            addr(gw),
            hex(flags),
            metric.parse::<u32>().ok(),
            addr(mask),
        ) else {
            continue;
        };
        if flags & RTF_UP == 0 {
            continue;
        }
        let mask_bits = u32::from(mask);
        if u32::from(dst) & mask_bits != u32::from(dest) & mask_bits {
            continue;
        }
        let prefix = mask_bits.count_ones();
        let better = best
            .as_ref()
            .is_none_or(|(p, m, _)| prefix > *p || (prefix == *p && metric < *m));
        if better {
            let gateway = (flags & RTF_GATEWAY != 0 && !gw.is_unspecified()).then_some(gw);
            best = Some((
                prefix,
                metric,
                Route {
                    interface: (*iface).to_owned(),
                    gateway,
                },
            ));
        }
    }
    best.map(|(_, _, r)| r)
        .ok_or_else(|| format!("no route to {dst}"))
}

/// The source address the kernel picks towards `dst`: a connected UDP
/// socket's local address (connecting sends nothing).
fn source_for(dst: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("source address: {e}"))?;
    socket
        .connect(SocketAddrV4::new(dst, DISCARD_PORT))
        .map_err(|e| format!("no route to {dst}: {e}"))?;
    match socket.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => Ok(*a.ip()),
        Ok(other) => Err(format!("source address towards {dst} is {other}")),
        Err(e) => Err(format!("source address towards {dst}: {e}")),
    }
}

fn lookup_neighbour(ip: Ipv4Addr, interface: &str, table: &str) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _, flags, mac, _, dev, ..] = f.as_slice() else {
            return None;
        };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        (addr.parse::<Ipv4Addr>().ok()? == ip && *dev == interface && flags & ATF_COM != 0)
            .then(|| parse_mac(mac))
            .flatten()
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth1\t0000010A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth2\t0200010A\t00000000\t0001\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";

    #[test]
    fn the_longest_prefix_wins() {
        let r = |ip: [u8; 4]| lookup_route(Ipv4Addr::from(ip), ROUTES);
        assert_eq!(
            r([10, 1, 0, 2]),
            Ok(Route {
                interface: "eth2".into(),
                gateway: None
            })
        );
        assert_eq!(
            r([10, 1, 0, 3]),
            Ok(Route {
                interface: "eth1".into(),
                gateway: None
            })
        );
        assert_eq!(
            r([192, 0, 2, 1]),
            Ok(Route {
                interface: "eth0".into(),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1))
            })
        );
        assert!(lookup_route(Ipv4Addr::new(192, 0, 2, 1), "header\n").is_err());
    }

    #[test]
    fn only_complete_neighbours_on_the_interface_count() {
        let arp = "\
IP address       HW type     Flags       HW address            Mask     Device
10.1.0.2         0x1         0x2         aa:bb:cc:dd:ee:01     *        eth1
10.1.0.3         0x1         0x0         00:00:00:00:00:00     *        eth1
";
        let ip = |d| Ipv4Addr::new(10, 1, 0, d);
        assert_eq!(
            lookup_neighbour(ip(2), "eth1", arp),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1])
        );
        assert_eq!(lookup_neighbour(ip(2), "eth0", arp), None);
        assert_eq!(lookup_neighbour(ip(3), "eth1", arp), None);
        assert_eq!(parse_mac("aa:bb:cc:dd:ee"), None);
    }
}
