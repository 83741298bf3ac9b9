//! Loads `tollgate.yaml` (SPEC §3): parse into a positioned tree, decode it into the typed [`Config`]
//! collecting every problem as a [`Diagnostic`], then check cross-references (contracts, signers,
//! policies, environments, promotion cycles). Nothing is returned unless all of it holds, so the
//! daemon never starts on a half-valid configuration. The per-section schema is in `schema.rs`;
//! this file holds the API, the generic typed accessors and the cross-reference checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::yaml::{self, Loc, Node, Value};
use super::Config;

pub(super) const DURATION_HINT: &str = "a duration such as 30s, 5m, 1h or 1h30m";

/// One problem in a configuration file, with where it is and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The configuration file, as given to [`load`] / [`parse`].
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// `policies.prod.contract`, `contracts.release.materials[2].kind`; empty for the whole file.
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key_path.is_empty() {
            write!(f, "{}: ", self.key_path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the configuration file: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, in file order; displayed one per line.
    #[error("{}", display_lines(.diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

impl ConfigError {
    /// The problems found; empty for an unreadable file.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid { diagnostics } => diagnostics,
        }
    }
}

fn display_lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates configuration `text` that was read from `path`. Relative paths inside it are resolved
/// against `path`'s folder and returned absolute; referenced key, trust-root and Rego files are read.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut cx = Ctx::new(path);
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            cx.err(e.loc, "", e.message);
            return Err(cx.finish());
        }
    };
    let config = cx.config(&root);
    match config {
        Some(config) if cx.diags.is_empty() => Ok(config),
        _ => Err(cx.finish()),
    }
}

/// The named things that can be referred to from elsewhere in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Repository,
    Signer,
    Contract,
    Policy,
    Environment,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Repository => "repository",
            Kind::Signer => "signer",
            Kind::Contract => "contract",
            Kind::Policy => "policy",
            Kind::Environment => "environment",
        }
    }

    fn section(self) -> &'static str {
        match self {
            Kind::Repository => "repositories",
            Kind::Signer => "trust.signers",
            Kind::Contract => "contracts",
            Kind::Policy => "policies",
            Kind::Environment => "environments",
        }
    }
}

/// A name used somewhere, checked once every section has been read.
struct Reference {
    kind: Kind,
    name: String,
    loc: Loc,
    path: String,
}

/// A mapping's entries, with where its owner sits (for "missing key" diagnostics).
pub(super) struct Fields<'n> {
    pub(super) path: String,
    pub(super) owner: Loc,
    pub(super) entries: Vec<(&'n str, Loc, &'n Node)>,
}

impl<'n> Fields<'n> {
    pub(super) fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| *k == key)
    }

    /// The value at `key` with its key path; a `null` value counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<(&'n Node, String)> {
        self.entries
            .iter()
            .find(|(k, _, n)| *k == key && !matches!(n.value, Value::Null))
            .map(|(k, _, n)| (*n, child(&self.path, k)))
    }
}

/// The decoding state: where relative paths resolve, and everything found so far.
pub(super) struct Ctx {
    pub(super) file: PathBuf,
    base: PathBuf,
    diags: Vec<Diagnostic>,
    refs: Vec<Reference>,
    /// Every name defined per kind, even when its definition had errors, so a broken definition
    /// does not also produce "unknown X" at each use.
    defined: BTreeMap<Kind, BTreeSet<String>>,
    /// `environment → (promote_from, where it is written)`, kept apart from the decoded
    /// environments so a cycle is found even among environments with other errors.
    pub(super) promote_from: BTreeMap<String, (String, Loc)>,
}

impl Ctx {
    fn new(path: &Path) -> Self {
        Ctx {
            file: path.to_path_buf(),
            base: base_dir(path),
            diags: Vec::new(),
            refs: Vec::new(),
            defined: BTreeMap::new(),
            promote_from: BTreeMap::new(),
        }
    }

    fn finish(mut self) -> ConfigError {
        self.diags.sort_by_key(|d| (d.line, d.column));
        self.diags.dedup();
        ConfigError::Invalid {
            diagnostics: self.diags,
        }
    }

