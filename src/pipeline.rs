//! One candidate through the gate: resolve → fetch evidence → verify → evaluate policy → decide.
//! `tollgate check` and the daemon both call [`Gate::evaluate`], so they cannot disagree.

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Contract, Environment, Policy};
use crate::context::{PolicyContext, WaiversState};
use crate::gate::decide::{self, Decision};
use crate::gate::evidence::EvidenceError;
use crate::gate::upstream::Promotion;
use crate::gate::{policy, rego, upstream, waivers, Candidate, DecisionKind, Outcome, RuleResult, Verified};
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
/// `tollgate check --output json` prints it as is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    pub candidate: Candidate,
    /// Every rule result (outcome, reason code, message, evidence digests), the waivers applied and
    /// the expired waivers that would have applied.
    pub decision: Decision,
    pub policy: String,
    /// The effective policy digest recorded in `Tollgate-Policy` (configuration, Rego sources,
    /// rule modes, waivers file).
    pub policy_digest: Digest,
    /// The digest of the configured policy alone ([`policy::policy_digest`]).
    pub base_policy_digest: Digest,
    /// The waivers file as read for this evaluation (`state`: not-configured, absent, loaded, malformed, …).
    pub waivers_file: WaiversState,
    /// The promotion the `upstream` rule relied on, if any.
    pub upstream_promotion: Option<Promotion>,
    pub verified: Verified,
}

/// Rules whose placeholder results from [`policy::evaluate`] are replaced here, where the context
/// they need (git facts, compiled Rego) is at hand.
const CONTEXT_RULES: [&str; 2] = ["upstream", "rego"];

/// The results of the rules that need more than evidence: `upstream` over the gathered promotions,
/// each Rego file over SPEC §6's input.
async fn context_rules(
    policy: &Policy,
    contract: &Contract,
    candidate: &Candidate,
    verified: &Verified,
    ctx: &PolicyContext,
) -> Vec<RuleResult> {
    let mut out = Vec::new();
    let rules = &policy.rules;
    // A promotion statement counts only when signed by a signer the contract lists for PROMOTION:
    // any other configured key (a CI key) must not be able to claim a promotion.
    let signers: Vec<String> = contract
        .materials
        .iter()
        .filter(|m| m.kind == crate::gate::MaterialKind::Promotion)
        .flat_map(|m| m.signers.iter().cloned())
        .collect();
    let attested = crate::gate::promotion::attested(&verified.materials, &signers);
    if let Some(rule) = &rules.upstream {
        // Unavailable is deferred before evaluation; not gathered at all (`None`) is a caller that
        // could not look, which passes only on a signed promotion.
        out.push(upstream::evaluate_chain(
            rule,
            &attested,
            ctx.promotions(),
            &candidate.digest,
            ctx.now,
        ));
    }
    if rules.rego_policies.len() != rules.rego.len() {
        // A configuration built without compiling its Rego (never by `config::load`): fail closed.
        out.push(RuleResult {
            rule: "rego".into(),
            outcome: Outcome::Fail,
            reason: Some(crate::reason::ReasonCode::RegoViolation),
            message: "the Rego policies were not compiled; failing closed".into(),
            evidence: vec![],
        });
    } else if !rules.rego_policies.is_empty() {
        let upstream_env = rules
            .upstream
            .as_ref()
            .map(|u| u.environment.clone())
            .or_else(|| candidate.source_environment.clone());
        // The same precedence as the `upstream` rule: the signed statement, then git.
        let promoted_at = upstream_env.as_deref().and_then(|e| {
            upstream::newest_attested(&attested, e)
                .map(|a| a.predicate.promoted_at)
                .or_else(|| ctx.promoted_at(e, &candidate.digest))
        });
        let input = rego::input(
            candidate,
            &verified.materials,
            &rego::UpstreamInput {
                environment: upstream_env,
                promoted_at,
            },
            ctx.now,
        );
        let policies = rules.rego_policies.clone();
        // Evaluation is CPU work bounded by a time limit; keep it off the async workers.
        let results = tokio::task::spawn_blocking(move || rego::evaluate(&policies, &input)).await;
        match results {
            Ok(r) => out.extend(r),
            Err(e) => out.push(RuleResult {
                rule: "rego".into(),
                outcome: Outcome::Fail,
                reason: Some(crate::reason::ReasonCode::RegoViolation),
                message: format!("rego evaluation failed: {e}"),
                evidence: vec![],
            }),
        }
    }
    out
}

