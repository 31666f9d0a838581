//! Draining stops the accept loop; flows already running finish normally
//! and are tracked until they do, or are closed when the drain aborts.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::support::{echo_backend, roundtrip, start_proxy, within};

#[tokio::test]
async fn drain_stops_accepting_but_running_flows_finish() {
    within(10, async {
        let backend = echo_backend().await;
        let proxy = start_proxy("", &[backend]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut client, b"before").await;
        assert_eq!(proxy.drain.active(), 1);

        proxy.drain.start();
        proxy.task.await.unwrap();
        assert!(TcpStream::connect(proxy.addr).await.is_err());

        roundtrip(&mut client, b"during drain").await;
        assert_eq!(proxy.drain.active(), 1);
        drop(client);
        assert_eq!(proxy.drain.wait_idle(Duration::from_secs(5)).await, 0);
    })
    .await;
}

#[tokio::test]
async fn abort_closes_the_flows_still_running() {
    use tokio::io::AsyncReadExt;
    within(10, async {
        let backend = echo_backend().await;
        let proxy = start_proxy("", &[backend]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut client, b"before").await;
        proxy.drain.start();
        assert_eq!(proxy.drain.wait_idle(Duration::from_millis(50)).await, 1);

        proxy.drain.abort();
        assert_eq!(proxy.drain.wait_idle(Duration::from_secs(5)).await, 0);
        let mut buf = [0u8; 16];
        assert!(matches!(client.read(&mut buf).await, Ok(0) | Err(_)));
    })
    .await;
}
