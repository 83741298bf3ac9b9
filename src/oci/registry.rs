//! [`RegistryStore`]: evidence from one registry host over the OCI distribution API (oci-client),
//! with timeouts, size limits and an error mapping that turns outages into `defer`.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};
use tokio::sync::Semaphore;

use super::bounded::{BoundedGet, Got};
use super::build::{self, Blob};
use super::cosign::{self, Backend};
use super::manifest::{Descriptor, Limits, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use super::StoreError;
use crate::config;
use crate::gate::evidence::{EvidenceError, EvidenceStore};
use crate::gate::RawEvidence;
use crate::image::{Digest, ImageRef};

const ACCEPT: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST];

/// Requests in flight per registry host unless `registries.<host>.max_concurrency` says otherwise.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// One registry host. Cheap to clone (the HTTP client, its token cache and the concurrency permits
/// are shared).
#[derive(Clone)]
pub struct RegistryStore {
    host: String,
    client: Client,
    auth: OciAuth,
    limits: Limits,
    /// Bounds requests in flight to this host across all evaluations, so that many candidates at
    /// once (a daemon start, a big bump) do not trip the registry's rate limits or hold many
    /// connections open.
    permits: Arc<Semaphore>,
    /// Manifest reads that stop at the size limit; `None` only if its HTTP client could not be
    /// built for an unconfigured host, where oci-client's whole-body read (under the operation
    /// timeout) is the fallback.
    bounded: Option<Arc<BoundedGet>>,
}

impl std::fmt::Debug for RegistryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // oci-client's `RegistryAuth` Debug redacts secrets.
        f.debug_struct("RegistryStore")
            .field("host", &self.host)
            .field("auth", &self.auth)
            .finish()
    }
}

impl RegistryStore {
    /// A store for `host` as configured under `registries`, with the default [`Limits`].
    pub fn new(host: &str, cfg: &config::Registry) -> Result<Self, StoreError> {
        Self::with_limits(host, cfg, Limits::default())
    }

    pub fn with_limits(host: &str, cfg: &config::Registry, limits: Limits) -> Result<Self, StoreError> {
        let auth = super::auth::credentials(host, &cfg.auth)?;
        let client = client(host, cfg.insecure, &limits)?;
        let mut store = Self::from_parts(host, client, auth, limits);
        let bounded = BoundedGet::new(cfg.insecure, &limits).map_err(|e| StoreError::Client {
            host: host.to_string(),
            detail: e.to_string(),
        })?;
        store.bounded = Some(Arc::new(bounded));
        if let Some(n) = cfg.max_concurrency {
            store.permits = Arc::new(Semaphore::new(n.get()));
        }
        Ok(store)
    }

