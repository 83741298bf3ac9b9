//! Verification, first form (SPEC §2 "Trust"): raw evidence + configured signers → verified materials,
//! or rejections carrying a reason code (SPEC §7). Pure: no I/O, no clock; trust is passed in as data.
//!
//! Verified here, with `key` signers (PEM public keys, as `cosign.pub`):
//! - `.att` layers (cosign attestations): a DSSE envelope whose signature over the PAE of the decoded
//!   payload verifies, whose payload is an in-toto statement (v1 or v0.1) about the candidate digest,
//!   and whose `predicateType` layer annotation, if any, tells the truth.
//! - `.sig` layers (cosign simple signing): a signature over the exact layer bytes whose payload is a
//!   `cosign container image signature` of the candidate digest.
//!
//! Verified with `keyless` signers and the pinned trusted root ([`crate::sigstore`]):
//! - `.att`/`.sig` layers whose signature no configured key verifies but that carry a Fulcio certificate
//!   (`dev.sigstore.cosign/certificate`) and cosign's Rekor bundle annotation (`dev.sigstore.cosign/bundle`):
//!   the signature with the certificate key, the chain to the root at the logged time, the SET and the
//!   logged body, then the identity against each keyless signer.
//! - Sigstore bundles v0.1–v0.3 (keyless, or keyed with a configured key): everything
//!   [`crate::sigstore::verify_bundle`] checks, with the candidate digest as the expected subject.
//!
//! A statement is about the candidate when a sha256 subject is the candidate's digest; a Chainloop
//! attestation (`chainloop.dev/attestation/v0.2`) also when it lists the candidate as a
//! `CONTAINER_IMAGE` material. Keyless materials carry the certificate's identity and GitHub claims,
//! which a keyless signer may constrain with `claims` globs.
//!
//! Rejections still say which predicate type the evidence claims, so that the policy can tell
//! "SLSA_PROVENANCE present but not verifiable" from "SLSA_PROVENANCE missing".

use std::fmt;

use super::rules::chainloop::chainloop_lists_image;
use super::{
    CertificateIdentity, EvidenceSource, Material, MaterialKind, RawEvidence, Rejection, SignerMatch, Verified,
};
use crate::config::{ClaimMatch, Signer, SubjectMatch, Trust};
use crate::dsse::{self, DsseError, Envelope, Statement};
use crate::image::Digest;
use crate::keys::PublicKey;
use crate::reason::ReasonCode;
use crate::sigstore::{self, bundle, ArtifactDigest, Bundle, TrustedRoot};

/// The `predicate_type` given to a verified `.sig` (simple-signing) material. A simple-signing payload
/// is not an in-toto statement, so it does not borrow an in-toto predicate type: Rego and `explain`
/// readers can tell from this string that `statement` holds the `{critical, optional}` payload. Its
/// kind is always [`MaterialKind::ImageSignature`] (which [`MaterialKind::for_predicate`] does not
/// derive from this string: use `Material::kind`).
pub const SIMPLE_SIGNING_PREDICATE_TYPE: &str = "cosign/simplesigning";

/// Media type of a `.sig` layer (cosign `specs/SIGNATURE_SPEC.md`).
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// `critical.type` of a cosign image signature. Compared exactly, as cosign and containers/image do.
pub const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// Layer annotations written by cosign (the code's names, which win over the spec text).
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
pub const ANNOTATION_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// cosign's Rekor bundle: `{SignedEntryTimestamp, Payload: {body, integratedTime, logIndex, logID}}`.
pub const ANNOTATION_REKOR_BUNDLE: &str = "dev.sigstore.cosign/bundle";
/// cosign's RFC 3161 timestamp: `{SignedRFC3161Timestamp: base64 DER}`.
pub const ANNOTATION_RFC3161: &str = "dev.sigstore.cosign/rfc3161timestamp";

/// The `predicate_type` of a verified message-signature bundle: a signature over the candidate's
/// digest itself, which counts as an [`MaterialKind::ImageSignature`].
pub const MESSAGE_SIGNATURE_PREDICATE_TYPE: &str = "sigstore/message-signature";
pub const ANNOTATION_PREDICATE_TYPE: &str = "predicateType";
/// The predicate type annotation of a bundle referrer (`@sigstore/oci`, cosign v3).
pub const ANNOTATION_BUNDLE_PREDICATE_TYPE: &str = "dev.sigstore.bundle.predicateType";

/// Why one piece of evidence does not count. The `Display` text is the "why" part of the message a
/// release manager reads; [`VerifyError::reason`] is the stable code.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("its content hashes to {actual}, not to the digest {expected} it was fetched as")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("its media type is `{actual}`, expected `{expected}`")]
    MediaType { expected: &'static str, actual: String },
    #[error(transparent)]
    Envelope(#[from] DsseError),
    #[error("it has no `{ANNOTATION_SIGNATURE}` annotation, so there is no signature to verify")]
    NoSignatureAnnotation,
    #[error("its `{ANNOTATION_SIGNATURE}` annotation is not valid base64")]
    SignatureNotBase64,
    #[error("it is signed by no configured key ({})", tried_keys(.tried))]
    NoKeyMatch { tried: Vec<String> },
    #[error(
        "it is keyless (a Fulcio certificate) and no trust.trusted_root is configured to check it \
         (no configured key verifies it either: {})",
        tried_keys(.tried)
    )]
    NoTrustedRoot { tried: Vec<String> },
    #[error("it is keyless and no keyless signer is configured (trust.signers.<name>.keyless)")]
    NoKeylessSigner,
    #[error("its certificate identity {actual} matches no keyless signer ({})", .expected.join("; "))]
    IdentityMismatch { expected: Vec<String>, actual: String },
    #[error("its `{ANNOTATION_REKOR_BUNDLE}` annotation is missing or malformed ({detail}): a keyless signature counts only with its transparency-log entry")]
    NoRekorBundle { detail: String },
    #[error("its `{ANNOTATION_CERTIFICATE}` annotation is not a PEM certificate")]
    CertificateNotPem,
    #[error("{0}")]
    Sigstore(sigstore::Error),
    #[error(
        "its DSSE payloadType is `{actual}`, not `{}`: the signed payload is not an in-toto statement",
        dsse::INTOTO_PAYLOAD_TYPE
    )]
    PayloadType { actual: String },
    #[error("the signed payload is not an in-toto statement: {detail}")]
    NotAStatement { detail: String },
    #[error(
        "the statement `_type` is `{actual}`, expected `{}` or `{}`",
        dsse::STATEMENT_V1,
        dsse::STATEMENT_V01
    )]
    StatementType { actual: String },
    #[error("the signed statement is about {}, not the candidate {candidate}", subjects_text(.subjects))]
    SubjectMismatch {
        candidate: Digest,
        subjects: Vec<String>,
        predicate_type: String,
    },
    #[error(
        "its `{ANNOTATION_PREDICATE_TYPE}` annotation says `{annotation}` but the signed statement's predicateType \
         is `{statement}`: the annotation misdescribes the content"
    )]
    AnnotationMismatch { annotation: String, statement: String },
    #[error("the signed payload is not a cosign simple-signing payload: {detail}")]
    NotSimpleSigning { detail: String },
    #[error("its `critical.type` is `{actual}`, expected `{COSIGN_SIGNATURE_TYPE}`")]
    SigningType { actual: String },
    #[error("it signs image {signed}, not the candidate {candidate}")]
    ImageMismatch { candidate: Digest, signed: String },
    #[error("a Sigstore bundle is checked against trust.trusted_root, and no trust.trusted_root is configured")]
    BundleNeedsRoot,
    #[error("it is signed with a key and no configured key verifies it ({})", tried_keys(.tried))]
    BundleNoKey { tried: Vec<String> },
}

impl VerifyError {
    pub fn reason(&self) -> ReasonCode {
        match self {
            VerifyError::SubjectMismatch { .. } | VerifyError::ImageMismatch { .. } => ReasonCode::SubjectMismatch,
            VerifyError::IdentityMismatch { .. } => ReasonCode::IdentityMismatch,
            VerifyError::NoRekorBundle { .. } => ReasonCode::TlogInvalid,
            VerifyError::Sigstore(e) => e.reason(),
            _ => ReasonCode::SignatureInvalid,
        }
    }

    /// The predicate type established by a verified signature, when the failure came after it.
    fn verified_predicate_type(&self) -> Option<&str> {
        match self {
            VerifyError::SubjectMismatch { predicate_type, .. } => Some(predicate_type),
            VerifyError::AnnotationMismatch { statement, .. } => Some(statement),
            _ => None,
        }
    }
}

fn tried_keys(tried: &[String]) -> String {
    if tried.is_empty() {
        "no `key` signers are configured".to_string()
    } else {
        format!("tried {}", tried.join(", "))
    }
}

fn subjects_text(subjects: &[String]) -> String {
    if subjects.is_empty() {
        "no sha256 subject".to_string()
    } else {
        subjects.join(", ")
    }
}

