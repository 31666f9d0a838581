//! A cluster: backends, the policy that picks among them, and what every
//! policy shares: which backends are usable now (weight above 0, healthy,
//! not ejected, under the per-backend request limit), panic mode, circuit
//! breaking, the retry budget and the session cookie. Policies only choose
//! among the usable backends the cluster shows them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{EJECTED, UNHEALTHY, UNREACHABLE};
use crate::circuit::{Circuit, Tripped};
use crate::clock::now_micros;
use crate::membership::{HealthCounts, Membership};
use crate::retry_budget::RetryBudget;
use crate::sticky::StickyCookie;
use crate::Backend;

/// What a policy may look at when picking.
#[derive(Debug, Clone, Copy)]
pub struct PickContext {
    /// The client's address.
    pub client: SocketAddr,
    /// Stable hash of the cluster's `hash_key` for this request; `None`
    /// when the request does not carry it (hashing policies then spread
    /// such requests at random).
    pub key: Option<u64>,
    /// The backend a valid session cookie names.
    pub pinned: Option<usize>,
}

impl PickContext {
    /// A context carrying only the client address.
    pub fn new(client: SocketAddr) -> Self {
        Self {
            client,
            key: None,
            pinned: None,
        }
    }
}

/// The backends a policy chooses among, and which of them it may choose.
#[derive(Debug)]
pub struct Candidates<'a> {
    backends: &'a [Arc<Backend>],
    panic: bool,
    max_requests: Option<u64>,
    exclude: Option<usize>,
}

impl<'a> Candidates<'a> {
    /// Number of backends (usable or not); indexes run below it.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Whether the cluster has no backend at all.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// Backend `i`.
    pub fn backend(&self, i: usize) -> Option<&'a Arc<Backend>> {
        self.backends.get(i)
    }

    /// Backend `i`'s configured weight (0 when out of range).
    pub fn weight(&self, i: usize) -> u32 {
        self.backends.get(i).map_or(0, |b| b.spec.weight)
    }

    /// Whether backend `i` may be picked now.
    pub fn usable(&self, i: usize) -> bool {
        let Some(b) = self.backends.get(i) else {
            return false;
        };
        b.spec.weight > 0
            && Some(i) != self.exclude
            && (self.panic || b.state.is_healthy())
            && self
                .max_requests
                .is_none_or(|max| b.state.in_flight.load(Ordering::Relaxed) < max)
    }
}

/// A balancing policy. Implementations live in `lb-balancer`.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Index of a backend for which [`Candidates::usable`] holds, or `None`
    /// when there is none.
    fn pick(&self, candidates: &Candidates<'_>, ctx: &PickContext) -> Option<usize>;
}

/// Why no backend could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoBackend {
    /// Every backend has weight 0.
    #[error("every backend is drained")]
    Drained,
    /// Every backend fails its checks or is ejected, and panic mode is off.
    #[error("no healthy backend")]
    Unhealthy,
    /// A circuit breaker limit is reached.
    #[error(transparent)]
    Tripped(#[from] Tripped),
}

/// A named group of backends and how to balance among them.
#[derive(Debug)]
pub struct Cluster {
    /// Validated configuration (name, timeouts, pool, balancing settings).
    pub spec: lb_config::Cluster,
    /// Members, in config order.
    pub backends: Vec<Arc<Backend>>,
    /// The balancing policy.
    pub policy: Box<dyn Policy>,
    /// Circuit breaking limits and counts.
    pub circuit: Arc<Circuit>,
    /// Retries allowed against this cluster.
    pub retry_budget: RetryBudget,
    sticky: Option<StickyCookie>,
    /// Backends of weight above 0.
    serving: usize,
    /// Unavailable and ejected counts, kept through each backend state's
    /// membership so changes made through an older generation land here.
    counts: Arc<HealthCounts>,
}

impl Cluster {
    /// A cluster for `spec` with fresh backend state.
    pub fn new(spec: lb_config::Cluster, policy: Box<dyn Policy>) -> Self {
        Self::build(spec, policy, None)
    }

    /// A cluster for `spec` that keeps the live state (health, ejections,
    /// latency, in-flight counts) of every backend `previous` shares with
    /// it, and its circuit-breaker counts when the limits are unchanged.
    pub fn carrying(spec: lb_config::Cluster, policy: Box<dyn Policy>, previous: &Cluster) -> Self {
        Self::build(spec, policy, Some(previous))
    }

