//! ExpressGateway's XDP fast path: in-kernel L4 balancing of TCP and UDP
//! virtual IPs towards backends reached by IP-in-IP, which answer clients
//! directly (direct server return).
//!
//! The kernel program (`bpf/balancer.c`, compiled object beside it) looks
//! each packet for a virtual IP up in a flow table, else in the virtual
//! IP's Maglev table, encapsulates it and sends it out. Everything that is
//! not per packet is decided here, in userspace: [`Plane`] loads and
//! attaches the program, writes each virtual IP's Maglev table and its
//! backends' next hops ([`route`]), and reads the counters back.
//! [`Decapsulator`] attaches the companion program a backend without an
//! `ipip` device uses to unwrap what the gateway sends.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(missing_docs)]

mod hash;
mod layout;
mod plane;
pub mod route;

pub use hash::flow_hash;
pub use layout::{Reason, MAX_BACKENDS, MAX_VIPS, RING_SIZE};
pub use plane::{
    resolve, Counters, Decapsulator, Error, FlowCount, Hops, Mode, Plane, Transport, VipTable,
};

/// The compiled kernel programs (`bpf/balancer.c`).
pub const OBJECT: &[u8] = include_bytes!("../bpf/balancer.o");
