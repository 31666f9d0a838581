//! Reading the gateway's metrics back through its admin listener.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::backend::Proto;
use super::client::Client;

/// The Prometheus text the admin listener serves at `/metrics`.
pub async fn scrape(admin: SocketAddr) -> String {
    let mut c = Client::connect(Proto::H1, admin).await;
    let req = http::Request::builder()
        .uri("/metrics")
        .header("host", "admin")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = c.send(req).await.unwrap();
    assert_eq!(res.status(), 200);
    super::body::text(res.into_body()).await
}

/// Wait until the admin listener answers.
pub async fn wait_admin(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(Instant::now() < deadline, "admin listener never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the sample `name` whose labels include `labels`.
pub use lb_observability::sample as value;

/// Scrape until `name{labels}` satisfies `ok` (a record is written when a
/// response body ends, which may trail the client's read by a moment);
/// returns the value. Fails after 10 s with the whole exposition.
pub async fn wait_for(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(admin).await;
        let got = value(&text, name, labels);
        if let Some(v) = got.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} = {got:?}, never as expected, in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Scrape until `name{labels}` is exactly `want`.
pub async fn wait_value(admin: SocketAddr, name: &str, labels: &[(&str, &str)], want: f64) {
    wait_for(admin, name, labels, |v| v == want).await;
}
