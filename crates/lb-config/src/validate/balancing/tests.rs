//! Validation of the balancing and health keys.

use std::time::Duration;

use crate::defaults as d;
use crate::model::*;

const LISTENER: &str = "[[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"h1\"\nroutes = [{ cluster = \"c\" }]\n";
const TCP_LISTENER: &str =
    "[[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"tcp\"\ncluster = \"c\"\n";

fn http(keys: &str) -> String {
    format!("[[clusters]]\nname = \"c\"\n{keys}\n[[clusters.backends]]\naddress = \"127.0.0.1:9001\"\n[[clusters.backends]]\naddress = \"127.0.0.1:9002\"\n{LISTENER}")
}

fn tcp(keys: &str) -> String {
    format!("[[clusters]]\nname = \"c\"\n{keys}\n[[clusters.backends]]\naddress = \"127.0.0.1:9001\"\nprotocol = \"tcp\"\n{TCP_LISTENER}")
}

fn cluster(text: &str) -> Cluster {
    match crate::parse(text) {
        Ok(c) => c.cluster("c").unwrap().clone(),
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

fn rejects(text: &str, path: &str, reason: &str) {
    let all = errors(text);
    assert!(
        all.iter().any(|(p, r)| p == path && r.contains(reason)),
        "expected {path}: ...{reason}..., got {all:?}"
    );
}

#[test]
fn defaults_keep_todays_behaviour() {
    let c = cluster(&http(""));
    assert_eq!(c.policy, Policy::RoundRobin);
    assert_eq!(c.hash_key, None);
    assert_eq!(c.panic_threshold_percent, d::PANIC_THRESHOLD_PERCENT);
    assert_eq!(c.health_check, None);
    assert_eq!(c.outlier_detection, None);
    assert_eq!(c.circuit_breaker, CircuitBreaker::default());
    assert_eq!(
        c.retries,
        Retries {
            attempts: 1,
            on: vec![RetryOn::ConnectFailure, RetryOn::RefusedStream],
            per_try_timeout: None,
            budget_percent: d::RETRY_BUDGET_PERCENT,
        }
    );
    assert_eq!(cluster(&tcp("")).retries.on, vec![RetryOn::ConnectFailure]);
}

#[test]
fn every_policy_token_is_accepted() {
    for policy in Policy::ALL {
        let c = cluster(&http(&format!("policy = \"{}\"", policy.as_str())));
        assert_eq!(c.policy, policy);
        let expected = policy.hashes().then_some(HashKey::SourceIp);
        assert_eq!(c.hash_key, expected, "{policy:?}");
    }
}

#[test]
fn hash_keys_parse() {
    for (token, key) in [
        ("source_ip", HashKey::SourceIp),
        ("header:X-User", HashKey::Header("x-user".into())),
        ("cookie:sid", HashKey::Cookie("sid".into())),
        ("path", HashKey::Path),
        ("query:user", HashKey::Query("user".into())),
    ] {
        let c = cluster(&http(&format!(
            "policy = \"maglev\"\nhash_key = \"{token}\""
        )));
        assert_eq!(c.hash_key, Some(key));
    }
    let c = cluster(&tcp(
        "policy = \"ring_hash\"\nhash_key = \"source_ip_port\"",
    ));
    assert_eq!(c.hash_key, Some(HashKey::SourceIpPort));
}

#[test]
fn health_check_defaults_follow_the_backend_kind() {
    let c = cluster(&http("health_check = { path = \"/healthz\" }"));
    let check = c.health_check.unwrap();
    assert_eq!(
        check.kind,
        HealthCheckKind::Http {
            path: "/healthz".into(),
            host: None,
            expected_status: (200, 399),
        }
    );
    assert_eq!(check.interval, Duration::from_millis(d::HEALTH_INTERVAL_MS));
    assert_eq!(check.timeout, Duration::from_millis(d::HEALTH_TIMEOUT_MS));
    assert_eq!(check.healthy_threshold, d::HEALTH_HEALTHY_THRESHOLD);
    assert_eq!(check.unhealthy_threshold, d::HEALTH_UNHEALTHY_THRESHOLD);
    let t = cluster(&tcp("health_check = {}"));
    assert_eq!(t.health_check.unwrap().kind, HealthCheckKind::Tcp);
}

#[test]
fn outlier_detection_and_circuit_breaker_apply() {
    let c = cluster(&http(
        "outlier_detection = { consecutive_failures = 2, base_ejection_ms = 100 }\ncircuit_breaker = { max_requests = 7 }",
    ));
    let od = c.outlier_detection.unwrap();
    assert_eq!(od.consecutive_failures, 2);
    assert_eq!(od.base_ejection, Duration::from_millis(100));
    assert_eq!(
        od.max_ejection,
        Duration::from_millis(d::OUTLIER_MAX_EJECTION_MS)
    );
    assert_eq!(od.max_ejection_percent, d::OUTLIER_MAX_EJECTION_PERCENT);
    assert_eq!(c.circuit_breaker.max_requests, Some(7));
    assert_eq!(c.circuit_breaker.max_connections, None);
}

#[test]
fn route_retries_inherit_what_they_leave_out() {
    let text = "[[clusters]]\nname = \"c\"\nretries = { attempts = 3, on = [\"503\"], budget_percent = 50 }\n[[clusters.backends]]\naddress = \"127.0.0.1:9001\"\n\
         [[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"h1\"\n[[listeners.routes]]\ncluster = \"c\"\nretries = { attempts = 0 }\n";
    let config = crate::parse(text).unwrap();
    let ListenerKind::Http(h) = &config.listeners[0].kind else {
        panic!("http listener expected");
    };
    let r = h.routes[0].retries.clone().unwrap();
    assert_eq!(r.attempts, 0);
    assert_eq!(r.on, vec![RetryOn::Status(503)]);
    assert_eq!(r.budget_percent, 50);
}

#[test]
fn misplaced_and_malformed_keys_are_reported_with_their_paths() {
    let p = "clusters[0]";
    rejects(
        &http("hash_key = \"path\""),
        &format!("{p}.hash_key"),
        "applies to policy maglev, ring_hash, session_affinity only",
    );
    rejects(
        &http("policy = \"maglev\"\nhash_key = \"ip\""),
        &format!("{p}.hash_key"),
        "is not a hash key",
    );
    rejects(
        &http("policy = \"maglev\"\nhash_key = \"source_ip_port\""),
        &format!("{p}.hash_key"),
        "tcp, udp or quic backends only",
    );
    rejects(
        &tcp("policy = \"maglev\"\nhash_key = \"header:x\""),
        &format!("{p}.hash_key"),
        "needs HTTP requests",
    );
    rejects(
        &http("policy = \"maglev\"\nring_size = 10"),
        &format!("{p}.ring_size"),
        "applies to policy ring_hash only",
    );
    rejects(
        &http("policy = \"ring_hash\"\nring_size = 0"),
        &format!("{p}.ring_size"),
        "points per unit of weight",
    );
    rejects(
        &http("policy = \"maglev\"\nmaglev_table_size = 65536"),
        &format!("{p}.maglev_table_size"),
        "must be a prime",
    );
    rejects(
        &http("policy = \"session_affinity\"\nhash_key = \"cookie:s\"\ncookie_secret = \"short\""),
        &format!("{p}.cookie_secret"),
        "at least 16 bytes",
    );
    rejects(
        &http("policy = \"maglev\"\ncookie_secret = \"0123456789abcdef\""),
        &format!("{p}.cookie_secret"),
        "hash_key = \"cookie:NAME\" only",
    );
    rejects(
        &http("panic_threshold_percent = 101"),
        &format!("{p}.panic_threshold_percent"),
        "outside 0..=100",
    );
    rejects(
        &tcp("health_check = { kind = \"http\" }"),
        &format!("{p}.health_check.kind"),
        "need HTTP backends",
    );
    rejects(
        &tcp("health_check = { path = \"/x\" }"),
        &format!("{p}.health_check.path"),
        "http checks only",
    );
    rejects(
        &http("health_check = { expected_status = \"600\" }"),
        &format!("{p}.health_check.expected_status"),
        "within 100-599",
    );
    rejects(
        &http("health_check = { path = \"healthz\" }"),
        &format!("{p}.health_check.path"),
        "must start with '/'",
    );
    rejects(
        &http("health_check = { unhealthy_threshold = 0 }"),
        &format!("{p}.health_check.unhealthy_threshold"),
        "greater than 0",
    );
    rejects(
        &http("health_check = { interval_ms = 0 }"),
        &format!("{p}.health_check.interval_ms"),
        "greater than 0",
    );
    rejects(
        &http("outlier_detection = { base_ejection_ms = 500, max_ejection_ms = 100 }"),
        &format!("{p}.outlier_detection.max_ejection_ms"),
        "below base_ejection_ms",
    );
    rejects(
        &http("outlier_detection = { max_ejection_percent = 200 }"),
        &format!("{p}.outlier_detection.max_ejection_percent"),
        "outside 0..=100",
    );
    rejects(
        &http("circuit_breaker = { max_requests = 0 }"),
        &format!("{p}.circuit_breaker.max_requests"),
        "greater than 0",
    );
    rejects(
        &tcp("circuit_breaker = { max_pending_requests = 3 }"),
        &format!("{p}.circuit_breaker.max_pending_requests"),
        "HTTP backends only",
    );
    rejects(
        &http("retries = { on = [\"connect-failure\", \"always\"] }"),
        &format!("{p}.retries.on[1]"),
        "is not a retry condition",
    );
    rejects(
        &http("retries = { on = [\"404\"] }"),
        &format!("{p}.retries.on[0]"),
        "is not a retry condition",
    );
    rejects(
        &tcp("retries = { on = [\"503\"] }"),
        &format!("{p}.retries.on[0]"),
        "HTTP backends only",
    );
    rejects(
        &tcp("retries = { per_try_timeout_ms = 100 }"),
        &format!("{p}.retries.per_try_timeout_ms"),
        "HTTP backends only",
    );
    rejects(
        &http("retries = { attempts = 11 }"),
        &format!("{p}.retries.attempts"),
        "outside 0..=10",
    );
    rejects(
        &http("retries = { budget_percent = 101 }"),
        &format!("{p}.retries.budget_percent"),
        "outside 0..=100",
    );
    let direct = "[[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"h1\"\n[[listeners.routes]]\ndirect = { status = 200 }\nretries = { attempts = 1 }\n";
    rejects(
        direct,
        "listeners[0].routes[0].retries",
        "routes with a cluster only",
    );
}

fn udp(keys: &str) -> String {
    format!("[[clusters]]\nname = \"c\"\n{keys}\n[[clusters.backends]]\naddress = \"127.0.0.1:9001\"\nprotocol = \"udp\"\n[[listeners]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"udp\"\ncluster = \"c\"\n")
}

#[test]
fn udp_clusters_check_with_a_datagram_given_as_text_or_hex() {
    let text = cluster(&udp("health_check = { payload = \"ping\" }"));
    let check = text.health_check.unwrap();
    assert_eq!(
        check.kind,
        HealthCheckKind::Udp {
            payload: b"ping".to_vec()
        }
    );
    let hex = cluster(&udp(
        "health_check = { kind = \"udp\", payload_hex = \"00Ff10\" }",
    ));
    assert_eq!(
        hex.health_check.unwrap().kind,
        HealthCheckKind::Udp {
            payload: vec![0x00, 0xff, 0x10]
        }
    );
    assert_eq!(cluster(&udp("")).hash_key, None);
    assert_eq!(
        cluster(&udp("policy = \"maglev\"\nhash_key = \"source_ip_port\"")).hash_key,
        Some(HashKey::SourceIpPort)
    );
    rejects(
        &udp("health_check = { payload = \"a\", payload_hex = \"61\" }"),
        "clusters[0].health_check.payload",
        "alternatives",
    );
    rejects(
        &udp("policy = \"maglev\"\nhash_key = \"path\""),
        "clusters[0].hash_key",
        "a cluster of udp backends hashes",
    );
    rejects(
        &http("health_check = { kind = \"udp\", payload = \"x\" }"),
        "clusters[0].health_check.kind",
        "udp checks need udp backends",
    );
}
