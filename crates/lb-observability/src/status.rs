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
    /// The XDP fast path; `null` when `[xdp]` is not configured.
    pub xdp: Option<XdpStatus>,
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

/// The XDP fast path: where its program is attached and what it counted.
#[derive(Debug, Serialize, Clone, Default)]
pub struct XdpStatus {
    /// The interface the program is attached to.
    pub interface: String,
    /// `native` or `generic`.
    pub mode: String,
    /// Why the kernel's counters could not be read, if they could not;
    /// the counts below are then absent.
    pub error: Option<String>,
    /// Virtual IPs.
    pub vips: Vec<XdpVipStatus>,
    /// Packets for a virtual IP the program dropped, by reason.
    pub drops: Vec<XdpReasonStatus>,
    /// Packets the program passed to the kernel, by reason.
    pub passes: Vec<XdpReasonStatus>,
}

/// A virtual IP on the XDP path.
#[derive(Debug, Serialize, Clone, Default)]
pub struct XdpVipStatus {
    /// `ip:port`.
    pub address: String,
    /// `tcp` or `udp`.
    pub transport: String,
    /// The cluster whose backends serve it (empty when it is no longer
    /// configured but still counted).
    pub cluster: String,
    /// What the program sent to each backend.
    pub backends: Vec<XdpBackendStatus>,
}

/// What the XDP program sent to one backend of a virtual IP.
#[derive(Debug, Serialize, Clone, Default)]
pub struct XdpBackendStatus {
    /// `ip:port`, the port being the virtual IP's.
    pub address: String,
    /// Packets.
    pub packets: u64,
    /// Bytes, as the packets arrived (before encapsulation).
    pub bytes: u64,
}

/// Packets the XDP program dropped or passed for one reason.
#[derive(Debug, Serialize, Clone, Default)]
pub struct XdpReasonStatus {
    /// The reason token, as in the `reason` label of the metrics.
    pub reason: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
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
    if let Some(x) = &status.xdp {
        render_xdp(&mut h, x);
    }
    h.push_str("</body></html>\n");
    h
}

