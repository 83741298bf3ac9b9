//! Public keys in `cosign.pub` PEM form (ECDSA P-256/P-384, Ed25519, RSA) and the P-256 signing key
//! that `tollgate attest` and the demo use.

use std::fmt;

use ecdsa::signature::{Signer as _, Verifier as _};
use spki::{DecodePublicKey, EncodePublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM public key (expected `-----BEGIN PUBLIC KEY-----`, as in cosign.pub): {0}")]
    NotPem(String),
    #[error("unsupported public key algorithm: expected ECDSA P-256/P-384, Ed25519 or RSA")]
    Unsupported,
    #[error("not a PEM PKCS#8 P-256 private key: {0}")]
    BadPrivateKey(String),
}

/// A verification key. Signatures are checked over the exact bytes given (for DSSE, the PAE).
#[derive(Clone)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.algorithm())
    }
}

impl PublicKey {
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(KeyError::NotPem("no `-----BEGIN PUBLIC KEY-----` block".into()));
        }
        // Decode the base64 body ourselves: real keys are not always wrapped at 64 columns
        // (sigstore-go's `publish_key.pub` is one long line), which strict PEM parsers refuse.
        let der = pem_body(pem).ok_or_else(|| KeyError::NotPem("the PEM body is not valid base64".into()))?;
        PublicKey::from_der(&der)
    }

    /// A DER SubjectPublicKeyInfo.
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::P384(k));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Ok(PublicKey::Rsa(k));
        }
        // Tell a broken key apart from a well-formed key of an algorithm we do not support.
        if spki::SubjectPublicKeyInfoRef::try_from(der).is_ok() {
            Err(KeyError::Unsupported)
        } else {
            Err(KeyError::NotPem(
                "the PEM block does not hold a SubjectPublicKeyInfo".into(),
            ))
        }
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ecdsa-p256",
            PublicKey::P384(_) => "ecdsa-p384",
            PublicKey::Ed25519(_) => "ed25519",
            PublicKey::Rsa(_) => "rsa",
        }
    }

    /// A stable identifier: sha256 of the DER SubjectPublicKeyInfo, hex.
    pub fn fingerprint(&self) -> String {
        let der = match self {
            PublicKey::P256(k) => k.to_public_key_der().map(|d| d.into_vec()),
            PublicKey::P384(k) => k.to_public_key_der().map(|d| d.into_vec()),
            PublicKey::Ed25519(k) => k.to_public_key_der().map(|d| d.into_vec()),
            PublicKey::Rsa(k) => k.to_public_key_der().map(|d| d.into_vec()),
        }
        .unwrap_or_default();
        crate::image::Digest::of(&der).hex().to_string()
    }

    /// True if `sig` is a valid signature over `msg`. ECDSA signatures are accepted in ASN.1 DER
    /// (what cosign and securesystemslib write) or fixed-size `r||s`; RSA as PKCS#1 v1.5 or PSS
    /// with SHA-256.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_der(sig).or_else(|_| p256::ecdsa::Signature::from_slice(sig));
                s.map(|s| k.verify(msg, &s).is_ok()).unwrap_or(false)
            }
            PublicKey::P384(k) => {
                let s = p384::ecdsa::Signature::from_der(sig).or_else(|_| p384::ecdsa::Signature::from_slice(sig));
                s.map(|s| k.verify(msg, &s).is_ok()).unwrap_or(false)
            }
            PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .map(|s| k.verify_strict(msg, &s).is_ok())
                .unwrap_or(false),
            PublicKey::Rsa(k) => {
                use rsa::signature::Verifier;
                let pkcs1 = rsa::pkcs1v15::Signature::try_from(sig)
                    .map(|s| {
                        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone())
                            .verify(msg, &s)
                            .is_ok()
                    })
                    .unwrap_or(false);
                pkcs1
                    || rsa::pss::Signature::try_from(sig)
                        .map(|s| {
                            rsa::pss::VerifyingKey::<sha2::Sha256>::new(k.clone())
                                .verify(msg, &s)
                                .is_ok()
                        })
                        .unwrap_or(false)
            }
        }
    }
}

/// The base64 body of the first `PUBLIC KEY` block, whitespace ignored.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let start = pem.find("-----BEGIN PUBLIC KEY-----")? + "-----BEGIN PUBLIC KEY-----".len();
    let end = start + pem[start..].find("-----END PUBLIC KEY-----")?;
    let body: String = pem[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// An ECDSA P-256 signing key, as `cosign generate-key-pair` makes (but stored unencrypted, PKCS#8 PEM).
pub struct SigningKey(p256::ecdsa::SigningKey);

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePrivateKey;
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(SigningKey)
            .map_err(|e| KeyError::BadPrivateKey(e.to_string()))
    }

    pub fn to_pem(&self) -> String {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| s.to_string())
            .unwrap_or_default()
    }

    pub fn public_pem(&self) -> String {
        self.0
            .verifying_key()
            .to_public_key_pem(spki::der::pem::LineEnding::LF)
            .unwrap_or_default()
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::P256(*self.0.verifying_key())
    }

    /// An ASN.1 DER ECDSA-SHA256 signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.0.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_and_verifies_only_its_own_signatures() {
        let key = SigningKey::generate();
        let pubkey = PublicKey::from_pem(&key.public_pem()).unwrap();
        let sig = key.sign(b"payload");
        assert!(pubkey.verify(b"payload", &sig));
        assert!(!pubkey.verify(b"payloaD", &sig));
        let other = SigningKey::generate().public_key();
        assert!(!other.verify(b"payload", &sig));
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public_key().fingerprint(), pubkey.fingerprint());
    }

    #[test]
    fn accepts_pem_bodies_on_one_long_line() {
        let pem = SigningKey::generate().public_pem();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let one_line = format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n");
        assert!(matches!(PublicKey::from_pem(&one_line), Ok(PublicKey::P256(_))));
    }

    #[test]
    fn rejects_text_that_is_not_a_public_key() {
        assert!(matches!(PublicKey::from_pem("hello"), Err(KeyError::NotPem(_))));
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(PublicKey::from_pem(garbage).is_err());
    }
}
