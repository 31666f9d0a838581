//! hyper clients speaking HTTP/1.1 or HTTP/2 prior knowledge to the gateway.

use std::net::SocketAddr;

use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::backend::Proto;

/// One client connection.
pub enum Client<B> {
    H1(hyper::client::conn::http1::SendRequest<B>),
    H2(hyper::client::conn::http2::SendRequest<B>),
}

impl<B> Client<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub async fn connect(proto: Proto, addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let io = TokioIo::new(stream);
        match proto {
            Proto::H1 => {
                let (tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                Client::H1(tx)
            }
            Proto::H2 => {
                let (tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Client::H2(tx)
            }
        }
    }

    pub async fn send(&mut self, req: Request<B>) -> hyper::Result<Response<Incoming>> {
        match self {
            Client::H1(tx) => {
                tx.ready().await?;
                tx.send_request(req).await
            }
            Client::H2(tx) => {
                tx.ready().await?;
                tx.send_request(req).await
            }
        }
    }
}

/// Build a request for `proto`: HTTP/1.1 gets a Host header, HTTP/2 an
/// absolute URI (its `:authority`).
pub fn request<B>(proto: Proto, method: &str, host: &str, path: &str, body: B) -> Request<B> {
    match proto {
        Proto::H1 => Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(body)
            .unwrap(),
        Proto::H2 => Request::builder()
            .method(method)
            .version(http::Version::HTTP_2)
            .uri(format!("http://{host}{path}"))
            .body(body)
            .unwrap(),
    }
}

/// One GET on a fresh connection; returns (status, body text).
pub async fn get(proto: Proto, addr: SocketAddr, host: &str, path: &str) -> (u16, String) {
    let mut c = Client::connect(proto, addr).await;
    let res = c
        .send(request(
            proto,
            "GET",
            host,
            path,
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, super::body::text(res.into_body()).await)
}
