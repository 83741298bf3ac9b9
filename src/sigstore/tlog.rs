//! Rekor transparency-log entries: the signed entry timestamp (SET), the RFC 6962 inclusion proof, the
//! signed checkpoint (a C2SP signed note whose root hash must equal the proof's, as sigstore-python
//! requires), and the consistency of the logged body with what the bundle signs.

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::bundle::{Content, InclusionProof, TlogEntry};
use super::crypto::{self, Hash};
use super::trust_root::{LogKey, TrustedRoot};
use super::{b64, pem_to_der, Error};
use crate::dsse;

/// What the bundle signs, to compare with the logged body.
pub struct Signed<'a> {
    pub content: &'a Content,
    /// The one signature (message signature, or the DSSE envelope's).
    pub signature: &'a [u8],
    /// The leaf certificate DER, or the public key's SPKI DER for keyed bundles.
    pub verifier_der: &'a [u8],
    /// For message signatures: the artifact digest the signature was verified over.
    pub artifact_digest: Option<(Hash, &'a [u8])>,
}

/// Verifies one entry and returns its log and its integrated time (`None` for Rekor v2 entries, which
/// have none: their time must come from a timestamp authority).
pub fn verify_entry<'r>(
    entry: &TlogEntry,
    root: &'r TrustedRoot,
    signed: &Signed<'_>,
) -> Result<(&'r LogKey, Option<i64>), Error> {
    let log = root.tlog(&entry.log_id).ok_or_else(|| {
        Error::tlog(format!(
            "log id {} is not a log of the trusted root",
            hex::encode(&entry.log_id)
        ))
    })?;
    let integrated = (entry.integrated_time != 0).then_some(entry.integrated_time);
    if entry.integrated_time < 0 {
        return Err(Error::tlog("negative integratedTime"));
    }
    if let Some(set) = &entry.signed_entry_timestamp {
        let t = integrated.ok_or_else(|| Error::tlog("a signed entry timestamp without an integratedTime"))?;
        let canonical = set_payload(&entry.body, t, &entry.log_id, entry.log_index);
        if !crypto::verify_message(&log.key, Hash::Sha256, canonical.as_bytes(), set) {
            return Err(Error::tlog(format!(
                "the signed entry timestamp does not verify with the key of {} (logIndex {}, integratedTime {t})",
                log.base_url, entry.log_index
            )));
        }
    }
    match &entry.inclusion_proof {
        Some(proof) => {
            verify_inclusion(&entry.body, proof)?;
            match &proof.checkpoint {
                Some(note) => verify_checkpoint(note, log, proof)?,
                // Without a checkpoint the root hash is not signed: only the SET then vouches for the entry.
                None if entry.signed_entry_timestamp.is_some() => {}
                None => return Err(Error::tlog("an inclusion proof without a signed checkpoint")),
            }
        }
        None if entry.signed_entry_timestamp.is_none() => {
            return Err(Error::tlog("neither a signed entry timestamp nor an inclusion proof"))
        }
        None => {}
    }
    if integrated.is_none() && entry.inclusion_proof.is_none() {
        return Err(Error::tlog("an entry without integratedTime needs an inclusion proof"));
    }
    check_body(entry, signed)?;
    Ok((log, integrated))
}

/// The canonical JSON the SET signs: sorted keys, no spaces.
pub fn set_payload(body: &[u8], integrated_time: i64, log_id: &[u8], log_index: u64) -> String {
    format!(
        r#"{{"body":"{}","integratedTime":{integrated_time},"logID":"{}","logIndex":{log_index}}}"#,
        dsse::encode_b64(body),
        hex::encode(log_id)
    )
}

