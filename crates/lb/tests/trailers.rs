//! Trailers through the gateway for every front × backend pair. HTTP/2
//! carries trailers unconditionally; an HTTP/1.1 hop carries them only when
//! its rules allow (only the trailer fields a `Trailer` header declares
//! are written, and response trailers go only to a client that sent
//! `TE: trailers`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::backend::{echo, full, start, Backend, Proto};
use common::body::{verify_pattern, PatternBody};
use common::client::{request, Client};
use common::{free_addr, Gateway};
use http::{HeaderMap, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);
const LEN: u64 = 200_000;
const CHECKSUM: &str = "abc123";

/// Echo the request body (trailers included) and declare in `Trailer`
/// whatever the request declared, so HTTP/1.1 hops may send them.
fn declaring_echo(proto: Proto) -> Backend {
    start(proto, |req| async move {
        let declared: Vec<_> = req.headers().get_all("trailer").iter().cloned().collect();
        let te = req.headers().get("te").cloned();
        let body = req
            .into_body()
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
        let mut res = Response::new(body.boxed());
        for value in declared {
            res.headers_mut().append("trailer", value);
        }
        if let Some(te) = te {
            res.headers_mut().insert("x-seen-te", te);
        }
        res
    })
}

/// Read the request body to the end and answer with the trailers that
/// arrived, as `name=value` lines, or `none`.
fn trailer_report(proto: Proto) -> Backend {
    start(proto, |req| async move {
        let collected = req.into_body().collect().await;
        let text = match collected.as_ref().ok().and_then(|c| c.trailers()) {
            Some(t) if !t.is_empty() => t
                .iter()
                .map(|(n, v)| format!("{n}={}\n", v.to_str().unwrap_or("?")))
                .collect(),
            _ if collected.is_err() => "body error\n".to_owned(),
            _ => "none\n".to_owned(),
        };
        Response::new(full(text))
    })
}

struct Setup {
    listen: SocketAddr,
    _backends: Vec<Backend>,
    _gw: Gateway,
}

/// Routes `/{kind}-{proto}/` to a backend of that kind and protocol, with
/// kinds `echo` (declaring echo), `plain` (the shared echo, declaring
/// nothing) and `report` (trailer report).
fn setup() -> Setup {
    let listen = free_addr();
    let mut clusters = String::new();
    let mut routes = String::new();
    let mut backends = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        let kinds = [
            ("echo", declaring_echo(proto)),
            ("plain", echo(proto)),
            ("report", trailer_report(proto)),
        ];
        for (kind, backend) in kinds {
            let name = format!("{kind}-{}", proto.token());
            clusters.push_str(&format!(
                "[[clusters]]\nname = \"{name}\"\n[[clusters.backends]]\n\
                 address = \"{}\"\nprotocol = \"{}\"\n\n",
                backend.addr,
                proto.token()
            ));
            routes.push_str(&format!(
                "[[listeners.routes]]\npath_prefix = \"/{name}/\"\ncluster = \"{name}\"\n"
            ));
            backends.push(backend);
        }
    }
    let config =
        format!("{clusters}[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n{routes}");
    let gw = Gateway::start(&config, &[listen]);
    Setup {
        listen,
        _backends: backends,
        _gw: gw,
    }
}

fn checksum_trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("x-checksum", CHECKSUM.parse().unwrap());
    t
}

