//! Verification against evidence that tollgate did not produce: real cosign and Chainloop artifacts
//! (tests/vectors/, provenance in tests/vectors/SOURCES.tsv) and DSSE envelopes made by PyPI
//! in-toto/securesystemslib (tests/support/intoto_attest.py, installed by scripts/setup-test-deps.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use tollgate::config::{Signer, SubjectMatch};
use tollgate::dsse;
use tollgate::gate::verify::{
    ANNOTATION_CERTIFICATE, ANNOTATION_PREDICATE_TYPE, SIMPLE_SIGNING_MEDIA_TYPE, SIMPLE_SIGNING_PREDICATE_TYPE,
};
use tollgate::gate::{EvidenceSource, Material, MaterialKind, RawEvidence, Rejection, Verified};
use tollgate::image::Digest;
use tollgate::keys::PublicKey;

/// These vectors are checked with key signers and no trusted root (the keyless ones in sigstore_vectors.rs).
fn verify(evidence: &[RawEvidence], candidate: &Digest, signers: &BTreeMap<String, Signer>) -> Verified {
    let trust = tollgate::config::Trust {
        signers: signers.clone(),
        ..Default::default()
    };
    tollgate::gate::verify::verify(evidence, candidate, &trust)
}
use tollgate::reason::ReasonCode;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vector(rel: &str) -> PathBuf {
    root().join("tests/vectors").join(rel)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn key_signer(pem_path: &Path) -> Signer {
    let pem = String::from_utf8(read(pem_path)).unwrap();
    Signer::Key {
        path: pem_path.to_path_buf(),
        key: PublicKey::from_pem(&pem).unwrap(),
    }
}

fn signers(list: &[(&str, &Path)]) -> BTreeMap<String, Signer> {
    list.iter()
        .map(|(name, path)| (name.to_string(), key_signer(path)))
        .collect()
}

fn att(bytes: Vec<u8>, annotations: BTreeMap<String, String>) -> RawEvidence {
    RawEvidence {
        source: EvidenceSource::Att,
        media_type: dsse::MEDIA_TYPE.to_string(),
        digest: Digest::of(&bytes),
        bytes,
        annotations,
    }
}

fn only_material(v: Verified) -> Material {
    assert!(
        v.rejections.is_empty(),
        "expected a material, got rejections {:#?}",
        v.rejections
    );
    assert_eq!(v.materials.len(), 1, "{:#?}", v.materials);
    v.materials.into_iter().next().unwrap()
}

fn only_rejection(v: Verified) -> Rejection {
    assert!(
        v.materials.is_empty(),
        "expected a rejection, got materials {:#?}",
        v.materials
    );
    assert_eq!(v.rejections.len(), 1, "{:#?}", v.rejections);
    v.rejections.into_iter().next().unwrap()
}

// ---- cosign simple signing (containers/image fixtures of cosign-created signatures) ----

/// A `.sig` layer as a registry would hand it over, rebuilt from containers/image's `signature-1`
/// storage file: `0x00` + `sigstore-json\n` + `{mimeType, payload (b64), annotations}`.
fn cosign_sig_layer(case: &str) -> RawEvidence {
    let raw = read(&vector(&format!("cosign-simplesigning/{case}/signature-1")));
    let json = raw
        .strip_prefix(b"\x00sigstore-json\n")
        .expect("containers/image sigstore-json signature");
    let stored: serde_json::Value = serde_json::from_slice(json).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(stored["payload"].as_str().unwrap())
        .unwrap();
    let annotations = stored["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    RawEvidence {
        source: EvidenceSource::Sig,
        media_type: stored["mimeType"].as_str().unwrap().to_string(),
        digest: Digest::of(&bytes),
        bytes,
        annotations,
    }
}

/// The image a case signs: the README says `docker-manifest-digest` = sha256(manifest.json).
fn manifest_digest(case: &str) -> Digest {
    Digest::of(&read(&vector(&format!("cosign-simplesigning/{case}/manifest.json"))))
}

#[test]
fn cosign_simple_signing_verifies_with_cosign_pub() {
    let layer = cosign_sig_layer("dir-img-cosign-valid");
    assert_eq!(layer.media_type, SIMPLE_SIGNING_MEDIA_TYPE);
    assert_eq!(
        layer.bytes,
        read(&vector(
            "cosign-simplesigning/dir-img-cosign-valid/extracted/payload.json"
        ))
    );
    let candidate = manifest_digest("dir-img-cosign-valid");
    assert_eq!(
        candidate.as_str(),
        "sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"
    );

    let keys = signers(&[("cosign", &vector("cosign-simplesigning/cosign.pub"))]);
    let m = only_material(verify(std::slice::from_ref(&layer), &candidate, &keys));
    assert_eq!(m.kind, MaterialKind::ImageSignature);
    assert_eq!(m.predicate_type, SIMPLE_SIGNING_PREDICATE_TYPE);
    assert_eq!((m.signer.signer.as_str(), m.signer.method), ("cosign", "key"));
    assert_eq!(m.digest, layer.digest);
    assert_eq!(
        m.statement["critical"]["identity"]["docker-reference"],
        "192.168.64.2:5000/cosign-signed-single-sample"
    );
}

#[test]
fn cosign_simple_signing_by_an_unknown_key_is_signature_invalid() {
    let layer = cosign_sig_layer("dir-img-cosign-valid");
    let keys = signers(&[("other", &vector("cosign-simplesigning/cosign2.pub"))]);
    let r = only_rejection(verify(
        std::slice::from_ref(&layer),
        &manifest_digest("dir-img-cosign-valid"),
        &keys,
    ));
    assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    assert!(
        r.message.contains("signed by no configured key (tried other)"),
        "{}",
        r.message
    );
    assert!(r.message.contains(layer.digest.as_str()), "{}", r.message);
    assert_eq!(r.kind, Some(MaterialKind::ImageSignature));
}

#[test]
fn cosign_simple_signing_of_another_image_is_subject_mismatch() {
    let layer = cosign_sig_layer("dir-img-cosign-valid");
    let keys = signers(&[("cosign", &vector("cosign-simplesigning/cosign.pub"))]);
    let other = manifest_digest("dir-img-cosign-key-rekor-valid");
    let r = only_rejection(verify(&[layer], &other, &keys));
    assert_eq!(r.reason, ReasonCode::SubjectMismatch);
    assert!(r.message.contains(other.as_str()), "{}", r.message);
    assert!(
        r.message
            .contains("sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00"),
        "{}",
        r.message
    );
}

#[test]
fn cosign_key_signature_with_a_rekor_bundle_verifies_with_its_own_key_only() {
    // The Rekor bundle annotation is not checked in this first form; the key signature is.
    let layer = cosign_sig_layer("dir-img-cosign-key-rekor-valid");
    assert!(layer.annotations.contains_key("dev.sigstore.cosign/bundle"));
    let candidate = manifest_digest("dir-img-cosign-key-rekor-valid");
    let both = signers(&[
        ("a-cosign", &vector("cosign-simplesigning/cosign.pub")),
        ("b-cosign2", &vector("cosign-simplesigning/cosign2.pub")),
    ]);
    assert_eq!(
        only_material(verify(std::slice::from_ref(&layer), &candidate, &both))
            .signer
            .signer,
        "b-cosign2"
    );
    let wrong = signers(&[("cosign", &vector("cosign-simplesigning/cosign.pub"))]);
    assert_eq!(
        only_rejection(verify(&[layer], &candidate, &wrong)).reason,
        ReasonCode::SignatureInvalid
    );
}

#[test]
fn cosign_keyless_signature_is_not_accepted_yet() {
    let layer = cosign_sig_layer("dir-img-cosign-fulcio-rekor-valid");
    assert!(layer.annotations.contains_key(ANNOTATION_CERTIFICATE));
    let keys = signers(&[("cosign", &vector("cosign-simplesigning/cosign.pub"))]);
    let r = only_rejection(verify(
        &[layer],
        &manifest_digest("dir-img-cosign-fulcio-rekor-valid"),
        &keys,
    ));
    assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    assert!(
        r.message.contains("no trust.trusted_root is configured"),
        "{}",
        r.message
    );
}

// ---- Chainloop: a plain DSSE envelope signed with a cosign key ----

const CHAINLOOP_WORKFLOW_SUBJECT: &str = "sha256:b81726b02d6ee3b2d6cf4caaa6d9846743e882a54f7594f2e1ecfc710cfe3a3c";

fn chainloop_keys() -> BTreeMap<String, Signer> {
    signers(&[("chainloop", &vector("chainloop/cli-action/cosign.pub"))])
}

#[test]
fn chainloop_cosign_key_attestation_verifies() {
    let bytes = read(&vector("chainloop/cli-action/cosign-attestation.json"));
    let candidate = Digest::parse(CHAINLOOP_WORKFLOW_SUBJECT).unwrap();
    let m = only_material(verify(&[att(bytes, BTreeMap::new())], &candidate, &chainloop_keys()));
    assert_eq!(m.kind, MaterialKind::ChainloopAttestation);
    assert_eq!(m.predicate_type, "chainloop.dev/attestation/v0.2");
    assert_eq!(m.statement["subject"][0]["name"], "chainloop.workflow.mywf");
}

#[test]
fn chainloop_attestation_with_a_tampered_payload_is_signature_invalid() {
    let mut envelope: serde_json::Value =
        serde_json::from_slice(&read(&vector("chainloop/cli-action/cosign-attestation.json"))).unwrap();
    let payload = dsse::decode_b64(envelope["payload"].as_str().unwrap()).unwrap();
    let tampered = String::from_utf8(payload)
        .unwrap()
        .replace("chainloop.workflow.mywf", "chainloop.workflow.evil");
    envelope["payload"] = dsse::encode_b64(tampered.as_bytes()).into();
    let ev = att(serde_json::to_vec(&envelope).unwrap(), BTreeMap::new());
    let candidate = Digest::parse(CHAINLOOP_WORKFLOW_SUBJECT).unwrap();
    let r = only_rejection(verify(&[ev], &candidate, &chainloop_keys()));
    assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    assert_eq!(
        r.kind,
        Some(MaterialKind::ChainloopAttestation),
        "present but failed, not missing"
    );
}

#[test]
fn chainloop_attestation_with_another_key_is_signature_invalid() {
    let bytes = read(&vector("chainloop/cli-action/cosign-attestation.json"));
    let keys = signers(&[("cosign", &vector("cosign-simplesigning/cosign.pub"))]);
    let candidate = Digest::parse(CHAINLOOP_WORKFLOW_SUBJECT).unwrap();
    assert_eq!(
        only_rejection(verify(&[att(bytes, BTreeMap::new())], &candidate, &keys)).reason,
        ReasonCode::SignatureInvalid
    );
}

// ---- a real keyless cosign `.att` layer (slsa-github-generator container workflow) ----

#[test]
fn keyless_cosign_attestation_layer_is_rejected_in_this_form() {
    let dir = "cosign-attestation-slsa-container";
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&vector(&format!("{dir}/att-manifest.sha256-21454caf.json")))).unwrap();
    let layer = &manifest["layers"][0];
    let bytes = read(&vector(&format!("{dir}/att-layer.dsse.sha256-e163b472.json")));
    let ev = RawEvidence {
        source: EvidenceSource::Att,
        media_type: layer["mediaType"].as_str().unwrap().to_string(),
        digest: Digest::parse(layer["digest"].as_str().unwrap()).unwrap(),
        bytes,
        annotations: serde_json::from_value(layer["annotations"].clone()).unwrap(),
    };
    let candidate_text =
        String::from_utf8(read(&vector(&format!("{dir}/container_workflow_dispatch.digest")))).unwrap();
    let candidate = Digest::parse(candidate_text.trim()).unwrap();
    let mut keys = chainloop_keys();
    keys.insert(
        "slsa-generator".into(),
        Signer::Keyless {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: SubjectMatch::Exact(
                "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v2.1.0"
                    .into(),
            ),
            claims: vec![],
        },
    );
    let r = only_rejection(verify(std::slice::from_ref(&ev), &candidate, &keys));
    assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    assert!(
        r.message.contains("no trust.trusted_root is configured"),
        "{}",
        r.message
    );
    assert!(r.message.contains(ev.digest.as_str()), "{}", r.message);
    assert_eq!(r.predicate_type.as_deref(), Some("https://slsa.dev/provenance/v0.2"));
    assert_eq!(r.kind, Some(MaterialKind::SlsaProvenance));
}

