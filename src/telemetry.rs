//! Logging set-up and the [`Metrics`] of SPEC §8: one struct, registered once and handed down.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr; `RUST_LOG` overrides the default level (`info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests, demo inside a process) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvDecision {
    pub environment: String,
    pub decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvReason {
    pub environment: String,
    pub reason: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabel {
    pub environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoResult {
    pub repository: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabel {
    pub repository: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryResult {
    pub registry: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

fn seconds_histogram() -> Histogram {
    // 1 ms … ~65 s: from a cached evaluation to a slow registry.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric of SPEC §8. Label values come from bounded sets only (configured names, reason
/// codes, fixed result words), never from tags, digests or error text.
pub struct Metrics {
    pub registry: Registry,
    pub decisions: Family<EnvDecision, Counter>,
    pub rule_results: Family<EnvReason, Counter>,
    pub evaluation_duration: Family<EnvLabel, Histogram, fn() -> Histogram>,
    pub detection_to_decision: Family<EnvLabel, Histogram, fn() -> Histogram>,
    pub repository_syncs: Family<RepoResult, Counter>,
    pub repository_last_sync: Family<RepoLabel, Gauge<f64, AtomicU64>>,
    pub registry_requests: Family<RegistryResult, Counter>,
    pub candidates_pending: Family<EnvLabel, Gauge>,
    pub build_info: Family<VersionLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<EnvDecision, Counter>::default();
        let rule_results = Family::<EnvReason, Counter>::default();
        let evaluation_duration =
            Family::<EnvLabel, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        let detection_to_decision =
            Family::<EnvLabel, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        let repository_syncs = Family::<RepoResult, Counter>::default();
        let repository_last_sync = Family::<RepoLabel, Gauge<f64, AtomicU64>>::default();
        let registry_requests = Family::<RegistryResult, Counter>::default();
        let candidates_pending = Family::<EnvLabel, Gauge>::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        registry.register(
            "tollgate_decisions",
            "Decisions by environment and outcome",
            decisions.clone(),
        );
        registry.register(
            "tollgate_rule_results",
            "Failed or warned rules by reason code",
            rule_results.clone(),
        );
        registry.register_with_unit(
            "tollgate_evaluation_duration",
            "Time to fetch, verify and evaluate one candidate",
            prometheus_client::registry::Unit::Seconds,
            evaluation_duration.clone(),
        );
        registry.register_with_unit(
            "tollgate_detection_to_decision",
            "Time from noticing a candidate to recording its decision",
            prometheus_client::registry::Unit::Seconds,
            detection_to_decision.clone(),
        );
        registry.register(
            "tollgate_repository_syncs",
            "Repository fetches by result",
            repository_syncs.clone(),
        );
        registry.register_with_unit(
            "tollgate_repository_last_sync_timestamp",
            "Unix time of the last successful sync",
            prometheus_client::registry::Unit::Seconds,
            repository_last_sync.clone(),
        );
        registry.register(
            "tollgate_registry_requests",
            "Evidence fetches by registry and result",
            registry_requests.clone(),
        );
        registry.register(
            "tollgate_candidates_pending",
            "Candidates detected but not yet decided",
            candidates_pending.clone(),
        );
        registry.register(
            "tollgate_build_info",
            "The running tollgate version",
            build_info.clone(),
        );
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        Metrics {
            registry,
            decisions,
            rule_results,
            evaluation_duration,
            detection_to_decision,
            repository_syncs,
            repository_last_sync,
            registry_requests,
            candidates_pending,
            build_info,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail for these metric types.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn observe_evaluation(&self, environment: &str, took: Duration) {
        self.evaluation_duration
            .get_or_create(&EnvLabel {
                environment: environment.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn record_decision(&self, environment: &str, decision: &crate::gate::decide::Decision) {
        self.decisions
            .get_or_create(&EnvDecision {
                environment: environment.to_string(),
                decision: decision.kind.as_str().to_string(),
            })
            .inc();
        for r in &decision.results {
            let result = match r.outcome {
                crate::gate::Outcome::Fail => "fail",
                crate::gate::Outcome::Warn => "warn",
                _ => continue,
            };
            if let Some(code) = r.reason {
                self.rule_results
                    .get_or_create(&EnvReason {
                        environment: environment.to_string(),
                        reason: code.as_str().to_string(),
                        result: result.to_string(),
                    })
                    .inc();
            }
        }
    }

    pub fn record_sync(&self, repository: &str, ok: bool, now_unix: f64) {
        let result = if ok { "success" } else { "failure" };
        self.repository_syncs
            .get_or_create(&RepoResult {
                repository: repository.to_string(),
                result: result.to_string(),
            })
            .inc();
        if ok {
            self.repository_last_sync
                .get_or_create(&RepoLabel {
                    repository: repository.to_string(),
                })
                .set(now_unix);
        }
    }

    /// `registry` must be a configured registry name or `other`.
    pub fn record_registry(&self, registry: &str, result: &str) {
        self.registry_requests
            .get_or_create(&RegistryResult {
                registry: registry.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    pub fn set_pending(&self, environment: &str, n: i64) {
        self.candidates_pending
            .get_or_create(&EnvLabel {
                environment: environment.to_string(),
            })
            .set(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_spec_metric_names() {
        let m = Metrics::new();
        m.record_sync("envs", true, 1.0);
        m.record_registry("127.0.0.1:5000", "success");
        m.set_pending("prod", 2);
        m.observe_evaluation("prod", Duration::from_millis(5));
        m.detection_to_decision
            .get_or_create(&EnvLabel {
                environment: "prod".into(),
            })
            .observe(0.2);
        let d = crate::gate::decide::decide(crate::config::Mode::Enforce, vec![]);
        m.record_decision("prod", &d);
        let text = m.encode();
        for name in [
            "tollgate_decisions_total{environment=\"prod\",decision=\"allow\"} 1",
            "tollgate_evaluation_duration_seconds_bucket",
            "tollgate_detection_to_decision_seconds_count",
            "tollgate_repository_syncs_total{repository=\"envs\",result=\"success\"} 1",
            "tollgate_repository_last_sync_timestamp_seconds{repository=\"envs\"} 1",
            "tollgate_registry_requests_total",
            "tollgate_candidates_pending{environment=\"prod\"} 2",
            "tollgate_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