/// The XDP section: the packets and bytes sent to each backend of each
/// virtual IP, then the drops and passes by reason.
fn render_xdp(h: &mut String, x: &XdpStatus) {
    let _ = write!(
        h,
        "<h2>XDP <span class=\"meta\">({}, {})</span></h2>",
        esc(&x.interface),
        esc(&x.mode)
    );
    if let Some(e) = &x.error {
        let _ = write!(h, "<p class=\"meta\">counters not read: {}</p>", esc(e));
    }
    h.push_str(
        "<table id=\"xdp\"><tr><th>virtual IP</th><th>transport</th><th>cluster</th>\
         <th>backend</th><th>packets</th><th>bytes</th></tr>",
    );
    for v in &x.vips {
        let vip = format!(
            "<td>{}</td><td>{}</td><td>{}</td>",
            esc(&v.address),
            esc(&v.transport),
            esc(&v.cluster)
        );
        if v.backends.is_empty() {
            let _ = write!(
                h,
                "<tr class=\"vip\">{vip}<td>–</td><td class=\"n\">–</td><td class=\"n\">–</td></tr>"
            );
        }
        for b in &v.backends {
            let _ = write!(
                h,
                "<tr class=\"vip\" data-address=\"{addr}\">{vip}<td>{addr}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                b.packets,
                b.bytes,
                addr = esc(&b.address),
            );
        }
    }
    h.push_str("</table>");
    if x.drops.is_empty() && x.passes.is_empty() {
        return;
    }
    h.push_str(
        "<table id=\"xdp-reasons\"><tr><th>reason</th><th>action</th><th>packets</th>\
         <th>bytes</th></tr>",
    );
    for (action, reasons) in [("dropped", &x.drops), ("passed", &x.passes)] {
        for r in reasons {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{action}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                esc(&r.reason),
                r.packets,
                r.bytes
            );
        }
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_xdp() -> Status {
        Status {
            version: "1.0".into(),
            xdp: Some(XdpStatus {
                interface: "eth<0>".into(),
                mode: "generic".into(),
                error: None,
                vips: vec![
                    XdpVipStatus {
                        address: "10.0.0.1:53".into(),
                        transport: "udp".into(),
                        cluster: "dns".into(),
                        backends: vec![
                            XdpBackendStatus {
                                address: "10.0.1.2:53".into(),
                                packets: 12,
                                bytes: 1704,
                            },
                            XdpBackendStatus {
                                address: "10.0.2.2:53".into(),
                                packets: 0,
                                bytes: 0,
                            },
                        ],
                    },
                    XdpVipStatus {
                        address: "10.0.0.1:80".into(),
                        transport: "tcp".into(),
                        cluster: "web".into(),
                        backends: Vec::new(),
                    },
                ],
                drops: vec![XdpReasonStatus {
                    reason: "no_backend".into(),
                    packets: 3,
                    bytes: 180,
                }],
                passes: vec![XdpReasonStatus {
                    reason: "not_vip".into(),
                    packets: 40,
                    bytes: 4000,
                }],
            }),
            ..Status::default()
        }
    }

    #[test]
    fn the_xdp_section_shows_only_when_configured() {
        let without = Status::default();
        let html = render_html(&without, 2);
        assert!(!html.contains("id=\"xdp\""), "{html}");
        let json = serde_json::to_value(&without).unwrap();
        assert!(json["xdp"].is_null(), "{json}");

        let html = render_html(&with_xdp(), 2);
        assert!(
            html.contains("<h2>XDP <span class=\"meta\">(eth&lt;0&gt;, generic)</span></h2>"),
            "{html}"
        );
        assert!(html.contains("<table id=\"xdp\">"), "{html}");
        assert!(
            html.contains(
                "<tr class=\"vip\" data-address=\"10.0.1.2:53\"><td>10.0.0.1:53</td><td>udp</td>\
                 <td>dns</td><td>10.0.1.2:53</td><td class=\"n\">12</td><td class=\"n\">1704</td></tr>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<td>10.0.0.1:80</td><td>tcp</td><td>web</td><td>–</td>"),
            "{html}"
        );
        assert!(
            html.contains("<tr><td>no_backend</td><td>dropped</td><td class=\"n\">3</td>"),
            "{html}"
        );
        assert!(
            html.contains("<tr><td>not_vip</td><td>passed</td><td class=\"n\">40</td>"),
            "{html}"
        );
        assert!(!html.contains("counters not read"), "{html}");
    }

    #[test]
    fn the_xdp_fields_are_in_the_json() {
        let json = serde_json::to_value(with_xdp()).unwrap();
        let x = &json["xdp"];
        assert_eq!(x["interface"], "eth<0>");
        assert_eq!(x["mode"], "generic");
        assert!(x["error"].is_null(), "{x}");
        assert_eq!(x["vips"][0]["address"], "10.0.0.1:53");
        assert_eq!(x["vips"][0]["transport"], "udp");
        assert_eq!(x["vips"][0]["cluster"], "dns");
        assert_eq!(x["vips"][0]["backends"][0]["address"], "10.0.1.2:53");
        assert_eq!(x["vips"][0]["backends"][0]["packets"], 12);
        assert_eq!(x["vips"][0]["backends"][0]["bytes"], 1704);
        assert_eq!(x["vips"][1]["backends"].as_array().map(Vec::len), Some(0));
        assert_eq!(x["drops"][0]["reason"], "no_backend");
        assert_eq!(x["drops"][0]["packets"], 3);
        assert_eq!(x["passes"][0]["reason"], "not_vip");
        assert_eq!(x["passes"][0]["bytes"], 4000);
    }

    #[test]
    fn unread_xdp_counters_leave_the_section_without_counts() {
        let status = Status {
            xdp: Some(XdpStatus {
                interface: "g0".into(),
                mode: "native".into(),
                error: Some("map <flow_stats>: gone".into()),
                ..XdpStatus::default()
            }),
            ..Status::default()
        };
        let html = render_html(&status, 2);
        assert!(html.contains("<table id=\"xdp\">"), "{html}");
        assert!(
            html.contains("counters not read: map &lt;flow_stats&gt;: gone"),
            "{html}"
        );
        assert!(!html.contains("id=\"xdp-reasons\""), "{html}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["xdp"]["error"], "map <flow_stats>: gone");
    }
}
