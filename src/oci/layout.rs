//! [`LayoutStore`]: evidence from OCI image layout directories, one per repository (image
//! `H/acme/api` lives in `D/acme/api/`), as skopeo, umoci and oras write them; for air-gapped use,
//! the demo, and tests. Tags are `org.opencontainers.image.ref.name` annotations in `index.json`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::build::{self, Blob};
use super::cosign::{self, Backend};
use super::manifest::{self, Ctx, Descriptor, Index, Limits, BUNDLE_PREFIX, REF_NAME};
use crate::gate::evidence::{EvidenceError, EvidenceStore};
use crate::gate::RawEvidence;
use crate::image::{Digest, ImageRef};

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Layout directories under `root`, standing in for registry `host`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LayoutStore {
    host: String,
    root: PathBuf,
    limits: Limits,
    /// Serialises read-modify-write of `index.json` within this process; other processes writing
    /// the same layout at the same moment can still lose an update (as with skopeo or oras).
    index_lock: Arc<Mutex<()>>,
}

impl LayoutStore {
    pub fn new(host: &str, root: impl Into<PathBuf>) -> Self {
        Self::with_limits(host, root, Limits::default())
    }

    pub fn with_limits(host: &str, root: impl Into<PathBuf>, limits: Limits) -> Self {
        LayoutStore {
            host: host.to_string(),
            root: root.into(),
            limits,
            index_lock: Arc::new(Mutex::new(())),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a small valid image (an OCI config and one uncompressed tar layer of `files`) into
    /// the layout of `repository`, tags it `tag`, and returns its manifest digest.
    pub fn create_image(&self, repository: &str, tag: &str, files: &[(&str, &[u8])]) -> Result<Digest, EvidenceError> {
        let dir = self.repo_dir(repository)?;
        let built = build::image(files).map_err(|e| self.write_err(e))?;
        for blob in &built.blobs {
            self.write_blob(&dir, &blob.bytes)?;
        }
        self.write_manifest(&dir, tag, manifest::OCI_MANIFEST, &built.manifest)?;
        Ok(Digest::of(&built.manifest))
    }

    /// Appends a cosign simple-signing layer (payload + base64 signature, plus `extra` annotations)
    /// to `sha256-<hex>.sig`.
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

    /// `root/<repository>`, refusing names that could leave `root` (`..`, absolute, odd bytes):
    /// image names come from environment repositories, which anyone with commit access can edit.
    fn repo_dir(&self, repository: &str) -> Result<PathBuf, EvidenceError> {
        let ok = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c != "."
                    && c != ".."
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            });
        if !ok {
            return Err(self
                .ctx(repository)
                .invalid("not a valid repository name for an OCI layout store"));
        }
        Ok(self.root.join(repository))
    }

    fn ctx<'a>(&'a self, reference: &'a str) -> Ctx<'a> {
        Ctx {
            store: &self.host,
            reference,
        }
    }

    fn write_err(&self, detail: impl ToString) -> EvidenceError {
        EvidenceError::Write {
            registry: self.host.clone(),
            detail: detail.to_string(),
        }
    }

    fn read_err(&self, path: &Path, e: std::io::Error) -> EvidenceError {
        EvidenceError::Unavailable {
            registry: self.host.clone(),
            detail: format!("cannot read {}: {e}", path.display()),
        }
    }

