//! A backend that dies costs clients nothing with default settings: the
//! first refused connect takes it out of balancing at once, and requests
//! that never reached it go to the other backend outside the retry budget.
//! Killed under steady load and killed while the gateway was idle, each at
//! a paced load above 1,000 requests per second.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::Proto;
use common::client::Client;
use common::traffic::{exchange, get, named, Named};
use common::{free_addr, scrape, Gateway};

/// Paced clients: `CLIENTS` keep-alive connections, each sending one GET
/// every `PERIOD`, so the offered load is `CLIENTS / PERIOD`.
const CLIENTS: usize = 8;
const PERIOD: Duration = Duration::from_millis(6);

fn start(a: &Named, b: &Named) -> (Gateway, SocketAddr, SocketAddr) {
    let listen = free_addr();
    let admin = free_addr();
    let toml = format!(
        r#"
[observability]
metrics_bind = "{admin}"
[[listeners]]
address = "{listen}"
protocol = "h1"
access_log = {{ enabled = false }}
[[listeners.routes]]
cluster = "web"
[[clusters]]
name = "web"
[[clusters.backends]]
address = "{}"
[[clusters.backends]]
address = "{}"
"#,
        a.addr(),
        b.addr()
    );
    let gw = Gateway::start(&toml, &[listen]);
    (gw, listen, admin)
}

/// Offered load for `duration`; returns (answered, failed, requests/s).
async fn paced_load(listen: SocketAddr, duration: Duration) -> (usize, usize, f64) {
    let answered = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (answered, failed) = (answered.clone(), failed.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(Proto::H1, listen).await;
                let mut tick = tokio::time::interval(PERIOD);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    tick.tick().await;
                    let answer = exchange(&mut client, get("/", &[])).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    if answer.status != 200 {
                        eprintln!("client saw {}: {}", answer.status, answer.body);
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(duration + Duration::from_secs(20), t)
            .await
            .expect("load client stuck")
            .unwrap();
    }
    let answered = answered.load(Ordering::SeqCst);
    let rate = answered as f64 / started.elapsed().as_secs_f64();
    (answered, failed.load(Ordering::SeqCst), rate)
}

async fn unreachable_marks(admin: SocketAddr) -> f64 {
    let text = scrape::scrape(admin).await;
    scrape::value(
        &text,
        "expressgateway_backend_unreachable_marks_total",
        &[("cluster", "web")],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_under_load_costs_no_request() {
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    let (gw, listen, admin) = start(&a, &b);
    scrape::wait_admin(admin).await;
    let load = tokio::spawn(paced_load(listen, Duration::from_secs(4)));
    // Kill `a` once it has served part of the load.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.served() < 500 {
        assert!(Instant::now() < deadline, "backend a got no traffic");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(a);
    let (answered, failed, rate) = load.await.unwrap();
    println!("{answered} requests at {rate:.0}/s while a backend died, {failed} failed");
    assert_eq!(failed, 0, "{}", gw.log());
    assert!(b.served() > 0);
    assert_eq!(unreachable_marks(admin).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_while_idle_costs_no_request_when_load_resumes() {
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    let (gw, listen, admin) = start(&a, &b);
    scrape::wait_admin(admin).await;
    // Warm the pools of both backends, then go quiet.
    let (_, failed, _) = paced_load(listen, Duration::from_millis(500)).await;
    assert_eq!(failed, 0);
    assert!(a.served() > 0 && b.served() > 0);
    let a_addr = a.addr();
    drop(a);
    common::traffic::wait_closed(a_addr).await;
    let (answered, failed, rate) = paced_load(listen, Duration::from_secs(3)).await;
    println!("{answered} requests at {rate:.0}/s after a backend died while idle, {failed} failed");
    assert_eq!(failed, 0, "{}", gw.log());
    assert_eq!(unreachable_marks(admin).await, 1.0);
    let status = scrape::scrape(admin).await;
    assert_eq!(
        scrape::value(
            &status,
            "expressgateway_backend_unreachable",
            &[("cluster", "web"), ("backend", &a_addr.to_string())]
        ),
        Some(1.0),
        "{status}"
    );
}
