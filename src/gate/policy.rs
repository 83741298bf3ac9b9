//! Policy evaluation (pure): the contract's required materials and the built-in rules over the
//! verified evidence of one candidate, each giving a [`RuleResult`] with a reason code.

use std::collections::BTreeMap;

use crate::config::{Contract, MaterialRequirement, Policy, Rules, Signer, SubjectMatch};
use crate::gate::{Candidate, Material, MaterialKind, Outcome, Rejection, RuleResult, Verified};
use crate::image::Digest;
use crate::reason::ReasonCode;

/// Evaluates every contract material and every configured rule. Results come in a stable order:
/// contract materials as listed, then rules in SPEC order.
pub fn evaluate(policy: &Policy, contract: &Contract, candidate: &Candidate, verified: &Verified) -> Vec<RuleResult> {
    let mut out: Vec<RuleResult> = contract.materials.iter().map(|req| material(req, verified)).collect();
    out.extend(rules(&policy.rules, candidate));
    out
}

fn satisfies(req: &MaterialRequirement, kind: Option<MaterialKind>, predicate_type: Option<&str>) -> bool {
    match (&req.predicate_type, predicate_type) {
        (Some(wanted), Some(p)) => wanted == p,
        (Some(_), None) => false,
        (None, Some(p)) => req.kind.accepts_predicate(p) || kind == Some(req.kind),
        (None, None) => kind == Some(req.kind),
    }
}

fn material_matches(req: &MaterialRequirement, m: &Material) -> bool {
    satisfies(req, Some(m.kind), Some(&m.predicate_type))
}

fn rejection_matches(req: &MaterialRequirement, r: &Rejection) -> bool {
    satisfies(req, r.kind, r.predicate_type.as_deref())
}

/// The most telling failure among several: a wrong subject or identity says more than a bad signature.
fn rank(reason: ReasonCode) -> u8 {
    match reason {
        ReasonCode::SubjectMismatch => 0,
        ReasonCode::IdentityMismatch => 1,
        ReasonCode::TlogInvalid => 2,
        ReasonCode::SignatureInvalid => 3,
        _ => 4,
    }
}

fn material(req: &MaterialRequirement, verified: &Verified) -> RuleResult {
    let rule = format!("contract:{}", req.label());
    let candidates: Vec<&Material> = verified.materials.iter().filter(|m| material_matches(req, m)).collect();
    let counted: Vec<&Material> = candidates
        .iter()
        .copied()
        .filter(|m| req.signers.contains(&m.signer.signer))
        .collect();
    if !counted.is_empty() {
        let signers: Vec<&str> = counted.iter().map(|m| m.signer.signer.as_str()).collect();
        return RuleResult {
            rule,
            outcome: Outcome::Pass,
            reason: None,
            message: format!("{} verified ({})", req.label(), signers.join(", ")),
            evidence: counted.iter().map(|m| m.digest.clone()).collect(),
        };
    }
    if let Some(m) = candidates.first() {
        let reason = if m.signer.method == "keyless" {
            ReasonCode::IdentityMismatch
        } else {
            ReasonCode::SignatureInvalid
        };
        return RuleResult {
            rule,
            outcome: Outcome::Fail,
            reason: Some(reason),
            message: format!(
                "{} is signed by {}, which does not count for it (accepted: {})",
                req.label(),
                m.signer.signer,
                req.signers.join(", ")
            ),
            evidence: vec![m.digest.clone()],
        };
    }
    let mut rejected: Vec<&Rejection> = verified
        .rejections
        .iter()
        .filter(|r| rejection_matches(req, r))
        .collect();
    rejected.sort_by_key(|r| rank(r.reason));
    if let Some(r) = rejected.first() {
        return RuleResult {
            rule,
            outcome: Outcome::Fail,
            reason: Some(r.reason),
            message: format!("{} present but not accepted: {}", req.label(), r.message),
            evidence: vec![r.digest.clone()],
        };
    }
    if req.optional {
        return RuleResult {
            rule,
            outcome: Outcome::Skip,
            reason: None,
            message: format!("{} (optional) not found", req.label()),
            evidence: vec![],
        };
    }
    let reason = if req.kind == MaterialKind::ImageSignature {
        ReasonCode::SignatureMissing
    } else {
        ReasonCode::MaterialMissing
    };
    RuleResult {
        rule,
        outcome: Outcome::Fail,
        reason: Some(reason),
        message: format!("no {} found for the image", req.label()),
        evidence: vec![],
    }
}

