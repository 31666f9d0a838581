//! The process-wide metrics registry and its two exposition formats.
//! Metric families are declared by the crates that update them and
//! registered here under the `expressgateway_` prefix.

use std::sync::Mutex;

use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bucket upper bounds, in seconds, of every latency histogram: 0.5 ms to
/// 30 s, roughly ×2.5 apart.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram with [`LATENCY_BUCKETS`]; the constructor of latency
/// histogram families.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// All metric families of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            registry: Mutex::new(Registry::with_prefix("expressgateway")),
        }
    }
}

impl Metrics {
    /// Register families: `f` receives the registry once.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut registry);
    }

    /// Encode every family; `openmetrics` selects the format.
    pub fn encode(&self, openmetrics: bool) -> String {
        let registry = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return String::new();
        }
        drop(registry);
        if openmetrics {
            text
        } else {
            to_prometheus_text(&text)
        }
    }
}

/// The value of one sample in exposition `text`: the line for `name`
/// whose labels include every pair of `labels` (status page, tests).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(inner) => inner.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let fenced = format!(",{label_text},");
        let all = labels
            .iter()
            .all(|(k, v)| fenced.contains(&format!(",{k}=\"{v}\",")));
        all.then(|| value.split(' ').next()?.parse().ok()).flatten()
    })
}

/// OpenMetrics text → Prometheus 0.0.4 text: counters are declared under
/// their `_total` sample name, and `# UNIT` / `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "a_total{x=\"1\",y=\"b,c\"} 7\na_total{x=\"2\"} 3\nb 1.5\n";
        assert_eq!(sample(text, "a_total", &[("x", "1")]), Some(7.0));
        assert_eq!(sample(text, "a_total", &[("y", "b,c")]), Some(7.0));
        assert_eq!(sample(text, "a_total", &[("x", "2")]), Some(3.0));
        assert_eq!(sample(text, "a_total", &[("x", "3")]), None);
        assert_eq!(sample(text, "b", &[]), Some(1.5));
        assert_eq!(sample(text, "a", &[]), None);
    }

    #[test]
    fn counters_are_renamed_for_prometheus_text() {
        let m = Metrics::default();
        let c: Counter = Counter::default();
        c.inc_by(3);
        m.register(|r| r.register("reloads", "Reloads", c.clone()));
        let om = m.encode(true);
        assert!(om.contains("# TYPE expressgateway_reloads counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let prom = m.encode(false);
        assert!(
            prom.contains("# TYPE expressgateway_reloads_total counter"),
            "{prom}"
        );
        assert!(prom.contains("expressgateway_reloads_total 3"), "{prom}");
        assert!(!prom.contains("# EOF"), "{prom}");
    }
}
