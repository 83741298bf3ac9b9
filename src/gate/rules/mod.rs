//! The built-in evidence rules of SPEC §3 (`max_vulnerabilities`, `sarif_max_errors`, `provenance`,
//! `chainloop`), one file per rule. Each is a pure function over the verified materials of one
//! candidate that returns one [`RuleResult`]; which materials it is handed is decided in
//! [`crate::gate::policy`].
//!
//! Everything read here comes from signed but otherwise arbitrary JSON: nothing may panic on it, and
//! a document that cannot be read never counts as a clean one.

pub mod chainloop;
pub mod provenance;
pub mod sarif;
pub mod vulns;

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde_json::Value;

use crate::gate::{Material, MaterialKind, Outcome, RuleResult};
use crate::image::Digest;
use crate::reason::ReasonCode;

/// Does `m` belong to `kind`, by its classified kind or by its predicate type?
pub(crate) fn is_kind(m: &Material, kind: MaterialKind) -> bool {
    m.kind == kind || kind.accepts_predicate(&m.predicate_type)
}

/// The materials of one kind, one per envelope: verification yields one [`Material`] per signer that
/// verified it, and a document signed twice must not be counted twice.
pub(crate) fn distinct(materials: &[Material], keep: impl Fn(&Material) -> bool) -> Vec<&Material> {
    let mut seen = BTreeSet::new();
    materials
        .iter()
        .filter(|m| keep(m) && seen.insert(m.digest.clone()))
        .collect()
}

/// The statement's predicate (`Null` if it has none).
pub(crate) fn predicate(m: &Material) -> &Value {
    m.statement.get("predicate").unwrap_or(&Value::Null)
}

/// A JSON document that producers embed either as an object or as JSON text in a string.
pub(crate) fn embedded(v: &Value) -> Option<Cow<'_, Value>> {
    match v {
        Value::String(s) => serde_json::from_str::<Value>(s).ok().map(Cow::Owned),
        Value::Null => None,
        other => Some(Cow::Borrowed(other)),
    }
}

/// `v[a][b]…` as a string.
pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// `v[key]` as a slice (empty when absent or not an array).
pub(crate) fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A boolean flag as protobuf JSON writes it, tolerating `"true"`.
pub(crate) fn flag(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

pub(crate) fn digests(ms: &[&Material]) -> Vec<Digest> {
    ms.iter().map(|m| m.digest.clone()).collect()
}

/// `a, b, c and 4 more`: messages stay readable when a report has hundreds of entries.
pub(crate) fn enumerate(items: &[String], max: usize) -> String {
    if items.len() <= max {
        items.join(", ")
    } else {
        format!("{} and {} more", items[..max].join(", "), items.len() - max)
    }
}

pub(crate) fn pass(rule: &str, message: String, evidence: Vec<Digest>) -> RuleResult {
    RuleResult {
        rule: rule.to_string(),
        outcome: Outcome::Pass,
        reason: None,
        message,
        evidence,
    }
}

pub(crate) fn fail(rule: &str, reason: ReasonCode, message: String, evidence: Vec<Digest>) -> RuleResult {
    RuleResult {
        rule: rule.to_string(),
        outcome: Outcome::Fail,
        reason: Some(reason),
        message,
        evidence,
    }
}

/// Splits `git+https://github.com/acme/api@refs/heads/main` into the repository URI without the
/// `git+` prefix and the ref. The `@` is searched for after the authority, so that a user in
/// `git+ssh://git@host/…` is not mistaken for a ref (slsa-verifier splits at the first `@`, which
/// only works for https URIs).
pub(crate) fn split_git_uri(uri: &str) -> (String, Option<String>) {
    let uri = uri.trim();
    let uri = uri.strip_prefix("git+").unwrap_or(uri);
    let path_start = uri.find("://").map_or(0, |i| {
        let after = i + 3;
        uri[after..].find('/').map_or(uri.len(), |j| after + j)
    });
    match uri[path_start..].find('@') {
        Some(at) => {
            let at = path_start + at;
            let git_ref = &uri[at + 1..];
            (
                uri[..at].to_string(),
                (!git_ref.is_empty()).then(|| git_ref.to_string()),
            )
        }
        None => (uri.to_string(), None),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for materials in rule tests.
    use super::*;
    use crate::gate::{EvidenceSource, SignerMatch};

    pub fn material(predicate_type: &str, predicate: Value, tag: u8) -> Material {
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "registry.example/acme/api", "digest": {"sha256": hex::encode([0xaa; 32])}}],
            "predicateType": predicate_type,
            "predicate": predicate,
        });
        statement_material(statement, tag)
    }

    pub fn statement_material(statement: Value, tag: u8) -> Material {
        let predicate_type = str_at(&statement, &["predicateType"]).unwrap_or_default().to_string();
        Material {
            kind: MaterialKind::for_predicate(&predicate_type),
            predicate_type,
            signer: SignerMatch {
                signer: "release-key".into(),
                method: "key",
                identity: None,
            },
            source: EvidenceSource::Att,
            digest: digest(tag),
            statement,
        }
    }

    pub fn digest(tag: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([tag; 32]))).expect("valid digest")
    }

    /// A file under `tests/vectors/`, parsed.
    pub fn vector(path: &str) -> Value {
        let full = format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_uris_split_into_repository_and_ref() {
        let cases = [
            (
                "git+https://github.com/acme/api@refs/heads/main",
                ("https://github.com/acme/api", Some("refs/heads/main")),
            ),
            (
                "git+https://github.com/github/slsa-provenance",
                ("https://github.com/github/slsa-provenance", None),
            ),
            ("https://github.com/acme/api", ("https://github.com/acme/api", None)),
            (
                "git+ssh://git@github.com/acme/api@refs/tags/v1",
                ("ssh://git@github.com/acme/api", Some("refs/tags/v1")),
            ),
            (
                "git+https://github.com/acme/api@",
                ("https://github.com/acme/api", None),
            ),
        ];
        for (uri, (repo, git_ref)) in cases {
            assert_eq!(
                split_git_uri(uri),
                (repo.to_string(), git_ref.map(str::to_string)),
                "{uri}"
            );
        }
    }

    #[test]
    fn enumerate_shortens_long_lists() {
        let items: Vec<String> = (1..=5).map(|i| i.to_string()).collect();
        assert_eq!(enumerate(&items, 5), "1, 2, 3, 4, 5");
        assert_eq!(enumerate(&items, 2), "1, 2 and 3 more");
    }
}
