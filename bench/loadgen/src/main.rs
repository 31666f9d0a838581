//! Load for the side-by-side benchmark: fixed-rate HTTP/1.1 (below),
//! closed-loop HTTP/3 with `eg-loadgen h3 ...` (see `h3.rs`), closed-loop
//! WebSocket messages with `eg-loadgen ws ...` (see `ws.rs`), closed-loop
//! UDP datagrams with `eg-loadgen udp ...` and its echo backend
//! (`udp-echo`: see `udp.rs`), open-loop UDP datagrams and their sink for
//! the XDP benchmark (`udp-blast`, `udp-sink`: see `blast.rs`), and the
//! gRPC and WebSocket echo backends (`grpc-echo`, `ws-echo`: see
//! `echo.rs`).
//!
//! Requests arrive on a schedule, `rate` per second, evenly spaced, whether
//! or not earlier ones have been answered (an open loop). A pacer thread
//! releases each request at its due time to whichever of the `connections`
//! keep-alive connections is free; a request that finds every connection
//! busy waits for one. Latency runs from the release to the last byte of
//! the response, so a stall is charged to every request it held back, not
//! only to the one in flight (the coordinated omission a closed-loop client
//! such as `wrk` hides).
//!
//! ```text
//! eg-loadgen --rate 25000 --connections 64 --duration 8 [--warmup 1] http://127.0.0.1:8080/
//! ```
//!
//! Prints one line: `requests=N errors=N rate=R p50_ms=.. p90_ms=.. p99_ms=.. p999_ms=.. max_ms=..`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

mod blast;
mod echo;
mod h3;
mod udp;
mod ws;

struct Args {
    rate: f64,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    addr: SocketAddr,
    authority: String,
    path: String,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut rate = None;
    let mut connections = 64;
    let mut duration = Duration::from_secs(8);
    let mut warmup = Duration::from_secs(1);
    let mut url = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--rate" => rate = Some(value("--rate")?.parse::<f64>().context("--rate")?),
            "--connections" => {
                connections = value("--connections")?.parse().context("--connections")?
            }
            "--duration" => {
                duration =
                    Duration::from_secs_f64(value("--duration")?.parse().context("--duration")?)
            }
            "--warmup" => {
                warmup = Duration::from_secs_f64(value("--warmup")?.parse().context("--warmup")?)
            }
            other if other.starts_with("http://") => url = Some(other.to_owned()),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let rate = rate.context("--rate is required")?;
    if !rate.is_finite() || rate <= 0.0 || connections == 0 {
        bail!("--rate and --connections must be positive");
    }
    let url: http::Uri = url
        .context("a http:// URL is required")?
        .parse()
        .context("the URL")?;
    let authority = url
        .authority()
        .context("the URL needs host:port")?
        .to_string();
    let addr = authority
        .parse()
        .context("the URL's authority must be an IP address and port")?;
    let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    Ok(Args {
        rate,
        connections,
        duration,
        warmup,
        addr,
        authority,
        path,
    })
}

/// What one connection saw: latencies in microseconds of requests due
/// after the warm-up, and failures.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    errors: u64,
}

/// What every closed-loop mode takes: `--CLIENTS N` (the mode names the
/// flag: connections, sessions), `--size BYTES`, `--duration S`,
/// `--warmup S` and one target.
struct LoopArgs {
    clients: usize,
    size: usize,
    duration: Duration,
    warmup: Duration,
    target: String,
}

fn loop_args(
    mut it: impl Iterator<Item = String>,
    clients_flag: &str,
    size: usize,
) -> anyhow::Result<LoopArgs> {
    let mut args = LoopArgs {
        clients: 64,
        size,
        duration: Duration::from_secs(8),
        warmup: Duration::from_secs(1),
        target: String::new(),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            flag if flag == clients_flag => args.clients = value(clients_flag)?.parse()?,
            "--size" => args.size = value("--size")?.parse()?,
            "--duration" => args.duration = Duration::from_secs_f64(value("--duration")?.parse()?),
            "--warmup" => args.warmup = Duration::from_secs_f64(value("--warmup")?.parse()?),
            other if other.starts_with("--") => bail!("unexpected argument {other:?}"),
            other => args.target = other.to_owned(),
        }
    }
    if args.clients == 0 || args.size == 0 {
        bail!("{clients_flag} and --size must be positive");
    }
    if args.target.is_empty() {
        bail!("a target is required");
    }
    Ok(args)
}

/// Run `clients` copies of `client` on one thread, each given the time
/// measuring starts, the time to stop and the shared count of completed
/// exchanges, then print the result line with `completed=N` appended.
fn closed_loop<F, Fut>(
    clients: usize,
    warmup: Duration,
    duration: Duration,
    client: F,
) -> anyhow::Result<()>
where
    F: Fn(Instant, Instant, Arc<std::sync::atomic::AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = Seen> + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = measure_from + duration;
        let completed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let local = tokio::task::LocalSet::new();
        let tasks: Vec<_> = (0..clients)
            .map(|_| local.spawn_local(client(measure_from, end, Arc::clone(&completed))))
            .collect();
        local
            .run_until(async move {
                let mut all = Seen::default();
                for t in tasks {
                    let seen = t.await?;
                    all.errors += seen.errors;
                    all.latencies_us.extend(seen.latencies_us);
                }
                let finished = Instant::now().min(end);
                let done = completed.load(std::sync::atomic::Ordering::Relaxed);
                report(all, measure_from, finished, &format!(" completed={done}"));
                Ok(())
            })
            .await
    })
}