/// Verifies each piece of evidence on its own: every one becomes either material(s) or one rejection.
///
/// When several configured signers verify the same evidence (two signatures, one key configured under
/// two names, or two keyless identities that both match), one [`Material`] is produced per signer, so
/// that a contract naming any of them finds its match.
pub fn verify(evidence: &[RawEvidence], candidate: &Digest, trust: &Trust) -> Verified {
    let keys: Vec<(&str, &PublicKey)> = trust
        .signers
        .iter()
        .filter_map(|(name, signer)| match signer {
            Signer::Key { key, .. } => Some((name.as_str(), key)),
            Signer::Keyless { .. } => None,
        })
        .collect();
    let keyless: Vec<Keyless<'_>> = trust
        .signers
        .iter()
        .filter_map(|(name, signer)| match signer {
            Signer::Keyless {
                issuer,
                subject,
                claims,
            } => Some(Keyless {
                name,
                issuer,
                subject,
                claims,
            }),
            Signer::Key { .. } => None,
        })
        .collect();
    let signers = Signers {
        keys: &keys,
        keyless: &keyless,
        root: trust.root.as_deref(),
    };
    let mut verified = Verified::default();
    for ev in evidence {
        match verify_one(ev, candidate, &signers) {
            Ok(materials) => verified.materials.extend(materials),
            Err(err) => verified.rejections.push(rejection(ev, &err)),
        }
    }
    verified
}

struct Keyless<'a> {
    name: &'a str,
    issuer: &'a str,
    subject: &'a SubjectMatch,
    claims: &'a [ClaimMatch],
}

/// The first of a signer's `claims` that the certificate does not satisfy, as text for messages.
fn failed_claim(claims: &[ClaimMatch], identity: &CertificateIdentity) -> Option<String> {
    claims.iter().find_map(|c| match identity.claim(&c.claim) {
        Some(v) if c.glob.is_match(v) => None,
        Some(v) => Some(format!("{} `{v}` does not match `{}`", c.claim, c.pattern)),
        None => Some(format!(
            "the certificate has no {} claim (wanted `{}`)",
            c.claim, c.pattern
        )),
    })
}

/// The configured trust, split by kind.
struct Signers<'a> {
    keys: &'a [(&'a str, &'a PublicKey)],
    keyless: &'a [Keyless<'a>],
    root: Option<&'a TrustedRoot>,
}

/// Verifies one piece of evidence; `Ok` holds one material per matching signer (never empty).
fn verify_one(ev: &RawEvidence, candidate: &Digest, signers: &Signers<'_>) -> Result<Vec<Material>, VerifyError> {
    // The digest names the evidence in trailers and `explain`: it must be the digest of what we verify.
    let actual = Digest::of(&ev.bytes);
    if actual != ev.digest {
        return Err(VerifyError::DigestMismatch {
            expected: ev.digest.clone(),
            actual,
        });
    }
    match ev.source {
        EvidenceSource::Att => verify_att(ev, candidate, signers),
        EvidenceSource::Sig => verify_sig(ev, candidate, signers),
        EvidenceSource::Bundle => verify_bundle(ev, candidate, signers),
    }
}

