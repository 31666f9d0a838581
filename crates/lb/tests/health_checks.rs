//! Active health checks through the real binary: a killed backend is
//! taken out after `unhealthy_threshold × interval` while idempotent
//! requests see no error (retries), and comes back after
//! `healthy_threshold × interval` once restarted; a live backend failing
//! its check gets no traffic; panic mode routes to every backend when too
//! few are healthy, and with `panic_threshold_percent = 0` the gateway
//! answers 503 instead.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::backend::Proto;
use common::client::Client;
use common::traffic::{
    backends_toml, config, exchange, get, get_n, named, named_on, tally, wait_log, Named,
};
use common::{free_addr, Gateway};

const INTERVAL_MS: u64 = 200;
const CHECK: &str = "health_check = { path = \"/healthz\", interval_ms = 200, timeout_ms = 150, healthy_threshold = 2, unhealthy_threshold = 2 }";
/// Threshold × interval, plus jitter, a probe timeout and scheduling.
const TRANSITION_LIMIT: Duration = Duration::from_secs(5);

fn start(backends: &[&Named], extra: &str) -> (Gateway, SocketAddr) {
    let addrs: Vec<SocketAddr> = backends.iter().map(|n| n.addr()).collect();
    let weights = vec![1; addrs.len()];
    let cluster = format!("{CHECK}\n{extra}\n{}", backends_toml(&addrs, &weights));
    let listen = free_addr();
    let gw = Gateway::start(&config(listen, &cluster), &[listen]);
    (gw, listen)
}

/// Sequential GETs on two connections until stopped; counts answers and
/// failures (anything but 200).
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..2)
            .map(|_| {
                let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut client = Client::connect(Proto::H1, addr).await;
                    while !stop.load(Ordering::SeqCst) {
                        let answer = exchange(&mut client, get("/", &[])).await;
                        answered.fetch_add(1, Ordering::SeqCst);
                        if answer.status != 200 {
                            eprintln!("client saw {}: {}", answer.status, answer.body);
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            answered,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
        (
            self.answered.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Poll `done` (every 10 ms, up to [`TRANSITION_LIMIT`]).
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + TRANSITION_LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn killed_backend_leaves_and_returns_while_clients_see_no_error() {
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    let c = named("c", Duration::ZERO);
    let b_addr = b.addr();
    let (gw, listen) = start(&[&a, &b, &c], "");
    let load = Load::start(listen);
    wait_until("b serves", || b.served() > 0).await;

    drop(b);
    let killed = Instant::now();
    let b_name = b_addr.to_string();
    let out = wait_log(&gw, &["backend unhealthy", &b_name], 1, TRANSITION_LIMIT).await;
    println!(
        "killed backend marked unhealthy after {} ms (threshold 2 × {INTERVAL_MS} ms)",
        out.as_millis()
    );
    assert!(killed.elapsed() >= Duration::from_millis(INTERVAL_MS));

    // Traffic goes on without b for a while, every request answered.
    let answered = load.answered.load(Ordering::SeqCst);
    wait_until("traffic without b", || {
        load.answered.load(Ordering::SeqCst) >= answered + 100
    })
    .await;
    let b = named_on("b", Duration::ZERO, b_addr);
    let restarted = Instant::now();
    let back = wait_log(&gw, &["backend healthy", &b_name], 1, TRANSITION_LIMIT).await;
    wait_until("restarted backend gets traffic", || b.served() > 0).await;
    println!(
        "restarted backend healthy after {} ms, serving after {} ms",
        back.as_millis(),
        restarted.elapsed().as_millis()
    );
    let (answered, failed) = load.finish().await;
    println!("{answered} requests during kill and restart, {failed} failed");
    assert_eq!(
        failed, 0,
        "idempotent requests must be retried around the dead backend"
    );
    assert!(answered > 100);
}

#[tokio::test]
async fn a_backend_failing_its_check_gets_nothing_until_it_passes_again() {
    let a = named("a", Duration::ZERO);
    let b = named("b", Duration::ZERO);
    let c = named("c", Duration::ZERO);
    let (gw, listen) = start(&[&a, &b, &c], "policy = \"round_robin\"");
    let b_name = b.addr().to_string();
    assert!(tally(&get_n(listen, 30, 1).await, &["b"])[0] == 10);

    b.set_health(503);
    wait_log(&gw, &["backend unhealthy", &b_name], 1, TRANSITION_LIMIT).await;
    let before = b.served();
    let answers = get_n(listen, 200, 2).await;
    assert!(answers.iter().all(|x| x.status == 200));
    assert_eq!(b.served(), before, "an unhealthy backend got traffic");
    assert_eq!(tally(&answers, &["a", "c"]), vec![100, 100]);

    b.set_health(200);
    wait_log(&gw, &["backend healthy", &b_name], 1, TRANSITION_LIMIT).await;
    let answers = get_n(listen, 30, 1).await;
    assert_eq!(tally(&answers, &["a", "b", "c"]), vec![10, 10, 10]);
}

#[tokio::test]
async fn panic_mode_routes_to_all_below_the_threshold_and_zero_turns_it_off() {
    for threshold in [50, 0] {
        let a = named("a", Duration::ZERO);
        let b = named("b", Duration::ZERO);
        let c = named("c", Duration::ZERO);
        b.set_health(500);
        c.set_health(500);
        let (gw, listen) = start(
            &[&a, &b, &c],
            &format!("panic_threshold_percent = {threshold}"),
        );
        wait_log(&gw, &["backend unhealthy"], 2, TRANSITION_LIMIT).await;
        let answers = get_n(listen, 60, 1).await;
        let counts = tally(&answers, &["a", "b", "c"]);
        println!("1 of 3 healthy, panic_threshold_percent = {threshold}: {counts:?}");
        if threshold == 50 {
            // 33% healthy < 50%: every backend is used.
            assert_eq!(counts, vec![20, 20, 20]);
        } else {
            assert_eq!(counts, vec![60, 0, 0]);
            a.set_health(500);
            wait_log(&gw, &["backend unhealthy"], 3, TRANSITION_LIMIT).await;
            let answer = get_n(listen, 1, 1).await.remove(0);
            assert_eq!(answer.status, 503);
            assert_eq!(
                answer.body,
                "503 Service Unavailable: no healthy upstream\n"
            );
        }
    }
}
