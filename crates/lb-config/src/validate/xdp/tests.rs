//! Validation of `[xdp]` and the clusters its virtual IPs name.

use std::net::SocketAddrV4;

use crate::defaults as d;
use crate::model::*;

/// Exists on every Linux host.
const LO: &str = "lo";
/// Exists on none.
const MISSING: &str = "eg-no-such0";

/// `[xdp]` on `lo` with one tcp VIP on port 80 to cluster `web`, whose
/// table takes `keys` and whose one backend takes `backend`.
fn tcp(keys: &str, backend: &str) -> String {
    format!(
        r#"
[xdp]
interface = "{LO}"
[[xdp.vips]]
address = "10.0.0.10:80"
transport = "tcp"
cluster = "web"

[[clusters]]
name = "web"
{keys}
[[clusters.backends]]
address = "10.1.0.1:80"
protocol = "tcp"
{backend}
"#
    )
}

/// The same with a udp VIP on port 53 and a udp backend.
fn udp(keys: &str) -> String {
    format!(
        r#"
[xdp]
interface = "{LO}"
[[xdp.vips]]
address = "10.0.0.10:53"
transport = "udp"
cluster = "dns"

[[clusters]]
name = "dns"
{keys}
[[clusters.backends]]
address = "10.1.0.1:53"
protocol = "udp"
"#
    )
}

fn valid(text: &str) -> Config {
    match crate::parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}\n{text}"),
    }
}

/// `(path, reason)` of every error.
fn errors(text: &str) -> Vec<(String, String)> {
    match crate::parse(text) {
        Ok(_) => panic!("expected errors:\n{text}"),
        Err(crate::LoadError::Invalid(all)) => {
            all.into_iter().map(|e| (e.path, e.reason)).collect()
        }
        Err(other) => panic!("expected validation errors, got {other}"),
    }
}

/// The config is refused with exactly one error, at `path`, saying
/// `reason`.
fn rejects(text: &str, path: &str, reason: &str) {
    let all = errors(text);
    assert!(
        all.len() == 1 && all.iter().any(|(p, r)| p == path && r.contains(reason)),
        "expected only {path}: ...{reason}..., got {all:?}\n{text}"
    );
}

#[test]
fn xdp_and_a_cluster_without_listeners_are_a_valid_config() {
    let c = valid(&tcp("", ""));
    assert!(c.listeners.is_empty());
    let xdp = c.xdp.as_ref().unwrap();
    assert_eq!(xdp.interface, LO);
    assert_eq!(xdp.mode, d::XDP_MODE);
    assert_eq!(xdp.mode, XdpMode::Native);
    assert_eq!(
        xdp.vips,
        vec![XdpVip {
            address: "10.0.0.10:80".parse::<SocketAddrV4>().unwrap(),
            transport: XdpTransport::Tcp,
            cluster: "web".into(),
        }]
    );
    let web = c.cluster("web").unwrap();
    assert_eq!(web.backends.len(), 1);
    let b = &web.backends[0];
    assert_eq!(b.resolved, "10.1.0.1:80".parse().unwrap());
    assert_eq!(b.protocol, BackendProtocol::Tcp);
    assert_eq!(b.weight, d::BACKEND_WEIGHT);
    assert_eq!(web.health_check, None);
    assert_eq!(web.retries.attempts, 0);
    assert_eq!(web.connect_failure_backoff, None);
    assert_eq!(web.panic_threshold_percent, 0);
}

#[test]
fn maglev_is_the_default_policy_of_an_xdp_cluster() {
    let c = valid(&tcp("", ""));
    let web = c.cluster("web").unwrap();
    assert_eq!(web.policy, Policy::Maglev);
    assert_eq!(web.policy, d::XDP_POLICY);
    assert_eq!(web.hash_key, None);
    assert_eq!(web.maglev_table_size, d::MAGLEV_TABLE_SIZE);
    let c = valid(&tcp("policy = \"maglev\"\nmaglev_table_size = 251", ""));
    let web = c.cluster("web").unwrap();
    assert_eq!(web.policy, Policy::Maglev);
    assert_eq!(web.maglev_table_size, 251);
    // Clusters not named by a VIP keep their own default.
    let c = valid(&format!(
        "{}[[clusters]]\nname = \"other\"\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n\
         [[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"h1\"\nroutes = [{{ cluster = \"other\" }}]\n",
        tcp("", "")
    ));
    assert_eq!(c.cluster("other").unwrap().policy, Policy::RoundRobin);
}

#[test]
fn other_policies_are_refused() {
    for policy in Policy::ALL.into_iter().filter(|p| *p != Policy::Maglev) {
        rejects(
            &tcp(&format!("policy = \"{}\"", policy.as_str()), ""),
            "clusters[0].policy",
            &format!(
                "the XDP path balances with maglev in the kernel; policy \"{}\" is not available",
                policy.as_str()
            ),
        );
    }
}