fn verify_att(ev: &RawEvidence, candidate: &Digest, signers: &Signers<'_>) -> Result<Vec<Material>, VerifyError> {
    let keys = signers.keys;
    if ev.media_type != dsse::MEDIA_TYPE {
        return Err(VerifyError::MediaType {
            expected: dsse::MEDIA_TYPE,
            actual: ev.media_type.clone(),
        });
    }
    let envelope = Envelope::parse(&ev.bytes)?;
    let payload = envelope.payload_bytes()?;
    let signatures: Vec<Vec<u8>> = envelope
        .signatures
        .iter()
        .flat_map(|s| signature_encodings(&s.sig))
        .collect();
    // The signature covers the PAE of the decoded bytes; nothing is parsed before it verifies.
    let mut signed_by = matching_signers(keys, &dsse::pae(&envelope.payload_type, &payload), &signatures);
    if signed_by.is_empty() {
        let content = bundle::Content::Dsse(envelope.clone());
        let expected = [ArtifactDigest::sha256(&candidate_bytes(candidate))];
        signed_by = verify_cosign_keyless(ev, content, &expected, signers)?;
    }

    if envelope.payload_type != dsse::INTOTO_PAYLOAD_TYPE {
        return Err(VerifyError::PayloadType {
            actual: envelope.payload_type,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| VerifyError::NotAStatement { detail: e.to_string() })?;
    let statement: Statement =
        serde_json::from_value(value.clone()).map_err(|e| VerifyError::NotAStatement { detail: e.to_string() })?;
    if statement.type_ != dsse::STATEMENT_V1 && statement.type_ != dsse::STATEMENT_V01 {
        return Err(VerifyError::StatementType {
            actual: statement.type_,
        });
    }
    // Chainloop makes only `output` materials subjects: the image it attests is often listed only in
    // `predicate.materials[]`. That list is inside the signed payload, so it binds as a subject does.
    let chainloop_listed = MaterialKind::ChainloopAttestation.accepts_predicate(&statement.predicate_type)
        && chainloop_lists_image(&value, candidate);
    if !statement.has_subject(candidate) && !chainloop_listed {
        let subjects = statement
            .subject
            .iter()
            .filter_map(|s| {
                let hex = s.digest.get("sha256")?;
                Some(if s.name.is_empty() {
                    format!("sha256:{hex}")
                } else {
                    format!("sha256:{hex} ({})", s.name)
                })
            })
            .collect();
        return Err(VerifyError::SubjectMismatch {
            candidate: candidate.clone(),
            subjects,
            predicate_type: statement.predicate_type,
        });
    }
    // The annotation is unsigned; policy and `predicateType`-filtering readers (cosign verify-attestation
    // --type) trust it, so a layer whose annotation lies about its content is not accepted.
    if let Some(annotation) = ev.annotations.get(ANNOTATION_PREDICATE_TYPE) {
        if *annotation != statement.predicate_type {
            return Err(VerifyError::AnnotationMismatch {
                annotation: annotation.clone(),
                statement: statement.predicate_type,
            });
        }
    }

    let kind = MaterialKind::for_predicate(&statement.predicate_type);
    Ok(materials(ev, kind, &statement.predicate_type, &signed_by, value))
}

fn verify_sig(ev: &RawEvidence, candidate: &Digest, signers: &Signers<'_>) -> Result<Vec<Material>, VerifyError> {
    let keys = signers.keys;
    if ev.media_type != SIMPLE_SIGNING_MEDIA_TYPE {
        return Err(VerifyError::MediaType {
            expected: SIMPLE_SIGNING_MEDIA_TYPE,
            actual: ev.media_type.clone(),
        });
    }
    let encoded = ev
        .annotations
        .get(ANNOTATION_SIGNATURE)
        .filter(|s| !s.trim().is_empty())
        .ok_or(VerifyError::NoSignatureAnnotation)?;
    let signature = dsse::decode_b64(encoded).ok_or(VerifyError::SignatureNotBase64)?;
    // Over the exact layer bytes: re-serialised JSON (`"optional":null`, key order) would not verify.
    let mut signed_by = matching_signers(keys, &ev.bytes, std::slice::from_ref(&signature));
    if signed_by.is_empty() {
        // The signed artifact is the payload itself: its sha256 is what the hashedrekord entry logs.
        let digest = sigstore::crypto::Hash::Sha256.digest(&ev.bytes);
        let content = bundle::Content::MessageSignature {
            algorithm: "SHA2_256".into(),
            digest: digest.clone(),
            signature,
        };
        signed_by = verify_cosign_keyless(ev, content, &[ArtifactDigest::sha256(&digest)], signers)?;
    }

    let payload: serde_json::Value =
        serde_json::from_slice(&ev.bytes).map_err(|e| VerifyError::NotSimpleSigning { detail: e.to_string() })?;
    let critical = &payload["critical"];
    let signing_type = critical["type"].as_str().ok_or_else(|| VerifyError::NotSimpleSigning {
        detail: "it has no string `critical.type`".to_string(),
    })?;
    if signing_type != COSIGN_SIGNATURE_TYPE {
        return Err(VerifyError::SigningType {
            actual: signing_type.to_string(),
        });
    }
    let signed = critical["image"]["docker-manifest-digest"]
        .as_str()
        .ok_or_else(|| VerifyError::NotSimpleSigning {
            detail: "it has no string `critical.image.docker-manifest-digest`".to_string(),
        })?;
    if signed != candidate.as_str() {
        return Err(VerifyError::ImageMismatch {
            candidate: candidate.clone(),
            signed: signed.to_string(),
        });
    }

    Ok(materials(
        ev,
        MaterialKind::ImageSignature,
        SIMPLE_SIGNING_PREDICATE_TYPE,
        &signed_by,
        payload,
    ))
}

fn materials(
    ev: &RawEvidence,
    kind: MaterialKind,
    predicate_type: &str,
    signed_by: &[SignerMatch],
    statement: serde_json::Value,
) -> Vec<Material> {
    signed_by
        .iter()
        .map(|signer| Material {
            kind,
            predicate_type: predicate_type.to_string(),
            signer: signer.clone(),
            source: ev.source,
            digest: ev.digest.clone(),
            statement: statement.clone(),
        })
        .collect()
}

/// The byte strings a DSSE `sig` may stand for: its base64 decoding and, for Chainloop envelopes
/// signed before chainloop#1832 was fixed, the base64 decoding of that (the signature encoded twice).
/// Trying both cannot forge anything: the message verified stays the PAE.
fn signature_encodings(sig: &str) -> Vec<Vec<u8>> {
    let Some(once) = dsse::decode_b64(sig) else {
        return Vec::new();
    };
    let twice = std::str::from_utf8(&once).ok().and_then(dsse::decode_b64);
    std::iter::once(once).chain(twice).collect()
}

/// The key signers for which at least one of `signatures` verifies over `msg`, in name order.
fn matching_signers(keys: &[(&str, &PublicKey)], msg: &[u8], signatures: &[Vec<u8>]) -> Vec<SignerMatch> {
    keys.iter()
        .filter(|(_, key)| signatures.iter().any(|sig| key.verify(msg, sig)))
        .map(|(name, _)| SignerMatch {
            signer: (*name).to_string(),
            method: "key",
            identity: None,
        })
        .collect()
}

fn candidate_bytes(candidate: &Digest) -> Vec<u8> {
    hex::decode(candidate.hex()).unwrap_or_default()
}

/// The keyless signers a verified certificate identity matches, or why none does.
fn keyless_matches(identity: &sigstore::Identity, signers: &Signers<'_>) -> Result<Vec<SignerMatch>, VerifyError> {
    if signers.keyless.is_empty() {
        return Err(VerifyError::NoKeylessSigner);
    }
    let certificate = CertificateIdentity::from(identity);
    let matched: Vec<SignerMatch> = signers
        .keyless
        .iter()
        .filter(|k| {
            sigstore::verify::identity_matches(identity, k.issuer, k.subject)
                && failed_claim(k.claims, &certificate).is_none()
        })
        .map(|k| SignerMatch {
            signer: k.name.to_string(),
            method: "keyless",
            identity: Some(Box::new(certificate.clone())),
        })
        .collect();
    if matched.is_empty() {
        return Err(VerifyError::IdentityMismatch {
            expected: signers
                .keyless
                .iter()
                .map(|k| {
                    let subject = match k.subject {
                        SubjectMatch::Exact(s) => format!("`{s}`"),
                        SubjectMatch::Regex(re) => format!("/{}/", re.as_str()),
                    };
                    // A signer whose issuer and subject match fails on a claim: say which, since the
                    // identity alone would look like a match to the reader.
                    let claim = if sigstore::verify::identity_matches(identity, k.issuer, k.subject) {
                        failed_claim(k.claims, &certificate)
                            .map(|c| format!(", but {c}"))
                            .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    format!("{}: {subject} from `{}`{claim}", k.name, k.issuer)
                })
                .collect(),
            actual: sigstore::verify::describe(identity),
        });
    }
    Ok(matched)
}

/// cosign's legacy keyless form: the certificate and the Rekor entry travel as layer annotations.
/// They are assembled into a v0.1 bundle (which requires the SET) and verified as one.
fn verify_cosign_keyless(
    ev: &RawEvidence,
    content: bundle::Content,
    expected: &[ArtifactDigest],
    signers: &Signers<'_>,
) -> Result<Vec<SignerMatch>, VerifyError> {
    let Some(pem) = ev
        .annotations
        .get(ANNOTATION_CERTIFICATE)
        .filter(|c| !c.trim().is_empty())
    else {
        return Err(no_key_error(ev, signers.keys));
    };
    let Some(root) = signers.root else {
        return Err(VerifyError::NoTrustedRoot {
            tried: signers.keys.iter().map(|(n, _)| (*n).to_string()).collect(),
        });
    };
    let leaf = sigstore::pem_to_der(pem.as_bytes()).ok_or(VerifyError::CertificateNotPem)?;
    let entry = rekor_annotation(ev).map_err(|detail| VerifyError::NoRekorBundle { detail })?;
    let timestamps = rfc3161_annotation(ev);
    let bundle = Bundle {
        media_type: "application/vnd.dev.sigstore.bundle+json;version=0.1".into(),
        version: bundle::Version::V01,
        material: bundle::VerificationMaterial::Certificates(vec![leaf]),
        tlog_entries: vec![entry],
        timestamps,
        content,
    };
    let verified = sigstore::verify_bundle(&bundle, root, expected, &[]).map_err(VerifyError::Sigstore)?;
    match &verified.signer {
        sigstore::Signer::Certificate(identity) => keyless_matches(identity, signers),
        sigstore::Signer::Key(_) => Err(no_key_error(ev, signers.keys)),
    }
}

/// The `dev.sigstore.cosign/bundle` annotation as a tlog entry (numbers, and a hex log ID).
fn rekor_annotation(ev: &RawEvidence) -> Result<bundle::TlogEntry, String> {
    #[derive(serde::Deserialize)]
    struct Annotation {
        #[serde(rename = "SignedEntryTimestamp")]
        set: String,
        #[serde(rename = "Payload")]
        payload: Payload,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Payload {
        body: String,
        #[serde(deserialize_with = "bundle::de_i64")]
        integrated_time: i64,
        #[serde(deserialize_with = "bundle::de_u64")]
        log_index: u64,
        #[serde(rename = "logID")]
        log_id: String,
    }
    let text = ev
        .annotations
        .get(ANNOTATION_REKOR_BUNDLE)
        .ok_or_else(|| "absent".to_string())?;
    let a: Annotation = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let body = dsse::decode_b64(&a.payload.body).ok_or("Payload.body is not base64")?;
    let kind: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("Payload.body: {e}"))?;
    Ok(bundle::TlogEntry {
        log_index: a.payload.log_index,
        log_id: hex::decode(&a.payload.log_id).map_err(|_| "Payload.logID is not hex")?,
        kind: kind["kind"].as_str().unwrap_or_default().to_string(),
        version: kind["apiVersion"].as_str().unwrap_or_default().to_string(),
        integrated_time: a.payload.integrated_time,
        signed_entry_timestamp: Some(dsse::decode_b64(&a.set).ok_or("SignedEntryTimestamp is not base64")?),
        inclusion_proof: None,
        body,
    })
}

fn rfc3161_annotation(ev: &RawEvidence) -> Vec<Vec<u8>> {
    ev.annotations
        .get(ANNOTATION_RFC3161)
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| v["SignedRFC3161Timestamp"].as_str().and_then(dsse::decode_b64))
        .into_iter()
        .collect()
}

/// A Sigstore bundle: keyless against the trusted root and the keyless signers, or keyed against the
/// configured keys (its transparency-log entries then still need the trusted root).
fn verify_bundle(ev: &RawEvidence, candidate: &Digest, signers: &Signers<'_>) -> Result<Vec<Material>, VerifyError> {
    let bundle = Bundle::parse(&ev.bytes).map_err(VerifyError::Sigstore)?;
    let tried = || signers.keys.iter().map(|(n, _)| (*n).to_string()).collect::<Vec<_>>();
    let root = signers.root.ok_or(VerifyError::BundleNeedsRoot)?;
    let about_candidate = [ArtifactDigest::sha256(&candidate_bytes(candidate))];
    // The sigstore check wants a subject among `expected`. A Chainloop statement may list the candidate
    // only among its materials: its own subjects are accepted there, and the listing is checked on the
    // verified statement below.
    let mut expected = about_candidate.to_vec();
    expected.extend(chainloop_subject_digests(&bundle, candidate));
    let signed_by = match &bundle.material {
        bundle::VerificationMaterial::Certificates(_) => {
            let v = sigstore::verify_bundle(&bundle, root, &expected, &[]).map_err(VerifyError::Sigstore)?;
            let sigstore::Signer::Certificate(identity) = &v.signer else {
                return Err(VerifyError::BundleNoKey { tried: tried() });
            };
            (keyless_matches(identity, signers)?, v)
        }
        bundle::VerificationMaterial::PublicKey { .. } => {
            if signers.keys.is_empty() {
                return Err(VerifyError::BundleNoKey { tried: tried() });
            }
            // Every configured key that verifies counts, as for `.att` layers.
            let mut matched = Vec::new();
            let mut last = None;
            for (name, key) in signers.keys {
                match sigstore::verify_bundle(&bundle, root, &expected, &[*key]) {
                    Ok(v) => {
                        matched.push(SignerMatch {
                            signer: (*name).to_string(),
                            method: "key",
                            identity: None,
                        });
                        last = Some(Ok(v));
                    }
                    Err(e @ sigstore::Error::BadSignature { .. }) => {
                        if last.is_none() {
                            last = Some(Err(e));
                        }
                    }
                    Err(e) => return Err(VerifyError::Sigstore(e)),
                }
            }
            match last {
                Some(Ok(v)) => (matched, v),
                _ => return Err(VerifyError::BundleNoKey { tried: tried() }),
            }
        }
    };
    let (signed_by, verified) = signed_by;
    let (kind, predicate_type, statement) = match verified.statement {
        Some(statement) => {
            let predicate_type = statement["predicateType"].as_str().unwrap_or_default().to_string();
            if let Err(e) = sigstore::verify::check_subject(&statement, &about_candidate) {
                let listed = MaterialKind::ChainloopAttestation.accepts_predicate(&predicate_type)
                    && chainloop_lists_image(&statement, candidate);
                if !listed {
                    return Err(VerifyError::Sigstore(e));
                }
            }
            if let Some(annotation) = ev
                .annotations
                .get(ANNOTATION_BUNDLE_PREDICATE_TYPE)
                .filter(|a| !a.is_empty())
            {
                if *annotation != predicate_type {
                    return Err(VerifyError::AnnotationMismatch {
                        annotation: annotation.clone(),
                        statement: predicate_type,
                    });
                }
            }
            (MaterialKind::for_predicate(&predicate_type), predicate_type, statement)
        }
        None => (
            MaterialKind::ImageSignature,
            MESSAGE_SIGNATURE_PREDICATE_TYPE.to_string(),
            serde_json::json!({"messageDigest": {"algorithm": "SHA2_256", "digest": candidate.as_str()}}),
        ),
    };
    Ok(materials(ev, kind, &predicate_type, &signed_by, statement))
}

/// The sha256 subjects of the **unverified** statement of a DSSE bundle when it is a Chainloop
/// attestation that lists the candidate among its materials; empty otherwise. Only a hint for the
/// subject check: the listing itself is checked again once the signature has verified.
fn chainloop_subject_digests(bundle: &Bundle, candidate: &Digest) -> Vec<ArtifactDigest> {
    let bundle::Content::Dsse(env) = &bundle.content else {
        return Vec::new();
    };
    let Some(statement) =
        dsse::decode_b64(&env.payload).and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
    else {
        return Vec::new();
    };
    let predicate_type = statement["predicateType"].as_str().unwrap_or_default();
    if !MaterialKind::ChainloopAttestation.accepts_predicate(predicate_type)
        || !chainloop_lists_image(&statement, candidate)
    {
        return Vec::new();
    }
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["digest"]["sha256"].as_str().and_then(|h| hex::decode(h).ok()))
        .map(|d| ArtifactDigest::sha256(&d))
        .collect()
}

fn no_key_error(ev: &RawEvidence, keys: &[(&str, &PublicKey)]) -> VerifyError {
    let tried = keys.iter().map(|(name, _)| (*name).to_string()).collect();
    let has_certificate = ev
        .annotations
        .get(ANNOTATION_CERTIFICATE)
        .is_some_and(|c| !c.trim().is_empty());
    if has_certificate {
        VerifyError::NoTrustedRoot { tried }
    } else {
        VerifyError::NoKeyMatch { tried }
    }
}

fn rejection(ev: &RawEvidence, err: &VerifyError) -> Rejection {
    let predicate_type = err
        .verified_predicate_type()
        .map(str::to_string)
        .or_else(|| predicate_hint(ev));
    let kind = match ev.source {
        EvidenceSource::Sig => Some(MaterialKind::ImageSignature),
        _ => predicate_type.as_deref().map(MaterialKind::for_predicate),
    };
    let claims = predicate_type
        .as_deref()
        .map(|p| format!(" (predicateType {p})"))
        .unwrap_or_default();
    Rejection {
        message: format!("{} {}{claims}: {err}", Described(ev.source), ev.digest),
        predicate_type,
        kind,
        source: ev.source,
        digest: ev.digest.clone(),
        reason: err.reason(),
    }
}

/// How a release manager would name the evidence: `.att attestation sha256:…`.
struct Described(EvidenceSource);

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            EvidenceSource::Att => ".att attestation",
            EvidenceSource::Sig => ".sig image signature",
            EvidenceSource::Bundle => "Sigstore bundle",
        })
    }
}

