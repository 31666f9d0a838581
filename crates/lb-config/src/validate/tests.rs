use super::*;

fn valid(text: &str) -> Config {
    match crate::parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn error_paths(text: &str) -> Vec<String> {
    match crate::parse(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => match e {
            crate::LoadError::Invalid(all) => all.into_iter().map(|e| e.path).collect(),
            other => panic!("expected validation errors, got {other}"),
        },
    }
}

const INLINE_H1: &str = r#"
    [[listeners]]
    address = "127.0.0.1:8081"
    protocol = "h1"
    [[listeners.backends]]
    address = "127.0.0.1:9001"
    [[listeners.backends]]
    address = "127.0.0.1:9002"
    weight = 0
"#;

#[test]
fn inline_backends_become_an_anonymous_round_robin_cluster() {
    let config = valid(INLINE_H1);
    let cluster = config.cluster("listener:127.0.0.1:8081").unwrap();
    assert_eq!(cluster.policy, Policy::RoundRobin);
    assert_eq!(
        cluster.connect_timeout,
        Duration::from_millis(d::CONNECT_MS)
    );
    assert_eq!(
        cluster.response_headers_timeout,
        Duration::from_millis(d::RESPONSE_HEADERS_MS)
    );
    assert_eq!(
        cluster.pool,
        Pool {
            max_idle_per_backend: d::POOL_MAX_IDLE_PER_BACKEND,
            idle_timeout: Duration::from_millis(d::POOL_IDLE_TIMEOUT_MS),
            max_connections_per_backend: d::POOL_MAX_CONNECTIONS_PER_BACKEND,
            max_streams_per_connection: d::POOL_MAX_STREAMS_PER_CONNECTION,
        }
    );
    assert_eq!(
        cluster.connect_failure_backoff,
        Some(Duration::from_millis(d::CONNECT_FAILURE_BACKOFF_MS))
    );
    let ListenerKind::Http(http) = &config.listeners[0].kind else {
        panic!("expected an HTTP listener");
    };
    assert_eq!(
        http.routes,
        vec![Route {
            host: HostMatch::Any,
            path: PathMatch::Prefix("/".into()),
            action: RouteAction::Cluster("listener:127.0.0.1:8081".into()),
            retries: None,
            rules: RouteRules::default(),
            websocket: true,
            grpc_web: false,
        }]
    );
    assert_eq!(http.tunnels.idle_timeout, Duration::from_secs(3600));
    assert_eq!(http.tunnels.max, d::LISTENER_MAX_CONNECTIONS);
}

#[test]
fn weight_defaults_to_one_and_zero_is_valid() {
    let config = valid(INLINE_H1);
    let weights: Vec<u32> = config.clusters[0]
        .backends
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, vec![d::BACKEND_WEIGHT, 0]);
    assert_eq!(d::BACKEND_WEIGHT, 1);
}

#[test]
fn backend_protocol_defaults_to_h1_for_http_and_tcp_for_tcp_listeners() {
    let http = valid(INLINE_H1);
    assert_eq!(http.clusters[0].backends[0].protocol, BackendProtocol::H1);
    let tcp = valid(
        r#"
        [[listeners]]
        address = "127.0.0.1:8084"
        protocol = "tcp"
        [[listeners.backends]]
        address = "127.0.0.1:9001"
        "#,
    );
    assert_eq!(tcp.clusters[0].backends[0].protocol, BackendProtocol::Tcp);
    assert_eq!(
        tcp.listeners[0].kind,
        ListenerKind::Tcp {
            cluster: "listener:127.0.0.1:8084".into()
        }
    );
}

#[test]
fn listener_and_runtime_defaults_apply() {
    let config = valid(INLINE_H1);
    assert_eq!(config.runtime.worker_threads, d::WORKER_THREADS);
    assert_eq!(
        config.runtime.drain_timeout,
        Duration::from_millis(d::DRAIN_TIMEOUT_MS)
    );
    let l = &config.listeners[0];
    assert_eq!(l.max_connections, d::LISTENER_MAX_CONNECTIONS);
    assert_eq!(l.idle_timeout, Duration::from_millis(d::CLIENT_IDLE_MS));
    let ListenerKind::Http(http) = &l.kind else {
        panic!("expected an HTTP listener");
    };
    assert_eq!(
        http.request_headers_timeout,
        Duration::from_millis(d::REQUEST_HEADERS_MS)
    );
    assert_eq!(http.total_timeout, None);
    assert_eq!(http.max_header_count, d::MAX_HEADER_COUNT);
    assert_eq!(http.max_header_bytes, d::MAX_HEADER_BYTES);
    assert_eq!(
        http.clients.max_requests_per_client,
        Some(d::MAX_REQUESTS_PER_CLIENT)
    );
    assert_eq!(
        http.clients.min_data_rate,
        Some(MinDataRate {
            bytes_per_s: d::MIN_DATA_RATE_BYTES_PER_S,
            grace: Duration::from_millis(d::MIN_DATA_RATE_GRACE_MS),
        })
    );
    assert_eq!(http.h2.max_concurrent_streams, d::H2_MAX_CONCURRENT_STREAMS);
    assert_eq!(http.h2.initial_stream_window, d::H2_INITIAL_STREAM_WINDOW);
    assert_eq!(
        http.h2.initial_connection_window,
        d::H2_INITIAL_CONNECTION_WINDOW
    );
    let fw = http.forwarding;
    assert!(fw.x_forwarded_for && fw.x_forwarded_proto && fw.x_forwarded_host && fw.via);
    assert!(!fw.pass_proxy_auth);
}

