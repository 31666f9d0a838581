//! The listener's `max_connections` closes connections beyond the cap, frees
//! a place when a flow ends, and follows reloads.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{closed_by_proxy, echo_backend, roundtrip, start_proxy, within};

const CAP_TWO: &str = "max_connections = 2";

/// Connect until the proxy admits a connection (a finished flow frees its
/// place a moment after the client closes).
async fn connect_admitted(addr: std::net::SocketAddr) -> TcpStream {
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if stream.write_all(b"?").await.is_ok() {
            let mut byte = [0u8; 1];
            if let Ok(1) = tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await {
                return stream;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn connection_beyond_the_cap_is_closed() {
    within(10, async {
        let backend = echo_backend().await;
        let proxy = start_proxy(CAP_TWO, &[backend]).await;
        let mut first = TcpStream::connect(proxy.addr).await.unwrap();
        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut first, b"one").await;
        roundtrip(&mut second, b"two").await;

        let mut third = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(closed_by_proxy(&mut third).await);
        roundtrip(&mut first, b"still one").await;

        drop(first);
        let mut again = connect_admitted(proxy.addr).await;
        roundtrip(&mut again, b"again").await;
        roundtrip(&mut second, b"still two").await;
    })
    .await;
}

#[tokio::test]
async fn reload_raises_the_cap_for_new_connections() {
    within(10, async {
        let backend = echo_backend().await;
        let proxy = start_proxy("max_connections = 1", &[backend]).await;
        let mut first = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut first, b"one").await;
        let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(closed_by_proxy(&mut refused).await);

        proxy.reload(CAP_TWO, &[backend]);
        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        roundtrip(&mut second, b"two").await;
        roundtrip(&mut first, b"still one").await;
    })
    .await;
}