/// The predicate type a piece of evidence claims, **unverified**: from its annotation, else from its
/// payload. For rejections only, so that "present but failed" differs from "missing".
pub fn predicate_hint(ev: &RawEvidence) -> Option<String> {
    let non_empty = |key: &str| ev.annotations.get(key).filter(|v| !v.is_empty()).cloned();
    match ev.source {
        EvidenceSource::Sig => Some(SIMPLE_SIGNING_PREDICATE_TYPE.to_string()),
        EvidenceSource::Att => non_empty(ANNOTATION_PREDICATE_TYPE).or_else(|| {
            let envelope: serde_json::Value = serde_json::from_slice(&ev.bytes).ok()?;
            statement_predicate_type(envelope["payload"].as_str()?)
        }),
        EvidenceSource::Bundle => non_empty(ANNOTATION_BUNDLE_PREDICATE_TYPE).or_else(|| {
            let bundle: serde_json::Value = serde_json::from_slice(&ev.bytes).ok()?;
            statement_predicate_type(bundle["dsseEnvelope"]["payload"].as_str()?)
        }),
    }
}

/// The material kind a piece of evidence claims, unverified (see [`predicate_hint`]).
pub fn kind_hint(ev: &RawEvidence) -> Option<MaterialKind> {
    match ev.source {
        EvidenceSource::Sig => Some(MaterialKind::ImageSignature),
        _ => predicate_hint(ev).map(|p| MaterialKind::for_predicate(&p)),
    }
}

