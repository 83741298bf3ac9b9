//! `chainloop`: honours the policy outcome that Chainloop recorded in its attestations
//! (`chainloop.dev/attestation/v0.2`), and reads which image and materials an attestation lists.
//!
//! An attestation that exists proves nothing by itself: Chainloop stores attestations even when their
//! policies fail. One that lists the candidate counts as blocked when
//! - `policyAttBlocked` is set (Chainloop's own verdict);
//! - `policyHasGatedViolations` is set, or an inline evaluation with `gate: true` has violations;
//! - `policyCheckBlockingStrategy` is `ENFORCED` and there are violations (Chainloop's
//!   `DerivePolicyStatusSummary` calls that BLOCKED);
//! - `policyBlockBypassEnabled` is set: the attestation was made with blocking switched off, so its
//!   "not blocked" is not a verdict (SPEC: a bypass is `chainloop-blocked`);
//! - only `policyEvaluationsRef` is present: the results were moved to Chainloop's CAS, which tollgate
//!   does not read, so it cannot tell (fail closed).
//!
//! Advisory violations are reported in the message but do not block.

use serde_json::Value;

use super::{array, digests, distinct, enumerate, fail, flag, is_kind, pass, predicate, str_at};
use crate::gate::{Material, MaterialKind, RuleResult};
use crate::image::Digest;
use crate::reason::ReasonCode;

pub const RULE: &str = "chainloop";

const TYPE: &str = "chainloop.material.type";
const NAME: &str = "chainloop.material.name";

/// One entry of `predicate.materials[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainloopMaterial {
    /// Chainloop's material type (`SBOM_CYCLONEDX_JSON`, `CONTAINER_IMAGE`, `STRING`, …).
    pub chainloop_type: String,
    /// The contract kind it stands for, when there is one.
    pub kind: Option<MaterialKind>,
    /// `chainloop.material.name`, else the descriptor's `name`.
    pub name: String,
    /// `sha256` hex, when the material has a digest (a `STRING` material has none).
    pub sha256: Option<String>,
}

/// The contract kind a Chainloop material type satisfies. Chainloop's `ATTESTATION` and `ARTIFACT`
/// are opaque files: they satisfy nothing on their own.
fn kind_of(chainloop_type: &str) -> Option<MaterialKind> {
    match chainloop_type {
        "SBOM_CYCLONEDX_JSON" => Some(MaterialKind::SbomCyclonedxJson),
        "SBOM_SPDX_JSON" => Some(MaterialKind::SbomSpdxJson),
        "SARIF" => Some(MaterialKind::Sarif),
        "OPENVEX" => Some(MaterialKind::Openvex),
        "SLSA_PROVENANCE" => Some(MaterialKind::SlsaProvenance),
        _ => None,
    }
}

fn materials(statement: &Value) -> &[Value] {
    statement.get("predicate").map_or(&[], |p| array(p, "materials"))
}

/// The materials a Chainloop attestation lists, for the contract.
pub fn chainloop_material_kinds(statement: &Value) -> Vec<ChainloopMaterial> {
    materials(statement)
        .iter()
        .filter_map(|m| {
            let annotations = m.get("annotations").unwrap_or(&Value::Null);
            let chainloop_type = str_at(annotations, &[TYPE])?.to_string();
            Some(ChainloopMaterial {
                kind: kind_of(&chainloop_type),
                name: str_at(annotations, &[NAME])
                    .or_else(|| str_at(m, &["name"]))
                    .unwrap_or_default()
                    .to_string(),
                sha256: str_at(m, &["digest", "sha256"]).map(str::to_ascii_lowercase),
                chainloop_type,
            })
        })
        .collect()
}

/// Does the attestation name the image: as a subject, or as a `CONTAINER_IMAGE` material (Chainloop
/// makes only materials marked `output` subjects, so the image is often only in the materials)?
pub fn chainloop_lists_image(statement: &Value, digest: &Digest) -> bool {
    let is = |v: &Value| str_at(v, &["digest", "sha256"]).is_some_and(|h| h.eq_ignore_ascii_case(digest.hex()));
    array(statement, "subject").iter().any(is)
        || materials(statement)
            .iter()
            .any(|m| str_at(m, &["annotations", TYPE]) == Some("CONTAINER_IMAGE") && is(m))
}

/// Why Chainloop's recorded outcome blocks, and the advisory violations, of one attestation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub blocked: Vec<String>,
    pub advisory: Vec<String>,
}

/// `policyEvaluations` is a map material → list of evaluations (older predicates: a list).
fn evaluations(p: &Value) -> Vec<&Value> {
    match p.get("policyEvaluations") {
        Some(Value::Object(m)) => m.values().flat_map(|v| v.as_array().into_iter().flatten()).collect(),
        Some(Value::Array(a)) => a.iter().collect(),
        _ => vec![],
    }
}

