//! Closed-loop HTTP/3 load: `connections` QUIC connections, each carrying
//! `streams` request loops at once. Every loop sends a GET, reads the whole
//! response, and sends the next, until the run's request budget or its time
//! is spent. Latency runs from sending the request head to the last byte of
//! the response (a closed loop: unlike the fixed-rate mode, a stall holds
//! back the requests behind it without charging them).
//!
//! ```text
//! eg-loadgen h3 --ca ca.pem [--server-name localhost] --connections 16 --streams 32 \
//!     --requests 2000000 --duration 8 [--warmup 1] https://127.0.0.1:8443/
//! ```
//!
//! Prints the line the fixed-rate mode prints, plus `completed=N`: every
//! request answered, the warm-up's included (what the proxy's CPU time over
//! the whole run is divided by).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Buf as _, Bytes};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use crate::{report, Seen};

/// Receive and send buffer asked for the client's UDP socket (the kernel
/// caps it at `net.core.rmem_max` / `wmem_max`).
const CLIENT_SOCKET_BUFFER: usize = 4 << 20;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

struct Args {
    connections: usize,
    streams: usize,
    requests: u64,
    duration: Duration,
    warmup: Duration,
    ca: PathBuf,
    server_name: String,
    addr: SocketAddr,
    uri: http::Uri,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut connections = 16;
    let mut streams = 32;
    let mut requests = None;
    let mut duration = Duration::from_secs(8);
    let mut warmup = Duration::from_secs(1);
    let mut ca = None;
    let mut server_name = "localhost".to_owned();
    let mut url = None;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--connections" => {
                connections = value("--connections")?.parse().context("--connections")?
            }
            "--streams" => streams = value("--streams")?.parse().context("--streams")?,
            "--requests" => requests = Some(value("--requests")?.parse().context("--requests")?),
            "--duration" => {
                duration =
                    Duration::from_secs_f64(value("--duration")?.parse().context("--duration")?)
            }
            "--warmup" => {
                warmup = Duration::from_secs_f64(value("--warmup")?.parse().context("--warmup")?)
            }
            "--ca" => ca = Some(PathBuf::from(value("--ca")?)),
            "--server-name" => server_name = value("--server-name")?,
            other if other.starts_with("https://") => url = Some(other.to_owned()),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    if connections == 0 || streams == 0 {
        bail!("--connections and --streams must be positive");
    }
    let uri: http::Uri = url
        .context("a https:// URL is required")?
        .parse()
        .context("the URL")?;
    let addr = uri
        .authority()
        .context("the URL needs host:port")?
        .as_str()
        .parse()
        .context("the URL's authority must be an IP address and port")?;
    // The :authority sent is the name the certificate is checked against,
    // so a proxy routing by host sees the same name as in the SNI.
    let uri = http::Uri::builder()
        .scheme("https")
        .authority(format!("{server_name}:{}", SocketAddr::port(&addr)))
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .context("the request URI")?;
    Ok(Args {
        connections,
        streams,
        requests: requests.context("--requests is required (the run's upper bound)")?,
        duration,
        warmup,
        ca: ca.context("--ca is required (the CA that issued the server's certificate)")?,
        server_name,
        addr,
        uri,
    })
}

/// A QUIC client endpoint trusting only the certificates in `ca`.
fn endpoint(ca: &Path) -> anyhow::Result<quinn::Endpoint> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("--ca")? {
        roots.add(cert.context("--ca")?).context("--ca")?;
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).context("TLS config for QUIC")?;
    // Every connection shares this one socket: with the default buffer a
    // burst of responses from all of them overflows it, and the datagrams
    // the client drops would be charged to the server as retransmission
    // waits.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_recv_buffer_size(CLIENT_SOCKET_BUFFER)?;
    socket.set_send_buffer_size(CLIENT_SOCKET_BUFFER)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let runtime = quinn::default_runtime().context("no async runtime")?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    Ok(endpoint)
}

