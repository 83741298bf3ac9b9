//! Caches in front of evidence fetching and verification, so that re-evaluating a candidate (every
//! poll, every webhook, every environment that promotes the same digest) does not re-download and
//! re-verify what it already checked.
//!
//! Two caches with different lifetimes, for different reasons:
//! - **Verification results** ([`EvidenceCache::verify`]) are kept until evicted (bounded LRU). Their
//!   key is everything the result depends on: the digest of the evidence as fetched (layer bytes,
//!   source, media type and annotations, since a `.sig` signature lives in an annotation), the
//!   candidate digest, and a digest of the trust configuration ([`trust_digest`]). Content addressed
//!   by digest is immutable and `verify` reads no clock, so a hit is exactly what verifying again
//!   would return.
//! - **Fetched evidence lists** per image digest ([`EvidenceCache::fetched`]) live for a short TTL
//!   only (default 30 s): the image is immutable but what hangs off it is not. Anyone may attach a
//!   new attestation to an existing digest at any time (a late SBOM, a scan, a signature after a
//!   manual review). A candidate blocked for missing evidence must see that evidence on the next
//!   evaluation; a TTL of minutes would hold such a promotion back by as long for no gain, since
//!   the registry round trips the TTL saves are cheap next to that delay. For the same reason the
//!   gate stores a list only when it led to an allow (`Gate::evaluate`): a blocked or deferred
//!   candidate reads the registry afresh every time, so the TTL only delays evidence that could
//!   turn an allow into a block (a late vulnerability report), by at most the TTL.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::config::{claims_id, Signer, SubjectMatch, Trust};
use crate::gate::{verify, RawEvidence, Verified};
use crate::image::Digest;

/// Default number of verification results kept.
pub const DEFAULT_VERIFIED_ENTRIES: usize = 1024;
/// Default number of images whose fetched evidence is kept (each for at most the TTL).
pub const DEFAULT_FETCHED_ENTRIES: usize = 256;
/// How long a fetched evidence list is reused; see the module documentation for why it is short.
pub const DEFAULT_FETCH_TTL: Duration = Duration::from_secs(30);

/// A bounded least-recently-used map. Small and synchronous: callers hold it under a `Mutex` for
/// a lookup or an insert only, never across I/O or verification.
#[derive(Debug)]
pub struct Lru<K, V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
    /// Use tick → key, oldest first: eviction pops the first entry.
    order: BTreeMap<u64, K>,
}

impl<K: Eq + Hash + Clone, V: Clone> Lru<K, V> {
    /// A map that holds at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Lru {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value for `key`, marking it most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.clone());
        Some(value.clone())
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.tick += 1;
        if let Some((_, used)) = self.entries.remove(&key) {
            self.order.remove(&used);
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_first() {
                Some((_, oldest)) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (value, self.tick));
    }

    pub fn remove(&mut self, key: &K) {
        if let Some((_, used)) = self.entries.remove(key) {
            self.order.remove(&used);
        }
    }
}

/// What a verification result depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct VerifyKey {
    evidence: Digest,
    candidate: Digest,
    trust: Digest,
}

/// Where a fetched evidence list came from: the same digest in another repository (or registry)
/// can carry other evidence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FetchKey {
    registry: String,
    repository: String,
    digest: Digest,
}

/// A fetched evidence list and when it was fetched.
type Fetched = (Instant, Arc<Vec<RawEvidence>>);

/// Hit and miss counts, for tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub verify_hits: u64,
    pub verify_misses: u64,
    pub fetch_hits: u64,
    pub fetch_misses: u64,
}

/// The evidence caches of one gate. Shared (`Arc`) between evaluations running concurrently.
#[derive(Debug)]
pub struct EvidenceCache {
    verified: Mutex<Lru<VerifyKey, Arc<Verified>>>,
    fetched: Mutex<Lru<FetchKey, Fetched>>,
    fetch_ttl: Duration,
    /// The last trusted root digested, by identity: digesting a root walks every certificate, and
    /// the same `Arc` is passed on every evaluation until the configuration is reloaded.
    root_digest: Mutex<Option<(Arc<crate::sigstore::TrustedRoot>, Digest)>>,
    stats: Mutex<CacheStats>,
}

impl Default for EvidenceCache {
    fn default() -> Self {
        Self::new(DEFAULT_VERIFIED_ENTRIES, DEFAULT_FETCHED_ENTRIES, DEFAULT_FETCH_TTL)
    }
}

