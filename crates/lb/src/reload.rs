//! SIGHUP: re-read the file, validate all of it, diff it, and swap one new
//! snapshot in. Everything that can fail (parsing, validation, certificate
//! files, binding new listeners, compiling routes) happens before anything
//! changes; an invalid file changes nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use lb_config::{Config, ListenerId, ListenerKind, RouteAction};
use lb_core::Snapshot;
use lb_observability::ReloadStatus;
use lb_tls::TlsState;

use crate::gateway::{Gateway, Inner};
use crate::listeners::{self, Context, Socket};

/// What a reload did: the applied change lines, or why nothing changed.
type Outcome = Result<Vec<String>, Vec<String>>;

impl Gateway {
    /// Reload the configuration file; returns whether it was applied.
    /// Blocking (reads files): run it off the request threads.
    pub fn reload(&self) -> bool {
        let outcome = self.try_reload();
        let applied = outcome.is_ok();
        self.telemetry.reload(applied);
        let detail = match outcome {
            Ok(lines) => {
                for line in &lines {
                    tracing::info!(change = %line, "reload");
                }
                tracing::info!(
                    generation = self.generation.load(Ordering::Acquire),
                    changes = lines.len(),
                    "reload applied"
                );
                lines
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, "reload rejected");
                }
                tracing::error!(
                    errors = errors.len(),
                    "reload rejected; configuration unchanged"
                );
                errors
            }
        };
        let status = ReloadStatus {
            time: lb_observability::logging::rfc3339_now(),
            result: if applied { "applied" } else { "rejected" }.to_owned(),
            detail,
        };
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Some(status);
        }
        applied
    }

    fn try_reload(&self) -> Outcome {
        let mut new = lb_config::load(&self.path).map_err(|e| e.errors())?;
        let mut inner = self.lock();
        let current = self.snapshot.load_full();
        let diff = lb_config::diff(&current.config, &new);
        keep_as_is(&current.config, &mut new, &diff.listeners_kept_as_is)?;
        let (mut tls, warnings) = TlsState::load(&new)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        tls.adopt_upstreams(&self.tls.load());
        for w in &warnings {
            tracing::warn!(warning = %w, "configuration warning");
        }
        let sockets = bind_added(&new, &diff.listeners_added)?;

        let snapshot = Snapshot::rebuild(new, &lb_balancer::for_cluster, &current);
        let upstreams = lb_http::upstreams(&snapshot, &tls, Some(&inner.upstreams));
        let plans = compile_plans(&snapshot, &upstreams)?;

        // From here on nothing fails: apply.
        adopt_running_tls(
            &inner,
            &snapshot.config,
            &diff.listeners_kept_as_is,
            &mut tls,
        );
        let token = snapshot.config.observability.api_token_sha256;
        let snapshot = Arc::new(snapshot);
        self.tls.store(Arc::new(tls));
        self.snapshot.store(Arc::clone(&snapshot));
        self.apply_listeners(&mut inner, &snapshot, plans, sockets, &upstreams);
        let previous = std::mem::take(&mut inner.health);
        inner.health = lb_health::start(&snapshot, &self.tls.load(), Some(previous));
        inner.upstreams = upstreams;
        inner.retired.retain(|l| !l.finished());
        self.admin_token.store(token.map(Arc::new));
        self.admin_limits
            .store(Arc::new(snapshot.config.observability.admin));
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.telemetry
            .generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        let mut lines = diff.changes;
        lines.extend(
            diff.restart_required
                .into_iter()
                .map(|l| format!("not applied: {l}")),
        );
        if let Some(xdp) = &self.xdp {
            match xdp.sync(&snapshot) {
                Ok(true) => lines.push("XDP tables updated".to_owned()),
                Ok(false) => {}
                Err(e) => lines.push(format!("XDP tables not updated: {e}")),
            }
        }
        Ok(lines)
    }

    fn apply_listeners(
        &self,
        inner: &mut Inner,
        snapshot: &Arc<Snapshot>,
        mut plans: HashMap<ListenerId, lb_http::ListenerPlan>,
        sockets: Vec<(ListenerId, Socket)>,
        upstreams: &HashMap<String, Arc<lb_http::Upstream>>,
    ) {
        let specs: HashMap<ListenerId, &lb_config::Listener> = snapshot
            .config
            .listeners
            .iter()
            .map(|l| (l.id(), l))
            .collect();
        let removed: Vec<ListenerId> = inner
            .listeners
            .keys()
            .filter(|id| !specs.contains_key(id))
            .copied()
            .collect();
        for id in removed {
            if let Some(l) = inner.listeners.remove(&id) {
                l.stop();
                tracing::info!(listener = %id, "listener closed; draining its connections");
                inner.retired.push(l);
            }
        }
        for (id, running) in inner.listeners.iter_mut() {
            if let (Some(plan), Some(new_plan)) = (&running.plan, plans.remove(id)) {
                plan.store(Arc::new(new_plan));
            }
            let Some(spec) = specs.get(id) else { continue };
            if let (Some(quic), Some(settings)) = (&running.quic, &spec.quic) {
                if **quic.load() != *settings {
                    quic.store(Arc::new(settings.clone()));
                }
            }
            running.spec = (*spec).clone();
        }
        let ctx = Context {
            snapshot: &self.snapshot,
            tls: &self.tls,
            upstreams,
        };
        for (id, socket) in sockets {
            let Some(spec) = specs.get(&id) else {
                continue;
            };
            match listeners::start(spec, socket, &ctx) {
                Ok(l) => {
                    inner.listeners.insert(id, l);
                }
                Err(e) => {
                    tracing::error!(listener = %id, error = format!("{e:#}"), "new listener not started")
                }
            }
        }
    }
}

