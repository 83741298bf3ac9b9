//! The evidence stores against real things: a `docker-registry` on loopback, OCI layouts on disk,
//! and images and layouts made by `umoci` and moved by `skopeo`, the way users make them.

mod support {
    pub mod registry;
}

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use support::registry::{free_port, Registry};
use tollgate::config::{self, Config};
use tollgate::gate::evidence::{EvidenceError, EvidenceStore};
use tollgate::gate::{EvidenceSource, RawEvidence};
use tollgate::image::{Digest, ImageRef};
use tollgate::oci::build::{empty_config, Blob, Built};
use tollgate::oci::cosign::{self, Backend};
use tollgate::oci::manifest::{self as m, Descriptor, ImageManifest, Index};
use tollgate::oci::{LayoutStore, Limits, RegistryStore, Stores};

const SBOM: &str = "https://cyclonedx.org/bom";
const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

fn insecure() -> config::Registry {
    config::Registry {
        insecure: true,
        ..config::Registry::default()
    }
}

fn registry_store(reg: &Registry) -> RegistryStore {
    RegistryStore::new(&reg.host(), &insecure()).expect("registry store")
}

fn image(host: &str, repo_tag: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/{repo_tag}")).expect("image ref")
}

fn envelope(n: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": tollgate::dsse::encode_b64(format!("{{\"n\":{n}}}").as_bytes()),
        "signatures": [{"sig": "c2ln"}],
    }))
    .unwrap()
}

/// The two stores behind one face, so every scenario runs against both.
#[async_trait::async_trait]
trait TestStore: EvidenceStore + Backend {
    async fn create(&self, repo: &str, tag: &str, files: &[(&str, &[u8])]) -> Digest;
    async fn sign(&self, image: &ImageRef, digest: &Digest, payload: &[u8], sig: &str);
}

#[async_trait::async_trait]
impl TestStore for RegistryStore {
    async fn create(&self, repo: &str, tag: &str, files: &[(&str, &[u8])]) -> Digest {
        self.push_test_image(repo, tag, files).await.expect("push test image")
    }
    async fn sign(&self, image: &ImageRef, digest: &Digest, payload: &[u8], sig: &str) {
        self.attach_signature(image, digest, payload, sig, &BTreeMap::new())
            .await
            .expect("attach signature")
    }
}

#[async_trait::async_trait]
impl TestStore for LayoutStore {
    async fn create(&self, repo: &str, tag: &str, files: &[(&str, &[u8])]) -> Digest {
        self.create_image(repo, tag, files).expect("create image")
    }
    async fn sign(&self, image: &ImageRef, digest: &Digest, payload: &[u8], sig: &str) {
        self.attach_signature(image, digest, payload, sig, &BTreeMap::new())
            .await
            .expect("attach signature")
    }
}

/// Image → tag resolves → no evidence → two attestations → a signature → a bundle referrer.
async fn evidence_round_trip<S: TestStore>(store: &S, host: &str) {
    let digest = store
        .create("acme/api", "1.4.2", &[("app/hello.txt", b"hello\n")])
        .await;
    let tagged = image(host, "acme/api:1.4.2");
    assert_eq!(store.resolve(&tagged).await.unwrap(), digest);
    assert_eq!(
        store.resolve(&tagged.with_digest(digest.clone())).await.unwrap(),
        digest
    );

    assert_eq!(
        store.fetch(&tagged, &digest).await.unwrap(),
        Vec::<RawEvidence>::new(),
        "no evidence yet"
    );

    store
        .attach_attestation(&tagged, &digest, &envelope(1), SBOM)
        .await
        .unwrap();
    store
        .attach_attestation(&tagged, &digest, &envelope(2), PROVENANCE)
        .await
        .unwrap();
    let got = store.fetch(&tagged, &digest).await.unwrap();
    assert_eq!(got.len(), 2);
    for (ev, (n, pt)) in got.iter().zip([(1, SBOM), (2, PROVENANCE)]) {
        assert_eq!(ev.source, EvidenceSource::Att);
        assert_eq!(ev.media_type, tollgate::dsse::MEDIA_TYPE);
        assert_eq!(ev.bytes, envelope(n));
        assert_eq!(ev.digest, Digest::of(&envelope(n)));
        assert_eq!(ev.annotations.get("predicateType").map(String::as_str), Some(pt));
    }

    let payload = br#"{"critical":{"type":"cosign container image signature"}}"#;
    store.sign(&tagged, &digest, payload, "MEUCIQ==").await;
    let got = store.fetch(&tagged, &digest).await.unwrap();
    assert_eq!(
        got.iter().map(|e| e.source).collect::<Vec<_>>(),
        [EvidenceSource::Sig, EvidenceSource::Att, EvidenceSource::Att]
    );
    assert_eq!(got[0].bytes, payload);
    assert_eq!(got[0].media_type, m::SIMPLE_SIGNING);
    assert_eq!(
        got[0].annotations.get(m::COSIGN_SIGNATURE).map(String::as_str),
        Some("MEUCIQ==")
    );

    // A Sigstore bundle, pushed as @sigstore/oci does without a referrers API: a manifest with a
    // subject, listed in an index at tag `sha256-<hex>`.
    let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;
    push_bundle_referrer(store, &tagged, &digest, bundle).await;
    let got = store.fetch(&tagged, &digest).await.unwrap();
    let bundles: Vec<_> = got.iter().filter(|e| e.source == EvidenceSource::Bundle).collect();
    assert_eq!(bundles.len(), 1);
    assert_eq!(bundles[0].bytes, bundle);
    assert_eq!(bundles[0].media_type, BUNDLE_V03);
}