    fn build(
        spec: lb_config::Cluster,
        policy: Box<dyn Policy>,
        previous: Option<&Cluster>,
    ) -> Self {
        let backends: Vec<Arc<Backend>> = spec
            .backends
            .iter()
            .map(|b| {
                let kept = previous
                    .and_then(|p| p.backends.iter().find(|old| old.same_identity(b)))
                    .map(|old| Arc::clone(&old.state));
                Arc::new(match kept {
                    Some(state) => Backend::with_state(b.clone(), state),
                    None => Backend::new(b.clone()),
                })
            })
            .collect();
        let sticky = match (&spec.policy, &spec.hash_key) {
            (lb_config::Policy::SessionAffinity, Some(lb_config::HashKey::Cookie(name))) => {
                Some(StickyCookie::new(
                    name,
                    spec.cookie_secret.as_deref(),
                    backends.iter().map(|b| b.spec.address.as_str()),
                ))
            }
            _ => None,
        };
        let circuit = match previous {
            Some(p) if p.spec.circuit_breaker == spec.circuit_breaker => Arc::clone(&p.circuit),
            _ => Circuit::new(spec.circuit_breaker),
        };
        let counts = Arc::new(HealthCounts::default());
        for b in &backends {
            b.state.membership.set(Some(Membership {
                counts: Arc::clone(&counts),
                serving: b.spec.weight > 0,
            }));
        }
        if let Some(previous) = previous {
            for old in &previous.backends {
                if !backends.iter().any(|b| Arc::ptr_eq(&b.state, &old.state)) {
                    old.state.membership.set(None);
                }
            }
        }
        // Counted after the memberships moved, so a change made meanwhile
        // through the previous generation is not lost.
        let flags = |b: &Arc<Backend>| b.state.flags.load(Ordering::Acquire);
        counts.unavailable.store(
            backends
                .iter()
                .filter(|b| b.spec.weight > 0 && flags(b) != 0)
                .count(),
            Ordering::Release,
        );
        counts.ejected.store(
            backends.iter().filter(|b| flags(b) & EJECTED != 0).count(),
            Ordering::Release,
        );
        Self {
            serving: backends.iter().filter(|b| b.spec.weight > 0).count(),
            circuit,
            retry_budget: RetryBudget::default(),
            counts,
            sticky,
            backends,
            policy,
            spec,
        }
    }

    /// Leave every backend's state without a cluster: this cluster is gone
    /// from the configuration.
    pub fn retire(&self) {
        for b in &self.backends {
            b.state.membership.set(None);
        }
    }

    /// Pick a backend; `exclude` (the backend just tried) is skipped when
    /// any other is usable.
    pub fn pick(
        &self,
        ctx: &PickContext,
        exclude: Option<usize>,
    ) -> Result<(usize, &Arc<Backend>), NoBackend> {
        let panic = self.in_panic();
        let mut candidates = Candidates {
            backends: &self.backends,
            panic,
            max_requests: self.circuit.max_requests(),
            exclude,
        };
        // Usable backends at most; 0 spares the policy a fruitless walk.
        let healthy = self.healthy();
        let bound = if panic { self.serving } else { healthy };
        let mut tries: &[Option<usize>] = &[exclude, None];
        if exclude.is_none() {
            tries = &[None];
        }
        for &ex in tries {
            candidates.exclude = ex;
            let excluded_usable = ex.is_some_and(|i| candidates.usable_ignoring_exclude(i));
            if bound > usize::from(excluded_usable) {
                if let Some(i) = self.policy.pick(&candidates, ctx) {
                    if let Some(b) = self.backends.get(i) {
                        return Ok((i, b));
                    }
                }
            }
        }
        Err(self.why_none(panic))
    }

    fn why_none(&self, panic: bool) -> NoBackend {
        if self.serving == 0 {
            return NoBackend::Drained;
        }
        if let Some(max) = self.circuit.max_requests() {
            let up = |b: &&Arc<Backend>| b.spec.weight > 0 && (panic || b.state.is_healthy());
            if self.backends.iter().any(|b| up(&b)) {
                return NoBackend::Tripped(Tripped::MaxRequests(max));
            }
        }
        NoBackend::Unhealthy
    }

