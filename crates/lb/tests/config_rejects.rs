//! Malformed configurations are rejected by `expressgateway --check` with
//! the key path and the reason of every problem, and the gateway refuses to
//! start on them without binding anything.

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, free_addr, run_cli, temp_dir};

/// One malformed config: what is wrong, where, and a fragment of why.
struct Case {
    name: &'static str,
    toml: &'static str,
    /// Key path the error must start with; empty for file-level errors.
    path: &'static str,
    reason: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "unknown top-level key",
        toml: r#"
bogus = 1
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "bogus",
        reason: "unknown field `bogus`",
    },
    Case {
        name: "unknown key inside a listener",
        toml: r#"
[[listeners]]
adress = "127.0.0.1:8081"
protocol = "h1"
"#,
        path: "listeners[0].adress",
        reason: "unknown field `adress`, expected one of `address`",
    },
    Case {
        name: "unknown key inside a nested table",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
[listeners.timeouts]
idle = 5
"#,
        path: "listeners[0].timeouts.idle",
        reason: "unknown field `idle`",
    },
    Case {
        name: "bad listener protocol token",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "http"
"#,
        path: "listeners[0].protocol",
        reason: "unknown variant `http`, expected one of `tcp`, `tls`, `h1`, `h1s`, `quic`",
    },
    Case {
        name: "h1s listener without a tls table",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1s"
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].tls",
        reason: "a h1s listener needs a [listeners.tls] table with cert_path and key_path",
    },
    Case {
        name: "tls table on a tcp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "a.pem", key_path = "a.key" }
"#,
        path: "listeners[0].tls",
        reason: "applies to tls, h1s and quic listeners only; this is a tcp listener",
    },
    Case {
        name: "certificate file that does not exist",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tls"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/site.pem", key_path = "/nonexistent/site.key" }
"#,
        path: "listeners[0].tls.cert_path",
        reason: "cannot read /nonexistent/site.pem: No such file or directory",
    },
    Case {
        name: "client_auth without client_ca_path",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1s"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "a.pem", key_path = "a.key", client_auth = "optional" }
"#,
        path: "listeners[0].tls.client_auth",
        reason: "needs client_ca_path",
    },
    Case {
        name: "backend TLS key without tls = true",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
backends = [{ address = "127.0.0.1:9001", tls_ca_path = "ca.pem" }]
"#,
        path: "listeners[0].backends[0].tls_ca_path",
        reason: "applies only with tls = true on this backend",
    },
    Case {
        name: "ticket overlap longer than the rotation interval",
        toml: r#"
[runtime.tls]
ticket_rotation_interval_seconds = 3600
ticket_rotation_overlap_seconds = 7200
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "runtime.tls.ticket_rotation_overlap_seconds",
        reason: "7200 exceeds ticket_rotation_interval_seconds (3600)",
    },
    Case {
        name: "early data on a tls listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tls"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "a.pem", key_path = "a.key", early_data = true }
"#,
        path: "listeners[0].tls.early_data",
        reason: "applies to quic and h1s listeners only; this is a tls listener",
    },
    Case {
        name: "early data with client certificates on an h1s listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1s"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "a.pem", key_path = "a.key", client_ca_path = "ca.pem", early_data = true }
"#,
        path: "listeners[0].tls.early_data",
        reason: "cannot be combined with client_ca_path",
    },
    Case {
        name: "early data with client certificates",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "a.pem", key_path = "a.key", client_ca_path = "ca.pem", early_data = true }
"#,
        path: "listeners[0].tls.early_data",
        reason: "cannot be combined with client_ca_path",
    },
    Case {
        name: "websocket on a quic listener's route",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
tls = { cert_path = "a.pem", key_path = "a.key" }
[[listeners.routes]]
direct = { status = 200 }
websocket = true
"#,
        path: "listeners[0].routes[0].websocket",
        reason: "quic listeners carry no WebSocket",
    },
    Case {
        name: "grpc_web to a cluster with an h1 backend",
        toml: r#"
[[clusters]]
name = "web"
backends = [{ address = "127.0.0.1:9000", protocol = "h2" }, { address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.routes]]
cluster = "web"
grpc_web = true
"#,
        path: "listeners[0].routes[0].grpc_web",
        reason: "gRPC-Web is translated to gRPC, which needs h2 or h3 backends",
    },
    Case {
        name: "an unknown gRPC retry status",
        toml: r#"
[[clusters]]
name = "api"
backends = [{ address = "127.0.0.1:9000", protocol = "h2" }]
retries = { on = ["unavailable", "not-found"] }
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.routes]]
cluster = "api"
"#,
        path: "clusters[0].retries.on[1]",
        reason: "is not a retry condition",
    },
    Case {
        name: "websocket on a direct route",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.routes]]
