//! Hostile-input bounds of `quic` listeners that HTTP/3 clients can see:
//! the header size limit advertised in SETTINGS, and the cap on request
//! streams a client resets ("rapid reset").
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use quinn::crypto::rustls::QuicClientConfig;

use common::backend::{self, echo, Proto};
use common::h3raw;
use common::scrape::{wait_admin, wait_value};
use common::tls::{client_config, Pki};
use common::{free_addr, free_udp, h3client, Gateway, RssSampler};

const CUTS: &str = "expressgateway_http_client_cut_total";
const H3_EXCESSIVE_LOAD: u64 = 0x107;
const H3_REQUEST_CANCELLED: u32 = 0x10c;

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn get(
    send: &mut SendRequest,
    header: Option<String>,
) -> Result<u16, h3::error::StreamError> {
    let mut req = Request::get("https://q.test/");
    if let Some(value) = header {
        req = req.header("x-big", value);
    }
    let mut stream = send.send_request(req.body(()).unwrap()).await?;
    stream.finish().await?;
    let res = stream.recv_response().await?;
    while stream.recv_data().await?.is_some() {}
    Ok(res.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_bytes_is_advertised_as_max_field_section_size() {
    let backend = echo(Proto::H1);
    let quic = common::h3raw::quic_gateway("h3-limits", backend.addr);
    let (pki, listen) = (&quic.pki, quic.listen);
    let crypto = QuicClientConfig::try_from(client_config(pki, &[b"h3"], None)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(listen, "q.test").unwrap().await.unwrap();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    assert_eq!(get(&mut send, None).await.unwrap(), 200);
    // The gateway's SETTINGS come on its control stream, which the client
    // may read after a response on a request stream: until it has, the
    // gateway itself refuses the head (431); once it has, the client does
    // not send it at all.
    let mut refused_by_client = false;
    for _ in 0..100 {
        match get(&mut send, Some("a".repeat(8192))).await {
            Err(h3::error::StreamError::HeaderTooBig { max_size, .. }) => {
                assert_eq!(max_size, 4096);
                refused_by_client = true;
                break;
            }
            Ok(431) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("an 8 KiB header was not refused: {other:?}"),
        }
    }
    assert!(
        refused_by_client,
        "the client never saw the advertised limit"
    );
    assert_eq!(
        get(&mut send, None).await.unwrap(),
        200,
        "the connection did not stay usable"
    );
}

/// A `quic` listener capping resets at 50 per 10 s, with admin; its
/// backend counts the requests to `/flood…` and answers after `delay`.
struct Flood {
    pki: Pki,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    flood_hits: Arc<AtomicUsize>,
    gw: Gateway,
    _backend: backend::Backend,
}

async fn flood_setup(name: &str, delay: Duration) -> Flood {
    let pki = Pki::new(name);
    let cert = pki.server("q", &["q.test"]);
    let flood_hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&flood_hits);
    let backend = backend::start(Proto::H1, move |req| {
        let flood = req.uri().path().starts_with("/flood");
        if flood {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if flood {
                tokio::time::sleep(delay).await;
            }
            http::Response::new(backend::full("ok"))
        }
    });
    let (listen, admin) = (free_udp(), free_addr());
    let text = format!(
        r#"[observability]
metrics_bind = "{admin}"

[[clusters]]
name = "svc"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
[listeners.tls]
cert_path = {cert:?}
key_path = {key:?}
[listeners.quic]
max_client_resets = 50
client_reset_window_ms = 10000
[[listeners.routes]]
path_prefix = "/"
cluster = "svc"
"#,
        backend = backend.addr,
        cert = cert.cert_path,
        key = cert.key_path,
    );
    let gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    Flood {
        pki,
        listen,
        admin,
        flood_hits,
        gw,
        _backend: backend,
    }
}

/// Open up to 10,000 request streams on a fresh connection within 30 s,
/// each reset (or, with `finish`, finished) right after its head went out
/// and its response stopped, until the gateway closes the connection; the
/// close code and the streams opened.
async fn flood(f: &Flood, finish: bool) -> (Option<u64>, usize) {
    let conn = h3raw::connect(f.listen, "q.test", &f.pki, &[]).await;
    let head = h3raw::headers(&h3raw::get("q.test", "/flood"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut opened = 0;
    let mut held = Vec::new();
    while opened < 10_000 && Instant::now() < deadline {
        let Ok((mut send, mut recv)) = conn.conn.open_bi().await else {
            break;
        };
        opened += 1;
        if send.write_all(&head).await.is_err() {
            break;
        }
        if finish {
            // The request is complete; the client only stops reading the
            // response (a cancel the gateway learns of when it writes).
            let _ = send.finish();
            held.push(send);
        } else {
            let _ = send.reset(H3_REQUEST_CANCELLED.into());
        }
        let _ = recv.stop(H3_REQUEST_CANCELLED.into());
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed_with())
        .await
        .expect("the flooding connection was not closed");
    (closed, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_closes_the_connection_with_excessive_load() {
    let f = flood_setup("h3-reset-flood", Duration::ZERO).await;
    let (listen, admin) = (f.listen, f.admin);
    let label = format!("{listen}/quic");
    let labels = [("listener", label.as_str()), ("reason", "reset_flood")];
    wait_value(admin, CUTS, &labels, 0.0).await;

    // A well-behaved client on its own connection, served throughout.
    let mut good = h3client::connect(listen, "q.test", &f.pki).await;
    assert_eq!(good.get("q.test", "/good").await.0, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let good_loop = tokio::spawn(async move {
        let mut served = 0;
        while !stopped.load(Ordering::SeqCst) && served < 10_000 {
            let (status, _, body) = good.get("q.test", "/good").await;
            assert_eq!((status, &body[..]), (200, &b"ok"[..]));
            served += 1;
        }
        (good, served)
    });

    let rss = RssSampler::start(f.gw.pid());
    let (closed, opened) = flood(&f, false).await;
    assert_eq!(closed, Some(H3_EXCESSIVE_LOAD), "after {opened} streams");
    assert!(
        opened < 10_000,
        "the flood ran its course: {opened} streams"
    );
    wait_value(admin, CUTS, &labels, 1.0).await;
    let peak = rss.stop();

    stop.store(true, Ordering::SeqCst);
    let (mut good, served) = good_loop.await.unwrap();
    let (status, _, _) = good.get("q.test", "/good").await;
    assert_eq!(status, 200, "the well-behaved connection did not survive");
    // At most the cap, plus the streams open at once when it tripped.
    let reached = f.flood_hits.load(Ordering::SeqCst);
    assert!(
        reached <= 50 + 100,
        "{reached} reset requests reached the backend"
    );
    assert!(peak < 256 * 1024, "gateway RSS peaked at {peak} KiB");
    eprintln!("flood: {opened} streams opened, {reached} reached the backend, peak RSS {peak} KiB, {served} good requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_cancelled_with_stop_sending_count_as_resets() {
    // Each request reaches the backend, which answers after 20 ms: by then
    // the client's STOP_SENDING is in, and writing the response fails.
    let f = flood_setup("h3-cancel-flood", Duration::from_millis(20)).await;
    let label = format!("{}/quic", f.listen);
    let labels = [("listener", label.as_str()), ("reason", "reset_flood")];
    let (closed, opened) = flood(&f, true).await;
    assert_eq!(closed, Some(H3_EXCESSIVE_LOAD), "after {opened} streams");
    wait_value(f.admin, CUTS, &labels, 1.0).await;
    let reached = f.flood_hits.load(Ordering::SeqCst);
    assert!(
        (51..=50 + 100).contains(&reached),
        "{reached} cancelled requests reached the backend"
    );
    // Another connection of the same client address is served.
    let mut next = h3client::connect(f.listen, "q.test", &f.pki).await;
    assert_eq!(next.get("q.test", "/after").await.0, 200);
}
