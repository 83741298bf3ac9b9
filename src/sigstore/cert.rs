//! X.509 for Sigstore: a leaf certificate chained to a certificate authority of the trusted root (every
//! signature checked here, at the signing time, never "now"), and the Fulcio identity it carries:
//! SAN subject, OIDC issuer, and the GitHub workflow claims (OIDs 1.3.6.1.4.1.57264.1.*).

use x509_cert::der::asn1::{Ia5String, OctetString, Utf8StringRef};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::crypto::{self, key_from_spki};
use super::trust_root::CertificateAuthority;
use super::{format_time, Error};
use crate::keys::PublicKey;

const OID_SAN: &str = "2.5.29.17";
const OID_EKU: &str = "2.5.29.37";
const OID_BASIC_CONSTRAINTS: &str = "2.5.29.19";
const OID_CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";
const FULCIO: &str = "1.3.6.1.4.1.57264.1.";

/// The GitHub workflow claims Fulcio records (OIDs `1.3.6.1.4.1.57264.1.9` to `.22`), for policy rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GithubClaims {
    pub build_signer_uri: Option<String>,
    pub build_signer_digest: Option<String>,
    pub runner_environment: Option<String>,
    pub source_repository_uri: Option<String>,
    pub source_repository_digest: Option<String>,
    pub source_repository_ref: Option<String>,
    pub source_repository_identifier: Option<String>,
    pub source_repository_owner_uri: Option<String>,
    pub source_repository_owner_identifier: Option<String>,
    pub build_config_uri: Option<String>,
    pub build_config_digest: Option<String>,
    pub build_trigger: Option<String>,
    pub run_invocation_uri: Option<String>,
    pub source_repository_visibility: Option<String>,
}

/// Who a Fulcio certificate says signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The SAN: a URI (workflow, SPIFFE) or an email address.
    pub subject: Option<String>,
    /// The OIDC issuer (`…57264.1.8`, or the legacy `…57264.1.1`). GitHub release certificates have none.
    pub issuer: Option<String>,
    pub github: GithubClaims,
}

/// A parsed leaf certificate with the pieces verification needs.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: Certificate,
    pub der: Vec<u8>,
    pub key: PublicKey,
    pub not_before: i64,
    pub not_after: i64,
}

impl Leaf {
    pub fn parse(der: &[u8]) -> Result<Leaf, Error> {
        let cert = Certificate::from_der(der).map_err(|e| Error::malformed("certificate", e))?;
        let key = cert_key(&cert)?;
        let v = &cert.tbs_certificate.validity;
        Ok(Leaf {
            not_before: v.not_before.to_unix_duration().as_secs() as i64,
            not_after: v.not_after.to_unix_duration().as_secs() as i64,
            cert,
            der: der.to_vec(),
            key,
        })
    }

    pub fn check_time(&self, t: i64) -> Result<(), Error> {
        if self.not_before <= t && t <= self.not_after {
            Ok(())
        } else {
            Err(Error::OutsideValidity {
                what: "the signing certificate's",
                signed_at: format_time(t),
                not_before: format_time(self.not_before),
                not_after: format_time(self.not_after),
            })
        }
    }

    /// A code-signing leaf: EKU codeSigning, and not a CA.
    pub fn check_usage(&self) -> Result<(), Error> {
        let eku = extension(&self.cert, OID_EKU).ok_or_else(|| Error::CertificateUsage {
            detail: "no extended key usage".into(),
        })?;
        let eku = ExtendedKeyUsage::from_der(eku).map_err(|e| Error::malformed("extended key usage", e))?;
        if !eku.0.iter().any(|o| o.to_string() == OID_CODE_SIGNING) {
            return Err(Error::CertificateUsage {
                detail: "extended key usage lacks codeSigning".into(),
            });
        }
        if let Some(bc) = extension(&self.cert, OID_BASIC_CONSTRAINTS) {
            if BasicConstraints::from_der(bc).is_ok_and(|b| b.ca) {
                return Err(Error::CertificateUsage {
                    detail: "it is a CA certificate".into(),
                });
            }
        }
        Ok(())
    }

    pub fn identity(&self) -> Identity {
        let mut id = Identity {
            subject: san(&self.cert),
            ..Identity::default()
        };
        let exts = self.cert.tbs_certificate.extensions.as_deref().unwrap_or(&[]);
        let mut legacy_issuer = None;
        for ext in exts {
            let oid = ext.extn_id.to_string();
            let Some(n) = oid.strip_prefix(FULCIO).and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let raw = ext.extn_value.as_bytes();
            if n == 1 {
                legacy_issuer = std::str::from_utf8(raw).ok().map(str::to_string);
                continue;
            }
            // From .8 on, values are DER UTF8Strings (the legacy .1–.6 were raw bytes).
            let Some(v) = Utf8StringRef::from_der(raw).ok().map(|s| s.as_str().to_string()) else {
                continue;
            };
            let g = &mut id.github;
            match n {
                8 => id.issuer = Some(v),
                9 => g.build_signer_uri = Some(v),
                10 => g.build_signer_digest = Some(v),
                11 => g.runner_environment = Some(v),
                12 => g.source_repository_uri = Some(v),
                13 => g.source_repository_digest = Some(v),
                14 => g.source_repository_ref = Some(v),
                15 => g.source_repository_identifier = Some(v),
                16 => g.source_repository_owner_uri = Some(v),
                17 => g.source_repository_owner_identifier = Some(v),
                18 => g.build_config_uri = Some(v),
                19 => g.build_config_digest = Some(v),
                20 => g.build_trigger = Some(v),
                21 => g.run_invocation_uri = Some(v),
                22 => g.source_repository_visibility = Some(v),
                _ => {}
            }
        }
        if id.issuer.is_none() {
            id.issuer = legacy_issuer;
        }
        id
    }
}