/// Locks a cache map. A poisoned lock only means a panic elsewhere mid-update of a cache; the
/// worst it can hold is a missing entry, so carry on with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EvidenceCache {
    /// `fetch_ttl` of zero disables the fetched-evidence cache.
    pub fn new(verified_entries: usize, fetched_entries: usize, fetch_ttl: Duration) -> Self {
        EvidenceCache {
            verified: Mutex::new(Lru::new(verified_entries)),
            fetched: Mutex::new(Lru::new(fetched_entries)),
            fetch_ttl,
            root_digest: Mutex::new(None),
            stats: Mutex::new(CacheStats::default()),
        }
    }

    pub fn stats(&self) -> CacheStats {
        *lock(&self.stats)
    }

    /// The evidence fetched for `digest` in `registry/repository` less than the TTL before `now`.
    pub fn fetched(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        now: Instant,
    ) -> Option<Arc<Vec<RawEvidence>>> {
        let key = FetchKey {
            registry: registry.to_string(),
            repository: repository.to_string(),
            digest: digest.clone(),
        };
        let mut map = lock(&self.fetched);
        let hit = match map.get(&key) {
            Some((at, list)) if now.saturating_duration_since(at) < self.fetch_ttl => Some(list),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        };
        drop(map);
        let mut stats = lock(&self.stats);
        match hit {
            Some(_) => stats.fetch_hits += 1,
            None => stats.fetch_misses += 1,
        }
        hit
    }

    /// Remembers what was fetched for `digest` at `now`. Only successful fetches are stored: an
    /// outage must be retried, not remembered.
    pub fn store_fetched(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
        evidence: Arc<Vec<RawEvidence>>,
        now: Instant,
    ) {
        if self.fetch_ttl.is_zero() {
            return;
        }
        let key = FetchKey {
            registry: registry.to_string(),
            repository: repository.to_string(),
            digest: digest.clone(),
        };
        lock(&self.fetched).insert(key, (now, evidence));
    }

    /// [`verify::verify`], one piece of evidence at a time, each result cached. `verify` treats
    /// every piece on its own, so the concatenation of per-piece results equals verifying the list.
    pub fn verify(&self, evidence: &[RawEvidence], candidate: &Digest, trust: &Trust) -> Verified {
        let trust_digest = self.trust_digest(trust);
        let mut out = Verified::default();
        for ev in evidence {
            let key = VerifyKey {
                evidence: evidence_digest(ev),
                candidate: candidate.clone(),
                trust: trust_digest.clone(),
            };
            let cached = lock(&self.verified).get(&key);
            let result = match cached {
                Some(r) => {
                    lock(&self.stats).verify_hits += 1;
                    r
                }
                None => {
                    lock(&self.stats).verify_misses += 1;
                    // Verified outside the lock: two evaluations racing on the same evidence both
                    // verify it once, which is cheaper than serialising all verification.
                    let r = Arc::new(verify::verify(std::slice::from_ref(ev), candidate, trust));
                    lock(&self.verified).insert(key, r.clone());
                    r
                }
            };
            out.materials.extend(result.materials.iter().cloned());
            out.rejections.extend(result.rejections.iter().cloned());
        }
        out
    }

    /// [`trust_digest`], reusing the root's digest while the configuration keeps the same root.
    fn trust_digest(&self, trust: &Trust) -> Digest {
        let root = trust.root.as_ref().map(|root| {
            let mut memo = lock(&self.root_digest);
            match memo.as_ref() {
                Some((seen, d)) if Arc::ptr_eq(seen, root) => d.clone(),
                _ => {
                    let d = root_digest(root);
                    *memo = Some((root.clone(), d.clone()));
                    d
                }
            }
        });
        signers_digest(trust, root.as_ref())
    }
}

