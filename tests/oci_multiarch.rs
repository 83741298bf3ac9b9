//! Multi-arch candidates against a real `docker-registry` on loopback: a tag pointing at an OCI image
//! index resolves to the index digest, evidence attached to the index counts, evidence attached only
//! to a platform manifest is fetched and marked (so that verification reports it), and an index
//! with more entries than the limits allow is refused.

mod support {
    pub mod registry;
}

use support::registry::Registry;
use tollgate::config;
use tollgate::gate::evidence::{EvidenceError, EvidenceStore};
use tollgate::image::{Digest, ImageRef};
use tollgate::oci::cosign::{Backend, ATTACHED_TO};
use tollgate::oci::manifest::{self as m, Descriptor, Index};
use tollgate::oci::{Limits, RegistryStore};

const SBOM: &str = "https://cyclonedx.org/bom";

fn store(reg: &Registry, limits: Limits) -> RegistryStore {
    let cfg = config::Registry {
        insecure: true,
        ..config::Registry::default()
    };
    RegistryStore::with_limits(&reg.host(), &cfg, limits).expect("registry store")
}

fn envelope(n: u32) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "payloadType": "application/vnd.in-toto+json",
        "payload": tollgate::dsse::encode_b64(format!("{{\"n\":{n}}}").as_bytes()),
        "signatures": [{"sig": "c2ln"}],
    }))
    .unwrap()
}

/// Pushes one image per platform and an OCI index over them at `repo:tag`; returns the index digest
/// and the platform manifest digests.
async fn push_index(store: &RegistryStore, repo: &str, tag: &str, platforms: &[&str]) -> (Digest, Vec<Digest>) {
    let image = ImageRef::parse(&format!("{}/{repo}:{tag}", store.host())).unwrap();
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for p in platforms {
        let d = store
            .push_test_image(
                repo,
                &format!("{tag}-{}", p.replace('/', "-")),
                &[("ARCH", p.as_bytes())],
            )
            .await
            .unwrap();
        let bytes = store.get_manifest(&image, d.as_str()).await.unwrap().unwrap();
        let mut desc = Descriptor::of(m::OCI_MANIFEST, &bytes);
        let (os, arch) = p.split_once('/').unwrap();
        desc.other
            .insert("platform".into(), serde_json::json!({"os": os, "architecture": arch}));
        entries.push(desc);
        digests.push(d);
    }
    let index = m::to_bytes(&Index {
        manifests: entries,
        ..Index::empty()
    });
    store.put_manifest(&image, tag, m::OCI_INDEX, &index).await.unwrap();
    (Digest::of(&index), digests)
}

#[tokio::test]
async fn index_evidence_counts_and_platform_only_evidence_is_marked() {
    let reg = Registry::start();
    let s = store(&reg, Limits::default());
    let (index, platforms) = push_index(&s, "acme/multi", "1.0", &["linux/amd64", "linux/arm64"]).await;
    let tagged = ImageRef::parse(&format!("{}/acme/multi:1.0", reg.host())).unwrap();

    assert_eq!(
        s.resolve(&tagged).await.unwrap(),
        index,
        "a tag on an index resolves to the index"
    );

    s.attach_attestation(&tagged, &index, &envelope(1), SBOM).await.unwrap();
    s.attach_attestation(&tagged, &platforms[0], &envelope(2), SBOM)
        .await
        .unwrap();

    let got = s.fetch(&tagged, &index).await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    let on_index: Vec<_> = got
        .iter()
        .filter(|e| !e.annotations.contains_key(ATTACHED_TO))
        .collect();
    assert_eq!(on_index.len(), 1);
    assert_eq!(on_index[0].bytes, envelope(1));
    let on_platform: Vec<_> = got.iter().filter(|e| e.annotations.contains_key(ATTACHED_TO)).collect();
    assert_eq!(on_platform.len(), 1);
    assert_eq!(on_platform[0].bytes, envelope(2));
    assert_eq!(on_platform[0].annotations[ATTACHED_TO], platforms[0].to_string());

    // A platform manifest as the candidate: its own evidence, unmarked; nothing from the index.
    let got = s.fetch(&tagged, &platforms[0]).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(!got[0].annotations.contains_key(ATTACHED_TO));
}

#[tokio::test]
async fn an_index_over_the_entry_limit_is_invalid() {
    let reg = Registry::start();
    let s = store(&reg, Limits::default());
    let (index, _) = push_index(&s, "acme/wide", "1.0", &["linux/amd64", "linux/arm64", "linux/s390x"]).await;
    let tagged = ImageRef::parse(&format!("{}/acme/wide:1.0", reg.host())).unwrap();
    let small = store(
        &reg,
        Limits {
            max_layers: 2,
            ..Limits::default()
        },
    );
    match small.fetch(&tagged, &index).await {
        Err(e @ EvidenceError::Invalid { .. }) => assert!(e.to_string().contains("over the limit of 2"), "{e}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        s.fetch(&tagged, &index).await.unwrap().is_empty(),
        "fine under the default limits"
    );
}
