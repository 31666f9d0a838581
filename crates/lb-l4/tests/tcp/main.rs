//! End-to-end behaviour of `lb_l4::serve` on 127.0.0.1: a real listener,
//! real backends, and clients driving the flows.

mod support;

mod bulk_transfer;
mod connection_cap;
mod drain;
mod failover;
mod half_close;
mod idle_timeout;
mod observability;