/// Reads the policy outcome of one Chainloop predicate.
pub fn verdict(predicate: &Value) -> Verdict {
    let mut v = Verdict::default();
    let evals = evaluations(predicate);
    let mut violated = 0usize;
    for e in &evals {
        let name = str_at(e, &["name"]).unwrap_or("(unnamed policy)");
        for violation in array(e, "violations") {
            violated += 1;
            let message = str_at(violation, &["message"]).unwrap_or("violation");
            let line = format!("{name}: {message}");
            if flag(e, "gate") {
                v.blocked.push(format!("gated policy {line}"));
            } else {
                v.advisory.push(line);
            }
        }
    }
    let has_violations = flag(predicate, "policyHasViolations") || violated > 0;
    if flag(predicate, "policyAttBlocked") {
        v.blocked
            .insert(0, "Chainloop marked it blocked (policyAttBlocked)".into());
    }
    if flag(predicate, "policyHasGatedViolations") && !v.blocked.iter().any(|b| b.starts_with("gated policy")) {
        v.blocked
            .push("it has gated policy violations (policyHasGatedViolations)".into());
    }
    if str_at(predicate, &["policyCheckBlockingStrategy"]) == Some("ENFORCED") && has_violations {
        v.blocked
            .push("it has policy violations under the ENFORCED blocking strategy".into());
        v.advisory.clear();
    }
    if flag(predicate, "policyBlockBypassEnabled") {
        v.blocked
            .push("it was made with policy blocking bypassed (policyBlockBypassEnabled)".into());
    }
    if predicate.get("policyEvaluationsRef").is_some_and(|r| !r.is_null()) && evals.is_empty() {
        v.blocked.push(
            "its policy results were moved to Chainloop's CAS (policyEvaluationsRef) and tollgate reads only \
             inline results, so it cannot tell whether the attestation is blocked"
                .into(),
        );
    }
    v
}

