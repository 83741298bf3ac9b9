//! Evaluating one candidate cold versus with the evidence caches warm ([`tollgate::cache`]), in the
//! same process: the candidate carries 3 keyless Sigstore bundles (a real GitHub
//! `actions/attest-build-provenance` bundle from tests/vectors, re-serialised three ways so that each
//! is distinct evidence needing its own full verification) and 2 `.att` attestations signed with a
//! key made here. Evidence is read from an OCI layout on disk, so no network is involved.
//!
//! `cargo bench --bench evidence_cache`; `TOLLGATE_BENCH_ITERS` sets the iterations (default 50).
//! Reports the median of each mode and the ratio cached / cold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::cache::EvidenceCache;
use tollgate::config;
use tollgate::context::PolicyContext;
use tollgate::dsse::{Envelope, Statement};
use tollgate::gate::DecisionKind;
use tollgate::image::{Digest, ImageRef};
use tollgate::keys::SigningKey;
use tollgate::oci::build::{self, empty_config, Blob, Built};
use tollgate::oci::cosign::{self, Backend};
use tollgate::oci::manifest::{self as m, Descriptor, ImageManifest, Index};
use tollgate::oci::{LayoutStore, Stores};
use tollgate::pipeline::Gate;
use tollgate::telemetry::Metrics;

const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const PROBER: &str = "gh-attestation-prober/actions-attest-build-provenance-attestation-13532655.sigstore.json";
const ROOT: &str = "trust/sigstore-public-good.trusted_root.json";
const SBOM: &str = "https://cyclonedx.org/bom";
const VULNS: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// The bundle's statement subject: the candidate digest the bundle is about.
fn subject_of(bundle: &serde_json::Value) -> Digest {
    let payload = bundle["dsseEnvelope"]["payload"].as_str().expect("dsse bundle");
    let statement: serde_json::Value =
        serde_json::from_slice(&tollgate::dsse::decode_b64(payload).expect("base64")).expect("statement");
    let hex = statement["subject"][0]["digest"]["sha256"]
        .as_str()
        .expect("sha256 subject");
    Digest::parse(&format!("sha256:{hex}")).expect("digest")
}

/// The same bundle, serialised three ways: distinct bytes and digests, the same verification work.
fn three_bundles(bundle: &serde_json::Value) -> Vec<Vec<u8>> {
    vec![
        serde_json::to_vec(bundle).unwrap(),
        serde_json::to_vec_pretty(bundle).unwrap(),
        format!("{}\n", serde_json::to_string(bundle).unwrap()).into_bytes(),
    ]
}

async fn attach_bundle(store: &LayoutStore, image: &ImageRef, subject: &Digest, bundles: &[Vec<u8>]) {
    let mut entries = Vec::new();
    for (i, bundle) in bundles.iter().enumerate() {
        let config = empty_config();
        let layer = Blob::new(BUNDLE_V03, bundle.clone());
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(m::OCI_MANIFEST.into()),
            artifact_type: Some(BUNDLE_V03.into()),
            config: config.descriptor.clone(),
            layers: vec![layer.descriptor.clone()],
            subject: Some(Descriptor {
                media_type: m::OCI_MANIFEST.into(),
                digest: subject.to_string(),
                size: 2,
                annotations: BTreeMap::new(),
                artifact_type: None,
                other: Default::default(),
            }),
            annotations: BTreeMap::from([("dev.sigstore.bundle.content".into(), "dsse-envelope".into())]),
            other: Default::default(),
        };
        let built = Built {
            blobs: vec![config, layer],
            manifest: m::to_bytes(&manifest),
        };
        cosign::store(store, image, &format!("bundle-{i}"), built.clone())
            .await
            .unwrap();
        let mut entry = Descriptor::of(m::OCI_MANIFEST, &built.manifest);
        entry.artifact_type = Some(BUNDLE_V03.into());
        entries.push(entry);
    }
    let index = Index {
        manifests: entries,
        ..Index::empty()
    };
    store
        .put_manifest(image, &subject.cosign_tag(""), m::OCI_INDEX, &m::to_bytes(&index))
        .await
        .unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    config: Arc<config::Config>,
    candidate: ImageRef,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(vectors().join(PROBER)).unwrap()).unwrap();
    let subject = subject_of(&bundle);
    let layout = dir.path().join("layout");
    let store = LayoutStore::new("registry.local", &layout);
    // The candidate is pinned by digest, so the layout need not hold the image itself.
    let image = ImageRef::parse(&format!("registry.local/acme/api@{subject}")).unwrap();
    attach_bundle(&store, &image, &subject, &three_bundles(&bundle)).await;
    let key = SigningKey::generate();
    std::fs::write(dir.path().join("ci.pub"), key.public_pem()).unwrap();
    // Written with the layout primitives: `attach_attestation` refuses a digest whose image the
    // layout does not hold, as cosign does.
    let mut att: Option<ImageManifest> = None;
    for predicate_type in [SBOM, VULNS] {
        let statement = Statement::new("acme/api", &subject, predicate_type, serde_json::json!({}));
        let payload = serde_json::to_vec(&statement).unwrap();
        let envelope = Envelope::sign("application/vnd.in-toto+json", &payload, &key);
        let built = build::append_layer(
            att.take(),
            build::attestation_layer(&envelope.to_json(), predicate_type),
        );
        att = Some(serde_json::from_slice(&built.manifest).unwrap());
        cosign::store(&store, &image, &subject.cosign_tag("att"), built)
            .await
            .unwrap();
    }
    let text = format!(
        r#"version: 1
state_dir: ./state
repositories:
  envs: {{url: "file://{dir}/envs.git", branch: main}}
registries:
  "registry.local": {{oci_layout: ./layout}}
trust:
  trusted_root: {root}
  signers:
    ci-key: {{key: ./ci.pub}}
    github: {{keyless: {{issuer: "https://token.actions.githubusercontent.com", subject_regex: '^https://github\.com/actions/attest-build-provenance/'}}}}
contracts:
  release:
    materials:
      - {{kind: SLSA_PROVENANCE, signers: [github]}}
      - {{kind: SBOM_CYCLONEDX_JSON, signers: [ci-key]}}
      - {{kind: VULNERABILITY_REPORT, signers: [ci-key]}}
policies:
  prod: {{contract: release, mode: enforce}}
environments:
  staging: {{repository: envs, path: clusters/staging}}
  prod: {{repository: envs, path: clusters/prod, promote_from: staging, policy: prod}}
"#,
        dir = dir.path().display(),
        root = vectors().join(ROOT).display(),
    );
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Setup {
        _dir: dir,
        config: Arc::new(config),
        candidate: image,
    }
}

