//! `quic` listeners in passthrough mode: QUIC connections routed to quinn
//! HTTP/3 backends by connection ID, TLS end to end (the clients verify
//! the backends' certificates). Many quinn connections and an aioquic one
//! spread over the backends and complete their requests; a client behind
//! a NAT that rebinds keeps its connection and backend; with server-ID
//! backends a second gateway routes a connection the first one carried,
//! and a client that moves to a new socket keeps its backend; version
//! negotiation and stateless resets pass through; malformed, truncated
//! and unknown packets are dropped and counted; active `quic` checks keep
//! new connections off a dead backend; reload adds a passthrough listener
//! while an unchanged one keeps its connections; drain lets open
//! connections run; `--check` and the status API show the listener.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::h3::{self, H3Backend};
use common::h3client::{self, H3Client};
use common::scrape::{scrape, value, wait_admin, wait_for};
use common::tls::Pki;
use common::{free_addr, free_udp, Gateway};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// `[[clusters.backends]]` of quic backends, with their server IDs.
fn backends_toml(backends: &[(&H3Backend, Option<u16>)]) -> String {
    backends
        .iter()
        .map(|(b, sid)| {
            let sid = sid.map_or(String::new(), |s| format!("quic_server_id = {s}\n"));
            format!(
                "[[clusters.backends]]\naddress = \"{}\"\nprotocol = \"quic\"\n{sid}",
                b.addr
            )
        })
        .collect()
}

/// A passthrough listener on `listen` for cluster `cluster`.
fn listener_toml(listen: SocketAddr, cluster: &str, server_id: bool) -> String {
    let sid = if server_id {
        "server_id = { offset = 1, length = 2 }\n"
    } else {
        ""
    };
    format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"quic\"\ncluster = \"{cluster}\"\n\
         [listeners.quic]\nmode = \"passthrough\"\n{sid}"
    )
}

