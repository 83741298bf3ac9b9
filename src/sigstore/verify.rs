//! The whole verification of one bundle: signature, certificate chain and usage, transparency log,
//! timestamps, signing time within the certificate, and the subject. Identity matching is separate
//! ([`check_identity`]) so that callers can try several configured identities against one result.
//! Pure: the signing time comes from the log or a timestamp authority, never from the clock.

use serde_json::Value;

use super::bundle::{Bundle, Content, VerificationMaterial};
use super::cert::{verify_chain, Identity, Leaf};
use super::crypto::{self, Hash};
use super::tlog::{self, Signed};
use super::trust_root::TrustedRoot;
use super::{format_time, timestamp, Error};
use crate::config::SubjectMatch;
use crate::dsse;
use crate::keys::PublicKey;

/// A digest the signed artifact (or a DSSE statement subject) must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDigest {
    pub hash: Hash,
    pub digest: Vec<u8>,
}

impl ArtifactDigest {
    pub fn sha256(digest: &[u8]) -> ArtifactDigest {
        ArtifactDigest {
            hash: Hash::Sha256,
            digest: digest.to_vec(),
        }
    }

    /// Every digest of `bytes` a bundle may name (SHA-256, -384, -512).
    pub fn of(bytes: &[u8]) -> Vec<ArtifactDigest> {
        [Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            .map(|hash| ArtifactDigest {
                hash,
                digest: hash.digest(bytes),
            })
            .collect()
    }
}

/// Who signed a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A Fulcio (or other CA) certificate, chained to the trusted root.
    Certificate(Box<Identity>),
    /// The index, in the keys given, of the key that verified.
    Key(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    pub signer: Signer,
    /// Every verified signing time (integrated times and timestamps), Unix seconds, ascending.
    pub signing_times: Vec<i64>,
    /// The DSSE payload type and the in-toto statement, for DSSE bundles.
    pub payload_type: Option<String>,
    pub statement: Option<Value>,
}

/// Checks `bundle` against `root` and the artifact's `expected` digests. `keys` are the configured
/// public keys a keyed bundle (`publicKey` hint) may be signed with.
pub fn verify_bundle(
    bundle: &Bundle,
    root: &TrustedRoot,
    expected: &[ArtifactDigest],
    keys: &[&PublicKey],
) -> Result<VerifiedBundle, Error> {
    // 1. Who signs, and the signature over what the bundle carries.
    let leaf = match &bundle.material {
        VerificationMaterial::Certificates(chain) => {
            let leaf = Leaf::parse(&chain[0])?;
            // Only the leaf is used: intermediates and roots come from the trusted root alone, so a
            // bundle that ships its own (v0.1/v0.2 chains do) can neither add nor replace one. A shipped
            // root that the trusted root does not hold is refused outright, as sigstore-go does.
            for der in &chain[1..] {
                let Ok(c) = Leaf::parse(der).map(|l| l.cert) else {
                    continue;
                };
                let self_signed = c.tbs_certificate.issuer == c.tbs_certificate.subject;
                let known = root.certificate_authorities.iter().any(|ca| ca.chain.contains(&c));
                if self_signed && !known {
                    return Err(Error::Chain {
                        detail: "the bundle ships a root certificate that is not in the trusted root".into(),
                    });
                }
            }
            Some(leaf)
        }
        VerificationMaterial::PublicKey { .. } => None,
    };
    let candidates: Vec<&PublicKey> = match &leaf {
        Some(l) => vec![&l.key],
        None if keys.is_empty() => {
            return Err(Error::BadSignature {
                what: "keyed bundle's (no public key is configured to check it)".into(),
            })
        }
        None => keys.to_vec(),
    };
    let (key_index, signature, artifact_digest) = check_signature(bundle, &candidates, expected)?;
    let verifier_der = match &leaf {
        Some(l) => l.der.clone(),
        None => crypto::spki_der(candidates[key_index]),
    };

    // 2. Signing times: from the transparency log, and from timestamp authorities.
    let signed = Signed {
        content: &bundle.content,
        signature: &signature,
        verifier_der: &verifier_der,
        artifact_digest: artifact_digest.as_ref().map(|(h, d)| (*h, d.as_slice())),
    };
    let mut logged = Vec::new();
    for entry in &bundle.tlog_entries {
        logged.push(tlog::verify_entry(entry, root, &signed)?);
    }
    let mut times = Vec::new();
    for token in &bundle.timestamps {
        times.push(timestamp::verify(token, &signature, &root.timestamp_authorities)?);
    }
    let stamped = times.clone();
    for (log, integrated) in &logged {
        match integrated {
            Some(t) => {
                if !log.valid_for.contains(*t) {
                    return Err(Error::tlog(format!(
                        "integrated time {} is outside the validity of log {} in the trusted root",
                        format_time(*t),
                        log.base_url
                    )));
                }
                times.push(*t);
            }
            None => {
                // Rekor v2 entries have no time of their own: a timestamp must place them.
                if stamped.is_empty() {
                    return Err(Error::tlog(format!(
                        "the entry in {} has no integrated time and the bundle has no RFC 3161 timestamp",
                        log.base_url
                    )));
                }
                if let Some(t) = stamped.iter().find(|t| !log.valid_for.contains(**t)) {
                    return Err(Error::tlog(format!(
                        "timestamp {} is outside the validity of log {} in the trusted root",
                        format_time(*t),
                        log.base_url
                    )));
                }
            }
        }
    }
    if times.is_empty() {
        return Err(Error::Unsupported {
            what: "a bundle with neither a transparency log entry nor an RFC 3161 timestamp (no trusted signing time)"
                .into(),
        });
    }
    times.sort_unstable();
    times.dedup();

    // 3. The certificate at every signing time.
    let signer = match &leaf {
        Some(leaf) => {
            leaf.check_usage()?;
            let mut issuer = None;
            for t in &times {
                leaf.check_time(*t)?;
                let (ca, cert) = verify_chain(&leaf.cert, &root.certificate_authorities, *t)?;
                // A trust domain with transparency logs expects its certificates to be logged; GitHub's
                // private-repo domain has none and relies on its timestamp authorities alone.
                if ca.expects_tlog && bundle.tlog_entries.is_empty() {
                    return Err(Error::tlog("the bundle has no transparency log entry"));
                }
                issuer = Some((ca, cert));
            }
            // A domain with CT logs expects Fulcio's certificates to be logged; GitHub's has none.
            if let Some((_, issuer)) = issuer.filter(|(ca, _)| ca.expects_sct) {
                super::sct::verify_embedded(&leaf.cert, issuer, &root.ctlogs)?;
            }
            Signer::Certificate(Box::new(leaf.identity()))
        }
        None => {
            if bundle.tlog_entries.is_empty() && !root.tlogs.is_empty() {
                return Err(Error::tlog("the bundle has no transparency log entry"));
            }
            Signer::Key(key_index)
        }
    };

    // 4. The subject.
    let (payload_type, statement) = match &bundle.content {
        Content::Dsse(env) => {
            let payload = dsse::decode_b64(&env.payload).unwrap_or_default();
            if env.payload_type != dsse::INTOTO_PAYLOAD_TYPE {
                return Err(Error::Unsupported {
                    what: format!(
                        "DSSE payloadType `{}` (expected {})",
                        env.payload_type,
                        dsse::INTOTO_PAYLOAD_TYPE
                    ),
                });
            }
            let statement: Value =
                serde_json::from_slice(&payload).map_err(|e| Error::malformed("in-toto statement", e))?;
            check_subject(&statement, expected)?;
            (Some(env.payload_type.clone()), Some(statement))
        }
        Content::MessageSignature { .. } => (None, None),
    };
    Ok(VerifiedBundle {
        signer,
        signing_times: times,
        payload_type,
        statement,
    })
}

/// Returns the index of the key that verified, the signature bytes, and for message signatures the
/// artifact digest they were verified over.
#[allow(clippy::type_complexity)]
fn check_signature(
    bundle: &Bundle,
    keys: &[&PublicKey],
    expected: &[ArtifactDigest],
) -> Result<(usize, Vec<u8>, Option<(Hash, Vec<u8>)>), Error> {
    match &bundle.content {
        Content::Dsse(env) => {
            let payload =
                dsse::decode_b64(&env.payload).ok_or_else(|| Error::malformed("DSSE payload", "not base64"))?;
            let pae = dsse::pae(&env.payload_type, &payload);
            let sig = env.signatures.first().map(|s| s.sig.as_str()).unwrap_or_default();
            // Chainloop wrote signatures base64-encoded twice (chainloop#1832); the message stays the PAE.
            let once = dsse::decode_b64(sig).ok_or_else(|| Error::malformed("DSSE signature", "not base64"))?;
            let twice = std::str::from_utf8(&once).ok().and_then(dsse::decode_b64);
            for (i, key) in keys.iter().enumerate() {
                for s in std::iter::once(&once).chain(twice.as_ref()) {
                    if crypto::verify_message(key, crypto::default_hash(key), &pae, s) {
                        return Ok((i, s.clone(), None));
                    }
                }
            }
            Err(Error::BadSignature {
                what: "DSSE envelope".into(),
            })
        }
        Content::MessageSignature {
            algorithm,
            digest,
            signature,
        } => {
            let hash = if algorithm.is_empty() {
                Hash::Sha256
            } else {
                Hash::from_name(algorithm).ok_or_else(|| Error::Unsupported {
                    what: format!("message digest algorithm `{algorithm}`"),
                })?
            };
            let artifact = expected
                .iter()
                .find(|a| a.hash == hash)
                .ok_or_else(|| Error::SubjectMismatch {
                    expected: expected_text(expected),
                    actual: format!("a {} digest", hash.intoto_name()),
                })?;
            // The bundle's digest is an unauthenticated hint, but one that disagrees is not this artifact's.
            if !digest.is_empty() && *digest != artifact.digest {
                return Err(Error::SubjectMismatch {
                    expected: expected_text(expected),
                    actual: format!("{}:{}", hash.intoto_name(), hex::encode(digest)),
                });
            }
            for (i, key) in keys.iter().enumerate() {
                if crypto::verify_prehash(key, hash, &artifact.digest, signature) {
                    return Ok((i, signature.clone(), Some((hash, artifact.digest.clone()))));
                }
            }
            Err(Error::BadSignature { what: "message".into() })
        }
    }
}

fn expected_text(expected: &[ArtifactDigest]) -> String {
    expected
        .iter()
        .map(|a| format!("{}:{}", a.hash.intoto_name(), hex::encode(&a.digest)))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// An in-toto statement (v1 or v0.1) with a subject of one of the expected digests.
pub fn check_subject(statement: &Value, expected: &[ArtifactDigest]) -> Result<(), Error> {
    let subjects = statement["subject"].as_array().map(Vec::as_slice).unwrap_or_default();
    let hit = subjects.iter().any(|s| {
        expected.iter().any(|a| {
            s["digest"][a.hash.intoto_name()]
                .as_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&hex::encode(&a.digest)))
        })
    });
    if hit {
        return Ok(());
    }
    let actual = subjects
        .iter()
        .flat_map(|s| {
            s["digest"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(alg, v)| format!("{alg}:{}", v.as_str().unwrap_or_default()))
        })
        .collect::<Vec<_>>();
    Err(Error::SubjectMismatch {
        expected: expected_text(expected),
        actual: if actual.is_empty() {
            "no subject".into()
        } else {
            actual.join(", ")
        },
    })
}

