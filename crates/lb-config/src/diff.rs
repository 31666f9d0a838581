//! What a reload changes: each difference between two validated
//! configurations as one log line, and which differences cannot be applied
//! to a running process.

use crate::model::{Backend, Cluster, Config, Listener, ListenerId, Xdp};

/// Differences between the running and the new configuration.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// One line per difference that will be applied.
    pub changes: Vec<String>,
    /// One line per difference that needs a restart (not applied).
    pub restart_required: Vec<String>,
    /// Listeners to bind.
    pub listeners_added: Vec<ListenerId>,
    /// Listeners to close and drain.
    pub listeners_removed: Vec<ListenerId>,
    /// Listeners whose change needs a restart: they keep running exactly
    /// as configured before.
    pub listeners_kept_as_is: Vec<ListenerId>,
}

impl ConfigDiff {
    /// Whether the two configurations are the same.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.restart_required.is_empty()
    }
}

/// Compare `old` (running) with `new`.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff::default();
    listeners(old, new, &mut d);
    clusters(old, new, &mut d);
    xdp(old.xdp.as_ref(), new.xdp.as_ref(), &mut d);
    if old.runtime.worker_threads != new.runtime.worker_threads {
        d.restart_required.push(format!(
            "runtime.worker_threads {} -> {} needs a restart",
            old.runtime.worker_threads, new.runtime.worker_threads
        ));
    }
    if old.observability.metrics_bind != new.observability.metrics_bind {
        d.restart_required.push(format!(
            "observability.metrics_bind {:?} -> {:?} needs a restart",
            old.observability.metrics_bind, new.observability.metrics_bind
        ));
    }
    if old.observability.api_token_sha256 != new.observability.api_token_sha256 {
        d.changes.push("admin.api_token_hash changed".to_owned());
    }
    if old.observability.admin != new.observability.admin {
        d.changes
            .push("observability admin listener limits changed".to_owned());
    }
    let (o, n) = (&old.runtime, &new.runtime);
    if o.drain_timeout != n.drain_timeout
        || o.readiness_settle != n.readiness_settle
        || o.exit_linger != n.exit_linger
    {
        d.changes.push("runtime drain settings changed".to_owned());
    }
    if o.tls != n.tls {
        d.changes.push("runtime.tls changed".to_owned());
    }
    d
}

/// Listeners are matched by address and transport: a TCP listener whose
/// protocol changes keeps running as before, while a `quic` listener
/// replacing a TCP one at an address is a listener removed and one added.
fn listeners(old: &Config, new: &Config, d: &mut ConfigDiff) {
    for l in &new.listeners {
        let id = l.id();
        match old.listeners.iter().find(|o| o.id() == id) {
            None => {
                d.listeners_added.push(id);
                d.changes
                    .push(format!("listener {id} ({}) added", l.protocol.as_str()));
            }
            Some(o) if o.protocol != l.protocol => {
                d.listeners_kept_as_is.push(id);
                d.restart_required.push(format!(
                    "listener {id}: protocol {} -> {} needs a restart; it keeps running as before",
                    o.protocol.as_str(),
                    l.protocol.as_str()
                ));
            }
            Some(o) => listener_changes(o, l, d),
        }
    }
    for o in &old.listeners {
        let id = o.id();
        if !new.listeners.iter().any(|l| l.id() == id) {
            d.listeners_removed.push(id);
            d.changes.push(format!(
                "listener {id} ({}) removed; its connections drain",
                o.protocol.as_str()
            ));
        }
    }
}

