//! TLS for the integration tests: a throwaway CA issuing server and client
//! certificates (rcgen) into a temp directory, TLS-speaking hyper backends
//! and a raw TLS echo backend (tokio-rustls), TLS clients, and drivers for
//! the external `curl` and `openssl` clients.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backend::{Proto, RespBody};

/// A test certificate authority and the files it issued.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (PEM), to trust.
    pub ca_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
}

/// A certificate chain and key written to disk (key mode 0600).
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: CertificateDer<'static>,
    pub key_pem: String,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = super::temp_dir(&format!("pki-{tag}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ExpressGateway test CA {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, cert.pem()).unwrap();
        Pki {
            dir,
            ca_path,
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses), with
    /// `CN = <first name>`, written as `<file>.pem` / `<file>.key`.
    pub fn server(&self, file: &str, names: &[&str]) -> Issued {
        let mut params = params(names);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params)
    }

    /// A client certificate with `CN = cn` and the given SANs.
    pub fn client(&self, file: &str, cn: &str, names: &[&str]) -> Issued {
        let mut params = params(names);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&self, file: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        write_private(&cert_path, &cert.pem());
        write_private(&key_path, &key.serialize_pem());
        Issued {
            cert_path,
            key_path,
            der: cert.der().clone(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A trust store holding this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        roots
    }
}

fn params(names: &[&str]) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params
}

/// Write `text` to `path` atomically (rename over it) with mode 0600, as
/// an operator's deployment tool would.
pub fn write_private(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn chain_and_key(issued: &Issued) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    (
        vec![issued.der.clone()],
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
    )
}

/// A rustls client config trusting `pki`, offering `alpn`, presenting
/// `client_cert` when given.
pub fn client_config(
    pki: &Pki,
    alpn: &[&[u8]],
    client_cert: Option<&Issued>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots());
    let mut config = match client_cert {
        Some(issued) => {
            let (chain, key) = chain_and_key(issued);
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to the gateway: the stream and the certificate it
/// was served.
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    CertificateDer<'static>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake failed");
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    (stream, served)
}

/// An HTTP/2 connection over TLS (ALPN h2) and the certificate served.
pub async fn h2_over_tls(
    addr: SocketAddr,
    server_name: &str,
    pki: &Pki,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    CertificateDer<'static>,
) {
    let config = client_config(pki, &[b"h2"], None);
    let (stream, served) = tls_connect(addr, server_name, config).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    (sender, served)
}

/// A hyper backend speaking `proto` over TLS with a certificate from `pki`
/// for `names`, requiring a client certificate from `client_ca` when
/// given. Counts handshakes that resumed a session and records the ALPN
/// each connection negotiated.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub handshakes: Arc<AtomicUsize>,
    pub resumed: Arc<AtomicUsize>,
    pub alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TlsBackend {
    /// Stop and wait until the runtime is gone, so no connection it
    /// served outlives the drop.
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a TLS backend saw, shared with its connections.
#[derive(Clone, Default)]
struct Seen {
    hits: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    resumed: Arc<AtomicUsize>,
    alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
}

pub fn tls_backend<F, Fut>(
    proto: Proto,
    pki: &Pki,
    names: &[&str],
    client_ca: Option<&Pki>,
    handler: F,
) -> TlsBackend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    let acceptor = backend_acceptor(proto, pki, names, client_ca);
    let seen = Seen::default();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handler = Arc::new(handler);
    let shared = seen.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ready_tx.send(listener.local_addr().unwrap()).unwrap();
            let accept = async {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let (acceptor, handler, seen) =
                        (acceptor.clone(), handler.clone(), shared.clone());
                    tokio::spawn(serve_tls(stream, acceptor, proto, handler, seen));
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = rx => {}
            }
        });
    });
    let addr = ready_rx.recv().unwrap();
    TlsBackend {
        addr,
        hits: seen.hits,
        handshakes: seen.handshakes,
        resumed: seen.resumed,
        alpn: seen.alpn,
        shutdown: Some(tx),
        thread: Some(thread),
    }
}

/// A number unique within this process, to name certificate files.
fn file_serial() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn backend_acceptor(
    proto: Proto,
    pki: &Pki,
    names: &[&str],
    client_ca: Option<&Pki>,
) -> tokio_rustls::TlsAcceptor {
    let issued = pki.server(&format!("backend-{}", file_serial()), names);
    let (chain, key) = chain_and_key(&issued);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = match proto {
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve_tls<F, Fut>(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    proto: Proto,
    handler: Arc<F>,
    seen: Seen,
) where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    // The gateway's readiness probes and failed handshakes end here.
    let Ok(stream) = acceptor.accept(stream).await else {
        return;
    };
    let conn = stream.get_ref().1;
    seen.handshakes.fetch_add(1, Ordering::SeqCst);
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        seen.resumed.fetch_add(1, Ordering::SeqCst);
    }
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    seen.alpn.lock().unwrap().push(alpn);
    let hits = seen.hits;
    let service = hyper::service::service_fn(move |req| {
        hits.fetch_add(1, Ordering::SeqCst);
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let io = TokioIo::new(stream);
    let _ = match proto {
        Proto::H1 => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
        }
        Proto::H2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
    };
}

/// A raw TLS backend (no ALPN) echoing every byte back, then closing its
/// side when the client closes.
pub async fn tls_echo_backend(pki: &Pki, names: &[&str]) -> SocketAddr {
    let issued = pki.server(&format!("echo-{}", file_serial()), names);
    let (chain, key) = chain_and_key(&issued);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let (mut rd, mut wr) = tokio::io::split(stream);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if wr.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = wr.shutdown().await;
            });
        }
    });
    addr
}

/// Output of an external client: exit status and stdout + stderr.
pub struct Run {
    pub success: bool,
    pub output: String,
}

/// Run `program args`, feeding `input` on stdin, killed after 30 s.
pub fn run_tool(program: &str, args: &[&str], input: &str) -> Run {
    super::require_tool(program);
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `openssl s_client` against `addr`, trusting `pki`, sending an HTTP/1.1
/// request for `host` and waiting for the gateway to close.
pub fn s_client(addr: SocketAddr, pki: &Pki, extra: &[&str], host: &str) -> Run {
    let connect = addr.to_string();
    let ca = pki.ca_path.to_str().unwrap();
    let mut args = vec!["s_client", "-connect", &connect, "-CAfile", ca, "-ign_eof"];
    args.extend_from_slice(extra);
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    run_tool("openssl", &args, &request)
}

/// curl against `https://{name}:{port}{path}` resolved to `addr`, trusting
/// `pki`; `-w` appends the HTTP version and status on a last line.
pub fn curl(addr: SocketAddr, name: &str, pki: &Pki, path: &str, extra: &[&str]) -> Run {
    let resolve = format!("{name}:{}:{}", addr.port(), addr.ip());
    let url = format!("https://{name}:{}{path}", addr.port());
    let ca = pki.ca_path.to_str().unwrap();
    let mut args = vec![
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "--write-out",
        "\nversion=%{http_version} status=%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    run_tool("curl", &args, "")
}

/// Wait until the gateway's log contains `needle` `times` times.
pub fn wait_for_log(gw: &super::Gateway, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.log().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "gateway never logged {needle:?} {times} time(s):\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
