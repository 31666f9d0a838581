//! `udp` listeners: datagrams relayed both ways by session (client address
//! and port) through every balancing policy; sessions end when idle and
//! leave an access log line; a backend that refuses datagrams (ICMP port
//! unreachable) loses its sessions to another; active `udp` checks keep
//! new sessions off a silent backend; `max_connections` caps sessions;
//! reload adds and removes udp listeners while an unchanged one keeps its
//! sessions; drain lets open sessions run and opens no new one.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::scrape::{scrape, value, wait_admin, wait_for};
use common::{free_addr, free_udp, temp_dir, Gateway};
use tokio::net::UdpSocket;

/// A udp backend answering each datagram with `NAME:` and the datagram.
struct Echo {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn echo(name: &'static str) -> Echo {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, from).await;
        }
    });
    Echo { addr, task }
}

/// A client socket of its own (its own session).
async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Send `payload` to `listen` and wait up to `wait` for one reply.
async fn ask(
    socket: &UdpSocket,
    listen: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> Option<String> {
    socket.send_to(payload, listen).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, listen, "the reply comes from the listener's address");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        _ => None,
    }
}

/// The backend name of a reply `NAME:payload`, checking the payload.
fn answered_by(reply: &str, payload: &str) -> String {
    let (name, echoed) = reply.split_once(':').expect("NAME:payload");
    assert_eq!(echoed, payload);
    name.to_owned()
}

