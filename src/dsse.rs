//! DSSE envelopes (secure-systems-lab/dsse `protocol.md`) and in-toto statements (v0.1 and v1).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::image::Digest;
use crate::keys::SigningKey;

pub const MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
pub const STATEMENT_V01: &str = "https://in-toto.io/Statement/v0.1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    pub sig: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DsseError {
    #[error("the DSSE envelope is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("the DSSE {field} is not valid base64")]
    BadBase64 { field: &'static str },
    #[error("the DSSE envelope has no signatures")]
    NoSignatures,
}

/// Standard or URL-safe base64, padded or not, as the DSSE protocol allows.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let s = s.trim();
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| STANDARD_NO_PAD.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s))
        .ok()
}

pub fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The pre-authentication encoding that DSSE signs: `DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    pub fn parse(bytes: &[u8]) -> Result<Self, DsseError> {
        let env: Envelope = serde_json::from_slice(bytes).map_err(|e| DsseError::Malformed(e.to_string()))?;
        if env.signatures.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        Ok(env)
    }

    pub fn payload_bytes(&self) -> Result<Vec<u8>, DsseError> {
        decode_b64(&self.payload).ok_or(DsseError::BadBase64 { field: "payload" })
    }

    /// Signs `payload` with `key` into a one-signature envelope.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        let sig = key.sign(&pae(payload_type, payload));
        Envelope {
            payload: encode_b64(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![Signature {
                keyid: None,
                sig: encode_b64(&sig),
            }],
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An in-toto statement, v1 or v0.1 (`predicateType`, `subject[].digest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub digest: std::collections::BTreeMap<String, String>,
}

impl Statement {
    pub fn new(subject_name: &str, digest: &Digest, predicate_type: &str, predicate: serde_json::Value) -> Self {
        Statement {
            type_: STATEMENT_V1.to_string(),
            subject: vec![Subject {
                name: subject_name.to_string(),
                digest: [("sha256".to_string(), digest.hex().to_string())].into(),
            }],
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }

    /// True if one of the subjects is `digest` (subjects match by digest only).
    pub fn has_subject(&self, digest: &Digest) -> bool {
        self.subject.iter().any(|s| {
            s.digest
                .get("sha256")
                .is_some_and(|h| h.eq_ignore_ascii_case(digest.hex()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_protocol_test_vector() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn accepts_url_safe_and_unpadded_base64() {
        assert_eq!(decode_b64("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_b64("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert!(decode_b64("not base64!").is_none());
    }

    #[test]
    fn signed_envelope_verifies_over_pae() {
        let key = SigningKey::generate();
        let env = Envelope::sign(INTOTO_PAYLOAD_TYPE, b"{}", &key);
        let parsed = Envelope::parse(&env.to_json()).unwrap();
        let sig = decode_b64(&parsed.signatures[0].sig).unwrap();
        assert!(key
            .public_key()
            .verify(&pae(&parsed.payload_type, &parsed.payload_bytes().unwrap()), &sig));
        assert_eq!(
            Envelope::parse(br#"{"payload":"","payloadType":"x","signatures":[]}"#),
            Err(DsseError::NoSignatures)
        );
    }
}
