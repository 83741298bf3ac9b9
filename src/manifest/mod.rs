//! Image references in environment repositories (SPEC §2): found in Kustomize, raw manifests, Helm
//! values and Flux `HelmRelease`s, and rewritten in place so that only the replaced scalar changes.
//!
//! - [`yaml`]: saphyr's positioned tree, re-measured in bytes; quoting of replacement scalars.
//! - [`kustomize`], [`raw`], [`helm`]: one finder per form, each yielding [`Found`] references.
//! - [`rewrite`]: the byte edits for one reference, and the check that the output reads back right.
//!
//! Everything here is pure: text in, locations or text out.

mod helm;
mod kustomize;
mod raw;
mod rewrite;
mod yaml;

use std::fmt;

use crate::image::{ImageRef, ImageRefError};

use yaml::{Node, Source};

/// Which of the forms of SPEC §2 a reference was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    Kustomize,
    Raw,
    Helm,
    HelmRelease,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Kustomize => "kustomize",
            Form::Raw => "raw",
            Form::Helm => "helm",
            Form::HelmRelease => "helmrelease",
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image reference in one file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ImageLocation {
    pub file: String,
    pub form: Form,
    /// Where in its document: `spec.template.spec.containers[0].image`, `images[2]`, `worker.image`.
    pub key_path: String,
    /// 1-based line of the reference (of the `image:` key for Helm, of the entry for Kustomize).
    pub line: usize,
    pub image: ImageRef,
    /// 0-based index of the YAML document in the file (`---` separated); with `key_path` it
    /// identifies the reference across edits of the file.
    pub document: usize,
}

/// What to look for beyond the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetectOptions {
    /// Key paths of Helm image mappings (`image`, `worker.image`), relative to the values root.
    /// Empty: any mapping under a key named `image` that has a `repository`.
    pub helm_image_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}:{line}:{column}: invalid YAML: {message}")]
    Yaml {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: not UTF-8 text, so not a manifest tollgate can read")]
    NotUtf8 { file: String },
    #[error("{file}:{line}: `{key_path}` is not a usable image reference: {source}")]
    BadImage {
        file: String,
        line: usize,
        key_path: String,
        source: ImageRefError,
    },
    #[error("{file}: no image named `{name}` in this file")]
    NotFound { file: String, name: String },
    #[error("{file}:{line}: cannot rewrite `{key_path}` in place: {why}; edit this reference by hand")]
    Unsupported {
        file: String,
        line: usize,
        key_path: String,
        why: String,
    },
    #[error(
        "{file}: after rewriting, `{key_path}` reads back as {found} instead of {expected}; \
         the rewrite was abandoned"
    )]
    RewriteCheck {
        file: String,
        key_path: String,
        expected: String,
        found: String,
    },
}

/// A reference together with the nodes a rewrite needs.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub location: ImageLocation,
    /// Byte offset of the reference, to keep results in document order.
    pub pos: usize,
    pub slots: Slots,
}

#[derive(Debug, Clone)]
pub(crate) enum Slots {
    /// The whole reference in one scalar (`image: repo:tag@digest`).
    Whole { scalar: Node, in_flow: bool },
    /// Tag and digest in their own keys (Kustomize, Helm).
    Fields {
        tag: Option<Node>,
        digest: Option<Node>,
        /// The value after which a missing `digest` goes, and the column of its key.
        anchor: Node,
        anchor_col: usize,
        flow: bool,
    },
}

/// A path inside a document, printed as `a.b[0].c`.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyPath(String);

impl KeyPath {
    pub fn key(&self, k: &str) -> KeyPath {
        if self.0.is_empty() {
            KeyPath(k.to_string())
        } else {
            KeyPath(format!("{}.{k}", self.0))
        }
    }