fn listener_changes(o: &Listener, l: &Listener, d: &mut ConfigDiff) {
    let a = l.id();
    if o.kind != l.kind {
        d.changes
            .push(format!("listener {a}: routes or HTTP settings changed"));
    }
    if o.tls != l.tls {
        d.changes
            .push(format!("listener {a}: TLS settings changed"));
    }
    if o.proxy_protocol != l.proxy_protocol {
        d.changes.push(format!(
            "listener {a}: PROXY protocol settings changed (new connections take them)"
        ));
    }
    if o.quic != l.quic {
        d.changes.push(format!(
            "listener {a}: QUIC transport settings changed (new connections take them)"
        ));
    }
    if o.alt_svc != l.alt_svc {
        let show = |x: Option<crate::model::AltSvc>| {
            x.map_or_else(|| "none".to_owned(), |a| a.header_value())
        };
        d.changes.push(format!(
            "listener {a}: Alt-Svc {} -> {}",
            show(o.alt_svc),
            show(l.alt_svc)
        ));
    }
    if o.max_connections != l.max_connections {
        d.changes.push(format!(
            "listener {a}: max_connections {} -> {}",
            o.max_connections, l.max_connections
        ));
    }
    if o.idle_timeout != l.idle_timeout {
        d.changes
            .push(format!("listener {a}: idle timeout changed"));
    }
    if o != l
        && !d
            .changes
            .iter()
            .any(|c| c.starts_with(&format!("listener {a}:")))
    {
        d.changes.push(format!("listener {a}: settings changed"));
    }
}

/// The program's attachment (`[xdp]` itself, `interface`, `mode`) is fixed
/// until a restart; the VIPs are applied, as are their clusters (compared
/// with the others).
fn xdp(old: Option<&Xdp>, new: Option<&Xdp>, d: &mut ConfigDiff) {
    let (o, n) = match (old, new) {
        (None, None) => return,
        (None, Some(n)) => {
            d.restart_required.push(format!(
                "xdp on {} ({}) added: attaching the XDP program needs a restart",
                n.interface,
                n.mode.as_str()
            ));
            return;
        }
        (Some(o), None) => {
            d.restart_required.push(format!(
                "xdp on {} removed: detaching the XDP program needs a restart; it keeps running as before",
                o.interface
            ));
            return;
        }
        (Some(o), Some(n)) => (o, n),
    };
    if o.interface != n.interface {
        d.restart_required.push(format!(
            "xdp.interface {} -> {} needs a restart; the XDP program stays on {}",
            o.interface, n.interface, o.interface
        ));
    }
    if o.mode != n.mode {
        d.restart_required.push(format!(
            "xdp.mode {} -> {} needs a restart",
            o.mode.as_str(),
            n.mode.as_str()
        ));
    }
    for v in &n.vips {
        let vip = format!("xdp vip {}/{}", v.address, v.transport.as_str());
        match o
            .vips
            .iter()
            .find(|ov| ov.address == v.address && ov.transport == v.transport)
        {
            None => d
                .changes
                .push(format!("{vip} (cluster {}) added", v.cluster)),
            Some(ov) if ov.cluster != v.cluster => d
                .changes
                .push(format!("{vip}: cluster {} -> {}", ov.cluster, v.cluster)),
            Some(_) => {}
        }
    }
    for ov in &o.vips {
        if !n
            .vips
            .iter()
            .any(|v| v.address == ov.address && v.transport == ov.transport)
        {
            d.changes.push(format!(
                "xdp vip {}/{} removed",
                ov.address,
                ov.transport.as_str()
            ));
        }
    }
}

fn clusters(old: &Config, new: &Config, d: &mut ConfigDiff) {
    for c in &new.clusters {
        match old.clusters.iter().find(|o| o.name == c.name) {
            None => d.changes.push(format!("cluster {} added", c.name)),
            Some(o) => cluster_changes(o, c, d),
        }
    }
    for o in &old.clusters {
        if !new.clusters.iter().any(|c| c.name == o.name) {
            d.changes.push(format!("cluster {} removed", o.name));
        }
    }
}