fn pass(rule: &str, message: String) -> RuleResult {
    RuleResult {
        rule: rule.to_string(),
        outcome: Outcome::Pass,
        reason: None,
        message,
        evidence: vec![],
    }
}

fn fail(rule: &str, reason: ReasonCode, message: String) -> RuleResult {
    RuleResult {
        rule: rule.to_string(),
        outcome: Outcome::Fail,
        reason: Some(reason),
        message,
        evidence: vec![],
    }
}

fn rules(rules: &Rules, candidate: &Candidate) -> Vec<RuleResult> {
    let mut out = Vec::new();
    let r = &candidate.upstream_ref;
    if rules.digest_pinned {
        out.push(match &r.digest {
            Some(d) => pass(
                "digest_pinned",
                format!("upstream reference is pinned to {}", d.short()),
            ),
            None => fail(
                "digest_pinned",
                ReasonCode::DigestNotPinned,
                format!(
                    "upstream reference {r} carries no digest; pin it as {}",
                    candidate.pinned()
                ),
            ),
        });
    }
    if rules.no_latest_tag {
        out.push(match (r.tag.as_deref(), &r.digest) {
            (Some("latest"), _) => fail(
                "no_latest_tag",
                ReasonCode::LatestTag,
                format!("{r} uses the `latest` tag"),
            ),
            (None, None) => fail(
                "no_latest_tag",
                ReasonCode::LatestTag,
                format!("{r} has neither tag nor digest, which means `latest`"),
            ),
            _ => pass("no_latest_tag", "the reference does not use `latest`".to_string()),
        });
    }
    // Rules that this version does not evaluate yet fail closed: a configured rule that is silently
    // skipped would be an allow nobody asked for.
    let pending: [(&str, bool, ReasonCode); 6] = [
        (
            "max_vulnerabilities",
            rules.max_vulnerabilities.is_some(),
            ReasonCode::VulnerabilitiesOverThreshold,
        ),
        (
            "sarif_max_errors",
            rules.sarif_max_errors.is_some(),
            ReasonCode::SarifErrors,
        ),
        (
            "provenance",
            rules.provenance.is_some(),
            ReasonCode::ProvenanceSourceMismatch,
        ),
        ("upstream", rules.upstream.is_some(), ReasonCode::UpstreamNotPromoted),
        (
            "chainloop",
            rules.chainloop.as_ref().is_some_and(|c| c.require_not_blocked),
            ReasonCode::ChainloopBlocked,
        ),
        ("rego", !rules.rego.is_empty(), ReasonCode::RegoViolation),
    ];
    for (name, configured, reason) in pending {
        if configured {
            out.push(fail(
                name,
                reason,
                format!("rule `{name}` is not evaluated by this version of tollgate; failing closed"),
            ));
        }
    }
    out
}