/// What every request loop shares: the run's budget and clock.
struct Run {
    args: Args,
    /// Requests started so far, against `args.requests`.
    started: AtomicU64,
    /// Requests answered, the warm-up's included.
    completed: AtomicU64,
    measure_from: Instant,
    end: Instant,
}

impl Run {
    /// Whether another request may start.
    fn take(&self) -> bool {
        Instant::now() < self.end
            && self.started.fetch_add(1, Ordering::Relaxed) < self.args.requests
    }
}

/// One connection: its handshake, then `streams` request loops on it.
async fn connection(run: Arc<Run>, endpoint: quinn::Endpoint) -> Seen {
    let mut seen = Seen::default();
    let conn = match endpoint.connect(run.args.addr, &run.args.server_name) {
        Ok(connecting) => connecting.await,
        Err(e) => {
            eprintln!("connect: {e}");
            seen.errors += 1;
            return seen;
        }
    };
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            eprintln!("QUIC handshake: {e}");
            seen.errors += 1;
            return seen;
        }
    };
    let (mut driver, send) = match h3::client::new(h3_quinn::Connection::new(conn.clone())).await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("HTTP/3 setup: {e}");
            seen.errors += 1;
            return seen;
        }
    };
    let driver = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let loops: Vec<_> = (0..run.args.streams)
        .map(|_| tokio::spawn(request_loop(Arc::clone(&run), send.clone())))
        .collect();
    drop(send);
    for l in loops {
        if let Ok(s) = l.await {
            seen.latencies_us.extend(s.latencies_us);
            seen.errors += s.errors;
        }
    }
    conn.close(0x100u32.into(), b"");
    driver.abort();
    seen
}

async fn request_loop(run: Arc<Run>, mut send: SendRequest) -> Seen {
    let mut seen = Seen::default();
    while run.take() {
        let sent = Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(10), exchange(&mut send, &run.args.uri)).await;
        let ok = matches!(result, Ok(Ok(true)));
        if ok {
            run.completed.fetch_add(1, Ordering::Relaxed);
        }
        if sent >= run.measure_from {
            if ok {
                let us = sent.elapsed().as_micros();
                seen.latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            } else {
                seen.errors += 1;
            }
        }
        if let Ok(Err(e)) = result {
            // Most likely the connection is gone; this loop stops.
            eprintln!("request: {e}");
            break;
        }
    }
    seen
}

/// One GET and its whole response; `Ok(true)` for a 2xx.
async fn exchange(send: &mut SendRequest, uri: &http::Uri) -> anyhow::Result<bool> {
    let req = http::Request::get(uri.clone())
        .header(http::header::USER_AGENT, "eg-loadgen")
        .body(())?;
    let mut stream = send.send_request(req).await?;
    stream.finish().await?;
    let res = stream.recv_response().await?;
    while let Some(mut chunk) = stream.recv_data().await? {
        chunk.advance(chunk.remaining());
    }
    Ok(res.status().is_success())
}

/// Run the HTTP/3 mode with the arguments after `h3`.
pub fn main(args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let args = parse_args(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let connections = args.connections;
    let (seen, completed, finished) = runtime.block_on(async {
        let endpoint = endpoint(&args.ca)?;
        let run = Arc::new(Run {
            args,
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            measure_from,
            end,
        });
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(Arc::clone(&run), endpoint.clone())))
            .collect();
        let mut all = Seen::default();
        for t in tasks {
            if let Ok(s) = t.await {
                all.latencies_us.extend(s.latencies_us);
                all.errors += s.errors;
            }
        }
        let finished = Instant::now();
        // The closes leave before the process does, so the server is not
        // left holding connections until their idle timeout.
        endpoint.wait_idle().await;
        anyhow::Ok((all, run.completed.load(Ordering::Relaxed), finished))
    })?;
    report(
        seen,
        measure_from,
        finished,
        &format!(" completed={completed}"),
    );
    Ok(())
}
