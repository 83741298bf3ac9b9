//! OCI manifests, indexes and descriptors as tollgate reads and writes them, and the pure checks that
//! keep a hostile registry or layout within [`Limits`] before any of its content is trusted.
//!
//! These are our own small serde types rather than `oci_client::manifest`'s: both stores share them,
//! unknown fields (`platform`, `urls`, `data`, …) survive a read-modify-write of `index.json`, and a
//! negative or absurd `size` is a parse error instead of an `i64` to second-guess.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gate::evidence::EvidenceError;
use crate::gate::{EvidenceSource, RawEvidence};
use crate::image::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Prefix of every Sigstore bundle media type (`…v0.1+json` to `…v0.3+json`).
pub const BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// The annotation skopeo, umoci and oras use to tag a manifest in an OCI layout's `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const COSIGN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const PREDICATE_TYPE: &str = "predicateType";

/// Bounds on what a store may hand us. Everything fetched is held in memory, so these are the
/// memory a single hostile registry can make tollgate spend per candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_blob_bytes: u64,
    /// Layers per manifest, and entries per referrers index.
    pub max_layers: usize,
    /// Per registry request (connect and read), and for each whole operation.
    pub request_timeout: Duration,
    /// Attempts per registry request when the answer is transient (429, 5xx, a dropped
    /// connection); after the last, the error stays `Unavailable` (a defer).
    pub max_attempts: u32,
    /// Wall-clock budget for one request with all its retries: backoff never sleeps past it.
    pub retry_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
            max_blob_bytes: 16 * 1024 * 1024,
            max_layers: 64,
            request_timeout: Duration::from_secs(10),
            max_attempts: 3,
            retry_budget: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Descriptor {
    pub fn of(media_type: &str, bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest: Digest::of(bytes).to_string(),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            artifact_type: None,
            other: serde_json::Map::new(),
        }
    }

    pub fn with_annotations(mut self, annotations: BTreeMap<String, String>) -> Descriptor {
        self.annotations = annotations;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl Index {
    pub fn empty() -> Index {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            other: serde_json::Map::new(),
        }
    }
}

/// Who is speaking and about what, so that every error names the store and the reference.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub store: &'a str,
    pub reference: &'a str,
}

impl Ctx<'_> {
    pub fn invalid(&self, detail: impl Into<String>) -> EvidenceError {
        EvidenceError::Invalid {
            registry: self.store.to_string(),
            reference: self.reference.to_string(),
            detail: detail.into(),
        }
    }
}

/// Checks a manifest's size before anything parses it.
pub fn check_manifest_size(len: u64, limits: &Limits, ctx: Ctx<'_>) -> Result<(), EvidenceError> {
    if len > limits.max_manifest_bytes {
        return Err(ctx.invalid(format!(
            "manifest is {len} bytes, over the limit of {} bytes (max manifest size)",
            limits.max_manifest_bytes
        )));
    }
    Ok(())
}

/// Parses an image manifest within the limits: size, layer count, and each layer's declared size.
pub fn parse_image_manifest(bytes: &[u8], limits: &Limits, ctx: Ctx<'_>) -> Result<ImageManifest, EvidenceError> {
    check_manifest_size(bytes.len() as u64, limits, ctx)?;
    let m: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| ctx.invalid(format!("not an OCI image manifest: {e}")))?;
    if m.schema_version != 2 {
        return Err(ctx.invalid(format!("manifest schemaVersion is {}, expected 2", m.schema_version)));
    }
    if let Some(mt) = &m.media_type {
        if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
            return Err(ctx.invalid(format!("manifest media type is {mt}, expected {OCI_MANIFEST}")));
        }
    }
    if m.layers.len() > limits.max_layers {
        return Err(ctx.invalid(format!(
            "manifest has {} layers, over the limit of {} (max layers per manifest)",
            m.layers.len(),
            limits.max_layers
        )));
    }
    for layer in &m.layers {
        check_descriptor(layer, limits, ctx)?;
    }
    Ok(m)
}

/// Parses an image index (`index.json`, or a referrers index) within the limits.
pub fn parse_index(
    bytes: &[u8],
    max_entries: Option<usize>,
    limits: &Limits,
    ctx: Ctx<'_>,
) -> Result<Index, EvidenceError> {
    check_manifest_size(bytes.len() as u64, limits, ctx)?;
    let idx: Index = serde_json::from_slice(bytes).map_err(|e| ctx.invalid(format!("not an OCI image index: {e}")))?;
    if idx.schema_version != 2 {
        return Err(ctx.invalid(format!("index schemaVersion is {}, expected 2", idx.schema_version)));
    }
    if let Some(max) = max_entries {
        if idx.manifests.len() > max {
            return Err(ctx.invalid(format!(
                "index has {} entries, over the limit of {max} (max layers per manifest)",
                idx.manifests.len()
            )));
        }
    }
    Ok(idx)
}

