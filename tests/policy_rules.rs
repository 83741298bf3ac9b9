//! The built-in evidence rules through `policy::evaluate`, on documents real tools wrote (the files
//! under `tests/vectors/`, listed in `SOURCES.tsv`): what a release manager reads for a promotion of
//! the nginx image that vexctl's samples are about, and for a Chainloop-attested one.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{json, Value};
use tollgate::config::{ChainloopRule, Contract, MaterialRequirement, Mode, Policy, ProvenanceRule, Rules};
use tollgate::gate::policy::evaluate;
use tollgate::gate::{Candidate, EvidenceSource, Material, MaterialKind, RuleResult, SignerMatch, Verified};
use tollgate::image::{Digest, ImageRef};

const NGINX: &str = "sha256:13d22ec63300e16014d4a42aed735207a8b33c223cff19627dd3042e5a10a3a0";

fn vector(path: &str) -> Value {
    let full = format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let first = if path.ends_with(".jsonl") {
        text.lines().next().unwrap_or_default()
    } else {
        text.as_str()
    };
    serde_json::from_str(first).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The in-toto statement carried by a DSSE envelope or a Sigstore bundle.
fn statement_in(path: &str) -> Value {
    let doc = vector(path);
    let env = doc.get("dsseEnvelope").unwrap_or(&doc);
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

fn material(statement: Value, signer: &str, tag: u8) -> Material {
    let predicate_type = statement["predicateType"].as_str().unwrap_or_default().to_string();
    Material {
        kind: MaterialKind::for_predicate(&predicate_type),
        predicate_type,
        signer: SignerMatch {
            signer: signer.into(),
            method: "key",
            identity: None,
        },
        source: EvidenceSource::Att,
        digest: Digest::parse(&format!("sha256:{}", hex::encode([tag; 32]))).unwrap(),
        statement,
    }
}

fn wrap(predicate_type: &str, predicate: Value) -> Value {
    json!({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": predicate_type, "predicate": predicate})
}

fn req(kind: MaterialKind, signers: &[&str], optional: bool) -> MaterialRequirement {
    MaterialRequirement {
        kind,
        name: None,
        predicate_type: None,
        signers: signers.iter().map(|s| s.to_string()).collect(),
        optional,
    }
}

fn candidate(digest: &str) -> Candidate {
    let upstream_ref = ImageRef::parse(&format!("docker.io/library/nginx:1.25@{digest}")).unwrap();
    Candidate {
        environment: "prod".into(),
        digest: Digest::parse(digest).unwrap(),
        upstream_ref,
        source_environment: Some("staging".into()),
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

/// One line per result, as a release manager would scan them.
fn render(results: &[RuleResult]) -> String {
    results
        .iter()
        .map(|r| {
            let reason = r.reason.map_or("-".to_string(), |c| c.to_string());
            format!(
                "{:?} {} [{reason}] ({} evidence): {}",
                r.outcome,
                r.rule,
                r.evidence.len(),
                r.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn nginx_evidence() -> Verified {
    Verified {
        materials: vec![
            material(
                wrap(
                    "https://cosign.sigstore.dev/attestation/vuln/v1",
                    json!({"scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": {
                        "SchemaVersion": 2, "ArtifactName": "nginx", "Results": [{"Target": "nginx (debian 12.0)", "Vulnerabilities": [
                            {"VulnerabilityID": "CVE-2023-27103", "PkgName": "libde265-0", "InstalledVersion": "1.0.11-1", "Severity": "HIGH"},
                            {"VulnerabilityID": "CVE-2007-5686", "PkgName": "login", "InstalledVersion": "1:4.13+dfsg1-1", "Severity": "LOW"},
                        ]}],
                    }}}),
                ),
                "ci-key",
                1,
            ),
            material(
                wrap(
                    "https://docs.oasis-open.org/sarif/sarif/v2.1.0",
                    vector("policy/vexctl-nginx-trivy-0.42.1.sarif.json"),
                ),
                "ci-key",
                2,
            ),
            material(
                wrap(
                    "https://openvex.dev/ns/v0.2.0",
                    vector("policy/vexctl-sample-2vulns.openvex.json"),
                ),
                "security-team",
                3,
            ),
            material(
                statement_in("slsa-provenance/bcr/MODULE.bazel.intoto.jsonl"),
                "github-release",
                4,
            ),
        ],
        rejections: vec![],
    }
}

fn nginx_rules() -> Rules {
    Rules {
        max_vulnerabilities: Some(BTreeMap::from([("critical".into(), 0), ("high".into(), 0)])),
        sarif_max_errors: Some(3),
        provenance: Some(ProvenanceRule {
            source_repo: Some("https://github.com/aspect-build/*".into()),
            builder_id: Some("https://github.com/bazel-contrib/publish-to-bcr/*".into()),
        }),
        ..Rules::default()
    }
}

#[test]
fn nginx_promotion_passes_with_the_security_teams_vex() {
    let contract = Contract {
        name: "release".into(),
        materials: vec![
            req(MaterialKind::SlsaProvenance, &["github-release"], false),
            req(MaterialKind::Openvex, &["security-team"], true),
        ],
    };
    let out = evaluate(&policy(nginx_rules()), &contract, &candidate(NGINX), &nginx_evidence());
    insta::assert_snapshot!(render(&out));
}

#[test]
fn nginx_promotion_blocks_when_the_vex_signer_does_not_count_and_sarif_is_strict() {
    let contract = Contract {
        name: "release".into(),
        materials: vec![
            req(MaterialKind::SlsaProvenance, &["github-release"], false),
            req(MaterialKind::Openvex, &["release-key"], true),
        ],
    };
    let mut rules = nginx_rules();
    rules.sarif_max_errors = Some(0);
    rules.provenance = Some(ProvenanceRule {
        source_repo: Some("https://github.com/acme/*".into()),
        builder_id: None,
    });
    let out = evaluate(&policy(rules), &contract, &candidate(NGINX), &nginx_evidence());
    insta::assert_snapshot!(render(&out));
}

#[test]
fn chainloop_attestation_that_lists_the_image_only_in_its_materials() {
    // `full.json` names bitnami/nginx only in `predicate.materials[]` (CONTAINER_IMAGE).
    let image = "sha256:264f55a6ff9cec2f4742a9faacc033b29f65c04dd4480e71e23579d484288d61";
    let rules = Rules {
        chainloop: Some(ChainloopRule {
            require_not_blocked: true,
        }),
        ..Rules::default()
    };
    let contract = Contract {
        name: "release".into(),
        materials: vec![],
    };
    let st = statement_in("chainloop/unverifiable/full.json");
    let clean = Verified {
        materials: vec![material(st.clone(), "chainloop", 5)],
        rejections: vec![],
    };
    let mut bypassed = st;
    bypassed["predicate"]["policyBlockBypassEnabled"] = json!(true);
    let bypassed = Verified {
        materials: vec![material(bypassed, "chainloop", 6)],
        rejections: vec![],
    };
    let out: Vec<RuleResult> = [clean.clone(), bypassed]
        .iter()
        .flat_map(|v| evaluate(&policy(rules.clone()), &contract, &candidate(image), v))
        .chain(evaluate(&policy(rules.clone()), &contract, &candidate(NGINX), &clean))
        .collect();
    insta::assert_snapshot!(render(&out));
}
