//! WebSocket through the gateway with tokio-tungstenite on both ends: an
//! HTTP/1.1 client's `Upgrade` to an h1 echo backend; text, binary (1
//! MiB), ping and close codes pass both ways; a reload leaves an open
//! tunnel alone; a drain ends tunnels with close frame 1001 on both sides;
//! routes and backends that cannot carry a WebSocket refuse it.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use common::scrape::{wait_admin, wait_value};
use common::{free_addr, Gateway};

/// A WebSocket echo backend (tokio-tungstenite's server); what it saw.
struct Echo {
    addr: SocketAddr,
    /// Close codes the backend received.
    closes: Arc<std::sync::Mutex<Vec<u16>>>,
    accepted: Arc<AtomicUsize>,
}

async fn echo_backend() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (Arc::clone(&closes), Arc::clone(&accepted));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            let sent = ws.send(msg).await;
                            if sent.is_err() {
                                return;
                            }
                        }
                        Message::Close(frame) => {
                            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                            seen.lock().unwrap().push(code);
                            // tungstenite answers the close itself as the
                            // stream is read on to its end.
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    Echo {
        addr,
        closes,
        accepted,
    }
}

fn config(admin: SocketAddr, listen: SocketAddr, backend: SocketAddr, extra: &str) -> String {
    format!(
        r#"[observability]
metrics_bind = "{admin}"

[runtime]
drain_timeout_ms = 1000
# One worker: the current-thread runtime carries these tunnels.
worker_threads = 1

[[clusters]]
name = "ws"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/chat"
cluster = "ws"
{extra}"#
    )
}

async fn connect(listen: SocketAddr, path: &str) -> WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(listen).await.unwrap();
    let url = format!("ws://{listen}{path}");
    let (ws, response) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    assert_eq!(response.status(), 101);
    ws
}

