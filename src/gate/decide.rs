//! Deciding (pure): rule results + mode (+ per-rule mode overrides) + applied waivers → allow or
//! block; a transient fetch failure → defer.

use std::collections::BTreeMap;

use crate::config::Mode;
use crate::gate::waivers::{AppliedWaiver, ExpiredWaiver};
use crate::gate::{DecisionKind, Outcome, RuleResult};
use crate::reason::ReasonCode;

/// The decision on one candidate, with every rule result and waiver that led to it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    pub kind: DecisionKind,
    pub mode: Mode,
    pub results: Vec<RuleResult>,
    /// Waivers that turned failures into `waived` results (one `Tollgate-Waiver` trailer each).
    pub waivers: Vec<AppliedWaiver>,
    /// Waivers that would have applied but have expired: reported, not applied.
    pub expired_waivers: Vec<ExpiredWaiver>,
}

impl Decision {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.results.iter().filter(|r| r.outcome == outcome).count()
    }

    /// Reason codes of every failed or warned rule, in result order, without repeats (one
    /// `Tollgate-Reason` trailer each). A waived rule contributes `waived`: what it would have
    /// failed with is in its `Tollgate-Waiver` trailer.
    pub fn reasons(&self) -> Vec<ReasonCode> {
        let mut out = Vec::new();
        for r in &self.results {
            let code = match r.outcome {
                Outcome::Fail | Outcome::Warn => r.reason,
                Outcome::Waived => Some(ReasonCode::Waived),
                Outcome::Pass | Outcome::Skip => None,
            };
            if let Some(code) = code {
                if !out.contains(&code) {
                    out.push(code);
                }
            }
        }
        out
    }
}

/// The key a rule result is overridden by in `rule_modes`: its rule name, or the family before `:`
/// (`contract:SBOM_CYCLONEDX_JSON` → `contract`, `rego:prod.rego` → `rego`).
fn override_for(overrides: &BTreeMap<String, Mode>, rule: &str) -> Option<Mode> {
    overrides
        .get(rule)
        .or_else(|| rule.split_once(':').and_then(|(family, _)| overrides.get(family)))
        .copied()
}

/// In `enforce` mode any failure blocks; in `warn` mode failures become warnings and the candidate
/// is allowed. A candidate with no results at all (an empty contract and no rules) is allowed: the
/// operator asked for nothing.
pub fn decide(mode: Mode, results: Vec<RuleResult>) -> Decision {
    decide_with(mode, &BTreeMap::new(), results, Vec::new(), Vec::new())
}

/// [`decide`] with per-rule mode overrides (`rule_modes`: a rule set to `warn` only warns in an
/// enforcing policy, one set to `enforce` still blocks in a warning policy) and the waivers that
/// were applied to `results` (waived results never block).
pub fn decide_with(
    mode: Mode,
    overrides: &BTreeMap<String, Mode>,
    mut results: Vec<RuleResult>,
    waivers: Vec<AppliedWaiver>,
    expired_waivers: Vec<ExpiredWaiver>,
) -> Decision {
    for r in results.iter_mut().filter(|r| r.outcome == Outcome::Fail) {
        if override_for(overrides, &r.rule).unwrap_or(mode) == Mode::Warn {
            r.outcome = Outcome::Warn;
        }
    }
    let kind = if results.iter().any(|r| r.outcome == Outcome::Fail) {
        DecisionKind::Block
    } else {
        DecisionKind::Allow
    };
    Decision {
        kind,
        mode,
        results,
        waivers,
        expired_waivers,
    }
}

/// Evidence could not be fetched: nothing is decided, the candidate is retried later.
pub fn defer(mode: Mode, message: String) -> Decision {
    Decision {
        kind: DecisionKind::Defer,
        mode,
        results: vec![RuleResult {
            rule: "evidence".to_string(),
            outcome: Outcome::Fail,
            reason: Some(ReasonCode::EvidenceUnavailable),
            message,
            evidence: vec![],
        }],
        waivers: Vec::new(),
        expired_waivers: Vec::new(),
    }
}

