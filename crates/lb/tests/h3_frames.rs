//! Request bodies framed by a hostile HTTP/3 client on a `quic` listener:
//! many small DATA frames sent faster than the backend reads them stay
//! under QUIC flow control, frames of unknown types are skipped whatever
//! their size, and a head frame far over the limit is refused before it
//! is buffered.
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;

use common::backend::{echo, full, start, Proto};
use common::h3raw::{self, quic_gateway, Answer, DATA};

const H3_EXCESSIVE_LOAD: u64 = 0x107;

fn post(path: &str) -> Vec<u8> {
    let mut fields = h3raw::get("q.test", path);
    fields[0] = (":method", "POST");
    h3raw::headers(&fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_data_frames_faster_than_the_backend_reads_stay_under_flow_control() {
    // The backend takes the body slowly: a pause of 1 ms every 16 chunks
    // it is given.
    let consumed = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&consumed);
    let backend = start(Proto::H1, move |req| {
        let seen = Arc::clone(&seen);
        async move {
            let mut body = req.into_body();
            let mut chunks = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen.fetch_add(data.len() as u64, Ordering::SeqCst);
                }
                chunks += 1;
                if chunks % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            hyper::Response::new(full("done"))
        }
    });
    let s = quic_gateway("h3-small-frames", backend.addr);
    let conn = h3raw::connect(s.listen, "q.test", &s.pki, &[]).await;
    let idle = s.gw.rss_kib();

    // 64 KiB writes of 100-byte DATA frames for three seconds (at most
    // 512 MiB): the client gets as far as flow control lets it.
    let (mut send, _recv) = conn.send(&post("/slow"), false).await;
    let frame = h3raw::frame(DATA, &[b'x'; 100]);
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 640)
        .collect();
    let batch = Bytes::from(batch);
    let payload_per_batch = 100 * 640u64;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut written = 0u64;
    while Instant::now() < deadline && written < 512 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, send.write_all(&batch)).await {
            Ok(Ok(())) => written += payload_per_batch,
            Ok(Err(e)) => panic!("the request stream failed: {e}"),
            Err(_) => break,
        }
    }
    let taken = consumed.load(Ordering::SeqCst);
    let grown = s.gw.rss_kib().saturating_sub(idle);
    eprintln!(
        "client wrote {written} payload bytes, backend took {taken}, gateway grew {grown} KiB"
    );
    // Ahead of the backend: the stream window (1.25 MB), the gateway's
    // upstream buffers and the loopback socket buffers (6.6–7.5 MB in
    // all when measured). A gateway reading frames ahead of the backend
    // let the client 26 MB ahead in these three seconds (and grew 23 MiB).
    assert!(
        written.saturating_sub(taken) < 12 << 20,
        "the client got {written} bytes in while the backend took {taken}"
    );
    assert!(grown < 12 * 1024, "gateway grew {grown} KiB");
    send.reset(0u32.into()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_unknown_types_are_skipped_whatever_their_size() {
    let backend = echo(Proto::H1);
    let s = quic_gateway("h3-unknown-frames", backend.addr);
    let conn = h3raw::connect(s.listen, "q.test", &s.pki, &[]).await;
    let mut wire = post("/echo");
    wire.extend(h3raw::frame(DATA, b"hello"));
    // Reserved types (0x1f * N + 0x21) must be ignored (RFC 9114 §7.2.8),
    // here a 4 MiB one, far over any limit on frames the gateway keeps.
    wire.extend(h3raw::frame(0x1f * 7 + 0x21, &vec![0u8; 4 << 20]));
    wire.extend(h3raw::frame(0x0a, b"unassigned"));
    wire.extend(h3raw::frame(DATA, b" world"));
    let (_send, mut recv) = conn.send(&wire, true).await;
    match h3raw::answer(&mut recv).await {
        Answer::Response {
            status: 200, body, ..
        } => assert_eq!(body, b"hello world"),
        other => panic!("not echoed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_frame_far_over_the_limit_is_refused_unread_and_the_connection_stays_usable() {
    let backend = echo(Proto::H1);
    let s = quic_gateway("h3-huge-head", backend.addr);
    let conn = h3raw::connect(s.listen, "q.test", &s.pki, &[]).await;
    let idle = s.gw.rss_kib();
    // A HEADERS frame announcing 64 MiB; its first 8 MiB are sent.
    let mut wire = Vec::new();
    h3raw::varint(h3raw::HEADERS, &mut wire);
    h3raw::varint(64 << 20, &mut wire);
    wire.extend(vec![0u8; 8 << 20]);
    let (mut send, mut recv) = conn.conn.open_bi().await.unwrap();
    let written = tokio::time::timeout(Duration::from_secs(10), send.write_all(&wire))
        .await
        .expect("the write ends, stopped or done");
    match written {
        Err(quinn::WriteError::Stopped(code)) => {
            assert_eq!(code.into_inner(), H3_EXCESSIVE_LOAD)
        }
        other => panic!("the oversized head was not stopped: {other:?}"),
    }
    match h3raw::answer(&mut recv).await {
        Answer::Reset(_) | Answer::NoHead => {}
        other => panic!("an oversized head was answered: {other:?}"),
    }
    let grown = s.gw.rss_kib().saturating_sub(idle);
    assert!(grown < 8 * 1024, "gateway grew {grown} KiB");
    // The connection still serves.
    let (_send, mut recv) = conn.send(&post("/after"), true).await;
    assert!(matches!(
        h3raw::answer(&mut recv).await,
        Answer::Response { status: 200, .. }
    ));
}