const OPENED: &str = "expressgateway_http_tunnels_opened_total";
const OPEN: &str = "expressgateway_http_tunnels_open";
const CLOSED: &str = "expressgateway_http_tunnels_closed_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pings_and_close_codes_pass_both_ways_over_http1() {
    let echo = echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let gw = Gateway::start(&config(admin, listen, echo.addr, ""), &[listen]);
    wait_admin(admin).await;
    let mut ws = connect(listen, "/chat").await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    // Ping: the backend's pong comes back through the tunnel.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(b"are you there".to_vec().into())
    );
    wait_value(admin, OPEN, &[], 1.0).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4000),
        other => panic!("no close echoed: {other:?}"),
    }
    assert_eq!(*echo.closes.lock().unwrap(), vec![4000]);
    // The backend closed its connection after the handshake; the tunnel
    // stays half-open until the client closes its own.
    assert!(ws.next().await.is_none());
    drop(ws);
    wait_value(admin, OPEN, &[], 0.0).await;
    wait_value(admin, OPENED, &[], 1.0).await;
    // The backend ends the close handshake by closing first (RFC 6455
    // §7.1.1), so the tunnel ends on its side.
    wait_value(admin, CLOSED, &[("reason", "backend")], 1.0).await;
    // One access line for the tunnel, written as it ended (the log is
    // flushed in batches).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = gw
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["log"] == "access" && v["path"] == "/chat");
        if let Some(line) = found {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line for the tunnel"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(line["status"], 101, "{line}");
    assert!(line["bytes_in"].as_u64().unwrap() > 1 << 20, "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 1 << 20, "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_leaves_an_open_tunnel_alone() {
    let echo = echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let gw = Gateway::start(&config(admin, listen, echo.addr, ""), &[listen]);
    wait_admin(admin).await;
    let mut ws = connect(listen, "/chat").await;
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));
    // The route and cluster go away.
    let other = format!(
        r#"[observability]
metrics_bind = "{admin}"

[[listeners]]
address = "{listen}"
protocol = "h1"
[[listeners.routes]]
direct = {{ status = 200, body = "elsewhere" }}
"#
    );
    std::fs::write(&gw.config_path, other).unwrap();
    gw.signal("HUP");
    wait_value(
        admin,
        "expressgateway_config_reloads_total",
        &[("result", "applied")],
        1.0,
    )
    .await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_tunnels_with_close_1001_on_both_sides() {
    let echo = echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let mut gw = Gateway::start(&config(admin, listen, echo.addr, ""), &[listen]);
    wait_admin(admin).await;
    let mut ws = connect(listen, "/chat").await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x"));
    gw.signal("TERM");
    // The tunnel outlives the start of the drain, up to drain_timeout_ms.
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the drain ended the tunnel");
    match frame {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("no close 1001: {other:?}"),
    }
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    // The backend got its close 1001 too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while echo.closes.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*echo.closes.lock().unwrap(), vec![1001]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_backends_that_cannot_carry_a_websocket_refuse_it() {
    let echo = echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let h2_backend = common::backend::echo(common::backend::Proto::H2);
    let extra = format!(
        r#"[[listeners.routes]]
path_prefix = "/off"
cluster = "ws"
websocket = false
[[listeners.routes]]
path_prefix = "/h2"
cluster = "h2"

[[clusters]]
name = "h2"
backends = [{{ address = "{}", protocol = "h2" }}]
"#,
        h2_backend.addr
    );
    let _gw = Gateway::start(&config(admin, listen, echo.addr, &extra), &[listen]);
    wait_admin(admin).await;
    // The h2 backend does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL:
    // its extended CONNECT cannot be sent, a 502.
    for (path, status) in [("/off", 501), ("/h2", 502)] {
        let stream = TcpStream::connect(listen).await.unwrap();
        let url = format!("ws://{listen}{path}");
        match tokio_tungstenite::client_async(url, stream).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                assert_eq!(res.status(), status, "{path}")
            }
            other => panic!("{path}: {:?}", other.map(|(_, r)| r.status())),
        }
    }
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_extended_connect_reaches_an_http1_backend() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let echo = echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let _gw = Gateway::start(&config(admin, listen, echo.addr, ""), &[listen]);
    wait_admin(admin).await;
    // hyper's HTTP/2 client: h2c prior knowledge, RFC 8441 CONNECT.
    let tcp = TcpStream::connect(listen).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::connect(format!("http://{listen}/chat"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(&mut res).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    let big = vec![7u8; 300_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    wait_value(admin, OPENED, &[], 1.0).await;
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

/// A WebSocket echo backend over HTTP/2 (RFC 8441): hyper's server with
/// extended CONNECT enabled, tokio-tungstenite on the upgraded stream.
async fn h2_echo_backend() -> SocketAddr {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio_tungstenite::tungstenite::protocol::Role;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|mut req: http::Request<hyper::body::Incoming>| {
                        let websocket = req.method() == http::Method::CONNECT
                            && req
                                .extensions()
                                .get::<hyper::ext::Protocol>()
                                .is_some_and(|p| p.as_str() == "websocket");
                        let upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
                        async move {
                            let Some(upgrade) = upgrade else {
                                let mut res = http::Response::new(http_body_util::Empty::<
                                    bytes::Bytes,
                                >::new(
                                ));
                                *res.status_mut() = http::StatusCode::BAD_REQUEST;
                                return Ok::<_, std::convert::Infallible>(res);
                            };
                            tokio::spawn(async move {
                                let Ok(upgraded) = upgrade.await else { return };
                                let mut ws = WebSocketStream::from_raw_socket(
                                    TokioIo::new(upgraded),
                                    Role::Server,
                                    None,
                                )
                                .await;
                                while let Some(Ok(msg)) = ws.next().await {
                                    if msg.is_text() || msg.is_binary() {
                                        let sent = ws.send(msg).await;
                                        if sent.is_err() {
                                            return;
                                        }
                                    }
                                }
                            });
                            Ok(http::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .enable_connect_protocol()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_upgrade_reaches_an_h2_backend_as_an_extended_connect() {
    let backend = h2_echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let text =
        config(admin, listen, backend, "").replace("protocol = \"h1\" }]", "protocol = \"h2\" }]");
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    // tokio-tungstenite checks Sec-WebSocket-Accept: the gateway computes
    // it, as the h2 backend sends none.
    let mut ws = connect(listen, "/chat").await;
    ws.send(Message::text("to h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("to h2"));
    let big = vec![3u8; 200_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    wait_value(admin, OPENED, &[], 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tunnels_refuses_one_more_and_an_idle_tunnel_is_closed() {
    let echo = echo_backend().await;
    let (listen, admin) = (free_addr(), free_addr());
    let text = config(admin, listen, echo.addr, "").replace(
        "protocol = \"h1\"\n[[listeners.routes]]",
        "protocol = \"h1\"\nmax_tunnels = 1\n[listeners.timeouts]\ntunnel_idle_ms = 400\n[[listeners.routes]]",
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let mut ws = connect(listen, "/chat").await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("one"));
    // The listener's one tunnel is taken: the next is refused before any
    // backend is asked.
    let stream = TcpStream::connect(listen).await.unwrap();
    match tokio_tungstenite::client_async(format!("ws://{listen}/chat"), stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 503),
        other => panic!("a second tunnel: {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
    // Nothing moves for 400 ms: the tunnel is closed.
    let ended = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the idle tunnel was not closed");
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{ended:?}"
    );
    wait_value(admin, CLOSED, &[("reason", "idle")], 1.0).await;
    wait_value(admin, OPEN, &[], 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_over_the_tls_front_reaches_an_http1_backend() {
    let echo = echo_backend().await;
    let pki = common::tls::Pki::new("ws-tls");
    let cert = pki.server("front", &["ws.test"]);
    let (admin, listen) = (free_addr(), free_addr());
    let text = config(admin, listen, echo.addr, "").replace(
        "protocol = \"h1\"\n[[listeners.routes]]",
        &format!(
            "protocol = \"h1s\"\n[listeners.tls]\ncert_path = {:?}\nkey_path = {:?}\n[[listeners.routes]]",
            cert.cert_path, cert.key_path
        ),
    );
    assert!(text.contains("h1s"), "{text}");
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let script = common::workspace_root().join("crates/lb/tests/tools/ws_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg(listen.port().to_string())
        .arg(&pki.ca_path)
        .arg("ws.test")
        .arg((512 * 1024).to_string())
        .output()
        .await
        .expect("python3 (scripts/test installs websockets for it)");
    assert!(
        out.status.success(),
        "websockets client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["text"], "hello through tls", "{result}");
    assert_eq!(result["binary_ok"], true, "{result}");
    assert_eq!(result["pong"], true, "{result}");
    assert_eq!(result["close_code"], 4000, "{result}");
    // The client's close code reached the backend.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while echo.closes.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no close reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(*echo.closes.lock().unwrap(), vec![4000]);
    wait_value(admin, OPENED, &[], 1.0).await;
}