/// A listener whose change needs a restart keeps its running settings; the
/// clusters its routes use must still exist with backends it can talk to.
fn keep_as_is(old: &Config, new: &mut Config, ids: &[ListenerId]) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    for id in ids {
        let (Some(old_l), Some(slot)) = (
            old.listeners.iter().find(|l| l.id() == *id),
            new.listeners.iter_mut().find(|l| l.id() == *id),
        ) else {
            continue;
        };
        *slot = old_l.clone();
        let tcp = matches!(old_l.kind, ListenerKind::Tcp { .. });
        for name in cluster_refs(old_l) {
            let ok = new.cluster(name).is_some_and(|c| {
                c.backends
                    .iter()
                    .all(|b| (b.protocol == lb_config::BackendProtocol::Tcp) == tcp)
            });
            if !ok {
                errors.push(format!(
                    "listener {id}: its protocol change needs a restart, and meanwhile it keeps its current routes, but cluster {name:?} is gone or changed kind in the new configuration"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn cluster_refs(l: &lb_config::Listener) -> Vec<&str> {
    match &l.kind {
        ListenerKind::Tcp { cluster }
        | ListenerKind::Udp { cluster }
        | ListenerKind::Passthrough { cluster, .. } => vec![cluster.as_str()],
        ListenerKind::Http(h) => h
            .routes
            .iter()
            .filter_map(|r| match &r.action {
                RouteAction::Cluster(c) => Some(c.as_str()),
                RouteAction::Direct(_) | RouteAction::Redirect(_) => None,
            })
            .collect(),
    }
}

/// Bind every added listener's socket (TCP, or UDP for `quic` and `udp`); one that
/// cannot be bound rejects the reload.
fn bind_added(new: &Config, ids: &[ListenerId]) -> Result<Vec<(ListenerId, Socket)>, Vec<String>> {
    let mut sockets = Vec::new();
    for id in ids {
        let Some(spec) = new.listeners.iter().find(|l| l.id() == *id) else {
            continue;
        };
        match listeners::bind_listener(spec) {
            Ok(s) => sockets.push((*id, s)),
            // Dropping `sockets` closes the ones bound so far.
            Err(e) => return Err(vec![format!("listener {id}: cannot bind: {e:#}")]),
        }
    }
    Ok(sockets)
}

fn compile_plans(
    snapshot: &Snapshot,
    upstreams: &HashMap<String, Arc<lb_http::Upstream>>,
) -> Result<HashMap<ListenerId, lb_http::ListenerPlan>, Vec<String>> {
    let mut plans = HashMap::new();
    for l in &snapshot.config.listeners {
        if let ListenerKind::Http(_) = l.kind {
            match lb_http::ListenerPlan::build(l, upstreams) {
                Some(p) => {
                    plans.insert(l.id(), p);
                }
                None => return Err(vec![format!("listener {}: routes did not compile", l.id())]),
            }
        }
    }
    Ok(plans)
}

/// Running TLS listeners keep their `ServerTls` (the accept loop holds
/// it): load the new settings into it, and make the new state point at it
/// so SIGUSR1 reloads what is actually served.
fn adopt_running_tls(
    inner: &Inner,
    config: &Config,
    kept_as_is: &[ListenerId],
    tls: &mut TlsState,
) {
    for l in &config.listeners {
        let id = l.id();
        let Some(running) = inner.listeners.get(&id) else {
            continue;
        };
        let (Some(server), Some(spec)) = (&running.server_tls, &l.tls) else {
            continue;
        };
        if !kept_as_is.contains(&id) {
            if let Err(errors) = server.reload_from(spec, &config.runtime.tls) {
                for e in errors {
                    tracing::error!(listener = %id, error = %e, "certificate reload failed; keeping the previous certificate");
                }
            }
        }
        tls.adopt_server(id, Arc::clone(server));
    }
}