direct = { status = 200 }
websocket = false
"#,
        path: "listeners[0].routes[0].websocket",
        reason: "applies to routes with a cluster only",
    },
    Case {
        name: "tunnel settings on a quic listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
max_tunnels = 10
tls = { cert_path = "a.pem", key_path = "a.key" }
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].max_tunnels",
        reason: "quic listeners carry no WebSocket tunnels",
    },
    Case {
        name: "tunnel idle timeout on a tcp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.timeouts]
tunnel_idle_ms = 1000
"#,
        path: "listeners[0].timeouts.tunnel_idle_ms",
        reason: "applies to HTTP listeners only; this is a tcp listener",
    },
    Case {
        name: "zero tunnels",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
max_tunnels = 0
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].max_tunnels",
        reason: "must be greater than 0",
    },
    Case {
        name: "grpc health check on h1 backends",
        toml: r#"
[[clusters]]
name = "svc"
health_check = { kind = "grpc" }
backends = [{ address = "127.0.0.1:9001", protocol = "h1" }]
"#,
        path: "clusters[0].health_check.kind",
        reason: "grpc checks need h2 backends",
    },
    Case {
        name: "grpc health check with a path",
        toml: r#"
[[clusters]]
name = "svc"
health_check = { kind = "grpc", path = "/healthz" }
backends = [{ address = "127.0.0.1:9001", protocol = "h2" }]
"#,
        path: "clusters[0].health_check.path",
        reason: "does not apply to grpc checks",
    },
    Case {
        name: "quic listener without a tls table",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].tls",
        reason: "a quic listener needs a [listeners.tls] table with cert_path and key_path",
    },
    Case {
        name: "quic table on an h1 listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.quic]
max_idle_timeout_ms = 1000
"#,
        path: "listeners[0].quic",
        reason: "applies to quic listeners only; this is a h1 listener",
    },
    Case {
        name: "quic connection window below the stream window",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
[listeners.quic]
stream_receive_window = 65536
receive_window = 4096
"#,
        path: "listeners[0].quic.receive_window",
        reason: "4096 is below stream_receive_window (65536)",
    },
    Case {
        name: "quic reset cap of zero",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
[listeners.quic]
max_client_resets = 0
"#,
        path: "listeners[0].quic.max_client_resets",
        reason: "0 is outside 1..=1000000",
    },
    Case {
        name: "quic reset window out of range",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
[listeners.quic]
client_reset_window_ms = 600001
"#,
        path: "listeners[0].quic.client_reset_window_ms",
        reason: "600001 is outside 1..=600000",
    },
    Case {
        name: "quic idle timeout out of range",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
[listeners.quic]
max_idle_timeout_ms = 0
"#,
        path: "listeners[0].quic.max_idle_timeout_ms",
        reason: "0 is outside 1..=3600000",
    },
    Case {
        name: "tcp idle timeout on a quic listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
timeouts = { idle_ms = 1000 }
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
"#,
        path: "listeners[0].timeouts.idle_ms",
        reason: "use quic.max_idle_timeout_ms on a quic listener",
    },
    Case {
        name: "tls handshake timeout on a quic listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
handshake_timeout_ms = 2000
"#,
        path: "listeners[0].tls.handshake_timeout_ms",
        reason: "use quic.handshake_timeout_ms on a quic listener",
    },
    Case {
        name: "unknown key in the quic table",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
[listeners.quic]
max_streams = 10
"#,
        path: "listeners[0].quic.max_streams",
        reason: "unknown field `max_streams`",
    },
    Case {
        name: "h3 backend without TLS",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
backends = [{ address = "127.0.0.1:9001", protocol = "h3", tls = false }]
"#,
        path: "listeners[0].backends[0].tls",
        reason: "an h3 backend is always TLS (QUIC); remove tls = false",
    },
    Case {
        name: "tcp health check of h3 backends",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "q" }]
[[clusters]]
name = "q"
backends = [{ address = "127.0.0.1:9001", protocol = "h3", tls_verify = false }]
[clusters.health_check]
kind = "tcp"
"#,
        path: "clusters[0].health_check.kind",
        reason: "tcp checks cannot reach h3 backends (QUIC runs over UDP); use kind = \"http\"",
    },
    Case {
        name: "backend address without a port",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.backends]]
address = "10.0.0.1"
"#,
        path: "listeners[0].backends[0].address",
        reason: "\"10.0.0.1\" is not host:port",
    },
    Case {
        name: "backend name that does not resolve",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.backends]]
address = "nonexistent.invalid:80"
"#,
        path: "listeners[0].backends[0].address",
        reason: "\"nonexistent.invalid:80\" does not resolve",
    },
    Case {
        name: "listener address without a port",
        toml: r#"
[[listeners]]
address = "8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].address",
        reason: "\"8081\" is not host:port",
    },
    Case {
        name: "port out of range",
        toml: r#"
[[listeners]]
address = "127.0.0.1:70000"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].address",
        reason: "\"127.0.0.1:70000\": port 70000 is out of range (0-65535)",
    },
    Case {
        name: "route to an unknown cluster",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.routes]]
cluster = "nope"
"#,
        path: "listeners[0].routes[0].cluster",
        reason: "unknown cluster \"nope\"",
    },
    Case {
        name: "tcp listener naming an unknown cluster",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
cluster = "nope"
"#,
        path: "listeners[0].cluster",
        reason: "unknown cluster \"nope\"",
    },
    Case {
        name: "duplicate listener addresses",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[1].address",
        reason: "\"127.0.0.1:8081\" is also bound by listeners[0]",
    },
    Case {
        name: "wildcard listener overlapping a specific one",
        toml: r#"
[[listeners]]
address = "0.0.0.0:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[1].address",
        reason: "overlaps 0.0.0.0:8081 bound by listeners[0]",
    },
    Case {
        name: "two quic listeners on one address",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8443"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/cert.pem", key_path = "/nonexistent/key.pem" }
