//! Where evidence lives next to an image (cosign's `sha256-<hex>.sig` / `.att` tags, and Sigstore
//! bundles among its OCI 1.1 referrers), written once over the small [`Backend`] that both the
//! registry and the OCI-layout store provide.

use async_trait::async_trait;

use super::build::{self, Blob, Built};
use super::manifest::{self, Ctx, Descriptor, Limits, BUNDLE_PREFIX, OCI_MANIFEST};
use crate::gate::evidence::EvidenceError;
use crate::gate::{EvidenceSource, RawEvidence};
use crate::image::{Digest, ImageRef};

/// The storage operations the cosign layout needs. Implementations enforce no content rules
/// themselves beyond streaming limits: [`fetch`] and [`append`] check everything they read.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The registry host this store answers for (named in every error).
    fn store_name(&self) -> &str;
    fn limits(&self) -> &Limits;
    /// The raw manifest at a tag or digest; `None` when the tag, digest or repository is unknown.
    async fn get_manifest(&self, image: &ImageRef, reference: &str) -> Result<Option<Vec<u8>>, EvidenceError>;
    /// A blob, at most `limits().max_blob_bytes` long (implementations stop reading beyond it).
    async fn get_blob(&self, image: &ImageRef, desc: &Descriptor) -> Result<Vec<u8>, EvidenceError>;
    async fn put_blob(&self, image: &ImageRef, blob: &Blob) -> Result<(), EvidenceError>;
    /// Stores a manifest and points `tag` at it.
    async fn put_manifest(
        &self,
        image: &ImageRef,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), EvidenceError>;
    /// Manifest descriptors that may be Sigstore bundles referring to `digest` (unfiltered by
    /// subject: [`fetch`] checks that).
    async fn bundle_referrers(&self, image: &ImageRef, digest: &Digest) -> Result<Vec<Descriptor>, EvidenceError>;
}

/// The annotation added to evidence found on a platform manifest of a multi-arch candidate: the
/// platform manifest's digest, so that a release manager reading the rejection sees where it was.
pub const ATTACHED_TO: &str = "dev.tollgate/attached-to";

/// Everything attached to `digest`: `.sig` layers, `.att` layers, then Sigstore bundles.
///
/// When `digest` is an image index (a multi-arch image), evidence attached to the index digest is
/// what counts: tollgate promotes the index digest, so a statement must be about that digest
/// (cosign signs the index by default). Evidence attached only to a platform manifest is fetched
/// too, marked with [`ATTACHED_TO`], and reported: its subject is the platform digest, so
/// verification rejects it with a subject mismatch instead of it silently vanishing. It is not a
/// substitute, because the index can list platforms no evidence speaks for, and a per-platform rule
/// ("every platform signed") is a policy decision this layer should not make.
pub async fn fetch<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Vec<RawEvidence>, EvidenceError> {
    let mut out = fetch_attached(b, image, digest).await?;
    for platform in platform_manifests(b, image, digest).await? {
        for mut ev in fetch_attached(b, image, &platform).await? {
            ev.annotations.insert(ATTACHED_TO.to_string(), platform.to_string());
            out.push(ev);
        }
    }
    Ok(out)
}

/// The platform manifests of `digest` if it is an image index or Docker manifest list (at most
/// [`Limits::max_layers`] of them, else the index is refused); empty for a plain image manifest.
async fn platform_manifests<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Vec<Digest>, EvidenceError> {
    let Some(bytes) = b.get_manifest(image, digest.as_str()).await? else {
        return Ok(Vec::new());
    };
    let ctx = Ctx {
        store: b.store_name(),
        reference: digest.as_str(),
    };
    manifest::check_blob(digest, bytes.len() as u64, &bytes, ctx)?;
    // Only the media type decides; an image manifest also parses as an index with no entries.
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string));
    let is_index = matches!(
        media_type.as_deref(),
        Some(manifest::OCI_INDEX | manifest::DOCKER_MANIFEST_LIST)
    );
    if !is_index {
        return Ok(Vec::new());
    }
    let limits = b.limits();
    let index = manifest::parse_index(&bytes, Some(limits.max_layers), limits, ctx)?;
    index
        .manifests
        .iter()
        .filter(|d| d.media_type == OCI_MANIFEST || d.media_type == manifest::DOCKER_MANIFEST)
        .map(|d| Digest::parse(&d.digest).map_err(|e| ctx.invalid(format!("index entry digest: {e}"))))
        .collect()
}

/// What hangs off exactly `digest`: its `.sig` and `.att` layers, then its Sigstore bundles.
async fn fetch_attached<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Vec<RawEvidence>, EvidenceError> {
    let mut out = Vec::new();
    for (suffix, source) in [("sig", EvidenceSource::Sig), ("att", EvidenceSource::Att)] {
        let tag = digest.cosign_tag(suffix);
        if let Some(m) = read_manifest(b, image, &tag).await? {
            let ctx = Ctx {
                store: b.store_name(),
                reference: &tag,
            };
            for layer in &m.layers {
                out.push(read_layer(b, image, source, layer, ctx).await?);
            }
        }
    }
    out.extend(fetch_bundles(b, image, digest).await?);
    Ok(out)
}

