//! Sigstore verification (SPEC §2 "Trust"): trusted roots, bundles v0.1–v0.3, and the checks that make
//! a keyless (or keyed) signature count: signature, certificate chain, transparency log, signing time,
//! identity. Pure: every function takes its inputs, including the time, as data.
//!
//! Map:
//! - [`trust_root`]: `trusted_root.json` (and its JSONL form) → [`TrustedRoot`].
//! - [`bundle`]: bundle JSON → [`Bundle`], with proto3 defaults for absent fields.
//! - [`cert`]: X.509 chains to a Fulcio CA, and the Fulcio identity and GitHub claims of a leaf.
//! - [`tlog`]: Rekor entries: SET, RFC 6962 inclusion proof, signed checkpoint, body consistency.
//! - [`sct`]: signed certificate timestamps embedded in a leaf, against the root's CT logs.
//! - [`timestamp`]: RFC 3161 timestamps against the root's timestamp authorities.
//! - [`verify`]: the whole check of one bundle against one root and the expected artifact digests.
//! - [`crypto`]: signature checks by algorithm, over a message or a prehash.

pub mod bundle;
pub mod cert;
pub mod crypto;
pub mod sct;
pub mod timestamp;
pub mod tlog;
pub mod trust_root;
pub mod verify;

pub use bundle::Bundle;
pub use cert::{GithubClaims, Identity};
pub use trust_root::{TrustRootError, TrustedRoot};
pub use verify::{verify_bundle, ArtifactDigest, Signer, VerifiedBundle};

use crate::reason::ReasonCode;

/// Why a bundle does not verify. [`Error::reason`] maps each to the stable reason code of SPEC §7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("the bundle is malformed: {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("unsupported bundle media type `{media_type}`")]
    UnsupportedMediaType { media_type: String },
    #[error("not supported: {what}")]
    Unsupported { what: String },
    #[error("the {what} signature does not verify")]
    BadSignature { what: String },
    #[error("the certificate does not chain to the trusted root: {detail}")]
    Chain { detail: String },
    #[error("the signing time {signed_at} is outside {what} validity ({not_before} to {not_after})")]
    OutsideValidity {
        what: &'static str,
        signed_at: String,
        not_before: String,
        not_after: String,
    },
    #[error("the certificate is not usable for code signing: {detail}")]
    CertificateUsage { detail: String },
    #[error("signed by {actual}, not by {expected}")]
    IdentityMismatch { expected: String, actual: String },
    #[error("the transparency log entry does not verify: {detail}")]
    Tlog { detail: String },
    #[error("the RFC 3161 timestamp does not verify: {detail}")]
    Timestamp { detail: String },
    #[error("it is about {actual}, not the expected {expected}")]
    SubjectMismatch { expected: String, actual: String },
}

impl Error {
    pub fn reason(&self) -> ReasonCode {
        match self {
            Error::IdentityMismatch { .. } => ReasonCode::IdentityMismatch,
            Error::Tlog { .. } => ReasonCode::TlogInvalid,
            Error::SubjectMismatch { .. } => ReasonCode::SubjectMismatch,
            _ => ReasonCode::SignatureInvalid,
        }
    }

    pub(crate) fn malformed(what: &'static str, detail: impl std::fmt::Display) -> Error {
        Error::Malformed {
            what,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn tlog(detail: impl Into<String>) -> Error {
        Error::Tlog { detail: detail.into() }
    }
}

/// Unix seconds as RFC 3339, for messages.
pub fn format_time(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// Decodes base64 as protobuf JSON writes it (standard alphabet; URL-safe and unpadded also accepted).
pub(crate) fn b64(s: &str) -> Option<Vec<u8>> {
    crate::dsse::decode_b64(s)
}

/// The DER of the first PEM block in `text`, if any.
pub(crate) fn pem_to_der(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start..];
    let body_start = rest.find('\n')? + 1;
    let end = rest.find("-----END ")?;
    if end < body_start {
        return None;
    }
    let body: String = rest[body_start..end].split_whitespace().collect();
    b64(&body)
}