fn backends_toml(echoes: &[(&str, &Echo)]) -> String {
    echoes
        .iter()
        .map(|(_, e)| {
            format!(
                "[[clusters.backends]]\naddress = \"{}\"\nprotocol = \"udp\"\n",
                e.addr
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_relays_datagrams_both_ways_and_keeps_each_session_on_one_backend() {
    let a = echo("a").await;
    let b = echo("b").await;
    let c = echo("c").await;
    let echoes = [("a", &a), ("b", &b), ("c", &c)];
    let policies = [
        ("round_robin", ""),
        ("weighted_round_robin", ""),
        ("random", ""),
        ("weighted_random", ""),
        ("p2c", ""),
        ("maglev", "hash_key = \"source_ip_port\"\n"),
        ("ring_hash", "hash_key = \"source_ip_port\"\n"),
        ("ewma", ""),
        ("least_connections", ""),
        ("least_requests", ""),
        ("session_affinity", "hash_key = \"source_ip_port\"\n"),
    ];
    let mut text = String::new();
    let mut listens = Vec::new();
    for (policy, extra) in policies {
        let listen = free_udp();
        listens.push((policy, listen));
        text.push_str(&format!(
            "[[clusters]]\nname = \"{policy}\"\npolicy = \"{policy}\"\n{extra}{}",
            backends_toml(&echoes)
        ));
        text.push_str(&format!(
            "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\ncluster = \"{policy}\"\n"
        ));
    }
    let addrs: Vec<SocketAddr> = listens.iter().map(|(_, l)| *l).collect();
    let _gw = Gateway::start(&text, &addrs);
    for (policy, listen) in listens {
        let mut used = HashSet::new();
        for i in 0..12 {
            let socket = client().await;
            let mut seen = HashSet::new();
            for j in 0..3 {
                let payload = format!("{policy}-{i}-{j}");
                let reply = ask(&socket, listen, payload.as_bytes(), Duration::from_secs(5))
                    .await
                    .unwrap_or_else(|| panic!("{policy}: no reply to {payload}"));
                seen.insert(answered_by(&reply, &payload));
            }
            assert_eq!(
                seen.len(),
                1,
                "{policy}: one session, one backend: {seen:?}"
            );
            used.extend(seen);
        }
        assert!(
            used.len() >= 2,
            "{policy}: twelve sessions all on one backend: {used:?}"
        );
    }
}

#[tokio::test]
async fn idle_sessions_end_with_an_access_log_line_and_the_next_datagram_opens_another() {
    let a = echo("a").await;
    let listen = free_udp();
    let admin = free_addr();
    let dir = temp_dir("udp-log");
    let log = dir.join("access.log");
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\n\
         timeouts = {{ idle_ms = 300 }}\naccess_log = {{ path = \"{}\" }}\n\
         backends = [{{ address = \"{}\", protocol = \"udp\" }}]\n",
        log.display(),
        a.addr
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let id = format!("{listen}/udp");
    let labels = [("listener", id.as_str())];
    let socket = client().await;
    assert_eq!(
        ask(&socket, listen, b"one", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("a:one")
    );
    assert_eq!(
        ask(&socket, listen, b"two", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("a:two")
    );
    // A reply is counted once sent, which may trail the client's read.
    wait_for(admin, "expressgateway_udp_sent_bytes_total", &labels, |v| {
        v == 10.0
    })
    .await;
    let text = scrape(admin).await;
    assert_eq!(
        value(&text, "expressgateway_udp_sessions_open", &labels),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "expressgateway_udp_sessions_total", &labels),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "expressgateway_udp_datagrams_received_total",
            &labels
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "expressgateway_udp_datagrams_sent_total", &labels),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "expressgateway_udp_received_bytes_total", &labels),
        Some(6.0)
    );
    assert_eq!(
        value(&text, "expressgateway_udp_sent_bytes_total", &labels),
        Some(10.0)
    );
    let started = Instant::now();
    wait_for(admin, "expressgateway_udp_sessions_open", &labels, |v| {
        v == 0.0
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the session ended before its idle time"
    );
    let line = wait_line(&log).await;
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["listener"], id);
    assert_eq!(record["protocol"], "udp");
    assert_eq!(record["client"], socket.local_addr().unwrap().to_string());
    assert_eq!(record["backend"], a.addr.to_string());
    assert_eq!(record["bytes_in"], 6);
    assert_eq!(record["bytes_out"], 10);
    assert_eq!(
        ask(&socket, listen, b"three", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("a:three")
    );
    wait_for(admin, "expressgateway_udp_sessions_total", &labels, |v| {
        v == 2.0
    })
    .await;
}

/// The first line of the access log, once written.
async fn wait_line(log: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no access log line in {log:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_backend_that_refuses_datagrams_loses_its_sessions_to_another() {
    let a = echo("a").await;
    let b = echo("b").await;
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"dns\"\npolicy = \"round_robin\"\n{}\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\ncluster = \"dns\"\n",
        backends_toml(&[("a", &a), ("b", &b)])
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    // Sessions on both backends.
    let mut sessions = Vec::new();
    for i in 0..4 {
        let socket = client().await;
        let payload = format!("hello-{i}");
        let reply = ask(&socket, listen, payload.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        sessions.push((socket, answered_by(&reply, &payload)));
    }
    let on_a = sessions.iter().filter(|(_, n)| n == "a").count();
    assert!(
        on_a > 0 && on_a < 4,
        "round robin spreads: {on_a} of 4 on a"
    );
    // Backend a goes away: its port answers with ICMP port unreachable.
    a.task.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, (socket, name)) in sessions.iter().enumerate() {
        // The datagram that meets the refusal is lost, as without a proxy;
        // the client sends again, as a UDP client does.
        let mut got = None;
        for attempt in 0..20 {
            let payload = format!("again-{i}-{attempt}");
            if let Some(reply) = ask(
                socket,
                listen,
                payload.as_bytes(),
                Duration::from_millis(250),
            )
            .await
            {
                got = Some(answered_by(&reply, &payload));
                break;
            }
        }
        assert_eq!(got.as_deref(), Some("b"), "session {i} (was on {name})");
    }
    let id = format!("{listen}/udp");
    let moved = value(
        &scrape(admin).await,
        "expressgateway_udp_sessions_moved_total",
        &[("listener", id.as_str())],
    );
    assert_eq!(moved, Some(on_a as f64));
    // New sessions avoid the refusing backend.
    for i in 0..4 {
        let socket = client().await;
        let payload = format!("new-{i}");
        let reply = ask(&socket, listen, payload.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answered_by(&reply, &payload), "b");
    }
}

#[tokio::test]
async fn active_udp_checks_keep_new_sessions_off_a_silent_backend() {
    let a = echo("a").await;
    // Bound, so no ICMP refusal: it takes datagrams and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[clusters]]\nname = \"dns\"\npolicy = \"round_robin\"\n\
         health_check = {{ kind = \"udp\", payload = \"ping\", interval_ms = 100, timeout_ms = 200, unhealthy_threshold = 1 }}\n\
         [[clusters.backends]]\naddress = \"{}\"\nprotocol = \"udp\"\n\
         [[clusters.backends]]\naddress = \"{silent_addr}\"\nprotocol = \"udp\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\ncluster = \"dns\"\n",
        a.addr
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    wait_for(
        admin,
        "expressgateway_health_transitions_total",
        &[("cluster", "dns"), ("to", "unhealthy")],
        |v| v == 1.0,
    )
    .await;
    let mut buf = [0u8; 16];
    let (n, _) = silent.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"ping", "the check sends its payload");
    for i in 0..6 {
        let socket = client().await;
        let payload = format!("q-{i}");
        let reply = ask(&socket, listen, payload.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("session {i} went to the silent backend"));
        assert_eq!(answered_by(&reply, &payload), "a");
    }
}

#[tokio::test]
async fn max_connections_caps_sessions_and_counts_the_dropped_datagrams() {
    let a = echo("a").await;
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\nmax_connections = 2\n\
         backends = [{{ address = \"{}\", protocol = \"udp\" }}]\n",
        a.addr
    );
    let _gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let (one, two, three) = (client().await, client().await, client().await);
    assert!(ask(&one, listen, b"1", Duration::from_secs(5))
        .await
        .is_some());
    assert!(ask(&two, listen, b"2", Duration::from_secs(5))
        .await
        .is_some());
    assert_eq!(
        ask(&three, listen, b"3", Duration::from_millis(500)).await,
        None
    );
    let id = format!("{listen}/udp");
    let text = scrape(admin).await;
    assert_eq!(
        value(
            &text,
            "expressgateway_udp_datagrams_dropped_total",
            &[("listener", id.as_str()), ("reason", "session_limit")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "expressgateway_udp_sessions_open",
            &[("listener", id.as_str())]
        ),
        Some(2.0)
    );
    // The sessions already open carry on.
    assert!(ask(&one, listen, b"1b", Duration::from_secs(5))
        .await
        .is_some());
}

#[tokio::test]
async fn reload_adds_and_removes_udp_listeners_and_keeps_the_sessions_of_unchanged_ones() {
    let a = echo("a").await;
    let b = echo("b").await;
    let kept = free_udp();
    let added = free_udp();
    let listener = |listen: SocketAddr, backend: SocketAddr| {
        format!(
            "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\n\
             backends = [{{ address = \"{backend}\", protocol = \"udp\" }}]\n"
        )
    };
    let admin = free_addr();
    let listener = |listen: SocketAddr, backend: SocketAddr| {
        format!(
            "[observability]\nmetrics_bind = \"{admin}\"\n{}",
            listener(listen, backend)
        )
    };
    let both = format!(
        "{}[[listeners]]\naddress = \"{added}\"\nprotocol = \"udp\"\n\
         backends = [{{ address = \"{}\", protocol = \"udp\" }}]\n",
        listener(kept, a.addr),
        b.addr
    );
    let dir = temp_dir("udp-reload");
    let path = dir.join("gateway.toml");
    std::fs::write(&path, listener(kept, a.addr)).unwrap();
    let gw = Gateway::start_file(path.clone(), &[kept]);
    wait_admin(admin).await;
    let session = client().await;
    assert_eq!(
        ask(&session, kept, b"x", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("a:x")
    );
    std::fs::write(&path, both).unwrap();
    gw.signal("HUP");
    let other = client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ask(&other, added, b"y", Duration::from_millis(200))
            .await
            .as_deref()
            == Some("b:y")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the added udp listener never answered:\n{}",
            gw.log()
        );
    }
    // The session opened before the reload is the same one: same backend,
    // and the listener still counts one session opened.
    assert_eq!(
        ask(&session, kept, b"z", Duration::from_secs(5))
            .await
            .as_deref(),
        Some("a:z")
    );
    let kept_id = format!("{kept}/udp");
    assert_eq!(
        value(
            &scrape(admin).await,
            "expressgateway_udp_sessions_total",
            &[("listener", kept_id.as_str())]
        ),
        Some(1.0)
    );
    std::fs::write(&path, listener(kept, a.addr)).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fresh = client().await;
        if ask(&fresh, added, b"w", Duration::from_millis(200))
            .await
            .is_none()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removed udp listener kept answering"
        );
    }
    let log = gw.log();
    assert!(
        log.contains(&format!("listener {added}/udp (udp) added")),
        "{log}"
    );
    assert!(
        log.contains(&format!("listener {added}/udp (udp) removed")),
        "{log}"
    );
}

#[tokio::test]
async fn drain_lets_open_sessions_run_and_opens_no_new_one() {
    let a = echo("a").await;
    let listen = free_udp();
    let admin = free_addr();
    let text = format!(
        "[runtime]\ndrain_timeout_ms = 1500\nreadiness_settle_ms = 0\n\
         [observability]\nmetrics_bind = \"{admin}\"\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"udp\"\n\
         backends = [{{ address = \"{}\", protocol = \"udp\" }}]\n",
        a.addr
    );
    let mut gw = Gateway::start(&text, &[listen]);
    wait_admin(admin).await;
    let open = client().await;
    assert!(ask(&open, listen, b"before", Duration::from_secs(5))
        .await
        .is_some());
    let started = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ask(&open, listen, b"during", Duration::from_secs(2))
            .await
            .as_deref(),
        Some("a:during"),
        "an open session runs on while draining"
    );
    let late = client().await;
    assert_eq!(
        ask(&late, listen, b"new", Duration::from_millis(300)).await,
        None,
        "no new session while draining"
    );
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}:\n{}", gw.log());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "the open session held the drain until its budget ran out ({took:?})"
    );
}
