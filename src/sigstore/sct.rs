//! Signed certificate timestamps embedded in a Fulcio leaf (RFC 6962 §3.3): each is a CT log's
//! signature over the precertificate (the leaf's TBS without the SCT extension) and the issuer's key
//! hash. A root that lists CT logs expects at least one such SCT to verify.

use sha2::{Digest as _, Sha256};
use x509_cert::der::asn1::OctetString;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use super::crypto::{self, Hash};
use super::trust_root::LogKey;
use super::Error;

const OID_SCT_LIST: &str = "1.3.6.1.4.1.11129.2.4.2";

fn bad(detail: impl Into<String>) -> Error {
    Error::Chain { detail: detail.into() }
}

/// A cursor over TLS-encoded bytes; every read is bounds-checked.
struct Tls<'a>(&'a [u8]);

impl<'a> Tls<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

struct Sct<'a> {
    log_id: &'a [u8],
    timestamp: &'a [u8],
    extensions: &'a [u8],
    hash: u8,
    signature: &'a [u8],
}

fn parse_list(bytes: &[u8]) -> Option<Vec<Sct<'_>>> {
    let mut outer = Tls(bytes);
    let mut list = Tls(outer.vec16()?);
    let mut out = Vec::new();
    while !list.0.is_empty() {
        let mut s = Tls(list.vec16()?);
        if s.u8()? != 0 {
            continue; // only v1 SCTs exist
        }
        let log_id = s.take(32)?;
        let timestamp = s.take(8)?;
        let extensions = s.vec16()?;
        let hash = s.u8()?;
        let _sig_alg = s.u8()?;
        let signature = s.vec16()?;
        out.push(Sct {
            log_id,
            timestamp,
            extensions,
            hash,
            signature,
        });
    }
    Some(out)
}

/// Requires one embedded SCT of `leaf` (issued by `issuer`) to verify with one of `ctlogs`.
pub fn verify_embedded(leaf: &Certificate, issuer: &Certificate, ctlogs: &[LogKey]) -> Result<(), Error> {
    let exts = leaf.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
    let ext = exts
        .iter()
        .find(|e| e.extn_id.to_string() == OID_SCT_LIST)
        .ok_or_else(|| bad("the certificate has no embedded SCT, and the trusted root lists CT logs"))?;
    let list = OctetString::from_der(ext.extn_value.as_bytes()).map_err(|e| bad(format!("malformed SCT list: {e}")))?;
    let scts = parse_list(list.as_bytes()).ok_or_else(|| bad("malformed SCT list"))?;

    let mut precert = leaf.tbs_certificate.clone();
    precert.extensions = Some(
        exts.iter()
            .filter(|e| e.extn_id.to_string() != OID_SCT_LIST)
            .cloned()
            .collect(),
    );
    let tbs = precert.to_der().map_err(|e| bad(format!("precertificate: {e}")))?;
    let issuer_spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| bad(format!("issuer key: {e}")))?;
    let issuer_key_hash = Sha256::digest(&issuer_spki);

    for sct in &scts {
        let Some(log) = ctlogs.iter().find(|l| l.log_id == sct.log_id) else {
            continue;
        };
        let hash = match sct.hash {
            4 => Hash::Sha256,
            5 => Hash::Sha384,
            6 => Hash::Sha512,
            _ => continue,
        };
        let mut signed = vec![0u8, 0u8];
        signed.extend_from_slice(sct.timestamp);
        signed.extend_from_slice(&[0, 1]);
        signed.extend_from_slice(&issuer_key_hash);
        let n = tbs.len();
        signed.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&(sct.extensions.len() as u16).to_be_bytes());
        signed.extend_from_slice(sct.extensions);
        let millis = u64::from_be_bytes(sct.timestamp.try_into().unwrap_or([0; 8]));
        let at = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
        if crypto::verify_message(&log.key, hash, &signed, sct.signature) && log.valid_for.contains(at) {
            return Ok(());
        }
    }
    Err(bad(format!(
        "none of its {} embedded SCTs verifies with a CT log of the trusted root",
        scts.len()
    )))
}