#[test]
fn the_maglev_table_fits_the_kernels() {
    valid(&tcp("maglev_table_size = 65537", ""));
    rejects(
        &tcp("maglev_table_size = 65539", ""),
        "clusters[0].maglev_table_size",
        "at most 65537 (the room of the kernel's table)",
    );
    rejects(
        &tcp("maglev_table_size = 1000", ""),
        "clusters[0].maglev_table_size",
        "must be a prime",
    );
}

#[test]
fn mode_takes_native_and_generic() {
    let generic = tcp("", "").replace(
        "interface = \"lo\"",
        "interface = \"lo\"\nmode = \"generic\"",
    );
    assert_eq!(valid(&generic).xdp.unwrap().mode, XdpMode::Generic);
    let native = tcp("", "").replace(
        "interface = \"lo\"",
        "interface = \"lo\"\nmode = \"native\"",
    );
    assert_eq!(valid(&native).xdp.unwrap().mode, XdpMode::Native);
    let bad = tcp("", "").replace(
        "interface = \"lo\"",
        "interface = \"lo\"\nmode = \"offload\"",
    );
    let Err(crate::LoadError::Parse(e)) = crate::parse(&bad) else {
        panic!("expected a schema error");
    };
    assert_eq!(e.path, "xdp.mode");
    assert!(e.reason.contains("expected `native` or `generic`"), "{e}");
}

#[test]
fn the_interface_must_exist_here() {
    let with =
        |name: &str| tcp("", "").replace("interface = \"lo\"", &format!("interface = {name:?}"));
    rejects(
        &with(MISSING),
        "xdp.interface",
        "no network interface named \"eg-no-such0\" on this host",
    );
    rejects(&with(""), "xdp.interface", "must name a network interface");
    rejects(
        &with("../lo"),
        "xdp.interface",
        "is not a network interface name",
    );
    rejects(
        &with(".."),
        "xdp.interface",
        "is not a network interface name",
    );
    rejects(
        &with("."),
        "xdp.interface",
        "is not a network interface name",
    );
    rejects(
        &with("lo 0"),
        "xdp.interface",
        "is not a network interface name",
    );
    rejects(
        &with("a-very-long-name0"),
        "xdp.interface",
        "longer than an interface name can be",
    );
    let Err(crate::LoadError::Parse(e)) = crate::parse("[xdp]\nvips = []\n") else {
        panic!("expected a schema error");
    };
    assert_eq!(e.path, "xdp");
    assert!(e.reason.contains("missing field `interface`"), "{e}");
}

#[test]
fn xdp_needs_a_vip_and_a_config_needs_a_listener_or_a_vip() {
    let paths: Vec<String> = errors("[xdp]\ninterface = \"lo\"\n")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(paths, ["xdp.vips"]);
    rejects(
        "",
        "listeners",
        "at least one listener or XDP virtual IP is required",
    );
}

#[test]
fn vip_addresses_are_ipv4_literals_with_a_port() {
    let with = |address: &str| tcp("", "").replace("\"10.0.0.10:80\"", &format!("{address:?}"));
    rejects(
        &with("[2001:db8::10]:80"),
        "xdp.vips[0].address",
        "IPv6 virtual IPs are not supported on the XDP path",
    );
    rejects(
        &with("vip.example.com:80"),
        "xdp.vips[0].address",
        "not a name",
    );
    rejects(
        &with("10.0.0.10"),
        "xdp.vips[0].address",
        "is not an IPv4 address and port (ip:port)",
    );
    rejects(&with("10.0.0.10:0"), "xdp.vips[0].address", "port 0");
    rejects(
        &with("0.0.0.0:80"),
        "xdp.vips[0].address",
        "give the virtual IP itself",
    );
}

/// Two VIPs on cluster `web`; the second with `address` and `transport`.
fn two_vips(address: &str, transport: &str) -> String {
    tcp("", "").replace(
        "[[clusters]]",
        &format!(
            "[[xdp.vips]]\naddress = {address:?}\ntransport = {transport:?}\ncluster = \"web\"\n\n[[clusters]]"
        ),
    )
}

#[test]
fn vips_are_unique_by_address_and_transport() {
    rejects(
        &two_vips("10.0.0.10:80", "tcp"),
        "xdp.vips[1].address",
        "10.0.0.10:80 over tcp is also xdp.vips[0]",
    );
    // The same address over udp is another VIP; it may not share the tcp
    // one's cluster.
    rejects(
        &two_vips("10.0.0.10:80", "udp"),
        "xdp.vips[1].cluster",
        "cluster \"web\" also serves xdp.vips[0] (10.0.0.10:80 over tcp); VIPs share a cluster only with the same transport and port",
    );
}

