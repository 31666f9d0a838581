//! Balancing on tcp listeners: `least_connections` spreads long-lived
//! flows evenly and fills the backend that has fewest; `maglev` by
//! `source_ip` keeps each client address on one backend, the same in two
//! gateway processes; `max_connections` refuses flows beyond the cap.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{free_addr, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A tcp backend that greets each connection with its name and echoes.
struct Greeter {
    addr: SocketAddr,
}

async fn greeter(name: &'static str) -> Greeter {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(format!("{name}\n").as_bytes()).await;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Greeter { addr }
}

fn config(listen: SocketAddr, cluster: &str, backends: &[&Greeter]) -> String {
    let mut text = format!("[[clusters]]\nname = \"tcp\"\n{cluster}\n");
    for b in backends {
        text.push_str(&format!(
            "[[clusters.backends]]\naddress = \"{}\"\nprotocol = \"tcp\"\n",
            b.addr
        ));
    }
    text.push_str(&format!(
        "[[listeners]]\naddress = \"{listen}\"\nprotocol = \"tcp\"\ncluster = \"tcp\"\n"
    ));
    text
}

/// Connect from `source` (any port) and read the backend's greeting;
/// `None` when the gateway closes the connection instead.
async fn open_from(listen: SocketAddr, source: IpAddr) -> (TcpStream, Option<String>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut stream = socket.connect(listen).await.unwrap();
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut byte).await {
                Ok(1) if byte[0] != b'\n' => greeting.push(byte[0]),
                Ok(1) => return true,
                _ => return false,
            }
        }
    })
    .await
    .expect("no greeting and no close");
    let name = read.then(|| String::from_utf8(greeting).unwrap());
    (stream, name)
}

async fn open(listen: SocketAddr) -> (TcpStream, Option<String>) {
    open_from(listen, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
}

#[tokio::test]
async fn least_connections_balances_long_lived_flows() {
    let (a, b) = (greeter("a").await, greeter("b").await);
    let (listen, admin) = (free_addr(), free_addr());
    let toml = format!(
        "[observability]\nmetrics_bind = \"{admin}\"\n{}",
        config(listen, "policy = \"least_connections\"", &[&a, &b])
    );
    let _gw = Gateway::start(&toml, &[listen]);
    let mut flows = Vec::new();
    for _ in 0..6 {
        flows.push(open(listen).await);
    }
    let on = |name: &str, flows: &[(TcpStream, Option<String>)]| {
        flows
            .iter()
            .filter(|f| f.1.as_deref() == Some(name))
            .count()
    };
    assert_eq!((on("a", &flows), on("b", &flows)), (3, 3));
    // Close the flows on a; new ones all go to a until it catches up.
    flows.retain(|f| f.1.as_deref() != Some("a"));
    // The gateway's own count of a's flows, which the policy reads.
    let a_addr = a.addr.to_string();
    let a_flows = [("cluster", "tcp"), ("backend", a_addr.as_str())];
    common::scrape::wait_value(admin, "expressgateway_backend_in_flight", &a_flows, 0.0).await;
    let mut fresh = Vec::new();
    for _ in 0..3 {
        fresh.push(open(listen).await);
    }
    assert_eq!(
        on("a", &fresh),
        3,
        "new flows go to the least connected backend"
    );
    println!("least_connections: 6 flows split 3/3; after a's closed, 3 new flows all went to a");
}

#[tokio::test]
async fn maglev_by_source_ip_keeps_each_client_on_one_backend_in_every_gateway() {
    let (a, b, c) = (greeter("a").await, greeter("b").await, greeter("c").await);
    let cluster = "policy = \"maglev\"\nhash_key = \"source_ip\"";
    let (one, two) = (free_addr(), free_addr());
    let _gw1 = Gateway::start(&config(one, cluster, &[&a, &b, &c]), &[one]);
    let _gw2 = Gateway::start(&config(two, cluster, &[&a, &b, &c]), &[two]);
    let mut seen = Vec::new();
    for host in 2..22u8 {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, host));
        let mut names = Vec::new();
        for listen in [one, one, one, two, two] {
            names.push(open_from(listen, source).await.1.unwrap());
        }
        assert!(names.iter().all(|n| *n == names[0]), "{source}: {names:?}");
        seen.push(names[0].clone());
    }
    let mut distinct = seen.clone();
    distinct.sort();
    distinct.dedup();
    println!("maglev by source ip: 20 client addresses → {seen:?}");
    assert!(distinct.len() >= 2, "{seen:?}");
}

#[tokio::test]
async fn flows_beyond_max_connections_are_refused() {
    let a = greeter("a").await;
    let listen = free_addr();
    let _gw = Gateway::start(
        &config(listen, "circuit_breaker = { max_connections = 1 }", &[&a]),
        &[listen],
    );
    let first = open_when_free(listen).await;
    assert_eq!(first.1.as_deref(), Some("a"));
    let second = open(listen).await;
    assert_eq!(second.1, None, "closed without reaching a backend");
    drop(first);
    open_when_free(listen).await;
}

/// A flow through `listen`, retried (for up to 5 s) while the gateway
/// closes connections for lack of a free slot.
async fn open_when_free(listen: SocketAddr) -> (TcpStream, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let flow = open(listen).await;
        if flow.1.is_some() {
            return flow;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