// ---- DSSE envelopes from an independent producer (in-toto / securesystemslib) ----

const LOAD_TEST: &str = "https://example.com/load-test/v1";

struct Produced {
    _dir: tempfile::TempDir,
    envelope: Vec<u8>,
    pubkey: PathBuf,
    privkey: PathBuf,
}

fn python() -> PathBuf {
    let python = root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-deps.sh to install in-toto and securesystemslib into .tools/venv",
        python.display()
    );
    python
}

/// Runs tests/support/intoto_attest.py; `key_in` reuses a private key from an earlier run.
fn intoto_attest(subject: &Digest, predicate_type: &str, key_in: Option<&Path>) -> Produced {
    let dir = tempfile::tempdir().unwrap();
    let predicate = dir.path().join("predicate.json");
    std::fs::write(&predicate, br#"{"p95_ms": 41, "requests": 100000}"#).unwrap();
    let (envelope, pubkey, privkey) = (
        dir.path().join("envelope.json"),
        dir.path().join("key.pub"),
        dir.path().join("key.pem"),
    );
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/support/intoto_attest.py"))
        .args([
            "--subject-name",
            "registry.example/acme/api",
            "--digest",
            subject.as_str(),
        ])
        .args(["--predicate-type", predicate_type])
        .arg("--predicate")
        .arg(&predicate)
        .arg("--out")
        .arg(&envelope)
        .arg("--pubkey-out")
        .arg(&pubkey);
    match key_in {
        Some(k) => cmd.arg("--key-in").arg(k),
        None => cmd.arg("--key-out").arg(&privkey),
    };
    let out = cmd.output().expect("run tests/support/intoto_attest.py");
    assert!(
        out.status.success(),
        "intoto_attest.py failed (run scripts/setup-test-deps.sh if in-toto or securesystemslib is missing): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Produced {
        envelope: read(&envelope),
        pubkey,
        privkey,
        _dir: dir,
    }
}

fn image() -> Digest {
    Digest::of(b"registry.example/acme/api manifest")
}

#[test]
fn intoto_envelope_verifies_with_its_key() {
    let p = intoto_attest(&image(), LOAD_TEST, None);
    let keys = signers(&[("load-test-key", &p.pubkey)]);
    let m = only_material(verify(&[att(p.envelope.clone(), BTreeMap::new())], &image(), &keys));
    assert_eq!(
        (m.kind, m.predicate_type.as_str()),
        (MaterialKind::Attestation, LOAD_TEST)
    );
    assert_eq!(m.signer.signer, "load-test-key");
    assert_eq!(m.statement["predicate"]["p95_ms"], 41);
    assert_eq!(m.statement["_type"], dsse::STATEMENT_V1);

    // A second envelope signed with the same private key verifies with the first public key.
    let again = intoto_attest(&image(), "https://slsa.dev/provenance/v1", Some(&p.privkey));
    let m = only_material(verify(&[att(again.envelope, BTreeMap::new())], &image(), &keys));
    assert_eq!(m.kind, MaterialKind::SlsaProvenance);
}

#[test]
fn intoto_envelope_for_another_digest_is_subject_mismatch() {
    let p = intoto_attest(&image(), LOAD_TEST, None);
    let other = Digest::of(b"some other image");
    let r = only_rejection(verify(
        &[att(p.envelope, BTreeMap::new())],
        &other,
        &signers(&[("k", &p.pubkey)]),
    ));
    assert_eq!(r.reason, ReasonCode::SubjectMismatch);
    assert!(
        r.message.contains(image().as_str()) && r.message.contains(other.as_str()),
        "{}",
        r.message
    );
    assert_eq!(r.predicate_type.as_deref(), Some(LOAD_TEST));
}

#[test]
fn intoto_envelope_with_an_unknown_key_is_signature_invalid() {
    let p = intoto_attest(&image(), LOAD_TEST, None);
    let stranger = intoto_attest(&image(), LOAD_TEST, None);
    let r = only_rejection(verify(
        &[att(p.envelope, BTreeMap::new())],
        &image(),
        &signers(&[("k", &stranger.pubkey)]),
    ));
    assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    assert!(r.message.contains("signed by no configured key"), "{}", r.message);
}

#[test]
fn corrupt_intoto_envelopes_are_signature_invalid() {
    let p = intoto_attest(&image(), LOAD_TEST, None);
    let keys = signers(&[("k", &p.pubkey)]);
    let envelope: serde_json::Value = serde_json::from_slice(&p.envelope).unwrap();

    let truncated = p.envelope[..p.envelope.len() - 10].to_vec();
    let mut flipped = envelope.clone();
    let mut payload = dsse::decode_b64(envelope["payload"].as_str().unwrap()).unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 0x01;
    flipped["payload"] = dsse::encode_b64(&payload).into();
    let mut retyped = envelope.clone();
    retyped["payloadType"] = "application/vnd.in-toto+json; charset=utf-8".into();

    for (what, bytes) in [
        ("truncated JSON", truncated),
        ("payload byte flipped", serde_json::to_vec(&flipped).unwrap()),
        ("payloadType changed", serde_json::to_vec(&retyped).unwrap()),
    ] {
        let r = only_rejection(verify(&[att(bytes, BTreeMap::new())], &image(), &keys));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid, "{what}: {}", r.message);
    }
}

#[test]
fn intoto_envelope_under_a_lying_predicate_type_annotation_is_signature_invalid() {
    let p = intoto_attest(&image(), LOAD_TEST, None);
    let keys = signers(&[("k", &p.pubkey)]);
    let lying = BTreeMap::from([(
        ANNOTATION_PREDICATE_TYPE.to_string(),
        "https://slsa.dev/provenance/v1".to_string(),
    )]);
    let r = only_rejection(verify(&[att(p.envelope.clone(), lying)], &image(), &keys));
    assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    assert!(r.message.contains("annotation"), "{}", r.message);
    assert_eq!(r.predicate_type.as_deref(), Some(LOAD_TEST));

    let honest = BTreeMap::from([(ANNOTATION_PREDICATE_TYPE.to_string(), LOAD_TEST.to_string())]);
    only_material(verify(&[att(p.envelope, honest)], &image(), &keys));
}