/// The digest of one piece of evidence as fetched: everything `verify` reads from it. The layer
/// digest alone is not enough (a `.sig` signature and certificate are annotations beside it), and
/// the bytes are hashed here rather than trusting `ev.digest`, so a mismatching pair is cached
/// under what it really is.
fn evidence_digest(ev: &RawEvidence) -> Digest {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(ev.source.as_str().as_bytes());
    field(ev.media_type.as_bytes());
    field(ev.digest.as_str().as_bytes());
    field(Digest::of(&ev.bytes).as_str().as_bytes());
    for (k, v) in &ev.annotations {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    from_hasher(h)
}

/// A digest of the trust configuration: every signer's name and identity (key fingerprint, or
/// keyless issuer and subject) and the trusted root. Any change makes every cached result miss.
pub fn trust_digest(trust: &Trust) -> Digest {
    let root = trust.root.as_deref().map(root_digest);
    signers_digest(trust, root.as_ref())
}

fn signers_digest(trust: &Trust, root: Option<&Digest>) -> Digest {
    let signers: BTreeMap<&str, String> = trust
        .signers
        .iter()
        .map(|(name, s)| {
            let id = match s {
                Signer::Key { key, .. } => format!("key:{}:{}", key.algorithm(), key.fingerprint()),
                Signer::Keyless {
                    issuer,
                    subject,
                    claims,
                } => match subject {
                    SubjectMatch::Exact(s) => format!("keyless:{issuer}:exact:{s}{}", claims_id(claims)),
                    SubjectMatch::Regex(r) => format!("keyless:{issuer}:regex:{}{}", r.as_str(), claims_id(claims)),
                },
            };
            (name.as_str(), id)
        })
        .collect();
    let canonical = serde_json::json!({
        "signers": signers,
        "root": root.map(|d| d.as_str().to_string()),
    });
    Digest::of(canonical.to_string().as_bytes())
}

/// The trusted root's digest over its `Debug` form, which spells out every key, certificate and
/// validity window: the parsed root keeps no copy of the file's bytes, and any field `verify`
/// reads is in it.
fn root_digest(root: &crate::sigstore::TrustedRoot) -> Digest {
    Digest::of(format!("{root:?}").as_bytes())
}

fn from_hasher(h: Sha256) -> Digest {
    // A freshly computed sha256 always parses; the fallback keeps this free of `unwrap`.
    let hex = hex::encode(h.finalize());
    Digest::parse(&format!("sha256:{hex}")).unwrap_or_else(|_| Digest::of(hex.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::EvidenceSource;

    fn raw(bytes: &[u8], sig: &str) -> RawEvidence {
        RawEvidence {
            source: EvidenceSource::Sig,
            media_type: "application/vnd.dev.cosign.simplesigning.v1+json".into(),
            digest: Digest::of(bytes),
            bytes: bytes.to_vec(),
            annotations: [("dev.cosignproject.cosign/signature".to_string(), sig.to_string())].into(),
        }
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.get(&"a"), Some(1));
        lru.insert("c", 3);
        assert_eq!(lru.get(&"b"), None, "b was least recently used");
        assert_eq!(lru.get(&"a"), Some(1));
        assert_eq!(lru.get(&"c"), Some(3));
        assert_eq!(lru.len(), 2);
        lru.insert("c", 4);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.get(&"c"), Some(4));
    }

    #[test]
    fn second_verification_of_the_same_evidence_is_a_hit_with_the_same_result() {
        let cache = EvidenceCache::default();
        let trust = Trust::default();
        let candidate = Digest::of(b"image");
        let ev = vec![raw(b"payload", "c2ln"), raw(b"other", "c2ln")];
        let first = cache.verify(&ev, &candidate, &trust);
        let second = cache.verify(&ev, &candidate, &trust);
        assert_eq!(first, second);
        assert_eq!(first, verify::verify(&ev, &candidate, &trust));
        let s = cache.stats();
        assert_eq!((s.verify_misses, s.verify_hits), (2, 2));
    }

    #[test]
    fn a_different_signature_candidate_or_trust_misses() {
        let cache = EvidenceCache::default();
        let trust = Trust::default();
        let candidate = Digest::of(b"image");
        cache.verify(&[raw(b"p", "c2ln")], &candidate, &trust);
        cache.verify(&[raw(b"p", "b3RoZXI=")], &candidate, &trust);
        cache.verify(&[raw(b"p", "c2ln")], &Digest::of(b"other image"), &trust);
        let mut other = Trust::default();
        other.signers.insert(
            "ci".into(),
            Signer::Keyless {
                issuer: "https://issuer".into(),
                subject: SubjectMatch::Exact("me".into()),
                claims: vec![],
            },
        );
        cache.verify(&[raw(b"p", "c2ln")], &candidate, &other);
        assert_eq!(cache.stats().verify_hits, 0);
        assert_ne!(trust_digest(&trust), trust_digest(&other));
    }

    #[test]
    fn fetched_evidence_expires_after_the_ttl() {
        let cache = EvidenceCache::new(8, 8, Duration::from_secs(30));
        let d = Digest::of(b"image");
        let t0 = Instant::now();
        assert!(cache.fetched("r", "acme/api", &d, t0).is_none());
        cache.store_fetched("r", "acme/api", &d, Arc::new(vec![raw(b"p", "s")]), t0);
        assert!(cache
            .fetched("r", "acme/api", &d, t0 + Duration::from_secs(29))
            .is_some());
        assert!(
            cache.fetched("r", "acme/other", &d, t0).is_none(),
            "keyed by repository"
        );
        assert!(cache
            .fetched("r", "acme/api", &d, t0 + Duration::from_secs(30))
            .is_none());
        assert!(
            cache.fetched("r", "acme/api", &d, t0).is_none(),
            "expired entries are dropped"
        );
    }
}
