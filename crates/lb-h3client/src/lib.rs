//! ExpressGateway HTTP/3 client: QUIC (quinn) connections to `h3`
//! backends with HTTP/3 (h3) on top. The proxy pools multiplex requests
//! over these connections; active health checks open one per probe. A
//! request body streams to the backend one frame at a time (QUIC flow
//! control holds the sender back) and the response body streams back the
//! same way, trailers included.
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
pub mod bounded;
mod connection;
mod error;
mod exchange;
mod framing;

pub use body::ResponseBody;
pub use connection::{Client, Connection, Driver, Transport};
pub use error::{BoxError, Error, SendError};