    pub fn index(&self, i: usize) -> KeyPath {
        KeyPath(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a finder is working, for locations and errors.
pub(crate) struct Ctx<'a> {
    pub file: &'a str,
    pub document: usize,
    pub opts: &'a DetectOptions,
}

impl Ctx<'_> {
    pub fn location(&self, form: Form, key_path: &KeyPath, line: usize, image: ImageRef) -> ImageLocation {
        ImageLocation {
            file: self.file.to_string(),
            form,
            key_path: key_path.as_str().to_string(),
            line,
            image,
            document: self.document,
        }
    }

    pub fn bad_image(&self, key_path: &KeyPath, line: usize, source: ImageRefError) -> ManifestError {
        ManifestError::BadImage {
            file: self.file.to_string(),
            line,
            key_path: key_path.as_str().to_string(),
            source,
        }
    }
}

/// Builds a reference from separate fields, refusing a name that carries its own tag or digest
/// (which would make the fields ambiguous).
pub(crate) fn ref_from_fields(name: &str, tag: Option<&str>, digest: Option<&str>) -> Result<ImageRef, ImageRefError> {
    let mut s = name.to_string();
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(d);
    }
    let r = ImageRef::parse(&s)?;
    if r.name != name {
        return Err(ImageRefError::BadReference {
            input: s,
            why: "the name carries a tag or digest of its own",
        });
    }
    Ok(r)
}

/// Is this file a Kustomization by its name, as `kustomize build` looks for it?
fn is_kustomization_file(file: &str) -> bool {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    matches!(base, "kustomization.yaml" | "kustomization.yml" | "Kustomization")
}

pub(crate) fn scan(file: &str, text: &str, opts: &DetectOptions) -> Result<Vec<Found>, ManifestError> {
    let src = Source::new(text);
    let docs = yaml::parse(file, &src)?;
    let mut out = Vec::new();
    for (document, root) in &docs {
        let ctx = Ctx {
            file,
            document: *document,
            opts,
        };
        let kind = root.get("kind").and_then(Node::as_str);
        let api = root.get("apiVersion").and_then(Node::as_str).unwrap_or("");
        if is_kustomization_file(file) || (kind == Some("Kustomization") && api.starts_with("kustomize.config.k8s.io"))
        {
            kustomize::find(&ctx, root, &mut out)?;
            continue;
        }
        raw::find(&ctx, root, &mut out)?;
        if kind == Some("HelmRelease") {
            if let Some(values) = root.get("spec").and_then(|s| s.get("values")) {
                helm::find(
                    &ctx,
                    values,
                    &KeyPath::default().key("spec").key("values"),
                    Form::HelmRelease,
                    &mut out,
                )?;
            }
        } else {
            helm::find(&ctx, root, &KeyPath::default(), Form::Helm, &mut out)?;
        }
    }
    out.sort_by_key(|f| (f.location.document, f.pos));
    Ok(out)
}

/// Every image reference in one file, in document order.
pub fn find_images(file: &str, text: &str, opts: &DetectOptions) -> Result<Vec<ImageLocation>, ManifestError> {
    Ok(scan(file, text, opts)?.into_iter().map(|f| f.location).collect())
}

/// Rewrites every reference to the image whose effective name is `name` in this file so that it
/// points at `new` (name kept as written, tag from `new.tag` if Some, digest from `new.digest`).
/// Returns the new text and how many references changed. Only the replaced scalars change (and a
/// `digest` line is added where a Kustomize or Helm entry had none); the output is parsed again and
/// must read back as intended, or nothing is returned.
pub fn rewrite_image(
    file: &str,
    text: &str,
    name: &str,
    new: &ImageRef,
    opts: &DetectOptions,
) -> Result<(String, usize), ManifestError> {
    let found = scan(file, text, opts)?;
    let targets: Vec<&Found> = found.iter().filter(|f| f.location.image.name == name).collect();
    if targets.is_empty() {
        return Err(ManifestError::NotFound {
            file: file.to_string(),
            name: name.to_string(),
        });
    }
    let mut edits = Vec::new();
    let mut expected = Vec::new();
    let mut changed = 0;
    for f in &targets {
        let (mut e, want) = rewrite::plan(file, text, f, new)?;
        if !e.is_empty() {
            changed += 1;
        }
        edits.append(&mut e);
        expected.push((f.location.document, f.location.key_path.clone(), want));
    }
    let out = rewrite::apply(file, text, edits)?;
    rewrite::check(file, &out, opts, &found, &expected)?;
    Ok((out, changed))
}

#[cfg(test)]
mod tests;
