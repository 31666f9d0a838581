//! The loaded program, attached to its interface, and the maps userspace
//! fills.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use aya::maps::{Array, HashMap as KernelHashMap, Map, MapData, PerCpuArray, PerCpuValues};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::layout::{self, Hop, Reason, MAX_BACKENDS, MAX_VIPS, RING_SIZE};
use crate::route;

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the driver, before the kernel allocates a socket buffer.
    Native,
    /// In the kernel's receive path, for drivers without XDP support.
    Generic,
}

impl Mode {
    fn flags(self) -> XdpMode {
        match self {
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

/// A virtual IP's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Transport {
    /// The IP protocol number.
    pub fn proto(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }
}

/// What the program should do for one virtual IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipTable {
    /// The virtual IP and port.
    pub vip: SocketAddrV4,
    /// Its transport.
    pub transport: Transport,
    /// The backends that keep the flows they have, by the index the table
    /// uses; one the table does not name (drained) takes no new flow.
    pub backends: Vec<Ipv4Addr>,
    /// The Maglev table (backend indices); empty when no backend is
    /// usable, which drops the virtual IP's packets.
    pub table: Vec<u32>,
}

/// What went wrong, naming what is missing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be loaded (privileges, kernel support).
    #[error("loading the XDP program: {0} (loading needs root, or CAP_BPF with CAP_NET_ADMIN, and a kernel with BPF and XDP)")]
    Load(String),
    /// The program could not be attached.
    #[error("attaching the XDP program to {interface} in {mode} mode: {reason}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode asked for.
        mode: &'static str,
        /// The kernel's answer.
        reason: String,
    },
    /// A map could not be read or written.
    #[error("XDP map {map}: {reason}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The kernel's answer.
        reason: String,
    },
    /// A backend's next hop could not be found.
    #[error("backend {backend}: {reason}")]
    Route {
        /// The backend.
        backend: Ipv4Addr,
        /// Why.
        reason: String,
    },
    /// More virtual IPs, backends or table slots than the program has room
    /// for.
    #[error("{0}")]
    Limit(String),
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        reason: e.to_string(),
    }
}

/// Packets and bytes the program counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Per virtual IP and backend: sent to that backend.
    pub flows: Vec<FlowCount>,
    /// Per reason: passed to the kernel or dropped.
    pub reasons: Vec<(Reason, u64, u64)>,
}

/// Packets and bytes a virtual IP sent to one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCount {
    /// The virtual IP.
    pub vip: SocketAddrV4,
    /// Its transport.
    pub transport: Transport,
    /// The backend.
    pub backend: Ipv4Addr,
    /// Packets.
    pub packets: u64,
    /// Bytes (the packets as they arrived, before encapsulation).
    pub bytes: u64,
}

/// A virtual IP and its transport.
type VipId = (SocketAddrV4, Transport);
/// A virtual IP's row in the Maglev map, the table last written there and
/// the backends it names.
#[derive(Debug, Default)]
struct Row {
    row: u32,
    written: Vec<u32>,
    named: Vec<Ipv4Addr>,
}

/// The balancer program, attached; dropping it detaches it.
pub struct Plane {
    /// Owns the program and so its attachment.
    _ebpf: Ebpf,
    vips: KernelHashMap<MapData, [u8; 8], [u8; 8]>,
    ring: Array<MapData, u32>,
    backends: Array<MapData, [u8; 24]>,
    flow_stats: PerCpuArray<MapData, [u64; 2]>,
    reasons: PerCpuArray<MapData, [u64; 2]>,
    /// Backend address → its slot in `backends`.
    ids: HashMap<Ipv4Addr, u32>,
    /// Virtual IP → its row, with the table last written there.
    rows: HashMap<VipId, Row>,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane")
            .field("backends", &self.ids.len())
            .field("vips", &self.rows.len())
            .finish()
    }
}

fn load(object: &[u8], small: bool) -> Result<Ebpf, Error> {
    let mut loader = EbpfLoader::new();
    if small {
        // The decapsulator uses none of the balancer's maps.
        for name in ["ring", "backends", "flows", "flow_stats"] {
            loader.map_max_entries(name, 1);
        }
    }
    loader
        .load(object)
        .map_err(|e| Error::Load(error_chain(&e)))
}