[[listeners]]
address = "127.0.0.1:8443"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/cert.pem", key_path = "/nonexistent/key.pem" }
"#,
        path: "listeners[1].address",
        reason: "\"127.0.0.1:8443\" is also bound by listeners[0] (UDP;",
    },
    Case {
        name: "alt_svc_max_age_seconds on an h1 listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
alt_svc_max_age_seconds = 60
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].alt_svc_max_age_seconds",
        reason: "applies to h1s listeners only; this is a h1 listener",
    },
    Case {
        name: "alt_svc_max_age_seconds on an h1s listener no quic listener backs",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8443"
protocol = "h1s"
alt_svc_max_age_seconds = 60
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/cert.pem", key_path = "/nonexistent/key.pem" }
[[listeners]]
address = "127.0.0.1:8444"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/cert.pem", key_path = "/nonexistent/key.pem" }
"#,
        path: "listeners[0].alt_svc_max_age_seconds",
        reason: "60 would advertise HTTP/3 on port 8443, but no quic listener serves 127.0.0.1:8443",
    },
    Case {
        name: "alt_svc_max_age_seconds above a year",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8443"
protocol = "h1s"
alt_svc_max_age_seconds = 40000000
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/cert.pem", key_path = "/nonexistent/key.pem" }
[[listeners]]
address = "127.0.0.1:8443"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001" }]
tls = { cert_path = "/nonexistent/cert.pem", key_path = "/nonexistent/key.pem" }
"#,
        path: "listeners[0].alt_svc_max_age_seconds",
        reason: "40000000 is outside 0..=31536000",
    },
    Case {
        name: "duplicate cluster names",
        toml: r#"
[[clusters]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]
[[clusters]]
name = "app"
backends = [{ address = "127.0.0.1:9002" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "app" }]
"#,
        path: "clusters[1].name",
        reason: "duplicate cluster name \"app\" (also clusters[0])",
    },
    Case {
        name: "cluster without backends",
        toml: r#"
[[clusters]]
name = "app"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "app" }]
"#,
        path: "clusters[0].backends",
        reason: "a cluster needs at least one backend",
    },
    Case {
        name: "listener with neither routes nor backends",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
"#,
        path: "listeners[0]",
        reason: "a listener needs routes, backends or (for tcp, udp and quic passthrough) a cluster; it has none",
    },
    Case {
        name: "listener with both routes and backends",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
backends = [{ address = "127.0.0.1:9001" }]
routes = [{ path_prefix = "/x/", direct = { status = 200 } }]
"#,
        path: "listeners[0]",
        reason: "routes, backends and cluster are alternatives; give exactly one",
    },
    Case {
        name: "route with both cluster and direct",
        toml: r#"
[[clusters]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "app", direct = { status = 200 } }]
"#,
        path: "listeners[0].routes[0]",
        reason: "exactly one of cluster, direct and redirect (or https_redirect); it has both",
    },
    Case {
        name: "route with neither cluster nor direct",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ path_prefix = "/x/" }]
"#,
        path: "listeners[0].routes[0]",
        reason: "exactly one of cluster, direct and redirect; it has neither",
    },
    Case {
        name: "host pattern with a port",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ host = "example.com:80", direct = { status = 200 } }]
"#,
        path: "listeners[0].routes[0].host",
        reason: "\"example.com:80\" is not a host name or a \"*.suffix\" wildcard",
    },
    Case {
        name: "wildcard in the middle of a host",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ host = "api.*.com", direct = { status = 200 } }]
"#,
        path: "listeners[0].routes[0].host",
        reason: "is not a host name or a \"*.suffix\" wildcard",
    },
    Case {
        name: "path_prefix not starting with a slash",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ path_prefix = "api/", direct = { status = 200 } }]
"#,
        path: "listeners[0].routes[0].path_prefix",
        reason: "\"api/\" must start with '/'",
    },
    Case {
        name: "path_exact not starting with a slash",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ path_exact = "health", direct = { status = 200 } }]
"#,
        path: "listeners[0].routes[0].path_exact",
        reason: "\"health\" must start with '/'",
    },
    Case {
        name: "route with both path_exact and path_prefix",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ path_exact = "/a", path_prefix = "/a", direct = { status = 200 } }]
"#,
        path: "listeners[0].routes[0]",
        reason: "a route has at most one of path_prefix and path_exact; it has both",
    },
    Case {
        name: "two routes with the same host and exact path",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ path_exact = "/a", direct = { status = 200 } }, { path_exact = "/a", direct = { status = 201 } }]