#[test]
fn vips_share_a_cluster_only_with_the_same_transport_and_port() {
    let c = valid(&two_vips("10.0.0.11:80", "tcp"));
    assert_eq!(c.xdp.unwrap().vips.len(), 2);
    rejects(
        &two_vips("10.0.0.11:81", "tcp"),
        "xdp.vips[1].cluster",
        "VIPs share a cluster only with the same transport and port",
    );
}

#[test]
fn a_vip_may_not_take_a_listeners_address_over_its_transport() {
    let listener = |address: &str, protocol: &str, backend: &str| {
        format!(
            "{}[[clusters]]\nname = \"l4\"\nbackends = [{{ address = \"127.0.0.1:9001\", protocol = \"{backend}\" }}]\n\
             [[listeners]]\naddress = {address:?}\nprotocol = {protocol:?}\ncluster = \"l4\"\n",
            tcp("", "")
        )
    };
    rejects(
        &listener("10.0.0.10:80", "tcp", "tcp"),
        "xdp.vips[0].address",
        "10.0.0.10:80 is also bound by listeners[0] over TCP; the XDP program would take that listener's packets",
    );
    // A udp listener on the address binds another socket type.
    valid(&listener("10.0.0.10:80", "udp", "udp"));
    // Only an exact clash is refused.
    valid(&listener("0.0.0.0:80", "tcp", "tcp"));
    // A quic listener binds UDP, as a udp VIP's packets are.
    let quic = udp("").replace(
        "[[clusters]]",
        "[[clusters]]\nname = \"h\"\nbackends = [{ address = \"127.0.0.1:9001\" }]\n\
         [[listeners]]\naddress = \"10.0.0.10:53\"\nprotocol = \"quic\"\nroutes = [{ cluster = \"h\" }]\n\
         [listeners.tls]\n[[listeners.tls.certificates]]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n\n[[clusters]]",
    );
    let all = errors(&quic);
    assert!(
        all.iter().any(|(p, r)| p == "xdp.vips[0].address"
            && r.contains("is also bound by listeners[0] over UDP")),
        "{all:?}"
    );
    let admin = format!(
        "[observability]\nmetrics_bind = \"10.0.0.10:80\"\n{}",
        tcp("", "")
    );
    // A non-loopback admin address also needs a token: only the clash is
    // looked for here.
    let all = errors(&admin);
    assert!(
        all.iter().any(|(p, r)| p == "xdp.vips[0].address"
            && r.contains("the admin listener's address (observability.metrics_bind)")),
        "{all:?}"
    );
}

#[test]
fn a_vip_names_a_cluster_that_serves_no_listener() {
    rejects(
        &tcp("", "").replace("cluster = \"web\"", "cluster = \"nope\""),
        "xdp.vips[0].cluster",
        "unknown cluster \"nope\"",
    );
    let tcp_listener = format!(
        "{}[[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"tcp\"\ncluster = \"web\"\n",
        tcp("", "")
    );
    rejects(
        &tcp_listener,
        "xdp.vips[0].cluster",
        "cluster \"web\" serves an XDP VIP and listeners[0].cluster; give each its own cluster",
    );
    let route = format!(
        "{}[[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"h1\"\n\
         routes = [{{ path_prefix = \"/a\", direct = {{ status = 200 }} }}, {{ cluster = \"web\" }}]\n",
        tcp("", "")
    );
    let all = errors(&route);
    assert!(
        all.iter().any(|(p, r)| p == "xdp.vips[0].cluster"
            && r.contains("serves an XDP VIP and listeners[0].routes[1].cluster")),
        "{all:?}"
    );
}

#[test]
fn backends_are_ipv4_addresses_on_the_vips_port_and_transport() {
    let with = |address: &str| tcp("", "").replace("\"10.1.0.1:80\"", &format!("{address:?}"));
    rejects(
        &with("app-1.internal:80"),
        "clusters[0].backends[0].address",
        "XDP backends are reached by IP-in-IP; give an IPv4 address, not a name",
    );
    rejects(
        &with("[2001:db8::1]:80"),
        "clusters[0].backends[0].address",
        "give an IPv4 address",
    );
    rejects(
        &with("10.1.0.1:8080"),
        "clusters[0].backends[0].address",
        "direct server return: the backend answers on the VIP's port; give port 80",
    );
    rejects(
        &tcp("", "").replace("protocol = \"tcp\"", "protocol = \"udp\""),
        "clusters[0].backends[0].protocol",
        "a tcp VIP: its backends say protocol = \"tcp\"; this one is udp",
    );
    rejects(
        &tcp("", "").replace("protocol = \"tcp\"", ""),
        "clusters[0].backends[0].protocol",
        "this one is h1 (the default)",
    );
    rejects(
        &udp("").replace("protocol = \"udp\"", "protocol = \"tcp\""),
        "clusters[0].backends[0].protocol",
        "a udp VIP: its backends say protocol = \"udp\"; this one is tcp",
    );
    rejects(
        &tcp("backends = []", "").replace(
            "[[clusters.backends]]\naddress = \"10.1.0.1:80\"\nprotocol = \"tcp\"\n",
            "",
        ),
        "clusters[0].backends",
        "at least one backend",
    );
    let weighted = valid(&tcp("", "weight = 3"));
    assert_eq!(weighted.cluster("web").unwrap().backends[0].weight, 3);
}