fn hash_children(l: &[u8], r: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

pub fn leaf_hash(body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    h.finalize().into()
}

/// The root an RFC 6962 / RFC 9162 §2.1.3.2 audit path leads to, if the path has the right length.
pub fn root_from_proof(index: u64, size: u64, leaf: [u8; 32], proof: &[Vec<u8>]) -> Option<[u8; 32]> {
    if index >= size || proof.iter().any(|h| h.len() != 32) {
        return None;
    }
    let inner = (64 - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index >> inner).count_ones() as usize;
    if proof.len() != inner + border {
        return None;
    }
    let mut res = leaf;
    for (i, h) in proof[..inner].iter().enumerate() {
        res = if (index >> i) & 1 == 0 {
            hash_children(&res, h)
        } else {
            hash_children(h, &res)
        };
    }
    for h in &proof[inner..] {
        res = hash_children(h, &res);
    }
    Some(res)
}

fn verify_inclusion(body: &[u8], proof: &InclusionProof) -> Result<(), Error> {
    let root = root_from_proof(proof.log_index, proof.tree_size, leaf_hash(body), &proof.hashes).ok_or_else(|| {
        Error::tlog(format!(
            "the inclusion proof has the wrong shape for index {} in a tree of {}",
            proof.log_index, proof.tree_size
        ))
    })?;
    if root.as_slice() != proof.root_hash.as_slice() {
        return Err(Error::tlog(format!(
            "the inclusion proof leads to root {}, not to its rootHash {}",
            hex::encode(root),
            hex::encode(&proof.root_hash)
        )));
    }
    Ok(())
}

/// A signed note: `origin\nsize\nb64(root)\n[extension lines]\n\n— name b64(keyhint||sig)\n…`.
fn verify_checkpoint(note: &str, log: &LogKey, proof: &InclusionProof) -> Result<(), Error> {
    let (text, sigs) = note
        .split_once("\n\n")
        .ok_or_else(|| Error::tlog("the checkpoint is not a signed note (no blank line)"))?;
    let signed_text = format!("{text}\n");
    let mut lines = text.split('\n');
    let origin = lines.next().unwrap_or_default();
    let size = lines.next().unwrap_or_default();
    let root = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err(Error::tlog("the checkpoint has no origin"));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| Error::tlog(format!("the checkpoint size `{size}` is not a number")))?;
    let root = b64(root)
        .filter(|r| r.len() == 32)
        .ok_or_else(|| Error::tlog("the checkpoint root hash is not 32 bytes of base64"))?;
    if root != proof.root_hash {
        return Err(Error::tlog(format!(
            "the checkpoint's root hash {} is not the inclusion proof's rootHash {}",
            hex::encode(&root),
            hex::encode(&proof.root_hash)
        )));
    }
    if size != proof.tree_size {
        return Err(Error::tlog(format!(
            "the checkpoint's tree size {size} is not the inclusion proof's {}",
            proof.tree_size
        )));
    }
    // Witness cosignatures may sit beside the log's own: one line by the log must verify.
    let host = log.origin_host();
    let hint = &log.log_id[..log.log_id.len().min(4)];
    let by_log = sigs.lines().filter_map(|l| l.strip_prefix("\u{2014} ")).any(|l| {
        let Some((name, sig)) = l.rsplit_once(' ') else {
            return false;
        };
        let Some(sig) = b64(sig) else { return false };
        name == host
            && sig.len() > 4
            && &sig[..4] == hint
            && crypto::verify_message(&log.key, Hash::Sha256, signed_text.as_bytes(), &sig[4..])
    });
    if !by_log {
        return Err(Error::tlog(format!(
            "no signature on the checkpoint by {host} (key hint {}) verifies",
            hex::encode(hint)
        )));
    }
    Ok(())
}