async fn push_bundle_referrer<B: Backend + ?Sized>(b: &B, image: &ImageRef, subject: &Digest, bundle: &[u8]) {
    let config = empty_config();
    let layer = Blob::new(BUNDLE_V03, bundle.to_vec());
    let subject_manifest = b.get_manifest(image, subject.as_str()).await.unwrap().unwrap();
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(m::OCI_MANIFEST.into()),
        artifact_type: Some(BUNDLE_V03.into()),
        config: config.descriptor.clone(),
        layers: vec![layer.descriptor.clone()],
        subject: Some(Descriptor::of(m::OCI_MANIFEST, &subject_manifest)),
        annotations: BTreeMap::from([("dev.sigstore.bundle.content".into(), "dsse-envelope".into())]),
        other: Default::default(),
    };
    let built = Built {
        blobs: vec![config, layer],
        manifest: m::to_bytes(&manifest),
    };
    let manifest_digest = cosign::store(b, image, "bundle-1", built.clone()).await.unwrap();
    let mut entry = Descriptor::of(m::OCI_MANIFEST, &built.manifest);
    entry.artifact_type = Some(BUNDLE_V03.into());
    assert_eq!(entry.digest, manifest_digest.to_string());
    let index = Index {
        manifests: vec![entry],
        ..Index::empty()
    };
    b.put_manifest(image, &subject.cosign_tag(""), m::OCI_INDEX, &m::to_bytes(&index))
        .await
        .unwrap();
}

/// With a 1 KiB blob limit, a 2 KiB attestation is refused, naming the limit.
async fn blob_over_limit_is_invalid<S: TestStore>(store: &S, limited: &dyn EvidenceStore, host: &str) {
    let digest = store.create("acme/big", "1", &[("f", b"f")]).await;
    let img = image(host, "acme/big:1");
    let big =
        serde_json::to_vec(&serde_json::json!({"payload": "A".repeat(2048), "payloadType": "x", "signatures": []}))
            .unwrap();
    store.attach_attestation(&img, &digest, &big, SBOM).await.unwrap();
    assert_eq!(
        store.fetch(&img, &digest).await.unwrap().len(),
        1,
        "fine under the default limits"
    );
    match limited.fetch(&img, &digest).await {
        Err(e @ EvidenceError::Invalid { .. }) => assert!(e.to_string().contains("max blob size"), "{e}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn small_limits() -> Limits {
    Limits {
        max_blob_bytes: 1024,
        max_layers: 2,
        ..Limits::default()
    }
}

#[tokio::test]
async fn registry_round_trips_attestations_signatures_and_bundles() {
    let reg = Registry::start();
    evidence_round_trip(&registry_store(&reg), &reg.host()).await;
}

#[tokio::test]
async fn layout_round_trips_attestations_signatures_and_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let store = LayoutStore::new("registry.local", dir.path());
    evidence_round_trip(&store, "registry.local").await;
    let layout = dir.path().join("acme/api");
    assert!(layout.join("oci-layout").is_file() && layout.join("index.json").is_file());
}

#[tokio::test]
async fn registry_blob_over_the_limit_is_invalid() {
    let reg = Registry::start();
    let limited = RegistryStore::with_limits(&reg.host(), &insecure(), small_limits()).unwrap();
    blob_over_limit_is_invalid(&registry_store(&reg), &limited, &reg.host()).await;
}

#[tokio::test]
async fn layout_blob_over_the_limit_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let limited = LayoutStore::with_limits("registry.local", dir.path(), small_limits());
    blob_over_limit_is_invalid(
        &LayoutStore::new("registry.local", dir.path()),
        &limited,
        "registry.local",
    )
    .await;
}