"#,
        path: "listeners[0].routes[1]",
        reason: "matches the same host and path_exact as routes[0]",
    },
    Case {
        name: "bad escaped_slashes token",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
escaped_slashes = "unescape"
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].escaped_slashes",
        reason: "unknown variant `unescape`, expected one of `keep`, `reject`, `decode`",
    },
    Case {
        name: "merge_slashes on a tcp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001" }]
merge_slashes = false
"#,
        path: "listeners[0].merge_slashes",
        reason: "applies to HTTP listeners only; this is a tcp listener",
    },
    Case {
        name: "escaped_slashes on a tls listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tls"
backends = [{ address = "127.0.0.1:9001" }]
escaped_slashes = "reject"
[listeners.tls]
cert_path = "/nonexistent/cert.pem"
key_path = "/nonexistent/key.pem"
"#,
        path: "listeners[0].escaped_slashes",
        reason: "applies to HTTP listeners only; this is a tls listener",
    },
    Case {
        name: "two routes with the same host and prefix",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ path_prefix = "/a/", direct = { status = 200 } }, { path_prefix = "/a/", direct = { status = 201 } }]
"#,
        path: "listeners[0].routes[1]",
        reason: "matches the same host and path_prefix as routes[0]",
    },
    Case {
        name: "direct status out of range",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 700 } }]
"#,
        path: "listeners[0].routes[0].direct.status",
        reason: "700 is outside 200..=599",
    },
    Case {
        name: "direct 204 with a body",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 204, body = "x" } }]
"#,
        path: "listeners[0].routes[0].direct.body",
        reason: "status 204 cannot carry a body",
    },
    Case {
        name: "wrong value type",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:9001"
weight = "heavy"
"#,
        path: "listeners[0].backends[0].weight",
        reason: "invalid type: string \"heavy\", expected u32",
    },
    Case {
        name: "tcp listener with routes",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].routes",
        reason: "applies to HTTP listeners only; this is a tcp listener",
    },
    Case {
        name: "tcp listener with an HTTP-only timeout",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001" }]
timeouts = { request_headers_ms = 1000 }
"#,
        path: "listeners[0].timeouts.request_headers_ms",
        reason: "applies to HTTP listeners only",
    },
    Case {
        name: "HTTP listener routing to a cluster of tcp backends",
        toml: r#"
[[clusters]]
name = "db"
backends = [{ address = "127.0.0.1:9001", protocol = "tcp" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "db" }]
"#,
        path: "listeners[0].routes[0].cluster",
        reason: "cluster \"db\" has tcp backends; an HTTP listener needs h1, h2 or h3 backends",
    },
    Case {
        name: "tcp listener naming a cluster of HTTP backends",
        toml: r#"
[[clusters]]
name = "web"
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
cluster = "web"
"#,
        path: "listeners[0].cluster",
        reason:
            "cluster \"web\" has HTTP backends; a tcp listener needs protocol = \"tcp\" backends",
    },
    Case {
        name: "HTTP listener with a cluster key",
        toml: r#"
[[clusters]]
name = "web"
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
cluster = "web"
"#,
        path: "listeners[0].cluster",
        reason: "HTTP listeners select clusters through routes",
    },
    Case {
        name: "zero listener idle timeout",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
timeouts = { idle_ms = 0 }
"#,
        path: "listeners[0].timeouts.idle_ms",
        reason: "must be greater than 0",
    },
    Case {
        name: "zero cluster connect timeout",
        toml: r#"
[[clusters]]
name = "app"
timeouts = { connect_ms = 0 }
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "app" }]
"#,
        path: "clusters[0].timeouts.connect_ms",
        reason: "must be greater than 0",
    },
    Case {
        name: "zero drain timeout",
        toml: r#"
[runtime]
drain_timeout_ms = 0
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "runtime.drain_timeout_ms",
        reason: "must be greater than 0",
    },
    Case {
        name: "more idle connections than open ones",
        toml: r#"
[[clusters]]
name = "app"
pool = { max_idle_per_backend = 10, max_connections_per_backend = 5 }
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "app" }]
"#,
        path: "clusters[0].pool.max_idle_per_backend",
        reason: "10 exceeds max_connections_per_backend (5)",
    },
    Case {
        name: "a header rule on a header the gateway manages",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
request_headers = { set = { host = "x" } }
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].request_headers.set.host",
        reason: "is a header the gateway manages (use host_rewrite)",
    },
    Case {
        name: "an unknown variable in a header value",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
response_headers = { add = { x-who = "%user%" } }
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].response_headers.add.x-who",
        reason: "unknown variable %user%",
    },
    Case {
        name: "a request ID setting on a listener that makes none",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
request_id = { enabled = false, trust_incoming = true }
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].request_id.trust_incoming",
        reason: "has no effect with request_id.enabled = false",
    },
    Case {
        name: "the backend variable in a request header",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "c", request_headers = { set = { x-b = "%backend%" } } }]
[[clusters]]
name = "c"
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].routes[0].request_headers.set.x-b",
        reason: "%backend% is known only once the response comes",
    },
    Case {
        name: "a redirect status that is not one",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ redirect = { status = 200 } }]
