//! Real Sigstore bundles (tests/vectors, see SOURCES.tsv) against tollgate's verifier: the
//! sigstore-conformance `bundle-verify` suite, and the public bundles the vectors README lists with
//! the outcome other verifiers (sigstore-js, sigstore-python, upstream tests) gave them.

use std::path::{Path, PathBuf};

use tollgate::config::SubjectMatch;
use tollgate::keys::PublicKey;
use tollgate::sigstore::crypto::Hash;
use tollgate::sigstore::{self, verify::check_identity, ArtifactDigest, Bundle, Signer, TrustedRoot};

const DEFAULT_IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const GH_ISSUER: &str = "https://token.actions.githubusercontent.com";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn root(rel: &str) -> TrustedRoot {
    TrustedRoot::parse(&String::from_utf8(read(&vectors().join(rel))).unwrap()).unwrap()
}

/// One conformance case, as its README describes: `Ok` if verification (including identity) passed.
fn conformance_case(dir: &Path) -> Result<(), String> {
    let root_text = match std::fs::read_to_string(dir.join("trusted_root.json")) {
        Ok(t) => t,
        Err(_) => String::from_utf8(read(&vectors().join("trust/sigstore-public-good.trusted_root.json"))).unwrap(),
    };
    let root = TrustedRoot::parse(&root_text).map_err(|e| format!("trusted root: {e}"))?;
    let artifact = std::fs::read(dir.join("artifact")).unwrap_or_else(|_| read(&dir.join("../a.txt")));
    let bundle = Bundle::parse(&read(&dir.join("bundle.sigstore.json"))).map_err(|e| e.to_string())?;
    let key = std::fs::read_to_string(dir.join("key.pub"))
        .ok()
        .map(|pem| PublicKey::from_pem(&pem).map_err(|e| format!("key.pub: {e}")))
        .transpose()?;
    let keys: Vec<&PublicKey> = key.iter().collect();
    let v =
        sigstore::verify_bundle(&bundle, &root, &ArtifactDigest::of(&artifact), &keys).map_err(|e| e.to_string())?;
    match (&v.signer, &key) {
        (Signer::Key(_), Some(_)) => Ok(()),
        (Signer::Certificate(id), None) => {
            let identity = std::fs::read_to_string(dir.join("identity")).unwrap_or(DEFAULT_IDENTITY.into());
            let issuer = std::fs::read_to_string(dir.join("issuer")).unwrap_or(GH_ISSUER.into());
            check_identity(id, issuer.trim(), &SubjectMatch::Exact(identity.trim().into())).map_err(|e| e.to_string())
        }
        (Signer::Certificate(_), Some(_)) => Err("a key was given but the bundle is keyless".into()),
        (Signer::Key(_), None) => Err("keyed bundle without a key".into()),
    }
}

#[test]
fn sigstore_conformance_bundle_verify_suite() {
    let suite = vectors().join("sigstore-conformance/bundle-verify");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&suite)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 70);
    let mut wrong = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let should_fail = name.ends_with("_fail");
        let outcome = std::panic::catch_unwind(|| conformance_case(dir)).unwrap_or_else(|_| Err("PANIC".into()));
        match (&outcome, should_fail) {
            (Ok(()), true) => wrong.push(format!("{name}: accepted, must fail")),
            (Err(e), false) => wrong.push(format!("{name}: rejected: {e}")),
            (Err(e), true) if e == "PANIC" => wrong.push(format!("{name}: panicked")),
            _ => {}
        }
        eprintln!("{name}: {:?}", outcome);
    }
    eprintln!(
        "conformance: {} of {} as expected",
        dirs.len() - wrong.len(),
        dirs.len()
    );
    // Cases still failing, with the reason (see the module report); the list must not grow.
    let known: &[&str] = &[];
    let unexpected: Vec<&String> = wrong
        .iter()
        .filter(|w| !known.iter().any(|k| w.starts_with(k)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} wrong:\n{}",
        unexpected.len(),
        wrong.join("\n")
    );
}

