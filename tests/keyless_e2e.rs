//! Keyless evidence end to end, made by tools nobody on tollgate wrote: a keyless SLSA provenance
//! signed by sigstore-js (or sigstore-python) against a mock Fulcio and Rekor, attached by
//! `@sigstore/oci` to an image in a real `docker-registry` (no referrers API, so through the
//! `sha256-<hex>` tag fallback index, as GitHub's `actions/attest` does there), fetched by
//! tollgate's registry store and verified against the pinned `trusted_root.json` made from the
//! mock keys. Each way of breaking it must be rejected with the reason a release manager needs.

mod support {
    pub mod registry;
    pub mod sigstore_js;
}

use std::io::{Read, Write};
use std::net::TcpStream;

use support::registry::Registry;
use support::sigstore_js::{Keyless, Produced, Producer, Tamper, GITHUB_ISSUER};
use tollgate::config;
use tollgate::gate::evidence::EvidenceStore;
use tollgate::gate::{EvidenceSource, MaterialKind, RawEvidence, Verified};
use tollgate::image::{Digest, ImageRef};
use tollgate::oci::RegistryStore;
use tollgate::reason::ReasonCode;

const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// The contract's identity for release builds of any acme repository (SPEC §3's example).
const RELEASE_REGEX: &str = r"^https://github\.com/acme/[^/]+/\.github/workflows/release\.yml@refs/tags/v.+$";

struct World {
    _registry: Registry,
    host: String,
    store: RegistryStore,
    dir: tempfile::TempDir,
    digest: Digest,
}

impl World {
    async fn new() -> World {
        let registry = Registry::start();
        let host = registry.host();
        let store = RegistryStore::new(
            &host,
            &config::Registry {
                insecure: true,
                ..Default::default()
            },
        )
        .unwrap();
        let digest = store
            .push_test_image("acme/api", "1.0", &[("VERSION", b"1.0")])
            .await
            .unwrap();
        World {
            _registry: registry,
            host,
            store,
            dir: tempfile::tempdir().unwrap(),
            digest,
        }
    }

    fn image(&self) -> ImageRef {
        ImageRef::parse(&format!("{}/acme/api", self.host)).unwrap()
    }

    /// A keyless provenance for the image, attached to it; adjust with `with` before producing.
    fn keyless(&self) -> Keyless {
        Keyless::new(Some(&self.host), "acme/api", &self.digest)
    }

    /// A plain `GET` on the registry (status, body), to look at what the producer wrote.
    fn get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.host).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/vnd.oci.image.index.v1+json\r\n\r\n",
            self.host
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (status, body.to_string())
    }

    async fn fetch(&self) -> Vec<RawEvidence> {
        self.store.fetch(&self.image(), &self.digest).await.unwrap()
    }

    /// tollgate's configuration for one keyless signer, loaded as a user's file would be.
    fn config(&self, produced: &Produced, issuer: &str, subject_regex: &str) -> config::Config {
        let path = self.dir.path().join("tollgate.yaml");
        let text = format!(
            "version: 1\n\
             trust:\n  trusted_root: {root}\n  signers:\n    github-release:\n      keyless:\n        \
             issuer: {issuer}\n        subject_regex: '{subject_regex}'\n",
            root = produced.trusted_root.display()
        );
        std::fs::write(&path, text).unwrap();
        config::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Fetches what is attached to the image and verifies it with the release identity.
    async fn verify(&self, produced: &Produced, issuer: &str, subject_regex: &str) -> Verified {
        let config = self.config(produced, issuer, subject_regex);
        let evidence = self.fetch().await;
        assert_eq!(evidence.len(), 1, "one bundle attached: {evidence:?}");
        tollgate::gate::verify::verify(&evidence, &self.digest, &config.trust)
    }
}

/// Produces `keyless` (attached to the world's image) into the world's folder.
fn produce(world: &World, name: &str, keyless: &Keyless) -> Produced {
    let produced = keyless.run(world.dir.path(), name);
    assert!(
        produced.referrer.is_some(),
        "produce.mjs attached nothing: {:#}",
        produced.summary
    );
    produced
}

/// The single rejection, which must be the bundle's and carry `reason`.
fn assert_rejected(verified: &Verified, produced: &Produced, reason: ReasonCode) {
    assert!(verified.materials.is_empty(), "nothing may verify: {verified:#?}");
    assert_eq!(verified.rejections.len(), 1, "{verified:#?}");
    let r = &verified.rejections[0];
    assert_eq!(
        (r.reason, r.source, &r.digest),
        (reason, EvidenceSource::Bundle, &produced.bundle_digest),
        "{}",
        r.message
    );
    // A present-but-failing provenance is not a missing one: the rejection keeps its kind.
    assert_eq!(r.kind, Some(MaterialKind::SlsaProvenance), "{r:#?}");
}

fn assert_verified_keyless(verified: &Verified, produced: &Produced, statement_digest: &Digest) {
    assert!(verified.rejections.is_empty(), "{:#?}", verified.rejections);
    assert_eq!(verified.materials.len(), 1, "{verified:#?}");
    let m = &verified.materials[0];
    assert_eq!(m.kind, MaterialKind::SlsaProvenance);
    assert_eq!(m.predicate_type, PROVENANCE);
    assert_eq!(
        (m.signer.signer.as_str(), m.signer.method),
        ("github-release", "keyless")
    );
    assert_eq!((m.source, &m.digest), (EvidenceSource::Bundle, &produced.bundle_digest));
    assert_eq!(m.statement["subject"][0]["digest"]["sha256"], statement_digest.hex());
}

