//! Flows where nothing moves for the listener's idle timeout are closed;
//! flows with steady traffic are not.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{closed_by_proxy, echo_backend, eventually, roundtrip, start_proxy, within};

const IDLE: &str = "[listeners.timeouts]\nidle_ms = 300";

#[tokio::test]
async fn idle_flow_is_closed_on_both_sides() {
    within(10, async {
        let backend = echo_backend().await;
        let proxy = start_proxy(IDLE, &[backend]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut client, b"ping").await;
        let quiet_since = Instant::now();
        assert!(closed_by_proxy(&mut client).await);
        let waited = quiet_since.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "closed after {waited:?}"
        );
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
        let backend = proxy.backend(0);
        eventually(|| {
            backend
                .state
                .open_connections
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn steady_traffic_outlives_the_idle_timeout() {
    within(10, async {
        let backend = echo_backend().await;
        let proxy = start_proxy(IDLE, &[backend]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1200) {
            roundtrip(&mut client, b"tick").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
