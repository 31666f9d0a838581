//! The listener's metrics and one access log line per flow, read back the
//! way an operator sees them.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use lb_observability::{sample, Metrics};
use tokio::net::TcpStream;

use crate::support::{
    closed_by_proxy, echo_backend, eventually, refusing_address, roundtrip, start_proxy, within,
};

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics::default();
    lb_l4::register_metrics(&metrics);
    metrics
});

fn value(name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&METRICS.encode(false), name, labels).unwrap_or(-1.0)
}

fn cluster_of(proxy: SocketAddr) -> String {
    format!("listener:{proxy}")
}

#[tokio::test]
async fn flows_bytes_and_failed_attempts_are_counted() {
    within(10, async {
        let dead = refusing_address().await;
        let live = echo_backend().await;
        let proxy = start_proxy("access_log = { enabled = false }", &[dead, live]).await;
        let l = proxy.addr.to_string();
        let conn = [("listener", l.as_str()), ("protocol", "tcp")];
        for _ in 0..4 {
            let mut client = TcpStream::connect(proxy.addr).await.unwrap();
            roundtrip(&mut client, b"ping").await;
            assert_eq!(value("expressgateway_tcp_connections_open", &conn), 1.0);
        }
        eventually(|| value("expressgateway_tcp_connections_open", &conn) == 0.0).await;
        assert_eq!(
            value("expressgateway_tcp_connections_accepted_total", &conn),
            4.0
        );
        let by_listener = [("listener", l.as_str())];
        assert_eq!(
            value("expressgateway_tcp_received_bytes_total", &by_listener),
            16.0
        );
        assert_eq!(
            value("expressgateway_tcp_sent_bytes_total", &by_listener),
            16.0
        );
        // Every attempt on the refusing backend failed and was retried on
        // the live one.
        let cluster = cluster_of(proxy.addr);
        let refused = value(
            "expressgateway_tcp_upstream_errors_total",
            &[("cluster", &cluster), ("kind", "connect")],
        );
        let retries = value(
            "expressgateway_tcp_upstream_retries_total",
            &[("cluster", &cluster)],
        );
        assert!(refused >= 1.0, "{}", METRICS.encode(false));
        assert_eq!(refused, retries);
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_counted_as_rejected() {
    within(10, async {
        let proxy = start_proxy(
            "max_connections = 1\naccess_log = { enabled = false }",
            &[echo_backend().await],
        )
        .await;
        let l = proxy.addr.to_string();
        let mut first = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut first, b"held").await;
        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(closed_by_proxy(&mut second).await);
        let labels = [
            ("listener", l.as_str()),
            ("protocol", "tcp"),
            ("reason", "limit"),
        ];
        assert_eq!(
            value("expressgateway_tcp_connections_rejected_total", &labels),
            1.0
        );
        assert_eq!(
            value(
                "expressgateway_tcp_connections_accepted_total",
                &labels[..2]
            ),
            1.0
        );
    })
    .await;
}

#[tokio::test]
async fn each_flow_gets_one_json_access_line() {
    within(10, async {
        let dir = std::env::temp_dir().join(format!("lb-l4-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.log");
        let live = echo_backend().await;
        let settings = format!("access_log = {{ path = \"{}\" }}", path.display());
        let proxy = start_proxy(&settings, &[live]).await;
        let dead = start_proxy(&settings, &[refusing_address().await]).await;

        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut client, b"hello").await;
        drop(client);
        let mut refused = TcpStream::connect(dead.addr).await.unwrap();
        assert!(closed_by_proxy(&mut refused).await);

        let lines = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() == 2 {
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ok = lines
            .iter()
            .find(|l| l["listener"] == proxy.addr.to_string())
            .unwrap();
        assert_eq!(ok["log"], "access");
        assert_eq!(ok["protocol"], "tcp");
        assert_eq!(ok["bytes_in"], 5);
        assert_eq!(ok["bytes_out"], 5);
        assert_eq!(ok["backend"], live.to_string());
        assert_eq!(ok["cluster"], cluster_of(proxy.addr));
        assert_eq!(ok["retries"], 0);
        assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
        assert!(ok.get("status").is_none() && ok.get("method").is_none());
        assert!(ok.get("error").is_none());

        let failed = lines
            .iter()
            .find(|l| l["listener"] == dead.addr.to_string())
            .unwrap();
        assert_eq!(failed["bytes_in"], 0);
        let error = failed["error"].as_str().unwrap();
        assert!(error.starts_with("no backend reachable"), "{error}");
        assert!(failed.get("backend").is_none());
    })
    .await;
}