    /// Whether fewer than `panic_threshold_percent` of the serving backends
    /// are healthy, so every serving backend is used regardless of health.
    pub fn in_panic(&self) -> bool {
        let threshold = usize::from(self.spec.panic_threshold_percent);
        let healthy = self.healthy();
        threshold > 0 && healthy * 100 < self.serving * threshold
    }

    /// Serving backends that are neither unhealthy nor ejected.
    pub fn healthy(&self) -> usize {
        self.serving
            - self
                .counts
                .unavailable
                .load(Ordering::Acquire)
                .min(self.serving)
    }

    /// The session cookie, for `session_affinity` keyed by a cookie.
    pub fn sticky(&self) -> Option<&StickyCookie> {
        self.sticky.as_ref()
    }

    /// Record the active checker's verdict on backend `index`; returns
    /// whether it changed.
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        self.set_flag(index, UNHEALTHY, !healthy)
    }

    /// Eject backend `index` until `until` (clock microseconds) unless it
    /// is ejected already or `max_percent` of the cluster is; returns
    /// whether it was ejected.
    pub fn try_eject(&self, index: usize, until: u64, max_percent: u8) -> bool {
        let Some(b) = self.backends.get(index) else {
            return false;
        };
        if b.state.is_ejected() {
            return false;
        }
        // Checked, not reserved: two ejections racing may exceed the cap by
        // one, which the cap (a safety valve, not an invariant) tolerates.
        let total = self.backends.len();
        let ejected = self.counts.ejected.load(Ordering::Acquire);
        if (ejected + 1) * 100 > total * usize::from(max_percent) {
            return false;
        }
        b.state.ejected_until.store(until, Ordering::Release);
        self.set_flag(index, EJECTED, true)
    }

    /// Take backend `index` out after a failed connect, until `until`
    /// (clock microseconds) unless something brings it back sooner;
    /// returns whether it was in before.
    pub fn mark_unreachable(&self, index: usize, until: u64) -> bool {
        let Some(b) = self.backends.get(index) else {
            return false;
        };
        b.state.unreachable_until.store(until, Ordering::Release);
        self.set_flag(index, UNREACHABLE, true)
    }

    /// Bring backend `index` back after a successful connect or check;
    /// returns whether it was out.
    pub fn clear_unreachable(&self, index: usize) -> bool {
        match self.backends.get(index) {
            Some(b) if b.state.is_unreachable() => self.set_flag(index, UNREACHABLE, false),
            _ => false,
        }
    }

    /// Bring backend `index` back when its time out after a failed connect
    /// is over; returns whether it came back.
    pub fn end_unreachable(&self, index: usize) -> bool {
        let Some(b) = self.backends.get(index) else {
            return false;
        };
        if now_micros() < b.state.unreachable_until.load(Ordering::Acquire) {
            return false;
        }
        self.clear_unreachable(index)
    }

    /// Whether a healthy backend other than `index` may be picked now
    /// (panic mode aside): where a request that never reached `index` can
    /// go instead.
    pub fn other_usable(&self, index: usize) -> bool {
        let candidates = Candidates {
            backends: &self.backends,
            panic: false,
            max_requests: self.circuit.max_requests(),
            exclude: Some(index),
        };
        (0..self.backends.len()).any(|i| candidates.usable(i))
    }

    /// End backend `index`'s ejection if it is due; returns whether it
    /// ended.
    pub fn end_ejection(&self, index: usize) -> bool {
        let Some(b) = self.backends.get(index) else {
            return false;
        };
        if now_micros() < b.state.ejected_until.load(Ordering::Acquire) {
            return false;
        }
        self.set_flag(index, EJECTED, false)
    }

    /// Set or clear `bit` on backend `index`, keeping the unavailable count
    /// right; returns whether the bit changed.
    fn set_flag(&self, index: usize, bit: u8, on: bool) -> bool {
        self.backends
            .get(index)
            .is_some_and(|b| b.state.set_flag(bit, on))
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// TCP connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.spec.connect_timeout
    }
}

impl Candidates<'_> {
    /// Whether `i` would be usable were it not excluded.
    fn usable_ignoring_exclude(&self, i: usize) -> bool {
        let other = Candidates {
            exclude: None,
            ..*self
        };
        other.usable(i)
    }
}
