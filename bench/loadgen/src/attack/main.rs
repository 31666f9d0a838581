//! Slow-client attacks against a gateway binary with default settings,
//! while a legitimate client on 127.0.0.2 keeps sending requests.
//!
//! ```text
//! eg-attack --gateway target/release/expressgateway [--attack NAME] [--duration 30]
//! ```
//!
//! For each attack (`h2-zero-window`, `slow-post`, `slowloris`; all by
//! default) it starts its own backend (1,024 connections is the gateway's
//! default per backend) and a fresh gateway, runs the attack and the
//! legitimate client for the duration, and prints one line: legitimate
//! requests, failures, latency percentiles, the gateway's RSS growth and
//! the backend's peak open connections.

mod attacks;
mod backend;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use attacks::{Attack, Tally};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

struct Args {
    gateway: String,
    attacks: Vec<Attack>,
    duration: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let (mut gateway, mut attacks, mut duration) = (None, Attack::ALL.to_vec(), 30.0);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--gateway" => gateway = Some(value("--gateway")?),
            "--duration" => duration = value("--duration")?.parse().context("--duration")?,
            "--attack" => {
                let name = value("--attack")?;
                let attack = Attack::ALL.into_iter().find(|a| a.name() == name);
                attacks = vec![attack.with_context(|| format!("unknown attack {name:?}"))?];
            }
            other => bail!("unexpected argument {other:?}"),
        }
    }
    if !(1.0..=600.0).contains(&duration) {
        bail!("--duration must be 1..=600 seconds");
    }
    Ok(Args {
        gateway: gateway.context("--gateway PATH is required")?,
        attacks,
        duration: Duration::from_secs_f64(duration),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    for attack in &args.attacks {
        run(&args, *attack).await?;
    }
    Ok(())
}

/// A gateway process on a temporary config; killed on drop.
struct Gateway {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn start_gateway(binary: &str, backend: SocketAddr) -> anyhow::Result<Gateway> {
    let (listen, admin) = (free_addr()?, free_addr()?);
    let dir = std::env::temp_dir().join(format!("eg-attack-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("gateway.toml");
    // Every protection at its default: only the listener and the backend.
    std::fs::write(
        &config,
        format!(
            "[observability]\nmetrics_bind = \"{admin}\"\n\
             [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
             backends = [{{ address = \"{backend}\" }}]\n"
        ),
    )?;
    let child = Command::new(binary)
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let gw = Gateway {
        child,
        listen,
        admin,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).await.is_err() {
        if Instant::now() > deadline {
            bail!("the gateway never listened on {listen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(gw)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

async fn run(args: &Args, attack: Attack) -> anyhow::Result<()> {
    let (backend, conns) = backend::start().await?;
    let gw = start_gateway(&args.gateway, backend).await?;
    let pid = gw.child.id();
    // Warm the path (first upstream connection, allocator) before the
    // baseline.
    let mut warm = Legit::connect(gw.listen).await?;
    for _ in 0..20 {
        warm.get().await?;
    }
    drop(warm);
    let rss_before = rss_kib(pid);
    conns.reset_peak();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    attacks::launch(attack, gw.listen, Arc::clone(&stop), Arc::clone(&tally));
    let legit = tokio::spawn(legitimate(gw.listen, args.duration));
    let mut rss_peak = rss_before;
    let started = Instant::now();
    while started.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = legit.await??;
    let cuts = client_cuts(gw.admin).await.unwrap_or_default();
    let mut lat = seen.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    println!(
        "attack={} duration_s={} legit_requests={} legit_failures={} failure_kinds={:?} \
         p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rss_before_mib={:.1} rss_peak_mib={:.1} \
         rss_growth_mib={:.1} backend_conns_peak={} attack_conns_opened={} attack_conns_closed_by_gateway={} \
         gateway_cuts={cuts:?}",
        attack.name(),
        args.duration.as_secs(),
        seen.latencies_us.len() as u64 + seen.failures.len() as u64,
        seen.failures.len(),
        summarize(&seen.failures),
        pct(0.5),
        pct(0.99),
        lat.last().map_or(0.0, |us| f64::from(*us) / 1000.0),
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_peak.saturating_sub(rss_before) as f64 / 1024.0,
        conns.peak(),
        tally.opened.load(Ordering::Relaxed),
        tally.closed.load(Ordering::Relaxed),
    );
    drop(gw);
    // Let the attack tasks see the stop and their sockets close.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(())
}

/// `reason=count` of `expressgateway_http_client_cut_total` (none from a
/// build without it).
async fn client_cuts(admin: SocketAddr) -> anyhow::Result<Vec<String>> {
    let mut stream = TcpStream::connect(admin).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("expressgateway_http_client_cut_total{"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?;
            let value = l.rsplit(' ').next()?;
            Some(format!("{reason}={value}"))
        })
        .collect())
}

fn summarize(failures: &[String]) -> Vec<(String, usize)> {
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for f in failures {
        match kinds.iter_mut().find(|(k, _)| k == f) {
            Some((_, n)) => *n += 1,
            None => kinds.push((f.clone(), 1)),
        }
    }
    kinds
}

#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    failures: Vec<String>,
}

/// 100 GETs a second from 127.0.0.2, one at a time on a keep-alive
/// connection (a new one after a failure), each allowed 10 s.
async fn legitimate(gateway: SocketAddr, duration: Duration) -> anyhow::Result<Seen> {
    let mut seen = Seen::default();
    let mut conn: Option<Legit> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    while started.elapsed() < duration {
        tick.tick().await;
        let t = Instant::now();
        let result = async {
            if conn.is_none() {
                conn = Some(Legit::connect(gateway).await?);
            }
            match conn.as_mut() {
                Some(c) => c.get().await,
                None => bail!("no connection"),
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), result).await {
            Ok(Ok(200)) => seen
                .latencies_us
                .push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX)),
            Ok(Ok(status)) => seen.failures.push(format!("status {status}")),
            Ok(Err(e)) => {
                seen.failures.push(format!("error: {e}"));
                conn = None;
            }
            Err(_) => {
                seen.failures.push("timeout".into());
                conn = None;
            }
        }
    }
    Ok(seen)
}

/// A keep-alive HTTP/1.1 connection from 127.0.0.2; responses framed by
/// `Content-Length`.
struct Legit {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Legit {
    async fn connect(gateway: SocketAddr) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind("127.0.0.2:0".parse()?)?;
        let stream = socket.connect(gateway).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    async fn get(&mut self) -> anyhow::Result<u16> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: legit\r\n\r\n")
            .await?;
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        let len: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .context("no Content-Length")?;
        while self.buf.len() < end + 4 + len {
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed in the body");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.drain(..end + 4 + len);
        Ok(status)
    }
}