/// A layer's digest must be sha256 and its declared size within the blob limit, so that we never
/// start a download we would refuse anyway.
pub fn check_descriptor(desc: &Descriptor, limits: &Limits, ctx: Ctx<'_>) -> Result<Digest, EvidenceError> {
    let digest = Digest::parse(&desc.digest).map_err(|e| ctx.invalid(e.to_string()))?;
    if desc.size > limits.max_blob_bytes {
        return Err(ctx.invalid(format!(
            "blob {} declares {} bytes, over the limit of {} bytes (max blob size)",
            desc.digest, desc.size, limits.max_blob_bytes
        )));
    }
    Ok(digest)
}

/// Checks fetched bytes against their descriptor (size, then sha256) and turns them into evidence.
pub fn evidence_from_blob(
    source: EvidenceSource,
    desc: &Descriptor,
    bytes: Vec<u8>,
    limits: &Limits,
    ctx: Ctx<'_>,
) -> Result<RawEvidence, EvidenceError> {
    let digest = check_descriptor(desc, limits, ctx)?;
    check_blob(&digest, desc.size, &bytes, ctx)?;
    Ok(RawEvidence {
        source,
        media_type: desc.media_type.clone(),
        digest,
        bytes,
        annotations: desc.annotations.clone(),
    })
}

/// The bytes are what the descriptor promised: its size, and content whose sha256 is its digest.
pub fn check_blob(digest: &Digest, size: u64, bytes: &[u8], ctx: Ctx<'_>) -> Result<(), EvidenceError> {
    if bytes.len() as u64 != size {
        return Err(ctx.invalid(format!(
            "blob {digest} is {} bytes, its descriptor says {size}",
            bytes.len()
        )));
    }
    let actual = Digest::of(bytes);
    if &actual != digest {
        return Err(ctx.invalid(format!("blob digest mismatch: expected {digest}, got {actual}")));
    }
    Ok(())
}

/// Serialises a manifest or index the way it is stored and pushed (compact JSON; the digest is
/// over these exact bytes).
pub fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs of strings and maps cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx<'static> {
        Ctx {
            store: "r",
            reference: "x",
        }
    }

    fn manifest_with_layers(n: usize, size: u64) -> Vec<u8> {
        let layer =
            serde_json::json!({"mediaType": SIMPLE_SIGNING, "digest": Digest::of(b"x").to_string(), "size": size});
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_EMPTY, "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": vec![layer; n],
        }))
        .unwrap()
    }

    #[test]
    fn rejects_manifests_over_each_limit_naming_the_limit() {
        let limits = Limits {
            max_manifest_bytes: 100_000,
            max_blob_bytes: 10,
            max_layers: 3,
            ..Limits::default()
        };
        assert!(parse_image_manifest(&manifest_with_layers(3, 1), &limits, ctx()).is_ok());
        let err = parse_image_manifest(&manifest_with_layers(4, 1), &limits, ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max layers per manifest"), "{err}");
        let err = parse_image_manifest(&manifest_with_layers(1, 11), &limits, ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max blob size"), "{err}");
        let small = Limits {
            max_manifest_bytes: 10,
            ..limits
        };
        let err = parse_image_manifest(&manifest_with_layers(1, 1), &small, ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max manifest size"), "{err}");
    }

    #[test]
    fn rejects_blobs_that_do_not_match_their_descriptor() {
        let desc = Descriptor::of(SIMPLE_SIGNING, b"payload");
        let ok = evidence_from_blob(
            EvidenceSource::Sig,
            &desc,
            b"payload".to_vec(),
            &Limits::default(),
            ctx(),
        );
        assert_eq!(ok.unwrap().digest, Digest::of(b"payload"));
        let bad = evidence_from_blob(
            EvidenceSource::Sig,
            &desc,
            b"paylaod".to_vec(),
            &Limits::default(),
            ctx(),
        );
        assert!(bad.unwrap_err().to_string().contains("digest mismatch"));
        let short = evidence_from_blob(EvidenceSource::Sig, &desc, b"pay".to_vec(), &Limits::default(), ctx());
        assert!(matches!(short, Err(EvidenceError::Invalid { .. })));
    }

    #[test]
    fn hostile_manifests_are_invalid_not_panics() {
        for bytes in [
            &b"{"[..],
            b"[]",
            b"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"x\",\"digest\":\"md5:1\",\"size\":-1}}",
        ] {
            assert!(matches!(
                parse_image_manifest(bytes, &Limits::default(), ctx()),
                Err(EvidenceError::Invalid { .. })
            ));
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_index(deep.as_bytes(), None, &Limits::default(), ctx()).is_err());
    }

    #[test]
    fn index_keeps_fields_it_does_not_know() {
        let src = br#"{"schemaVersion":2,"manifests":[{"mediaType":"m","digest":"d","size":1,"platform":{"os":"linux"}}],"x":1}"#;
        let idx = parse_index(src, None, &Limits::default(), ctx()).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&to_bytes(&idx)).unwrap();
        assert_eq!(back["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(back["x"], 1);
    }
}
