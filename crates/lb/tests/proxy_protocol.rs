//! The PROXY protocol with real peers: HAProxy's `send-proxy` (v1) and
//! `send-proxy-v2` in front of the gateway make the client's address the
//! gateway's client address (forwarding headers on `h1`, the next header
//! on `tcp`); the gateway's own headers reach nginx's `stream` module
//! (`listen … proxy_protocol`, which answers `$proxy_protocol_addr`),
//! both versions; a `tls` listener's v2 header carries the SNI and the
//! verified client identity as TLVs; peers outside `from` are refused, or
//! served as themselves with `direct = true` unless they send a header.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::backend::{headers_echo, Proto};
use common::scrape::wait_value;
use common::tls::{curl, run_tool, Pki};
use common::{free_addr, require_tool, temp_dir, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

/// The client address the tests connect from: not the gateway's peer
/// (127.0.0.1), so a header that carried it is told apart.
const CLIENT: &str = "127.0.0.2";

/// A child process killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    /// `SIGTERM` first: nginx's master then stops its worker, which a
    /// `SIGKILL` of the master alone would leave running.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something accepts on `addr`.
fn wait_accepting(addr: SocketAddr, peer: &mut Peer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = peer.0.try_wait() {
            panic!("peer exited early: {status}");
        }
        assert!(Instant::now() < deadline, "nothing accepts on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HAProxy with one frontend per `(listen, server line)`, in `mode`.
fn haproxy(mode: &str, frontends: &[(SocketAddr, String)]) -> Peer {
    require_tool("haproxy");
    let dir = temp_dir("haproxy");
    let mut conf = format!(
        "global\n    maxconn 100\ndefaults\n    mode {mode}\n    timeout connect 5s\n    \
         timeout client 30s\n    timeout server 30s\n"
    );
    for (i, (listen, server)) in frontends.iter().enumerate() {
        conf.push_str(&format!(
            "frontend f{i}\n    bind {listen}\n    default_backend b{i}\nbackend b{i}\n    server s {server}\n"
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let mut peer = Peer(
        Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for (listen, _) in frontends {
        wait_accepting(*listen, &mut peer);
    }
    peer
}

/// nginx on `listen` with `server` (a stream or http block's server),
/// the stream module loaded.
fn nginx(block: &str) -> Peer {
    require_tool("nginx");
    let module = "/usr/lib/nginx/modules/ngx_stream_module.so";
    assert!(
        std::path::Path::new(module).exists(),
        "nginx's stream module is not installed (Debian libnginx-mod-stream; .ci/run installs it)"
    );
    let dir = temp_dir("nginx");
    let conf = format!(
        "load_module {module};\nworker_processes 1;\ndaemon off;\npid {pid};\nerror_log {err} warn;\n\
         events {{ worker_connections 64; }}\n{block}\n",
        pid = dir.join("nginx.pid").display(),
        err = dir.join("error.log").display(),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    Peer(
        Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// nginx's stream module on `listen`, taking PROXY headers and answering
/// each connection with the client address and port its header carried.
fn nginx_reporting(listen: SocketAddr) -> Peer {
    let mut peer = nginx(&format!(
        "stream {{ server {{ listen {listen} proxy_protocol; \
         return \"$proxy_protocol_addr $proxy_protocol_port\\n\"; }} }}"
    ));
    wait_accepting(listen, &mut peer);
    peer
}

/// curl from [`CLIENT`] for `http://{addr}/`: the body, or `None` when the
/// connection was closed without an answer.
fn curl_from_client(addr: SocketAddr, extra: &[&str]) -> Option<String> {
    let url = format!("http://{addr}/");
    let mut args = vec![
        "--silent",
        "--show-error",
        "--max-time",
        "10",
        "--interface",
        CLIENT,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let run = run_tool("curl", &args, "");
    run.success.then_some(run.output)
}

/// curl from `client` for `http://{addr}/`: the body of a request that
/// must succeed.
fn get_from(client: &str, addr: SocketAddr) -> String {
    let url = format!("http://{addr}/");
    let run = run_tool(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--max-time",
            "10",
            "--interface",
            client,
            &url,
        ],
        "",
    );
    assert!(run.success, "{}", run.output);
    run.output
}

/// Connect from [`CLIENT`] and read what the far end says until it closes.
async fn read_from_client(addr: SocketAddr) -> (SocketAddr, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{CLIENT}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let local = stream.local_addr().unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
        .await
        .expect("the far end never closed")
        .unwrap();
    (local, text)
}

#[test]
fn haproxy_headers_both_versions_make_the_client_the_gateways_client_on_h1() {
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let text = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         proxy_protocol = {{ from = [\"127.0.0.1/32\"] }}\n\
         backends = [{{ address = \"{}\" }}]\n",
        backend.addr
    );
    let _gw = Gateway::start(&text, &[listen]);
    let (v1, v2) = (free_addr(), free_addr());
    let _haproxy = haproxy(
        "tcp",
        &[
            (v1, format!("{listen} send-proxy")),
            (v2, format!("{listen} send-proxy-v2")),
        ],
    );
    for front in [v1, v2] {
        let body = curl_from_client(front, &[]).expect("served through HAProxy");
        assert!(
            body.contains(&format!("x-forwarded-for: {CLIENT}\n")),
            "the gateway took the client from the header:\n{body}"
        );
    }
    // Straight from a trusted address but without a header: closed.
    assert_eq!(
        curl_from_client(listen, &["--interface", "127.0.0.1"]),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_takes_haproxys_header_and_sends_its_own_to_nginx_in_both_versions() {
    let (nginx_v1, nginx_v2) = (free_addr(), free_addr());
    let _nginx1 = nginx_reporting(nginx_v1);
    let _nginx2 = nginx_reporting(nginx_v2);
    let (to_v1, to_v2) = (free_addr(), free_addr());
    let listener = |listen: SocketAddr, backend: SocketAddr, version: &str| {
        format!(
            "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"tcp\"\n\
             proxy_protocol = {{ accept = \"v2\", from = [\"127.0.0.1\"] }}\n\
             backends = [{{ address = \"{backend}\", protocol = \"tcp\", send_proxy_protocol = \"{version}\" }}]\n"
        )
    };
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{}{}",
        listener(to_v1, nginx_v1, "v1"),
        listener(to_v2, nginx_v2, "v2")
    );
    let _gw = Gateway::start(&text, &[to_v1, to_v2]);
    let (h1, h2) = (free_addr(), free_addr());
    let _haproxy = haproxy(
        "tcp",
        &[
            (h1, format!("{to_v1} send-proxy-v2")),
            (h2, format!("{to_v2} send-proxy-v2")),
        ],
    );
    for front in [h1, h2] {
        let (local, said) = read_from_client(front).await;
        assert_eq!(
            said,
            format!("{} {}\n", local.ip(), local.port()),
            "nginx saw the client HAProxy saw"
        );
    }
    // A peer outside `from`, and a trusted one sending v1 where only v2
    // is taken: each closed before anything reaches nginx, and counted.
    let (_, said) = read_from_client(to_v1).await;
    assert_eq!(said, "", "an untrusted peer is closed");
    let mut trusted = tokio::net::TcpStream::connect(to_v1).await.unwrap();
    trusted
        .write_all(b"PROXY TCP4 10.1.1.1 10.2.2.2 1111 2222\r\n")
        .await
        .unwrap();
    let mut rest = String::new();
    // Closed with the header unread: a reset, or an end of stream.
    let read = tokio::time::timeout(Duration::from_secs(10), trusted.read_to_string(&mut rest))
        .await
        .expect("a refused v1 header closes the connection");
    assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");
    let id = to_v1.to_string();
    wait_value(
        admin,
        "expressgateway_tcp_connections_rejected_total",
        &[("listener", id.as_str()), ("reason", "proxy_protocol")],
        2.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_sends_sni_and_the_client_identity_in_v2_tlvs() {
    let pki = Pki::new("pp-tls");
    let server = pki.server("site", &["site.test"]);
    let client = pki.client("client", "reader", &[]);
    // A backend that reads the v2 header, then answers the HTTP request
    // that follows with what the header said.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                let report = loop {
                    let got = stream.read(&mut buf[n..]).await.unwrap();
                    assert!(got > 0, "closed before the request");
                    n += got;
                    let parsed = ppp::v2::Header::try_from(&buf[..n]);
                    if ppp::PartialResult::is_incomplete(&parsed) {
                        continue;
                    }
                    let header = parsed.expect("a v2 header");
                    let rest = &buf[header.len()..n];
                    if !rest.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    let mut report = format!("addresses={:?}\n", header.addresses);
                    for tlv in header.tlvs() {
                        let tlv = tlv.unwrap();
                        report.push_str(&format!(
                            "tlv {:#04x} {}\n",
                            tlv.kind,
                            String::from_utf8_lossy(&tlv.value)
                        ));
                    }
                    break report;
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{report}",
                    report.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let listen = free_addr();
    let text = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"tls\"\n\
         backends = [{{ address = \"{backend_addr}\", protocol = \"tcp\", send_proxy_protocol = \"v2\" }}]\n\
         [listeners.tls]\nclient_ca_path = {:?}\n\
         [[listeners.tls.certificates]]\ncert_path = {:?}\nkey_path = {:?}\n",
        pki.ca_path, server.cert_path, server.key_path
    );
    let _gw = Gateway::start(&text, &[listen]);
    let cert = client.cert_path.to_str().unwrap().to_owned();
    let key = client.key_path.to_str().unwrap().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        curl(
            listen,
            "site.test",
            &pki,
            "/",
            &["--cert", &cert, "--key", &key],
        )
    })
    .await
    .unwrap();
    assert!(run.success, "{}", run.output);
    assert!(
        run.output.contains("tlv 0x02 site.test\n"),
        "SNI as PP2_TYPE_AUTHORITY:\n{}",
        run.output
    );
    assert!(
        run.output.contains("tlv 0x20 "),
        "PP2_TYPE_SSL:\n{}",
        run.output
    );
    assert!(
        run.output.contains("reader"),
        "the client identity in PP2_TYPE_SSL:\n{}",
        run.output
    );
    assert!(run.output.contains("127.0.0.1"), "{}", run.output);
}

#[test]
fn untrusted_peers_are_refused_or_with_direct_served_unless_they_send_a_header() {
    let backend = headers_echo(Proto::H1);
    let (closed, direct) = (free_addr(), free_addr());
    let listener = |listen: SocketAddr, extra: &str| {
        format!(
            "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
             proxy_protocol = {{ from = [\"10.0.0.0/8\"]{extra} }}\n\
             backends = [{{ address = \"{}\" }}]\n",
            backend.addr
        )
    };
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{}{}",
        listener(closed, ""),
        listener(direct, ", direct = true")
    );
    let _gw = Gateway::start(&text, &[closed, direct]);
    assert_eq!(
        curl_from_client(closed, &[]),
        None,
        "untrusted and not direct"
    );
    let body = curl_from_client(direct, &[]).expect("a direct client is served");
    assert!(
        body.contains(&format!("x-forwarded-for: {CLIENT}\n")),
        "{body}"
    );
    // curl's own PROXY v1 header, from a peer not trusted to send one.
    assert_eq!(
        curl_from_client(direct, &["--haproxy-protocol"]),
        None,
        "a header from an untrusted peer closes the connection"
    );
    // Each refusal is counted on its listener.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for listen in [closed, direct] {
        let id = listen.to_string();
        runtime.block_on(wait_value(
            admin,
            "expressgateway_http_connections_rejected_total",
            &[("listener", id.as_str()), ("reason", "proxy_protocol")],
            1.0,
        ));
    }
}

#[test]
fn an_h1s_listener_takes_the_header_before_its_tls_handshake() {
    let pki = Pki::new("pp-h1s");
    let server = pki.server("site", &["site.test"]);
    let backend = headers_echo(Proto::H1);
    let listen = free_addr();
    let text = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1s\"\n\
         proxy_protocol = {{ accept = \"v1\", from = [\"127.0.0.0/8\"] }}\n\
         backends = [{{ address = \"{}\" }}]\n\
         [listeners.tls]\n[[listeners.tls.certificates]]\ncert_path = {:?}\nkey_path = {:?}\n",
        backend.addr, server.cert_path, server.key_path
    );
    let _gw = Gateway::start(&text, &[listen]);
    let front = free_addr();
    let _haproxy = haproxy("tcp", &[(front, format!("{listen} send-proxy"))]);
    let run = curl(front, "site.test", &pki, "/", &["--interface", CLIENT]);
    assert!(run.success, "{}", run.output);
    assert!(
        run.output.contains(&format!("x-forwarded-for: {CLIENT}\n")),
        "{}",
        run.output
    );
    assert!(
        run.output.contains("x-forwarded-proto: https\n"),
        "{}",
        run.output
    );
}

#[test]
fn an_h1_backend_gets_a_header_on_a_connection_of_its_request_alone() {
    let reporter = free_addr();
    let mut nginx = nginx(&format!(
        "http {{ access_log off; server {{ listen {reporter} proxy_protocol; \
         location / {{ return 200 \"$proxy_protocol_addr\\n\"; }} }} }}"
    ));
    wait_accepting(reporter, &mut nginx);
    let listen = free_addr();
    let text = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         backends = [{{ address = \"{reporter}\", send_proxy_protocol = \"v1\" }}]\n"
    );
    let _gw = Gateway::start(&text, &[listen]);
    // Two clients one after the other: the second must not be handed the
    // first one's connection, whose header names the first.
    for client in ["127.0.0.2", "127.0.0.3", "127.0.0.2"] {
        assert_eq!(get_from(client, listen), format!("{client}\n"));
    }
}

#[test]
fn an_h2_backend_gets_a_header_on_a_connection_of_its_request_alone() {
    // nginx speaking HTTP/2 with prior knowledge (cleartext) behind a
    // PROXY header, answering with the client address the header named.
    let reporter = free_addr();
    let mut nginx = nginx(&format!(
        "http {{ access_log off; server {{ listen {reporter} proxy_protocol http2; \
         location / {{ return 200 \"$proxy_protocol_addr $server_protocol\\n\"; }} }} }}"
    ));
    wait_accepting(reporter, &mut nginx);
    let listen = free_addr();
    let text = format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         backends = [{{ address = \"{reporter}\", protocol = \"h2\", send_proxy_protocol = \"v2\" }}]\n"
    );
    let _gw = Gateway::start(&text, &[listen]);
    // Each request on a connection of its own: HTTP/2 connections are
    // otherwise shared by every client's requests.
    for client in ["127.0.0.2", "127.0.0.3", "127.0.0.2"] {
        assert_eq!(get_from(client, listen), format!("{client} HTTP/2.0\n"));
    }
}