    pub(super) fn err(&mut self, loc: Loc, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            key_path: path.to_string(),
            message: message.into(),
        });
    }

    // ----- generic decoding -----

    /// `node` as a mapping whose keys must be among `allowed` (`noun` names them in the message).
    /// A `null` node is an empty mapping, so `registries:` with nothing under it is fine.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        owner: Loc,
        allowed: &[&str],
        noun: &str,
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Fields {
                    path: path.to_string(),
                    owner,
                    entries: Vec::new(),
                })
            }
            other => {
                let msg = format!(
                    "expected a mapping with keys {}, found {}",
                    allowed.join(", "),
                    other.describe()
                );
                self.err(node.loc, path, msg);
                return None;
            }
        };
        let mut fields = Fields {
            path: path.to_string(),
            owner,
            entries: Vec::new(),
        };
        for entry in entries {
            match entry.key.as_deref() {
                None => self.err(
                    entry.key_loc,
                    path,
                    format!("expected a {noun} (a plain string) as key"),
                ),
                Some(k) if allowed.contains(&k) => fields.entries.push((k, entry.key_loc, &entry.value)),
                Some(k) => {
                    let msg = format!("unknown {noun} {k:?}; expected one of: {}", allowed.join(", "));
                    self.err(entry.key_loc, &child(path, k), msg);
                }
            }
        }
        Some(fields)
    }

    /// `node` as a mapping from user-chosen names to entries (`repositories`, `policies`, …).
    pub(super) fn named<'n>(&mut self, node: &'n Node, path: &str, kind: Option<Kind>) -> Vec<(String, Loc, &'n Node)> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => return Vec::new(),
            other => {
                let msg = format!("expected a mapping of names to definitions, found {}", other.describe());
                self.err(node.loc, path, msg);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let Some(name) = entry.key.as_deref() else {
                self.err(entry.key_loc, path, "expected a name (a plain string) as key");
                continue;
            };
            if let Some(kind) = kind {
                self.defined.entry(kind).or_default().insert(name.to_string());
                // Names end up in commit subjects, trailers, branch names and metric labels.
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                    let msg = format!(
                        "invalid {} name {name:?}; expected letters, digits, '-', '_' or '.'",
                        kind.noun()
                    );
                    self.err(entry.key_loc, &child(path, name), msg);
                } else if kind == Kind::Repository && name.starts_with('.') {
                    // A repository's name is also its mirror folder (`state_dir/repos/<name>.git`).
                    let msg = format!(
                        "invalid repository name {name:?}; it becomes a folder under state_dir, so expected a name that does not start with '.'"
                    );
                    self.err(entry.key_loc, &child(path, name), msg);
                }
            }
            out.push((name.to_string(), entry.key_loc, &entry.value));
        }
        out
    }

    /// The value at a required key; reports it missing (at the owner) or null.
    pub(super) fn required<'n>(&mut self, f: &Fields<'n>, key: &str, expected: &str) -> Option<(&'n Node, String)> {
        if let Some(found) = f.get(key) {
            return Some(found);
        }
        let path = child(&f.path, key);
        match f.entries.iter().find(|(k, _, _)| *k == key) {
            Some((_, _, n)) => self.err(n.loc, &path, format!("expected {expected}, found nothing")),
            None => self.err(f.owner, &path, format!("missing required key; expected {expected}")),
        }
        None
    }

    /// Decodes an optional key: `Some(None)` when absent, `None` when present but invalid.
    pub(super) fn optional<'n, T>(
        &mut self,
        f: &Fields<'n>,
        key: &str,
        decode: impl FnOnce(&mut Self, &'n Node, &str) -> Option<T>,
    ) -> Option<Option<T>> {
        match f.get(key) {
            None => Some(None),
            Some((n, p)) => decode(self, n, &p).map(Some),
        }
    }

    pub(super) fn string(&mut self, node: &Node, path: &str, expected: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) if s.trim().is_empty() => {
                self.err(node.loc, path, format!("expected {expected}, found an empty string"));
                None
            }
            Value::Str(s) => Some(s.clone()),
            // `branch: 2024` is a string to the user, whatever YAML's core schema says.
            Value::Int(_, raw) | Value::Float(raw) => Some(raw.clone()),
            other => {
                self.err(
                    node.loc,
                    path,
                    format!("expected {expected}, found {}", other.describe()),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    node.loc,
                    path,
                    format!("expected true or false, found {}", other.describe()),
                );
                None
            }
        }
    }

    pub(super) fn count(&mut self, node: &Node, path: &str) -> Option<u32> {
        match &node.value {
            Value::Int(i, _) if *i >= 0 && *i <= i64::from(u32::MAX) => Some(*i as u32),
            other => {
                self.err(
                    node.loc,
                    path,
                    format!("expected a whole number ≥ 0, found {}", other.describe()),
                );
                None
            }
        }
    }

    pub(super) fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        match &node.value {
            Value::Str(s) => match humantime::parse_duration(s.trim()) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(
                        node.loc,
                        path,
                        format!("invalid duration {s:?} ({e}); expected {DURATION_HINT}"),
                    );
                    None
                }
            },
            Value::Int(_, raw) => {
                let msg = format!("the number {raw} has no unit; expected {DURATION_HINT}");
                self.err(node.loc, path, msg);
                None
            }
            other => {
                self.err(
                    node.loc,
                    path,
                    format!("expected {DURATION_HINT}, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// A path, made absolute against the configuration file's folder.
    pub(super) fn path(&mut self, node: &Node, path: &str, expected: &str) -> Option<PathBuf> {
        let s = self.string(node, path, expected)?;
        Some(resolve(&self.base, &s))
    }

    /// A path to a text file that must exist now, with its contents.
    pub(super) fn existing_file(&mut self, node: &Node, path: &str, expected: &str) -> Option<(PathBuf, String)> {
        let (file, bytes) = self.readable_file(node, path, expected)?;
        match String::from_utf8(bytes) {
            Ok(text) => Some((file, text)),
            Err(_) => {
                self.err(
                    node.loc,
                    path,
                    format!("{} is not a text file; expected {expected}", file.display()),
                );
                None
            }
        }
    }

    /// A path to a file that must exist and be readable now, with its bytes: secrets, CA and known_hosts
    /// files are read by `run` (at start-up or at the first fetch), so `validate` reads them too.
    pub(super) fn readable_file(&mut self, node: &Node, path: &str, expected: &str) -> Option<(PathBuf, Vec<u8>)> {
        let file = self.path(node, path, expected)?;
        match std::fs::read(&file) {
            Ok(bytes) => Some((file, bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.err(
                    node.loc,
                    path,
                    format!("file {} does not exist; expected {expected}", file.display()),
                );
                None
            }
            Err(e) => {
                self.err(
                    node.loc,
                    path,
                    format!("cannot read {}: {e}; expected {expected}", file.display()),
                );
                None
            }
        }
    }

    /// A readable file holding a secret (a token, a password, a webhook secret): blank content is refused,
    /// as `run` refuses it. Returns the path; the secret itself is not kept.
    pub(super) fn secret_file(&mut self, node: &Node, path: &str, expected: &str) -> Option<PathBuf> {
        let (file, bytes) = self.readable_file(node, path, expected)?;
        if bytes.trim_ascii().is_empty() {
            self.err(
                node.loc,
                path,
                format!("file {} is empty; expected {expected}", file.display()),
            );
            return None;
        }
        Some(file)
    }

    pub(super) fn list<'n>(&mut self, node: &'n Node, path: &str, expected: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            other => {
                self.err(
                    node.loc,
                    path,
                    format!("expected a list of {expected}, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// Picks the variant of a `{a} | {b, c}` mapping by which keys are present; keys of another
    /// variant are errors. Returns the index of the variant and its fields.
    pub(super) fn variant<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        owner: Loc,
        variants: &[&[&str]],
    ) -> Option<(usize, Fields<'n>)> {
        let all: Vec<&str> = variants.iter().flat_map(|v| v.iter().copied()).collect();
        let shapes = variants
            .iter()
            .map(|v| format!("{{{}}}", v.join(", ")))
            .collect::<Vec<_>>()
            .join(" or ");
        if !matches!(node.value, Value::Map(_)) {
            self.err(
                node.loc,
                path,
                format!("expected one of {shapes}, found {}", node.value.describe()),
            );
            return None;
        }
        let f = self.mapping(node, path, owner, &all, "key")?;
        let present: Vec<usize> = (0..variants.len())
            .filter(|i| variants[*i].iter().any(|k| f.has(k)))
            .collect();
        match present.as_slice() {
            [] => {
                self.err(node.loc, path, format!("expected one of {shapes}"));
                None
            }
            [one] => Some((*one, f)),
            [first, ..] => {
                let chosen = variants[*first];
                for (k, loc, _) in &f.entries {
                    if !chosen.contains(k) {
                        let msg = format!(
                            "cannot be combined with {}; expected one of {shapes}",
                            chosen.join(", ")
                        );
                        self.err(*loc, &child(path, k), msg);
                    }
                }
                None
            }
        }
    }

    pub(super) fn reference(&mut self, kind: Kind, name: String, node: &Node, path: &str) {
        self.refs.push(Reference {
            kind,
            name,
            loc: node.loc,
            path: path.to_string(),
        });
    }
    // ----- cross-references -----

    pub(super) fn check_references(&mut self) {
        let refs = std::mem::take(&mut self.refs);
        for r in refs {
            let known = self.defined.get(&r.kind).cloned().unwrap_or_default();
            if known.contains(&r.name) {
                continue;
            }
            let msg = if known.is_empty() {
                format!(
                    "unknown {} {:?}; `{}` defines none",
                    r.kind.noun(),
                    r.name,
                    r.kind.section()
                )
            } else {
                let list = known.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                format!("unknown {} {:?}; expected one of: {list}", r.kind.noun(), r.name)
            };
            self.err(r.loc, &r.path, msg);
        }
    }

    /// `promote_from` must form chains, not loops: a loop would promote an image around forever.
    pub(super) fn check_cycles(&mut self) {
        let edges = std::mem::take(&mut self.promote_from);
        let mut reported: BTreeSet<String> = BTreeSet::new();
        for start in edges.keys() {
            let mut chain: Vec<&str> = vec![start.as_str()];
            let mut cur = start.as_str();
            while let Some(up) = edges.get(cur).map(|(up, _)| up.as_str()) {
                if let Some(pos) = chain.iter().position(|c| *c == up) {
                    let cycle = &chain[pos..];
                    // Name the cycle once, at the environment that sorts first in it.
                    let first = cycle.iter().min().copied().unwrap_or(up);
                    if reported.insert(first.to_string()) {
                        let at = cycle.iter().position(|c| *c == first).unwrap_or(0);
                        let mut names: Vec<&str> = cycle[at..].iter().chain(cycle[..at].iter()).copied().collect();
                        // `chain` follows promote_from downstream→upstream; show the promotion order.
                        names.reverse();
                        names.rotate_right(1);
                        names.push(first);
                        let loc = edges.get(first).map_or_else(Loc::default, |(_, loc)| *loc);
                        let path = format!("{}.promote_from", child("environments", first));
                        let msg = format!(
                            "promotion cycle: {}; a promotion chain must start at an environment without promote_from",
                            names.join(" -> ")
                        );
                        self.err(loc, &path, msg);
                    }
                    break;
                }
                if !edges.contains_key(up) {
                    break;
                }
                chain.push(up);
                cur = up;
            }
        }
    }
}

/// `parent.key`, quoting keys that would make the path ambiguous (`registries."ghcr.io"`).
pub(super) fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain { key.to_string() } else { format!("{key:?}") };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// The folder relative paths are resolved against: the configuration file's, made absolute.
fn base_dir(config: &Path) -> PathBuf {
    let parent = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::path::absolute(parent)
        .map(|p| clean(&p))
        .unwrap_or_else(|_| parent.to_path_buf())
}

fn resolve(base: &Path, s: &str) -> PathBuf {
    let p = Path::new(s);
    if p.is_absolute() {
        clean(p)
    } else {
        clean(&base.join(p))
    }
}

/// Drops `.` components; `..` is kept, since resolving it lexically is wrong across symlinks.
fn clean(p: &Path) -> PathBuf {
    p.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