/// Evaluates `chainloop: {require_not_blocked: true}` over the Chainloop attestations that list the
/// candidate.
pub fn evaluate(materials: &[Material], candidate: &Digest) -> RuleResult {
    let atts = distinct(materials, |m| {
        is_kind(m, MaterialKind::ChainloopAttestation) && chainloop_lists_image(&m.statement, candidate)
    });
    if atts.is_empty() {
        return fail(
            RULE,
            ReasonCode::MaterialMissing,
            format!(
                "no Chainloop attestation lists {} to evaluate {RULE}",
                candidate.short()
            ),
            vec![],
        );
    }
    let mut blocked = Vec::new();
    let mut advisory = Vec::new();
    for m in &atts {
        let v = verdict(predicate(m));
        let workflow = str_at(predicate(m), &["metadata", "name"])
            .or_else(|| str_at(predicate(m), &["metadata", "workflowName"]))
            .map(|w| format!(" (workflow {w})"))
            .unwrap_or_default();
        if !v.blocked.is_empty() {
            blocked.push(format!(
                "Chainloop attestation {}{workflow} is blocked: {}",
                m.digest.short(),
                v.blocked.join("; ")
            ));
        }
        advisory.extend(v.advisory);
    }
    let evidence = digests(&atts);
    if !blocked.is_empty() {
        return fail(RULE, ReasonCode::ChainloopBlocked, blocked.join("; "), evidence);
    }
    let mut message = format!("{} Chainloop attestation(s) not blocked", atts.len());
    if !advisory.is_empty() {
        message.push_str(&format!(
            "; {} advisory violation(s): {}",
            advisory.len(),
            enumerate(&advisory, 3)
        ));
    }
    pass(RULE, message, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::rules::testing::{digest, statement_material, vector};
    use base64::Engine as _;
    use serde_json::json;

    /// The statement inside a Chainloop bundle (`dsseEnvelope`) or plain DSSE envelope.
    fn statement(path: &str) -> Value {
        let doc = vector(path);
        let env = doc.get("dsseEnvelope").unwrap_or(&doc);
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    /// The digest of the image or subject an attestation is about.
    fn sha(hex: &str) -> Digest {
        Digest::parse(&format!("sha256:{hex}")).unwrap()
    }

    const FULL_NGINX: &str = "264f55a6ff9cec2f4742a9faacc033b29f65c04dd4480e71e23579d484288d61";
    const V2_NGINX: &str = "747ef335ea27a2faf08aa292a5bc5491aff50c6a94ee4ebcbbcd43cdeccccaf1";
    const VALID_WF: &str = "263c9350310b9c0b3e48b0cf5d84d38401d0de013313da971da65eb9dbc5b845";

    #[test]
    fn finds_the_image_in_subjects_or_container_materials() {
        let full = statement("chainloop/unverifiable/full.json");
        assert!(
            chainloop_lists_image(&full, &sha(FULL_NGINX)),
            "only in predicate.materials[]"
        );
        assert!(!chainloop_lists_image(&full, &sha(V2_NGINX)));
        let v2 = statement("chainloop/unverifiable/valid.envelope.v2.json");
        assert!(chainloop_lists_image(&v2, &sha(V2_NGINX)));
        // The SBOM material's digest is not an image.
        assert!(!chainloop_lists_image(
            &v2,
            &sha("16159bb881eb4ab7eb5d8afc5350b0feeed1e31c0a268e355e74f9ccbe885e0c")
        ));
    }

    #[test]
    fn lists_material_kinds_for_the_contract() {
        let kinds = chainloop_material_kinds(&statement("chainloop/unverifiable/valid.envelope.v2.json"));
        let got: Vec<(&str, Option<MaterialKind>, &str, bool)> = kinds
            .iter()
            .map(|k| (k.chainloop_type.as_str(), k.kind, k.name.as_str(), k.sha256.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ARTIFACT", None, "binary", true),
                ("CONTAINER_IMAGE", None, "image", true),
                (
                    "SBOM_CYCLONEDX_JSON",
                    Some(MaterialKind::SbomCyclonedxJson),
                    "sbom",
                    true
                ),
                (
                    "SBOM_CYCLONEDX_JSON",
                    Some(MaterialKind::SbomCyclonedxJson),
                    "sbom",
                    true
                ),
                ("STRING", None, "stringvar", false),
            ]
        );
    }

    #[test]
    fn real_attestations_with_advisory_violations_pass() {
        // `policyHasViolations: true`, strategy ADVISORY, not blocked: a warning in Chainloop's terms.
        let st = statement("chainloop/verifier/bundle_valid.json");
        let m = statement_material(st, 1);
        let r = evaluate(&[m], &sha(VALID_WF));
        assert_eq!(r.reason, None, "{}", r.message);
        assert!(
            r.message.contains("sbom-present: missing SBOM material"),
            "{}",
            r.message
        );
        // Without policies at all (the cli-action attestation) there is nothing to block.
        let st = statement("chainloop/cli-action/cosign-attestation.json");
        let wf = sha(st["subject"][0]["digest"]["sha256"].as_str().unwrap());
        let r = evaluate(&[statement_material(st, 2)], &wf);
        assert_eq!(
            (r.reason, r.message.as_str()),
            (None, "1 Chainloop attestation(s) not blocked")
        );
    }

    #[test]
    fn table_of_blocking_signals() {
        let base = statement("chainloop/materials/attestation-bundle.json");
        let wf = sha(base["subject"][0]["digest"]["sha256"].as_str().unwrap());
        type Edit = fn(&mut Value);
        let table: [(&str, Edit, Option<&str>); 8] = [
            ("as recorded (advisory)", |_| {}, None),
            (
                "policyAttBlocked",
                |p| p["policyAttBlocked"] = json!(true),
                Some("policyAttBlocked"),
            ),
            (
                "gated violations",
                |p| p["policyHasGatedViolations"] = json!(true),
                Some("policyHasGatedViolations"),
            ),
            (
                "inline gate",
                |p| p["policyEvaluations"]["CHAINLOOP.ATTESTATION"][0]["gate"] = json!(true),
                Some("gated policy vulnerability-scan-present: missing SCA scan material"),
            ),
            (
                "enforced",
                |p| p["policyCheckBlockingStrategy"] = json!("ENFORCED"),
                Some("ENFORCED"),
            ),
            (
                "bypass",
                |p| p["policyBlockBypassEnabled"] = json!(true),
                Some("bypassed"),
            ),
            (
                "results moved to CAS",
                |p| {
                    p.as_object_mut().unwrap().remove("policyEvaluations");
                    p["policyEvaluationsRef"] = json!({"digest": {"sha256": "00"}});
                },
                Some("cannot tell"),
            ),
            (
                "ref beside inline results",
                |p| p["policyEvaluationsRef"] = json!({"digest": {"sha256": "00"}}),
                None,
            ),
        ];
        for (name, edit, want) in table {
            let mut st = base.clone();
            edit(&mut st["predicate"]);
            let r = evaluate(&[statement_material(st, 1)], &wf);
            match want {
                None => assert_eq!(r.reason, None, "{name}: {}", r.message),
                Some(needle) => {
                    assert_eq!(r.reason, Some(ReasonCode::ChainloopBlocked), "{name}: {}", r.message);
                    assert!(r.message.contains(needle), "{name}: {}", r.message);
                }
            }
            assert_eq!(r.evidence, vec![digest(1)], "{name}");
        }
    }

    #[test]
    fn an_attestation_about_another_image_does_not_count() {
        let st = statement("chainloop/unverifiable/full.json");
        let r = evaluate(&[statement_material(st.clone(), 1)], &sha(V2_NGINX));
        assert_eq!(r.reason, Some(ReasonCode::MaterialMissing), "{}", r.message);
        let r = evaluate(&[statement_material(st, 1)], &sha(FULL_NGINX));
        assert_eq!(r.reason, None, "{}", r.message);
    }

    #[test]
    fn hostile_shapes_do_not_panic() {
        for p in [
            json!(null),
            json!({"policyEvaluations": [1, {"violations": "x"}], "materials": {"a": 1}}),
            json!({"policyEvaluations": {"m": [{"violations": [null, 3], "gate": "true"}]}, "policyAttBlocked": 1}),
        ] {
            let st = json!({"predicateType": "chainloop.dev/attestation/v0.2", "subject": [{"digest": {"sha256": hex::encode([1u8; 32])}}], "predicate": p});
            let _ = evaluate(&[statement_material(st.clone(), 1)], &digest(1));
            let _ = chainloop_material_kinds(&st);
        }
    }
}