#[tokio::test]
async fn too_many_layers_is_invalid_and_refused_on_attach() {
    let reg = Registry::start();
    let store = registry_store(&reg);
    let limited = RegistryStore::with_limits(&reg.host(), &insecure(), small_limits()).unwrap();
    let digest = store.create("acme/many", "1", &[("f", b"f")]).await;
    let img = image(&reg.host(), "acme/many:1");
    for n in 0..3 {
        store
            .attach_attestation(&img, &digest, &envelope(n), SBOM)
            .await
            .unwrap();
    }
    let err = limited.fetch(&img, &digest).await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::Invalid { .. }) && err.to_string().contains("max layers per manifest"),
        "{err}"
    );
    let err = limited
        .attach_attestation(&img, &digest, &envelope(9), SBOM)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max layers per manifest"), "{err}");
}

#[tokio::test]
async fn unknown_tags_are_not_found_and_unknown_repositories_have_no_evidence() {
    let reg = Registry::start();
    let store = registry_store(&reg);
    let missing = image(&reg.host(), "acme/nothing:1.0");
    assert!(matches!(
        store.resolve(&missing).await,
        Err(EvidenceError::NotFound { .. })
    ));
    let d = Digest::of(b"not an image");
    assert_eq!(store.fetch(&missing, &d).await.unwrap(), vec![]);
    // A pinned reference resolves to its own digest without asking the registry.
    assert_eq!(store.resolve(&missing.with_digest(d.clone())).await.unwrap(), d);
    // Evidence for an image the store does not have is refused, as cosign refuses it.
    let err = store
        .attach_attestation(&missing, &d, &envelope(1), SBOM)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::NotFound { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let layout = LayoutStore::new("registry.local", dir.path());
    let err = layout
        .attach_attestation(&image("registry.local", "acme/x:1"), &d, &envelope(1), SBOM)
        .await
        .unwrap_err();
    assert!(matches!(err, EvidenceError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_registry_that_is_not_running_is_unavailable() {
    let host = format!("127.0.0.1:{}", free_port());
    let store = RegistryStore::new(&host, &insecure()).unwrap();
    let img = image(&host, "acme/api:1");
    for err in [
        store.resolve(&img).await.unwrap_err(),
        store.fetch(&img, &Digest::of(b"x")).await.unwrap_err(),
    ] {
        assert!(
            matches!(err, EvidenceError::Unavailable { .. }) && err.is_transient(),
            "{err}"
        );
    }
    let err = store
        .attach_attestation(&img, &Digest::of(b"x"), &envelope(1), SBOM)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/setup-test-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An image built by umoci and pushed by skopeo gets evidence attached by tollgate, which skopeo
/// then reads back as a plain manifest; umoci's layout is read directly by the layout store.
#[tokio::test]
async fn images_from_umoci_and_skopeo_interoperate() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("acme/web");
    run(Command::new("umoci").arg("init").arg("--layout").arg(&layout));
    run(Command::new("umoci")
        .arg("new")
        .arg("--image")
        .arg(format!("{}:v1", layout.display())));
    let dest = format!("docker://{}/acme/web:v1", reg.host());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(&dest));

    let store = registry_store(&reg);
    let img = image(&reg.host(), "acme/web:v1");
    let digest = store.resolve(&img).await.unwrap();
    // skopeo copies an OCI manifest unchanged, so both sides agree on the digest.
    let local = LayoutStore::new("registry.local", work.path());
    assert_eq!(
        local.resolve(&image("registry.local", "acme/web:v1")).await.unwrap(),
        digest
    );

    store
        .attach_attestation(&img, &digest, &envelope(7), SBOM)
        .await
        .unwrap();
    let got = store.fetch(&img, &digest).await.unwrap();
    assert_eq!((got.len(), got[0].bytes.clone()), (1, envelope(7)));

    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/acme/web:{}", reg.host(), digest.cosign_tag("att"))));
    let att: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(att["layers"][0]["annotations"]["predicateType"], SBOM);
    assert_eq!(att["layers"][0]["mediaType"], tollgate::dsse::MEDIA_TYPE);
}

/// Evidence that tollgate wrote into an OCI layout survives `skopeo copy` into a registry.
#[tokio::test]
async fn layout_evidence_copied_by_skopeo_reads_back_from_the_registry() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let local = LayoutStore::new("registry.local", work.path());
    let digest = local
        .create_image("acme/api", "2.0", &[("bin/app", b"#!/bin/sh\n")])
        .unwrap();
    let local_img = image("registry.local", "acme/api:2.0");
    local
        .attach_attestation(&local_img, &digest, &envelope(3), PROVENANCE)
        .await
        .unwrap();

    let dir = work.path().join("acme/api");
    for tag in ["2.0".to_string(), digest.cosign_tag("att")] {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", dir.display()))
            .arg(format!("docker://{}/acme/api:{tag}", reg.host())));
    }
    let store = registry_store(&reg);
    let img = image(&reg.host(), "acme/api:2.0");
    assert_eq!(store.resolve(&img).await.unwrap(), digest);
    let got = store.fetch(&img, &digest).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].annotations["predicateType"], PROVENANCE);
}

