//! A backend that refuses connections is skipped for another one, and the
//! backends' counters follow the flows.

use std::sync::atomic::Ordering;

use tokio::net::TcpStream;

use crate::support::{
    closed_by_proxy, echo_backend, eventually, refusing_address, roundtrip, start_proxy, within,
};

#[tokio::test]
async fn refused_backend_fails_over_to_the_next() {
    within(10, async {
        let dead = refusing_address().await;
        let live = echo_backend().await;
        let proxy = start_proxy("", &[dead, live]).await;
        for i in 0..4 {
            let mut client = TcpStream::connect(proxy.addr).await.unwrap();
            roundtrip(&mut client, format!("flow {i}").as_bytes()).await;
            let (dead_state, live_state) = (proxy.backend(0), proxy.backend(1));
            assert_eq!(live_state.state.open_connections.load(Ordering::Relaxed), 1);
            assert_eq!(live_state.state.in_flight.load(Ordering::Relaxed), 1);
            assert_eq!(dead_state.state.in_flight.load(Ordering::Relaxed), 0);
            drop(client);
            eventually(|| live_state.state.open_connections.load(Ordering::Relaxed) == 0).await;
            assert_eq!(live_state.state.in_flight.load(Ordering::Relaxed), 0);
        }
        let (dead_state, live_state) = (proxy.backend(0), proxy.backend(1));
        assert_eq!(
            dead_state.state.connections_opened.load(Ordering::Relaxed),
            0
        );
        assert_eq!(
            live_state.state.connections_opened.load(Ordering::Relaxed),
            4
        );
    })
    .await;
}

#[tokio::test]
async fn client_is_closed_when_every_backend_refuses() {
    within(10, async {
        let proxy = start_proxy("", &[refusing_address().await, refusing_address().await]).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        assert!(closed_by_proxy(&mut client).await);
        for index in 0..2 {
            let state = &proxy.backend(index).state;
            assert_eq!(state.in_flight.load(Ordering::Relaxed), 0);
            assert_eq!(state.open_connections.load(Ordering::Relaxed), 0);
        }
    })
    .await;
}
