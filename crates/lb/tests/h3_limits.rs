//! Hostile-input bounds of `quic` listeners that HTTP/3 clients can see:
//! the header size limit advertised in SETTINGS.
mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use quinn::crypto::rustls::QuicClientConfig;

use common::backend::{echo, Proto};
use common::tls::{client_config, Pki};
use common::{free_udp, Gateway};

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn get(
    send: &mut SendRequest,
    header: Option<String>,
) -> Result<u16, h3::error::StreamError> {
    let mut req = Request::get("https://q.test/");
    if let Some(value) = header {
        req = req.header("x-big", value);
    }
    let mut stream = send.send_request(req.body(()).unwrap()).await?;
    stream.finish().await?;
    let res = stream.recv_response().await?;
    while stream.recv_data().await?.is_some() {}
    Ok(res.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_header_bytes_is_advertised_as_max_field_section_size() {
    let pki = Pki::new("h3-limits");
    let cert = pki.server("q", &["q.test"]);
    let backend = echo(Proto::H1);
    let listen = free_udp();
    let text = format!(
        r#"[[clusters]]
name = "echo"
backends = [{{ address = "{backend}", protocol = "h1" }}]

[[listeners]]
address = "{listen}"
protocol = "quic"
max_header_bytes = 4096
[listeners.tls]
cert_path = {cert:?}
key_path = {key:?}
[[listeners.routes]]
path_prefix = "/"
cluster = "echo"
"#,
        backend = backend.addr,
        cert = cert.cert_path,
        key = cert.key_path,
    );
    let _gw = Gateway::start(&text, &[listen]);
    let crypto = QuicClientConfig::try_from(client_config(&pki, &[b"h3"], None)).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint.connect(listen, "q.test").unwrap().await.unwrap();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    // The first answer comes after the gateway's SETTINGS.
    assert_eq!(get(&mut send, None).await.unwrap(), 200);
    match get(&mut send, Some("a".repeat(8192))).await {
        Err(h3::error::StreamError::HeaderTooBig { max_size, .. }) => assert_eq!(max_size, 4096),
        other => panic!("an 8 KiB header was not refused by the advertised limit: {other:?}"),
    }
    assert_eq!(
        get(&mut send, None).await.unwrap(),
        200,
        "the connection did not stay usable"
    );
}
