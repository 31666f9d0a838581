//! Proxies, backends and helpers shared by the behaviour tests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_config::ListenerKind;
use lb_core::{Backend, Drain, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Run `test`, failing if it takes longer than `secs`.
pub async fn within<F: Future>(secs: u64, test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), test)
        .await
        .expect("test timed out")
}

/// A running `serve` and what it was given.
pub struct Proxy {
    pub addr: SocketAddr,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub drain: Arc<Drain>,
    pub task: JoinHandle<()>,
}

impl Proxy {
    /// The `index`th backend of the listener's cluster in the current snapshot.
    pub fn backend(&self, index: usize) -> Arc<Backend> {
        let snapshot = self.snapshot.load();
        let cluster = match &snapshot.config.listeners[0].kind {
            ListenerKind::Tcp { cluster } => cluster.clone(),
            other => panic!("not a tcp listener: {other:?}"),
        };
        Arc::clone(&snapshot.cluster(&cluster).unwrap().backends[index])
    }

    /// Swap in a configuration built from the same listener address.
    pub fn reload(&self, settings: &str, backends: &[SocketAddr]) {
        self.snapshot.store(Arc::new(snapshot(&config_text(
            self.addr, settings, backends,
        ))));
    }
}

/// A tcp listener config at `addr`; `settings` is TOML inserted after
/// `protocol` (keys, then sub-tables such as `[listeners.timeouts]`).
pub fn config_text(addr: SocketAddr, settings: &str, backends: &[SocketAddr]) -> String {
    let mut text = format!("[[listeners]]\naddress = \"{addr}\"\nprotocol = \"tcp\"\n{settings}\n");
    for backend in backends {
        text.push_str(&format!(
            "[[listeners.backends]]\naddress = \"{backend}\"\n"
        ));
    }
    text
}

fn snapshot(text: &str) -> Snapshot {
    let config = lb_config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Snapshot::build(config, &lb_balancer::for_cluster)
}

/// Bind a listener on 127.0.0.1 and serve it with the given settings.
pub async fn start_proxy(settings: &str, backends: &[SocketAddr]) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot(&config_text(
        addr, settings, backends,
    ))));
    let drain = Drain::new();
    let task = tokio::spawn(lb_l4::serve(
        listener,
        addr,
        Arc::clone(&snapshot),
        None,
        Arc::new(ArcSwap::from_pointee(lb_tls::TlsState::default())),
        Arc::clone(&drain),
    ));
    Proxy {
        addr,
        snapshot,
        drain,
        task,
    }
}

/// Accept connections forever, handling each with `handle` in its own task.
async fn spawn_backend<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Echo every byte back as it arrives; half-close after the client does.
pub async fn echo_backend() -> SocketAddr {
    spawn_backend(|mut stream| async move {
        let (mut read, mut write) = stream.split();
        if tokio::io::copy(&mut read, &mut write).await.is_ok() {
            let _ = write.shutdown().await;
        }
    })
    .await
}

/// Read until end of stream, then answer `received N bytes: <data>`.
pub async fn reply_after_eof_backend() -> SocketAddr {
    spawn_backend(|mut stream| async move {
        let mut data = Vec::new();
        if stream.read_to_end(&mut data).await.is_err() {
            return;
        }
        let mut reply = format!("received {} bytes: ", data.len()).into_bytes();
        reply.extend_from_slice(&data);
        let _ = stream.write_all(&reply).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// An address on 127.0.0.1 where nothing listens.
pub async fn refusing_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Write `message` and expect it echoed back.
pub async fn roundtrip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, message);
}

/// Whether the proxy closed this connection: a read sees end of stream or
/// a reset rather than data.
pub async fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
}

/// Poll `condition` every 10 ms until it holds.
pub async fn eventually(condition: impl Fn() -> bool) {
    while !condition() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