"#,
        path: "listeners[0].routes[0].redirect.status",
        reason: "200 is not a redirect status",
    },
    Case {
        name: "https_redirect on an h1s listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1s"
tls = { cert_path = "/nonexistent/a.pem", key_path = "/nonexistent/a.key" }
routes = [{ https_redirect = true }]
"#,
        path: "listeners[0].routes[0].https_redirect",
        reason: "applies to h1 listeners only",
    },
    Case {
        name: "a rewrite on a direct route",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 }, rewrite = { prefix = "/x/" } }]
"#,
        path: "listeners[0].routes[0].rewrite",
        reason: "applies to routes with a cluster only",
    },
    Case {
        name: "a rate limit without a rate",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
rate_limit = { burst = 5 }
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].rate_limit.requests_per_second",
        reason: "missing",
    },
    Case {
        name: "a rate limit on a tcp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
rate_limit = { requests_per_second = 5 }
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].rate_limit",
        reason: "applies to HTTP listeners only",
    },
    Case {
        name: "connection pool settings on a tcp cluster",
        toml: r#"
[[clusters]]
name = "db"
pool = { idle_timeout_ms = 1000 }
backends = [{ address = "127.0.0.1:9001", protocol = "tcp" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
cluster = "db"
"#,
        path: "clusters[0].pool.idle_timeout_ms",
        reason: "applies to HTTP backends only; tcp flows are not pooled",
    },
    Case {
        name: "client identity header on a tls listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tls"
tls = { cert_path = "/nonexistent/a.pem", key_path = "/nonexistent/a.key", client_ca_path = "/nonexistent/ca.pem", client_identity_header = "x-client" }
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].tls.client_identity_header",
        reason: "applies to h1s listeners only",
    },
    Case {
        name: "response header timeout on a tcp cluster",
        toml: r#"
[[clusters]]
name = "db"
timeouts = { response_headers_ms = 1000 }
backends = [{ address = "127.0.0.1:9001", protocol = "tcp" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
cluster = "db"
"#,
        path: "clusters[0].timeouts.response_headers_ms",
        reason: "applies to HTTP backends only",
    },
    Case {
        name: "header size limit out of range",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
max_header_bytes = 100
"#,
        path: "listeners[0].max_header_bytes",
        reason: "100 is outside 1024..=1048576",
    },
    Case {
        name: "HTTP/2 stream window below the protocol's initial window",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
h2_initial_stream_window = 1000
"#,
        path: "listeners[0].h2_initial_stream_window",
        reason: "1000 is outside 65535..=2147483647",
    },
    Case {
        name: "HTTP/2 connection window above RFC 9113's largest",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
h2_initial_connection_window = 2147483648
"#,
        path: "listeners[0].h2_initial_connection_window",
        reason: "2147483648 is outside 65535..=2147483647",
    },
    Case {
        name: "no HTTP/2 streams allowed",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
h2_max_concurrent_streams = 0
"#,
        path: "listeners[0].h2_max_concurrent_streams",
        reason: "must be greater than 0",
    },
    Case {
        name: "minimum data rate without grace",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
min_data_rate_grace_ms = 0
"#,
        path: "listeners[0].min_data_rate_grace_ms",
        reason: "must be greater than 0",
    },
    Case {
        name: "per-client request cap on a tcp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001" }]
max_requests_per_client = 10
"#,
        path: "listeners[0].max_requests_per_client",
        reason: "applies to HTTP listeners only",
    },
    Case {
        name: "no listeners",
        toml: "",
        path: "listeners",
        reason: "at least one listener or XDP virtual IP is required",
    },
    Case {
        name: "TOML syntax error",
        toml: "[[listeners]\naddress = 1\n",
        path: "",
        reason: "TOML syntax error at line 1, column 13: unclosed array table",
    },
    Case {
        name: "unknown policy lists the policies",
        toml: r#"
[[clusters]]
name = "c"
policy = "fastest"
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "c" }]
"#,
        path: "clusters[0].policy",
        reason: "unknown variant `fastest`, expected one of `round_robin`, `weighted_round_robin`, `random`, `weighted_random`, `p2c`, `maglev`, `ring_hash`, `ewma`, `least_connections`, `least_requests`, `session_affinity`",
    },
    Case {
        name: "hash_key on a policy that does not hash",
        toml: r#"
[[clusters]]
name = "c"
policy = "least_requests"
hash_key = "source_ip"
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "c" }]
"#,
        path: "clusters[0].hash_key",
        reason: "applies to policy maglev, ring_hash, session_affinity only",
    },
    Case {
        name: "http hash key on a tcp cluster",
        toml: r#"
[[clusters]]
name = "c"
policy = "maglev"
hash_key = "header:x-user"
backends = [{ address = "127.0.0.1:9001", protocol = "tcp" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
cluster = "c"
"#,
        path: "clusters[0].hash_key",
        reason: "needs HTTP requests",
    },
    Case {
        name: "unknown health check key",
        toml: r#"
[[clusters]]
name = "c"
health_check = { kind = "http", every_ms = 5 }
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "c" }]
"#,
        path: "clusters[0].health_check.every_ms",
        reason: "unknown field `every_ms`",
    },
    Case {
        name: "unknown retry condition",
        toml: r#"
[[clusters]]
name = "c"
retries = { on = ["connect-failure", "sometimes"] }
backends = [{ address = "127.0.0.1:9001" }]
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ cluster = "c" }]
"#,
        path: "clusters[0].retries.on[1]",
        reason: "\"sometimes\" is not a retry condition",
    },
    Case {
        name: "admin connection cap of zero",
        toml: r#"
[observability]
metrics_bind = "127.0.0.1:9090"
admin_max_connections = 0
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "observability.admin_max_connections",
        reason: "must be greater than 0",
    },
    Case {
        name: "admin header timeout of zero",
        toml: r#"
[observability]
metrics_bind = "127.0.0.1:9090"
admin_request_headers_timeout_ms = 0
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "observability.admin_request_headers_timeout_ms",
        reason: "must be greater than 0",
    },
    Case {
        name: "admin limits without an admin listener",
        toml: r#"
[observability]
admin_idle_timeout_ms = 1000
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [{ direct = { status = 200 } }]
"#,
        path: "observability.admin_idle_timeout_ms",
        reason: "off without observability.metrics_bind",
    },
    Case {
        name: "udp listener with tcp backends",
        toml: r#"
[[clusters]]
name = "dns"
[[clusters.backends]]
address = "127.0.0.1:5301"
protocol = "tcp"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
cluster = "dns"
"#,
        path: "listeners[0].cluster",
        reason: "cluster \"dns\" has tcp backends; a udp listener needs protocol = \"udp\" backends",
    },
    Case {
        name: "udp backends behind an HTTP listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
backends = [{ address = "127.0.0.1:5301", protocol = "udp" }]
"#,
        path: "listeners[0].backends",
        reason: "has udp backends; an HTTP listener needs h1, h2 or h3 backends",
    },
    Case {
        name: "udp check without its datagram",
        toml: r#"
[[clusters]]
name = "dns"
health_check = { kind = "udp" }
[[clusters.backends]]
address = "127.0.0.1:5301"
protocol = "udp"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
cluster = "dns"
"#,
        path: "clusters[0].health_check.payload",
        reason: "a udp check needs the datagram it sends",
    },
    Case {
        name: "tcp check of udp backends",
        toml: r#"
[[clusters]]
name = "dns"
health_check = { kind = "tcp" }
[[clusters.backends]]
address = "127.0.0.1:5301"
protocol = "udp"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
cluster = "dns"
"#,
        path: "clusters[0].health_check.kind",
        reason: "udp backends are checked with kind = \"udp\"",
    },
    Case {
        name: "odd hex payload",
        toml: r#"
[[clusters]]
name = "dns"
health_check = { payload_hex = "abc" }
[[clusters.backends]]
address = "127.0.0.1:5301"
protocol = "udp"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
cluster = "dns"
"#,
        path: "clusters[0].health_check.payload_hex",
        reason: "must be an even number of hexadecimal digits",
    },
    Case {
        name: "TLS on a passthrough quic listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
backends = [{ address = "127.0.0.1:4434", protocol = "quic" }]
tls = { cert_path = "c.pem", key_path = "k.pem" }
[listeners.quic]
mode = "passthrough"
"#,
        path: "listeners[0].tls",
        reason: "a passthrough quic listener decrypts nothing",
    },
    Case {
        name: "terminating transport setting on a passthrough listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
backends = [{ address = "127.0.0.1:4434", protocol = "quic" }]
[listeners.quic]
mode = "passthrough"
max_idle_timeout_ms = 5000
"#,
        path: "listeners[0].quic.max_idle_timeout_ms",
        reason: "applies to mode = \"terminate\" only",
    },
    Case {
        name: "quic backends behind a terminating quic listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
tls = { cert_path = "c.pem", key_path = "k.pem" }
backends = [{ address = "127.0.0.1:4434", protocol = "quic" }]
"#,
        path: "listeners[0].backends",
        reason: "has quic backends; an HTTP listener needs h1, h2 or h3 backends",
    },
    Case {
        name: "server ID routing with a backend that has no server ID",
        toml: r#"
[[clusters]]
name = "q"
[[clusters.backends]]
address = "127.0.0.1:4434"
protocol = "quic"
quic_server_id = 1
[[clusters.backends]]
address = "127.0.0.1:4435"
protocol = "quic"
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
cluster = "q"
[listeners.quic]
mode = "passthrough"
server_id = { offset = 1, length = 1 }
"#,
        path: "listeners[0].cluster",
        reason: "backend 127.0.0.1:4435 has no quic_server_id",
    },
    Case {
        name: "server ID too large for its field",
        toml: r#"
[[clusters]]
name = "q"
[[clusters.backends]]
address = "127.0.0.1:4434"
protocol = "quic"
quic_server_id = 256
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
cluster = "q"
[listeners.quic]
mode = "passthrough"
server_id = { offset = 1, length = 1 }
"#,
        path: "listeners[0].cluster",
        reason: "does not fit the listener's 1-byte server_id",
    },
    Case {
        name: "server ID nothing reads",
        toml: r#"
[[clusters]]
name = "q"
[[clusters.backends]]
address = "127.0.0.1:4434"
protocol = "quic"
quic_server_id = 3
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
cluster = "q"
[listeners.quic]
mode = "passthrough"
"#,
        path: "clusters[0].backends[0].quic_server_id",
        reason: "no passthrough quic listener with [listeners.quic] server_id routes to this cluster",
    },
    Case {
        name: "connection ID hash key on a tcp cluster",
        toml: r#"
[[clusters]]
name = "t"
policy = "maglev"
hash_key = "connection_id"
[[clusters.backends]]
address = "127.0.0.1:9001"
protocol = "tcp"
[[listeners]]
address = "127.0.0.1:9000"
protocol = "tcp"
cluster = "t"
"#,
        path: "clusters[0].hash_key",
        reason: "\"connection_id\" applies to clusters of quic backends (passthrough) only",
    },
    Case {
        name: "server ID field past the longest connection ID",
        toml: r#"
[[listeners]]
address = "127.0.0.1:4433"
protocol = "quic"
backends = [{ address = "127.0.0.1:4434", protocol = "quic" }]
[listeners.quic]
mode = "passthrough"
server_id = { offset = 15, length = 8 }
"#,
        path: "listeners[0].quic.server_id.offset",
        reason: "a QUIC connection ID has at most 20 bytes",
    },
    Case {
        name: "retries on a udp cluster",
        toml: r#"
[[clusters]]
name = "dns"
retries = { attempts = 2 }
[[clusters.backends]]
address = "127.0.0.1:5301"
protocol = "udp"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
cluster = "dns"
"#,
        path: "clusters[0].retries",
        reason: "applies to tcp and HTTP backends only",
    },
    Case {
        name: "TLS towards a udp backend",
        toml: r#"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
backends = [{ address = "127.0.0.1:5301", protocol = "udp", tls = true }]
"#,
        path: "listeners[0].backends[0].tls",
        reason: "a udp backend carries datagrams as they are; TLS does not apply",
    },
    Case {
        name: "HTTP key on a udp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
max_header_count = 10
backends = [{ address = "127.0.0.1:5301", protocol = "udp" }]
"#,
        path: "listeners[0].max_header_count",
        reason: "applies to HTTP listeners only; this is a udp listener",
    },
    Case {
        name: "udp and quic listeners on one address",
        toml: r#"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
backends = [{ address = "127.0.0.1:5301", protocol = "udp" }]
[[listeners]]
address = "127.0.0.1:5353"
protocol = "quic"
backends = [{ address = "127.0.0.1:9001", protocol = "h3" }]
[listeners.tls]
[[listeners.tls.certificates]]
cert_path = "c.pem"
key_path = "k.pem"
"#,
        path: "listeners[1].address",
        reason: "is also bound by listeners[0] (UDP;",
    },
    Case {
        name: "proxy_protocol without from",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
proxy_protocol = { accept = "v2" }
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].proxy_protocol.from",
        reason: "is required",
    },
    Case {
        name: "proxy_protocol block with host bits",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
proxy_protocol = { from = ["10.1.2.3/8"] }
routes = [{ direct = { status = 200 } }]
"#,
        path: "listeners[0].proxy_protocol.from[0]",
        reason: "has host bits set; the block is 10.0.0.0/8",
    },
    Case {
        name: "proxy_protocol on a udp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
proxy_protocol = { from = ["127.0.0.1"] }
backends = [{ address = "127.0.0.1:5301", protocol = "udp" }]
"#,
        path: "listeners[0].proxy_protocol",
        reason: "applies to tcp, tls, h1 and h1s listeners",
    },
    Case {
        name: "direct on a tcp listener",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
proxy_protocol = { from = ["127.0.0.1"], direct = true }
backends = [{ address = "127.0.0.1:9001" }]
"#,
        path: "listeners[0].proxy_protocol.direct",
        reason: "applies to tls, h1 and h1s listeners",
    },
    Case {
        name: "send_proxy_protocol to a udp backend",
        toml: r#"
[[listeners]]
address = "127.0.0.1:5353"
protocol = "udp"
backends = [{ address = "127.0.0.1:9001", protocol = "udp", send_proxy_protocol = "v2" }]
"#,
        path: "listeners[0].backends[0].send_proxy_protocol",
        reason: "applies to tcp, h1 and h2 backends only",
    },
    Case {
        name: "bad proxy_protocol version",
        toml: r#"
[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001", send_proxy_protocol = "v3" }]
"#,
        path: "listeners[0].backends[0].send_proxy_protocol",
        reason: "unknown variant `v3`",
    },
    Case {
        name: "XDP on an interface this host does not have",
        toml: r#"
[xdp]
interface = "eg-no-such0"
[[xdp.vips]]
address = "10.0.0.10:80"
transport = "tcp"
cluster = "web"
[[clusters]]
name = "web"
backends = [{ address = "10.1.0.1:80", protocol = "tcp" }]
"#,
        path: "xdp.interface",
        reason: "no network interface named \"eg-no-such0\" on this host",
    },
    Case {
        name: "IPv6 XDP virtual IP",
        toml: r#"
[xdp]
interface = "lo"
[[xdp.vips]]
address = "[2001:db8::10]:80"
transport = "tcp"
cluster = "web"
[[clusters]]
name = "web"
backends = [{ address = "10.1.0.1:80", protocol = "tcp" }]
"#,
        path: "xdp.vips[0].address",
        reason: "IPv6 virtual IPs are not supported on the XDP path",
    },
    Case {
        name: "XDP backend on another port than its VIP",
        toml: r#"
[xdp]
interface = "lo"
[[xdp.vips]]
address = "10.0.0.10:80"
transport = "tcp"
cluster = "web"
[[clusters]]
name = "web"
backends = [{ address = "10.1.0.1:8080", protocol = "tcp" }]
"#,
        path: "clusters[0].backends[0].address",
        reason: "direct server return: the backend answers on the VIP's port; give port 80",
    },
    Case {
        name: "policy other than maglev on an XDP cluster",
        toml: r#"
[xdp]
interface = "lo"
[[xdp.vips]]
address = "10.0.0.10:80"
transport = "tcp"
cluster = "web"
[[clusters]]
name = "web"
policy = "round_robin"
backends = [{ address = "10.1.0.1:80", protocol = "tcp" }]
"#,
        path: "clusters[0].policy",
        reason: "the XDP path balances with maglev in the kernel; policy \"round_robin\" is not available",
    },
];
/// Run `--check` on `toml`; returns (exit code, stdout, stderr).
fn check(toml: &str) -> (i32, String, String) {
    let path = temp_dir("reject").join("config.toml");
    std::fs::write(&path, toml).unwrap();
    run_cli(&["--check", path.to_str().unwrap()])
}