fn mismatch(what: &str) -> Error {
    Error::tlog(format!("the logged entry does not match the bundle: {what}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// A base64 PEM (Rekor v1 `publicKey`/`verifier`) naming `der`.
fn pem_names(b64_pem: Option<&str>, der: &[u8]) -> bool {
    b64_pem
        .and_then(b64)
        .and_then(|pem| pem_to_der(&pem))
        .is_some_and(|d| d == der)
}

fn check_body(entry: &TlogEntry, s: &Signed<'_>) -> Result<(), Error> {
    let body: Value =
        serde_json::from_slice(&entry.body).map_err(|e| mismatch(&format!("the body is not JSON: {e}")))?;
    let kind = body["kind"].as_str().unwrap_or_default();
    let version = body["apiVersion"].as_str().unwrap_or_default();
    if (kind, version) != (entry.kind.as_str(), entry.version.as_str()) && !entry.kind.is_empty() {
        return Err(mismatch(&format!(
            "the body is {kind} {version} but the entry says {} {}",
            entry.kind, entry.version
        )));
    }
    let spec = &body["spec"];
    match (kind, version, s.content) {
        ("hashedrekord", "0.0.1", Content::MessageSignature { .. }) => {
            let (hash, digest) = s.artifact_digest.ok_or_else(|| mismatch("no artifact digest"))?;
            if str_at(spec, &["data", "hash", "algorithm"]) != Some(hash.intoto_name())
                || str_at(spec, &["data", "hash", "value"]) != Some(hex::encode(digest).as_str())
            {
                return Err(mismatch("the logged artifact hash"));
            }
            if str_at(spec, &["signature", "content"]).and_then(b64).as_deref() != Some(s.signature) {
                return Err(mismatch("the logged signature"));
            }
            if !pem_names(str_at(spec, &["signature", "publicKey", "content"]), s.verifier_der) {
                return Err(mismatch("the logged certificate or key"));
            }
        }
        ("hashedrekord", "0.0.2", content) => {
            let v2 = &spec["hashedRekordV002"];
            let expected = match content {
                Content::MessageSignature { .. } => {
                    let (hash, digest) = s.artifact_digest.ok_or_else(|| mismatch("no artifact digest"))?;
                    (hash, digest.to_vec())
                }
                // Rekor v2 logs a DSSE envelope as a hashedrekord over its PAE (rekor-v2 spec §6.1.4).
                Content::Dsse(env) => {
                    let payload = dsse::decode_b64(&env.payload).unwrap_or_default();
                    (
                        Hash::Sha256,
                        Hash::Sha256.digest(&dsse::pae(&env.payload_type, &payload)),
                    )
                }
            };
            let alg = str_at(v2, &["data", "algorithm"]).and_then(Hash::from_name);
            if alg != Some(expected.0) || str_at(v2, &["data", "digest"]).and_then(b64) != Some(expected.1) {
                return Err(mismatch("the logged digest"));
            }
            check_v2_signature(&v2["signature"], s)?;
        }
        ("dsse", "0.0.1", Content::Dsse(env)) => {
            let payload = dsse::decode_b64(&env.payload).unwrap_or_default();
            if str_at(spec, &["payloadHash", "algorithm"]) != Some("sha256")
                || str_at(spec, &["payloadHash", "value"]) != Some(hex::encode(Sha256::digest(&payload)).as_str())
            {
                return Err(mismatch("the logged payload hash"));
            }
            let sigs = spec["signatures"].as_array().map(Vec::as_slice).unwrap_or_default();
            if sigs.len() != 1
                || str_at(&sigs[0], &["signature"]).and_then(b64).as_deref() != Some(s.signature)
                || !pem_names(str_at(&sigs[0], &["verifier"]), s.verifier_der)
            {
                return Err(mismatch("the logged DSSE signature or verifier"));
            }
        }
        ("dsse", "0.0.2", Content::Dsse(env)) => {
            let v2 = &spec["dsseV002"];
            let payload = dsse::decode_b64(&env.payload).unwrap_or_default();
            let alg = str_at(v2, &["payloadHash", "algorithm"]).and_then(Hash::from_name);
            if alg != Some(Hash::Sha256)
                || str_at(v2, &["payloadHash", "digest"]).and_then(b64) != Some(Hash::Sha256.digest(&payload))
            {
                return Err(mismatch("the logged payload hash"));
            }
            let sigs = v2["signatures"].as_array().map(Vec::as_slice).unwrap_or_default();
            if sigs.len() != 1 {
                return Err(mismatch("the number of logged signatures"));
            }
            check_v2_signature(&sigs[0], s)?;
        }
        ("intoto", "0.0.2", Content::Dsse(env)) => {
            let content = &spec["content"];
            let payload = dsse::decode_b64(&env.payload).unwrap_or_default();
            if str_at(content, &["payloadHash", "algorithm"]) != Some("sha256")
                || str_at(content, &["payloadHash", "value"]) != Some(hex::encode(Sha256::digest(&payload)).as_str())
            {
                return Err(mismatch("the logged payload hash"));
            }
            if let Some(t) = str_at(content, &["envelope", "payloadType"]) {
                if t != env.payload_type {
                    return Err(mismatch("the logged payload type"));
                }
            }
            let sigs = content["envelope"]["signatures"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            // intoto 0.0.2 stores each signature base64-encoded once more.
            let sig_matches = |v: &Value| {
                let once = str_at(v, &["sig"]).and_then(b64);
                let twice = once.as_deref().and_then(|o| std::str::from_utf8(o).ok()).and_then(b64);
                twice.as_deref() == Some(s.signature) || once.as_deref() == Some(s.signature)
            };
            if sigs.len() != 1 || !sig_matches(&sigs[0]) || !pem_names(str_at(&sigs[0], &["publicKey"]), s.verifier_der)
            {
                return Err(mismatch("the logged in-toto signature or public key"));
            }
        }
        (kind, version, _) => {
            return Err(Error::tlog(format!(
                "unsupported or mismatched log entry kind {kind} {version} for this bundle content"
            )))
        }
    }
    Ok(())
}

/// A Rekor v2 `Signature {content, verifier {x509Certificate | publicKey {rawBytes}}}`.
fn check_v2_signature(sig: &Value, s: &Signed<'_>) -> Result<(), Error> {
    if str_at(sig, &["content"]).and_then(b64).as_deref() != Some(s.signature) {
        return Err(mismatch("the logged signature"));
    }
    let verifier = str_at(sig, &["verifier", "x509Certificate", "rawBytes"])
        .or_else(|| str_at(sig, &["verifier", "publicKey", "rawBytes"]))
        .and_then(b64);
    if verifier.as_deref() != Some(s.verifier_der) {
        return Err(mismatch("the logged verifier"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(leaves: &[&[u8]]) -> Vec<[u8; 32]> {
        leaves.iter().map(|l| leaf_hash(l)).collect()
    }

    /// RFC 6962 MTH, for checking proofs of every index in small trees.
    fn mth(hashes: &[[u8; 32]]) -> [u8; 32] {
        if hashes.len() == 1 {
            return hashes[0];
        }
        let k = hashes.len().next_power_of_two() / 2;
        hash_children(&mth(&hashes[..k]), &mth(&hashes[k..]))
    }

    fn path(m: usize, hashes: &[[u8; 32]]) -> Vec<Vec<u8>> {
        if hashes.len() == 1 {
            return vec![];
        }
        let k = hashes.len().next_power_of_two() / 2;
        if m < k {
            let mut p = path(m, &hashes[..k]);
            p.push(mth(&hashes[k..]).to_vec());
            p
        } else {
            let mut p = path(m - k, &hashes[k..]);
            p.push(mth(&hashes[..k]).to_vec());
            p
        }
    }

    #[test]
    fn inclusion_proofs_verify_for_every_leaf_of_small_trees() {
        let data: Vec<Vec<u8>> = (0..13u8).map(|i| vec![i; 3]).collect();
        for n in 1..=data.len() {
            let refs: Vec<&[u8]> = data[..n].iter().map(Vec::as_slice).collect();
            let hashes = tree(&refs);
            let root = mth(&hashes);
            for m in 0..n {
                let p = path(m, &hashes);
                assert_eq!(
                    root_from_proof(m as u64, n as u64, hashes[m], &p),
                    Some(root),
                    "{m}/{n}"
                );
                if !p.is_empty() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(root_from_proof(m as u64, n as u64, hashes[m], &bad), Some(root));
                }
            }
        }
        assert_eq!(root_from_proof(5, 5, [0; 32], &[]), None);
    }

    #[test]
    fn the_set_payload_is_canonical_json() {
        let p = set_payload(b"{}", 7, &[0xc0, 0xd2], 3);
        assert_eq!(p, r#"{"body":"e30=","integratedTime":7,"logID":"c0d2","logIndex":3}"#);
    }
}
