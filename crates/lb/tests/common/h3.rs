//! HTTP/3 backends for the integration tests: a quinn + h3 server on a
//! loopback UDP port with a certificate from a test CA, in its own thread
//! and runtime, stopped on drop. What it answers depends on the path:
//! `/hold` waits until the test opens the gate, `/stall` never answers,
//! `/health` answers the health status the test sets, a request with a
//! body is echoed back (data and trailers; a gRPC call's messages come
//! back with `grpc-status` 0, a gRPC echo service), anything else answers the
//! status the test sets with the backend's name and what it saw of the
//! request head in `x-seen-*` headers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http::{HeaderMap, HeaderValue, Request, Response};
use quinn::crypto::rustls::QuicServerConfig;

use super::tls::{chain_and_key, provider, Pki};

/// What a backend counts and what the test sets.
pub struct Shared {
    /// Requests received.
    pub hits: AtomicUsize,
    /// QUIC connections accepted (handshake done).
    pub connections: AtomicUsize,
    /// Requests waiting at `/hold`.
    pub held: AtomicUsize,
    status: AtomicU16,
    health: AtomicU16,
    gate: tokio::sync::Semaphore,
    arrived: tokio::sync::Notify,
}

/// A running HTTP/3 backend.
pub struct H3Backend {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl H3Backend {
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The status of ordinary requests from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    /// The status of `/health` from now on.
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// Wait until `n` requests are held at `/hold`.
    pub async fn held(&self, n: usize) {
        let wait = async {
            loop {
                let arrived = self.shared.arrived.notified();
                if self.shared.held.load(Ordering::SeqCst) >= n {
                    return;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("requests did not reach the held backend");
    }

    /// Let every held request (and all later ones) through.
    pub fn open(&self) {
        self.shared.gate.add_permits(1 << 20);
    }
}

/// A rustls server config for QUIC (TLS 1.3, ALPN `h3`) with a certificate
/// from `pki` for `names`.
pub fn server_tls(pki: &Pki, names: &[&str]) -> Arc<QuicServerConfig> {
    static SERIAL: AtomicUsize = AtomicUsize::new(0);
    let issued = pki.server(
        &format!("h3-backend-{}", SERIAL.fetch_add(1, Ordering::Relaxed)),
        names,
    );
    let (chain, key) = chain_and_key(&issued);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h3".to_vec()];
    Arc::new(QuicServerConfig::try_from(config).unwrap())
}

/// Start an HTTP/3 backend named `name` with a certificate from `pki` for
/// `127.0.0.1` and `h3.test`.
pub fn start(pki: &Pki, name: &'static str) -> H3Backend {
    start_on(pki, name, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Start an HTTP/3 backend on `addr` (port 0: any).
pub fn start_on(pki: &Pki, name: &'static str, addr: SocketAddr) -> H3Backend {
    start_with(pki, name, addr, quinn::EndpointConfig::default())
}

/// Connection IDs of 8 bytes carrying a server ID in bytes 1 and 2 (the
/// plaintext form of QUIC-LB, `server_id = { offset = 1, length = 2 }`),
/// the rest random.
struct ServerIdCids {
    server_id: u16,
    state: std::collections::hash_map::RandomState,
    count: u64,
}

impl quinn::ConnectionIdGenerator for ServerIdCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        use std::hash::BuildHasher;
        self.count += 1;
        let noise = self.state.hash_one(self.count).to_be_bytes();
        let [hi, lo] = self.server_id.to_be_bytes();
        let id = [
            noise[0], hi, lo, noise[1], noise[2], noise[3], noise[4], noise[5],
        ];
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Start an HTTP/3 backend whose connection IDs carry `server_id` in
/// bytes 1 and 2.
pub fn start_with_server_id(pki: &Pki, name: &'static str, server_id: u16) -> H3Backend {
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(move || {
        Box::new(ServerIdCids {
            server_id,
            state: std::collections::hash_map::RandomState::new(),
            count: 0,
        })
    });
    start_with(pki, name, SocketAddr::from(([127, 0, 0, 1], 0)), config)
}

fn start_with(
    pki: &Pki,
    name: &'static str,
    addr: SocketAddr,
    endpoint_config: quinn::EndpointConfig,
) -> H3Backend {
    let tls = server_tls(pki, &["127.0.0.1", "h3.test"]);
    let shared = Arc::new(Shared {
        hits: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
        held: AtomicUsize::new(0),
        status: AtomicU16::new(200),
        health: AtomicU16::new(200),
        gate: tokio::sync::Semaphore::new(0),
        arrived: tokio::sync::Notify::new(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let state = Arc::clone(&shared);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config = quinn::ServerConfig::with_crypto(tls);
            let socket = std::net::UdpSocket::bind(addr).unwrap();
            let endpoint = quinn::Endpoint::new(
                endpoint_config,
                Some(config),
                socket,
                quinn::default_runtime().unwrap(),
            )
            .unwrap();
            ready_tx.send(endpoint.local_addr().unwrap()).unwrap();
            let accept = async {
                while let Some(incoming) = endpoint.accept().await {
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        if let Ok(conn) = incoming.await {
                            state.connections.fetch_add(1, Ordering::SeqCst);
                            serve_connection(conn, state, name).await;
                        }
                    });
                }
            };
            tokio::select! {
                () = accept => {}
                _ = stopped => {}
            }
            endpoint.close(0u32.into(), b"stopped");
        });
    });
    let addr = ready_rx.recv().unwrap();
    H3Backend {
        addr,
        shared,
        _stop: stop,
    }
}

async fn serve_connection(conn: quinn::Connection, state: Arc<Shared>, name: &'static str) {
    // h3 reads ahead without bound on streams of many small frames (its
    // issue 308): the gateway's framed transport keeps this backend from
    // slowing down quadratically under long echoes.
    let transport = lb_h3client::bounded::Connection::new(conn, 1 << 20);
    let Ok(mut h3) = h3::server::Connection::<_, Bytes>::new(transport).await else {
        return;
    };
    while let Ok(Some(resolver)) = h3.accept().await {
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Ok((req, stream)) = resolver.resolve_request().await {
                state.hits.fetch_add(1, Ordering::SeqCst);
                let _ = answer(req, stream, &state, name).await;
            }
        });
    }
}

type Stream = RequestStream<lb_h3client::bounded::BidiStream<Bytes>, Bytes>;

async fn answer(
    req: Request<()>,
    mut stream: Stream,
    state: &Shared,
    name: &'static str,
) -> Result<(), h3::error::StreamError> {
    let path = req.uri().path().to_owned();
    let mut head = Response::builder()
        .header("x-backend", name)
        .body(())
        .unwrap();
    match path.as_str() {
        "/hold" => {
            state.held.fetch_add(1, Ordering::SeqCst);
            state.arrived.notify_waiters();
            state.gate.acquire().await.unwrap().forget();
        }
        "/stall" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        "/health" => {
            *head.status_mut() =
                http::StatusCode::from_u16(state.health.load(Ordering::SeqCst)).unwrap();
            stream.send_response(head).await?;
            return stream.finish().await;
        }
        _ => {}
    }
    let echo = req.method() == http::Method::POST || req.method() == http::Method::PUT;
    if echo {
        // Streams the body back as it arrives, then its trailers, declared
        // (for an HTTP/1.1 hop) as the request declared them.
        if let Some(declared) = req.headers().get("trailer").and_then(|v| v.to_str().ok()) {
            let value = HeaderValue::from_str(&format!("{declared}, x-received")).unwrap();
            head.headers_mut().insert("trailer", value);
        }
        let grpc = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let ct = req.headers()["content-type"].clone();
            head.headers_mut().insert("content-type", ct);
        }
        stream.send_response(head).await?;
        let mut received = 0usize;
        while let Some(mut chunk) = stream.recv_data().await? {
            let data = chunk.copy_to_bytes(chunk.remaining());
            received += data.len();
            stream.send_data(data).await?;
        }
        let mut trailers = stream.recv_trailers().await?.unwrap_or_default();
        trailers.insert("x-received", HeaderValue::from(received));
        if grpc {
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
        }
        stream.send_trailers(trailers).await?;
        return stream.finish().await;
    }
    *head.status_mut() = http::StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
    seen(head.headers_mut(), &req);
    stream.send_response(head).await?;
    stream
        .send_data(Bytes::from(format!("{name} {path}")))
        .await?;
    stream.finish().await
}

/// Copy what the backend saw of the request head into `x-seen-*` headers.
fn seen(out: &mut HeaderMap, req: &Request<()>) {
    let uri = req.uri();
    let mut put = |key: &'static str, value: Option<&str>| {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            out.insert(key, v);
        }
    };
    put("x-seen-authority", uri.authority().map(|a| a.as_str()));
    put("x-seen-scheme", uri.scheme_str());
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    put("x-seen-host", header("host"));
    put("x-seen-connection", header("connection"));
    put("x-seen-forwarded-for", header("x-forwarded-for"));
}