async fn fetch_bundles<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    digest: &Digest,
) -> Result<Vec<RawEvidence>, EvidenceError> {
    let referrers: Vec<Descriptor> = b
        .bundle_referrers(image, digest)
        .await?
        .into_iter()
        .filter(|d| d.artifact_type.as_deref().is_some_and(|t| t.starts_with(BUNDLE_PREFIX)))
        .collect();
    let limits = *b.limits();
    let reference = digest.cosign_tag("");
    let ctx = Ctx {
        store: b.store_name(),
        reference: &reference,
    };
    if referrers.len() > limits.max_layers {
        return Err(ctx.invalid(format!(
            "{} bundle referrers, over the limit of {} (max layers per manifest)",
            referrers.len(),
            limits.max_layers
        )));
    }
    let mut out = Vec::new();
    for r in referrers {
        let at = manifest::check_descriptor(&r, &limits, ctx)?;
        let Some(m) = read_manifest(b, image, at.as_str()).await? else {
            // Listed but gone (deleted since the index was written): nothing to count.
            continue;
        };
        // A referrer for some other image is not evidence about this one, whoever listed it.
        if m.subject.as_ref().map(|s| s.digest.as_str()) != Some(digest.as_str()) {
            tracing::debug!(referrer = %at, "bundle referrer has another subject; skipped");
            continue;
        }
        let ctx = Ctx {
            store: b.store_name(),
            reference: at.as_str(),
        };
        for layer in m.layers.iter().filter(|l| l.media_type.starts_with(BUNDLE_PREFIX)) {
            out.push(read_layer(b, image, EvidenceSource::Bundle, layer, ctx).await?);
        }
    }
    Ok(out)
}

/// The image manifest at a tag or digest, checked against the limits (and, for a digest, against
/// the digest itself); `None` when it does not exist.
pub async fn read_manifest<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    reference: &str,
) -> Result<Option<manifest::ImageManifest>, EvidenceError> {
    let Some(bytes) = b.get_manifest(image, reference).await? else {
        return Ok(None);
    };
    let ctx = Ctx {
        store: b.store_name(),
        reference,
    };
    if let Ok(expected) = Digest::parse(reference) {
        manifest::check_blob(&expected, bytes.len() as u64, &bytes, ctx)?;
    }
    manifest::parse_image_manifest(&bytes, b.limits(), ctx).map(Some)
}

async fn read_layer<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    source: EvidenceSource,
    layer: &Descriptor,
    ctx: Ctx<'_>,
) -> Result<RawEvidence, EvidenceError> {
    // Check the declared size before downloading, then size and digest of what arrived.
    manifest::check_descriptor(layer, b.limits(), ctx)?;
    let bytes = b.get_blob(image, layer).await?;
    manifest::evidence_from_blob(source, layer, bytes, b.limits(), ctx)
}

/// Appends `layer` to the manifest at `sha256-<hex>.<suffix>` (creating it if absent), as cosign
/// does. Read-modify-write: two writers racing on the same tag can lose one layer, as with cosign.
pub async fn append<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    digest: &Digest,
    suffix: &str,
    layer: Blob,
) -> Result<(), EvidenceError> {
    // As cosign does: evidence for a digest the store does not have is almost surely a typo.
    if b.get_manifest(image, digest.as_str()).await?.is_none() {
        return Err(EvidenceError::NotFound {
            registry: b.store_name().to_string(),
            reference: format!("{}@{digest}", image.name),
        });
    }
    let tag = digest.cosign_tag(suffix);
    let existing = read_manifest(b, image, &tag).await?;
    if existing
        .as_ref()
        .is_some_and(|m| m.layers.len() >= b.limits().max_layers)
    {
        return Err(EvidenceError::Write {
            registry: b.store_name().to_string(),
            detail: format!(
                "{tag} already has {} layers (max layers per manifest)",
                b.limits().max_layers
            ),
        });
    }
    store(b, image, &tag, build::append_layer(existing, layer))
        .await
        .map(|_| ())
}

/// Stores blobs then the manifest under `tag`; returns the manifest digest.
pub async fn store<B: Backend + ?Sized>(
    b: &B,
    image: &ImageRef,
    tag: &str,
    built: Built,
) -> Result<Digest, EvidenceError> {
    for blob in &built.blobs {
        b.put_blob(image, blob).await?;
    }
    b.put_manifest(image, tag, OCI_MANIFEST, &built.manifest).await?;
    Ok(Digest::of(&built.manifest))
}