fn extension<'a>(cert: &'a Certificate, oid: &str) -> Option<&'a [u8]> {
    cert.tbs_certificate
        .extensions
        .as_deref()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
        .map(|e| e.extn_value.as_bytes())
}

fn san(cert: &Certificate) -> Option<String> {
    let san = SubjectAltName::from_der(extension(cert, OID_SAN)?).ok()?;
    san.0.iter().find_map(|n| match n {
        GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
        GeneralName::Rfc822Name(e) => Some(e.to_string()),
        GeneralName::OtherName(o) => o
            .value
            .decode_as::<x509_cert::der::asn1::Utf8StringRef>()
            .ok()
            .map(|s| s.as_str().to_string())
            .or_else(|| o.value.decode_as::<Ia5String>().ok().map(|s| s.to_string())),
        _ => None,
    })
}

/// The public key of a certificate.
pub fn cert_key(cert: &Certificate) -> Result<PublicKey, Error> {
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| Error::malformed("certificate public key", e))?;
    key_from_spki(&spki).ok_or_else(|| Error::Unsupported {
        what: "certificate key algorithm (expected ECDSA P-256/P-384, Ed25519 or RSA)".into(),
    })
}

/// True if `child` was signed by `parent` (names and signature).
pub fn signed_by(child: &Certificate, parent: &Certificate) -> bool {
    if child.tbs_certificate.issuer != parent.tbs_certificate.subject {
        return false;
    }
    let Ok(key) = cert_key(parent) else { return false };
    let Ok(tbs) = child.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = child.signature.as_bytes() else {
        return false;
    };
    let hash = crypto::signature_hash(&child.signature_algorithm.oid).unwrap_or_else(|| crypto::default_hash(&key));
    crypto::verify_message(&key, hash, &tbs, sig)
}

fn cert_validity(c: &Certificate) -> (i64, i64) {
    let v = &c.tbs_certificate.validity;
    (
        v.not_before.to_unix_duration().as_secs() as i64,
        v.not_after.to_unix_duration().as_secs() as i64,
    )
}

/// Chains `leaf` to one of `cas` at time `at`: the CA's `validFor` and every certificate on the path
/// must cover `at`. Returns the CA and the issuing certificate (for SCT issuer key hashes).
pub fn verify_chain<'a>(
    leaf: &Certificate,
    cas: &'a [CertificateAuthority],
    at: i64,
) -> Result<(&'a CertificateAuthority, &'a Certificate), Error> {
    let mut reasons = Vec::new();
    for ca in cas {
        // The issuer may be any certificate of the chain (GitHub's older leaves are issued by l1).
        let Some(pos) = ca.chain.iter().position(|c| signed_by(leaf, c)) else {
            continue;
        };
        if !ca.valid_for.contains(at) {
            reasons.push(format!("CA `{}` is not valid at {}", ca.uri, format_time(at)));
            continue;
        }
        let path = &ca.chain[pos..];
        let links_ok = path.windows(2).all(|w| signed_by(&w[0], &w[1]));
        if !links_ok {
            reasons.push(format!("CA `{}` chain does not link", ca.uri));
            continue;
        }
        if let Some(c) = path.iter().find(|c| {
            let (nb, na) = cert_validity(c);
            !(nb <= at && at <= na)
        }) {
            let (nb, na) = cert_validity(c);
            return Err(Error::OutsideValidity {
                what: "a CA certificate's",
                signed_at: format_time(at),
                not_before: format_time(nb),
                not_after: format_time(na),
            });
        }
        return Ok((ca, &path[0]));
    }
    Err(Error::Chain {
        detail: if reasons.is_empty() {
            "no certificate authority of the trusted root issued it".into()
        } else {
            reasons.join("; ")
        },
    })
}

/// Bytes of an OCTET STRING-wrapped extension value, for callers that need raw extension contents.
pub fn extension_bytes(cert: &Certificate, oid: &ObjectIdentifier) -> Option<Vec<u8>> {
    let v = extension(cert, &oid.to_string())?;
    Some(
        OctetString::from_der(v)
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or_else(|_| v.to_vec()),
    )
}
