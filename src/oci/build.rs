//! Pure builders for what tollgate writes: small valid images (for `demo` and tests), and cosign
//! `.sig` / `.att` manifests with one more layer appended. No I/O: the stores push the bytes.

use std::collections::BTreeMap;

use super::manifest::{
    Descriptor, ImageManifest, COSIGN_SIGNATURE, OCI_CONFIG, OCI_EMPTY, OCI_LAYER_TAR, OCI_MANIFEST, PREDICATE_TYPE,
    SIMPLE_SIGNING,
};
use crate::dsse;

/// A blob to store and the descriptor that points at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            descriptor: Descriptor::of(media_type, &bytes),
            bytes,
        }
    }
}

/// An image or artifact ready to store: its blobs (config first) and its manifest bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub blobs: Vec<Blob>,
    pub manifest: Vec<u8>,
}

/// The OCI "empty" config `{}`. Used as the config of the `.sig` / `.att` manifests tollgate writes:
/// verifiers never read it, and OCI 1.1 recommends it for artifacts (with `artifactType` set).
pub fn empty_config() -> Blob {
    Blob::new(OCI_EMPTY, b"{}".to_vec())
}

/// A minimal runnable-shaped image: an OCI config naming one uncompressed tar layer of `files`.
pub fn image(files: &[(&str, &[u8])]) -> Result<Built, String> {
    let layer = Blob::new(OCI_LAYER_TAR, tar(files)?);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.descriptor.digest]},
    });
    let config = Blob::new(OCI_CONFIG, super::manifest::to_bytes(&config));
    let manifest = ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: config.descriptor.clone(),
        layers: vec![layer.descriptor.clone()],
        subject: None,
        annotations: BTreeMap::new(),
        other: serde_json::Map::new(),
    };
    Ok(Built {
        manifest: super::manifest::to_bytes(&manifest),
        blobs: vec![config, layer],
    })
}

/// The manifest at a cosign tag after appending `layer`: the existing layers are kept as they were
/// (so earlier signatures stay byte-identical); the config becomes the empty config.
pub fn append_layer(existing: Option<ImageManifest>, layer: Blob) -> Built {
    let config = empty_config();
    let artifact_type = Some(layer.descriptor.media_type.clone());
    let mut manifest = existing.unwrap_or_else(|| ImageManifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        artifact_type: None,
        config: config.descriptor.clone(),
        layers: Vec::new(),
        subject: None,
        annotations: BTreeMap::new(),
        other: serde_json::Map::new(),
    });
    // A cosign-written config lists the layers' diff_ids and would go stale: replace it.
    manifest.config = config.descriptor.clone();
    manifest.media_type = Some(OCI_MANIFEST.to_string());
    manifest.artifact_type = manifest.artifact_type.or(artifact_type);
    manifest.layers.push(layer.descriptor.clone());
    Built {
        manifest: super::manifest::to_bytes(&manifest),
        blobs: vec![config, layer],
    }
}

/// A `.att` layer: the DSSE envelope, annotated with its predicate type as `cosign attest` does.
pub fn attestation_layer(envelope: &[u8], predicate_type: &str) -> Blob {
    let mut blob = Blob::new(dsse::MEDIA_TYPE, envelope.to_vec());
    blob.descriptor.annotations = BTreeMap::from([(PREDICATE_TYPE.to_string(), predicate_type.to_string())]);
    blob
}

/// A `.sig` layer: the simple-signing payload with its base64 signature as an annotation, plus any
/// extra annotations (certificate, chain, bundle) the caller provides.
pub fn signature_layer(payload: &[u8], signature_b64: &str, extra: &BTreeMap<String, String>) -> Blob {
    let mut blob = Blob::new(SIMPLE_SIGNING, payload.to_vec());
    let mut annotations = extra.clone();
    annotations.insert(COSIGN_SIGNATURE.to_string(), signature_b64.to_string());
    blob.descriptor.annotations = annotations;
    blob
}

/// An uncompressed ustar archive of regular files (mode 0644, mtime 0 so builds are reproducible).
/// Uncompressed is the simplest valid OCI layer; no tar crate is needed for a handful of files.
pub fn tar(files: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (name, data) in files {
        let name = name.trim_start_matches('/');
        if name.is_empty() || name.len() > 100 || name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(format!(
                "tar entry name `{name}` must be a relative path of at most 100 bytes"
            ));
        }
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut header[100..108], 0o644);
        put_octal(&mut header[108..116], 0);
        put_octal(&mut header[116..124], 0);
        put_octal(&mut header[124..136], data.len() as u64);
        put_octal(&mut header[136..148], 0);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field read as eight spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
        let chk = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(chk.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(&s.as_bytes()[s.len() - field.len()..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_is_block_aligned_with_a_valid_header_checksum() {
        let t = tar(&[("etc/motd", b"hello\n")]).unwrap();
        assert_eq!(t.len(), 512 + 512 + 1024);
        let stored = u64::from_str_radix(std::str::from_utf8(&t[148..154]).unwrap(), 8).unwrap();
        let mut h = t[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u64::from(b)).sum::<u64>());
        assert_eq!(&t[512..518], b"hello\n");
        assert!(tar(&[("../x", b"")]).is_err());
    }

    #[test]
    fn appending_keeps_earlier_layers_byte_identical() {
        let first = append_layer(None, attestation_layer(b"{\"a\":1}", "https://example.com/a"));
        let m: ImageManifest = serde_json::from_slice(&first.manifest).unwrap();
        let second = append_layer(
            Some(m.clone()),
            attestation_layer(b"{\"b\":2}", "https://example.com/b"),
        );
        let m2: ImageManifest = serde_json::from_slice(&second.manifest).unwrap();
        assert_eq!(m2.layers.len(), 2);
        assert_eq!(m2.layers[0], m.layers[0]);
        assert_eq!(m2.layers[1].annotations[PREDICATE_TYPE], "https://example.com/b");
        assert_eq!(m2.config.media_type, OCI_EMPTY);
        assert_eq!(m2.artifact_type.as_deref(), Some(dsse::MEDIA_TYPE));
    }
}
