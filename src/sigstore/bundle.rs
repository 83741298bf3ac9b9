//! Sigstore bundles v0.1, v0.2 and v0.3 (`dev.sigstore.bundle.v1.Bundle`, protobuf JSON) parsed into
//! decoded bytes. Absent fields are proto3 defaults (a one-leaf tree has no `hashes`); numbers arrive as
//! strings in bundles and as numbers elsewhere, so both are read. What the format requires of each
//! version is checked here; what the bytes mean is checked in [`super::verify`].

use serde::{Deserialize, Deserializer};

use super::{b64, Error};
use crate::dsse::Envelope;

/// The versions of the bundle format, from the media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V01,
    V02,
    V03,
}

impl Version {
    pub fn from_media_type(media_type: &str) -> Option<Version> {
        match media_type {
            "application/vnd.dev.sigstore.bundle+json;version=0.1" => Some(Version::V01),
            "application/vnd.dev.sigstore.bundle+json;version=0.2" => Some(Version::V02),
            "application/vnd.dev.sigstore.bundle+json;version=0.3"
            | "application/vnd.dev.sigstore.bundle.v0.3+json" => Some(Version::V03),
            _ => None,
        }
    }
}

/// Who the bundle says signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerificationMaterial {
    /// DER certificates, leaf first (`certificate`, or `x509CertificateChain`).
    Certificates(Vec<Vec<u8>>),
    /// A key known out of band; the hint is unauthenticated and only shown.
    PublicKey { hint: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dsse(Envelope),
    MessageSignature {
        /// Protobuf `HashAlgorithm` name (`SHA2_256`).
        algorithm: String,
        /// An unauthenticated hint of the artifact digest.
        digest: Vec<u8>,
        signature: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub log_index: u64,
    pub root_hash: Vec<u8>,
    pub tree_size: u64,
    pub hashes: Vec<Vec<u8>>,
    /// The signed note, if any.
    pub checkpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogEntry {
    pub log_index: u64,
    pub log_id: Vec<u8>,
    pub kind: String,
    pub version: String,
    /// 0 when absent (Rekor v2 entries have none).
    pub integrated_time: i64,
    pub signed_entry_timestamp: Option<Vec<u8>>,
    pub inclusion_proof: Option<InclusionProof>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub media_type: String,
    pub version: Version,
    pub material: VerificationMaterial,
    pub tlog_entries: Vec<TlogEntry>,
    /// DER RFC 3161 `TimeStampToken`s.
    pub timestamps: Vec<Vec<u8>>,
    pub content: Content,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: Option<RawMaterial>,
    dsse_envelope: Option<RawEnvelope>,
    message_signature: Option<RawMessageSignature>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMaterial {
    certificate: Option<RawCert>,
    x509_certificate_chain: Option<RawChain>,
    public_key: Option<RawHint>,
    tlog_entries: Vec<RawTlogEntry>,
    timestamp_verification_data: RawTimestampData,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawHint {
    hint: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawTimestampData {
    rfc3161_timestamps: Vec<RawSignedTimestamp>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawSignedTimestamp {
    signed_timestamp: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawTlogEntry {
    #[serde(deserialize_with = "de_u64")]
    log_index: u64,
    log_id: RawLogId,
    kind_version: RawKindVersion,
    #[serde(deserialize_with = "de_i64")]
    integrated_time: i64,
    inclusion_promise: Option<RawPromise>,
    inclusion_proof: Option<RawProof>,
    canonicalized_body: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawPromise {
    signed_entry_timestamp: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawProof {
    #[serde(deserialize_with = "de_u64")]
    log_index: u64,
    root_hash: String,
    #[serde(deserialize_with = "de_u64")]
    tree_size: u64,
    hashes: Vec<String>,
    checkpoint: Option<RawCheckpoint>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCheckpoint {
    envelope: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawDsseSig>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawDsseSig {
    sig: String,
    keyid: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawMessageSignature {
    message_digest: Option<RawDigest>,
    signature: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawDigest {
    algorithm: String,
    digest: String,
}

/// An int64/uint64 as protobuf JSON writes it (a string) or as cosign writes it (a number).
#[derive(Deserialize)]
#[serde(untagged)]
enum Num {
    S(String),
    U(u64),
    I(i64),
}

pub(crate) fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Num::deserialize(d)? {
        Num::S(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a non-negative integer"))),
        Num::U(u) => Ok(u),
        Num::I(i) => Err(serde::de::Error::custom(format!("{i} is negative"))),
    }
}

pub(crate) fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Num::deserialize(d)? {
        Num::S(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not an integer"))),
        Num::U(u) => i64::try_from(u).map_err(serde::de::Error::custom),
        Num::I(i) => Ok(i),
    }
}

/// Protobuf JSON writers may emit `null` for unset fields: it means the default, as absence does.
pub(crate) fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn decode(what: &'static str, s: &str) -> Result<Vec<u8>, Error> {
    b64(s).ok_or_else(|| Error::malformed(what, "not valid base64"))
}

impl Bundle {
    pub fn parse(bytes: &[u8]) -> Result<Bundle, Error> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::malformed("bundle JSON", e))?;
        strip_nulls(&mut value);
        let raw: RawBundle = serde_json::from_value(value).map_err(|e| Error::malformed("bundle JSON", e))?;
        let version = Version::from_media_type(&raw.media_type).ok_or_else(|| Error::UnsupportedMediaType {
            media_type: raw.media_type.clone(),
        })?;
        let m = raw
            .verification_material
            .ok_or_else(|| Error::malformed("verificationMaterial", "missing"))?;

        let material = match (m.certificate, m.x509_certificate_chain, m.public_key) {
            (Some(c), None, None) => VerificationMaterial::Certificates(vec![decode("certificate", &c.raw_bytes)?]),
            (None, Some(chain), None) => {
                let certs = chain
                    .certificates
                    .iter()
                    .map(|c| decode("x509CertificateChain certificate", &c.raw_bytes))
                    .collect::<Result<Vec<_>, _>>()?;
                if certs.is_empty() || certs[0].is_empty() {
                    return Err(Error::malformed("x509CertificateChain", "no certificates"));
                }
                VerificationMaterial::Certificates(certs)
            }
            (None, None, Some(k)) => VerificationMaterial::PublicKey { hint: k.hint },
            (None, None, None) => {
                return Err(Error::malformed(
                    "verificationMaterial",
                    "no certificate, certificate chain or public key",
                ))
            }
            _ => {
                return Err(Error::malformed(
                    "verificationMaterial",
                    "more than one of certificate, x509CertificateChain, publicKey",
                ))
            }
        };
        if let VerificationMaterial::Certificates(c) = &material {
            if c.iter().any(|c| c.is_empty()) {
                return Err(Error::malformed("certificate", "empty"));
            }
        }

        let mut tlog_entries = Vec::new();
        for e in m.tlog_entries {
            let entry = TlogEntry {
                log_index: e.log_index,
                log_id: decode("tlog logId", &e.log_id.key_id)?,
                kind: e.kind_version.kind,
                version: e.kind_version.version,
                integrated_time: e.integrated_time,
                signed_entry_timestamp: e
                    .inclusion_promise
                    .map(|p| decode("signedEntryTimestamp", &p.signed_entry_timestamp))
                    .transpose()?,
                inclusion_proof: e
                    .inclusion_proof
                    .map(|p| -> Result<InclusionProof, Error> {
                        Ok(InclusionProof {
                            log_index: p.log_index,
                            root_hash: decode("inclusionProof rootHash", &p.root_hash)?,
                            tree_size: p.tree_size,
                            hashes: p
                                .hashes
                                .iter()
                                .map(|h| decode("inclusionProof hash", h))
                                .collect::<Result<_, _>>()?,
                            checkpoint: p.checkpoint.map(|c| c.envelope).filter(|c| !c.is_empty()),
                        })
                    })
                    .transpose()?,
                body: decode("canonicalizedBody", &e.canonicalized_body)?,
            };
            if entry.body.is_empty() {
                return Err(Error::malformed("tlog entry", "no canonicalizedBody"));
            }
            if version == Version::V01 && entry.signed_entry_timestamp.is_none() {
                return Err(Error::malformed(
                    "tlog entry",
                    "a v0.1 bundle needs an inclusion promise (signed entry timestamp)",
                ));
            }
            if version >= Version::V02 && entry.inclusion_proof.is_none() {
                return Err(Error::malformed(
                    "tlog entry",
                    "a v0.2 or later bundle needs an inclusion proof",
                ));
            }
            tlog_entries.push(entry);
        }
        let timestamps = m
            .timestamp_verification_data
            .rfc3161_timestamps
            .iter()
            .map(|t| decode("rfc3161 signedTimestamp", &t.signed_timestamp))
            .collect::<Result<Vec<_>, _>>()?;

        let content = match (raw.dsse_envelope, raw.message_signature) {
            (Some(env), None) => {
                if env.signatures.len() != 1 {
                    return Err(Error::malformed(
                        "dsseEnvelope",
                        format!(
                            "{} signatures; a bundle's envelope has exactly one",
                            env.signatures.len()
                        ),
                    ));
                }
                // Decoded here so that a bad encoding is a parse error, not a failed signature.
                decode("dsseEnvelope payload", &env.payload)?;
                decode("dsseEnvelope signature", &env.signatures[0].sig)?;
                Content::Dsse(Envelope {
                    payload: env.payload,
                    payload_type: env.payload_type,
                    signatures: env
                        .signatures
                        .into_iter()
                        .map(|s| crate::dsse::Signature {
                            keyid: s.keyid,
                            sig: s.sig,
                        })
                        .collect(),
                })
            }
            (None, Some(ms)) => {
                let d = ms.message_digest.unwrap_or_default();
                Content::MessageSignature {
                    algorithm: d.algorithm,
                    digest: decode("messageDigest digest", &d.digest)?,
                    signature: decode("messageSignature signature", &ms.signature)?,
                }
            }
            (None, None) => return Err(Error::malformed("bundle", "neither dsseEnvelope nor messageSignature")),
            (Some(_), Some(_)) => return Err(Error::malformed("bundle", "both dsseEnvelope and messageSignature")),
        };
        if let Content::MessageSignature { signature, .. } = &content {
            if signature.is_empty() {
                return Err(Error::malformed("messageSignature", "empty signature"));
            }
        }
        Ok(Bundle {
            media_type: raw.media_type,
            version,
            material,
            tlog_entries,
            timestamps,
            content,
        })
    }

    /// The signature bytes: what the log entry and a timestamp are bound to.
    pub fn signature(&self) -> Vec<u8> {
        match &self.content {
            Content::MessageSignature { signature, .. } => signature.clone(),
            Content::Dsse(env) => env.signatures.first().and_then(|s| b64(&s.sig)).unwrap_or_default(),
        }
    }
}
