//! The promotion attestation (SPEC §5, `https://tollgate.dev/promotion/v1`): what tollgate signs after
//! each allow it wrote, and how the next environment's `upstream` rule reads it back (pure).
//! Field by field: docs/promotion-attestation.md.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::dsse::{Envelope, Statement, INTOTO_PAYLOAD_TYPE};
use crate::gate::{Candidate, DecisionKind, Material, MaterialKind, PROMOTION_PREDICATE_TYPE};
use crate::image::Digest;
use crate::keys::SigningKey;

/// The predicate of a promotion statement. The subject of the statement is the promoted image digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionPredicate {
    /// The environment the image was promoted into.
    pub environment: String,
    /// Where the candidate came from.
    pub source: SourceRef,
    /// The promotion commit tollgate pushed.
    pub promotion: PromotionCommit,
    pub policy: PolicyRef,
    /// Always `allow`: blocks are notes in git, never attested.
    pub decision: DecisionKind,
    /// Every evidence envelope the decision relied on.
    pub evidence: Vec<EvidenceRef>,
    #[serde(with = "rfc3339")]
    pub promoted_at: OffsetDateTime,
}

/// The upstream environment and the commit in it that introduced the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub environment: String,
    pub commit: String,
}

/// The commit that records the promotion in the target environment's repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionCommit {
    /// The repository URL as configured.
    pub repository: String,
    /// The branch the commit was pushed to: the repository's configured branch (only direct writes
    /// are attested).
    pub branch: String,
    pub commit: String,
}

/// The policy the decision was made under (`Tollgate-Policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub name: String,
    /// The effective policy digest, as in the `Tollgate-Policy` trailer.
    pub digest: String,
    /// `enforce` or `warn`.
    pub mode: String,
}

/// One verified material the decision relied on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// The material kind (`SLSA_PROVENANCE`, …).
    pub kind: String,
    /// The digest of the envelope, signature layer or bundle that carried it.
    pub digest: String,
}

// Deserialize for `DecisionKind` is only needed here, so it is spelled out rather than derived in mod.rs.
impl<'de> Deserialize<'de> for DecisionKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "allow" => Ok(DecisionKind::Allow),
            "block" => Ok(DecisionKind::Block),
            "defer" => Ok(DecisionKind::Defer),
            other => Err(serde::de::Error::custom(format!("unknown decision `{other}`"))),
        }
    }
}

mod rfc3339 {
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    pub fn serialize<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        s.serialize_str(&t.format(&Rfc3339).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        use serde::de::Error as _;
        let text = <String as serde::Deserialize>::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(D::Error::custom)
    }
}

impl PromotionPredicate {
    /// The predicate for an allow of `eval` recorded by `promotion` at `promoted_at`.
    pub fn for_allow(
        eval: &crate::pipeline::Evaluation,
        promotion: PromotionCommit,
        promoted_at: OffsetDateTime,
    ) -> PromotionPredicate {
        PromotionPredicate {
            environment: eval.candidate.environment.clone(),
            source: SourceRef {
                environment: eval.candidate.source_environment.clone().unwrap_or_default(),
                commit: eval.candidate.source_commit.clone().unwrap_or_default(),
            },
            promotion,
            policy: PolicyRef {
                name: eval.policy.clone(),
                digest: eval.policy_digest.to_string(),
                mode: eval.decision.mode.as_str().to_string(),
            },
            decision: DecisionKind::Allow,
            evidence: relied_on(&eval.decision.results, &eval.verified.materials),
            promoted_at,
        }
    }
}