// ---- the public bundles of the vectors README, with the outcome it records ----

const PUBLIC_GOOD: &str = "trust/sigstore-public-good.trusted_root.json";
const STAGING: &str = "trust/sigstore-staging.trusted_root.json";
const GITHUB: &str = "trust/github.trusted_root.derived.json";
const OAUTH: &str = "https://github.com/login/oauth";

fn bundle(rel: &str) -> Bundle {
    Bundle::parse(read(&vectors().join(rel)).trim_ascii()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn hexd(alg: Hash, hex_digest: &str) -> Vec<ArtifactDigest> {
    vec![ArtifactDigest {
        hash: alg,
        digest: hex::decode(hex_digest).unwrap(),
    }]
}

/// The statement's own subject digest, checked against the prefix the README gives (where the README
/// does not give it whole): the signature, chain and log are still what is being tested.
fn subject(rel: &str, alg: Hash, prefix: &str) -> Vec<ArtifactDigest> {
    let b = bundle(rel);
    let tollgate::sigstore::bundle::Content::Dsse(env) = &b.content else {
        panic!("{rel} is not DSSE")
    };
    let st: serde_json::Value = serde_json::from_slice(&tollgate::dsse::decode_b64(&env.payload).unwrap()).unwrap();
    let hex_digest = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| {
            s["digest"][alg.intoto_name()]
                .as_str()
                .filter(|h| h.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("{rel}: no {prefix}… subject"))
        .to_string();
    hexd(alg, &hex_digest)
}

fn verify(rel: &str, root_rel: &str, expected: &[ArtifactDigest]) -> Result<sigstore::VerifiedBundle, sigstore::Error> {
    sigstore::verify_bundle(&bundle(rel), &root(root_rel), expected, &[])
}

fn identity(v: &sigstore::VerifiedBundle) -> &sigstore::Identity {
    match &v.signer {
        Signer::Certificate(id) => id,
        Signer::Key(_) => panic!("keyed"),
    }
}

fn assert_identity(
    rel: &str,
    root_rel: &str,
    expected: &[ArtifactDigest],
    issuer: &str,
    san: &str,
) -> sigstore::Identity {
    let v = verify(rel, root_rel, expected).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let id = identity(&v).clone();
    check_identity(&id, issuer, &SubjectMatch::Exact(san.into())).unwrap_or_else(|e| panic!("{rel}: {e}"));
    id
}

const SIGSTORE_JS_RELEASE: &str =
    "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main";

#[test]
fn sigstore_python_bundles() {
    let wheel = hexd(
        Hash::Sha256,
        "c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201",
    );
    let san = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2";
    let rel = "sigstore-python/bundle_v3_github.whl.sigstore";
    let id = assert_identity(rel, PUBLIC_GOOD, &wheel, GH_ISSUER, san);
    assert_eq!(id.github.build_trigger.as_deref(), Some("release"));
    assert_eq!(
        id.github.source_repository_digest.as_deref(),
        Some("d8b4a6445f38c48b9137a8099706d9b8073146e4")
    );
    assert_eq!(
        id.github.source_repository_uri.as_deref(),
        Some("https://github.com/trailofbits/rfc8785.py")
    );
    assert_eq!(id.github.source_repository_ref.as_deref(), Some("refs/tags/v0.1.2"));
    assert_eq!(id.github.source_repository_identifier.as_deref(), Some("768213997"));
    assert_eq!(id.github.source_repository_owner_identifier.as_deref(), Some("2314423"));
    assert_eq!(id.github.source_repository_visibility.as_deref(), Some("public"));
    let e = check_identity(&id, GH_ISSUER, &SubjectMatch::Exact(san.replace("v0.1.2", "v0.1.3"))).unwrap_err();
    assert_eq!(e.reason(), tollgate::reason::ReasonCode::IdentityMismatch);

    for (name, email) in [("bundle.txt", "a@tny.town"), ("bundle_v3.txt", "william@yossarian.net")] {
        let artifact = ArtifactDigest::of(&read(&vectors().join(format!("sigstore-python/{name}"))));
        let rel = format!("sigstore-python/{name}.sigstore");
        assert_identity(&rel, STAGING, &artifact, OAUTH, email);
        // Staging is another trust domain.
        let e = verify(&rel, PUBLIC_GOOD, &artifact).unwrap_err();
        assert_eq!(e.reason(), tollgate::reason::ReasonCode::TlogInvalid, "{e}");
    }
}

#[test]
fn sigstore_go_bundles() {
    let js2 = hexd(Hash::Sha512, "46d4e2f74c4877316640000a6fdf8a8b59f1e0847667973e9859f774dd31b8f1e0937813b777fb66a2ac67d50540fe34640966eee9fc2ccca387082b4c85cd3c");
    let rel = "sigstore-go/sigstore.js@2.0.0-provenance.sigstore.json";
    assert_identity(rel, PUBLIC_GOOD, &js2, GH_ISSUER, SIGSTORE_JS_RELEASE);
    let mut wrong = js2.clone();
    wrong[0].digest[0] = 0x56;
    let e = verify(rel, PUBLIC_GOOD, &wrong).unwrap_err();
    assert_eq!(e.reason(), tollgate::reason::ReasonCode::SubjectMismatch, "{e}");

    let js13 = hexd(Hash::Sha512, "76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751");
    assert_identity(
        "sigstore-go/bundle-provenance.json",
        PUBLIC_GOOD,
        &js13,
        GH_ISSUER,
        SIGSTORE_JS_RELEASE,
    );

    // The npm registry's publish attestation is keyed: the key comes from configuration, not the hint.
    // Its base64 is one 124-character line, which the strict PEM reader of `keys::PublicKey::from_pem` refuses.
    let pem = String::from_utf8(read(&vectors().join("sigstore-go/publish_key.pub"))).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let key = sigstore::crypto::key_from_spki(&tollgate::dsse::decode_b64(&body).unwrap()).unwrap();
    let other = tollgate::keys::SigningKey::generate().public_key();
    let b = bundle("sigstore-go/bundle-publish.json");
    let v = sigstore::verify_bundle(&b, &root(PUBLIC_GOOD), &js13, &[&other, &key]).unwrap();
    assert_eq!(v.signer, Signer::Key(1));
    assert!(sigstore::verify_bundle(&b, &root(PUBLIC_GOOD), &js13, &[&other]).is_err());

    let dsse = "sigstore-go/dsse.sigstore.json";
    let id = assert_identity(
        dsse,
        PUBLIC_GOOD,
        &subject(dsse, Hash::Sha512, "bbfd372f"),
        OAUTH,
        "brian@dehamer.com",
    );
    assert_eq!(id.issuer.as_deref(), Some(OAUTH), "only the legacy issuer OID");

    let e = Bundle::parse(&read(&vectors().join("sigstore-go/dsse-2sigs.sigstore.json"))).unwrap_err();
    assert!(e.to_string().contains("2 signatures"), "{e}");
}

#[test]
fn github_artifact_attestations() {
    let js21 = hexd(Hash::Sha512, "90f223f992e4c88dd068cd2a5fc57f9d2b30798343dd6e38f29c240e04ba090ef831f84490847c4e82b9232c78e8a258463b1e55c0f7469f730265008fa6633f");
    for rel in [
        "cli-gh-attestation/sigstore-js-2.1.0-bundle.json",
        "cli-gh-attestation/sigstore-js-2.1.0-bundle-v0.1.json",
    ] {
        let id = assert_identity(rel, PUBLIC_GOOD, &js21, GH_ISSUER, SIGSTORE_JS_RELEASE);
        assert_eq!(
            id.github.source_repository_uri.as_deref(),
            Some("https://github.com/sigstore/sigstore-js")
        );
    }
    let artifact = ArtifactDigest::of(&read(&vectors().join("cli-gh-attestation/custom-issuer-artifact")));
    assert_identity(
        "cli-gh-attestation/custom-issuer.sigstore.json",
        PUBLIC_GOOD,
        &artifact,
        "https://token.actions.githubusercontent.com/hammer-time",
        "https://github.com/too-legit/attest/.github/workflows/integration.yml@refs/heads/main",
    );
    let reusable = hexd(
        Hash::Sha256,
        "49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25",
    );
    let id = assert_identity(
        "cli-gh-attestation/reusable-workflow-attestation.sigstore.json",
        PUBLIC_GOOD,
        &reusable,
        GH_ISSUER,
        "https://github.com/github/artifact-attestations-workflows/.github/workflows/attest.yml@09b495c3f12c7881b3cc17209a327792065c1a1d",
    );
    assert_eq!(
        id.github.source_repository_uri.as_deref(),
        Some("https://github.com/malancas/attest-demo")
    );
    assert_eq!(
        id.github.build_config_uri.as_deref(),
        Some("https://github.com/malancas/attest-demo/.github/workflows/shared.yml@refs/heads/main")
    );

    // The GitHub trust domain: no tlog, an RFC 3161 timestamp, GitHub's own Fulcio.
    let private = "cli-gh-attestation/github_provenance_demo-0.0.12-py3-none-any-bundle.jsonl";
    let wheel = hexd(
        Hash::Sha256,
        "ae57936def59bc4c75edd3a837d89bcefc6d3a5e31d55a6fa7a71624f92c3c3b",
    );
    let id = assert_identity(
        private,
        GITHUB,
        &wheel,
        GH_ISSUER,
        "https://github.com/actions/attest-demo/.github/workflows/build-python.yml@refs/heads/main",
    );
    assert_eq!(id.github.source_repository_visibility.as_deref(), Some("private"));
    assert!(verify(private, PUBLIC_GOOD, &wheel).is_err());
    // The JSONL root (public-good + GitHub) accepts both domains.
    let both = "trust/gh-attestation-trusted-root.jsonl";
    assert!(verify(private, both, &wheel).is_ok());

    let release = "cli-gh-attestation/github_release_bundle.json";
    let v = verify(release, GITHUB, &subject(release, Hash::Sha256, "e15b593c")).unwrap();
    let id = identity(&v);
    assert_eq!(id.subject.as_deref(), Some("https://dotcom.releases.github.com"));
    assert_eq!(id.issuer, None, "release attestations carry no OIDC issuer");

    let bad = "cli-gh-attestation/sigstoreBundle-invalid-signature.json";
    // Its payload was altered (it no longer decodes to JSON), so any subject will do.
    assert!(verify(bad, PUBLIC_GOOD, &hexd(Hash::Sha256, &"ab".repeat(32))).is_err());
}

#[test]
fn attest_build_provenance_prober_bundles() {
    let san = "https://github.com/actions/attest-build-provenance/.github/workflows/prober.yml@refs/heads/main";
    for (id, public) in [
        ("13532655", true),
        ("13531551", false),
        ("13581567", false),
        ("13739985", false),
    ] {
        let rel = format!("gh-attestation-prober/actions-attest-build-provenance-attestation-{id}.sigstore.json");
        let expected = subject(&rel, Hash::Sha256, "");
        let (good, other) = if public {
            (PUBLIC_GOOD, GITHUB)
        } else {
            (GITHUB, PUBLIC_GOOD)
        };
        assert_identity(&rel, good, &expected, GH_ISSUER, san);
        assert!(verify(&rel, other, &expected).is_err(), "{rel} with the other root");
    }
}

#[test]
fn cosign_v3_and_slsa_bundles() {
    let image = hexd(
        Hash::Sha256,
        "c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172",
    );
    let rel = "cosign-v3-bundle/kubewarden-controller-v1.34.0.bundle_v03.json";
    let v = verify(rel, PUBLIC_GOOD, &image).unwrap();
    assert_eq!(
        v.statement.unwrap()["predicateType"],
        "https://sigstore.dev/cosign/sign/v1"
    );
    assert!(verify(rel, PUBLIC_GOOD, &hexd(Hash::Sha256, &"0".repeat(64))).is_err());
    assert_identity(
        "cosign-v3-bundle/cosign-oci-attestation.sigstore.json",
        PUBLIC_GOOD,
        &hexd(
            Hash::Sha256,
            "732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4",
        ),
        OAUTH,
        "cody@soyland.com",
    );

    let hello = ArtifactDigest::of(b"hello\n");
    assert_identity(
        "slsa-provenance/delegator-v2.1.0/binary-linux-amd64-workflow_dispatch.build.slsa",
        PUBLIC_GOOD,
        &hello,
        GH_ISSUER,
        "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/delegator_generic_slsa3.yml@refs/tags/v2.1.0",
    );
    let module = hexd(
        Hash::Sha256,
        "06ce330900a7d6403bc8d88e5dfad6aeeb8ae40179f66bb89e69c8bf6f6b1a0b",
    );
    let bcr = "https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml@refs/tags/v0.0.1";
    assert_identity(
        "slsa-provenance/bcr/MODULE.bazel.intoto.jsonl",
        PUBLIC_GOOD,
        &module,
        GH_ISSUER,
        bcr,
    );
    // The trap: valid signature, a predicate claiming publish-to-bcr, and another signer in the certificate.
    let v = verify(
        "slsa-provenance/bcr/MODULE-wrong-signer.bazel.intoto.jsonl",
        PUBLIC_GOOD,
        &module,
    )
    .unwrap();
    let e = check_identity(identity(&v), GH_ISSUER, &SubjectMatch::Exact(bcr.into())).unwrap_err();
    assert_eq!(e.reason(), tollgate::reason::ReasonCode::IdentityMismatch);
    assert!(e.to_string().contains("loosebazooka"), "{e}");
}

#[test]
fn chainloop_bundles_without_a_log_or_timestamp_are_rejected() {
    for rel in [
        "chainloop/verifier/bundle_valid.json",
        "chainloop/verifier/bundle_wrongversion.json",
        "chainloop/verifier/bundle_invalid.json",
        "chainloop/materials/attestation-bundle.json",
    ] {
        let b = Bundle::parse(&read(&vectors().join(rel))).unwrap_or_else(|e| panic!("{rel}: {e}"));
        // No signing time can be established, and the chainloop CA is not a root: fail closed.
        assert!(
            sigstore::verify_bundle(&b, &root(PUBLIC_GOOD), &[], &[]).is_err(),
            "{rel}"
        );
    }
    let e = Bundle::parse(&read(
        &vectors().join("chainloop/verifier/bundle_valid_nomaterial.json"),
    ))
    .unwrap_err();
    assert!(e.to_string().contains("verificationMaterial"), "{e}");
}

// ---- negative cases on real bundles, one mutation each ----

use tollgate::reason::ReasonCode;

const HAPPY: &str = "sigstore-conformance/bundle-verify/happy-path-v0.3/bundle.sigstore.json";
const PROBER: &str = "gh-attestation-prober/actions-attest-build-provenance-attestation-13532655.sigstore.json";

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&read(&vectors().join(rel))).unwrap()
}

fn a_txt() -> Vec<ArtifactDigest> {
    ArtifactDigest::of(&read(&vectors().join("sigstore-conformance/bundle-verify/a.txt")))
}

fn outcome(
    v: &serde_json::Value,
    root_rel: &str,
    expected: &[ArtifactDigest],
) -> Result<sigstore::VerifiedBundle, sigstore::Error> {
    let b = Bundle::parse(&serde_json::to_vec(v).unwrap())?;
    sigstore::verify_bundle(&b, &root(root_rel), expected, &[])
}

fn reason(v: &serde_json::Value, expected: &[ArtifactDigest]) -> ReasonCode {
    outcome(v, PUBLIC_GOOD, expected).unwrap_err().reason()
}

#[test]
fn the_unmutated_bases_verify() {
    assert!(outcome(&json(HAPPY), PUBLIC_GOOD, &a_txt()).is_ok());
    assert!(outcome(&json(PROBER), PUBLIC_GOOD, &subject(PROBER, Hash::Sha256, "bb030cb9")).is_ok());
}

#[test]
fn wrong_identity_or_issuer_is_identity_mismatch() {
    let v = outcome(&json(HAPPY), PUBLIC_GOOD, &a_txt()).unwrap();
    let id = identity(&v);
    let e = check_identity(id, GH_ISSUER, &SubjectMatch::Exact(format!("{DEFAULT_IDENTITY}x"))).unwrap_err();
    assert_eq!(e.reason(), ReasonCode::IdentityMismatch);
    let e = check_identity(id, OAUTH, &SubjectMatch::Exact(DEFAULT_IDENTITY.into())).unwrap_err();
    assert_eq!(e.reason(), ReasonCode::IdentityMismatch);
    // A regex is anchored only as written: unanchored matches inside, anchored must match whole.
    let loose = regex::Regex::new("sigstore-conformance/").unwrap();
    assert!(check_identity(id, GH_ISSUER, &SubjectMatch::Regex(loose)).is_ok());
    let anchored = regex::Regex::new("^sigstore-conformance/").unwrap();
    assert!(check_identity(id, GH_ISSUER, &SubjectMatch::Regex(anchored)).is_err());
}

#[test]
fn a_certificate_from_another_root_is_signature_invalid() {
    // The public-good logs with GitHub's CAs: the log entry is fine, the chain is not.
    let mut mixed = root(PUBLIC_GOOD);
    mixed.certificate_authorities = root(GITHUB).certificate_authorities;
    let b = bundle(HAPPY);
    let e = sigstore::verify_bundle(&b, &mixed, &a_txt(), &[]).unwrap_err();
    assert_eq!(e.reason(), ReasonCode::SignatureInvalid);
    assert!(matches!(e, sigstore::Error::Chain { .. }), "{e}");
}

#[test]
fn tampered_payload_signature_or_payload_type_is_signature_invalid() {
    let expected = subject(PROBER, Hash::Sha256, "bb030cb9");
    let base = json(PROBER);
    let payload = tollgate::dsse::decode_b64(base["dsseEnvelope"]["payload"].as_str().unwrap()).unwrap();
    let mut tampered = base.clone();
    let changed = String::from_utf8(payload).unwrap().replacen("prober", "probes", 1);
    tampered["dsseEnvelope"]["payload"] = tollgate::dsse::encode_b64(changed.as_bytes()).into();
    assert_eq!(reason(&tampered, &expected), ReasonCode::SignatureInvalid);

    let mut sig = base.clone();
    let mut bytes = tollgate::dsse::decode_b64(base["dsseEnvelope"]["signatures"][0]["sig"].as_str().unwrap()).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x01;
    sig["dsseEnvelope"]["signatures"][0]["sig"] = tollgate::dsse::encode_b64(&bytes).into();
    assert_eq!(reason(&sig, &expected), ReasonCode::SignatureInvalid);

    let mut typed = base.clone();
    typed["dsseEnvelope"]["payloadType"] = "application/json".into();
    assert_eq!(reason(&typed, &expected), ReasonCode::SignatureInvalid);

    let mut message = json(HAPPY);
    let mut s = tollgate::dsse::decode_b64(message["messageSignature"]["signature"].as_str().unwrap()).unwrap();
    s[10] ^= 0x40;
    message["messageSignature"]["signature"] = tollgate::dsse::encode_b64(&s).into();
    assert_eq!(reason(&message, &a_txt()), ReasonCode::SignatureInvalid);
}

#[test]
fn another_subject_is_subject_mismatch() {
    assert_eq!(
        reason(&json(PROBER), &ArtifactDigest::of(b"other")),
        ReasonCode::SubjectMismatch
    );
    assert_eq!(
        reason(&json(HAPPY), &ArtifactDigest::of(b"other")),
        ReasonCode::SubjectMismatch
    );
}

#[test]
fn a_moved_integrated_time_breaks_the_set() {
    let mut v = json(HAPPY);
    let t: i64 = v["verificationMaterial"]["tlogEntries"][0]["integratedTime"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    v["verificationMaterial"]["tlogEntries"][0]["integratedTime"] = (t + 120).to_string().into();
    let e = outcome(&v, PUBLIC_GOOD, &a_txt()).unwrap_err();
    assert_eq!(e.reason(), ReasonCode::TlogInvalid);
    assert!(e.to_string().contains("signed entry timestamp"), "{e}");
}

#[test]
fn a_signing_time_outside_the_certificate_is_rejected() {
    let dir = vectors().join("sigstore-conformance/bundle-verify/integrated-time-in-future_fail");
    let b = Bundle::parse(&read(&dir.join("bundle.sigstore.json"))).unwrap();
    let e = sigstore::verify_bundle(&b, &root(PUBLIC_GOOD), &a_txt(), &[]).unwrap_err();
    assert!(matches!(e, sigstore::Error::OutsideValidity { .. }), "{e}");
    assert_eq!(e.reason(), ReasonCode::SignatureInvalid);
}

#[test]
fn a_root_hash_that_is_not_the_checkpoints_is_tlog_invalid() {
    let mut v = json(HAPPY);
    let proof = &mut v["verificationMaterial"]["tlogEntries"][0]["inclusionProof"];
    proof["rootHash"] = tollgate::dsse::encode_b64(&[7u8; 32]).into();
    let e = outcome(&v, PUBLIC_GOOD, &a_txt()).unwrap_err();
    assert_eq!(e.reason(), ReasonCode::TlogInvalid, "{e}");
    // With a proof that still leads to its rootHash, the checkpoint is what catches it.
    let dir = vectors().join("sigstore-conformance/bundle-verify/checkpoint-wrong-roothash_fail");
    let b = Bundle::parse(&read(&dir.join("bundle.sigstore.json"))).unwrap();
    let e = sigstore::verify_bundle(&b, &root(PUBLIC_GOOD), &a_txt(), &[]).unwrap_err();
    assert_eq!(e.reason(), ReasonCode::TlogInvalid);
    assert!(e.to_string().contains("checkpoint's root hash"), "{e}");
}

#[test]
fn truncations_and_bit_flips_never_panic_nor_verify_another_content() {
    let public_good = root(PUBLIC_GOOD);
    for (rel, expected) in [(HAPPY, a_txt()), (PROBER, subject(PROBER, Hash::Sha256, "bb030cb9"))] {
        let full = read(&vectors().join(rel));
        let step = (full.len() / 400).max(1);
        for len in (0..full.len()).step_by(step) {
            let Ok(b) = Bundle::parse(&full[..len]) else { continue };
            assert!(
                sigstore::verify_bundle(&b, &public_good, &expected, &[]).is_err(),
                "{rel} truncated to {len}"
            );
        }
        for i in (0..full.len()).step_by(step) {
            let mut bytes = full.clone();
            bytes[i] ^= 0x04;
            if let Ok(b) = Bundle::parse(&bytes) {
                // A flip in JSON whitespace or a case-insensitive spot may still verify; it must then be
                // the same signed content.
                if let Ok(v) = sigstore::verify_bundle(&b, &public_good, &expected, &[]) {
                    // (the messageDigest hint may vanish with a flipped key: it is unauthenticated)
                    let original = Bundle::parse(&full).unwrap();
                    assert_eq!(b.signature(), original.signature(), "{rel} flip at {i}: {v:?}");
                    assert!(
                        v.statement.is_none() || v.statement == outcome_statement(&original),
                        "{rel} flip at {i}"
                    );
                }
            }
        }
    }
}

fn outcome_statement(b: &Bundle) -> Option<serde_json::Value> {
    match &b.content {
        tollgate::sigstore::bundle::Content::Dsse(env) => {
            serde_json::from_slice(&tollgate::dsse::decode_b64(&env.payload)?).ok()
        }
        _ => None,
    }
}
