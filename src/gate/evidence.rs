//! Fetching evidence: the [`EvidenceStore`] trait that the registry and OCI-layout adapters in
//! [`crate::oci`] implement, and the error that turns into a `defer`.

use async_trait::async_trait;

use super::RawEvidence;
use crate::image::{Digest, ImageRef};

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The store could not be reached or answered with a server error: the decision is deferred.
    #[error("registry {registry} is unavailable: {detail}")]
    Unavailable { registry: String, detail: String },
    /// The store answered, but the image (or tag) does not exist.
    #[error("{reference} was not found in {registry}")]
    NotFound { registry: String, reference: String },
    /// The store answered with something that breaks the rules (digest mismatch, over a limit,
    /// malformed manifest): a reasoned block, never an allow.
    #[error("registry {registry} returned invalid content for {reference}: {detail}")]
    Invalid {
        registry: String,
        reference: String,
        detail: String,
    },
    /// Writing (attaching) failed.
    #[error("could not write to {registry}: {detail}")]
    Write { registry: String, detail: String },
}

impl EvidenceError {
    /// True when retrying later may succeed (the decision is `defer`).
    pub fn is_transient(&self) -> bool {
        matches!(self, EvidenceError::Unavailable { .. })
    }
}

/// A source of images and their attached evidence: a registry or an OCI image layout directory.
#[async_trait]
pub trait EvidenceStore: Send + Sync {
    /// The manifest digest a reference points at (its digest if it has one, else the tag's).
    async fn resolve(&self, image: &ImageRef) -> Result<Digest, EvidenceError>;

    /// Everything attached to `digest` in the cosign layout (`sha256-<hex>.sig`, `.att`).
    /// A missing `.sig` or `.att` tag is no evidence, not an error.
    async fn fetch(&self, image: &ImageRef, digest: &Digest) -> Result<Vec<RawEvidence>, EvidenceError>;

    /// Appends a DSSE envelope as a layer of `sha256-<hex>.att`, as `cosign attest` does.
    async fn attach_attestation(
        &self,
        image: &ImageRef,
        digest: &Digest,
        envelope: &[u8],
        predicate_type: &str,
    ) -> Result<(), EvidenceError>;
}
