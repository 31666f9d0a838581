//! An HTTP/3 client (quinn + h3) for tests of `quic` listeners.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;

use super::tls::{client_config, Pki};

pub type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An HTTP/3 client connection.
pub struct H3Client {
    pub send: SendRequest,
    pub conn: quinn::Connection,
    pub driver: tokio::task::JoinHandle<()>,
    pub endpoint: quinn::Endpoint,
}

impl H3Client {
    /// The certificate the gateway served on this connection.
    pub fn served(&self) -> CertificateDer<'static> {
        let chain = self
            .conn
            .peer_identity()
            .unwrap()
            .downcast::<Vec<CertificateDer<'static>>>()
            .unwrap();
        chain[0].clone()
    }

    /// GET `path` from `host`: status, headers, body.
    pub async fn get(&mut self, host: &str, path: &str) -> (u16, HeaderMap, Bytes) {
        let req = Request::builder()
            .uri(format!("https://{host}{path}"))
            .body(())
            .unwrap();
        let mut stream = self.send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        let res = stream.recv_response().await.unwrap();
        let mut got = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            got.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        (
            res.status().as_u16(),
            res.headers().clone(),
            Bytes::from(got),
        )
    }
}

/// Connect to `addr` trusting `pki`'s CA.
pub async fn connect(addr: SocketAddr, sni: &str, pki: &Pki) -> H3Client {
    connect_with(addr, sni, client_config(pki, &[b"h3"], None))
        .await
        .unwrap()
}

/// Connect with `tls`; the error of a handshake or HTTP/3 setup that fails.
pub async fn connect_with(
    addr: SocketAddr,
    sni: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<H3Client, String> {
    let crypto = QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(addr, sni)
        .unwrap()
        .await
        .map_err(|e| e.to_string())?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok(H3Client {
        send,
        conn,
        driver,
        endpoint,
    })
}
