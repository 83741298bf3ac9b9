//! Policy evaluation (pure): the contract's required materials and the built-in rules over the
//! verified evidence of one candidate, each giving a [`RuleResult`] with a reason code.

use std::collections::BTreeMap;

use crate::config::{claims_id, Contract, MaterialRequirement, Policy, Rules, Signer, SubjectMatch};
use crate::gate::rules::{chainloop, provenance, sarif, vulns};
use crate::gate::{Candidate, Material, MaterialKind, Outcome, Rejection, RuleResult, Verified};
use crate::image::Digest;
use crate::reason::ReasonCode;

/// Evaluates every contract material and every configured rule. Results come in a stable order:
/// contract materials as listed, then rules in SPEC order.
pub fn evaluate(policy: &Policy, contract: &Contract, candidate: &Candidate, verified: &Verified) -> Vec<RuleResult> {
    let mut out: Vec<RuleResult> = contract.materials.iter().map(|req| material(req, verified)).collect();
    out.extend(rules(&policy.rules, candidate, &rule_materials(contract, verified)));
    out
}

/// The verified materials the built-in rules may read.
///
/// The contract says whose signatures count for each kind, and that holds for the rules too: an SBOM
/// signed by a key the contract does not accept for `SBOM_CYCLONEDX_JSON` neither satisfies the
/// contract nor feeds `max_vulnerabilities`. For a kind the contract does not list, any configured
/// signer counts (every configured signer is trusted for something, and a rule such as
/// `sarif_max_errors` should not require listing `SARIF`), with one exception: OpenVEX only takes
/// findings away, so it counts only when the contract lists `OPENVEX` (`optional: true` is enough)
/// with the signers allowed to make that call. Otherwise any CI key that signs SBOMs could also sign
/// away every critical vulnerability.
fn rule_materials(contract: &Contract, verified: &Verified) -> Vec<Material> {
    verified
        .materials
        .iter()
        .filter(|m| {
            let reqs: Vec<&MaterialRequirement> =
                contract.materials.iter().filter(|r| material_matches(r, m)).collect();
            if reqs.is_empty() {
                !(m.kind == MaterialKind::Openvex || MaterialKind::Openvex.accepts_predicate(&m.predicate_type))
            } else {
                reqs.iter().any(|r| r.signers.contains(&m.signer.signer))
            }
        })
        .cloned()
        .collect()
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
    if let Some(listed) = chainloop_listed(req, verified) {
        return listed;
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

/// SPEC §3: the materials a Chainloop attestation lists count as present. A required material of kind
/// K is satisfied by a verified Chainloop attestation (about the candidate: [`crate::gate::verify`]
/// accepts one only if its subjects or its `CONTAINER_IMAGE` materials name it) whose signer is among
/// that material's `signers`, and that lists a material of a Chainloop type mapping to K, with a
/// sha256 digest. The signer must count for K, not merely for `CHAINLOOP_ATTESTATION`: listing an SBOM
/// is a claim about K made by that signer. A material that names its own `predicate_type` is not
/// satisfied this way (Chainloop types carry no predicate type); nor is `ATTESTATION`.
fn chainloop_listed(req: &MaterialRequirement, verified: &Verified) -> Option<RuleResult> {
    if req.predicate_type.is_some() || req.kind == MaterialKind::ChainloopAttestation {
        return None;
    }
    verified
        .materials
        .iter()
        .filter(|m| m.kind == MaterialKind::ChainloopAttestation && req.signers.contains(&m.signer.signer))
        .find_map(|m| {
            let listed = chainloop::chainloop_material_kinds(&m.statement)
                .into_iter()
                .find(|c| c.kind == Some(req.kind) && c.sha256.is_some())?;
            Some(RuleResult {
                rule: format!("contract:{}", req.label()),
                outcome: Outcome::Pass,
                reason: None,
                message: format!(
                    "{} listed in Chainloop attestation {} (material `{}`, {} sha256:{}; signed by {})",
                    req.label(),
                    m.digest,
                    listed.name,
                    listed.chainloop_type,
                    listed.sha256.as_deref().unwrap_or_default(),
                    m.signer.signer
                ),
                evidence: vec![m.digest.clone()],
            })
        })
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

/// The configured rules in SPEC order, each over `materials` (see [`rule_materials`]).
fn rules(rules: &Rules, candidate: &Candidate, materials: &[Material]) -> Vec<RuleResult> {
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
    if let Some(limits) = &rules.max_vulnerabilities {
        out.push(vulns::evaluate(limits, materials, &candidate.digest));
    }
    if let Some(max) = rules.sarif_max_errors {
        out.push(sarif::evaluate(max, materials));
    }
    if let Some(p) = &rules.provenance {
        out.push(provenance::evaluate(p, materials));
    }
    if rules.upstream.is_some() {
        out.push(not_evaluated("upstream", ReasonCode::UpstreamNotPromoted));
    }
    if rules.chainloop.as_ref().is_some_and(|c| c.require_not_blocked) {
        out.push(chainloop::evaluate(materials, &candidate.digest));
    }
    if !rules.rego.is_empty() {
        out.push(not_evaluated("rego", ReasonCode::RegoViolation));
    }
    out
}

/// Rules that this version does not evaluate yet fail closed: a configured rule that is silently
/// skipped would be an allow nobody asked for.
fn not_evaluated(name: &str, reason: ReasonCode) -> RuleResult {
    fail(
        name,
        reason,
        format!("rule `{name}` is not evaluated by this version of tollgate; failing closed"),
    )
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
                Signer::Keyless {
                    issuer,
                    subject,
                    claims,
                } => match subject {
                    SubjectMatch::Exact(s) => format!("keyless:{issuer}:exact:{s}{}", claims_id(claims)),
                    SubjectMatch::Regex(r) => format!("keyless:{issuer}:regex:{}{}", r.as_str(), claims_id(claims)),
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
                identity: None,
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
            upstream: Some(crate::config::UpstreamRule {
                environment: "staging".into(),
                soak: std::time::Duration::ZERO,
            }),
            ..Rules::default()
        });
        let out = evaluate(&p, &contract(vec![]), &candidate("r.io/a/b:1"), &Verified::default());
        assert_eq!(
            (out[0].outcome, out[0].reason),
            (Outcome::Fail, Some(ReasonCode::UpstreamNotPromoted))
        );
    }

    fn evidence_rules() -> Rules {
        Rules {
            max_vulnerabilities: Some(BTreeMap::from([("critical".to_string(), 0)])),
            sarif_max_errors: Some(0),
            provenance: Some(crate::config::ProvenanceRule {
                source_repo: Some("https://github.com/acme/*".into()),
                builder_id: None,
            }),
            chainloop: Some(crate::config::ChainloopRule {
                require_not_blocked: true,
            }),
            ..Rules::default()
        }
    }

    #[test]
    fn evidence_rules_without_evidence_fail_closed_in_spec_order() {
        let out = evaluate(
            &policy(evidence_rules()),
            &contract(vec![]),
            &candidate("r.io/a/b:1"),
            &Verified::default(),
        );
        let got: Vec<(&str, Option<ReasonCode>)> = out.iter().map(|r| (r.rule.as_str(), r.reason)).collect();
        assert_eq!(
            got,
            vec![
                ("max_vulnerabilities", Some(ReasonCode::MaterialMissing)),
                ("sarif_max_errors", Some(ReasonCode::MaterialMissing)),
                ("provenance", Some(ReasonCode::MaterialMissing)),
                ("chainloop", Some(ReasonCode::MaterialMissing)),
            ]
        );
    }

    fn with_statement(predicate_type: &str, signer: &str, n: u8, predicate: serde_json::Value) -> Material {
        let mut m = material(predicate_type, signer, n);
        m.statement = serde_json::json!({"predicateType": predicate_type, "predicate": predicate});
        m
    }

    fn trivy_report(signer: &str, n: u8) -> Material {
        with_statement(
            "https://cosign.sigstore.dev/attestation/vuln/v1",
            signer,
            n,
            serde_json::json!({"scanner": {"result": {"SchemaVersion": 2, "ArtifactName": "x", "Results": [
                {"Vulnerabilities": [{"VulnerabilityID": "CVE-1", "PkgName": "musl", "InstalledVersion": "1", "Severity": "CRITICAL"}]}
            ]}}}),
        )
    }

    fn vex(signer: &str, n: u8, image: &Digest) -> Material {
        with_statement(
            "https://openvex.dev/ns/v0.2.0",
            signer,
            n,
            serde_json::json!({"statements": [{
                "vulnerability": {"name": "CVE-1"},
                "products": [{"@id": format!("pkg:oci/b@{}", image.as_str().replace(':', "%3A"))}],
                "status": "not_affected",
            }]}),
        )
    }

    fn vulns_only() -> Policy {
        policy(Rules {
            max_vulnerabilities: Some(BTreeMap::from([("critical".to_string(), 0)])),
            ..Rules::default()
        })
    }

    #[test]
    fn rules_read_only_materials_whose_signer_the_contract_accepts_for_their_kind() {
        let image = format!("r.io/a/b:1@{}", digest(9));
        let v = Verified {
            materials: vec![trivy_report("ci-key", 1)],
            rejections: vec![],
        };
        // Not listed in the contract: any configured signer counts.
        let out = evaluate(&vulns_only(), &contract(vec![]), &candidate(&image), &v);
        assert_eq!(
            out[0].reason,
            Some(ReasonCode::VulnerabilitiesOverThreshold),
            "{}",
            out[0].message
        );
        // Listed, for another signer: the report is not read.
        let c = contract(vec![req(MaterialKind::VulnerabilityReport, &["release-key"])]);
        let out = evaluate(&vulns_only(), &c, &candidate(&image), &v);
        assert_eq!(out[1].reason, Some(ReasonCode::MaterialMissing), "{}", out[1].message);
    }

    #[test]
    fn openvex_suppresses_only_when_the_contract_names_who_may_sign_it() {
        let image = format!("r.io/a/b:1@{}", digest(9));
        let v = Verified {
            materials: vec![trivy_report("ci-key", 1), vex("ci-key", 2, &digest(9))],
            rejections: vec![],
        };
        let reason = |c: Contract| {
            let out = evaluate(&vulns_only(), &c, &candidate(&image), &v);
            let last = out.last().unwrap();
            (last.reason, last.evidence.len())
        };
        assert_eq!(
            reason(contract(vec![])),
            (Some(ReasonCode::VulnerabilitiesOverThreshold), 1)
        );
        let mut optional = req(MaterialKind::Openvex, &["security-team"]);
        optional.optional = true;
        assert_eq!(
            reason(contract(vec![optional.clone()])),
            (Some(ReasonCode::VulnerabilitiesOverThreshold), 1)
        );
        optional.signers = vec!["ci-key".into()];
        assert_eq!(reason(contract(vec![optional])), (None, 2));
    }

    /// A verified Chainloop attestation listing an SBOM (with a digest) and a STRING (without).
    fn chainloop_listing(signer: &str, n: u8) -> Material {
        with_statement(
            "chainloop.dev/attestation/v0.2",
            signer,
            n,
            serde_json::json!({"materials": [
                {"name": "sbom.cdx.json", "digest": {"sha256": hex::encode([5u8; 32])},
                 "annotations": {"chainloop.material.type": "SBOM_CYCLONEDX_JSON", "chainloop.material.name": "sbom"}},
                {"name": "note", "content": "aGk=",
                 "annotations": {"chainloop.material.type": "STRING", "chainloop.material.name": "note"}},
            ]}),
        )
    }

    #[test]
    fn a_material_listed_in_a_chainloop_attestation_by_an_accepted_signer_counts() {
        let mut m = chainloop_listing("chainloop-key", 1);
        m.kind = MaterialKind::ChainloopAttestation;
        let v = Verified {
            materials: vec![m],
            rejections: vec![],
        };
        let c = contract(vec![
            req(MaterialKind::SbomCyclonedxJson, &["chainloop-key"]),
            req(MaterialKind::Sarif, &["chainloop-key"]),
        ]);
        let out = evaluate(&policy(Rules::default()), &c, &candidate("r.io/a/b:1"), &v);
        assert_eq!(
            (out[0].outcome, out[0].reason),
            (Outcome::Pass, None),
            "{}",
            out[0].message
        );
        assert_eq!(out[0].evidence, vec![digest(1)]);
        assert!(
            out[0]
                .message
                .contains(&format!("listed in Chainloop attestation {}", digest(1))),
            "{}",
            out[0].message
        );
        // It lists no SARIF.
        assert_eq!(out[1].reason, Some(ReasonCode::MaterialMissing), "{}", out[1].message);

        // The attestation's signer must count for the listed kind itself.
        let c = contract(vec![req(MaterialKind::SbomCyclonedxJson, &["release-key"])]);
        let out = evaluate(&policy(Rules::default()), &c, &candidate("r.io/a/b:1"), &v);
        assert_eq!(out[0].reason, Some(ReasonCode::MaterialMissing), "{}", out[0].message);
        // A material that names its own predicate type cannot be satisfied by a Chainloop type.
        let mut typed = req(MaterialKind::SbomCyclonedxJson, &["chainloop-key"]);
        typed.predicate_type = Some("https://cyclonedx.org/bom/v1.5".into());
        let out = evaluate(
            &policy(Rules::default()),
            &contract(vec![typed]),
            &candidate("r.io/a/b:1"),
            &v,
        );
        assert_eq!(out[0].reason, Some(ReasonCode::MaterialMissing), "{}", out[0].message);
    }

    #[test]
    fn rules_that_read_documents_do_not_read_a_listed_only_material() {
        let mut m = chainloop_listing("chainloop-key", 1);
        m.kind = MaterialKind::ChainloopAttestation;
        let v = Verified {
            materials: vec![m],
            rejections: vec![],
        };
        let c = contract(vec![req(MaterialKind::SbomCyclonedxJson, &["chainloop-key"])]);
        let out = evaluate(&vulns_only(), &c, &candidate("r.io/a/b:1"), &v);
        assert_eq!(out[0].outcome, Outcome::Pass);
        assert_eq!(out[1].reason, Some(ReasonCode::MaterialMissing), "{}", out[1].message);
    }
}