/// Evidence was fetched but is unusable (hostile or corrupt content): a reasoned block, in any mode.
pub fn block_unusable(mode: Mode, reason: ReasonCode, message: String) -> Decision {
    Decision {
        kind: DecisionKind::Block,
        mode,
        results: vec![RuleResult {
            rule: "evidence".to_string(),
            outcome: Outcome::Fail,
            reason: Some(reason),
            message,
            evidence: vec![],
        }],
        waivers: Vec::new(),
        expired_waivers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome, reason: Option<ReasonCode>) -> RuleResult {
        RuleResult {
            rule: "r".into(),
            outcome,
            reason,
            message: String::new(),
            evidence: vec![],
        }
    }

    #[test]
    fn enforce_blocks_on_any_failure() {
        let d = decide(
            Mode::Enforce,
            vec![
                result(Outcome::Pass, None),
                result(Outcome::Fail, Some(ReasonCode::LatestTag)),
            ],
        );
        assert_eq!(d.kind, DecisionKind::Block);
        assert_eq!(d.reasons(), vec![ReasonCode::LatestTag]);
    }

    #[test]
    fn warn_allows_and_keeps_the_reasons() {
        let d = decide(
            Mode::Warn,
            vec![result(Outcome::Fail, Some(ReasonCode::MaterialMissing))],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
        assert_eq!(d.count(Outcome::Warn), 1);
        assert_eq!(d.reasons(), vec![ReasonCode::MaterialMissing]);
    }

    #[test]
    fn skipped_optional_material_does_not_block() {
        let d = decide(
            Mode::Enforce,
            vec![result(Outcome::Skip, None), result(Outcome::Pass, None)],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
    }

    #[test]
    fn defer_is_never_an_allow() {
        assert_eq!(defer(Mode::Warn, "down".into()).kind, DecisionKind::Defer);
        assert_eq!(
            block_unusable(Mode::Warn, ReasonCode::EvidenceUnavailable, "big".into()).kind,
            DecisionKind::Block
        );
    }

    fn named(rule: &str, outcome: Outcome, reason: Option<ReasonCode>) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            ..result(outcome, reason)
        }
    }

    #[test]
    fn a_rule_overridden_to_warn_only_warns_in_enforce_mode() {
        let overrides = BTreeMap::from([("sarif_max_errors".to_string(), Mode::Warn)]);
        let d = decide_with(
            Mode::Enforce,
            &overrides,
            vec![named("sarif_max_errors", Outcome::Fail, Some(ReasonCode::SarifErrors))],
            vec![],
            vec![],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
        assert_eq!(d.results[0].outcome, Outcome::Warn);
        assert_eq!(d.reasons(), vec![ReasonCode::SarifErrors]);
        // Other rules still enforce.
        let d = decide_with(
            Mode::Enforce,
            &overrides,
            vec![
                named("sarif_max_errors", Outcome::Fail, Some(ReasonCode::SarifErrors)),
                named("no_latest_tag", Outcome::Fail, Some(ReasonCode::LatestTag)),
            ],
            vec![],
            vec![],
        );
        assert_eq!(d.kind, DecisionKind::Block);
    }

    #[test]
    fn a_rule_overridden_to_enforce_blocks_in_warn_mode() {
        let overrides = BTreeMap::from([
            ("rego".to_string(), Mode::Enforce),
            ("contract".to_string(), Mode::Enforce),
        ]);
        for rule in ["rego:prod.rego", "contract:SBOM_CYCLONEDX_JSON"] {
            let d = decide_with(
                Mode::Warn,
                &overrides,
                vec![named(rule, Outcome::Fail, Some(ReasonCode::RegoViolation))],
                vec![],
                vec![],
            );
            assert_eq!(d.kind, DecisionKind::Block, "{rule}");
        }
        let d = decide_with(
            Mode::Warn,
            &overrides,
            vec![named("digest_pinned", Outcome::Fail, Some(ReasonCode::DigestNotPinned))],
            vec![],
            vec![],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
    }

    #[test]
    fn a_waived_result_does_not_block_and_reads_as_waived() {
        let d = decide(
            Mode::Enforce,
            vec![
                result(Outcome::Waived, Some(ReasonCode::MaterialMissing)),
                result(Outcome::Pass, None),
            ],
        );
        assert_eq!(d.kind, DecisionKind::Allow);
        assert_eq!(d.reasons(), vec![ReasonCode::Waived]);
    }

    /// A tiny deterministic generator: the property below needs variety, not a framework.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    /// Property: in enforce mode, no mix of missing, unverified or wrongly signed evidence, failing
    /// built-in rules, waivers that do not match (other reason, other image, expired) and
    /// `rule_modes` that only enforce ever gives an allow.
    #[test]
    fn nothing_short_of_a_matching_waiver_turns_a_failure_into_an_allow() {
        use crate::config::{Contract, MaterialRequirement, Policy, Rules};
        use crate::gate::{
            policy, waivers, Candidate, EvidenceSource, Material, MaterialKind, Rejection, SignerMatch, Verified,
        };
        use crate::image::{Digest, ImageRef};

        let digest = |n: u8| Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap();
        let now = time::macros::datetime!(2025-03-01 12:00 UTC);
        let kinds = [
            MaterialKind::ImageSignature,
            MaterialKind::SlsaProvenance,
            MaterialKind::SbomCyclonedxJson,
            MaterialKind::Sarif,
        ];
        let rejections = [
            ReasonCode::SignatureInvalid,
            ReasonCode::IdentityMismatch,
            ReasonCode::TlogInvalid,
            ReasonCode::SubjectMismatch,
        ];
        let references = [
            "ghcr.io/acme/api:latest",
            "ghcr.io/acme/api",
            "ghcr.io/acme/api:1.0",
            "ghcr.io/acme/api:1.0@sha256:0101010101010101010101010101010101010101010101010101010101010101",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for _ in 0..3000 {
            // A contract of 1..=4 materials, each present and good, missing, rejected or signed by
            // someone the contract does not accept.
            let n = 1 + rng.below(kinds.len());
            let mut materials = Vec::new();
            let mut verified = Verified::default();
            for (i, kind) in kinds.iter().take(n).enumerate() {
                materials.push(MaterialRequirement {
                    kind: *kind,
                    name: None,
                    predicate_type: None,
                    signers: vec!["release-key".into()],
                    optional: rng.below(4) == 0,
                });
                let predicate = kind.predicate_types().first().copied().unwrap_or("x").to_string();
                let d = digest(10 + i as u8);
                match rng.below(4) {
                    0 => {}
                    1 => verified.rejections.push(Rejection {
                        predicate_type: Some(predicate),
                        kind: Some(*kind),
                        source: EvidenceSource::Att,
                        digest: d,
                        reason: rng.pick(&rejections),
                        message: "bad".into(),
                    }),
                    state => verified.materials.push(Material {
                        kind: *kind,
                        predicate_type: predicate,
                        signer: SignerMatch {
                            signer: if state == 2 {
                                "release-key".into()
                            } else {
                                "stranger".into()
                            },
                            method: if rng.below(2) == 0 { "key" } else { "keyless" },
                            identity: None,
                        },
                        source: EvidenceSource::Att,
                        digest: d,
                        statement: serde_json::json!({}),
                    }),
                }
            }
            let rules = Rules {
                digest_pinned: rng.below(2) == 0,
                no_latest_tag: rng.below(2) == 0,
                ..Rules::default()
            };
            let policy = Policy {
                name: "prod".into(),
                contract: "release".into(),
                mode: Mode::Enforce,
                rules,
                waivers: None,
            };
            let contract = Contract {
                name: "release".into(),
                materials,
            };
            let upstream_ref = ImageRef::parse(rng.pick(&references)).unwrap();
            let candidate = Candidate {
                environment: "prod".into(),
                digest: upstream_ref.digest.clone().unwrap_or_else(|| digest(1)),
                upstream_ref,
                source_environment: Some("staging".into()),
                source_commit: None,
            };
            let results = policy::evaluate(&policy, &contract, &candidate, &verified);
            let failing: Vec<ReasonCode> = results
                .iter()
                .filter(|r| r.outcome == Outcome::Fail)
                .filter_map(|r| r.reason)
                .collect();
            if failing.is_empty() {
                continue;
            }
            // Waivers that do not match: another reason, another image, or expired.
            let others: Vec<ReasonCode> = ReasonCode::ALL
                .into_iter()
                .filter(|c| !failing.contains(c) && !matches!(c, ReasonCode::Waived | ReasonCode::EvidenceUnavailable))
                .collect();
            let mut yaml = String::new();
            for _ in 0..rng.below(4) {
                let (reason, image, expires) = match rng.below(3) {
                    0 => (rng.pick(&others), "ghcr.io/acme/*", "2030-01-01"),
                    1 => (rng.pick(&failing), "ghcr.io/other/*", "2030-01-01"),
                    _ => (rng.pick(&failing), "ghcr.io/acme/**", "2025-03-01T11:59:59Z"),
                };
                yaml.push_str(&format!(
                    "- {{reason: {reason}, image: '{image}', expires: '{expires}', justification: j, approved_by: k}}\n"
                ));
            }
            let waivers = waivers::parse("w.yaml", &yaml).unwrap();
            let (results, applied, expired) =
                waivers::apply(results, &waivers, &candidate.upstream_ref.name, &candidate.digest, now);
            assert!(applied.is_empty());
            let overrides: BTreeMap<String, Mode> = [("contract", Mode::Enforce), ("digest_pinned", Mode::Enforce)]
                .into_iter()
                .filter(|_| rng.below(2) == 0)
                .map(|(k, m)| (k.to_string(), m))
                .collect();
            let d = decide_with(Mode::Enforce, &overrides, results, applied, expired);
            assert_eq!(d.kind, DecisionKind::Block, "{d:#?}\n{yaml}");
            checked += 1;
        }
        assert!(checked > 1000, "only {checked} scenarios had a failure");
    }
}
