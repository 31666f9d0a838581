//! Retry policies through the real binary: retries on a status, on a reset
//! and on a per-try timeout go to another backend; a route's policy
//! overrides its cluster's; non-idempotent requests are not replayed; and
//! the retry budget stops a retry storm against a failing cluster.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::backend::Proto;
use common::client::Client;
use common::scrape::{scrape, value};
use common::traffic::{backends_toml, config, gateway, get, get_n, named, tally};
use common::{free_addr, Gateway};
use tokio::io::AsyncReadExt;

/// A backend that reads a request and closes the connection unanswered.
async fn resetting() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_503_is_retried_on_the_other_backend_but_a_post_is_not() {
    let failing = named("failing", Duration::ZERO);
    failing.status.store(503, Ordering::SeqCst);
    let ok = named("ok", Duration::ZERO);
    let listen = free_addr();
    let _gw = gateway(
        listen,
        &format!(
            "retries = {{ attempts = 2, on = [\"503\"] }}\n{}",
            backends_toml(&[failing.addr(), ok.addr()], &[1, 1])
        ),
    );
    let answers = get_n(listen, 20, 1).await;
    assert!(answers.iter().all(|a| a.status == 200 && a.body == "ok"));
    // Never the same backend twice in a row: one failing try at most.
    assert!(failing.served() <= 20, "{}", failing.served());
    let mut client = Client::connect(Proto::H1, listen).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let req = http::Request::post("/")
            .header("host", "app.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = client.send(req).await.unwrap();
        statuses.push(res.status().as_u16());
        let _ = common::body::text(res.into_body()).await;
    }
    assert!(
        statuses.contains(&503),
        "POST is not replayed: {statuses:?}"
    );
}

#[tokio::test]
async fn resets_and_per_try_timeouts_are_retried_only_when_asked() {
    let reset = resetting().await;
    let slow = named("slow", Duration::from_secs(2));
    let ok = named("ok", Duration::ZERO);
    // Default policy: a reset after sending is not retried.
    let plain = free_addr();
    let _a = gateway(plain, &backends_toml(&[reset, ok.addr()], &[1, 1]));
    let statuses: Vec<u16> = get_n(plain, 4, 1).await.iter().map(|a| a.status).collect();
    assert!(statuses.contains(&502), "{statuses:?}");

    let retrying = free_addr();
    let _b = gateway(
        retrying,
        &format!(
            "retries = {{ attempts = 2, on = [\"reset\", \"timeout\"], per_try_timeout_ms = 300 }}\n{}",
            backends_toml(&[reset, slow.addr(), ok.addr()], &[1, 1, 1])
        ),
    );
    let answers = get_n(retrying, 12, 1).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    // Round robin from reset, slow, ok: each failed try moves to the next.
    assert!(answers.iter().all(|a| a.body == "ok"), "{statuses:?}");
}

#[tokio::test]
async fn a_route_policy_overrides_the_cluster_policy() {
    let failing = named("failing", Duration::ZERO);
    failing.status.store(503, Ordering::SeqCst);
    let ok = named("ok", Duration::ZERO);
    let listen = free_addr();
    let config = format!(
        "[[clusters]]\nname = \"svc\"\nretries = {{ on = [\"503\"] }}\n{}\n\
         [[listeners]]\naddress = \"{listen}\"\nprotocol = \"h1\"\n\
         [[listeners.routes]]\npath_prefix = \"/strict/\"\ncluster = \"svc\"\nretries = {{ attempts = 0 }}\n\
         [[listeners.routes]]\ncluster = \"svc\"\n",
        backends_toml(&[failing.addr(), ok.addr()], &[1, 1])
    );
    let _gw = Gateway::start(&config, &[listen]);
    let lenient = get_n(listen, 10, 1).await;
    assert!(lenient.iter().all(|a| a.status == 200));
    let requests = (0..10).map(|_| get("/strict/x", &[])).collect();
    let strict = common::traffic::send_all(listen, requests, 1).await;
    assert_eq!(tally(&strict, &["failing", "ok"]), vec![5, 5]);
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm() {
    let n = 300;
    let mut hits = Vec::new();
    for budget in [20, 100] {
        let a = named("a", Duration::ZERO);
        let b = named("b", Duration::ZERO);
        for x in [&a, &b] {
            x.status.store(503, Ordering::SeqCst);
        }
        let (listen, admin) = (free_addr(), free_addr());
        let cluster = format!(
            "retries = {{ attempts = 3, on = [\"503\"], budget_percent = {budget} }}\n{}",
            backends_toml(&[a.addr(), b.addr()], &[1, 1])
        );
        let toml = format!(
            "[observability]\nmetrics_bind = \"{admin}\"\n{}",
            config(listen, &cluster)
        );
        let _gw = Gateway::start(&toml, &[listen]);
        let answers = get_n(listen, n, 1).await;
        assert!(answers.iter().all(|x| x.status == 503));
        let total = a.served() + b.served();
        let metrics = scrape(admin).await;
        let svc = [("cluster", "svc")];
        let retries = value(&metrics, "expressgateway_upstream_retries_total", &svc).unwrap();
        let exhausted = value(
            &metrics,
            "expressgateway_upstream_retry_budget_exhausted_total",
            &svc,
        )
        .unwrap_or(0.0);
        println!(
            "budget {budget}%: {n} requests, each allowed 3 retries, reached the backends \
             {total} times; {retries} retries, {exhausted} refused by the budget"
        );
        // Every try reached a backend: the first ones and the retries.
        assert_eq!(total as f64, n as f64 + retries, "{metrics}");
        // A request stops retrying when its 3 retries are spent or the
        // budget refuses one (counted once): the requests the budget
        // stopped had 0 to 2 retries, the others 3.
        let n = n as f64;
        assert!(exhausted >= n - retries / 3.0, "{exhausted} {retries}");
        assert!(exhausted <= 3.0 * n - retries, "{exhausted} {retries}");
        if budget == 20 {
            assert!(exhausted > 0.0, "the budget never refused a retry");
        }
        hits.push(total);
    }
    // 20% of the requests plus the reserve of 10 retries a second over the
    // 10 s window; without a budget it would be 4 × 300.
    assert!(hits[0] <= n + n * 20 / 100 + 100, "{hits:?}");
    assert!(hits[0] > n, "some retries happen: {hits:?}");
    assert!(hits[1] > hits[0], "{hits:?}");
    assert!(hits[1] < 4 * n, "{hits:?}");
}