#[tokio::test]
async fn sigstore_js_bundle_attached_without_referrers_api_is_fetched_through_the_tag_fallback() {
    let world = World::new().await;
    let produced = produce(&world, "provenance", &world.keyless());
    // Both independent verifiers accepted it before it was attached.
    assert_eq!(produced.summary["checks"]["sigstore_js"]["ok"], true);
    if produced.checked_by_python() {
        assert_eq!(produced.summary["checks"]["sigstore_python"]["ok"], true);
    }

    // docker-registry 2.8 has no referrers API, so @sigstore/oci wrote the fallback index at the
    // `sha256-<hex>` tag, listing the referrer manifest with the bundle's artifact type.
    let referrers = world.get(&format!("/v2/acme/api/referrers/{}", world.digest));
    assert_eq!(referrers.0, 404, "this registry is expected to have no referrers API");
    let (status, index) = world.get(&format!("/v2/acme/api/manifests/{}", world.digest.cosign_tag("")));
    assert_eq!(status, 200, "no fallback index at the sha256-<hex> tag");
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        produced.referrer.as_ref().unwrap().as_str()
    );
    assert_eq!(index["manifests"][0]["artifactType"], BUNDLE_MEDIA_TYPE);

    let evidence = world.fetch().await;
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    let ev = &evidence[0];
    assert_eq!(ev.source, EvidenceSource::Bundle);
    assert_eq!(ev.media_type, BUNDLE_MEDIA_TYPE);
    assert_eq!(ev.digest, produced.bundle_digest);
    assert_eq!(ev.bytes, produced.bundle_bytes());
    // @sigstore/oci puts `dev.sigstore.bundle.predicateType` on the referrer manifest, not on the
    // layer; the unverified hint still finds the predicate type, in the payload.
    assert_eq!(tollgate::gate::verify::predicate_hint(ev).as_deref(), Some(PROVENANCE));

    // The second bundle for the same image lands in the same fallback index, next to the first.
    produce(&world, "provenance-2", &world.keyless());
    assert_eq!(world.fetch().await.len(), 2);
}

#[tokio::test]
async fn keyless_provenance_from_sigstore_js_verifies_as_keyless() {
    let world = World::new().await;
    let produced = produce(&world, "provenance", &world.keyless());
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_verified_keyless(&verified, &produced, &world.digest);
}

#[tokio::test]
async fn keyless_provenance_from_sigstore_python_verifies_as_keyless() {
    let world = World::new().await;
    let keyless = Keyless {
        producer: Producer::Python,
        ..world.keyless()
    };
    let produced = produce(&world, "provenance", &keyless);
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_verified_keyless(&verified, &produced, &world.digest);
}

#[tokio::test]
async fn keyless_signature_by_another_workflow_is_identity_mismatch() {
    let world = World::new().await;
    let produced = produce(&world, "provenance", &world.keyless());
    // Signed by release.yml of acme/api; the contract only trusts deploy.yml.
    let verified = world
        .verify(
            &produced,
            GITHUB_ISSUER,
            r"^https://github\.com/acme/[^/]+/\.github/workflows/deploy\.yml@.+$",
        )
        .await;
    assert_rejected(&verified, &produced, ReasonCode::IdentityMismatch);
}

#[tokio::test]
async fn keyless_signature_from_another_issuer_is_identity_mismatch() {
    let world = World::new().await;
    let produced = produce(&world, "provenance", &world.keyless());
    // Same subject text, but vouched for by another OIDC issuer than the one configured.
    let verified = world.verify(&produced, "https://gitlab.com", RELEASE_REGEX).await;
    assert_rejected(&verified, &produced, ReasonCode::IdentityMismatch);
}

#[tokio::test]
async fn keyless_bundle_with_changed_payload_is_signature_invalid() {
    let world = World::new().await;
    let keyless = Keyless {
        tamper: Some(Tamper::Payload),
        ..world.keyless()
    };
    let produced = produce(&world, "tampered", &keyless);
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_rejected(&verified, &produced, ReasonCode::SignatureInvalid);
}

#[tokio::test]
async fn keyless_bundle_with_flipped_signature_is_signature_invalid() {
    let world = World::new().await;
    let keyless = Keyless {
        tamper: Some(Tamper::Signature),
        ..world.keyless()
    };
    let produced = produce(&world, "tampered", &keyless);
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_rejected(&verified, &produced, ReasonCode::SignatureInvalid);
}

#[tokio::test]
async fn keyless_certificate_from_a_ca_outside_the_trusted_root_is_signature_invalid() {
    let world = World::new().await;
    let keyless = Keyless {
        tamper: Some(Tamper::CertificateRoot),
        ..world.keyless()
    };
    let produced = produce(&world, "rogue-ca", &keyless);
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_rejected(&verified, &produced, ReasonCode::SignatureInvalid);
}

#[tokio::test]
async fn keyless_bundle_with_moved_integrated_time_is_tlog_invalid() {
    let world = World::new().await;
    let keyless = Keyless {
        tamper: Some(Tamper::IntegratedTime),
        ..world.keyless()
    };
    let produced = produce(&world, "moved-time", &keyless);
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_rejected(&verified, &produced, ReasonCode::TlogInvalid);
}

#[tokio::test]
async fn keyless_attestation_replayed_from_another_digest_is_subject_mismatch() {
    let world = World::new().await;
    // A genuine provenance of an older build, re-attached to the candidate.
    let other = Digest::of(b"an older build's manifest");
    let keyless = Keyless {
        statement_digest: Some(other.clone()),
        ..world.keyless()
    };
    let produced = produce(&world, "replayed", &keyless);
    assert_eq!(produced.statement_digest, other);
    let verified = world.verify(&produced, GITHUB_ISSUER, RELEASE_REGEX).await;
    assert_rejected(&verified, &produced, ReasonCode::SubjectMismatch);
}
