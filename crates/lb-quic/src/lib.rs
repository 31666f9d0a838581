//! ExpressGateway HTTP/3 front: QUIC (quinn) and HTTP/3 (h3) in front of
//! the `lb-http` proxy core. A `quic` listener terminates QUIC with the
//! listener's rustls configuration (ALPN `h3`) and turns each request into
//! an `http::Request<ProxyBody>` served by the same core as HTTP/1.1 and
//! HTTP/2.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(missing_docs)]

mod body;
mod connection;
mod endpoint;
mod handshake;
mod request;
mod resets;

pub use endpoint::{bind, serve, QuicError};
