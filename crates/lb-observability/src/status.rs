//! What the status page and `/api/v1/status` show, and the page itself:
//! one self-contained HTML document (no scripts, no external assets) that
//! refreshes itself.

use std::fmt::Write;

use serde::Serialize;

/// The whole status.
#[derive(Debug, Serialize, Clone, Default)]
pub struct Status {
    /// Build version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// `/readyz` state.
    pub ready: bool,
    /// Drain in progress.
    pub draining: bool,
    /// Configuration state.
    pub config: ConfigStatus,
    /// Listeners.
    pub listeners: Vec<ListenerStatus>,
    /// Clusters.
    pub clusters: Vec<ClusterStatus>,
}

/// Configuration generation and the last reload.
#[derive(Debug, Serialize, Clone, Default)]
pub struct ConfigStatus {
    /// Config file path.
    pub path: String,
    /// Generation, 1 at start, +1 per applied reload.
    pub generation: u64,
    /// Result of the last reload, if any.
    pub last_reload: Option<ReloadStatus>,
}

/// One reload attempt.
#[derive(Debug, Serialize, Clone, Default)]
pub struct ReloadStatus {
    /// When (RFC 3339).
    pub time: String,
    /// `applied` or `rejected`.
    pub result: String,
    /// The diff or the errors.
    pub detail: Vec<String>,
}

/// A listener.
#[derive(Debug, Serialize, Clone, Default)]
pub struct ListenerStatus {
    /// Bound address.
    pub address: String,
    /// Protocol token.
    pub protocol: String,
    /// Open client connections.
    pub connections_open: u64,
    /// Routes, rendered as `host/prefix -> target`.
    pub routes: Vec<String>,
}

/// A cluster.
#[derive(Debug, Serialize, Clone, Default)]
pub struct ClusterStatus {
    /// Name.
    pub name: String,
    /// Policy token.
    pub policy: String,
    /// Members.
    pub backends: Vec<BackendStatus>,
}

/// A backend.
#[derive(Debug, Serialize, Clone, Default)]
pub struct BackendStatus {
    /// Address as configured.
    pub address: String,
    /// Protocol token.
    pub protocol: String,
    /// Weight.
    pub weight: u32,
    /// `healthy`, `unhealthy`, `ejected`, `drained`.
    pub state: String,
    /// Requests in flight.
    pub in_flight: u64,
    /// Open upstream connections.
    pub open_connections: u64,
    /// Requests sent, ever.
    pub requests_total: u64,
    /// Failed requests, ever.
    pub errors_total: u64,
    /// Requests per second over the last interval.
    pub request_rate: f64,
    /// Errors per second over the last interval.
    pub error_rate: f64,
    /// Smoothed time to first byte, milliseconds.
    pub latency_ms: Option<f64>,
    /// Times ejected by outlier detection.
    pub ejections: u64,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:1.5em}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#eee}td.n{text-align:right}.healthy{background:#d9f2d9}.unhealthy{background:#f7d4d4}\
.ejected{background:#fbe3c2}.drained{background:#e6e6e6}.meta{color:#555}";

/// Render the status page; it reloads itself every `refresh_seconds`.
pub fn render_html(status: &Status, refresh_seconds: u32) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_seconds}\">\
         <title>expressgateway status</title><style>{STYLE}</style></head><body>\
         <h1>expressgateway {}</h1><p class=\"meta\">up {} s · {} · config {} generation {}",
        esc(&status.version),
        status.uptime_seconds,
        if status.draining {
            "draining"
        } else if status.ready {
            "ready"
        } else {
            "starting"
        },
        esc(&status.config.path),
        status.config.generation
    );
    if let Some(r) = &status.config.last_reload {
        let _ = write!(h, " · last reload {} at {}", esc(&r.result), esc(&r.time));
    }
    h.push_str("</p><h2>Listeners</h2><table id=\"listeners\"><tr><th>address</th><th>protocol</th><th>open connections</th><th>routes</th></tr>");
    for l in &status.listeners {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&l.address),
            esc(&l.protocol),
            l.connections_open,
            l.routes
                .iter()
                .map(|r| esc(r))
                .collect::<Vec<_>>()
                .join("<br>")
        );
    }
    h.push_str("</table>");
    for c in &status.clusters {
        let _ = write!(
            h,
            "<h2>Cluster {} <span class=\"meta\">({})</span></h2><table class=\"cluster\">\
             <tr><th>backend</th><th>protocol</th><th>state</th><th>weight</th><th>in flight</th>\
             <th>connections</th><th>requests</th><th>errors</th><th>req/s</th><th>err/s</th>\
             <th>latency ms</th><th>ejections</th></tr>",
            esc(&c.name),
            esc(&c.policy)
        );
        for b in &c.backends {
            let _ =
                write!(
                h,
                "<tr class=\"backend {state}\" data-address=\"{addr}\"><td>{addr}</td><td>{}</td>\
                 <td class=\"state\">{state}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{:.1}</td><td class=\"n\">{:.1}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                esc(&b.protocol),
                b.weight,
                b.in_flight,
                b.open_connections,
                b.requests_total,
                b.errors_total,
                b.request_rate,
                b.error_rate,
                b.latency_ms.map(|l| format!("{l:.2}")).unwrap_or_else(|| "–".into()),
                b.ejections,
                state = esc(&b.state),
                addr = esc(&b.address),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}