    /// An anonymous HTTPS store sharing `client` (for hosts the config does not name).
    pub(crate) fn from_parts(host: &str, client: Client, auth: OciAuth, limits: Limits) -> Self {
        RegistryStore {
            host: host.to_string(),
            client,
            auth,
            limits,
            permits: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENCY)),
            bounded: BoundedGet::new(false, &limits).ok().map(Arc::new),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Appends a cosign simple-signing layer (payload + base64 signature, plus `extra` annotations
    /// such as `dev.sigstore.cosign/certificate`) to `sha256-<hex>.sig`.
    pub async fn attach_signature(
        &self,
        image: &ImageRef,
        digest: &Digest,
        payload: &[u8],
        signature_b64: &str,
        extra: &BTreeMap<String, String>,
    ) -> Result<(), EvidenceError> {
        cosign::append(
            self,
            image,
            digest,
            "sig",
            build::signature_layer(payload, signature_b64, extra),
        )
        .await
    }

    /// Pushes a small image (one uncompressed tar layer of `files`) as `repository:tag` and returns
    /// its manifest digest. For the demo and tests, so that they need no skopeo.
    pub async fn push_test_image(
        &self,
        repository: &str,
        tag: &str,
        files: &[(&str, &[u8])],
    ) -> Result<Digest, EvidenceError> {
        let image = ImageRef::parse(&format!("{}/{repository}:{tag}", self.host)).map_err(|e| self.write_err(e))?;
        let built = build::image(files).map_err(|e| self.write_err(e))?;
        cosign::store(self, &image, tag, built).await
    }

    fn reference(&self, image: &ImageRef, reference: &str) -> Reference {
        if reference.starts_with("sha256:") {
            Reference::with_digest(self.host.clone(), image.repository(), reference.to_string())
        } else {
            Reference::with_tag(self.host.clone(), image.repository(), reference.to_string())
        }
    }

    /// Requests that take no `auth` argument use the credentials stored in the client.
    async fn ensure_auth(&self, r: &Reference) {
        self.client.store_auth_if_needed(r.resolve_registry(), &self.auth).await;
    }

    /// Runs one registry request: under a concurrency permit, under the whole-operation timeout
    /// (oci-client only bounds each connect and read, so a registry that trickles bytes could
    /// otherwise hold us forever), retried with backoff on transient answers within
    /// [`Limits::max_attempts`] and [`Limits::retry_budget`]. `op` makes a fresh request each time.
    async fn timed<T, F, Fut>(&self, reference: &str, mut op: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        let started = tokio::time::Instant::now();
        let budget = self.limits.retry_budget.max(self.limits.request_timeout);
        let mut attempt = 1;
        loop {
            let res = {
                // Never closed, so `acquire` cannot fail; if it ever did, run unbounded rather than fail.
                let _permit = self.permits.acquire().await.ok();
                let left = budget.saturating_sub(started.elapsed());
                tokio::time::timeout(self.limits.request_timeout.min(left), op()).await
            };
            let (retry, failure) = match res {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => (retryable(&e), classify(&self.host, reference, e)),
                Err(_) => (
                    false,
                    Failure::Other(EvidenceError::Unavailable {
                        registry: self.host.clone(),
                        detail: format!("{reference}: no answer within {:?}", self.limits.request_timeout),
                    }),
                ),
            };
            let wait = backoff(attempt);
            if !retry || attempt >= self.limits.max_attempts || started.elapsed() + wait >= budget {
                return Err(failure);
            }
            tracing::debug!(registry = %self.host, attempt, wait_ms = wait.as_millis() as u64, "registry request retried");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn write_err(&self, detail: impl ToString) -> EvidenceError {
        EvidenceError::Write {
            registry: self.host.clone(),
            detail: detail.to_string(),
        }
    }

    /// Push failures: outages stay `Unavailable` (retry later); the rest are write errors.
    fn push_failure(&self, f: Failure) -> EvidenceError {
        match f.into_error(&self.host, "") {
            e @ EvidenceError::Unavailable { .. } => e,
            e => self.write_err(e),
        }
    }
}

/// The reqwest-backed client: plain HTTP only for an `insecure` host, per-request timeouts, and
/// monolithic blob uploads (our blobs are small; chunked uploads differ between registries).
fn client(host: &str, insecure: bool, limits: &Limits) -> Result<Client, StoreError> {
    let protocol = if insecure {
        ClientProtocol::HttpsExcept(vec![host.to_string()])
    } else {
        ClientProtocol::Https
    };
    let config = ClientConfig {
        protocol,
        use_monolithic_push: true,
        connect_timeout: Some(limits.request_timeout),
        read_timeout: Some(limits.request_timeout),
        // Evidence hangs off the digest we were given; never pick a platform on our own.
        platform_resolver: None,
        user_agent: concat!("tollgate/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| StoreError::Client {
        host: host.to_string(),
        detail: e.to_string(),
    })
}

pub(crate) fn anonymous_client(limits: &Limits) -> Result<Client, StoreError> {
    client("", false, limits)
}

/// What went wrong, with "does not exist" kept apart: it is "no evidence" in some places and
/// `NotFound` in others.
#[derive(Debug)]
enum Failure {
    Missing,
    Other(EvidenceError),
}

impl Failure {
    fn into_error(self, host: &str, reference: &str) -> EvidenceError {
        match self {
            Failure::Missing => EvidenceError::NotFound {
                registry: host.to_string(),
                reference: reference.to_string(),
            },
            Failure::Other(e) => e,
        }
    }
}

fn classify(host: &str, reference: &str, e: OciDistributionError) -> Failure {
    let unavailable = |detail: String| {
        Failure::Other(EvidenceError::Unavailable {
            registry: host.to_string(),
            detail,
        })
    };
    let invalid = |detail: String| {
        Failure::Other(EvidenceError::Invalid {
            registry: host.to_string(),
            reference: reference.to_string(),
            detail,
        })
    };
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let has = |c: &OciErrorCode| codes.contains(&c);
            if has(&OciErrorCode::ManifestUnknown)
                || has(&OciErrorCode::NameUnknown)
                || has(&OciErrorCode::BlobUnknown)
                || has(&OciErrorCode::NotFound)
            {
                Failure::Missing
            } else if has(&OciErrorCode::Toomanyrequests)
                || has(&OciErrorCode::Unauthorized)
                || has(&OciErrorCode::Denied)
            {
                // Rate limits pass; credentials get fixed: both are worth a retry, neither an allow.
                unavailable(format!("{reference}: {envelope}"))
            } else {
                invalid(envelope.to_string())
            }
        }
        OciDistributionError::ServerError { code: 404, .. } | OciDistributionError::ImageManifestNotFoundError(_) => {
            Failure::Missing
        }
        OciDistributionError::ServerError { code, message, .. } if code >= 500 || code == 429 || code == 408 => {
            unavailable(format!("{reference}: HTTP {code} {}", truncate(&message)))
        }
        OciDistributionError::RequestError(e) => unavailable(format!("{reference}: {e}")),
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::RegistryTokenDecodeError(_) => unavailable(format!(
            "{reference}: authentication failed ({e}); check registries.\"{host}\".auth"
        )),
        OciDistributionError::DigestError(e) => invalid(format!("digest mismatch: {e}")),
        other => invalid(truncate(&other.to_string())),
    }
}

/// Answers worth asking again for: the registry is overloaded or rate limiting (429, 5xx, 408)
/// or the connection dropped. Everything else (not found, denied, malformed) answers the same way
/// on a second try.
fn retryable(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429 || *code == 408,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| e.code == OciErrorCode::Toomanyrequests)
        }
        // Connection refused, reset or closed mid-body; reqwest's own timeouts land here too.
        OciDistributionError::RequestError(_) => true,
        _ => false,
    }
}