#[test]
fn routes_normalise_hosts_and_default_prefix_and_content_type() {
    let config = valid(
        r#"
        [[listeners]]
        address = "127.0.0.1:8083"
        protocol = "h1"
        [[listeners.routes]]
        host = "API.Example.com"
        direct = { status = 200 }
        [[listeners.routes]]
        host = "*.Example.com"
        path_prefix = "/x/"
        direct = { status = 404, body = "no" }
        "#,
    );
    let ListenerKind::Http(http) = &config.listeners[0].kind else {
        panic!("expected an HTTP listener");
    };
    assert_eq!(
        http.routes[0].host,
        HostMatch::Exact("api.example.com".into())
    );
    assert_eq!(http.routes[0].path, PathMatch::Prefix("/".into()));
    assert_eq!(
        http.routes[0].action,
        RouteAction::Direct(DirectResponse {
            status: 200,
            body: String::new(),
            content_type: d::DIRECT_CONTENT_TYPE.into(),
        })
    );
    assert_eq!(
        http.routes[1].host,
        HostMatch::Wildcard(".example.com".into())
    );
}

#[test]
fn unset_idle_cap_follows_a_lower_connection_cap() {
    let config = valid(
        r#"
        [[clusters]]
        name = "small"
        pool = { max_connections_per_backend = 8 }
        [[clusters.backends]]
        address = "127.0.0.1:9001"
        [[listeners]]
        address = "127.0.0.1:8082"
        protocol = "h1"
        [[listeners.routes]]
        cluster = "small"
        "#,
    );
    assert_eq!(config.clusters[0].pool.max_idle_per_backend, 8);
    assert_eq!(config.clusters[0].pool.max_connections_per_backend, 8);
}

#[test]
fn quic_listener_needs_tls_and_takes_quic_defaults() {
    let paths = error_paths(
        r#"
        [[listeners]]
        address = "127.0.0.1:8081"
        protocol = "quic"
        h2_max_concurrent_streams = 10
        [[listeners.backends]]
        address = "10.0.0.1"
        "#,
    );
    assert_eq!(
        paths,
        vec![
            "listeners[0].tls",
            "listeners[0].h2_max_concurrent_streams",
            "listeners[0].backends[0].address"
        ]
    );
}

#[test]
fn wildcard_listener_addresses_overlap_specific_ones_on_the_same_port() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(binds_overlap(a("0.0.0.0:80"), a("127.0.0.1:80")));
    assert!(binds_overlap(a("127.0.0.1:80"), a("[::]:80")));
    assert!(binds_overlap(a("0.0.0.0:80"), a("[::]:80")));
    assert!(binds_overlap(a("[::]:80"), a("[::1]:80")));
    assert!(!binds_overlap(a("0.0.0.0:80"), a("[::1]:80")));
    assert!(!binds_overlap(a("127.0.0.1:80"), a("127.0.0.2:80")));
    assert!(!binds_overlap(a("0.0.0.0:80"), a("0.0.0.0:81")));
}

#[test]
fn path_normalization_defaults_and_tokens() {
    let config = valid(INLINE_H1);
    let ListenerKind::Http(http) = &config.listeners[0].kind else {
        panic!("expected an HTTP listener");
    };
    assert_eq!(
        http.normalization,
        PathNormalization {
            merge_slashes: d::MERGE_SLASHES,
            escaped_slashes: d::ESCAPED_SLASHES,
        }
    );
    let config = valid(
        r#"
        [[listeners]]
        address = "127.0.0.1:8083"
        protocol = "h1"
        merge_slashes = false
        escaped_slashes = "decode"
        [[listeners.routes]]
        path_exact = "/x"
        direct = { status = 200 }
        [[listeners.routes]]
        path_prefix = "/x"
        direct = { status = 200 }
        "#,
    );
    let ListenerKind::Http(http) = &config.listeners[0].kind else {
        panic!("expected an HTTP listener");
    };
    assert!(!http.normalization.merge_slashes);
    assert_eq!(http.normalization.escaped_slashes, EscapedSlashes::Decode);
    assert_eq!(http.routes[0].path, PathMatch::Exact("/x".into()));
    assert_eq!(http.routes[1].path, PathMatch::Prefix("/x".into()));
    assert_eq!(http.routes[0].path.to_string(), "=/x");
}

