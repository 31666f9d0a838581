//! The one-screen summary `--check` prints.

use std::fmt::Write;

use lb_config::{Config, HostMatch, ListenerKind, RouteAction};

/// Listeners, routes and clusters of a valid configuration.
pub fn render(path: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "configuration {path} is valid");
    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let _ = writeln!(out, "  {} {}", l.address, l.protocol.as_str());
        match &l.kind {
            ListenerKind::Tcp { cluster } => {
                let _ = writeln!(out, "    -> cluster {cluster}");
            }
            ListenerKind::Http(h) => {
                for r in &h.routes {
                    let host = match &r.host {
                        HostMatch::Any => "*".to_owned(),
                        HostMatch::Exact(h) => h.clone(),
                        HostMatch::Wildcard(s) => format!("*{s}"),
                    };
                    let target = match &r.action {
                        RouteAction::Cluster(c) => format!("cluster {c}"),
                        RouteAction::Direct(d) => format!("direct {}", d.status),
                    };
                    let _ = writeln!(out, "    {host}{} -> {target}", r.path_prefix);
                }
            }
        }
    }
    let _ = writeln!(out, "clusters:");
    for c in &config.clusters {
        let _ = writeln!(out, "  {} ({})", c.name, c.policy.as_str());
        for b in &c.backends {
            let _ = writeln!(
                out,
                "    {} {} weight {}",
                b.address,
                b.protocol.as_str(),
                b.weight
            );
        }
    }
    out
}