#[test]
fn backend_keys_of_proxied_connections_are_refused() {
    for (key, value) in [
        ("tls", "true"),
        ("tls_server_name", "\"app\""),
        ("tls_ca_path", "\"ca.pem\""),
        ("tls_verify", "false"),
        ("tls_client_cert_path", "\"c.pem\""),
        ("tls_client_key_path", "\"k.pem\""),
        ("send_proxy_protocol", "\"v2\""),
        ("quic_server_id", "1"),
    ] {
        rejects(
            &tcp("", &format!("{key} = {value}")),
            &format!("clusters[0].backends[0].{key}"),
            "has no effect on an XDP cluster",
        );
    }
}

#[test]
fn cluster_keys_without_effect_on_the_xdp_path_are_refused() {
    for (key, table) in [
        ("hash_key", "hash_key = \"source_ip\""),
        ("ring_size", "ring_size = 100"),
        ("cookie_secret", "cookie_secret = \"0123456789abcdef\""),
        ("panic_threshold_percent", "panic_threshold_percent = 0"),
        ("outlier_detection", "outlier_detection = {}"),
        (
            "connect_failure_backoff_ms",
            "connect_failure_backoff_ms = 0",
        ),
        ("circuit_breaker", "circuit_breaker = {}"),
        ("retries", "retries = {}"),
        ("timeouts.connect_ms", "timeouts = { connect_ms = 100 }"),
        (
            "timeouts.response_headers_ms",
            "timeouts = { response_headers_ms = 100 }",
        ),
        (
            "pool.max_idle_per_backend",
            "pool = { max_idle_per_backend = 1 }",
        ),
        ("pool.idle_timeout_ms", "pool = { idle_timeout_ms = 1 }"),
        (
            "pool.max_connections_per_backend",
            "pool = { max_connections_per_backend = 1 }",
        ),
        (
            "pool.max_streams_per_connection",
            "pool = { max_streams_per_connection = 1 }",
        ),
    ] {
        rejects(
            &tcp(table, ""),
            &format!("clusters[0].{key}"),
            "has no effect on an XDP cluster",
        );
    }
    // Empty tables set nothing.
    valid(&tcp("timeouts = {}\npool = {}", ""));
}

#[test]
fn health_checks_are_tcp_and_for_tcp_vips_only() {
    let c = valid(&tcp("health_check = { interval_ms = 1000 }", ""));
    let hc = c.cluster("web").unwrap().health_check.clone().unwrap();
    assert_eq!(hc.kind, HealthCheckKind::Tcp);
    assert_eq!(hc.interval, std::time::Duration::from_millis(1000));
    valid(&tcp("health_check = { kind = \"tcp\" }", ""));
    for kind in ["http", "grpc", "udp", "quic"] {
        rejects(
            &tcp(&format!("health_check = {{ kind = \"{kind}\" }}"), ""),
            "clusters[0].health_check.kind",
            "an XDP cluster is checked with kind = \"tcp\"",
        );
    }
    rejects(
        &tcp("health_check = { path = \"/\" }", ""),
        "clusters[0].health_check.path",
        "applies to http checks only",
    );
    rejects(
        &tcp("health_check = { interval_ms = 0 }", ""),
        "clusters[0].health_check.interval_ms",
        "must be greater than 0",
    );
    rejects(
        &udp("health_check = { kind = \"udp\", payload = \"x\" }"),
        "clusters[0].health_check",
        "a udp VIP's cluster takes no health check",
    );
    let c = valid(&udp(""));
    assert_eq!(c.xdp.unwrap().vips[0].transport, XdpTransport::Udp);
    assert_eq!(c.clusters[0].backends[0].protocol, BackendProtocol::Udp);
}

#[test]
fn tokens_name_themselves() {
    assert_eq!(XdpMode::Native.as_str(), "native");
    assert_eq!(XdpMode::Generic.as_str(), "generic");
    assert_eq!(XdpTransport::Tcp.as_str(), "tcp");
    assert_eq!(XdpTransport::Udp.as_str(), "udp");
}