fn cluster_changes(o: &Cluster, c: &Cluster, d: &mut ConfigDiff) {
    let name = &c.name;
    if o.policy != c.policy {
        d.changes.push(format!(
            "cluster {name}: policy {} -> {}",
            o.policy.as_str(),
            c.policy.as_str()
        ));
    }
    let same = |a: &Backend, b: &Backend| a.address == b.address && a.protocol == b.protocol;
    for b in &c.backends {
        match o.backends.iter().find(|ob| same(ob, b)) {
            None => d
                .changes
                .push(format!("cluster {name}: backend {} added", b.address)),
            Some(ob) if ob.weight != b.weight => d.changes.push(format!(
                "cluster {name}: backend {} weight {} -> {}",
                b.address, ob.weight, b.weight
            )),
            Some(ob) if ob != b => d.changes.push(format!(
                "cluster {name}: backend {} settings changed",
                b.address
            )),
            Some(_) => {}
        }
    }
    for ob in &o.backends {
        if !c.backends.iter().any(|b| same(ob, b)) {
            d.changes
                .push(format!("cluster {name}: backend {} removed", ob.address));
        }
    }
    let settings = |x: &Cluster| Cluster {
        backends: Vec::new(),
        policy: crate::model::Policy::default(),
        ..x.clone()
    };
    if settings(o) != settings(c) {
        d.changes.push(format!(
            "cluster {name}: settings changed (timeouts, pool, health, limits or retries)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::parse(text).unwrap()
    }

    const BASE: &str = r#"
[[clusters]]
name = "api"
[[clusters.backends]]
address = "127.0.0.1:9001"
[[clusters.backends]]
address = "127.0.0.1:9002"

[[listeners]]
address = "127.0.0.1:8080"
protocol = "h1"
[[listeners.routes]]
cluster = "api"
"#;

    #[test]
    fn identical_configs_have_no_diff() {
        assert!(diff(&cfg(BASE), &cfg(BASE)).is_empty());
    }

    #[test]
    fn weights_policies_backends_and_listeners() {
        let new = BASE
            .replace("name = \"api\"", "name = \"api\"\npolicy = \"p2c\"")
            .replace("address = \"127.0.0.1:9002\"", "address = \"127.0.0.1:9003\"\nweight = 2")
            + "\n[[listeners]]\naddress = \"127.0.0.1:8081\"\nprotocol = \"tcp\"\n[[listeners.backends]]\naddress = \"127.0.0.1:9009\"\n";
        let d = diff(&cfg(BASE), &cfg(&new));
        assert!(
            d.changes
                .contains(&"cluster api: policy round_robin -> p2c".to_owned()),
            "{d:?}"
        );
        assert!(d
            .changes
            .contains(&"cluster api: backend 127.0.0.1:9003 added".to_owned()));
        assert!(d
            .changes
            .contains(&"cluster api: backend 127.0.0.1:9002 removed".to_owned()));
        assert_eq!(
            d.listeners_added,
            vec![ListenerId {
                address: "127.0.0.1:8081".parse().unwrap(),
                transport: crate::model::Transport::Tcp
            }]
        );
        assert!(d.restart_required.is_empty());
    }

    #[test]
    fn a_quic_listener_on_a_tcp_address_is_its_own_listener() {
        let tls = "[listeners.tls]\n[[listeners.tls.certificates]]\ncert_path = \"c.pem\"\nkey_path = \"k.pem\"\n";
        let h1s = format!(
            "[[listeners]]\naddress = \"127.0.0.1:8443\"\nprotocol = \"h1s\"\n\
             backends = [{{ address = \"127.0.0.1:9001\" }}]\n{tls}"
        );
        let both = format!("{h1s}{}", h1s.replace("\"h1s\"", "\"quic\""));
        let d = diff(&cfg(&h1s), &cfg(&both));
        let quic = ListenerId {
            address: "127.0.0.1:8443".parse().unwrap(),
            transport: crate::model::Transport::Quic,
        };
        assert_eq!(d.listeners_added, vec![quic]);
        assert!(d.listeners_kept_as_is.is_empty());
        assert!(d
            .changes
            .contains(&"listener 127.0.0.1:8443/quic (quic) added".to_owned()));
        assert!(
            d.changes.contains(
                &"listener 127.0.0.1:8443: Alt-Svc none -> h3=\":8443\"; ma=86400".to_owned()
            ),
            "{d:?}"
        );
        let back = diff(&cfg(&both), &cfg(&h1s));
        assert_eq!(back.listeners_removed, vec![quic]);
    }

    #[test]
    fn protocol_change_needs_a_restart() {
        let new = BASE
            .replace("protocol = \"h1\"", "protocol = \"tcp\"")
            .replace(
                "[[listeners.routes]]\ncluster = \"api\"",
                "[[listeners.backends]]\naddress = \"127.0.0.1:9009\"",
            );
        let d = diff(&cfg(BASE), &cfg(&new));
        assert_eq!(
            d.listeners_kept_as_is,
            vec![ListenerId {
                address: "127.0.0.1:8080".parse().unwrap(),
                transport: crate::model::Transport::Tcp
            }]
        );
        assert_eq!(d.restart_required.len(), 1, "{d:?}");
    }

    const XDP: &str = r#"
[xdp]
interface = "lo"
[[xdp.vips]]
address = "10.0.0.10:80"
transport = "tcp"
cluster = "web"

[[clusters]]
name = "web"
[[clusters.backends]]
address = "10.1.0.1:80"
protocol = "tcp"
"#;

    #[test]
    fn xdp_interface_and_mode_need_a_restart() {
        // Only "lo" exists on every host: the other interface is set on
        // the model rather than parsed.
        let old = cfg(XDP);
        let mut changed = old.clone();
        let x = changed.xdp.as_mut().unwrap();
        x.interface = "eth9".to_owned();
        x.mode = crate::model::XdpMode::Generic;
        let d = diff(&old, &changed);
        assert_eq!(
            d.restart_required,
            vec![
                "xdp.interface lo -> eth9 needs a restart; the XDP program stays on lo".to_owned(),
                "xdp.mode native -> generic needs a restart".to_owned(),
            ]
        );
        assert!(d.changes.is_empty(), "{d:?}");
        let generic = cfg(&XDP.replace(
            "interface = \"lo\"",
            "interface = \"lo\"\nmode = \"generic\"",
        ));
        let d = diff(&old, &generic);
        assert_eq!(
            d.restart_required,
            vec!["xdp.mode native -> generic needs a restart".to_owned()]
        );
    }

    #[test]
    fn xdp_added_or_removed_needs_a_restart() {
        let d = diff(&cfg(BASE), &cfg(&format!("{BASE}{XDP}")));
        assert_eq!(
            d.restart_required,
            vec!["xdp on lo (native) added: attaching the XDP program needs a restart".to_owned()]
        );
        assert!(d.changes.contains(&"cluster web added".to_owned()), "{d:?}");
        let d = diff(&cfg(&format!("{BASE}{XDP}")), &cfg(BASE));
        assert_eq!(d.restart_required.len(), 1, "{d:?}");
    }

    #[test]
    fn xdp_vips_and_their_clusters_are_applied() {
        let new = XDP
            .replace("10.0.0.10:80", "10.0.0.11:80")
            .replace("address = \"10.1.0.1:80\"", "address = \"10.1.0.2:80\"")
            + "[[xdp.vips]]\naddress = \"10.0.0.12:80\"\ntransport = \"tcp\"\ncluster = \"web\"\n";
        let d = diff(&cfg(XDP), &cfg(&new));
        assert!(d.restart_required.is_empty(), "{d:?}");
        for line in [
            "xdp vip 10.0.0.11:80/tcp (cluster web) added",
            "xdp vip 10.0.0.12:80/tcp (cluster web) added",
            "xdp vip 10.0.0.10:80/tcp removed",
            "cluster web: backend 10.1.0.2:80 added",
            "cluster web: backend 10.1.0.1:80 removed",
        ] {
            assert!(d.changes.contains(&line.to_owned()), "{line}: {d:?}");
        }
        let moved = XDP
            .replace("cluster = \"web\"", "cluster = \"web2\"")
            .replace("name = \"web\"", "name = \"web2\"");
        let d = diff(&cfg(XDP), &cfg(&moved));
        assert!(
            d.changes
                .contains(&"xdp vip 10.0.0.10:80/tcp: cluster web -> web2".to_owned()),
            "{d:?}"
        );
        assert!(d.restart_required.is_empty(), "{d:?}");
    }
}