/// A stable hash of the effective policy: mode, rules, contract and the identities of the signers it
/// names. Recorded in `Tollgate-Policy`; idempotence keys change exactly when this does.
pub fn policy_digest(policy: &Policy, contract: &Contract, signers: &BTreeMap<String, Signer>) -> Digest {
    let rules = &policy.rules;
    let signer_ids: BTreeMap<&str, String> = contract
        .materials
        .iter()
        .flat_map(|m| m.signers.iter())
        .filter_map(|name| {
            let id = match signers.get(name)? {
                Signer::Key { key, .. } => format!("key:{}:{}", key.algorithm(), key.fingerprint()),
                Signer::Keyless { issuer, subject } => match subject {
                    SubjectMatch::Exact(s) => format!("keyless:{issuer}:exact:{s}"),
                    SubjectMatch::Regex(r) => format!("keyless:{issuer}:regex:{}", r.as_str()),
                },
            };
            Some((name.as_str(), id))
        })
        .collect();
    let canonical = serde_json::json!({
        "version": 1,
        "policy": policy.name,
        "mode": policy.mode.as_str(),
        "contract": {
            "name": contract.name,
            "materials": contract.materials.iter().map(|m| serde_json::json!({
                "kind": m.kind.as_str(),
                "name": m.name,
                "predicate_type": m.predicate_type,
                "signers": m.signers,
                "optional": m.optional,
            })).collect::<Vec<_>>(),
        },
        "signers": signer_ids,
        "rules": {
            "digest_pinned": rules.digest_pinned,
            "no_latest_tag": rules.no_latest_tag,
            "max_vulnerabilities": rules.max_vulnerabilities,
            "sarif_max_errors": rules.sarif_max_errors,
            "provenance": rules.provenance.as_ref().map(|p| (&p.source_repo, &p.builder_id)),
            "upstream": rules.upstream.as_ref().map(|u| (&u.environment, u.soak.as_secs())),
            "chainloop": rules.chainloop.as_ref().map(|c| c.require_not_blocked),
            "rego": rules.rego.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        },
        "waivers": policy.waivers,
    });
    // serde_json's map is ordered (BTreeMap), so this serialisation is canonical.
    Digest::of(canonical.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::gate::{EvidenceSource, SignerMatch};
    use crate::image::ImageRef;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    fn req(kind: MaterialKind, signers: &[&str]) -> MaterialRequirement {
        MaterialRequirement {
            kind,
            name: None,
            predicate_type: None,
            signers: signers.iter().map(|s| s.to_string()).collect(),
            optional: false,
        }
    }

    fn material(predicate: &str, signer: &str, n: u8) -> Material {
        Material {
            kind: MaterialKind::for_predicate(predicate),
            predicate_type: predicate.to_string(),
            signer: SignerMatch {
                signer: signer.to_string(),
                method: "key",
            },
            source: EvidenceSource::Att,
            digest: digest(n),
            statement: serde_json::json!({}),
        }
    }

    fn candidate(reference: &str) -> Candidate {
        let upstream_ref = ImageRef::parse(reference).unwrap();
        Candidate {
            environment: "prod".into(),
            digest: upstream_ref.digest.clone().unwrap_or_else(|| digest(9)),
            upstream_ref,
            source_environment: None,
            source_commit: None,
        }
    }

    fn policy(rules: Rules) -> Policy {
        Policy {
            name: "prod".into(),
            contract: "release".into(),
            mode: Mode::Enforce,
            rules,
            waivers: None,
        }
    }

    fn contract(materials: Vec<MaterialRequirement>) -> Contract {
        Contract {
            name: "release".into(),
            materials,
        }
    }

    #[test]
    fn passes_when_required_material_is_signed_by_an_accepted_signer() {
        let v = Verified {
            materials: vec![material("https://cyclonedx.org/bom", "release-key", 1)],
            rejections: vec![],
        };
        let out = evaluate(
            &policy(Rules::default()),
            &contract(vec![req(MaterialKind::SbomCyclonedxJson, &["release-key"])]),
            &candidate("r.io/a/b:1"),
            &v,
        );
        assert_eq!(out[0].outcome, Outcome::Pass);
        assert_eq!(out[0].evidence, vec![digest(1)]);
    }

    #[test]
    fn blocks_when_sbom_signed_by_a_signer_the_contract_does_not_accept() {
        let v = Verified {
            materials: vec![material("https://cyclonedx.org/bom", "ci-key", 1)],
            rejections: vec![],
        };
        let out = evaluate(
            &policy(Rules::default()),
            &contract(vec![req(MaterialKind::SbomCyclonedxJson, &["release-key"])]),
            &candidate("r.io/a/b:1"),
            &v,
        );
        assert_eq!(
            (out[0].outcome, out[0].reason),
            (Outcome::Fail, Some(ReasonCode::SignatureInvalid))
        );
    }

    #[test]
    fn names_the_failure_when_evidence_is_present_but_rejected() {
        let rej = |reason| Rejection {
            predicate_type: Some("https://slsa.dev/provenance/v1".into()),
            kind: Some(MaterialKind::SlsaProvenance),
            source: EvidenceSource::Att,
            digest: digest(3),
            reason,
            message: "x".into(),
        };
        let v = Verified {
            materials: vec![],
            rejections: vec![rej(ReasonCode::SignatureInvalid), rej(ReasonCode::SubjectMismatch)],
        };
        let out = evaluate(
            &policy(Rules::default()),
            &contract(vec![req(MaterialKind::SlsaProvenance, &["k"])]),
            &candidate("r.io/a/b:1"),
            &v,
        );
        assert_eq!(out[0].reason, Some(ReasonCode::SubjectMismatch));
    }

    #[test]
    fn missing_material_and_missing_signature_have_their_own_codes() {
        let mut optional = req(MaterialKind::Sarif, &["k"]);
        optional.optional = true;
        let out = evaluate(
            &policy(Rules::default()),
            &contract(vec![
                req(MaterialKind::ImageSignature, &["k"]),
                req(MaterialKind::SbomSpdxJson, &["k"]),
                optional,
            ]),
            &candidate("r.io/a/b:1"),
            &Verified::default(),
        );
        let got: Vec<_> = out.iter().map(|r| (r.outcome, r.reason)).collect();
        assert_eq!(
            got,
            vec![
                (Outcome::Fail, Some(ReasonCode::SignatureMissing)),
                (Outcome::Fail, Some(ReasonCode::MaterialMissing)),
                (Outcome::Skip, None),
            ]
        );
    }

    #[test]
    fn attestation_requirement_matches_only_its_predicate_type() {
        let mut r = req(MaterialKind::Attestation, &["k"]);
        r.predicate_type = Some("https://example.com/load-test/v1".into());
        let c = contract(vec![r]);
        let other = Verified {
            materials: vec![material("https://example.com/other/v1", "k", 1)],
            rejections: vec![],
        };
        let own = Verified {
            materials: vec![material("https://example.com/load-test/v1", "k", 1)],
            rejections: vec![],
        };
        let p = policy(Rules::default());
        assert_eq!(
            evaluate(&p, &c, &candidate("r.io/a/b:1"), &other)[0].reason,
            Some(ReasonCode::MaterialMissing)
        );
        assert_eq!(
            evaluate(&p, &c, &candidate("r.io/a/b:1"), &own)[0].outcome,
            Outcome::Pass
        );
    }

    #[test]
    fn digest_pinned_and_no_latest_tag() {
        let p = policy(Rules {
            digest_pinned: true,
            no_latest_tag: true,
            ..Rules::default()
        });
        let c = contract(vec![]);
        let pinned = format!("r.io/a/b:1.2@{}", digest(1));
        let codes = |reference: &str| -> Vec<Option<ReasonCode>> {
            evaluate(&p, &c, &candidate(reference), &Verified::default())
                .iter()
                .map(|r| r.reason)
                .collect()
        };
        assert_eq!(codes(&pinned), vec![None, None]);
        assert_eq!(
            codes("r.io/a/b:latest"),
            vec![Some(ReasonCode::DigestNotPinned), Some(ReasonCode::LatestTag)]
        );
        assert_eq!(
            codes("r.io/a/b"),
            vec![Some(ReasonCode::DigestNotPinned), Some(ReasonCode::LatestTag)]
        );
    }

    #[test]
    fn policy_digest_is_stable_and_changes_with_the_policy() {
        let c = contract(vec![req(MaterialKind::SbomCyclonedxJson, &["k"])]);
        let a = policy_digest(&policy(Rules::default()), &c, &BTreeMap::new());
        assert_eq!(a, policy_digest(&policy(Rules::default()), &c, &BTreeMap::new()));
        let stricter = policy(Rules {
            digest_pinned: true,
            ..Rules::default()
        });
        assert_ne!(a, policy_digest(&stricter, &c, &BTreeMap::new()));
        let mut warn = policy(Rules::default());
        warn.mode = Mode::Warn;
        assert_ne!(a, policy_digest(&warn, &c, &BTreeMap::new()));
    }

    #[test]
    fn rules_not_yet_evaluated_fail_closed() {
        let p = policy(Rules {
            sarif_max_errors: Some(0),
            ..Rules::default()
        });
        let out = evaluate(&p, &contract(vec![]), &candidate("r.io/a/b:1"), &Verified::default());
        assert_eq!(
            (out[0].outcome, out[0].reason),
            (Outcome::Fail, Some(ReasonCode::SarifErrors))
        );
    }
}
