//! The one-screen summary `--check` prints.

use std::fmt::Write;

use lb_config::{BackendTls, Config, HostMatch, ListenerKind, ListenerTls, Route};

/// Listeners, routes and clusters of a valid configuration.
pub fn render(path: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "configuration {path} is valid");
    let _ = writeln!(out, "listeners:");
    for l in &config.listeners {
        let tls = l.tls.as_ref().map(listener_tls).unwrap_or_default();
        let _ = writeln!(out, "  {} {}{tls}", l.address, l.protocol.as_str());
        if let Some(alt_svc) = l.alt_svc {
            let _ = writeln!(
                out,
                "    advertises HTTP/3: Alt-Svc {}",
                alt_svc.header_value()
            );
        }
        match &l.kind {
            ListenerKind::Tcp { cluster } => {
                let _ = writeln!(out, "    -> cluster {cluster}");
            }
            ListenerKind::Udp { cluster } => {
                let _ = writeln!(
                    out,
                    "    -> cluster {cluster}, sessions idle after {} ms, at most {}",
                    l.idle_timeout.as_millis(),
                    l.max_connections
                );
            }
            ListenerKind::Passthrough { cluster, server_id } => {
                let _ = writeln!(
                    out,
                    "    -> cluster {cluster}, QUIC passed through by connection ID{}, sessions idle after {} ms, at most {}",
                    server_id.map_or(String::new(), |f| format!(
                        " and by the {}-byte server ID at byte {}",
                        f.length, f.offset
                    )),
                    l.idle_timeout.as_millis(),
                    l.max_connections
                );
            }
            ListenerKind::Http(h) => {
                for r in &h.routes {
                    let _ = writeln!(out, "    {}", route_line(r));
                }
            }
        }
    }
    if let Some(xdp) = &config.xdp {
        let _ = writeln!(
            out,
            "xdp: on {} ({} mode), balanced in the kernel, backends reached by IP-in-IP",
            xdp.interface,
            xdp.mode.as_str()
        );
        for vip in &xdp.vips {
            let _ = writeln!(
                out,
                "  {} {} -> cluster {}",
                vip.address,
                vip.transport.as_str(),
                vip.cluster
            );
        }
    }
    let _ = writeln!(out, "clusters:");
    for c in &config.clusters {
        let _ = writeln!(out, "  {} ({})", c.name, c.policy.as_str());
        for b in &c.backends {
            let tls = b.tls.as_ref().map(backend_tls).unwrap_or_default();
            let _ = writeln!(
                out,
                "    {} {} weight {}{tls}",
                b.address,
                b.protocol.as_str(),
                b.weight
            );
        }
    }
    out
}

/// A route as `--check` and the status page show it: host (`*` for any),
/// path match (`=` before an exact path) and where it leads.
pub fn route_line(r: &Route) -> String {
    let host = match &r.host {
        HostMatch::Any => "*".to_owned(),
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Wildcard(s) => format!("*{s}"),
    };
    format!("{host}{} -> {}", r.path, r.action.describe())
}

fn listener_tls(tls: &ListenerTls) -> String {
    let client = match &tls.client_auth {
        Some(auth) if auth.required => ", client certificate required",
        Some(_) => ", client certificate optional",
        None => "",
    };
    let strict = if tls.sni_strict { ", sni_strict" } else { "" };
    format!(
        " ({} certificate(s){strict}{client})",
        tls.certificates.len()
    )
}

fn backend_tls(tls: &BackendTls) -> String {
    let verify = if tls.verify { "" } else { ", NOT verified" };
    format!(" over TLS to {}{verify}", tls.server_name)
}