    /// `index.json`, or `None` when the repository has no layout yet.
    fn read_index(&self, dir: &Path) -> Result<Option<Index>, EvidenceError> {
        let path = dir.join("index.json");
        let bytes = match read_bounded(&path, self.limits.max_manifest_bytes) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(ReadError::TooBig(n)) => {
                return Err(self.ctx("index.json").invalid(format!(
                    "index.json is {n} bytes, over the limit of {} bytes (max manifest size)",
                    self.limits.max_manifest_bytes
                )))
            }
            Err(ReadError::Io(e)) => return Err(self.read_err(&path, e)),
        };
        manifest::parse_index(&bytes, None, &self.limits, self.ctx("index.json")).map(Some)
    }

    /// The descriptor tagged `tag` (the last one, should a tool have left duplicates).
    fn lookup_tag(&self, dir: &Path, tag: &str) -> Result<Option<Descriptor>, EvidenceError> {
        Ok(self.read_index(dir)?.and_then(|idx| {
            idx.manifests
                .into_iter()
                .rev()
                .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        }))
    }

    /// A blob by digest, checked against `size` and the digest; `None` if the file is absent.
    fn read_blob(
        &self,
        dir: &Path,
        digest: &Digest,
        size: Option<u64>,
        max: u64,
    ) -> Result<Option<Vec<u8>>, EvidenceError> {
        let path = dir.join("blobs/sha256").join(digest.hex());
        let ctx = self.ctx(digest.as_str());
        let bytes = match read_bounded(&path, max) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(ReadError::TooBig(n)) => {
                return Err(ctx.invalid(format!(
                    "blob is {n} bytes, over the limit of {max} bytes (max blob size)"
                )))
            }
            Err(ReadError::Io(e)) => return Err(self.read_err(&path, e)),
        };
        manifest::check_blob(digest, size.unwrap_or(bytes.len() as u64), &bytes, ctx)?;
        Ok(Some(bytes))
    }

    fn get_manifest_sync(&self, image: &ImageRef, reference: &str) -> Result<Option<Vec<u8>>, EvidenceError> {
        let dir = self.repo_dir(&image.repository())?;
        let (digest, size) = match Digest::parse(reference) {
            Ok(d) => (d, None),
            Err(_) => match self.lookup_tag(&dir, reference)? {
                Some(desc) => (
                    manifest::check_descriptor(&desc, &self.limits, self.ctx(reference))?,
                    Some(desc.size),
                ),
                None => return Ok(None),
            },
        };
        match self.read_blob(&dir, &digest, size, self.limits.max_manifest_bytes) {
            // Reported with the manifest limit's name: this blob is a manifest.
            Err(EvidenceError::Invalid { detail, .. }) if detail.contains("max blob size") => Err(self
                .ctx(reference)
                .invalid(detail.replace("max blob size", "max manifest size"))),
            Ok(None) if size.is_some() => Err(self
                .ctx(reference)
                .invalid(format!("index.json tags {digest}, which is not in blobs/"))),
            other => other,
        }
    }

    fn get_blob_sync(&self, image: &ImageRef, desc: &Descriptor) -> Result<Vec<u8>, EvidenceError> {
        let dir = self.repo_dir(&image.repository())?;
        let digest = manifest::check_descriptor(desc, &self.limits, self.ctx(&desc.digest))?;
        self.read_blob(&dir, &digest, Some(desc.size), self.limits.max_blob_bytes)?
            .ok_or_else(|| {
                self.ctx(&desc.digest)
                    .invalid("the manifest lists a blob the layout does not have")
            })
    }

    fn bundle_referrers_sync(&self, image: &ImageRef, digest: &Digest) -> Result<Vec<Descriptor>, EvidenceError> {
        let dir = self.repo_dir(&image.repository())?;
        let Some(index) = self.read_index(&dir)? else {
            return Ok(Vec::new());
        };
        // Referrers copied by oras sit untagged in index.json; the cosign / @sigstore/oci tag
        // fallback is an index at `sha256-<hex>`. Both count; the subject is checked later.
        let fallback_tag = digest.cosign_tag("");
        let mut out: Vec<Descriptor> = index
            .manifests
            .iter()
            .filter(|d| d.artifact_type.as_deref().is_some_and(|t| t.starts_with(BUNDLE_PREFIX)))
            .cloned()
            .collect();
        if let Some(desc) = index
            .manifests
            .iter()
            .rev()
            .find(|d| d.annotations.get(REF_NAME) == Some(&fallback_tag))
        {
            let at = manifest::check_descriptor(desc, &self.limits, self.ctx(&fallback_tag))?;
            if let Some(bytes) = self.read_blob(&dir, &at, Some(desc.size), self.limits.max_manifest_bytes)? {
                let fallback = manifest::parse_index(
                    &bytes,
                    Some(self.limits.max_layers),
                    &self.limits,
                    self.ctx(&fallback_tag),
                )?;
                out.extend(fallback.manifests);
            }
        }
        out.dedup_by(|a, b| a.digest == b.digest);
        Ok(out)
    }

    /// Creates the layout skeleton if needed: `oci-layout`, an empty `index.json`, `blobs/sha256`.
    fn ensure_layout(&self, dir: &Path) -> Result<(), EvidenceError> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(|e| self.write_err(format!("{}: {e}", dir.display())))?;
        if !dir.join("oci-layout").exists() {
            write_atomic(&dir.join("oci-layout"), OCI_LAYOUT.as_bytes()).map_err(|e| self.write_err(e))?;
        }
        if !dir.join("index.json").exists() {
            write_atomic(&dir.join("index.json"), &manifest::to_bytes(&Index::empty()))
                .map_err(|e| self.write_err(e))?;
        }
        Ok(())
    }

    fn write_blob(&self, dir: &Path, bytes: &[u8]) -> Result<Digest, EvidenceError> {
        self.ensure_layout(dir)?;
        let digest = Digest::of(bytes);
        let path = dir.join("blobs/sha256").join(digest.hex());
        // Content-addressed: an existing file of the right size is the same blob.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
            return Ok(digest);
        }
        write_atomic(&path, bytes).map_err(|e| self.write_err(e))?;
        Ok(digest)
    }

    /// Stores the manifest blob, then points `tag` at it in `index.json` (temp file + rename, so a
    /// reader sees the old index or the new one, never half of one).
    fn write_manifest(&self, dir: &Path, tag: &str, media_type: &str, bytes: &[u8]) -> Result<(), EvidenceError> {
        self.write_blob(dir, bytes)?;
        let _guard = self.index_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut index = self.read_index(dir)?.unwrap_or_else(Index::empty);
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut desc = Descriptor::of(media_type, bytes);
        desc.annotations.insert(REF_NAME.to_string(), tag.to_string());
        index.manifests.push(desc);
        write_atomic(&dir.join("index.json"), &manifest::to_bytes(&index)).map_err(|e| self.write_err(e))
    }

    /// Runs blocking file I/O off the async runtime.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(LayoutStore) -> Result<T, EvidenceError> + Send + 'static,
    ) -> Result<T, EvidenceError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| EvidenceError::Unavailable {
                registry: self.host.clone(),
                detail: format!("layout I/O task failed: {e}"),
            })?
    }
}