fn gate(config: &Arc<config::Config>, cache: EvidenceCache) -> Gate {
    Gate {
        config: config.clone(),
        stores: Stores::from_config(config).unwrap().with_cache(Arc::new(cache)),
        metrics: Arc::new(Metrics::new()),
    }
}

async fn evaluate(gate: &Gate, candidate: &ImageRef) -> Duration {
    let ctx = PolicyContext::new(time::OffsetDateTime::now_utc());
    let started = Instant::now();
    let e = gate.evaluate("prod", candidate, None, &ctx).await.unwrap();
    let took = started.elapsed();
    assert_eq!(
        (e.verified.materials.len(), e.verified.rejections.len()),
        (5, 0),
        "every piece of evidence verifies: {:#?}",
        e.verified.rejections
    );
    assert_eq!(e.decision.kind, DecisionKind::Allow, "{:#?}", e.decision);
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let iters: usize = std::env::var("TOLLGATE_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = setup().await;
        // Cold: a new gate (empty caches) per evaluation.
        let mut cold = Vec::new();
        for _ in 0..iters {
            cold.push(evaluate(&gate(&s.config, EvidenceCache::default()), &s.candidate).await);
        }
        // Verification cached, fetched list expired (TTL 0): what a re-evaluation after the TTL costs.
        let refetch = gate(&s.config, EvidenceCache::new(1024, 256, Duration::ZERO));
        evaluate(&refetch, &s.candidate).await;
        let mut verified_only = Vec::new();
        for _ in 0..iters {
            verified_only.push(evaluate(&refetch, &s.candidate).await);
        }
        // Both caches warm: a re-evaluation within the TTL.
        let warm = gate(&s.config, EvidenceCache::default());
        evaluate(&warm, &s.candidate).await;
        let mut cached = Vec::new();
        for _ in 0..iters {
            cached.push(evaluate(&warm, &s.candidate).await);
        }
        let stats = warm.stores.cache().stats();
        let (cold, verified_only, cached) = (median(cold), median(verified_only), median(cached));
        println!("evidence_cache: one candidate, 3 keyless bundles + 2 .att, {iters} evaluations each (median)");
        println!("  cold (fetch + verify)                 {}", ms(cold));
        println!(
            "  verification cached, evidence re-read {}  (ratio to cold {:.3})",
            ms(verified_only),
            verified_only.as_secs_f64() / cold.as_secs_f64()
        );
        println!(
            "  both cached (within the 30 s TTL)     {}  (ratio cached/cold {:.3})",
            ms(cached),
            cached.as_secs_f64() / cold.as_secs_f64()
        );
        println!("  warm gate cache stats: {stats:?}");
    });
}