fn statement_predicate_type(payload_b64: &str) -> Option<String> {
    let statement: serde_json::Value = serde_json::from_slice(&dsse::decode_b64(payload_b64)?).ok()?;
    statement["predicateType"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::config::SubjectMatch;
    use crate::keys::SigningKey;

    const SLSA: &str = "https://slsa.dev/provenance/v1";
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn candidate() -> Digest {
        Digest::of(b"candidate image manifest")
    }

    fn other_image() -> Digest {
        Digest::of(b"another image manifest")
    }

    fn key_signer(key: &PublicKey) -> Signer {
        Signer::Key {
            path: PathBuf::from("/etc/tollgate/test.pub"),
            key: key.clone(),
        }
    }

    fn signers(list: &[(&str, &SigningKey)]) -> BTreeMap<String, Signer> {
        list.iter()
            .map(|(n, k)| (n.to_string(), key_signer(&k.public_key())))
            .collect()
    }

    fn statement(subject: &Digest, predicate_type: &str) -> Vec<u8> {
        let s = Statement::new(
            "registry.example/acme/api",
            subject,
            predicate_type,
            json!({"builder": {"id": "ci"}}),
        );
        serde_json::to_vec(&s).unwrap()
    }

    fn evidence(source: EvidenceSource, media_type: &str, bytes: Vec<u8>, annotations: &[(&str, &str)]) -> RawEvidence {
        RawEvidence {
            source,
            media_type: media_type.to_string(),
            digest: Digest::of(&bytes),
            bytes,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn att(bytes: Vec<u8>, annotations: &[(&str, &str)]) -> RawEvidence {
        evidence(EvidenceSource::Att, dsse::MEDIA_TYPE, bytes, annotations)
    }

    fn signed_att(key: &SigningKey, payload: &[u8]) -> RawEvidence {
        att(Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, payload, key).to_json(), &[])
    }

    fn simple_signing(image: &Digest) -> Vec<u8> {
        // Byte layout as cosign writes it, including `"optional":null`.
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/acme/api"}},"image":{{"docker-manifest-digest":"{image}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    fn sig(payload: Vec<u8>, signature: &str, extra: &[(&str, &str)]) -> RawEvidence {
        let mut annotations = vec![(ANNOTATION_SIGNATURE, signature)];
        annotations.extend_from_slice(extra);
        evidence(EvidenceSource::Sig, SIMPLE_SIGNING_MEDIA_TYPE, payload, &annotations)
    }

    fn signed_sig(key: &SigningKey, payload: Vec<u8>) -> RawEvidence {
        let signature = dsse::encode_b64(&key.sign(&payload));
        sig(payload, &signature, &[])
    }

    /// The trust of the key tests: key signers only, no trusted root.
    fn verify(evidence: &[RawEvidence], candidate: &Digest, signers: &BTreeMap<String, Signer>) -> Verified {
        super::verify(
            evidence,
            candidate,
            &Trust {
                signers: signers.clone(),
                ..Trust::default()
            },
        )
    }

    /// The single rejection of verifying one piece of evidence.
    fn rejected(ev: RawEvidence, signers: &BTreeMap<String, Signer>) -> Rejection {
        let v = verify(&[ev], &candidate(), signers);
        assert!(v.materials.is_empty(), "expected no material, got {:?}", v.materials);
        assert_eq!(v.rejections.len(), 1);
        v.rejections.into_iter().next().unwrap()
    }

    fn accepted(ev: RawEvidence, signers: &BTreeMap<String, Signer>) -> Material {
        let v = verify(&[ev], &candidate(), signers);
        assert!(v.rejections.is_empty(), "expected no rejection, got {:?}", v.rejections);
        assert_eq!(v.materials.len(), 1);
        v.materials.into_iter().next().unwrap()
    }

    // ---- .att ----

    #[test]
    fn accepts_an_attestation_signed_by_a_configured_key() {
        let key = SigningKey::generate();
        let payload = statement(&candidate(), SLSA);
        let ev = signed_att(&key, &payload);
        let m = accepted(ev.clone(), &signers(&[("release-key", &key)]));
        assert_eq!(m.kind, MaterialKind::SlsaProvenance);
        assert_eq!(m.predicate_type, SLSA);
        assert_eq!(
            m.signer,
            SignerMatch {
                signer: "release-key".into(),
                method: "key",
                identity: None,
            }
        );
        assert_eq!(m.source, EvidenceSource::Att);
        assert_eq!(m.digest, ev.digest);
        assert_eq!(
            m.statement,
            serde_json::from_slice::<serde_json::Value>(&payload).unwrap()
        );
    }

    #[test]
    fn material_kind_follows_the_signed_predicate_type() {
        let key = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        for (pt, kind) in [
            ("https://cyclonedx.org/bom/v1.5", MaterialKind::SbomCyclonedxJson),
            ("https://spdx.dev/Document", MaterialKind::SbomSpdxJson),
            ("chainloop.dev/attestation/v0.2", MaterialKind::ChainloopAttestation),
            ("https://example.com/load-test/v1", MaterialKind::Attestation),
        ] {
            let m = accepted(signed_att(&key, &statement(&candidate(), pt)), &s);
            assert_eq!((m.kind, m.predicate_type.as_str()), (kind, pt));
        }
    }

    #[test]
    fn accepts_a_v01_statement_and_a_matching_predicate_type_annotation() {
        let key = SigningKey::generate();
        let mut s: serde_json::Value = serde_json::from_slice(&statement(&candidate(), SLSA)).unwrap();
        s["_type"] = json!(dsse::STATEMENT_V01);
        let env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&s).unwrap(), &key).to_json();
        let m = accepted(att(env, &[(ANNOTATION_PREDICATE_TYPE, SLSA)]), &signers(&[("k", &key)]));
        assert_eq!(m.statement["_type"], dsse::STATEMENT_V01);
    }

    #[test]
    fn blocks_an_attestation_signed_by_an_unknown_key() {
        let configured = SigningKey::generate();
        let stranger = SigningKey::generate();
        let ev = signed_att(&stranger, &statement(&candidate(), SLSA));
        let r = rejected(ev.clone(), &signers(&[("release-key", &configured)]));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(
            r.message.contains("signed by no configured key (tried release-key)"),
            "{}",
            r.message
        );
        assert!(r.message.contains(ev.digest.as_str()), "{}", r.message);
        // Present but failed, not missing: the policy can say which material failed.
        assert_eq!(r.predicate_type.as_deref(), Some(SLSA));
        assert_eq!(r.kind, Some(MaterialKind::SlsaProvenance));
        assert_eq!((r.source, &r.digest), (EvidenceSource::Att, &ev.digest));
    }

    #[test]
    fn blocks_everything_when_no_key_signer_is_configured() {
        let key = SigningKey::generate();
        let keyless = Signer::Keyless {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: SubjectMatch::Exact(
                "https://github.com/acme/api/.github/workflows/release.yml@refs/tags/v1".into(),
            ),
            claims: vec![],
        };
        let only_keyless = BTreeMap::from([("github-release".to_string(), keyless)]);
        let r = rejected(signed_att(&key, &statement(&candidate(), SLSA)), &only_keyless);
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(r.message.contains("no `key` signers are configured"), "{}", r.message);
        let r = rejected(signed_sig(&key, simple_signing(&candidate())), &BTreeMap::new());
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
    }

    #[test]
    fn the_second_configured_signer_can_be_the_one_that_verifies() {
        let first = SigningKey::generate();
        let second = SigningKey::generate();
        let m = accepted(
            signed_att(&second, &statement(&candidate(), SLSA)),
            &signers(&[("a-first", &first), ("b-second", &second)]),
        );
        assert_eq!(m.signer.signer, "b-second");
    }

    #[test]
    fn every_configured_signer_of_a_multi_signature_envelope_is_recorded() {
        let a = SigningKey::generate();
        let b = SigningKey::generate();
        let stranger = SigningKey::generate();
        let payload = statement(&candidate(), SLSA);
        let mut env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &payload, &stranger);
        for key in [&a, &b] {
            env.signatures
                .extend(Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &payload, key).signatures);
        }
        let v = verify(
            &[att(env.to_json(), &[])],
            &candidate(),
            &signers(&[("a", &a), ("b", &b)]),
        );
        assert!(v.rejections.is_empty());
        let names: Vec<_> = v.materials.iter().map(|m| m.signer.signer.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(v.materials.iter().all(|m| m.digest == v.materials[0].digest));
    }

    #[test]
    fn malformed_envelopes_are_signature_invalid() {
        let key = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        let good = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &key);
        let bad_payload = Envelope {
            payload: "not base64!".into(),
            ..good.clone()
        };
        let bad_sig = Envelope {
            signatures: vec![dsse::Signature {
                keyid: None,
                sig: "@@@".into(),
            }],
            ..good.clone()
        };
        let no_sigs = Envelope {
            signatures: vec![],
            ..good.clone()
        };
        let full = good.to_json();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not JSON", b"hello".to_vec(), "not valid JSON"),
            ("truncated", full[..full.len() / 2].to_vec(), "not valid JSON"),
            ("wrong shape", br#"{"payload":1}"#.to_vec(), "not valid JSON"),
            (
                "bad base64 payload",
                bad_payload.to_json(),
                "payload is not valid base64",
            ),
            ("bad base64 signature", bad_sig.to_json(), "signed by no configured key"),
            ("no signatures", no_sigs.to_json(), "has no signatures"),
        ];
        for (what, bytes, expected) in cases {
            let r = rejected(att(bytes, &[]), &s);
            assert_eq!(r.reason, ReasonCode::SignatureInvalid, "{what}");
            assert!(r.message.contains(expected), "{what}: {}", r.message);
        }
    }

    #[test]
    fn a_tampered_payload_is_signature_invalid() {
        let key = SigningKey::generate();
        let mut env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &key);
        let forged = statement(&candidate(), "https://cyclonedx.org/bom");
        env.payload = dsse::encode_b64(&forged);
        let r = rejected(att(env.to_json(), &[]), &signers(&[("k", &key)]));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        // The hint is the unverified claim: it names what was present.
        assert_eq!(r.kind, Some(MaterialKind::SbomCyclonedxJson));
    }

    #[test]
    fn a_changed_payload_type_breaks_the_signature() {
        let key = SigningKey::generate();
        let mut env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &key);
        env.payload_type = "application/json".into();
        let r = rejected(att(env.to_json(), &[]), &signers(&[("k", &key)]));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(r.message.contains("signed by no configured key"), "{}", r.message);
    }

    #[test]
    fn a_signed_payload_of_another_type_is_signature_invalid() {
        let key = SigningKey::generate();
        let env = Envelope::sign("application/vnd.cyclonedx+json", &statement(&candidate(), SLSA), &key);
        let r = rejected(att(env.to_json(), &[]), &signers(&[("k", &key)]));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(
            r.message.contains("payloadType is `application/vnd.cyclonedx+json`"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_signed_payload_that_is_not_a_statement_is_signature_invalid() {
        let key = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        let r = rejected(signed_att(&key, b"[1,2,3]"), &s);
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(r.message.contains("not an in-toto statement"), "{}", r.message);
        let r = rejected(signed_att(&key, b"\xff\xfe"), &s);
        assert!(r.message.contains("not an in-toto statement"), "{}", r.message);

        let mut other: serde_json::Value = serde_json::from_slice(&statement(&candidate(), SLSA)).unwrap();
        other["_type"] = json!("https://example.com/Statement/v9");
        let r = rejected(signed_att(&key, &serde_json::to_vec(&other).unwrap()), &s);
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(
            r.message
                .contains("statement `_type` is `https://example.com/Statement/v9`"),
            "{}",
            r.message
        );
    }

    #[test]
    fn an_attestation_about_another_image_is_subject_mismatch_naming_both_digests() {
        let key = SigningKey::generate();
        let r = rejected(
            signed_att(&key, &statement(&other_image(), SLSA)),
            &signers(&[("k", &key)]),
        );
        assert_eq!(r.reason, ReasonCode::SubjectMismatch);
        assert!(r.message.contains(other_image().as_str()), "{}", r.message);
        assert!(r.message.contains(candidate().as_str()), "{}", r.message);
        assert!(r.message.contains("registry.example/acme/api"), "{}", r.message);
        assert_eq!(r.predicate_type.as_deref(), Some(SLSA));
        assert_eq!(r.kind, Some(MaterialKind::SlsaProvenance));
    }

    #[test]
    fn subjects_match_by_sha256_digest_only() {
        let key = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        let mut st: serde_json::Value = serde_json::from_slice(&statement(&candidate(), SLSA)).unwrap();
        // The candidate's hex under another algorithm name, and a differently named sha256 subject.
        st["subject"] = json!([{"name": "x", "digest": {"sha512": candidate().hex()}}]);
        let r = rejected(signed_att(&key, &serde_json::to_vec(&st).unwrap()), &s);
        assert_eq!(r.reason, ReasonCode::SubjectMismatch);
        assert!(r.message.contains("no sha256 subject"), "{}", r.message);
        st["subject"] = json!([
            {"name": "git.head", "digest": {"sha1": "f9f2493a647473c0be0c8814d3d32b17d615fa38"}},
            {"digest": {"sha256": candidate().hex()}}
        ]);
        accepted(signed_att(&key, &serde_json::to_vec(&st).unwrap()), &s);
    }

    #[test]
    fn a_predicate_type_annotation_that_lies_is_signature_invalid() {
        let key = SigningKey::generate();
        let env = Envelope::sign(
            dsse::INTOTO_PAYLOAD_TYPE,
            &statement(&candidate(), "https://example.com/x/v1"),
            &key,
        );
        let r = rejected(
            att(env.to_json(), &[(ANNOTATION_PREDICATE_TYPE, SLSA)]),
            &signers(&[("k", &key)]),
        );
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(
            r.message.contains("annotation says `https://slsa.dev/provenance/v1`"),
            "{}",
            r.message
        );
        // What was verified wins over the annotation's claim.
        assert_eq!(r.predicate_type.as_deref(), Some("https://example.com/x/v1"));
        assert_eq!(r.kind, Some(MaterialKind::Attestation));
    }

    #[test]
    fn content_that_does_not_hash_to_its_digest_is_signature_invalid() {
        let key = SigningKey::generate();
        let mut ev = signed_att(&key, &statement(&candidate(), SLSA));
        ev.digest = other_image();
        let r = rejected(ev, &signers(&[("k", &key)]));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(r.message.contains("hashes to"), "{}", r.message);
    }

    #[test]
    fn an_att_layer_of_another_media_type_is_signature_invalid() {
        let key = SigningKey::generate();
        let mut ev = signed_att(&key, &statement(&candidate(), SLSA));
        ev.media_type = "application/json".into();
        let r = rejected(ev, &signers(&[("k", &key)]));
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(r.message.contains("media type is `application/json`"), "{}", r.message);
    }

    #[test]
    fn keyless_evidence_without_a_trusted_root_is_signature_invalid() {
        let signer = SigningKey::generate(); // stands in for the Fulcio certificate's key
        let configured = SigningKey::generate();
        let env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &signer).to_json();
        let r = rejected(
            att(env, &[(ANNOTATION_CERTIFICATE, CERT)]),
            &signers(&[("release-key", &configured)]),
        );
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(
            r.message.contains("no trust.trusted_root is configured"),
            "{}",
            r.message
        );
        assert_eq!(r.kind, Some(MaterialKind::SlsaProvenance));

        let payload = simple_signing(&candidate());
        let signature = dsse::encode_b64(&signer.sign(&payload));
        let r = rejected(
            sig(payload, &signature, &[(ANNOTATION_CERTIFICATE, CERT)]),
            &BTreeMap::new(),
        );
        assert!(
            r.message.contains("no trust.trusted_root is configured"),
            "{}",
            r.message
        );
    }

    #[test]
    fn a_configured_key_still_verifies_evidence_that_also_carries_a_certificate() {
        let key = SigningKey::generate();
        let env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &key).to_json();
        let m = accepted(att(env, &[(ANNOTATION_CERTIFICATE, CERT)]), &signers(&[("k", &key)]));
        assert_eq!(m.signer.method, "key");
    }

    #[test]
    fn accepts_a_twice_base64_encoded_signature_as_chainloop_wrote_them() {
        let key = SigningKey::generate();
        let mut env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &key);
        env.signatures[0].sig = dsse::encode_b64(env.signatures[0].sig.as_bytes());
        accepted(att(env.to_json(), &[]), &signers(&[("k", &key)]));
    }

    #[test]
    fn no_truncation_or_bit_flip_of_an_envelope_panics_or_changes_what_is_accepted() {
        let key = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        let payload = statement(&candidate(), SLSA);
        let original: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let full = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &payload, &key).to_json();
        for len in 0..full.len() {
            let v = verify(&[att(full[..len].to_vec(), &[])], &candidate(), &s);
            assert!(v.materials.is_empty(), "a truncation to {len} bytes was accepted");
        }
        for i in 0..full.len() {
            let mut bytes = full.clone();
            bytes[i] ^= 0x01;
            // A flip may leave valid JSON with the same meaning (a key's case, say): then it may verify,
            // but only ever with the statement that was signed.
            for m in verify(&[att(bytes, &[])], &candidate(), &s).materials {
                assert_eq!(m.statement, original, "flip at {i} changed the accepted statement");
            }
        }
    }

    // ---- .sig ----

    #[test]
    fn accepts_a_simple_signing_signature_of_the_candidate() {
        let key = SigningKey::generate();
        let payload = simple_signing(&candidate());
        let m = accepted(signed_sig(&key, payload.clone()), &signers(&[("release-key", &key)]));
        assert_eq!(m.kind, MaterialKind::ImageSignature);
        assert_eq!(m.predicate_type, SIMPLE_SIGNING_PREDICATE_TYPE);
        assert_eq!(m.source, EvidenceSource::Sig);
        assert_eq!(m.signer.signer, "release-key");
        assert_eq!(
            m.statement["critical"]["image"]["docker-manifest-digest"],
            candidate().as_str()
        );
    }

    #[test]
    fn a_signature_of_another_image_is_subject_mismatch() {
        let key = SigningKey::generate();
        let r = rejected(
            signed_sig(&key, simple_signing(&other_image())),
            &signers(&[("k", &key)]),
        );
        assert_eq!(r.reason, ReasonCode::SubjectMismatch);
        assert!(
            r.message.contains(other_image().as_str()) && r.message.contains(candidate().as_str()),
            "{}",
            r.message
        );
        assert_eq!(r.kind, Some(MaterialKind::ImageSignature));
        assert_eq!(r.predicate_type.as_deref(), Some(SIMPLE_SIGNING_PREDICATE_TYPE));
    }

    #[test]
    fn simple_signing_failures_are_signature_invalid() {
        let key = SigningKey::generate();
        let stranger = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        let good = simple_signing(&candidate());
        let good_sig = dsse::encode_b64(&key.sign(&good));

        let wrong_type = String::from_utf8(good.clone())
            .unwrap()
            .replace(COSIGN_SIGNATURE_TYPE, "Cosign Container Image Signature");
        let mut reformatted: serde_json::Value = serde_json::from_slice(&good).unwrap();
        reformatted["optional"] = json!({});
        let mut no_annotation = signed_sig(&key, good.clone());
        no_annotation.annotations.clear();
        let cases: Vec<(&str, RawEvidence, &str)> = vec![
            (
                "unknown key",
                signed_sig(&stranger, good.clone()),
                "signed by no configured key",
            ),
            (
                "no annotation",
                no_annotation,
                "no `dev.cosignproject.cosign/signature` annotation",
            ),
            (
                "empty annotation",
                sig(good.clone(), "", &[]),
                "no `dev.cosignproject.cosign/signature` annotation",
            ),
            ("bad base64", sig(good.clone(), "@@@", &[]), "not valid base64"),
            (
                "signature of other bytes",
                sig(serde_json::to_vec(&reformatted).unwrap(), &good_sig, &[]),
                "signed by no configured key",
            ),
            (
                "case-changed type",
                signed_sig(&key, wrong_type.into_bytes()),
                "`critical.type` is `Cosign Container Image Signature`",
            ),
            (
                "not JSON",
                signed_sig(&key, b"hello".to_vec()),
                "not a cosign simple-signing payload",
            ),
            (
                "no digest",
                signed_sig(
                    &key,
                    br#"{"critical":{"type":"cosign container image signature"}}"#.to_vec(),
                ),
                "docker-manifest-digest",
            ),
        ];
        for (what, ev, expected) in cases {
            let r = rejected(ev, &s);
            assert_eq!(r.reason, ReasonCode::SignatureInvalid, "{what}");
            assert!(r.message.contains(expected), "{what}: {}", r.message);
            assert_eq!(r.kind, Some(MaterialKind::ImageSignature), "{what}");
        }
        let mut wrong_media = signed_sig(&key, good);
        wrong_media.media_type = dsse::MEDIA_TYPE.into();
        assert!(rejected(wrong_media, &s).message.contains("media type"));
    }

    // ---- bundles ----

    #[test]
    fn bundles_are_rejected_but_say_what_they_claim() {
        let key = SigningKey::generate();
        let s = signers(&[("k", &key)]);
        let env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, &statement(&candidate(), SLSA), &key);
        let bundle = json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {"publicKey": {"hint": "k"}},
            "dsseEnvelope": env,
        });
        let ev = evidence(
            EvidenceSource::Bundle,
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            serde_json::to_vec(&bundle).unwrap(),
            &[],
        );
        let r = rejected(ev, &s);
        assert_eq!(r.reason, ReasonCode::SignatureInvalid);
        assert!(
            r.message.contains("no trust.trusted_root is configured"),
            "{}",
            r.message
        );
        assert_eq!(
            (r.predicate_type.as_deref(), r.kind),
            (Some(SLSA), Some(MaterialKind::SlsaProvenance))
        );

        let annotated = evidence(
            EvidenceSource::Bundle,
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            b"not json".to_vec(),
            &[(ANNOTATION_BUNDLE_PREDICATE_TYPE, "https://cyclonedx.org/bom")],
        );
        assert_eq!(kind_hint(&annotated), Some(MaterialKind::SbomCyclonedxJson));
        let opaque = evidence(EvidenceSource::Bundle, "application/json", b"{}".to_vec(), &[]);
        let r = rejected(opaque, &s);
        assert_eq!((r.predicate_type, r.kind), (None, None));
    }

    #[test]
    fn hints_prefer_the_annotation_and_fall_back_to_the_unverified_payload() {
        let key = SigningKey::generate();
        let plain = signed_att(&key, &statement(&candidate(), SLSA));
        assert_eq!(predicate_hint(&plain).as_deref(), Some(SLSA));
        let mut annotated = plain.clone();
        annotated
            .annotations
            .insert(ANNOTATION_PREDICATE_TYPE.into(), "https://spdx.dev/Document".into());
        assert_eq!(kind_hint(&annotated), Some(MaterialKind::SbomSpdxJson));
        assert_eq!(predicate_hint(&att(b"garbage".to_vec(), &[])), None);
        assert_eq!(
            kind_hint(&sig(b"x".to_vec(), "", &[])),
            Some(MaterialKind::ImageSignature)
        );
    }

    #[test]
    fn every_evidence_gets_exactly_one_outcome_in_order() {
        let key = SigningKey::generate();
        let evidence = vec![
            signed_att(&key, &statement(&candidate(), SLSA)),
            att(b"{".to_vec(), &[]),
            signed_sig(&key, simple_signing(&candidate())),
            signed_sig(&key, simple_signing(&other_image())),
        ];
        let v = verify(&evidence, &candidate(), &signers(&[("k", &key)]));
        assert_eq!(
            v.materials.iter().map(|m| m.kind).collect::<Vec<_>>(),
            [MaterialKind::SlsaProvenance, MaterialKind::ImageSignature]
        );
        assert_eq!(
            v.rejections.iter().map(|r| r.reason).collect::<Vec<_>>(),
            [ReasonCode::SignatureInvalid, ReasonCode::SubjectMismatch]
        );
    }

    // ---- other key algorithms (fixtures made with openssl, see tests/fixtures/keys/README.md) ----

    fn fixture_signer(pem: &str) -> BTreeMap<String, Signer> {
        BTreeMap::from([("fixture".to_string(), key_signer(&PublicKey::from_pem(pem).unwrap()))])
    }

    #[test]
    fn verifies_ed25519_p384_and_rsa_signed_envelopes() {
        let subject = Digest::of(b"tollgate fixture image\n");
        let ed25519 = include_str!("../../tests/fixtures/keys/ed25519.pub");
        let p384 = include_str!("../../tests/fixtures/keys/p384.pub");
        let rsa = include_str!("../../tests/fixtures/keys/rsa.pub");
        let cases = [
            (
                "ed25519",
                ed25519,
                include_bytes!("../../tests/fixtures/keys/ed25519.dsse.json").as_slice(),
            ),
            (
                "ecdsa-p384",
                p384,
                include_bytes!("../../tests/fixtures/keys/p384.dsse.json").as_slice(),
            ),
            (
                "rsa",
                rsa,
                include_bytes!("../../tests/fixtures/keys/rsa-pkcs1.dsse.json").as_slice(),
            ),
            (
                "rsa",
                rsa,
                include_bytes!("../../tests/fixtures/keys/rsa-pss.dsse.json").as_slice(),
            ),
        ];
        for (algorithm, pem, envelope) in cases {
            assert_eq!(PublicKey::from_pem(pem).unwrap().algorithm(), algorithm);
            let v = verify(&[att(envelope.to_vec(), &[])], &subject, &fixture_signer(pem));
            assert!(v.rejections.is_empty(), "{algorithm}: {:?}", v.rejections);
            assert_eq!(v.materials[0].predicate_type, "https://example.com/fixture/v1");
            // The same envelope with another algorithm's key does not verify.
            let wrong = if pem == ed25519 { p384 } else { ed25519 };
            let r = verify(&[att(envelope.to_vec(), &[])], &subject, &fixture_signer(wrong));
            assert_eq!(r.rejections[0].reason, ReasonCode::SignatureInvalid, "{algorithm}");
        }
    }

    // ---- keyless, with real cosign and bundle vectors (tests/vectors/SOURCES.tsv) ----

    const GH_ISSUER: &str = "https://token.actions.githubusercontent.com";

    fn vector(rel: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors")
            .join(rel);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn keyless_trust(signers: &[(&str, &str, SubjectMatch)]) -> Trust {
        let text = String::from_utf8(vector("trust/sigstore-public-good.trusted_root.json")).unwrap();
        Trust {
            trusted_root: None,
            root: Some(std::sync::Arc::new(TrustedRoot::parse(&text).unwrap())),
            signers: signers
                .iter()
                .map(|(name, issuer, subject)| {
                    (
                        name.to_string(),
                        Signer::Keyless {
                            issuer: issuer.to_string(),
                            subject: subject.clone(),
                            claims: vec![],
                        },
                    )
                })
                .collect(),
        }
    }

    fn exact(s: &str) -> SubjectMatch {
        SubjectMatch::Exact(s.to_string())
    }

    fn digest(s: &str) -> Digest {
        s.parse().unwrap()
    }

    /// The containers/image `.sig` fixture signed keylessly by mitr@redhat.com (vectors README §5).
    fn keyless_sig() -> RawEvidence {
        let dir = "cosign-simplesigning/dir-img-cosign-fulcio-rekor-valid/extracted";
        let text = |f: &str| String::from_utf8(vector(&format!("{dir}/{f}"))).unwrap();
        let signature = text("signature.b64");
        let cert = text("certificate.pem");
        let rekor = text("rekor-bundle.json");
        sig(
            vector(&format!("{dir}/payload.json")),
            signature.trim(),
            &[(ANNOTATION_CERTIFICATE, &cert), (ANNOTATION_REKOR_BUNDLE, &rekor)],
        )
    }

    const SIG_IMAGE: &str = "sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a";

    #[test]
    fn accepts_a_keyless_cosign_signature_of_a_matching_identity() {
        let trust = keyless_trust(&[
            ("mitr", "https://github.com/login/oauth", exact("mitr@redhat.com")),
            ("other", "https://github.com/login/oauth", exact("someone@example.com")),
        ]);
        let v = super::verify(&[keyless_sig()], &digest(SIG_IMAGE), &trust);
        assert!(v.rejections.is_empty(), "{:?}", v.rejections);
        assert_eq!(v.materials.len(), 1);
        let m = &v.materials[0];
        assert_eq!(m.kind, MaterialKind::ImageSignature);
        assert_eq!(
            m.signer,
            SignerMatch {
                signer: "mitr".into(),
                method: "keyless",
                identity: v.materials[0].signer.identity.clone(),
            }
        );
    }

    #[test]
    fn keyless_cosign_signature_failures_have_the_right_reason() {
        let good = || keyless_trust(&[("mitr", "https://github.com/login/oauth", exact("mitr@redhat.com"))]);
        let one = |ev: RawEvidence, trust: &Trust, candidate: &str| {
            let v = super::verify(&[ev], &digest(candidate), trust);
            assert!(v.materials.is_empty(), "{:?}", v.materials);
            v.rejections.into_iter().next().unwrap()
        };
        let wrong_subject = keyless_trust(&[("x", "https://github.com/login/oauth", exact("eve@example.com"))]);
        let r = one(keyless_sig(), &wrong_subject, SIG_IMAGE);
        assert_eq!(r.reason, ReasonCode::IdentityMismatch, "{}", r.message);
        assert!(r.message.contains("mitr@redhat.com"), "{}", r.message);
        let wrong_issuer = keyless_trust(&[("x", GH_ISSUER, exact("mitr@redhat.com"))]);
        assert_eq!(
            one(keyless_sig(), &wrong_issuer, SIG_IMAGE).reason,
            ReasonCode::IdentityMismatch
        );

        let r = one(keyless_sig(), &good(), &other_image().to_string());
        assert_eq!(r.reason, ReasonCode::SubjectMismatch, "{}", r.message);

        // The SET covers integratedTime: moving it by a second breaks the log's signature.
        let mut moved = keyless_sig();
        let rekor = moved.annotations[ANNOTATION_REKOR_BUNDLE].replace("1674247893", "1674247894");
        moved.annotations.insert(ANNOTATION_REKOR_BUNDLE.into(), rekor);
        let r = one(moved, &good(), SIG_IMAGE);
        assert_eq!(r.reason, ReasonCode::TlogInvalid, "{}", r.message);

        let mut no_rekor = keyless_sig();
        no_rekor.annotations.remove(ANNOTATION_REKOR_BUNDLE);
        assert_eq!(one(no_rekor, &good(), SIG_IMAGE).reason, ReasonCode::TlogInvalid);

        // A payload that is not the signed one.
        let mut tampered = keyless_sig();
        tampered.bytes = String::from_utf8(tampered.bytes)
            .unwrap()
            .replace("fulcio-rekor-1", "fulcio-rekor-2")
            .into_bytes();
        tampered.digest = Digest::of(&tampered.bytes);
        assert_eq!(one(tampered, &good(), SIG_IMAGE).reason, ReasonCode::SignatureInvalid);
    }

    #[test]
    fn accepts_a_keyless_cosign_attestation_layer() {
        let manifest: serde_json::Value = serde_json::from_slice(&vector(
            "cosign-attestation-slsa-container/att-manifest.sha256-21454caf.json",
        ))
        .unwrap();
        let annotations: Vec<(String, String)> = manifest["layers"][0]["annotations"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ev = att(
            vector("cosign-attestation-slsa-container/att-layer.dsse.sha256-e163b472.json"),
            &refs,
        );
        let workflow = "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v2.1.0";
        let trust = keyless_trust(&[(
            "slsa",
            GH_ISSUER,
            SubjectMatch::Regex(
                regex::Regex::new("^https://github\\.com/slsa-framework/slsa-github-generator/").unwrap(),
            ),
        )]);
        let image = digest("sha256:234e2c830c2fb31ac5671789d22adfe44d30c3ee831d01beae5e237841a13122");
        let v = super::verify(std::slice::from_ref(&ev), &image, &trust);
        assert!(v.rejections.is_empty(), "{:?}", v.rejections);
        assert_eq!(v.materials[0].kind, MaterialKind::SlsaProvenance);
        assert_eq!(v.materials[0].signer.method, "keyless");
        let elsewhere = keyless_trust(&[("x", GH_ISSUER, exact(&workflow.replace("v2.1.0", "v2.0.0")))]);
        let v = super::verify(&[ev], &image, &elsewhere);
        assert_eq!(v.rejections[0].reason, ReasonCode::IdentityMismatch);
    }

    #[test]
    fn accepts_a_cosign_v3_bundle_as_an_image_signature() {
        let bytes = vector("cosign-v3-bundle/kubewarden-controller-v1.34.0.bundle_v03.json");
        let ev = evidence(
            EvidenceSource::Bundle,
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            bytes,
            &[],
        );
        let trust = keyless_trust(&[(
            "kubewarden",
            GH_ISSUER,
            exact(
                "https://github.com/kubewarden/kubewarden-controller/.github/workflows/release.yml@refs/tags/v1.34.0",
            ),
        )]);
        let image = digest("sha256:c811d58de79c92f03214e63aa339484e488d694ae8a6283b5f3f17a9faf50172");
        let v = super::verify(std::slice::from_ref(&ev), &image, &trust);
        assert!(v.rejections.is_empty(), "{:?}", v.rejections);
        let m = &v.materials[0];
        assert_eq!(
            (m.kind, m.source),
            (MaterialKind::ImageSignature, EvidenceSource::Bundle)
        );
        assert_eq!(m.predicate_type, "https://sigstore.dev/cosign/sign/v1");
        assert_eq!(m.signer.signer, "kubewarden");
        let zero = digest(&format!("sha256:{}", "0".repeat(64)));
        let v = super::verify(&[ev], &zero, &trust);
        assert_eq!(
            v.rejections[0].reason,
            ReasonCode::SubjectMismatch,
            "{}",
            v.rejections[0].message
        );
    }

    // ---- Chainloop attestations: the candidate listed among the materials ----

    const CHAINLOOP: &str = "chainloop.dev/attestation/v0.2";

    /// A Chainloop-shaped statement: the workflow run is the subject; `image` appears only in
    /// `predicate.materials[]`, with the snake-case `media_type` Chainloop writes there.
    fn chainloop_statement(predicate_type: &str, image: &Digest, material_type: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "_type": dsse::STATEMENT_V1,
            "subject": [{"name": "chainloop.workflow.build", "digest": {"sha256": hex::encode([7u8; 32])}}],
            "predicateType": predicate_type,
            "predicate": {"materials": [{
                "name": "registry.example/acme/api",
                "digest": {"sha256": image.hex()},
                "media_type": "application/vnd.oci.image.manifest.v1+json",
                "annotations": {"chainloop.material.type": material_type, "chainloop.material.name": "image"},
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn a_chainloop_attestation_that_lists_the_candidate_as_a_container_image_is_about_it() {
        let key = SigningKey::generate();
        let s = signers(&[("release-key", &key)]);
        let m = accepted(
            signed_att(&key, &chainloop_statement(CHAINLOOP, &candidate(), "CONTAINER_IMAGE")),
            &s,
        );
        assert_eq!(
            (m.kind, m.predicate_type.as_str()),
            (MaterialKind::ChainloopAttestation, CHAINLOOP)
        );
        // Any other statement type keeps the strict subject check; so does a Chainloop listing of
        // another image, or of the candidate's digest as a material that is not an image.
        for (predicate_type, image, material_type) in [
            (SLSA, candidate(), "CONTAINER_IMAGE"),
            (CHAINLOOP, other_image(), "CONTAINER_IMAGE"),
            (CHAINLOOP, candidate(), "ARTIFACT"),
        ] {
            let ev = signed_att(&key, &chainloop_statement(predicate_type, &image, material_type));
            let r = rejected(ev, &s);
            assert_eq!(
                r.reason,
                ReasonCode::SubjectMismatch,
                "{predicate_type} {material_type}: {}",
                r.message
            );
        }
    }

    #[test]
    fn only_a_verified_chainloop_bundle_lends_its_subjects_to_the_subject_check() {
        let bundle_of = |payload: &[u8]| {
            let env = Envelope::sign(dsse::INTOTO_PAYLOAD_TYPE, payload, &SigningKey::generate());
            Bundle {
                media_type: "application/vnd.dev.sigstore.bundle.v0.3+json".into(),
                version: bundle::Version::V03,
                material: bundle::VerificationMaterial::Certificates(vec![]),
                tlog_entries: vec![],
                timestamps: vec![],
                content: bundle::Content::Dsse(env),
            }
        };
        let listed = bundle_of(&chainloop_statement(CHAINLOOP, &candidate(), "CONTAINER_IMAGE"));
        assert_eq!(
            chainloop_subject_digests(&listed, &candidate()),
            vec![ArtifactDigest::sha256(&[7u8; 32])]
        );
        assert!(chainloop_subject_digests(&listed, &other_image()).is_empty());
        let slsa = bundle_of(&chainloop_statement(SLSA, &candidate(), "CONTAINER_IMAGE"));
        assert!(chainloop_subject_digests(&slsa, &candidate()).is_empty());
    }

    // ---- keyless identity: certificate claims ----

    fn claims(list: &[(&str, &str)]) -> Vec<ClaimMatch> {
        list.iter()
            .map(|(claim, pattern)| ClaimMatch {
                claim: claim.to_string(),
                pattern: pattern.to_string(),
                glob: globset::Glob::new(pattern).unwrap().compile_matcher(),
            })
            .collect()
    }

    fn with_claims(mut trust: Trust, list: &[(&str, &str)]) -> Trust {
        for signer in trust.signers.values_mut() {
            if let Signer::Keyless { claims: c, .. } = signer {
                *c = claims(list);
            }
        }
        trust
    }

    /// GitHub's reusable attest workflow signs for `malancas/attest-demo` (vectors README §3).
    fn reusable_workflow() -> (RawEvidence, Digest, Trust) {
        let ev = evidence(
            EvidenceSource::Bundle,
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            vector("cli-gh-attestation/reusable-workflow-attestation.sigstore.json"),
            &[],
        );
        let subject = SubjectMatch::Regex(
            regex::Regex::new(
                r"^https://github\.com/github/artifact-attestations-workflows/\.github/workflows/attest\.yml@.+$",
            )
            .unwrap(),
        );
        let artifact = digest("sha256:49a3aa6075e0f49f82843e74b5baa614ad2a588e6675612bf108a0a008c5ac25");
        (ev, artifact, keyless_trust(&[("attest", GH_ISSUER, subject)]))
    }

    #[test]
    fn keyless_materials_carry_the_certificate_identity_and_github_claims() {
        let (ev, artifact, trust) = reusable_workflow();
        let v = super::verify(&[ev], &artifact, &trust);
        assert!(v.rejections.is_empty(), "{:?}", v.rejections);
        let id = v.materials[0].signer.identity.as_deref().expect("keyless identity");
        assert_eq!(id.issuer.as_deref(), Some(GH_ISSUER));
        assert_eq!(
            id.source_repository_uri.as_deref(),
            Some("https://github.com/malancas/attest-demo")
        );
        assert!(
            id.build_signer_uri
                .as_deref()
                .is_some_and(|b| b.starts_with("https://github.com/github/artifact-attestations-workflows/")),
            "{id:?}"
        );
        let json = serde_json::to_value(&v.materials[0].signer).unwrap();
        assert_eq!(
            json["identity"]["source_repository_uri"],
            "https://github.com/malancas/attest-demo"
        );
    }

    #[test]
    fn claims_bind_the_calling_repository_of_a_reusable_workflow() {
        let (ev, artifact, trust) = reusable_workflow();
        let ok = with_claims(trust.clone(), &[("source_repository", "https://github.com/malancas/*")]);
        let v = super::verify(std::slice::from_ref(&ev), &artifact, &ok);
        assert!(v.rejections.is_empty(), "{:?}", v.rejections);
        let other = with_claims(trust, &[("source_repository", "https://github.com/acme/*")]);
        let v = super::verify(&[ev], &artifact, &other);
        let r = &v.rejections[0];
        assert_eq!(r.reason, ReasonCode::IdentityMismatch, "{}", r.message);
        assert!(
            r.message
                .contains("source_repository `https://github.com/malancas/attest-demo` does not match `https://github.com/acme/*`"),
            "{}",
            r.message
        );
    }

    #[test]
    fn claims_on_a_release_tag_signature_and_a_missing_claim_fails_closed() {
        // sigstore-python's bundle_v3_github: trailofbits/rfc8785.py, release of refs/tags/v0.1.2.
        let ev = evidence(
            EvidenceSource::Bundle,
            "application/vnd.dev.sigstore.bundle+json;version=0.2",
            vector("sigstore-python/bundle_v3_github.whl.sigstore"),
            &[],
        );
        let wheel = digest("sha256:c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201");
        let trust = keyless_trust(&[(
            "rfc8785",
            GH_ISSUER,
            exact("https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"),
        )]);
        let verify_with =
            |list: &[(&str, &str)]| super::verify(std::slice::from_ref(&ev), &wheel, &with_claims(trust.clone(), list));
        let v = verify_with(&[
            ("source_repository", "https://github.com/trailofbits/*"),
            ("source_ref", "refs/tags/*"),
            ("build_trigger", "release"),
            ("source_repository_visibility", "public"),
        ]);
        assert!(v.rejections.is_empty(), "{:?}", v.rejections);
        assert_eq!(
            v.materials[0]
                .signer
                .identity
                .as_deref()
                .and_then(|i| i.source_repository_ref.as_deref()),
            Some("refs/tags/v0.1.2")
        );
        let v = verify_with(&[("source_ref", "refs/heads/*")]);
        assert_eq!(
            v.rejections[0].reason,
            ReasonCode::IdentityMismatch,
            "{}",
            v.rejections[0].message
        );
        // A claim the certificate does not have never matches, even `*`.
        let no_claim = CertificateIdentity {
            source_repository_uri: Some("https://github.com/acme/api".into()),
            ..CertificateIdentity::default()
        };
        assert!(failed_claim(&claims(&[("runner_environment", "*")]), &no_claim).is_some());
        assert!(failed_claim(&claims(&[("source_repository", "*")]), &no_claim).is_none());
    }
}
