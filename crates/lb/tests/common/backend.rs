//! Small real backends: hyper HTTP/1.1 or HTTP/2 (h2c) servers running a
//! test-supplied handler on a background runtime thread.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The response body type handlers return.
pub type RespBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Protocol a test backend speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    pub fn token(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }
}

/// A running backend; its runtime thread stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Backend {
    /// Stop accepting and wait until the runtime is gone, so every
    /// connection it served is closed when the drop returns (the listener
    /// closes first; without the join, a test could see the port refuse
    /// while a kept-alive connection still answers).
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Backend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Wrap a small text into a response body.
pub fn full(text: impl Into<Bytes>) -> RespBody {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

/// Start a backend on a port the kernel picks; `.addr` is where it listens.
pub fn start<F, Fut>(proto: Proto, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    start_on(proto, SocketAddr::from(([127, 0, 0, 1], 0)), handler)
}

/// Bind `addr` with SO_REUSEADDR, so a test can restart a backend on the
/// address a stopped one used while that one's connections sit in
/// TIME_WAIT. Port 0 lets the kernel choose.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Start a backend on `addr`: only for a test that restarts a backend on
/// the address an earlier one had (use [`start`] otherwise). Another
/// process may take the port in between; the bind then fails loudly.
pub fn start_on<F, Fut>(proto: Proto, addr: SocketAddr, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handler = Arc::new(handler);
    let (h, c) = (hits.clone(), connections.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = match bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            ready_tx.send(Ok(listener.local_addr().unwrap())).unwrap();
            let accept = async {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    c.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    let hits = h.clone();
                    let service = hyper::service::service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    tokio::spawn(serve_connection(proto, stream, service));
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = rx => {}
            }
        });
    });
    let addr = match ready_rx.recv().unwrap() {
        Ok(addr) => addr,
        Err(e) => panic!("backend cannot bind {addr}: {e}"),
    };
    Backend {
        addr,
        hits,
        connections,
        shutdown: Some(tx),
        thread: Some(thread),
    }
}

/// Serve one accepted connection with hyper until it ends.
async fn serve_connection<S>(proto: Proto, stream: tokio::net::TcpStream, service: S)
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<RespBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
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

/// A backend answering every request with `name` as body.
pub fn named(proto: Proto, name: &'static str) -> Backend {
    start(proto, move |_req| async move {
        Response::builder()
            .header("x-backend", name)
            .body(full(name))
            .unwrap()
    })
}

/// A backend streaming the request body straight back (with trailers).
pub fn echo(proto: Proto) -> Backend {
    start(proto, |req| async move {
        let body = req
            .into_body()
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
        Response::new(body.boxed())
    })
}

/// A backend answering with the request line and headers as text:
/// first line `METHOD URI VERSION`, then `name: value` lines.
pub fn headers_echo(proto: Proto) -> Backend {
    start(proto, |req| async move {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (name, value) in req.headers() {
            text.push_str(&format!("{}: {}\n", name, value.to_str().unwrap_or("?")));
        }
        Response::new(full(text))
    })
}

/// A backend that holds every request until the test opens its gate, and
/// says when requests arrive: the test's signal that a request is in
/// flight at the backend, where a sleep would only guess.
pub struct Gated {
    pub backend: Backend,
    arrived: tokio::sync::watch::Receiver<usize>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gated {
    /// Wait (up to 10 s) until `n` requests have arrived in all.
    pub async fn arrived(&self, n: usize) {
        let mut rx = self.arrived.clone();
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} request(s) never reached the backend"))
            .unwrap();
    }

    /// Requests that arrived so far.
    pub fn count(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Let every held request (and every later one) be answered.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

/// A [`Gated`] backend answering `body` once the gate opens.
pub fn gated(proto: Proto, body: &'static str) -> Gated {
    gated_under(proto, body, "/")
}

/// A [`Gated`] backend holding (and counting) only the requests whose
/// path starts with `prefix`; it answers the others at once.
pub fn gated_under(proto: Proto, body: &'static str, prefix: &'static str) -> Gated {
    let (arrived_tx, arrived) = tokio::sync::watch::channel(0usize);
    let (open, open_rx) = tokio::sync::watch::channel(false);
    let backend = start(proto, move |req| {
        let held = req.uri().path().starts_with(prefix);
        if held {
            arrived_tx.send_modify(|n| *n += 1);
        }
        let mut open_rx = open_rx.clone();
        async move {
            if held {
                let _ = open_rx.wait_for(|o| *o).await;
            }
            Response::new(full(body))
        }
    });
    Gated {
        backend,
        arrived,
        open,
    }
}