#[test]
fn path_exact_is_checked_like_a_prefix_and_excludes_it() {
    let paths = error_paths(
        r#"
        [[listeners]]
        address = "127.0.0.1:8083"
        protocol = "h1"
        [[listeners.routes]]
        path_exact = "x"
        direct = { status = 200 }
        [[listeners.routes]]
        path_exact = "/x"
        path_prefix = "/x"
        direct = { status = 200 }
        [[listeners.routes]]
        path_exact = "/y"
        direct = { status = 200 }
        [[listeners.routes]]
        path_exact = "/y"
        direct = { status = 201 }
        [[listeners]]
        address = "127.0.0.1:8084"
        protocol = "tcp"
        merge_slashes = true
        escaped_slashes = "keep"
        backends = [{ address = "127.0.0.1:9001" }]
        "#,
    );
    assert_eq!(
        paths,
        [
            "listeners[0].routes[0].path_exact",
            "listeners[0].routes[1]",
            "listeners[0].routes[3]",
            "listeners[1].merge_slashes",
            "listeners[1].escaped_slashes",
        ]
    );
}

#[test]
fn h3_backends_are_tls_without_saying_so_and_take_stream_limits() {
    let config = valid(
        r#"
        [[clusters]]
        name = "q"
        pool = { max_streams_per_connection = 10 }
        backends = [{ address = "127.0.0.1:9001", protocol = "h3", tls_verify = false }]
        [[listeners]]
        address = "127.0.0.1:8081"
        protocol = "h1"
        routes = [{ cluster = "q" }]
    "#,
    );
    let cluster = config.cluster("q").unwrap();
    let backend = &cluster.backends[0];
    assert_eq!(backend.protocol, BackendProtocol::H3);
    let tls = backend.tls.as_ref().expect("h3 is always TLS");
    assert!(!tls.verify);
    assert_eq!(tls.server_name, "127.0.0.1");
    assert_eq!(cluster.pool.max_streams_per_connection, 10);
    let paths = error_paths(
        r#"
        [[listeners]]
        address = "127.0.0.1:8081"
        protocol = "tcp"
        backends = [{ address = "127.0.0.1:9001", protocol = "h3" }]
    "#,
    );
    assert_eq!(paths, vec!["listeners[0].backends".to_owned()]);
}

#[test]
fn address_blocks_parse_and_match() {
    use crate::model::IpNet;
    let net = IpNet::parse("10.0.0.0/8").unwrap();
    assert!(net.contains("10.200.1.2".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
    assert!(!net.contains("11.0.0.1".parse().unwrap()));
    assert!(!net.contains("::1".parse().unwrap()));
    let one = IpNet::parse("127.0.0.1").unwrap();
    assert_eq!(one.prefix, 32);
    assert!(one.contains("127.0.0.1".parse().unwrap()));
    assert!(!one.contains("127.0.0.2".parse().unwrap()));
    let v6 = IpNet::parse("2001:db8::/32").unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
    assert!(IpNet::parse("0.0.0.0/0")
        .unwrap()
        .contains("1.2.3.4".parse().unwrap()));
    assert!(IpNet::parse("10.0.0.1/8")
        .unwrap_err()
        .contains("10.0.0.0/8"));
    assert!(IpNet::parse("10.0.0.0/33").is_err());
    assert!(IpNet::parse("not-an-ip").is_err());
}

#[test]
fn passthrough_quic_listeners_take_a_cluster_of_quic_backends_hashed_by_connection_id() {
    let c = valid(
        r#"
        [[clusters]]
        name = "q"
        policy = "maglev"
        [[clusters.backends]]
        address = "127.0.0.1:4434"
        protocol = "quic"
        quic_server_id = 513
        [[listeners]]
        address = "127.0.0.1:4433"
        protocol = "quic"
        cluster = "q"
        [listeners.quic]
        mode = "passthrough"
        server_id = { offset = 1, length = 2 }
        "#,
    );
    let l = &c.listeners[0];
    assert_eq!(l.id().to_string(), "127.0.0.1:4433/quic");
    assert!(l.tls.is_none() && l.quic.is_none());
    assert_eq!(l.idle_timeout, Duration::from_millis(d::UDP_IDLE_MS));
    assert_eq!(
        l.kind,
        ListenerKind::Passthrough {
            cluster: "q".into(),
            server_id: Some(ServerIdField {
                offset: 1,
                length: 2
            }),
        }
    );
    assert_eq!(c.clusters[0].hash_key, Some(HashKey::ConnectionId));
    assert_eq!(c.clusters[0].backends[0].quic_server_id, Some(513));

    // A terminating quic listener takes neither server IDs nor quic
    // backends.
    let paths = error_paths(
        r#"
        [[listeners]]
        address = "127.0.0.1:4433"
        protocol = "quic"
        tls = { cert_path = "c.pem", key_path = "k.pem" }
        backends = [{ address = "127.0.0.1:4434", protocol = "quic", quic_server_id = 1 }]
        [listeners.quic]
        server_id = { offset = 0, length = 1 }
        "#,
    );
    assert_eq!(
        paths,
        vec![
            "listeners[0].quic.server_id",
            "listeners[0].backends",
            "listeners[0].backends[0].quic_server_id"
        ]
    );
}
