//! Open-loop UDP load, for the XDP benchmark: datagrams sent as fast as
//! one thread can, and a sink that counts what arrives.
//!
//! ```text
//! eg-loadgen udp-blast --sockets 16 --size 64 --duration 8 10.99.100.1:5300
//! eg-loadgen udp-sink 0.0.0.0:5300 --duration 12
//! ```
//!
//! `udp-blast` sends from `sockets` sockets (each its own source port, so
//! its own flow) in turn, without waiting for anything, and prints
//! `sent=N errors=N seconds=S`. `udp-sink` counts the datagrams it
//! receives until `duration` has passed since it started and prints
//! `received=N seconds=S`, the time from the first datagram to the last.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// `udp-blast`.
pub fn blast(it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = crate::loop_args(it, "--sockets", 64)?;
    let target: SocketAddr = args.target.parse().context("the target must be IP:PORT")?;
    let unspecified: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mut sockets = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let s = UdpSocket::bind(unspecified)?;
        s.connect(target)?;
        sockets.push(s);
    }
    let payload = vec![0x5au8; args.size];
    let start = Instant::now();
    let end = start + args.duration;
    let (mut sent, mut errors) = (0u64, 0u64);
    for round in 0u64.. {
        for s in &sockets {
            match s.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        // A clock read every 64 rounds, not per datagram.
        if round % 64 == 0 && Instant::now() >= end {
            break;
        }
    }
    println!(
        "sent={sent} errors={errors} seconds={:.3}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `udp-sink`.
pub fn sink(mut it: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut addr = None;
    let mut duration = Duration::from_secs(10);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration" => {
                let v = it.next().context("--duration needs a value")?;
                duration = Duration::from_secs_f64(v.parse()?);
            }
            other if other.starts_with("--") => bail!("unexpected argument {other:?}"),
            other => {
                addr = Some(
                    other
                        .parse::<SocketAddr>()
                        .context("the address must be IP:PORT")?,
                )
            }
        }
    }
    let socket = UdpSocket::bind(addr.context("an address is required")?)?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    let start = Instant::now();
    let mut buf = vec![0u8; 65_535];
    let mut received = 0u64;
    let (mut first, mut last) = (None, start);
    while start.elapsed() < duration {
        if socket.recv(&mut buf).is_ok() {
            let now = Instant::now();
            first.get_or_insert(now);
            last = now;
            received += 1;
        }
    }
    let seconds = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    println!("received={received} seconds={seconds:.3}");
    Ok(())
}
