//! Traffic for the balancing tests: backends that name themselves (with a
//! delay or a switchable status), many requests over a few keep-alive
//! connections, and waiting for the gateway to log a line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Empty;

use super::backend::{full, start, start_on, Backend, Proto};
use super::client::Client;
use super::Gateway;

/// Bound on any single exchange in these tests.
pub const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A self-naming backend whose behaviour a test can change while it runs.
pub struct Named {
    pub name: &'static str,
    pub backend: Backend,
    /// Requests to paths other than `/healthz`.
    pub served: Arc<AtomicUsize>,
    /// Status of `/healthz`.
    pub health: Arc<AtomicU16>,
    /// Status of every other path.
    pub status: Arc<AtomicU16>,
    /// When each non-health request arrived.
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Named {
    pub fn addr(&self) -> SocketAddr {
        self.backend.addr
    }

    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }
}

/// A backend answering `name` (with `x-backend: name`) after `delay`, on
/// a port the kernel picks.
pub fn named(name: &'static str, delay: Duration) -> Named {
    named_on(name, delay, SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// [`named`] on `addr`: only to restart a backend where a stopped one was.
pub fn named_on(name: &'static str, delay: Duration, addr: SocketAddr) -> Named {
    let served = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(AtomicU16::new(200));
    let status = Arc::new(AtomicU16::new(200));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (s, h, st, a) = (
        served.clone(),
        health.clone(),
        status.clone(),
        arrivals.clone(),
    );
    let backend = start_on(Proto::H1, addr, move |req| {
        let is_health = req.uri().path() == "/healthz";
        let code = if is_health {
            h.load(Ordering::SeqCst)
        } else {
            s.fetch_add(1, Ordering::SeqCst);
            a.lock().unwrap().push(Instant::now());
            st.load(Ordering::SeqCst)
        };
        async move {
            if !is_health && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Response::builder()
                .status(code)
                .header("x-backend", name)
                .body(full(name))
                .unwrap()
        }
    });
    Named {
        name,
        backend,
        served,
        health,
        status,
        arrivals,
    }
}

/// A backend of `proto` answering its name.
pub fn plain(proto: Proto, name: &'static str) -> Backend {
    start(proto, move |_req| async move {
        Response::builder()
            .header("x-backend", name)
            .body(full(name))
            .unwrap()
    })
}

/// `[[clusters.backends]]` entries for `backends` with `weights`.
pub fn backends_toml(addrs: &[SocketAddr], weights: &[u32]) -> String {
    addrs
        .iter()
        .zip(weights)
        .map(|(a, w)| format!("[[clusters.backends]]\naddress = \"{a}\"\nweight = {w}\n"))
        .collect()
}

/// A gateway on `listen` routing everything to cluster `svc` made of
/// `cluster` (keys and backends).
pub fn gateway(listen: SocketAddr, cluster: &str) -> Gateway {
    Gateway::start(&config(listen, cluster), &[listen])
}

/// The config text of [`gateway`].
pub fn config(listen: SocketAddr, cluster: &str) -> String {
    format!(
        "[[clusters]]\nname = \"svc\"\n{cluster}\n[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n[[listeners.routes]]\ncluster = \"svc\"\n"
    )
}

/// One response as the tests look at it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: HeaderMap,
}

/// A GET for `path` with `headers`.
pub fn get(path: &str, headers: &[(&str, String)]) -> Request<Empty<Bytes>> {
    let mut req = Request::get(path).header("host", "app.test");
    for (name, value) in headers {
        req = req.header(*name, value.as_str());
    }
    req.body(Empty::new()).unwrap()
}

/// Send `requests[i]` for every `i`, over `connections` HTTP/1.1
/// keep-alive connections running side by side; answers in request order.
pub async fn send_all(
    addr: SocketAddr,
    requests: Vec<Request<Empty<Bytes>>>,
    connections: usize,
) -> Vec<Answer> {
    let total = requests.len();
    // Reversed so popping from the end sends them in order.
    let queue = Arc::new(Mutex::new(
        requests.into_iter().enumerate().rev().collect::<Vec<_>>(),
    ));
    let answers = Arc::new(Mutex::new(vec![None; total]));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (queue, answers) = (queue.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(Proto::H1, addr).await;
            loop {
                let Some((i, req)) = queue.lock().unwrap().pop() else {
                    return;
                };
                let answer = exchange(&mut client, req).await;
                answers.lock().unwrap()[i] = Some(answer);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(EXCHANGE_LIMIT * 30, t)
            .await
            .expect("traffic did not finish")
            .unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    answers.into_iter().map(Option::unwrap).collect()
}

/// One exchange on an open client.
pub async fn exchange(client: &mut Client<Empty<Bytes>>, req: Request<Empty<Bytes>>) -> Answer {
    let work = async {
        let res = client.send(req).await.expect("request failed");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = super::body::text(res.into_body()).await;
        Answer {
            status,
            body,
            headers,
        }
    };
    tokio::time::timeout(EXCHANGE_LIMIT, work)
        .await
        .expect("exchange timed out")
}

/// `n` plain GETs of `/` over `connections` connections.
pub async fn get_n(addr: SocketAddr, n: usize, connections: usize) -> Vec<Answer> {
    send_all(addr, (0..n).map(|_| get("/", &[])).collect(), connections).await
}

/// How many answers came from each of `names`.
pub fn tally(answers: &[Answer], names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| answers.iter().filter(|a| a.body == *n).count())
        .collect()
}

/// The log without terminal colour codes.
pub fn plain_log(gw: &Gateway) -> String {
    let log = gw.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of the log holding every one of `parts`.
pub fn log_lines(gw: &Gateway, parts: &[&str]) -> Vec<String> {
    plain_log(gw)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

/// Wait (up to `limit`) until at least `count` log lines hold all of
/// `parts`; returns how long it took.
pub async fn wait_log(gw: &Gateway, parts: &[&str], count: usize, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if log_lines(gw, parts).len() >= count {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "no {count} log line(s) with {parts:?} within {limit:?}:\n{}",
            plain_log(gw)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (up to 5 s) until nothing accepts connections on `addr` any more:
/// a dropped backend's runtime shuts down on its own thread.
pub async fn wait_closed(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{addr} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