fn attach(ebpf: &mut Ebpf, program: &str, interface: &str, mode: Mode) -> Result<(), Error> {
    let fail = |reason: String| Error::Attach {
        interface: interface.to_owned(),
        mode: mode.as_str(),
        reason,
    };
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or_else(|| Error::Load(format!("the object has no program {program}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
    prog.load().map_err(|e| Error::Load(error_chain(&e)))?;
    prog.attach(interface, mode.flags())
        .map_err(|e| fail(error_chain(&e)))?;
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(Error::Map {
        map: name,
        reason: "missing from the object".to_owned(),
    })?;
    T::try_from(map).map_err(map_err(name))
}

/// The next hops of every backend some table names, sorted by address.
#[derive(Debug, Clone)]
pub struct Hops(Vec<Hop>);

/// Check `tables` against the program's room and resolve the next hop of
/// every backend they name (refreshing known ones). Needs no program:
/// it may run, and wait for neighbours, while the maps are read.
pub fn resolve(tables: &[VipTable]) -> Result<Hops, Error> {
    if tables.len() > MAX_VIPS as usize {
        return Err(Error::Limit(format!(
            "{} virtual IPs; the XDP program has room for {MAX_VIPS}",
            tables.len()
        )));
    }
    let mut wanted: Vec<Ipv4Addr> = tables.iter().flat_map(|t| t.backends.clone()).collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.len() > MAX_BACKENDS as usize {
        return Err(Error::Limit(format!(
            "{} backends; the XDP program has room for {MAX_BACKENDS}",
            wanted.len()
        )));
    }
    let mut hops = Vec::with_capacity(wanted.len());
    for (addr, hop) in wanted.iter().zip(route::resolve_all(&wanted)) {
        hops.push(hop.map_err(|reason| Error::Route {
            backend: *addr,
            reason,
        })?);
    }
    Ok(Hops(hops))
}

impl Plane {
    /// Load the balancer from `object` and attach it to `interface`.
    /// Nothing stays attached when this fails.
    pub fn attach(object: &[u8], interface: &str, mode: Mode) -> Result<Plane, Error> {
        let mut ebpf = load(object, false)?;
        let vips = take(&mut ebpf, "vips")?;
        let ring = take(&mut ebpf, "ring")?;
        let backends = take(&mut ebpf, "backends")?;
        let flow_stats = take(&mut ebpf, "flow_stats")?;
        let reasons = take(&mut ebpf, "reasons")?;
        attach(&mut ebpf, "xdp_balancer", interface, mode)?;
        Ok(Plane {
            _ebpf: ebpf,
            vips,
            ring,
            backends,
            flow_stats,
            reasons,
            ids: HashMap::new(),
            rows: HashMap::new(),
        })
    }

    /// Make the maps say `tables`: [`resolve`] and [`Plane::write`] in
    /// one.
    pub fn apply(&mut self, tables: &[VipTable]) -> Result<(), Error> {
        let hops = resolve(tables)?;
        self.write(tables, &hops)
    }

    /// Make the maps say `tables`, with the next hops [`resolve`] found
    /// for their backends: each virtual IP's table written where it
    /// changed, virtual IPs and backends no longer named taken out (their
    /// counters reset). Flows already in the flow table keep their backend
    /// while it is still named.
    pub fn write(&mut self, tables: &[VipTable], hops: &Hops) -> Result<(), Error> {
        let hops = &hops.0;
        let wanted: Vec<Ipv4Addr> = hops.iter().map(|h| h.addr).collect();
        let gone: Vec<(Ipv4Addr, u32)> = self
            .ids
            .iter()
            .filter(|(a, _)| wanted.binary_search(a).is_err())
            .map(|(a, id)| (*a, *id))
            .collect();
        for (addr, id) in gone {
            self.backends
                .set(id, layout::backend(None), 0)
                .map_err(map_err("backends"))?;
            for row in 0..MAX_VIPS {
                self.reset_counter(row * MAX_BACKENDS + id)?;
            }
            self.ids.remove(&addr);
        }
        for hop in hops {
            let id = match self.ids.get(&hop.addr) {
                Some(id) => *id,
                None => {
                    let id = (0..MAX_BACKENDS)
                        .find(|i| !self.ids.values().any(|v| v == i))
                        .ok_or_else(|| Error::Limit("no free backend slot".to_owned()))?;
                    self.ids.insert(hop.addr, id);
                    id
                }
            };
            self.backends
                .set(id, layout::backend(Some(hop)), 0)
                .map_err(map_err("backends"))?;
        }
        // Virtual IPs no longer named.
        let keep: Vec<(SocketAddrV4, Transport)> =
            tables.iter().map(|t| (t.vip, t.transport)).collect();
        let stale: Vec<((SocketAddrV4, Transport), u32)> = self
            .rows
            .iter()
            .filter(|(k, _)| !keep.contains(k))
            .map(|(k, r)| (*k, r.row))
            .collect();
        for ((vip, transport), row) in stale {
            let key = layout::vip_key(*vip.ip(), vip.port(), transport.proto());
            match self.vips.remove(&key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err("vips")(e)),
            }
            for id in 0..MAX_BACKENDS {
                self.reset_counter(row * MAX_BACKENDS + id)?;
            }
            self.rows.remove(&(vip, transport));
        }
        for t in tables {
            self.write_vip(t)?;
        }
        Ok(())
    }

    fn write_vip(&mut self, t: &VipTable) -> Result<(), Error> {
        if t.table.len() > RING_SIZE as usize {
            return Err(Error::Limit(format!(
                "a Maglev table of {} slots for {}; the XDP program has room for {RING_SIZE}",
                t.table.len(),
                t.vip
            )));
        }
        let key = (t.vip, t.transport);
        let Row {
            row, mut written, ..
        } = match self.rows.remove(&key) {
            Some(r) => r,
            None => Row {
                row: (0..MAX_VIPS)
                    .find(|r| !self.rows.values().any(|v| v.row == *r))
                    .ok_or_else(|| Error::Limit("no free virtual IP row".to_owned()))?,
                ..Row::default()
            },
        };
        let mut ids = Vec::with_capacity(t.table.len());
        for &i in &t.table {
            let addr = t.backends.get(i as usize).ok_or_else(|| {
                Error::Limit(format!(
                    "the table of {} names backend {i} of {}",
                    t.vip,
                    t.backends.len()
                ))
            })?;
            let id = self.ids.get(addr).copied().ok_or(Error::Route {
                backend: *addr,
                reason: "not resolved".to_owned(),
            })?;
            ids.push(id);
        }
        for (slot, id) in ids.iter().enumerate() {
            if written.get(slot) == Some(id) {
                continue;
            }
            let slot = u32::try_from(slot).map_err(|_| Error::Limit("slot".to_owned()))?;
            self.ring
                .set(row * RING_SIZE + slot, *id, 0)
                .map_err(map_err("ring"))?;
        }
        written.clone_from(&ids);
        let size = u32::try_from(ids.len()).map_err(|_| Error::Limit("table".to_owned()))?;
        self.vips
            .insert(
                layout::vip_key(*t.vip.ip(), t.vip.port(), t.transport.proto()),
                layout::vip_meta(row, size),
                0,
            )
            .map_err(map_err("vips"))?;
        self.rows.insert(
            key,
            Row {
                row,
                written,
                named: t.backends.clone(),
            },
        );
        Ok(())
    }

    fn reset_counter(&mut self, index: u32) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Map {
            map: "flow_stats",
            reason: e.to_string(),
        })?;
        let zeros = PerCpuValues::try_from(vec![[0u64; 2]; cpus]).map_err(|e| Error::Map {
            map: "flow_stats",
            reason: e.to_string(),
        })?;
        self.flow_stats
            .set(index, zeros, 0)
            .map_err(map_err("flow_stats"))
    }

    /// The counters, summed over CPUs, for every virtual IP and each
    /// backend its table names or that it sent packets to, and every
    /// reason.
    pub fn counters(&self) -> Result<Counters, Error> {
        let sum = |values: PerCpuValues<[u64; 2]>| {
            values.iter().fold((0u64, 0u64), |(p, b), [vp, vb]| {
                (p.wrapping_add(*vp), b.wrapping_add(*vb))
            })
        };
        let mut counters = Counters::default();
        let mut backends: Vec<(&Ipv4Addr, &u32)> = self.ids.iter().collect();
        backends.sort();
        let mut vips: Vec<(&VipId, &Row)> = self.rows.iter().collect();
        vips.sort_by_key(|((vip, t), _)| (*vip, t.proto()));
        for ((vip, transport), r) in vips {
            for (addr, id) in &backends {
                let (packets, bytes) = sum(self
                    .flow_stats
                    .get(&(r.row * MAX_BACKENDS + **id), 0)
                    .map_err(map_err("flow_stats"))?);
                if packets == 0 && !r.named.contains(addr) {
                    continue;
                }
                counters.flows.push(FlowCount {
                    vip: *vip,
                    transport: *transport,
                    backend: **addr,
                    packets,
                    bytes,
                });
            }
        }
        for reason in Reason::ALL {
            let (packets, bytes) = sum(self
                .reasons
                .get(&reason.slot(), 0)
                .map_err(map_err("reasons"))?);
            counters.reasons.push((reason, packets, bytes));
        }
        Ok(counters)
    }
}

/// The decapsulating program, attached; dropping it detaches it. On a
/// backend it unwraps the IP-in-IP packets the balancer sends and passes
/// everything else, so it also serves as the pass-through program native
/// XDP redirects need on a peer veth.
pub struct Decapsulator {
    _ebpf: Ebpf,
}

impl std::fmt::Debug for Decapsulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decapsulator")
    }
}

impl Decapsulator {
    /// Load the decapsulator from `object` and attach it to `interface`.
    pub fn attach(object: &[u8], interface: &str, mode: Mode) -> Result<Decapsulator, Error> {
        let mut ebpf = load(object, true)?;
        attach(&mut ebpf, "xdp_decap", interface, mode)?;
        Ok(Decapsulator { _ebpf: ebpf })
    }
}
