//! Signature checks for the algorithms Sigstore uses (ECDSA P-256/P-384, Ed25519, RSA), over a message
//! or over a digest already computed (a `messageSignature` bundle carries only the artifact's digest).

use ecdsa::signature::hazmat::PrehashVerifier;
use sha2::Digest as _;
use spki::DecodePublicKey;
use x509_cert::der::oid::ObjectIdentifier;

use crate::keys::PublicKey;

/// The hash a signature is made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(msg).to_vec(),
        }
    }

    /// The hash of a digest algorithm OID (RFC 5754), as used in RFC 3161 and CMS.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Hash> {
        match oid.to_string().as_str() {
            "2.16.840.1.101.3.4.2.1" => Some(Hash::Sha256),
            "2.16.840.1.101.3.4.2.2" => Some(Hash::Sha384),
            "2.16.840.1.101.3.4.2.3" => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// The protobuf `HashAlgorithm` name used in bundles (`SHA2_256`), or the Rekor name (`sha256`).
    pub fn from_name(name: &str) -> Option<Hash> {
        match name.to_ascii_uppercase().replace('-', "_").as_str() {
            "SHA2_256" | "SHA256" => Some(Hash::Sha256),
            "SHA2_384" | "SHA384" => Some(Hash::Sha384),
            "SHA2_512" | "SHA512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// The in-toto digest-set key (`sha256`).
    pub fn intoto_name(self) -> &'static str {
        match self {
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }
}

/// The hash a signature algorithm OID implies, for certificate and CMS signatures. Ed25519 and a bare
/// `id-ecPublicKey` (some TSAs write it) give `None`: the key decides.
pub fn signature_hash(oid: &ObjectIdentifier) -> Option<Hash> {
    match oid.to_string().as_str() {
        "1.2.840.10045.4.3.2" | "1.2.840.113549.1.1.11" => Some(Hash::Sha256),
        "1.2.840.10045.4.3.3" | "1.2.840.113549.1.1.12" => Some(Hash::Sha384),
        "1.2.840.10045.4.3.4" | "1.2.840.113549.1.1.13" => Some(Hash::Sha512),
        _ => None,
    }
}

/// The hash a key signs with when nothing else says: its curve's, SHA-256 otherwise.
pub fn default_hash(key: &PublicKey) -> Hash {
    match key {
        PublicKey::P384(_) => Hash::Sha384,
        _ => Hash::Sha256,
    }
}

/// A public key from DER SubjectPublicKeyInfo, as in a trusted root or a certificate.
pub fn key_from_spki(der: &[u8]) -> Option<PublicKey> {
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
        return Some(PublicKey::P256(k));
    }
    if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
        return Some(PublicKey::P384(k));
    }
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
        return Some(PublicKey::Ed25519(k));
    }
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
        return Some(PublicKey::Rsa(k));
    }
    None
}

/// True if `sig` is `key`'s signature over `msg`, hashed with `hash` (ignored for Ed25519, which
/// signs the message itself).
pub fn verify_message(key: &PublicKey, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
    match key {
        PublicKey::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
            .map(|s| k.verify_strict(msg, &s).is_ok())
            .unwrap_or(false),
        _ => verify_prehash(key, hash, &hash.digest(msg), sig),
    }
}

/// True if `sig` is `key`'s signature over a message whose `hash` is `digest`. Ed25519 cannot be
/// checked this way and is always false.
pub fn verify_prehash(key: &PublicKey, hash: Hash, digest: &[u8], sig: &[u8]) -> bool {
    match key {
        PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
            .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
            .map(|s| k.verify_prehash(digest, &s).is_ok())
            .unwrap_or(false),
        PublicKey::P384(k) => p384::ecdsa::Signature::from_der(sig)
            .or_else(|_| p384::ecdsa::Signature::from_slice(sig))
            .map(|s| k.verify_prehash(digest, &s).is_ok())
            .unwrap_or(false),
        PublicKey::Ed25519(_) => false,
        PublicKey::Rsa(k) => rsa_prehash(k, hash, digest, sig),
    }
}

fn rsa_prehash(k: &rsa::RsaPublicKey, hash: Hash, digest: &[u8], sig: &[u8]) -> bool {
    use rsa::{pkcs1v15, pss};
    fn both<D>(k: &rsa::RsaPublicKey, digest: &[u8], sig: &[u8]) -> bool
    where
        D: sha2::Digest + rsa::pkcs8::AssociatedOid + sha2::digest::FixedOutputReset,
    {
        let v15 = pkcs1v15::Signature::try_from(sig)
            .map(|s| {
                pkcs1v15::VerifyingKey::<D>::new(k.clone())
                    .verify_prehash(digest, &s)
                    .is_ok()
            })
            .unwrap_or(false);
        v15 || pss::Signature::try_from(sig)
            .map(|s| {
                pss::VerifyingKey::<D>::new(k.clone())
                    .verify_prehash(digest, &s)
                    .is_ok()
            })
            .unwrap_or(false)
    }
    match hash {
        Hash::Sha256 => both::<sha2::Sha256>(k, digest, sig),
        Hash::Sha384 => both::<sha2::Sha384>(k, digest, sig),
        Hash::Sha512 => both::<sha2::Sha512>(k, digest, sig),
    }
}

/// The DER SubjectPublicKeyInfo of a key (what a Rekor entry records for keyed signatures).
pub fn spki_der(key: &PublicKey) -> Vec<u8> {
    use spki::EncodePublicKey;
    match key {
        PublicKey::P256(k) => k.to_public_key_der().map(|d| d.into_vec()),
        PublicKey::P384(k) => k.to_public_key_der().map(|d| d.into_vec()),
        PublicKey::Ed25519(k) => k.to_public_key_der().map(|d| d.into_vec()),
        PublicKey::Rsa(k) => k.to_public_key_der().map(|d| d.into_vec()),
    }
    .unwrap_or_default()
}
