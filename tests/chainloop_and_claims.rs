//! Chainloop attestations that list the image among their materials, the materials they list counting
//! toward the contract, and the GitHub workflow claims of keyless certificates (in the verified
//! materials, in `trust.signers.<name>.keyless.claims`, and in the Rego input), against the real vectors
//! in tests/vectors/ (provenance in tests/vectors/README.md §3, §8).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tollgate::config::{Contract, MaterialRequirement, Mode, Policy, Rules, Signer, Trust};
use tollgate::dsse::{self, Envelope};
use tollgate::gate::{policy, rego, Candidate, EvidenceSource, MaterialKind, Outcome, RawEvidence};
use tollgate::image::{Digest, ImageRef};
use tollgate::keys::{PublicKey, SigningKey};
use tollgate::reason::ReasonCode;
use tollgate::sigstore::TrustedRoot;

const GH_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The image that Chainloop's `full.json` lists only among its materials (`CONTAINER_IMAGE`).
const FULL_NGINX: &str = "sha256:264f55a6ff9cec2f4742a9faacc033b29f65c04dd4480e71e23579d484288d61";

fn vector(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(vector(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn digest(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

fn evidence(source: EvidenceSource, media_type: &str, bytes: Vec<u8>) -> RawEvidence {
    RawEvidence {
        source,
        media_type: media_type.to_string(),
        digest: Digest::of(&bytes),
        bytes,
        annotations: BTreeMap::new(),
    }
}

fn public_good() -> Option<std::sync::Arc<TrustedRoot>> {
    let text = String::from_utf8(read("trust/sigstore-public-good.trusted_root.json")).unwrap();
    Some(std::sync::Arc::new(TrustedRoot::parse(&text).unwrap()))
}

fn key_trust(name: &str, key: PublicKey) -> Trust {
    Trust {
        signers: BTreeMap::from([(
            name.to_string(),
            Signer::Key {
                path: PathBuf::from("cosign.pub"),
                key,
            },
        )]),
        ..Default::default()
    }
}

/// The in-toto statement inside a Chainloop bundle or plain envelope.
fn chainloop_payload(rel: &str) -> Vec<u8> {
    let doc: serde_json::Value = serde_json::from_slice(&read(rel)).unwrap();
    let env = doc.get("dsseEnvelope").unwrap_or(&doc);
    dsse::decode_b64(env["payload"].as_str().unwrap()).unwrap()
}

#[test]
fn chainloop_cosign_key_envelope_verifies_as_a_chainloop_attestation_of_its_subject() {
    let pem = String::from_utf8(read("chainloop/cli-action/cosign.pub")).unwrap();
    let trust = key_trust("chainloop-ci", PublicKey::from_pem(&pem).unwrap());
    let ev = evidence(
        EvidenceSource::Att,
        dsse::MEDIA_TYPE,
        read("chainloop/cli-action/cosign-attestation.json"),
    );
    let workflow = digest("sha256:b81726b02d6ee3b2d6cf4caaa6d9846743e882a54f7594f2e1ecfc710cfe3a3c");
    let v = tollgate::gate::verify::verify(std::slice::from_ref(&ev), &workflow, &trust);
    assert!(v.rejections.is_empty(), "{:?}", v.rejections);
    assert_eq!(v.materials[0].kind, MaterialKind::ChainloopAttestation);
    assert_eq!(
        v.materials[0].signer.identity, None,
        "keys have no certificate identity"
    );
    // It lists no image: for any other digest the strict subject check applies.
    let v = tollgate::gate::verify::verify(&[ev], &digest(FULL_NGINX), &trust);
    assert_eq!(
        v.rejections[0].reason,
        ReasonCode::SubjectMismatch,
        "{}",
        v.rejections[0].message
    );
}

#[test]
fn chainloop_keyless_bundles_stay_rejected_without_a_trusted_signing_time() {
    let trust = Trust {
        root: public_good(),
        signers: BTreeMap::from([(
            "chainloop".to_string(),
            Signer::Keyless {
                issuer: "https://chainloop.dev".into(),
                subject: tollgate::config::SubjectMatch::Regex(regex::Regex::new(".*").unwrap()),
                claims: vec![],
            },
        )]),
        ..Default::default()
    };
    let ev = evidence(
        EvidenceSource::Bundle,
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        read("chainloop/verifier/bundle_valid.json"),
    );
    let workflow = digest("sha256:263c9350310b9c0b3e48b0cf5d84d38401d0de013313da971da65eb9dbc5b845");
    let v = tollgate::gate::verify::verify(&[ev], &workflow, &trust);
    assert!(v.materials.is_empty());
    let r = &v.rejections[0];
    assert_eq!(r.reason, ReasonCode::SignatureInvalid, "{}", r.message);
    assert!(r.message.contains("neither a transparency log entry"), "{}", r.message);
}

fn prod_policy(rules: Rules) -> Policy {
    Policy {
        name: "prod".into(),
        contract: "release".into(),
        mode: Mode::Enforce,
        rules,
        waivers: None,
    }
}

fn requirement(kind: MaterialKind, signers: &[&str]) -> MaterialRequirement {
    MaterialRequirement {
        kind,
        name: None,
        predicate_type: None,
        signers: signers.iter().map(|s| s.to_string()).collect(),
        optional: false,
    }
}

fn nginx_candidate() -> Candidate {
    let upstream_ref = ImageRef::parse(&format!("index.docker.io/bitnami/nginx@{FULL_NGINX}")).unwrap();
    Candidate {
        environment: "prod".into(),
        digest: digest(FULL_NGINX),
        upstream_ref,
        source_environment: None,
        source_commit: None,
    }
}

/// Chainloop's `full.json` (image only in the materials, an SBOM listed) verifies with no key in the
/// repository, so its exact payload is signed again here with a key of our own.
#[test]
fn a_chainloop_attestation_listing_the_image_carries_its_listed_sbom_into_the_contract() {
    let key = SigningKey::generate();
    let envelope = Envelope::sign(
        dsse::INTOTO_PAYLOAD_TYPE,
        &chainloop_payload("chainloop/unverifiable/full.json"),
        &key,
    );
    let ev = evidence(EvidenceSource::Att, dsse::MEDIA_TYPE, envelope.to_json());
    let trust = key_trust("chainloop-ci", key.public_key());
    let candidate = nginx_candidate();
    let verified = tollgate::gate::verify::verify(std::slice::from_ref(&ev), &candidate.digest, &trust);
    assert!(verified.rejections.is_empty(), "{:?}", verified.rejections);
    assert_eq!(verified.materials[0].kind, MaterialKind::ChainloopAttestation);

    let contract = Contract {
        name: "release".into(),
        materials: vec![
            requirement(MaterialKind::ChainloopAttestation, &["chainloop-ci"]),
            requirement(MaterialKind::SbomCyclonedxJson, &["chainloop-ci"]),
            requirement(MaterialKind::Sarif, &["chainloop-ci"]),
        ],
    };
    let rules = Rules {
        max_vulnerabilities: Some(BTreeMap::from([("critical".to_string(), 0)])),
        ..Rules::default()
    };
    let out = policy::evaluate(&prod_policy(rules), &contract, &candidate, &verified);
    assert_eq!(out[0].outcome, Outcome::Pass, "{}", out[0].message);
    assert_eq!(out[1].outcome, Outcome::Pass, "{}", out[1].message);
    assert_eq!(out[1].evidence, vec![ev.digest.clone()]);
    assert!(
        out[1]
            .message
            .contains(&format!("listed in Chainloop attestation {}", ev.digest)),
        "{}",
        out[1].message
    );
    assert_eq!(
        out[2].reason,
        Some(ReasonCode::MaterialMissing),
        "no SARIF is listed: {}",
        out[2].message
    );
    // The SBOM's content lives in Chainloop's CAS: max_vulnerabilities cannot read it and fails closed.
    assert_eq!(out[3].rule, "max_vulnerabilities");
    assert_eq!(out[3].reason, Some(ReasonCode::MaterialMissing), "{}", out[3].message);

    // Signed by a signer the SBOM requirement does not accept: the listing does not count for it.
    let contract = Contract {
        name: "release".into(),
        materials: vec![requirement(MaterialKind::SbomCyclonedxJson, &["release-key"])],
    };
    let out = policy::evaluate(&prod_policy(Rules::default()), &contract, &candidate, &verified);
    assert_eq!(out[0].reason, Some(ReasonCode::MaterialMissing), "{}", out[0].message);
}

/// A config with one keyless signer constrained by `claims`, loaded the way the daemon loads it.
fn keyless_config(subject_regex: &str, claims: &str) -> Trust {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trusted_root.json"),
        read("trust/sigstore-public-good.trusted_root.json"),
    )
    .unwrap();
    let yaml = format!(
        "version: 1\ntrust:\n  trusted_root: trusted_root.json\n  signers:\n    gh:\n      keyless:\n        \
         issuer: {GH_ISSUER}\n        subject_regex: '{subject_regex}'\n        claims: {claims}\n"
    );
    let path = dir.path().join("tollgate.yaml");
    match tollgate::config::parse(&yaml, &path) {
        Ok(c) => c.trust,
        Err(e) => panic!("config:\n{yaml}\n{e}"),
    }
}

fn reusable_workflow_bundle() -> (RawEvidence, Digest) {
    (
        evidence(
            EvidenceSource::Bundle,
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            read("cli-gh-attestation/reusable-workflow-attestation.sigstore.json"),
        ),
        digest("sha256:49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25"),
    )
}

const ATTEST_WORKFLOW: &str =
    r"^https://github\.com/github/artifact-attestations-workflows/\.github/workflows/attest\.yml@.+$";

#[test]
fn configured_claims_bind_the_repository_behind_a_reusable_workflow() {
    let (ev, artifact) = reusable_workflow_bundle();
    let ok = keyless_config(ATTEST_WORKFLOW, "{source_repository: 'https://github.com/malancas/*'}");
    let v = tollgate::gate::verify::verify(std::slice::from_ref(&ev), &artifact, &ok);
    assert!(v.rejections.is_empty(), "{:?}", v.rejections);
    let other = keyless_config(ATTEST_WORKFLOW, "{source_repository: 'https://github.com/acme/*'}");
    let v = tollgate::gate::verify::verify(&[ev], &artifact, &other);
    assert_eq!(
        v.rejections[0].reason,
        ReasonCode::IdentityMismatch,
        "{}",
        v.rejections[0].message
    );
}

#[test]
fn configured_claims_on_a_tag_release_and_an_unknown_claim_is_a_config_error() {
    let ev = evidence(
        EvidenceSource::Bundle,
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        read("sigstore-python/bundle_v3_github.whl.sigstore"),
    );
    let wheel = digest("sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201");
    let release = r"^https://github\.com/trailofbits/rfc8785\.py/\.github/workflows/release\.yml@refs/tags/.+$";
    let tags = keyless_config(
        release,
        "{source_repository: 'https://github.com/trailofbits/*', source_ref: 'refs/tags/*', build_trigger: release}",
    );
    let v = tollgate::gate::verify::verify(std::slice::from_ref(&ev), &wheel, &tags);
    assert!(v.rejections.is_empty(), "{:?}", v.rejections);
    let branches = keyless_config(release, "{source_ref: 'refs/heads/*'}");
    let v = tollgate::gate::verify::verify(&[ev], &wheel, &branches);
    assert_eq!(
        v.rejections[0].reason,
        ReasonCode::IdentityMismatch,
        "{}",
        v.rejections[0].message
    );
    assert!(
        v.rejections[0].message.contains("source_ref `refs/tags/v0.1.2`"),
        "{}",
        v.rejections[0].message
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trusted_root.json"),
        read("trust/sigstore-public-good.trusted_root.json"),
    )
    .unwrap();
    let yaml = format!(
        "version: 1\ntrust:\n  trusted_root: trusted_root.json\n  signers:\n    gh:\n      keyless:\n        \
         issuer: {GH_ISSUER}\n        subject: x\n        claims: {{repo: 'a/*'}}\n"
    );
    let err = tollgate::config::parse(&yaml, &dir.path().join("tollgate.yaml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown claim \"repo\""), "{err}");
}

#[test]
fn rego_policies_read_the_certificate_claims() {
    let (ev, artifact) = reusable_workflow_bundle();
    let trust = keyless_config(ATTEST_WORKFLOW, "{}");
    let verified = tollgate::gate::verify::verify(&[ev], &artifact, &trust);
    assert!(verified.rejections.is_empty(), "{:?}", verified.rejections);
    let mut candidate = nginx_candidate();
    candidate.digest = artifact;
    let input = rego::input(
        &candidate,
        &verified.materials,
        &rego::UpstreamInput {
            environment: None,
            promoted_at: None,
        },
        time::OffsetDateTime::UNIX_EPOCH,
    );
    assert_eq!(
        input["materials"][0]["certificate"]["source_repository_uri"],
        "https://github.com/malancas/attest-demo"
    );
    let source = |repo: &str| {
        format!(
            "package tollgate\nresult := {{\"violations\": v, \"skipped\": false, \"skip_reason\": \"\"}}\n\
             v contains sprintf(\"built from %s\", [m.certificate.source_repository_uri]) if {{\n  \
             some m in input.materials\n  m.certificate.source_repository_uri != \"{repo}\"\n}}\n"
        )
    };
    let allow = rego::compile(
        "rego:claims.rego",
        "claims.rego",
        &source("https://github.com/malancas/attest-demo"),
    )
    .unwrap();
    assert_eq!(rego::evaluate_one(&allow, &input)[0].outcome, Outcome::Pass);
    let deny = rego::compile(
        "rego:claims.rego",
        "claims.rego",
        &source("https://github.com/acme/api"),
    )
    .unwrap();
    let out = rego::evaluate_one(&deny, &input);
    assert_eq!(out[0].reason, Some(ReasonCode::RegoViolation));
    assert!(
        out[0]
            .message
            .contains("built from https://github.com/malancas/attest-demo"),
        "{}",
        out[0].message
    );
}
