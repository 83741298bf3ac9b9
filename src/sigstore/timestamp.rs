//! RFC 3161 timestamps (a CMS SignedData over a TSTInfo) checked against the timestamp authorities of
//! the trusted root: the imprint must be the hash of the bundle's signature, the CMS signature must
//! verify with the authority's leaf key, and the time must lie within that authority's `validFor` and
//! its leaf certificate's validity. Certificates embedded in the token are never trusted.

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use x509_cert::der::asn1::OctetString;
use x509_cert::der::{Decode, Encode};
use x509_tsp::{TimeStampResp, TstInfo};

use super::cert::{cert_key, signed_by};
use super::crypto::{self, Hash};
use super::trust_root::CertificateAuthority;
use super::{format_time, Error};

const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";

fn bad(detail: impl Into<String>) -> Error {
    Error::Timestamp { detail: detail.into() }
}

/// Verifies a DER `TimeStampToken` over `signature`; returns its time in Unix seconds.
pub fn verify(token: &[u8], signature: &[u8], tsas: &[CertificateAuthority]) -> Result<i64, Error> {
    // Bundles carry the whole TimeStampResp; accept a bare TimeStampToken too.
    let ci = match ContentInfo::from_der(token) {
        Ok(ci) => ci,
        Err(_) => {
            let resp = TimeStampResp::from_der(token).map_err(|e| bad(format!("not an RFC 3161 response: {e}")))?;
            resp.time_stamp_token.ok_or_else(|| bad("the response has no token"))?
        }
    };
    if ci.content_type.to_string() != OID_SIGNED_DATA {
        return Err(bad("not CMS SignedData"));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(|e| bad(format!("bad SignedData: {e}")))?;
    if sd.encap_content_info.econtent_type.to_string() != OID_TST_INFO {
        return Err(bad("the signed content is not a TSTInfo"));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| bad("no TSTInfo content"))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(|e| bad(format!("bad eContent: {e}")))?
        .as_bytes()
        .to_vec();
    let tst = TstInfo::from_der(&tst_der).map_err(|e| bad(format!("bad TSTInfo: {e}")))?;
    let imprint_hash = Hash::from_oid(&tst.message_imprint.hash_algorithm.oid)
        .ok_or_else(|| bad("unsupported message imprint hash"))?;
    if tst.message_imprint.hashed_message.as_bytes() != imprint_hash.digest(signature).as_slice() {
        return Err(bad("its message imprint is not the hash of the bundle's signature"));
    }
    let gen_time = tst.gen_time.to_unix_duration().as_secs() as i64;

    let signers: Vec<_> = sd.signer_infos.0.iter().collect();
    let [si] = signers.as_slice() else {
        return Err(bad(format!("{} signer infos; expected one", signers.len())));
    };
    let digest_hash = Hash::from_oid(&si.digest_alg.oid).ok_or_else(|| bad("unsupported signer digest algorithm"))?;
    let attrs = si.signed_attrs.as_ref().ok_or_else(|| bad("no signed attributes"))?;
    let attr = |oid: &str| attrs.iter().find(|a| a.oid.to_string() == oid);
    let md = attr(OID_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or_else(|| bad("no messageDigest attribute"))?;
    if md.as_bytes() != digest_hash.digest(&tst_der).as_slice() {
        return Err(bad("the messageDigest attribute is not the hash of the TSTInfo"));
    }
    let ct_ok = attr(OID_CONTENT_TYPE)
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.decode_as::<x509_cert::der::oid::ObjectIdentifier>().ok())
        .is_some_and(|o| o.to_string() == OID_TST_INFO);
    if !ct_ok {
        return Err(bad("the contentType attribute is not TSTInfo"));
    }
    // The signature covers the DER of the attributes as a SET OF (RFC 5652 §5.4).
    let signed = attrs.to_der().map_err(|e| bad(format!("signed attributes: {e}")))?;
    let sig = si.signature.as_bytes();

    let mut why = Vec::new();
    for tsa in tsas {
        let Some(leaf) = tsa.chain.first() else { continue };
        let Ok(key) = cert_key(leaf) else { continue };
        let hash = crypto::signature_hash(&si.signature_algorithm.oid).unwrap_or(digest_hash);
        if !crypto::verify_message(&key, hash, &signed, sig) {
            continue;
        }
        if !tsa.valid_for.contains(gen_time) {
            why.push(format!(
                "{} is outside the validity of TSA `{}` in the trusted root",
                format_time(gen_time),
                tsa.uri
            ));
            continue;
        }
        let v = &leaf.tbs_certificate.validity;
        let (nb, na) = (
            v.not_before.to_unix_duration().as_secs() as i64,
            v.not_after.to_unix_duration().as_secs() as i64,
        );
        if !(nb <= gen_time && gen_time <= na) {
            why.push(format!(
                "{} is outside the TSA certificate's validity ({} to {})",
                format_time(gen_time),
                format_time(nb),
                format_time(na)
            ));
            continue;
        }
        if !tsa.chain.windows(2).all(|w| signed_by(&w[0], &w[1])) {
            why.push(format!("the chain of TSA `{}` does not link", tsa.uri));
            continue;
        }
        return Ok(gen_time);
    }
    Err(bad(if why.is_empty() {
        "it is signed by no timestamp authority of the trusted root".to_string()
    } else {
        why.join("; ")
    }))
}