/// POST a pattern body ending in an `x-checksum` trailer with the given
/// extra request headers; returns (status, response headers, bytes read,
/// response trailers).
async fn post_with_trailers(
    front: Proto,
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &'static str)],
) -> (u16, HeaderMap, u64, Option<HeaderMap>) {
    let exchange = async {
        let mut client = Client::connect(front, addr).await;
        let body = PatternBody::chunked(LEN).with_trailers(checksum_trailers());
        let mut req = request(front, "POST", "app.example.com", path, body);
        for (name, value) in headers {
            req.headers_mut().append(*name, value.parse().unwrap());
        }
        let res = client.send(req).await.expect("request failed");
        let status = res.status().as_u16();
        let (parts, body) = res.into_parts();
        let (read, trailers) = verify_pattern(body).await;
        (status, parts.headers, read, trailers)
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("exchange timed out")
}

/// POST with trailers to a report backend; returns its report.
async fn report(front: Proto, addr: SocketAddr, path: &str, declare: bool) -> String {
    let exchange = async {
        let mut client = Client::connect(front, addr).await;
        let body = PatternBody::chunked(LEN).with_trailers(checksum_trailers());
        let mut req = request(front, "POST", "app.example.com", path, body);
        if declare {
            req.headers_mut()
                .insert("trailer", "x-checksum".parse().unwrap());
        }
        let res = client.send(req).await.expect("request failed");
        assert_eq!(res.status(), 200);
        common::body::text(res.into_body()).await
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("exchange timed out")
}

fn checksum(trailers: &Option<HeaderMap>) -> Option<&str> {
    trailers
        .as_ref()
        .and_then(|t| t.get("x-checksum"))
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn h2_to_h2_trailers_reach_the_backend_and_stream_back() {
    let s = setup();
    // Nothing declared: HTTP/2 needs no `Trailer` header.
    let (status, _, read, trailers) =
        post_with_trailers(Proto::H2, s.listen, "/plain-h2/", &[]).await;
    assert_eq!((status, read), (200, LEN));
    assert_eq!(checksum(&trailers), Some(CHECKSUM));
    assert_eq!(
        report(Proto::H2, s.listen, "/report-h2/", false).await,
        format!("x-checksum={CHECKSUM}\n")
    );
}

#[tokio::test]
async fn declared_trailers_pass_both_ways_for_every_pair() {
    let s = setup();
    let headers = [("te", "trailers"), ("trailer", "x-checksum")];
    for front in [Proto::H1, Proto::H2] {
        for backend in [Proto::H1, Proto::H2] {
            let pair = format!("{front:?} -> {backend:?}");
            let path = format!("/echo-{}/", backend.token());
            let (status, res, read, trailers) =
                post_with_trailers(front, s.listen, &path, &headers).await;
            assert_eq!((status, read), (200, LEN), "{pair}");
            assert_eq!(res.get("x-seen-te").unwrap(), "trailers", "{pair}");
            assert_eq!(checksum(&trailers), Some(CHECKSUM), "{pair}");
            let path = format!("/report-{}/", backend.token());
            assert_eq!(
                report(front, s.listen, &path, true).await,
                format!("x-checksum={CHECKSUM}\n"),
                "{pair}"
            );
        }
    }
}

#[tokio::test]
async fn undeclared_request_trailers_reach_only_h2_backends() {
    let s = setup();
    // (An HTTP/1.1 front with undeclared trailers needs a raw client, since
    // hyper's own client drops them too: see the raw test below.)
    assert_eq!(
        report(Proto::H2, s.listen, "/report-h2/", false).await,
        format!("x-checksum={CHECKSUM}\n")
    );
    // The HTTP/1.1 request the gateway writes may only carry trailer
    // fields its `Trailer` header declares; undeclared ones are dropped.
    assert_eq!(
        report(Proto::H2, s.listen, "/report-h1/", false).await,
        "none\n"
    );
}

/// A raw HTTP/1.1 chunked POST ending in an `x-checksum` trailer, with
/// `extra` header lines; returns the whole response as text.
async fn raw_post(addr: SocketAddr, path: &str, extra: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: app.example.com\r\nTE: trailers\r\n{extra}\
             Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\nx-checksum: {CHECKSUM}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("exchange timed out")
}

#[tokio::test]
async fn raw_chunked_request_trailers_reach_backends() {
    let s = setup();
    let reached = format!("x-checksum={CHECKSUM}");
    // The front accepts trailers whether declared or not; HTTP/2 carries
    // them as they are.
    let raw = raw_post(s.listen, "/report-h2/", "").await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains(&reached), "{raw}");
    // Towards an HTTP/1.1 backend they need a `Trailer` declaration.
    let raw = raw_post(s.listen, "/report-h1/", "Trailer: x-checksum\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains(&reached), "{raw}");
    let raw = raw_post(s.listen, "/report-h1/", "").await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("none"), "{raw}");
}

#[tokio::test]
async fn h1_client_gets_response_trailers_only_with_te_and_declaration() {
    let s = setup();
    // No `TE: trailers`: an HTTP/1.1 server must not rely on the client
    // accepting trailers, so they are dropped; the body is intact.
    let (status, _, read, trailers) = post_with_trailers(
        Proto::H1,
        s.listen,
        "/echo-h2/",
        &[("trailer", "x-checksum")],
    )
    .await;
    assert_eq!((status, read), (200, LEN));
    assert_eq!(checksum(&trailers), None);
    // `TE: trailers` but the backend's response declares no `Trailer`.
    let headers = [("te", "trailers"), ("trailer", "x-checksum")];
    let (status, _, read, trailers) =
        post_with_trailers(Proto::H1, s.listen, "/plain-h2/", &headers).await;
    assert_eq!((status, read), (200, LEN));
    assert_eq!(checksum(&trailers), None);
    // The same exchange over HTTP/2 carries them.
    let (status, _, read, trailers) =
        post_with_trailers(Proto::H2, s.listen, "/plain-h2/", &[]).await;
    assert_eq!((status, read), (200, LEN));
    assert_eq!(checksum(&trailers), Some(CHECKSUM));
}
