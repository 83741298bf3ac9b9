//! Image references and content digests: parsing and printing of `registry/repo[:tag][@sha256:…]`.

use std::fmt;
use std::str::FromStr;

/// A `sha256:<64 hex>` content digest. Only sha256 is accepted: it is what OCI registries and
/// cosign's tag layout use, and accepting others would widen what an attacker can feed us.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("`{input}` is not a sha256 digest: expected `sha256:` followed by 64 lowercase hex characters")]
    BadDigest { input: String },
    #[error("`{input}` is not an image reference: {why}")]
    BadReference { input: String, why: &'static str },
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, ImageRefError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| ImageRefError::BadDigest { input: s.to_string() })?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(ImageRefError::BadDigest { input: s.to_string() });
        }
        Ok(Digest(s.to_string()))
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// `sha256:3f9a1c…e2`: enough to recognise in a commit subject.
    pub fn short(&self) -> String {
        format!("sha256:{}…{}", &self.hex()[..6], &self.hex()[62..])
    }

    /// The tag cosign uses for attached artifacts: `sha256-<hex>.<suffix>`.
    pub fn cosign_tag(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            format!("sha256-{}", self.hex())
        } else {
            format!("sha256-{}.{}", self.hex(), suffix)
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = ImageRefError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl FromStr for Digest {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// An image reference as written in a manifest. `name` is everything before the tag and digest
/// (`ghcr.io/acme/payments-api`), kept as written so that rewrites do not normalise it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ImageRef {
    pub name: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self, ImageRefError> {
        let bad = |why| ImageRefError::BadReference {
            input: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Err(bad("it is empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("it contains whitespace"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // A tag follows the last ':' only if that ':' comes after the last '/' (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if i > rest.rfind('/').unwrap_or(0) => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
            return Err(bad("the repository name is malformed"));
        }
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("the tag is malformed"));
            }
        }
        Ok(ImageRef {
            name: name.to_string(),
            tag,
            digest,
        })
    }

    /// The registry host (`docker.io` when the name has none, as Docker resolves it).
    pub fn registry(&self) -> &str {
        match self.name.split_once('/') {
            Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
            _ => "docker.io",
        }
    }

    /// The repository path inside the registry (`acme/payments-api`; `library/nginx` for `nginx`).
    pub fn repository(&self) -> String {
        match self.name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                rest.to_string()
            }
            Some(_) => self.name.clone(),
            None => format!("library/{}", self.name),
        }
    }

    /// The same image pinned to a digest, keeping the tag for readers.
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// `name@digest`, the form tollgate promotes.
    pub fn pinned(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{}", self.name, d))
    }

    /// The last path component, used in commit subjects (`payments-api`).
    pub fn short_name(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:3f9a1c0000000000000000000000000000000000000000000000000000000ee2";

    #[test]
    fn parses_registry_port_tag_and_digest() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/acme/api:1.4.2@{D}")).unwrap();
        assert_eq!(r.name, "127.0.0.1:5000/acme/api");
        assert_eq!(r.tag.as_deref(), Some("1.4.2"));
        assert_eq!(r.digest.as_ref().unwrap().as_str(), D);
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "acme/api");
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/acme/api:1.4.2@{D}"));
    }

    #[test]
    fn docker_hub_short_names_resolve_like_docker() {
        let r = ImageRef::parse("nginx").unwrap();
        assert_eq!(
            (r.registry(), r.repository().as_str(), r.tag.as_deref()),
            ("docker.io", "library/nginx", None)
        );
        let r = ImageRef::parse("acme/api:latest").unwrap();
        assert_eq!((r.registry(), r.repository().as_str()), ("docker.io", "acme/api"));
        let r = ImageRef::parse("localhost:5000/api").unwrap();
        assert_eq!((r.registry(), r.tag.as_deref()), ("localhost:5000", None));
    }

    #[test]
    fn rejects_malformed_references_and_digests() {
        for bad in ["", "a b", "api:", "/api", "api@sha256:abc", "api@md5:00", "api:-x"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(Digest::parse(&D.to_uppercase()).is_err());
    }

    #[test]
    fn cosign_tags_and_short_forms() {
        let d = Digest::parse(D).unwrap();
        assert_eq!(d.cosign_tag("att"), format!("sha256-{}.att", d.hex()));
        assert_eq!(d.short(), "sha256:3f9a1c…e2");
        assert_eq!(
            Digest::of(b"").hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