/// The indented error lines of a rejection report.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  "))
        .collect()
}

fn reports(stderr: &str, path: &str, reason: &str) -> bool {
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    error_lines(stderr)
        .iter()
        .any(|l| l.starts_with(&prefix) && l.contains(reason))
}

#[test]
fn each_malformed_config_is_rejected_with_key_path_and_reason() {
    assert!(CASES.len() >= 18);
    let mut failures = Vec::new();
    for case in CASES {
        let (code, stdout, stderr) = check(case.toml);
        if code != 1 || !stdout.is_empty() || !reports(&stderr, case.path, case.reason) {
            failures.push(format!(
                "{}: exit {code}, want 1 and `{}: ...{}...`\nstdout:\n{stdout}\nstderr:\n{stderr}",
                case.name, case.path, case.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn every_error_line_names_its_problem_alone() {
    for case in CASES {
        let (_, _, stderr) = check(case.toml);
        let lines = error_lines(&stderr);
        let header = stderr.lines().next().unwrap_or_default();
        assert!(
            header.ends_with(&format!("({} error(s)):", lines.len())),
            "{}: the header must count the error lines:\n{stderr}",
            case.name
        );
    }
}

#[test]
fn several_errors_are_all_reported() {
    let toml = r#"
[runtime]
drain_timeout_ms = 0

[[clusters]]
name = "app"
pool = { max_idle_per_backend = 10, max_connections_per_backend = 5 }
backends = [{ address = "10.0.0.1" }]

[[clusters]]
name = "empty"

[[listeners]]
address = "127.0.0.1:8081"
protocol = "h1"
routes = [
    { host = "bad host", direct = { status = 200 } },
    { path_prefix = "nope", cluster = "missing" },
]

[[listeners]]
address = "127.0.0.1:8081"
protocol = "tcp"
backends = [{ address = "127.0.0.1:9001", protocol = "h3", tls = false }]
"#;
    let expected = [
        "runtime.drain_timeout_ms: ",
        "clusters[0].backends[0].address: ",
        "clusters[0].pool.max_idle_per_backend: ",
        "clusters[1].backends: ",
        "listeners[0].routes[0].host: ",
        "listeners[0].routes[1].path_prefix: ",
        "listeners[0].routes[1].cluster: ",
        "listeners[1].backends[0].tls: ",
        "listeners[1].backends: ",
        "listeners[1].address: ",
    ];
    let (code, _, stderr) = check(toml);
    assert_eq!(code, 1, "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), expected.len(), "{stderr}");
    assert!(
        stderr
            .lines()
            .next()
            .unwrap()
            .ends_with(&format!("is invalid ({} error(s)):", expected.len())),
        "{stderr}"
    );
    for path in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(path)),
            "missing {path}:\n{stderr}"
        );
    }
}

#[test]
fn invalid_config_stops_the_gateway_before_anything_is_bound() {
    let valid_listener = free_addr();
    let broken_listener = free_addr();
    let toml = format!(
        r#"
[[listeners]]
address = "{valid_listener}"
protocol = "h1"
routes = [{{ direct = {{ status = 200 }} }}]

[[listeners]]
address = "{broken_listener}"
protocol = "h1"
backends = [{{ address = "10.0.0.1" }}]
"#
    );
    let path = temp_dir("reject-run").join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(binary())
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        for addr in [valid_listener, broken_listener] {
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_err(),
                "{addr} accepted a connection from a gateway with an invalid config"
            );
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gateway kept running on an invalid config");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        reports(
            &stderr,
            "listeners[1].backends[0].address",
            "is not host:port"
        ),
        "{stderr}"
    );
}
