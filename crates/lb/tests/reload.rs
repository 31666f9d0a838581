//! SIGHUP reload through the real binary: fifty reloads under continuous
//! HTTP/1.1 and HTTP/2 load lose no request, each reload's backends serve
//! right after it; an invalid file changes nothing; listeners are added and
//! drained live; backend state and weights carry over; a protocol change is
//! reported as needing a restart; a certificate path change is served.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::{gated_under, named, Backend, Proto};
use common::client::{get, request, Client};
use common::{free_addr, Gateway};
use http_body_util::Empty;

async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let mut c = Client::connect(Proto::H1, admin).await;
    let req = http::Request::builder()
        .uri(path)
        .header("host", "admin")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = c.send(req).await.unwrap();
    serde_json::from_str(&common::body::text(res.into_body()).await).unwrap()
}

async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let mut c = Client::connect(Proto::H1, admin).await;
    let req = http::Request::builder()
        .uri(path)
        .header("host", "admin")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = c.send(req).await.unwrap();
    common::body::text(res.into_body()).await
}

/// Rewrite the config, SIGHUP, and wait for `generation` (or, when it
/// stays, for the rejection to be recorded).
async fn reload(
    gw: &Gateway,
    admin: SocketAddr,
    text: &str,
    expect_generation: u64,
) -> serde_json::Value {
    std::fs::write(&gw.config_path, text).unwrap();
    let before = admin_json(admin, "/api/v1/status").await;
    let seen_before = before["config"]["last_reload"]["time"].clone();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = admin_json(admin, "/api/v1/status").await;
        let gen = status["config"]["generation"].as_u64().unwrap();
        let last = &status["config"]["last_reload"];
        if gen == expect_generation && !last.is_null() && last["time"] != seen_before {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "reload to generation {expect_generation} not seen: {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config(admin: SocketAddr, listeners: &[(SocketAddr, &str)], cluster: &str) -> String {
    let mut text = format!("[observability]\nmetrics_bind = \"{admin}\"\n\n{cluster}\n");
    for (addr, proto) in listeners {
        text.push_str(&format!(
            "[[listeners]]\naddress = \"{addr}\"\nprotocol = \"{proto}\"\n[[listeners.routes]]\ncluster = \"svc\"\n\n"
        ));
    }
    text
}

fn cluster(policy: &str, backends: &[(&Backend, u32)]) -> String {
    let mut text = format!("[[clusters]]\nname = \"svc\"\npolicy = \"{policy}\"\n");
    for (b, w) in backends {
        text.push_str(&format!(
            "[[clusters.backends]]\naddress = \"{}\"\nweight = {w}\n",
            b.addr
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_request() {
    let a = named(Proto::H1, "a");
    let b = named(Proto::H2, "b");
    let c = named(Proto::H1, "c");
    let (listen, admin) = (free_addr(), free_addr());
    let b_cluster = |policy: &str| {
        format!(
            "[[clusters]]\nname = \"svc\"\npolicy = \"{policy}\"\n[[clusters.backends]]\naddress = \"{}\"\nprotocol = \"h2\"\n",
            b.addr
        )
    };
    let set_ac = cluster("round_robin", &[(&a, 1), (&c, 1)]);
    let gw = Gateway::start(&config(admin, &[(listen, "h1")], &set_ac), &[listen]);

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for proto in [Proto::H1, Proto::H2, Proto::H1, Proto::H2] {
        let (stop, served) = (stop.clone(), served.clone());
        load.push(tokio::spawn(async move {
            let mut client = Client::connect(proto, listen).await;
            let mut failures = Vec::new();
            // Bounded: at most 100k requests or until told to stop.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = request(
                    proto,
                    "GET",
                    "reload.test",
                    "/",
                    Empty::<bytes::Bytes>::new(),
                );
                match client.send(req).await {
                    Ok(res) if res.status() == 200 => {
                        // Read the body: an HTTP/1.1 connection is reusable
                        // only once its response was read to the end.
                        common::body::text(res.into_body()).await;
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(res) => failures.push(format!("{proto:?}: status {}", res.status())),
                    Err(e) => {
                        failures.push(format!("{proto:?}: {e:?}"));
                        client = Client::connect(proto, listen).await;
                    }
                }
            }
            failures
        }));
    }

    for i in 0..50u64 {
        let (text, expected): (String, HashSet<&str>) = match i % 3 {
            0 => (b_cluster("least_requests"), ["b"].into()),
            1 => (cluster("p2c", &[(&a, 1), (&c, 1)]), ["a", "c"].into()),
            _ => (cluster("round_robin", &[(&c, 1)]), ["c"].into()),
        };
        reload(&gw, admin, &config(admin, &[(listen, "h1")], &text), i + 2).await;
        for _ in 0..4 {
            let (status, body) = get(Proto::H1, listen, "reload.test", "/").await;
            assert_eq!(status, 200);
            assert!(
                expected.contains(body.as_str()),
                "reload {i}: {body} served, expected {expected:?}"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for task in load {
        failures.extend(task.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "failed requests during reloads: {failures:?}"
    );
    assert!(
        served.load(Ordering::Relaxed) > 200,
        "load was too light to prove anything"
    );
    let metrics = admin_text(admin, "/metrics").await;
    assert!(
        metrics.contains("expressgateway_config_reloads_total{result=\"applied\"} 50"),
        "{metrics}"
    );
    assert!(
        metrics.contains("expressgateway_config_generation 51"),
        "{metrics}"
    );
}

#[tokio::test]
async fn invalid_reload_changes_nothing() {
    let a = named(Proto::H1, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let good = config(
        admin,
        &[(listen, "h1")],
        &cluster("round_robin", &[(&a, 1)]),
    );
    let gw = Gateway::start(&good, &[listen]);
    let bad = good.replace("policy = \"round_robin\"", "policy = \"fastest\"")
        + "\n[[listeners]]\naddress = \"nope\"\n";
    let status = reload(&gw, admin, &bad, 1).await;
    assert_eq!(status["config"]["last_reload"]["result"], "rejected");
    assert_eq!(status["config"]["generation"], 1);
    assert_eq!(get(Proto::H1, listen, "x", "/").await, (200, "a".into()));
    let metrics = admin_text(admin, "/metrics").await;
    assert!(
        metrics.contains("expressgateway_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
    assert!(gw.log().contains("reload rejected"), "{}", gw.log());
}

#[tokio::test]
async fn listeners_are_added_and_drained_live() {
    let slow = gated_under(Proto::H1, "slow", "/held");
    let (first, second, admin) = (free_addr(), free_addr(), free_addr());
    let svc = cluster("round_robin", &[(&slow.backend, 1)]);
    let gw = Gateway::start(&config(admin, &[(first, "h1")], &svc), &[first]);
    reload(
        &gw,
        admin,
        &config(admin, &[(first, "h1"), (second, "h1")], &svc),
        2,
    )
    .await;
    assert_eq!(get(Proto::H1, second, "x", "/").await, (200, "slow".into()));

    // A request in flight on the first listener finishes after it is removed.
    let pending = tokio::spawn(get(Proto::H1, first, "x", "/held"));
    slow.arrived(1).await;
    reload(&gw, admin, &config(admin, &[(second, "h1")], &svc), 3).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(first).await.is_ok() {
        assert!(Instant::now() < deadline, "removed listener still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!pending.is_finished(), "the held request ended early");
    slow.open();
    assert_eq!(pending.await.unwrap(), (200, "slow".into()));
    assert_eq!(get(Proto::H1, second, "x", "/").await, (200, "slow".into()));
}

#[tokio::test]
async fn backend_state_and_weights_carry_over() {
    let a = named(Proto::H1, "a");
    let b = named(Proto::H1, "b");
    let dead = free_addr();
    let (listen, admin) = (free_addr(), free_addr());
    let with_check = |weights: (u32, u32)| {
        format!(
            "[[clusters]]\nname = \"svc\"\npolicy = \"weighted_round_robin\"\n\
             health_check = {{ kind = \"tcp\", interval_ms = 100, timeout_ms = 100, healthy_threshold = 1, unhealthy_threshold = 1 }}\n\
             [[clusters.backends]]\naddress = \"{}\"\nweight = {}\n\
             [[clusters.backends]]\naddress = \"{}\"\nweight = {}\n\
             [[clusters.backends]]\naddress = \"{dead}\"\n",
            a.addr, weights.0, b.addr, weights.1
        )
    };
    let gw = Gateway::start(
        &config(admin, &[(listen, "h1")], &with_check((1, 1))),
        &[listen],
    );
    // The dead backend is found out by the active check.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = admin_json(admin, "/api/v1/status").await;
        if status["clusters"][0]["backends"][2]["state"] == "unhealthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead backend never marked: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        assert_eq!(get(Proto::H1, listen, "x", "/").await.0, 200);
    }
    // Weights change; the dead backend stays known-bad from the first
    // request on (no fresh "healthy" start), and counters continue.
    let status = reload(
        &gw,
        admin,
        &config(admin, &[(listen, "h1")], &with_check((1, 3))),
        2,
    )
    .await;
    assert_eq!(
        status["clusters"][0]["backends"][2]["state"], "unhealthy",
        "{status}"
    );
    let requests_before: u64 = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, _)| {
            status["clusters"][0]["backends"][i]["requests_total"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(requests_before, 4, "{status}");
    let mut got = Vec::new();
    for _ in 0..8 {
        let (code, body) = get(Proto::H1, listen, "x", "/").await;
        assert_eq!(code, 200);
        got.push(body);
    }
    assert_eq!(got.iter().filter(|b| *b == "a").count(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|b| *b == "b").count(), 6, "{got:?}");
}

#[tokio::test]
async fn protocol_change_needs_a_restart_and_is_not_applied() {
    let a = named(Proto::H1, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let svc = cluster("round_robin", &[(&a, 1)]);
    let gw = Gateway::start(&config(admin, &[(listen, "h1")], &svc), &[listen]);
    let changed = config(admin, &[(listen, "h1")], &svc).replace("protocol = \"h1\"", "protocol = \"tcp\"")
        .replace("[[listeners.routes]]\ncluster = \"svc\"", "cluster = \"raw\"")
        + "[[clusters]]\nname = \"raw\"\n[[clusters.backends]]\naddress = \"127.0.0.1:9\"\nprotocol = \"tcp\"\n";
    let status = reload(&gw, admin, &changed, 2).await;
    let detail = status["config"]["last_reload"]["detail"].to_string();
    assert!(detail.contains("needs a restart"), "{detail}");
    assert_eq!(get(Proto::H1, listen, "x", "/").await, (200, "a".into()));
}

#[tokio::test]
async fn certificate_path_change_is_served_after_reload() {
    use common::tls::{client_config, tls_connect, Pki};
    let pki = Pki::new("hup");
    let first = pki.server("first", &["a.test"]);
    let second = pki.server("second", &["a.test"]);
    let a = named(Proto::H1, "a");
    let (listen, admin) = (free_addr(), free_addr());
    let text = |cert: &common::tls::Issued| {
        format!(
            "[observability]\nmetrics_bind = \"{admin}\"\n[[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1s\"\n\
             backends = [{{ address = \"{}\" }}]\n[listeners.tls]\ncert_path = {:?}\nkey_path = {:?}\n",
            a.addr, cert.cert_path, cert.key_path
        )
    };
    let gw = Gateway::start(&text(&first), &[listen]);
    let served = || async {
        tls_connect(listen, "a.test", client_config(&pki, &[b"http/1.1"], None))
            .await
            .1
    };
    assert_eq!(served().await, first.der);
    reload(&gw, admin, &text(&second), 2).await;
    assert_eq!(served().await, second.der);
    // SIGUSR1 afterwards re-reads the new paths (the listener's TLS state
    // and the reloaded state are one).
    let third = pki.server("second", &["a.test"]);
    gw.signal("USR1");
    common::tls::wait_for_log(&gw, "certificates reloaded", 1);
    assert_eq!(served().await, third.der);
}