/// Does the certificate identity match a configured keyless signer? The issuer is compared exactly;
/// the subject exactly or by the regex as written (anchor it in the config to anchor the match).
pub fn identity_matches(identity: &Identity, issuer: &str, subject: &SubjectMatch) -> bool {
    let Some(actual) = identity.subject.as_deref() else {
        return false;
    };
    identity.issuer.as_deref() == Some(issuer)
        && match subject {
            SubjectMatch::Exact(s) => s == actual,
            SubjectMatch::Regex(re) => re.is_match(actual),
        }
}

/// [`identity_matches`] as a result with a message naming both identities.
pub fn check_identity(identity: &Identity, issuer: &str, subject: &SubjectMatch) -> Result<(), Error> {
    if identity_matches(identity, issuer, subject) {
        return Ok(());
    }
    let expected = match subject {
        SubjectMatch::Exact(s) => format!("`{s}`"),
        SubjectMatch::Regex(re) => format!("/{}/", re.as_str()),
    };
    Err(Error::IdentityMismatch {
        expected: format!("{expected} from issuer `{issuer}`"),
        actual: describe(identity),
    })
}

/// `subject` from issuer `issuer`, for messages.
pub fn describe(identity: &Identity) -> String {
    format!(
        "`{}` from issuer `{}`",
        identity.subject.as_deref().unwrap_or("(no SAN)"),
        identity.issuer.as_deref().unwrap_or("(none)")
    )
}