/// The evidence a decision relied on: the verified materials whose digests a rule result cites,
/// each (kind, digest) once, in a stable order.
pub fn relied_on(results: &[crate::gate::RuleResult], materials: &[Material]) -> Vec<EvidenceRef> {
    let cited: BTreeSet<&Digest> = results.iter().flat_map(|r| r.evidence.iter()).collect();
    materials
        .iter()
        .filter(|m| cited.contains(&m.digest))
        .map(|m| EvidenceRef {
            kind: m.kind.as_str().to_string(),
            digest: m.digest.to_string(),
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The in-toto statement for `predicate` about `candidate`'s digest.
pub fn statement(candidate: &Candidate, predicate: &PromotionPredicate) -> Statement {
    // Serializing a struct of strings cannot fail; Null would only make verification fail later.
    let value = serde_json::to_value(predicate).unwrap_or(serde_json::Value::Null);
    Statement::new(
        &candidate.upstream_ref.name,
        &candidate.digest,
        PROMOTION_PREDICATE_TYPE,
        value,
    )
}

/// The signed DSSE envelope (JSON bytes) to attach in the cosign `.att` layout.
pub fn sign(statement: &Statement, key: &SigningKey) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    Envelope::sign(INTOTO_PAYLOAD_TYPE, &payload, key).to_json()
}

/// A verified promotion statement, as the `upstream` rule reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestedPromotion {
    pub predicate: PromotionPredicate,
    /// The configured signer that verified it.
    pub signer: String,
    /// The envelope's digest.
    pub envelope: Digest,
}

/// The promotion statements among `materials` signed by one of `signers` (the signers the contract
/// lists for `PROMOTION`). A statement whose predicate does not parse is not a promotion.
pub fn attested(materials: &[Material], signers: &[String]) -> Vec<AttestedPromotion> {
    materials
        .iter()
        .filter(|m| m.kind == MaterialKind::Promotion && signers.contains(&m.signer.signer))
        .filter_map(|m| {
            let predicate: PromotionPredicate = serde_json::from_value(m.statement.get("predicate")?.clone()).ok()?;
            (predicate.decision == DecisionKind::Allow).then(|| AttestedPromotion {
                predicate,
                signer: m.signer.signer.clone(),
                envelope: m.digest.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{EvidenceSource, SignerMatch};
    use time::macros::datetime;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    pub(crate) fn predicate(environment: &str, at: OffsetDateTime) -> PromotionPredicate {
        PromotionPredicate {
            environment: environment.into(),
            source: SourceRef {
                environment: "dev".into(),
                commit: "1111111111111111111111111111111111111111".into(),
            },
            promotion: PromotionCommit {
                repository: "https://git.example/platform/envs.git".into(),
                branch: "main".into(),
                commit: "2222222222222222222222222222222222222222".into(),
            },
            policy: PolicyRef {
                name: "staging".into(),
                digest: digest(9).to_string(),
                mode: "enforce".into(),
            },
            decision: DecisionKind::Allow,
            evidence: vec![EvidenceRef {
                kind: "SLSA_PROVENANCE".into(),
                digest: digest(3).to_string(),
            }],
            promoted_at: at,
        }
    }

    #[test]
    fn predicate_round_trips_through_json() {
        let p = predicate("staging", datetime!(2025-03-01 11:30:05 UTC));
        let text = serde_json::to_string(&p).unwrap();
        let back: PromotionPredicate = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn predicate_json_is_what_verifiers_read() {
        let p = predicate("staging", datetime!(2025-03-01 11:30:05 UTC));
        insta::assert_snapshot!(serde_json::to_string_pretty(&p).unwrap());
    }

    #[test]
    fn a_predicate_without_rfc3339_time_does_not_parse() {
        let mut v = serde_json::to_value(predicate("staging", datetime!(2025-03-01 11:30 UTC))).unwrap();
        v["promoted_at"] = serde_json::json!("yesterday");
        assert!(serde_json::from_value::<PromotionPredicate>(v).is_err());
    }

    fn material(signer: &str, p: &PromotionPredicate) -> Material {
        let candidate = Candidate {
            environment: "staging".into(),
            upstream_ref: crate::image::ImageRef::parse("ghcr.io/acme/api:1.0").unwrap(),
            digest: digest(1),
            source_environment: None,
            source_commit: None,
        };
        Material {
            kind: MaterialKind::Promotion,
            predicate_type: PROMOTION_PREDICATE_TYPE.into(),
            signer: SignerMatch {
                signer: signer.into(),
                method: "key",
                identity: None,
            },
            source: EvidenceSource::Att,
            digest: digest(7),
            statement: serde_json::to_value(statement(&candidate, p)).unwrap(),
        }
    }

    #[test]
    fn only_statements_by_listed_signers_are_read() {
        let p = predicate("staging", datetime!(2025-03-01 11:30 UTC));
        let ms = [material("staging-promoter", &p), material("ci-key", &p)];
        let got = attested(&ms, &["staging-promoter".to_string()]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].signer, "staging-promoter");
        assert_eq!(got[0].predicate, p);
        assert!(attested(&ms, &[]).is_empty());
    }

    #[test]
    fn evidence_is_what_the_results_cite() {
        let p = predicate("staging", datetime!(2025-03-01 11:30 UTC));
        let m = material("ci-key", &p);
        let results = vec![crate::gate::RuleResult {
            rule: "contract:PROMOTION".into(),
            outcome: crate::gate::Outcome::Pass,
            reason: None,
            message: String::new(),
            evidence: vec![m.digest.clone(), m.digest.clone()],
        }];
        let got = relied_on(&results, std::slice::from_ref(&m));
        assert_eq!(
            got,
            vec![EvidenceRef {
                kind: "PROMOTION".into(),
                digest: digest(7).to_string()
            }]
        );
        assert!(relied_on(&[], &[m]).is_empty());
    }
}
