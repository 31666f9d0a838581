//! A large transfer both ways through the proxy arrives intact.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::support::{echo_backend, start_proxy, within};

const TOTAL: usize = 256 * 1024 * 1024;
/// Pseudo-random block repeated to form the stream. Its odd length never
/// lines up with any buffer size, so a lost, repeated or reordered chunk
/// shows up as a mismatch.
const PERIOD: usize = 1024 * 1024 + 7;
const CHUNK: usize = 64 * 1024;

fn pattern() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..PERIOD)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

async fn send(mut write: OwnedWriteHalf, block: &[u8]) {
    let mut sent = 0;
    while sent < TOTAL {
        let start = sent % PERIOD;
        let len = (PERIOD - start).min(TOTAL - sent).min(CHUNK);
        write.write_all(&block[start..start + len]).await.unwrap();
        sent += len;
    }
    write.shutdown().await.unwrap();
}

async fn receive_and_verify(mut read: OwnedReadHalf, block: &[u8]) -> usize {
    let mut buf = vec![0; CHUNK];
    let mut received = 0;
    loop {
        let n = read.read(&mut buf).await.unwrap();
        if n == 0 {
            return received;
        }
        let mut pos = 0;
        while pos < n {
            let start = (received + pos) % PERIOD;
            let len = (PERIOD - start).min(n - pos);
            assert!(
                buf[pos..pos + len] == block[start..start + len],
                "mismatch within bytes {}..{}",
                received + pos,
                received + pos + len
            );
            pos += len;
        }
        received += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarter_gibibyte_each_way_arrives_intact() {
    within(180, async {
        let backend = echo_backend().await;
        let proxy = start_proxy("", &[backend]).await;
        let (read, write) = TcpStream::connect(proxy.addr).await.unwrap().into_split();
        let block = std::sync::Arc::new(pattern());
        let sender = tokio::spawn({
            let block = std::sync::Arc::clone(&block);
            async move { send(write, &block).await }
        });
        let received = receive_and_verify(read, &block).await;
        sender.await.unwrap();
        assert_eq!(received, TOTAL);
    })
    .await;
}
