//! The one retry policy of HTTP requests and TCP flows: which failed try
//! may go again, and whether that retry spends the cluster's retry budget.
//!
//! A try that never reached its backend (connect refused or timed out, a
//! connection that refused the request before it was written) goes to
//! another healthy backend without touching the budget: nothing was sent
//! twice, and the backend it failed on is out of the way. The budget only
//! bounds the retries that add load: after a request was sent, or when no
//! healthy backend is left to absorb the failed one's share.

use crate::Cluster;

/// The retries left to one request or flow.
#[derive(Debug)]
pub struct Attempts {
    /// Budgeted retries left (the policy's `attempts`).
    left: u32,
    /// Budget-free retries left: one per backend at most.
    free_left: usize,
    budget_percent: u32,
}

/// What may follow a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Go again on another healthy backend, outside the budget.
    Free,
    /// Go again; the retry was counted against the budget.
    Budgeted,
    /// No retry: the policy's attempts are used up.
    AttemptsUsed,
    /// No retry: the cluster's retry budget is spent.
    BudgetSpent,
}

impl Attempts {
    /// Retries for one request or flow to `cluster` under a policy of
    /// `attempts` retries within `budget_percent`.
    pub fn new(cluster: &Cluster, attempts: u32, budget_percent: u32) -> Self {
        Self {
            left: attempts,
            free_left: cluster.backends.len(),
            budget_percent,
        }
    }

    /// Decide after a failed try on backend `failed` that met a retry
    /// condition of the policy; `never_reached` says the backend got
    /// nothing of it.
    pub fn after_failure(
        &mut self,
        cluster: &Cluster,
        failed: usize,
        never_reached: bool,
    ) -> Retry {
        if never_reached && self.free_left > 0 && cluster.other_usable(failed) {
            self.free_left -= 1;
            return Retry::Free;
        }
        if self.left == 0 {
            return Retry::AttemptsUsed;
        }
        if !cluster.retry_budget.try_retry(self.budget_percent) {
            return Retry::BudgetSpent;
        }
        self.left -= 1;
        Retry::Budgeted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn cluster(n: usize) -> Arc<Cluster> {
        let mut text = "[[clusters]]\nname = \"c\"\n".to_owned();
        for i in 0..n {
            text.push_str(&format!(
                "[[clusters.backends]]\naddress = \"127.0.0.1:{}\"\n",
                7100 + i
            ));
        }
        text.push_str(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\nroutes = [{ cluster = \"c\" }]\n",
        );
        let config = lb_config::parse(&text).unwrap();
        let spec = config.cluster("c").unwrap().clone();
        Arc::new(Cluster::new(spec, Box::new(First)))
    }

    #[derive(Debug)]
    struct First;
    impl crate::Policy for First {
        fn pick(&self, c: &crate::Candidates<'_>, _: &crate::PickContext) -> Option<usize> {
            (0..c.len()).find(|&i| c.usable(i))
        }
    }

    #[test]
    fn unsent_tries_go_elsewhere_without_the_budget_while_another_backend_is_healthy() {
        let c = cluster(3);
        // A budget of 0% and no attempts: only free retries can happen.
        let mut a = Attempts::new(&c, 0, 0);
        // Spend the reserve so the budget itself is empty.
        while c.retry_budget.try_retry(0) {}
        assert_eq!(a.after_failure(&c, 0, true), Retry::Free);
        assert_eq!(a.after_failure(&c, 1, false), Retry::AttemptsUsed);
        // Every other backend out: the failed one has no stand-in.
        c.set_healthy(1, false);
        c.set_healthy(2, false);
        assert_eq!(a.after_failure(&c, 0, true), Retry::AttemptsUsed);
    }

    #[test]
    fn free_retries_are_bounded_by_the_backend_count() {
        let c = cluster(2);
        let mut a = Attempts::new(&c, 0, 0);
        assert_eq!(a.after_failure(&c, 0, true), Retry::Free);
        assert_eq!(a.after_failure(&c, 1, true), Retry::Free);
        assert_eq!(a.after_failure(&c, 0, true), Retry::AttemptsUsed);
    }

    #[test]
    fn sent_tries_spend_attempts_and_budget() {
        let c = cluster(2);
        let mut a = Attempts::new(&c, 1, 20);
        assert_eq!(a.after_failure(&c, 0, false), Retry::Budgeted);
        assert_eq!(a.after_failure(&c, 1, false), Retry::AttemptsUsed);
        let mut b = Attempts::new(&c, 5, 0);
        while c.retry_budget.try_retry(0) {}
        assert_eq!(b.after_failure(&c, 0, false), Retry::BudgetSpent);
    }
}