enum ReadError {
    TooBig(u64),
    Io(std::io::Error),
}

/// Reads a file of at most `max` bytes; `None` if it does not exist. The size is checked before
/// reading, and the read itself is bounded in case the file grows meanwhile.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let len = file.metadata().map_err(ReadError::Io)?.len();
    if len > max {
        return Err(ReadError::TooBig(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut buf).map_err(ReadError::Io)?;
    if buf.len() as u64 > max {
        return Err(ReadError::TooBig(buf.len() as u64));
    }
    Ok(Some(buf))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{} has no parent folder", path.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| format!("{}: {}", path.display(), e.error))?;
    Ok(())
}

#[async_trait]
impl Backend for LayoutStore {
    fn store_name(&self) -> &str {
        &self.host
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn get_manifest(&self, image: &ImageRef, reference: &str) -> Result<Option<Vec<u8>>, EvidenceError> {
        let (image, reference) = (image.clone(), reference.to_string());
        self.blocking(move |s| s.get_manifest_sync(&image, &reference)).await
    }

    async fn get_blob(&self, image: &ImageRef, desc: &Descriptor) -> Result<Vec<u8>, EvidenceError> {
        let (image, desc) = (image.clone(), desc.clone());
        self.blocking(move |s| s.get_blob_sync(&image, &desc)).await
    }

    async fn put_blob(&self, image: &ImageRef, blob: &Blob) -> Result<(), EvidenceError> {
        let (image, bytes) = (image.clone(), blob.bytes.clone());
        self.blocking(move |s| s.write_blob(&s.repo_dir(&image.repository())?, &bytes).map(|_| ()))
            .await
    }

    async fn put_manifest(
        &self,
        image: &ImageRef,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), EvidenceError> {
        let (image, tag, media_type, bytes) = (image.clone(), tag.to_string(), media_type.to_string(), bytes.to_vec());
        self.blocking(move |s| s.write_manifest(&s.repo_dir(&image.repository())?, &tag, &media_type, &bytes))
            .await
    }

    async fn bundle_referrers(&self, image: &ImageRef, digest: &Digest) -> Result<Vec<Descriptor>, EvidenceError> {
        let (image, digest) = (image.clone(), digest.clone());
        self.blocking(move |s| s.bundle_referrers_sync(&image, &digest)).await
    }
}

#[async_trait]
impl EvidenceStore for LayoutStore {
    async fn resolve(&self, image: &ImageRef) -> Result<Digest, EvidenceError> {
        if let Some(d) = &image.digest {
            return Ok(d.clone());
        }
        let tag = image.tag.clone().unwrap_or_else(|| "latest".to_string());
        let shown = image.to_string();
        let found = {
            let (image, tag) = (image.clone(), tag.clone());
            self.blocking(move |s| s.lookup_tag(&s.repo_dir(&image.repository())?, &tag))
                .await?
        };
        let desc = found.ok_or_else(|| EvidenceError::NotFound {
            registry: self.host.clone(),
            reference: shown.clone(),
        })?;
        manifest::check_descriptor(&desc, &self.limits, self.ctx(&shown))
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

    #[tokio::test]
    async fn refuses_repository_names_that_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayoutStore::new("example.com", dir.path());
        for bad in ["example.com/../etc/x", "example.com/a/./b", "example.com/A/b"] {
            let image = ImageRef::parse(&format!("{bad}:1")).unwrap();
            assert!(
                matches!(store.resolve(&image).await, Err(EvidenceError::Invalid { .. })),
                "{bad}"
            );
        }
        assert!(store.create_image("../x", "1", &[]).is_err());
    }

    #[tokio::test]
    async fn tags_in_index_json_resolve_and_retagging_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayoutStore::new("example.com", dir.path());
        let a = store.create_image("acme/api", "1.0", &[("a", b"a")]).unwrap();
        let b = store.create_image("acme/api", "1.0", &[("b", b"b")]).unwrap();
        let image = ImageRef::parse("example.com/acme/api:1.0").unwrap();
        assert_ne!(a, b);
        assert_eq!(store.resolve(&image).await.unwrap(), b);
        let index = std::fs::read_to_string(dir.path().join("acme/api/index.json")).unwrap();
        assert_eq!(index.matches(REF_NAME).count(), 1);
        let missing = ImageRef::parse("example.com/acme/api:2.0").unwrap();
        assert!(matches!(
            store.resolve(&missing).await,
            Err(EvidenceError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_tampered_blob_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayoutStore::new("example.com", dir.path());
        let d = store.create_image("acme/api", "1", &[("a", b"a")]).unwrap();
        let image = ImageRef::parse("example.com/acme/api:1").unwrap();
        store
            .attach_attestation(&image, &d, b"{\"payload\":\"\"}", "https://example.com/p")
            .await
            .unwrap();
        let m = cosign::read_manifest(&store, &image, &d.cosign_tag("att"))
            .await
            .unwrap()
            .unwrap();
        let blob = dir.path().join("acme/api/blobs/sha256").join(&m.layers[0].digest[7..]);
        std::fs::write(&blob, b"{\"payload\":\"X\"}").unwrap();
        let err = store.fetch(&image, &d).await.unwrap_err();
        assert!(matches!(err, EvidenceError::Invalid { .. }), "{err}");
    }
}