/// Says where evidence found on a platform manifest of a multi-arch candidate came from, on its
/// rejection: the release manager should learn that it exists and why it does not count (tollgate
/// promotes the index digest; see [`crate::oci::cosign::fetch`]), not read a bare subject mismatch.
fn note_platform_evidence(verified: &mut Verified, evidence: &[crate::gate::RawEvidence]) {
    for r in &mut verified.rejections {
        let platform = evidence
            .iter()
            .find(|e| e.digest == r.digest)
            .and_then(|e| e.annotations.get(crate::oci::cosign::ATTACHED_TO));
        if let Some(platform) = platform {
            r.message.push_str(&format!(
                " (attached to platform manifest {platform}, not to the index being promoted: only evidence about the index digest counts)"
            ));
        }
    }
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

    /// Evaluates `upstream_ref` for `environment` with the git facts in `ctx` (waivers, upstream
    /// promotions, `now`); see [`crate::context`] for gathering them.
    pub async fn evaluate(
        &self,
        environment: &str,
        upstream_ref: &ImageRef,
        source: Option<Source>,
        ctx: &PolicyContext,
    ) -> Result<Evaluation, PipelineError> {
        let started = Instant::now();
        let (env, policy, contract) = self.policy_for(environment)?;
        let base_policy_digest = policy::policy_digest(policy, contract, &self.config.trust.signers);
        let policy_digest = crate::context::effective_policy_digest(
            &base_policy_digest,
            &policy.rules.rego_policies,
            &policy.rules.modes,
            &ctx.waivers,
        );
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
            let upstream_promotion = policy.rules.upstream.as_ref().and_then(|u| {
                let promotions = ctx.promotions()?;
                upstream::latest(promotions, &u.environment, &candidate.digest).cloned()
            });
            Ok(Evaluation {
                candidate,
                decision,
                policy: policy.name.clone(),
                policy_digest: policy_digest.clone(),
                base_policy_digest: base_policy_digest.clone(),
                waivers_file: ctx.waivers.clone(),
                upstream_promotion,
                verified,
            })
        };
        // A repository the policy reads could not be read: like unreachable evidence, retry later.
        if let Some(why) = ctx.unavailable() {
            tracing::warn!(error = %why, "policy context unavailable");
            return finish(candidate, decide::defer(policy.mode, why), Verified::default());
        }

        let cache = self.stores.cache();
        let fetched = async {
            // Tags move, so `resolve` always asks; what hangs off a digest is reused briefly only
            // (see `crate::cache` for why the TTL is short).
            let digest = store.resolve(upstream_ref).await?;
            let (host, repository) = (upstream_ref.registry(), upstream_ref.repository());
            if let Some(evidence) = cache.fetched(host, &repository, &digest, Instant::now()) {
                return Ok((digest, evidence, false));
            }
            let evidence = Arc::new(store.fetch(upstream_ref, &digest).await?);
            Ok::<_, EvidenceError>((digest, evidence, true))
        }
        .await;
        let (digest, evidence, fresh) = match fetched {
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
        // Cached per piece of evidence, candidate and trust: same answer as `verify::verify`.
        let mut verified = cache.verify(&evidence, &candidate.digest, &self.config.trust);
        note_platform_evidence(&mut verified, &evidence);
        let mut results = policy::evaluate(policy, contract, &candidate, &verified);
        results.retain(|r| !CONTEXT_RULES.contains(&r.rule.as_str()));
        results.extend(context_rules(policy, contract, &candidate, &verified, ctx).await);
        if let WaiversState::Malformed { error, .. } = &ctx.waivers {
            // Reported on the decision itself so the release manager sees why nothing was waived.
            results.push(RuleResult {
                rule: "waivers".into(),
                outcome: Outcome::Warn,
                reason: None,
                message: format!("waivers file ignored: {error}"),
                evidence: vec![],
            });
        }
        let (results, applied, expired) = waivers::apply(
            results,
            ctx.waivers(),
            &candidate.upstream_ref.name,
            &candidate.digest,
            ctx.now,
        );
        let decision = decide::decide_with(policy.mode, &policy.rules.modes, results, applied, expired);
        // Only a list that allowed is reused: a blocked or deferred candidate is the one waiting
        // for late evidence, so it reads the registry again on every evaluation.
        if fresh && decision.kind == DecisionKind::Allow {
            let (host, repository) = (upstream_ref.registry(), upstream_ref.repository());
            cache.store_fetched(host, &repository, &candidate.digest, evidence, Instant::now());
        }
        finish(candidate, decision, verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{EvidenceSource, RawEvidence, Rejection};

    fn raw(bytes: &[u8], platform: Option<&Digest>) -> RawEvidence {
        RawEvidence {
            source: EvidenceSource::Att,
            media_type: crate::dsse::MEDIA_TYPE.into(),
            digest: Digest::of(bytes),
            bytes: bytes.to_vec(),
            annotations: platform
                .map(|p| (crate::oci::cosign::ATTACHED_TO.to_string(), p.to_string()))
                .into_iter()
                .collect(),
        }
    }

    fn rejected(ev: &RawEvidence) -> Rejection {
        Rejection {
            predicate_type: None,
            kind: None,
            source: ev.source,
            digest: ev.digest.clone(),
            reason: ReasonCode::SubjectMismatch,
            message: "subject mismatch".into(),
        }
    }

    #[test]
    fn rejections_of_platform_evidence_say_where_it_was_attached() {
        let platform = Digest::of(b"linux/amd64 manifest");
        let evidence = [raw(b"on the index", None), raw(b"on a platform", Some(&platform))];
        let mut verified = Verified {
            materials: vec![],
            rejections: evidence.iter().map(rejected).collect(),
        };
        note_platform_evidence(&mut verified, &evidence);
        assert_eq!(verified.rejections[0].message, "subject mismatch");
        let m = &verified.rejections[1].message;
        assert!(
            m.contains(&platform.to_string()) && m.contains("only evidence about the index digest counts"),
            "{m}"
        );
    }
}