/// Print the result line: requests answered from `measure_from` on, over
/// the time until `finished`, and their latency percentiles; `extra` is
/// appended as is.
fn report(seen: Seen, measure_from: Instant, finished: Instant, extra: &str) {
    let mut lat = seen.latencies_us;
    lat.sort_unstable();
    let elapsed = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let achieved = if elapsed > 0.0 {
        lat.len() as f64 / elapsed
    } else {
        0.0
    };
    println!(
        "requests={} errors={} rate={:.1} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}{extra}",
        lat.len(),
        seen.errors,
        achieved,
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().map_or(0.0, |us| f64::from(*us) / 1000.0),
    );
}

/// Release instants, handed out in order to whichever connection asks first.
type Queue = Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>;

async fn connection(args: Arc<Args>, queue: Queue, measure_from: Instant) -> Seen {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: eg-loadgen\r\n\r\n",
        args.path, args.authority
    )
    .into_bytes();
    let mut seen = Seen::default();
    let mut conn: Option<Conn> = None;
    loop {
        let released = {
            let mut rx = queue.lock().await;
            rx.recv().await
        };
        let Some(released) = released else {
            return seen;
        };
        if conn.is_none() {
            conn = Conn::open(args.addr).await.ok();
        }
        let ok = match conn.as_mut() {
            Some(c) => c.exchange(&request).await.unwrap_or(false),
            None => false,
        };
        if !ok {
            // The connection may be broken; the next request opens another.
            conn = None;
        }
        if released >= measure_from {
            if ok {
                let us = released.elapsed().as_micros();
                seen.latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            } else {
                seen.errors += 1;
            }
        }
    }
}

/// A keep-alive HTTP/1.1 connection reduced to what the benchmark needs:
/// one request at a time, responses framed by `Content-Length`. Kept this
/// lean so the load generator, which shares a core with the backend, is
/// not what limits the latencies measured.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Send `request` and read its whole response; `Ok(true)` for a 2xx.
    /// A response without `Content-Length`, or with bytes past its end, is
    /// an error: the benchmark's responses always carry one.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<bool> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        let (head_len, status, body_len) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            self.fill().await?;
        };
        let total = head_len + body_len;
        while self.buf.len() < total {
            self.fill().await?;
        }
        if self.buf.len() > total {
            return Err(bad("bytes after the response"));
        }
        Ok((200..300).contains(&status))
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

/// `(head length, status, Content-Length)` once `buf` holds a whole
/// response head.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(usize, u16, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(buf.get(..end).unwrap_or_default())
        .map_err(|_| bad("response head is not text"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| bad("no Content-Length"))?;
    Ok(Some((end + 4, status, length)))
}

/// Release one request per `1 / rate` seconds from `start` until `end`.
/// Sleeps are coarse (tens of microseconds late), so every request due by
/// a wake-up is released then, stamped with that instant.
fn pace(tx: mpsc::UnboundedSender<Instant>, rate: f64, start: Instant, end: Instant) {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut next = start;
    while next < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(Duration::from_micros(500)));
            continue;
        }
        while next <= now && next < end {
            // Released now: a late wake-up of this thread is not charged
            // to the target.
            if tx.send(now).is_err() {
                return;
            }
            next += interval;
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    sorted.get(i).map_or(0.0, |us| f64::from(*us) / 1000.0)
}

fn main() -> anyhow::Result<()> {
    let mut it = std::env::args().skip(1).peekable();
    match it.peek().map(String::as_str) {
        Some("h3") => {
            it.next();
            return h3::main(it);
        }
        Some("ws") => {
            it.next();
            return ws::main(it);
        }
        Some("grpc-echo") => {
            it.next();
            return echo::grpc(it);
        }
        Some("ws-echo") => {
            it.next();
            return echo::websocket(it);
        }
        Some("udp") => {
            it.next();
            return udp::main(it);
        }
        Some("udp-echo") => {
            it.next();
            return udp::echo(it);
        }
        Some("udp-blast") => {
            it.next();
            return blast::blast(it);
        }
        Some("udp-sink") => {
            it.next();
            return blast::sink(it);
        }
        Some("h1-floor") => {
            it.next();
            return echo::h1_floor(it);
        }
        Some("h2-floor") => {
            it.next();
            return echo::h2_floor(it);
        }
        Some("h2-serve") => {
            it.next();
            return echo::h2_serve(it);
        }
        _ => {}
    }
    let args = Arc::new(parse_args(it)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let queue: Queue = Arc::new(Mutex::new(rx));
    let start = Instant::now() + Duration::from_millis(200);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let (rate, connections) = (args.rate, args.connections);
    let pacer = std::thread::spawn(move || pace(tx, rate, start, end));
    let seen = runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                tokio::spawn(connection(
                    Arc::clone(&args),
                    Arc::clone(&queue),
                    measure_from,
                ))
            })
            .collect();
        let mut all = Seen::default();
        for t in tasks {
            if let Ok(s) = t.await {
                all.latencies_us.extend(s.latencies_us);
                all.errors += s.errors;
            }
        }
        all
    });
    let _ = pacer.join();
    // Requests due in the measured window, over the time until the last
    // of them was answered.
    report(seen, measure_from, Instant::now(), "");
    Ok(())
}
