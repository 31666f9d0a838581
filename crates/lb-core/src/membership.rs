//! Which cluster a backend's live state currently counts toward. A reload
//! builds new cluster objects that share the backends' state with the old
//! ones, and requests or ejection timers started under the old objects
//! keep changing that state; the health counts each cluster keeps
//! (unavailable, ejected) must follow the state to whichever cluster holds
//! it now, or they drift. So the counts live here, and every state change
//! goes through the state's current membership.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

/// Health counts of one cluster generation.
#[derive(Debug, Default)]
pub(crate) struct HealthCounts {
    /// Serving backends (weight above 0) that are unhealthy or ejected.
    pub(crate) unavailable: AtomicUsize,
    /// Backends ejected now.
    pub(crate) ejected: AtomicUsize,
}

/// A backend state's place in its current cluster.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) counts: Arc<HealthCounts>,
    /// Whether the backend has weight above 0 in that cluster.
    pub(crate) serving: bool,
}

/// Slot in `BackendState`; empty once the backend left every cluster.
#[derive(Debug, Default)]
pub(crate) struct MembershipSlot(ArcSwapOption<Membership>);

impl MembershipSlot {
    pub(crate) fn set(&self, membership: Option<Membership>) {
        self.0.store(membership.map(Arc::new));
    }

    /// Apply a flag change `old → new` to the current cluster's counts.
    pub(crate) fn flags_changed(&self, old: u8, new: u8, ejected_bit: u8) {
        let guard = self.0.load();
        let Some(m) = guard.as_ref() else { return };
        if m.serving {
            if old == 0 && new != 0 {
                m.counts.unavailable.fetch_add(1, Ordering::AcqRel);
            } else if old != 0 && new == 0 {
                saturating_dec(&m.counts.unavailable);
            }
        }
        if old & ejected_bit == 0 && new & ejected_bit != 0 {
            m.counts.ejected.fetch_add(1, Ordering::AcqRel);
        } else if old & ejected_bit != 0 && new & ejected_bit == 0 {
            saturating_dec(&m.counts.ejected);
        }
    }
}

fn saturating_dec(n: &AtomicUsize) {
    let _ = n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
}
