//! One candidate through the gate: resolve → fetch evidence → verify → evaluate policy → decide.
//! `tollgate check` and the daemon both call [`Gate::evaluate`], so they cannot disagree.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Contract, Environment, Policy};
use crate::gate::decide::{self, Decision};
use crate::gate::evidence::EvidenceError;
use crate::gate::{policy, verify, Candidate, Verified};
use crate::image::{Digest, ImageRef};
use crate::oci::Stores;
use crate::reason::ReasonCode;
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("environment `{0}` is not defined in the configuration")]
    UnknownEnvironment(String),
    #[error("environment `{0}` has no policy: set `policy:` on it to evaluate candidates for it")]
    NoPolicy(String),
}

/// The result of evaluating one candidate: what was decided, on what evidence, under which policy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    pub candidate: Candidate,
    pub decision: Decision,
    pub policy: String,
    pub policy_digest: Digest,
    pub verified: Verified,
}

impl Evaluation {
    pub fn record(&self) -> crate::gate::record::Record<'_> {
        crate::gate::record::Record {
            candidate: &self.candidate,
            decision: &self.decision,
            policy_name: &self.policy,
            policy_digest: &self.policy_digest,
            materials: &self.verified.materials,
        }
    }
}

/// The gate's shared, read-only state.
pub struct Gate {
    pub config: Arc<Config>,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
}

/// Where a candidate came from, when it came from an upstream environment.
pub struct Source {
    pub environment: String,
    pub commit: String,
}

impl Gate {
    pub fn policy_for(&self, environment: &str) -> Result<(&Environment, &Policy, &Contract), PipelineError> {
        let env = self
            .config
            .environments
            .get(environment)
            .ok_or_else(|| PipelineError::UnknownEnvironment(environment.to_string()))?;
        let policy = env
            .policy
            .as_ref()
            .and_then(|p| self.config.policies.get(p))
            .ok_or_else(|| PipelineError::NoPolicy(environment.to_string()))?;
        // Validation guarantees the contract exists; an absent one would be a bug, reported the same way.
        let contract = self
            .config
            .contracts
            .get(&policy.contract)
            .ok_or_else(|| PipelineError::NoPolicy(environment.to_string()))?;
        Ok((env, policy, contract))
    }

    pub fn policy_digest(&self, environment: &str) -> Result<Digest, PipelineError> {
        let (_, policy, contract) = self.policy_for(environment)?;
        Ok(policy::policy_digest(policy, contract, &self.config.trust.signers))
    }

    /// The registry label for metrics: a configured registry, else `other` (bounded cardinality).
    fn registry_label(&self, image: &ImageRef) -> String {
        let host = image.registry();
        if self.config.registries.contains_key(host) {
            host.to_string()
        } else {
            "other".to_string()
        }
    }

    pub async fn evaluate(
        &self,
        environment: &str,
        upstream_ref: &ImageRef,
        source: Option<Source>,
    ) -> Result<Evaluation, PipelineError> {
        let started = Instant::now();
        let (env, policy, contract) = self.policy_for(environment)?;
        let policy_digest = policy::policy_digest(policy, contract, &self.config.trust.signers);
        let store = self.stores.for_image(upstream_ref);
        let registry = self.registry_label(upstream_ref);
        let mut candidate = Candidate {
            environment: env.name.clone(),
            upstream_ref: upstream_ref.clone(),
            digest: upstream_ref.digest.clone().unwrap_or_else(|| Digest::of(b"")),
            source_environment: source.as_ref().map(|s| s.environment.clone()),
            source_commit: source.as_ref().map(|s| s.commit.clone()),
        };
        let finish = |candidate: Candidate, decision: Decision, verified: Verified| {
            self.metrics.observe_evaluation(environment, started.elapsed());
            Ok(Evaluation {
                candidate,
                decision,
                policy: policy.name.clone(),
                policy_digest: policy_digest.clone(),
                verified,
            })
        };

        let fetched = async {
            let digest = store.resolve(upstream_ref).await?;
            let evidence = store.fetch(upstream_ref, &digest).await?;
            Ok::<_, EvidenceError>((digest, evidence))
        }
        .await;
        let (digest, evidence) = match fetched {
            Ok(v) => {
                self.metrics.record_registry(&registry, "success");
                v
            }
            Err(e) => {
                tracing::warn!(error = %e, "evidence fetch failed");
                let decision = match &e {
                    EvidenceError::Unavailable { .. } | EvidenceError::NotFound { .. } => {
                        self.metrics.record_registry(&registry, "unavailable");
                        decide::defer(policy.mode, e.to_string())
                    }
                    EvidenceError::Invalid { .. } | EvidenceError::Write { .. } => {
                        self.metrics.record_registry(&registry, "invalid");
                        decide::block_unusable(policy.mode, ReasonCode::EvidenceUnavailable, e.to_string())
                    }
                };
                return finish(candidate, decision, Verified::default());
            }
        };
        candidate.digest = digest;
        let verified = verify::verify(&evidence, &candidate.digest, &self.config.trust.signers);
        let results = policy::evaluate(policy, contract, &candidate, &verified);
        let decision = decide::decide(policy.mode, results);
        finish(candidate, decision, verified)
    }
}
