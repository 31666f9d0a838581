//! ExpressGateway TLS: rustls server configs for `tls` and `h1s`
//! listeners (certificates chosen by SNI, client certificates, rotating
//! session ticket keys) and client configs for TLS backends, all on one
//! crypto provider (aws-lc-rs).
//!
//! [`TlsState::load`] reads every file a configuration names and reports
//! every problem with its configuration key. [`TlsState::reload`] (SIGUSR1)
//! re-reads them all and swaps each listener's and backend's material
//! atomically, keeping the old material wherever a file is bad. A
//! configuration reload whose listener names other files calls
//! [`ServerTls::reload_from`] with the new settings: the same path.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(missing_docs)]

mod certificate;
mod early;
mod error;
mod files;
mod identity;
mod metrics;
mod names;
mod provider;
mod server;
mod sni;
mod stream;
mod ticket;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;

use lb_config::{Config, ListenerId, ListenerProtocol};

pub use early::EarlyDataStream;
pub use error::{TlsError, TlsWarning};
pub use metrics::register_metrics;
pub use names::CertNames;
pub use server::{Alpn, HandshakeError, ServerTls, Session};
pub use stream::ServerStream;
pub use upstream::UpstreamTls;

use upstream::SystemRoots;

/// The TLS material of a configuration: one [`ServerTls`] per TLS
/// listener, one [`UpstreamTls`] per TLS backend.
#[derive(Debug, Default)]
pub struct TlsState {
    servers: HashMap<ListenerId, Arc<ServerTls>>,
    /// By the backend's key path (`clusters[0].backends[1]`): one entry
    /// per backend as written, so each has its own session cache.
    upstreams: HashMap<String, Arc<UpstreamTls>>,
}

/// What a [`TlsState::reload`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Listeners and backends whose material was swapped.
    pub reloaded: usize,
    /// Listeners and backends that kept their previous material.
    pub kept: usize,
}

impl TlsState {
    /// Read and check every certificate, key and CA file `config` names.
    /// Returns the warnings (expiry, verification off) with the state, or
    /// every error found.
    pub fn load(config: &Config) -> Result<(Self, Vec<TlsWarning>), Vec<TlsError>> {
        let mut state = Self::default();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        let runtime = &config.runtime.tls;
        for listener in &config.listeners {
            let Some(spec) = &listener.tls else { continue };
            let alpn = match listener.protocol {
                ListenerProtocol::H1s => Alpn::Http,
                ListenerProtocol::Quic => Alpn::H3,
                ListenerProtocol::Tcp
                | ListenerProtocol::Tls
                | ListenerProtocol::H1
                | ListenerProtocol::Udp => Alpn::None,
            };
            let id = listener.id();
            match ServerTls::load(id, spec, runtime, alpn, &mut warnings) {
                Ok(server) => {
                    state.servers.insert(id, Arc::new(server));
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut system = SystemRoots::default();
        let backends = config.clusters.iter().flat_map(|c| c.backends.iter());
        for backend in backends {
            let Some(spec) = &backend.tls else { continue };
            if state.upstreams.contains_key(&spec.origin) {
                continue;
            }
            match UpstreamTls::load(spec, backend.protocol, runtime, &mut system, &mut warnings) {
                Ok(up) => {
                    state.upstreams.insert(spec.origin.clone(), Arc::new(up));
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok((state, warnings))
        } else {
            Err(errors)
        }
    }

    /// The TLS side of listener `id`.
    pub fn server(&self, id: ListenerId) -> Option<Arc<ServerTls>> {
        self.servers.get(&id).cloned()
    }

    /// Make `server` (a running listener's TLS side, already reloaded with
    /// the new settings) the one this state serves for listener `id`, so
    /// a later SIGUSR1 reloads what the listener actually uses.
    pub fn adopt_server(&mut self, id: ListenerId, server: Arc<ServerTls>) {
        self.servers.insert(id, server);
    }

    /// Keep `previous`'s TLS side of every backend whose settings and
    /// material are unchanged (its session cache, and the connections
    /// pooled with it, stay valid); the others start afresh.
    pub fn adopt_upstreams(&mut self, previous: &TlsState) {
        for slot in self.upstreams.values_mut() {
            if let Some(old) = previous.upstreams.values().find(|old| old.same_as(slot)) {
                *slot = Arc::clone(old);
            }
        }
    }

    /// The TLS side of `backend`, when it speaks TLS.
    pub fn upstream(&self, backend: &lb_config::Backend) -> Option<Arc<UpstreamTls>> {
        let origin = &backend.tls.as_ref()?.origin;
        self.upstreams.get(origin).cloned()
    }

    /// Re-read every certificate, key and CA file and swap each listener's
    /// and backend's material; a listener or backend with a bad file keeps
    /// what it had. Logs what happened to each.
    pub fn reload(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        for (id, server) in &self.servers {
            let outcome = server.reload();
            tally(&mut report, &id.to_string(), outcome);
        }
        let mut system = SystemRoots::default();
        for (origin, upstream) in &self.upstreams {
            tally(&mut report, origin, upstream.reload(&mut system));
        }
        report
    }
}

fn tally(report: &mut ReloadReport, what: &str, outcome: Result<Vec<TlsWarning>, Vec<TlsError>>) {
    match outcome {
        Ok(warnings) => {
            report.reloaded += 1;
            for warning in warnings {
                tracing::warn!(tls = what, %warning, "certificate warning");
            }
            tracing::info!(tls = what, "certificates reloaded");
        }
        Err(errors) => {
            report.kept += 1;
            for error in errors {
                tracing::error!(tls = what, %error, "certificate reload failed; keeping the previous certificates");
            }
        }
    }
}