#[tokio::test]
async fn stores_route_configured_hosts_to_layouts_and_registries() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = minimal_config(dir.path());
    cfg.registries.insert(reg.host(), insecure());
    cfg.registries.insert(
        "registry.local".into(),
        config::Registry {
            oci_layout: Some(dir.path().join("layouts")),
            ..config::Registry::default()
        },
    );
    let stores = Stores::from_config(&cfg).unwrap();

    let pushed = registry_store(&reg).create("acme/api", "1", &[("a", b"a")]).await;
    assert_eq!(
        stores
            .for_image(&image(&reg.host(), "acme/api:1"))
            .resolve(&image(&reg.host(), "acme/api:1"))
            .await
            .unwrap(),
        pushed
    );

    let created = LayoutStore::new("registry.local", dir.path().join("layouts"))
        .create_image("acme/api", "1", &[])
        .unwrap();
    let local: Arc<dyn EvidenceStore> = stores.for_image(&image("registry.local", "acme/api:1"));
    assert_eq!(
        local.resolve(&image("registry.local", "acme/api:1")).await.unwrap(),
        created
    );
}

fn minimal_config(dir: &Path) -> Config {
    Config {
        source: dir.join("tollgate.yaml"),
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: dir.join("state"),
        repositories: BTreeMap::new(),
        registries: BTreeMap::new(),
        trust: config::Trust::default(),
        contracts: BTreeMap::new(),
        policies: BTreeMap::new(),
        environments: BTreeMap::new(),
    }
}

/// A manifest that understates a layer's size passes the declared-size check; the download itself
/// stops at the limit, and a size that does not match is refused even under the limit.
#[tokio::test]
async fn a_layer_larger_than_its_descriptor_says_is_invalid() {
    let reg = Registry::start();
    let store = registry_store(&reg);
    let limited = RegistryStore::with_limits(&reg.host(), &insecure(), small_limits()).unwrap();
    let digest = store.create("acme/liar", "1", &[("f", b"f")]).await;
    let img = image(&reg.host(), "acme/liar:1");
    let mut layer = tollgate::oci::build::attestation_layer(&[b'x'; 2048], SBOM);
    layer.descriptor.size = 10;
    let att = tollgate::oci::build::append_layer(None, layer);
    cosign::store(&store, &img, &digest.cosign_tag("att"), att)
        .await
        .unwrap();
    for (s, needle) in [(&limited, "max blob size"), (&store, "descriptor says 10")] {
        match s.fetch(&img, &digest).await {
            Err(e @ EvidenceError::Invalid { .. }) => assert!(e.to_string().contains(needle), "{e}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}

/// A registry that accepts connections and never answers is a defer after the request timeout.
#[tokio::test]
async fn a_registry_that_never_answers_times_out_as_unavailable() {
    // The kernel completes TCP handshakes into the backlog even though nobody calls accept().
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = silent.local_addr().unwrap().to_string();
    let limits = Limits {
        request_timeout: std::time::Duration::from_millis(300),
        ..Limits::default()
    };
    let store = RegistryStore::with_limits(&host, &insecure(), limits).unwrap();
    let started = std::time::Instant::now();
    let err = store.resolve(&image(&host, "acme/api:1")).await.unwrap_err();
    assert!(matches!(err, EvidenceError::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