/// Exponential backoff with jitter: about 200 ms, 400 ms, 800 ms … (each between half and the
/// whole of that), so that many evaluations deferred by the same outage do not retry in lockstep.
/// oci-client does not expose response headers, so a `Retry-After` cannot be read here; the
/// retry budget bounds the wait either way.
fn backoff(attempt: u32) -> Duration {
    use rand_core::RngCore;
    let base = Duration::from_millis(200).saturating_mul(1 << attempt.saturating_sub(1).min(6));
    let half = base / 2;
    let jitter = u64::from(rand_core::OsRng.next_u32()) % (half.as_millis() as u64 + 1);
    half + Duration::from_millis(jitter)
}

/// Registry error bodies are attacker-controlled text: keep what we log and record short.
fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// An in-memory sink for `pull_blob` that refuses to grow past the blob limit, so a registry
/// that lies about (or omits) a blob's length cannot make us buffer more than that.
struct LimitedBuf {
    buf: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl tokio::io::AsyncWrite for LimitedBuf {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.buf.len() as u64 + data.len() as u64 > self.limit {
            self.exceeded = true;
            return Poll::Ready(Err(std::io::Error::other("blob over the size limit")));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Backend for RegistryStore {
    fn store_name(&self) -> &str {
        &self.host
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn get_manifest(&self, image: &ImageRef, reference: &str) -> Result<Option<Vec<u8>>, EvidenceError> {
        let r = self.reference(image, reference);
        let max = self.limits.max_manifest_bytes;
        let got = match &self.bounded {
            Some(bounded) => {
                self.timed(reference, || bounded.get(&self.client, &self.auth, &r, ACCEPT, max))
                    .await
            }
            // oci-client reads the whole body before we can check its size; the operation timeout
            // bounds how much a hostile registry can send, and the limit is enforced right after.
            None => self
                .timed(reference, || self.client.pull_manifest_raw(&r, &self.auth, ACCEPT))
                .await
                .map(|(bytes, _)| Got::Body(bytes.to_vec())),
        };
        match got {
            Ok(Got::Body(bytes)) => Ok(Some(bytes)),
            Ok(Got::TooLarge { declared }) => Err(EvidenceError::Invalid {
                registry: self.host.clone(),
                reference: reference.to_string(),
                detail: match declared {
                    Some(n) => format!("manifest is {n} bytes, over the limit of {max} bytes (max manifest size)"),
                    None => format!("manifest is over the limit of {max} bytes (max manifest size); stopped reading"),
                },
            }),
            Err(Failure::Missing) => Ok(None),
            Err(f) => Err(f.into_error(&self.host, reference)),
        }
    }

    async fn get_blob(&self, image: &ImageRef, desc: &Descriptor) -> Result<Vec<u8>, EvidenceError> {
        let r = self.reference(image, &desc.digest);
        self.ensure_auth(&r).await;
        let limit = self.limits.max_blob_bytes;
        // Pass the digest alone: a descriptor's `urls` would make the client fetch from hosts the
        // manifest names, which a hostile manifest must not be able to choose. Each attempt gets
        // a fresh sink, so a retried download never appends to a partial one.
        let pull = || async {
            let mut sink = LimitedBuf {
                buf: Vec::new(),
                limit,
                exceeded: false,
            };
            let res = self.client.pull_blob(&r, desc.digest.as_str(), &mut sink).await;
            if sink.exceeded {
                return Ok(None);
            }
            res.map(|()| Some(sink.buf))
        };
        match self.timed(&desc.digest, pull).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(EvidenceError::Invalid {
                registry: self.host.clone(),
                reference: desc.digest.clone(),
                detail: format!("blob is over the limit of {limit} bytes (max blob size)"),
            }),
            // A blob listed in a manifest but missing is a broken manifest, not absent evidence.
            Err(Failure::Missing) => Err(EvidenceError::Invalid {
                registry: self.host.clone(),
                reference: desc.digest.clone(),
                detail: "the manifest lists a blob the registry does not have".to_string(),
            }),
            Err(f) => Err(f.into_error(&self.host, &desc.digest)),
        }
    }

    async fn put_blob(&self, image: &ImageRef, blob: &Blob) -> Result<(), EvidenceError> {
        let r = self.reference(image, &blob.descriptor.digest);
        self.ensure_auth(&r).await;
        let push = || self.client.push_blob(&r, blob.bytes.clone(), &blob.descriptor.digest);
        self.timed(&blob.descriptor.digest, push)
            .await
            .map(|_| ())
            .map_err(|f| self.push_failure(f))
    }

    async fn put_manifest(
        &self,
        image: &ImageRef,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), EvidenceError> {
        let r = self.reference(image, tag);
        self.ensure_auth(&r).await;
        let content_type = axum::http::HeaderValue::from_str(media_type).map_err(|e| self.write_err(e))?;
        let push = || self.client.push_manifest_raw(&r, bytes.to_vec(), content_type.clone());
        self.timed(tag, push)
            .await
            .map(|_| ())
            .map_err(|f| self.push_failure(f))
    }

    async fn bundle_referrers(&self, image: &ImageRef, digest: &Digest) -> Result<Vec<Descriptor>, EvidenceError> {
        let r = self.reference(image, digest.as_str());
        self.ensure_auth(&r).await;
        // The referrers API, falling back to the `sha256-<hex>` index tag (absent tag: empty).
        let index = match self
            .timed(digest.as_str(), || self.client.pull_referrers(&r, None))
            .await
        {
            Ok(index) => index,
            Err(Failure::Missing) => return Ok(Vec::new()),
            Err(f) => return Err(f.into_error(&self.host, digest.as_str())),
        };
        let total = index.manifests.len();
        let max = self.limits.max_layers.saturating_mul(16);
        if total > max {
            // Bundles are filtered from this list later; refuse absurd lists before converting.
            return Err(EvidenceError::Invalid {
                registry: self.host.clone(),
                reference: digest.cosign_tag(""),
                detail: format!(
                    "referrers index has {total} entries, over the limit of {max} (16 × max layers per manifest)"
                ),
            });
        }
        Ok(index
            .manifests
            .into_iter()
            .filter_map(|e| {
                Some(Descriptor {
                    media_type: e.media_type,
                    digest: e.digest,
                    size: u64::try_from(e.size).ok()?,
                    annotations: e.annotations.unwrap_or_default(),
                    artifact_type: e.artifact_type,
                    other: serde_json::Map::new(),
                })
            })
            .collect())
    }
}

#[async_trait]
impl EvidenceStore for RegistryStore {
    async fn resolve(&self, image: &ImageRef) -> Result<Digest, EvidenceError> {
        if let Some(d) = &image.digest {
            return Ok(d.clone());
        }
        let tag = image.tag.clone().unwrap_or_else(|| "latest".to_string());
        let r = self.reference(image, &tag);
        let shown = image.to_string();
        let digest = self
            .timed(&shown, || self.client.fetch_manifest_digest(&r, &self.auth))
            .await
            .map_err(|f| f.into_error(&self.host, &shown))?;
        Digest::parse(&digest).map_err(|e| EvidenceError::Invalid {
            registry: self.host.clone(),
            reference: shown,
            detail: format!("the registry answered with an unusable digest: {e}"),
        })
    }

    async fn fetch(&self, image: &ImageRef, digest: &Digest) -> Result<Vec<RawEvidence>, EvidenceError> {
        cosign::fetch(self, image, digest).await
    }

    async fn attach_attestation(
        &self,
        image: &ImageRef,
        digest: &Digest,
        envelope: &[u8],
        predicate_type: &str,
    ) -> Result<(), EvidenceError> {
        cosign::append(
            self,
            image,
            digest,
            "att",
            build::attestation_layer(envelope, predicate_type),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_registry_answers() {
        let not_found = OciDistributionError::ServerError {
            code: 404,
            url: "u".into(),
            message: "".into(),
        };
        assert!(matches!(classify("h", "r", not_found), Failure::Missing));
        let busy = OciDistributionError::ServerError {
            code: 503,
            url: "u".into(),
            message: "x".repeat(10_000),
        };
        match classify("h", "r", busy) {
            Failure::Other(e @ EvidenceError::Unavailable { .. }) => assert!(e.to_string().len() < 400),
            other => panic!("{other:?}"),
        }
        let bad = OciDistributionError::ManifestParsingError("nope".into());
        assert!(matches!(
            classify("h", "r", bad),
            Failure::Other(EvidenceError::Invalid { .. })
        ));
    }
}
