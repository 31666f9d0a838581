//! End of stream on one side reaches the other as a write shutdown, and
//! the opposite direction keeps flowing.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::support::{reply_after_eof_backend, start_proxy, within};

#[tokio::test]
async fn client_half_close_reaches_backend_and_reply_flows_back() {
    within(10, async {
        let backend = reply_after_eof_backend().await;
        let proxy = start_proxy("", &[backend]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(b"hello, ").await.unwrap();
        client.write_all(b"backend").await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"received 14 bytes: hello, backend");
    })
    .await;
}

#[tokio::test]
async fn backend_half_close_leaves_client_direction_open() {
    within(10, async {
        let (seen_tx, seen_rx) = oneshot::channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"banner").await.unwrap();
            stream.shutdown().await.unwrap();
            let mut data = Vec::new();
            stream.read_to_end(&mut data).await.unwrap();
            seen_tx.send(data).unwrap();
        });
        let proxy = start_proxy("", &[backend]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        let mut banner = Vec::new();
        client.read_to_end(&mut banner).await.unwrap();
        assert_eq!(banner, b"banner");
        client.write_all(b"still sending").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(seen_rx.await.unwrap(), b"still sending");
    })
    .await;
}