/// GET `/` on `client`: the answering backend's name.
async fn backend_of(client: &mut H3Client) -> String {
    let (status, headers, _) =
        tokio::time::timeout(Duration::from_secs(10), client.get("h3.test", "/"))
            .await
            .expect("request through the passthrough listener timed out");
    assert_eq!(status, 200);
    headers["x-backend"].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_backends_and_complete_their_requests_end_to_end() {
    let pki = Pki::new("qpt-spread");
    let a = h3::start(&pki, "a");
    let b = h3::start(&pki, "b");
    let c = h3::start(&pki, "c");
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"q\"\npolicy = \"maglev\"\n{}{}",
        backends_toml(&[(&a, None), (&b, None), (&c, None)]),
        listener_toml(listen, "q", false)
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let mut used = HashSet::new();
    for _ in 0..12 {
        let mut client = h3client::connect(listen, "h3.test", &pki).await;
        let first = backend_of(&mut client).await;
        for _ in 0..2 {
            assert_eq!(
                backend_of(&mut client).await,
                first,
                "a connection stays on its backend"
            );
        }
        used.insert(first);
    }
    assert!(
        used.len() >= 2,
        "12 connections hashed by connection ID used {used:?}"
    );
    assert_eq!(a.connections() + b.connections() + c.connections(), 12);

    // aioquic, a QUIC stack written by others, through the same listener.
    let script = common::workspace_root().join("crates/lb/tests/tools/aioquic_get.py");
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("python3")
            .arg(&script)
            .args([
                "127.0.0.1",
                &listen.port().to_string(),
                "h3.test",
                "h3.test",
                "/",
            ])
            .arg(&pki.ca_path)
            .output()
            .expect("python3 (scripts/test installs aioquic for it)")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("200"),
        "aioquic through passthrough: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.connections() + b.connections() + c.connections(), 13);

    let id = format!("{listen}/quic");
    let labels = [("listener", id.as_str())];
    let text = scrape(admin).await;
    assert_eq!(
        value(&text, "expressgateway_udp_sessions_total", &labels),
        Some(13.0),
        "one session per connection"
    );
    for reason in ["malformed", "unknown_connection"] {
        assert_eq!(
            value(
                &text,
                "expressgateway_udp_datagrams_dropped_total",
                &[("listener", id.as_str()), ("reason", reason)]
            ),
            Some(0.0),
            "{reason}"
        );
    }
}

/// A NAT between a client and a gateway: the client sends to `inside`;
/// the NAT sends on from its current outside socket to its current
/// target and relays whatever comes back. `rebind` gives it a new
/// outside socket (a new source port, as a NAT rebinding does), towards
/// the same or another target, and forgets the old one: what still
/// arrives there is lost.
struct Nat {
    inside: SocketAddr,
    state: Arc<Mutex<(Arc<UdpSocket>, SocketAddr)>>,
    task: tokio::task::JoinHandle<()>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    inside_socket: Arc<UdpSocket>,
    back: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Nat {
    async fn new(target: SocketAddr) -> Nat {
        let inside_socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let inside = inside_socket.local_addr().unwrap();
        let outside = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let state = Arc::new(Mutex::new((Arc::clone(&outside), target)));
        let client = Arc::new(Mutex::new(None));
        let task = {
            let (inside_socket, state, client) = (
                Arc::clone(&inside_socket),
                Arc::clone(&state),
                Arc::clone(&client),
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let Ok((n, from)) = inside_socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    *client.lock().await = Some(from);
                    let (outside, target) = state.lock().await.clone();
                    let _ = outside.send_to(&buf[..n], target).await;
                }
            })
        };
        let nat = Nat {
            inside,
            state,
            task,
            client,
            inside_socket,
            back: std::sync::Mutex::new(None),
        };
        nat.relay_back(outside);
        nat
    }

    /// Relay what arrives on `outside` to the client.
    fn relay_back(&self, outside: Arc<UdpSocket>) {
        let (inside, client) = (Arc::clone(&self.inside_socket), Arc::clone(&self.client));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, _)) = outside.recv_from(&mut buf).await {
                if let Some(to) = *client.lock().await {
                    let _ = inside.send_to(&buf[..n], to).await;
                }
            }
        });
        if let Some(old) = self.back.lock().unwrap().replace(task) {
            old.abort();
        }
    }

    /// A new outside socket towards `target`.
    async fn rebind(&self, target: SocketAddr) {
        let outside = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        *self.state.lock().await = (Arc::clone(&outside), target);
        self.relay_back(outside);
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(back) = self.back.lock().unwrap().take() {
            back.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_behind_a_rebinding_nat_keeps_its_connection_and_backend() {
    let pki = Pki::new("qpt-nat");
    let a = h3::start(&pki, "a");
    let b = h3::start(&pki, "b");
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"q\"\n{}{}",
        backends_toml(&[(&a, None), (&b, None)]),
        listener_toml(listen, "q", false)
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let nat = Nat::new(listen).await;
    let mut client = h3client::connect(nat.inside, "h3.test", &pki).await;
    let first = backend_of(&mut client).await;
    nat.rebind(listen).await;
    for _ in 0..3 {
        assert_eq!(backend_of(&mut client).await, first);
    }
    assert_eq!(
        a.connections() + b.connections(),
        1,
        "the same connection carried on"
    );
    let id = format!("{listen}/quic");
    let text = scrape(admin).await;
    assert_eq!(
        value(
            &text,
            "expressgateway_udp_sessions_total",
            &[("listener", id.as_str())]
        ),
        Some(1.0),
        "packets from the new address joined the connection's session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_route_a_connection_by_the_server_id_in_its_connection_ids() {
    let pki = Pki::new("qpt-sid");
    let a = h3::start_with_server_id(&pki, "a", 1);
    let b = h3::start_with_server_id(&pki, "b", 0x0102);
    let (listen_1, listen_2) = (free_udp(), free_udp());
    let admin_2 = free_addr();
    let cluster = format!(
        "[[clusters]]\nname = \"q\"\npolicy = \"round_robin\"\n{}",
        backends_toml(&[(&a, Some(1)), (&b, Some(0x0102))])
    );
    let _gw_1 = Gateway::start(
        &format!("{cluster}{}", listener_toml(listen_1, "q", true)),
        &[listen_1],
    );
    let _gw_2 = Gateway::start(
        &format!(
            "[observability]\nmetrics_bind = \"{admin_2}\"\n{cluster}{}",
            listener_toml(listen_2, "q", true)
        ),
        &[listen_2],
    );
    wait_admin(admin_2).await;
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let nat = Nat::new(listen_1).await;
        let mut client = h3client::connect(nat.inside, "h3.test", &pki).await;
        let first = backend_of(&mut client).await;
        // The path now leads to the other gateway, which never saw the
        // connection's handshake.
        nat.rebind(listen_2).await;
        for _ in 0..3 {
            assert_eq!(backend_of(&mut client).await, first);
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "round robin used both backends");
    assert_eq!(
        a.connections() + b.connections(),
        2,
        "each connection carried on"
    );
    let id = format!("{listen_2}/quic");
    let text = scrape(admin_2).await;
    assert_eq!(
        value(
            &text,
            "expressgateway_udp_sessions_total",
            &[("listener", id.as_str())]
        ),
        Some(2.0),
        "the second gateway opened a session per connection by server ID"
    );
    // A server ID no backend has.
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    raw.send_to(&[0x40, 0, 3, 3, 1, 2, 3, 4, 5, 6], listen_2)
        .await
        .unwrap();
    wait_for(
        admin_2,
        "expressgateway_udp_datagrams_dropped_total",
        &[("listener", id.as_str()), ("reason", "unknown_server_id")],
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_a_new_socket_keeps_its_backend_by_server_id() {
    let pki = Pki::new("qpt-move");
    let a = h3::start_with_server_id(&pki, "a", 7);
    let b = h3::start_with_server_id(&pki, "b", 9);
    let listen = free_udp();
    let text = format!(
        "[[clusters]]\nname = \"q\"\n{}{}",
        backends_toml(&[(&a, Some(7)), (&b, Some(9))]),
        listener_toml(listen, "q", true)
    );
    let _gw = Gateway::start(&text, &[listen]);
    let mut client = h3client::connect(listen, "h3.test", &pki).await;
    let first = backend_of(&mut client).await;
    // quinn moves to a connection ID it has not used yet when its socket
    // changes: only the server ID in it leads to the backend.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.endpoint.rebind(socket).unwrap();
    for _ in 0..3 {
        assert_eq!(backend_of(&mut client).await, first);
    }
    assert_eq!(a.connections() + b.connections(), 1);
}

/// A long header of `version` with the given IDs, padded to `len` bytes.
fn long_header(version: u32, dcid: &[u8], scid: &[u8], len: usize) -> Vec<u8> {
    let mut p = vec![0xc0];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.push(scid.len() as u8);
    p.extend_from_slice(scid);
    p.resize(len.max(p.len()), 0);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_packets_are_dropped_and_counted_and_version_negotiation_passes() {
    let pki = Pki::new("qpt-bad");
    let a = h3::start(&pki, "a");
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"q\"\n{}{}",
        backends_toml(&[(&a, None)]),
        listener_toml(listen, "q", false)
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let malformed: [Vec<u8>; 4] = [
        vec![],
        vec![0xc0, 0, 0],
        vec![0xc0, 0, 0, 0, 1, 8, 1, 2, 3],
        long_header(1, &[7; 21], &[], 1200),
    ];
    for p in &malformed {
        raw.send_to(p, listen).await.unwrap();
    }
    let unknown: [Vec<u8>; 2] = [
        // A short header no connection has.
        vec![0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        // A first packet too small to open a connection.
        long_header(1, &[3; 8], &[4; 8], 300),
    ];
    for p in &unknown {
        raw.send_to(p, listen).await.unwrap();
    }
    let id = format!("{listen}/quic");
    for (reason, want) in [("malformed", 4.0), ("unknown_connection", 2.0)] {
        wait_for(
            admin,
            "expressgateway_udp_datagrams_dropped_total",
            &[("listener", id.as_str()), ("reason", reason)],
            |v| v == want,
        )
        .await;
    }
    assert_eq!(a.connections(), 0);

    // A version the backend does not speak: its version negotiation
    // comes back through the gateway.
    let probe = long_header(0x1a2a_3a4a, &[5; 8], &[6; 8], 1200);
    raw.send_to(&probe, listen).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), raw.recv_from(&mut buf))
        .await
        .expect("no version negotiation came back")
        .unwrap();
    assert_eq!(from, listen);
    let vn = &buf[..n];
    assert_eq!(vn[0] & 0x80, 0x80, "a long header");
    assert_eq!(&vn[1..5], &[0, 0, 0, 0], "version 0: version negotiation");
    assert_eq!(
        &vn[5..14],
        &[8, 6, 6, 6, 6, 6, 6, 6, 6],
        "addressed to our ID"
    );
    let versions: Vec<u32> = vn[6 + 8 + 1 + 8..]
        .chunks(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect();
    assert!(versions.contains(&1), "offers QUIC v1: {versions:x?}");

    // The listener still serves real connections.
    let mut client = h3client::connect(listen, "h3.test", &pki).await;
    assert_eq!(backend_of(&mut client).await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_quic_checks_keep_new_connections_off_a_dead_backend() {
    let pki = Pki::new("qpt-health");
    let a = h3::start(&pki, "a");
    // Bound, so no ICMP refusal: it takes packets and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"q\"\npolicy = \"round_robin\"\n\
         health_check = {{ interval_ms = 100, timeout_ms = 300, unhealthy_threshold = 1 }}\n\
         {}[[clusters.backends]]\naddress = \"{silent_addr}\"\nprotocol = \"quic\"\n{}",
        backends_toml(&[(&a, None)]),
        listener_toml(listen, "q", false)
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    wait_for(
        admin,
        "expressgateway_health_transitions_total",
        &[("cluster", "q"), ("to", "unhealthy")],
        |v| v == 1.0,
    )
    .await;
    let mut buf = vec![0u8; 2048];
    let (n, _) = silent.recv_from(&mut buf).await.unwrap();
    assert_eq!(n, 1200, "the check sends a full-size first packet");
    for _ in 0..4 {
        let mut client = h3client::connect(listen, "h3.test", &pki).await;
        assert_eq!(backend_of(&mut client).await, "a");
    }
    let text = scrape(admin).await;
    assert_eq!(
        value(
            &text,
            "expressgateway_health_transitions_total",
            &[("cluster", "q"), ("to", "unhealthy")]
        ),
        Some(1.0),
        "the live backend answered every check with a version negotiation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_passthrough_listeners_and_keeps_the_connections_of_an_unchanged_one(
) {
    let pki = Pki::new("qpt-reload");
    let a = h3::start(&pki, "a");
    let (listen_1, listen_2) = (free_udp(), free_udp());
    let cluster = format!(
        "[[clusters]]\nname = \"q\"\n{}",
        backends_toml(&[(&a, None)])
    );
    let first = format!("{cluster}{}", listener_toml(listen_1, "q", false));
    let gw = Gateway::start(&first, &[listen_1]);
    let mut kept = h3client::connect(listen_1, "h3.test", &pki).await;
    assert_eq!(backend_of(&mut kept).await, "a");
    std::fs::write(
        &gw.config_path,
        format!("{first}{}", listener_toml(listen_2, "q", false)),
    )
    .unwrap();
    gw.signal("HUP");
    common::tls::wait_for_log(&gw, &format!("listener {listen_2}/quic (quic) added"), 1);
    let mut added = h3client::connect(listen_2, "h3.test", &pki).await;
    assert_eq!(backend_of(&mut added).await, "a");
    assert_eq!(backend_of(&mut kept).await, "a");
    assert_eq!(a.connections(), 2);

    // Removed again: it opens no new connection.
    std::fs::write(&gw.config_path, &first).unwrap();
    gw.signal("HUP");
    common::tls::wait_for_log(&gw, &format!("listener {listen_2}/quic (quic) removed"), 1);
    let late = tokio::time::timeout(
        Duration::from_secs(1),
        h3client::connect_with(
            listen_2,
            "h3.test",
            common::tls::client_config(&pki, &[b"h3"], None),
        ),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "the removed listener opened a connection"
    );
    assert_eq!(backend_of(&mut kept).await, "a");
    assert_eq!(a.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_open_connections_run_and_opens_no_new_one() {
    let pki = Pki::new("qpt-drain");
    let a = h3::start(&pki, "a");
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[runtime]\ndrain_timeout_ms = 1500\nreadiness_settle_ms = 0\n\
         [observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"q\"\n{}{}",
        backends_toml(&[(&a, None)]),
        listener_toml(listen, "q", false)
    );
    let mut gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let mut open = h3client::connect(listen, "h3.test", &pki).await;
    assert_eq!(backend_of(&mut open).await, "a");
    let started = std::time::Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend_of(&mut open).await,
        "a",
        "an open connection runs on while draining"
    );
    let late = tokio::time::timeout(
        Duration::from_millis(500),
        h3client::connect_with(
            listen,
            "h3.test",
            common::tls::client_config(&pki, &[b"h3"], None),
        ),
    )
    .await;
    assert!(
        !matches!(late, Ok(Ok(_))),
        "no new connection while draining"
    );
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", gw.log());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "the open connection held the drain until its budget ran out ({took:?})"
    );
    assert_eq!(a.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_stateless_reset_passes_through() {
    let pki = Pki::new("qpt-reset");
    let a = h3::start_with_server_id(&pki, "a", 5);
    let listen = free_udp();
    let text = format!(
        "[[clusters]]\nname = \"q\"\n{}{}",
        backends_toml(&[(&a, Some(5))]),
        listener_toml(listen, "q", true)
    );
    let _gw = Gateway::start(&text, &[listen]);
    // A short header carrying backend a's server ID but no connection of
    // its: the gateway routes it there by server ID, and quinn answers a
    // packet of a connection it does not know with a stateless reset.
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut packet = vec![0x40, 0x33, 0, 5, 1, 2, 3, 4, 5];
    packet.resize(200, 0x5a);
    raw.send_to(&packet, listen).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), raw.recv_from(&mut buf))
        .await
        .expect("no stateless reset came back")
        .unwrap();
    assert_eq!(from, listen);
    // RFC 9000 §10.3: a short-header-shaped datagram ending in a 16-byte
    // token, shorter than the packet that incited it.
    assert_eq!(buf[0] & 0x80, 0, "short header form");
    assert!((21..200).contains(&n), "{n} bytes");
    assert_eq!(a.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_the_status_api_show_a_passthrough_listener() {
    let pki = Pki::new("qpt-show");
    let a = h3::start_with_server_id(&pki, "a", 1);
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"edge\"\n{}{}",
        backends_toml(&[(&a, Some(1))]),
        listener_toml(listen, "edge", true)
    );
    let dir = common::temp_dir("qpt-show");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = common::run_cli(&["--check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{listen} quic")) && out.contains(
            "-> cluster edge, QUIC passed through by connection ID and by the 2-byte server ID at byte 1, sessions idle after 30000 ms"
        ),
        "{out}"
    );
    let _gw = Gateway::start_file(path, &[listen]);
    wait_admin(admin).await;
    let mut c = common::client::Client::connect(common::backend::Proto::H1, admin).await;
    let req = http::Request::builder()
        .uri("/api/v1/status")
        .header("host", "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let body = common::body::text(c.send(req).await.unwrap().into_body()).await;
    assert!(
        body.contains("-> cluster edge (quic passthrough, server ID at byte 1 of 2)"),
        "{body}"
    );
}
