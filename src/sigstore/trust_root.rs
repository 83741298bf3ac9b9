//! A pinned Sigstore `trusted_root.json` (protobuf JSON, `dev.sigstore.trustroot.v1.TrustedRoot`) parsed
//! once into keys and certificates. Absent fields are proto3 defaults: GitHub's root has no `tlogs`
//! or `ctlogs` at all. The JSONL form `gh attestation trusted-root` prints (one root a line) is the
//! union of its lines.

use serde::Deserialize;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use super::crypto::key_from_spki;
use crate::keys::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum TrustRootError {
    #[error("not a Sigstore trusted root: {0}")]
    Json(String),
    #[error("{what} `{name}`: {detail}")]
    Entry {
        what: &'static str,
        name: String,
        detail: String,
    },
}

/// A closed time interval in Unix seconds (`TimeRange`: both ends inclusive). A missing `start` is
/// kept as `None` and such an interval contains nothing: a key with no start of validity is a broken
/// root, not an unbounded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Validity {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl Validity {
    pub fn contains(&self, t: i64) -> bool {
        matches!(self.start, Some(s) if s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log (Rekor) or certificate transparency log key.
#[derive(Debug, Clone)]
pub struct LogKey {
    pub base_url: String,
    pub log_id: Vec<u8>,
    pub spki_der: Vec<u8>,
    pub key: PublicKey,
    pub valid_for: Validity,
}

impl LogKey {
    /// The host of `baseUrl`: the name a Rekor checkpoint is signed under.
    pub fn origin_host(&self) -> &str {
        let s = self.base_url.split("://").nth(1).unwrap_or(&self.base_url);
        s.split('/').next().unwrap_or(s)
    }
}

/// A Fulcio CA or a timestamp authority: its chain, leaf (or intermediate) first, root last.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    pub uri: String,
    /// Whether the root this CA came from (a JSONL line) lists transparency logs: if it does, its
    /// certificates count only with a log entry; GitHub's private-repo domain has none.
    pub expects_tlog: bool,
    /// Likewise for certificate transparency: a domain that lists CT logs expects an SCT.
    pub expects_sct: bool,
    pub chain: Vec<Certificate>,
    pub valid_for: Validity,
}

#[derive(Debug, Clone, Default)]
pub struct TrustedRoot {
    pub tlogs: Vec<LogKey>,
    pub ctlogs: Vec<LogKey>,
    pub certificate_authorities: Vec<CertificateAuthority>,
    pub timestamp_authorities: Vec<CertificateAuthority>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawRoot {
    tlogs: Vec<RawLog>,
    ctlogs: Vec<RawLog>,
    certificate_authorities: Vec<RawCa>,
    timestamp_authorities: Vec<RawCa>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawLog {
    base_url: String,
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawKey {
    raw_bytes: String,
    valid_for: Option<RawRange>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawRange {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawCa {
    uri: String,
    cert_chain: RawChain,
    valid_for: Option<RawRange>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

impl TrustedRoot {
    /// Parses a `trusted_root.json`, or JSONL with one root a line (all of them are trusted).
    pub fn parse(text: &str) -> Result<TrustedRoot, TrustRootError> {
        let one = |t: &str| -> Result<RawRoot, serde_json::Error> {
            let mut v: serde_json::Value = serde_json::from_str(t)?;
            super::bundle::strip_nulls(&mut v);
            serde_json::from_value(v)
        };
        let raws: Vec<RawRoot> = match one(text) {
            Ok(one) => vec![one],
            Err(whole) => {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                if lines.len() < 2 {
                    return Err(TrustRootError::Json(whole.to_string()));
                }
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| one(l).map_err(|e| TrustRootError::Json(format!("line {}: {e}", i + 1))))
                    .collect::<Result<_, _>>()?
            }
        };
        let mut root = TrustedRoot::default();
        for raw in raws {
            let expects_tlog = !raw.tlogs.is_empty();
            let expects_sct = !raw.ctlogs.is_empty();
            for l in raw.tlogs {
                root.tlogs.push(log_key(l, "tlog")?);
            }
            // SCTs are not checked yet, so a CT log key of an unsupported kind must not void the root.
            root.ctlogs
                .extend(raw.ctlogs.into_iter().filter_map(|l| log_key(l, "ctlog").ok()));
            for ca in raw.certificate_authorities {
                let mut ca = authority(ca, "certificate authority")?;
                ca.expects_tlog = expects_tlog;
                ca.expects_sct = expects_sct;
                root.certificate_authorities.push(ca);
            }
            for ca in raw.timestamp_authorities {
                root.timestamp_authorities.push(authority(ca, "timestamp authority")?);
            }
        }
        Ok(root)
    }

    pub fn tlog(&self, log_id: &[u8]) -> Option<&LogKey> {
        self.tlogs.iter().find(|l| l.log_id == log_id)
    }
}

fn log_key(raw: RawLog, what: &'static str) -> Result<LogKey, TrustRootError> {
    let err = |detail: String| TrustRootError::Entry {
        what,
        name: raw.base_url.clone(),
        detail,
    };
    let spki_der =
        super::b64(&raw.public_key.raw_bytes).ok_or_else(|| err("publicKey.rawBytes is not base64".into()))?;
    let key = key_from_spki(&spki_der).ok_or_else(|| {
        err("publicKey.rawBytes is not a supported DER public key (ECDSA P-256/P-384, Ed25519, RSA)".into())
    })?;
    let log_id = super::b64(&raw.log_id.key_id).ok_or_else(|| err("logId.keyId is not base64".into()))?;
    if log_id.is_empty() {
        return Err(err("logId.keyId is empty".into()));
    }
    let valid_for = validity(raw.public_key.valid_for.as_ref()).map_err(err)?;
    Ok(LogKey {
        base_url: raw.base_url,
        log_id,
        spki_der,
        key,
        valid_for,
    })
}

fn authority(raw: RawCa, what: &'static str) -> Result<CertificateAuthority, TrustRootError> {
    let err = |detail: String| TrustRootError::Entry {
        what,
        name: raw.uri.clone(),
        detail,
    };
    let mut chain = Vec::new();
    for (i, c) in raw.cert_chain.certificates.iter().enumerate() {
        let der = super::b64(&c.raw_bytes).ok_or_else(|| err(format!("certificate {i} is not base64")))?;
        let cert = Certificate::from_der(&der).map_err(|e| err(format!("certificate {i} is not DER X.509: {e}")))?;
        // Re-encoding must give the same bytes, or signatures over the TBS would be checked over other bytes.
        if cert.to_der().ok().as_deref() != Some(der.as_slice()) {
            return Err(err(format!("certificate {i} is not in canonical DER")));
        }
        chain.push(cert);
    }
    if chain.is_empty() {
        return Err(err("certChain has no certificates".into()));
    }
    let valid_for = validity(raw.valid_for.as_ref()).map_err(err)?;
    Ok(CertificateAuthority {
        expects_tlog: true,
        expects_sct: true,
        uri: raw.uri,
        chain,
        valid_for,
    })
}

fn validity(raw: Option<&RawRange>) -> Result<Validity, String> {
    let Some(raw) = raw else {
        return Ok(Validity::default());
    };
    let parse = |s: &Option<String>| -> Result<Option<i64>, String> {
        s.as_deref()
            .map(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                    .map(|t| t.unix_timestamp())
                    .map_err(|e| format!("validFor time `{s}` is not RFC 3339: {e}"))
            })
            .transpose()
    };
    Ok(Validity {
        start: parse(&raw.start)?,
        end: parse(&raw.end)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC_GOOD: &str = include_str!("../../tests/vectors/trust/sigstore-public-good.trusted_root.json");
    const JSONL: &str = include_str!("../../tests/vectors/trust/gh-attestation-trusted-root.jsonl");
    const GITHUB: &str = include_str!("../../tests/vectors/trust/github.trusted_root.derived.json");

    #[test]
    fn parses_the_public_good_root() {
        let root = TrustedRoot::parse(PUBLIC_GOOD).unwrap();
        assert_eq!(root.tlogs.len(), 2);
        assert_eq!(hex::encode(&root.tlogs[0].log_id[..4]), "c0d23d6a");
        assert_eq!(root.tlogs[0].key.algorithm(), "ecdsa-p256");
        assert_eq!(root.tlogs[1].key.algorithm(), "ed25519");
        assert_eq!(root.certificate_authorities.len(), 2);
        assert_eq!(root.ctlogs.len(), 2);
        assert_eq!(root.timestamp_authorities.len(), 1);
        assert_eq!(root.tlogs[0].origin_host(), "rekor.sigstore.dev");
    }

    #[test]
    fn jsonl_is_the_union_and_missing_sections_are_empty() {
        let github = TrustedRoot::parse(GITHUB).unwrap();
        assert!(github.tlogs.is_empty() && github.ctlogs.is_empty());
        assert_eq!(github.certificate_authorities.len(), 5);
        let both = TrustedRoot::parse(JSONL).unwrap();
        assert_eq!(both.certificate_authorities.len(), 7);
        assert_eq!(both.tlogs.len(), 2);
    }

    #[test]
    fn broken_roots_are_errors_that_say_where() {
        assert!(TrustedRoot::parse("not json").is_err());
        let bad = PUBLIC_GOOD.replacen("\"rawBytes\": \"", "\"rawBytes\": \"@@", 1);
        let e = TrustedRoot::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("base64"), "{e}");
        assert!(!Validity { start: None, end: None }.contains(0));
        let v = Validity {
            start: Some(1),
            end: Some(5),
        };
        assert!(v.contains(1) && v.contains(5) && !v.contains(6) && !v.contains(0));
    }
}
