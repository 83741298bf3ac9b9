//! `provenance`: the source repository and the builder that verified SLSA provenance (v1 and v0.2)
//! names must match the policy's glob patterns.
//!
//! Modelled on slsa-verifier's `verifySourceURI` and builder-id checks:
//! - Source. SLSA v1: the triggering repository (`buildDefinition.externalParameters.workflow.repository`
//!   for the GitHub Actions build types) and the first `git+` URI of `resolvedDependencies[]`;
//!   SLSA v0.2: `invocation.configSource.uri` and the first `git+` URI of `materials[]`. The `git+`
//!   prefix and the `@ref` suffix are removed (and a trailing `.git` or `/`) before matching, and
//!   every source the provenance names must match: slsa-verifier likewise rejects provenance whose
//!   trigger and material disagree. Provenance that names no source at all fails.
//! - Builder (`runDetails.builder.id` in v1, `builder.id` in v0.2): the pattern is matched against the
//!   whole id, and, when that fails, against the id without its `@ref`, so that a pattern without a
//!   version accepts every version (slsa-verifier's loose match) while one with a version pins it.
//! - Patterns are globset globs in which `*` also matches `/`; a pattern written without a scheme
//!   (`github.com/acme/*`) is read as `https://…`, and a `git+` prefix on it is ignored.
//! - Every verified provenance for the candidate must match: one that does not is a build the policy
//!   does not accept, whatever the others say.
//!
//! The predicate's `builder.id` is the builder's own claim: it is as trustworthy as the signer that
//! the contract accepts for `SLSA_PROVENANCE` (a keyless identity pinned to the builder's workflow).

use globset::{Glob, GlobMatcher};
use serde_json::Value;

use super::{array, digests, distinct, fail, is_kind, pass, predicate, split_git_uri, str_at};
use crate::config::ProvenanceRule;
use crate::gate::{Material, MaterialKind, RuleResult};
use crate::reason::ReasonCode;

pub const RULE: &str = "provenance";

/// Where a build came from, for the policy and for the promotion commit message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Normalised repository URI: `https://github.com/acme/api`.
    pub repo: String,
    /// `refs/heads/main`, `refs/tags/v1.2.0`.
    pub git_ref: Option<String>,
    /// The commit built, when the provenance records it.
    pub commit: Option<String>,
}

/// Everything the rule compares in one provenance document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The repository that triggered the build (workflow / configSource), with its ref.
    pub trigger: Option<(String, Option<String>)>,
    /// The source material (first `git+` dependency), with its ref.
    pub material: Option<(String, Option<String>)>,
    pub commit: Option<String>,
    pub builder_id: Option<String>,
}

fn normalise_repo(uri: &str) -> (String, Option<String>) {
    let (repo, git_ref) = split_git_uri(uri);
    let repo = repo.trim_end_matches('/');
    let repo = repo.strip_suffix(".git").unwrap_or(repo);
    (repo.to_string(), git_ref)
}

fn first_git<'a>(items: &'a [Value], key: &str) -> Option<&'a Value> {
    items
        .iter()
        .find(|d| str_at(d, &[key]).is_some_and(|u| u.starts_with("git+")))
}

fn commit_of(digest: Option<&Value>) -> Option<String> {
    let d = digest?;
    ["gitCommit", "sha1", "sha256"]
        .iter()
        .find_map(|k| str_at(d, &[k]))
        .map(str::to_string)
}

/// Reads source and builder out of a SLSA v1 or v0.2 predicate (others give empty facts).
pub fn facts(m: &Material) -> Facts {
    let p = predicate(m);
    if let Some(bd) = p.get("buildDefinition") {
        // SLSA v1.
        let workflow = bd.get("externalParameters").and_then(|e| e.get("workflow"));
        let trigger = workflow.and_then(|w| {
            let repo = str_at(w, &["repository"])?;
            let (repo, _) = normalise_repo(repo);
            Some((repo, str_at(w, &["ref"]).map(str::to_string)))
        });
        let dep = first_git(array(bd, "resolvedDependencies"), "uri");
        return Facts {
            trigger,
            material: dep.and_then(|d| str_at(d, &["uri"])).map(normalise_repo),
            commit: commit_of(dep.and_then(|d| d.get("digest"))),
            builder_id: str_at(p, &["runDetails", "builder", "id"]).map(str::to_string),
        };
    }
    // SLSA v0.2.
    let config = p.get("invocation").and_then(|i| i.get("configSource"));
    let material = first_git(array(p, "materials"), "uri");
    Facts {
        trigger: config.and_then(|c| str_at(c, &["uri"])).map(normalise_repo),
        material: material.and_then(|d| str_at(d, &["uri"])).map(normalise_repo),
        commit: commit_of(config.and_then(|c| c.get("digest")))
            .or_else(|| commit_of(material.and_then(|d| d.get("digest")))),
        builder_id: str_at(p, &["builder", "id"]).map(str::to_string),
    }
}

/// The source repository, ref and commit a provenance material names, if any.
pub fn source_of(m: &Material) -> Option<Source> {
    let f = facts(m);
    let (repo, trigger_ref) = f.trigger.clone().or_else(|| f.material.clone())?;
    let git_ref = trigger_ref.or_else(|| f.material.and_then(|(_, r)| r));
    Some(Source {
        repo,
        git_ref,
        commit: f.commit,
    })
}

fn matcher(pattern: &str) -> Result<GlobMatcher, String> {
    let p = pattern.trim();
    let p = p.strip_prefix("git+").unwrap_or(p);
    let p = if p.contains("://") {
        p.to_string()
    } else {
        format!("https://{p}")
    };
    Glob::new(&p)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid glob pattern {pattern:?}: {}", e.kind()))
}

fn compile(pattern: Option<&str>) -> Result<Option<(&str, GlobMatcher)>, String> {
    pattern.map(|p| matcher(p).map(|m| (p, m))).transpose()
}

fn builder_matches(glob: &GlobMatcher, id: &str) -> bool {
    glob.is_match(id) || split_git_uri(id).1.is_some() && glob.is_match(split_git_uri(id).0)
}

/// Evaluates the `provenance` rule over every verified provenance material.
pub fn evaluate(rule: &ProvenanceRule, materials: &[Material]) -> RuleResult {
    let provs = distinct(materials, |m| is_kind(m, MaterialKind::SlsaProvenance));
    if provs.is_empty() {
        return fail(
            RULE,
            ReasonCode::MaterialMissing,
            format!("no SLSA provenance to evaluate {RULE}"),
            vec![],
        );
    }
    let evidence = digests(&provs);
    let (source_glob, builder_glob) = match (
        compile(rule.source_repo.as_deref()),
        compile(rule.builder_id.as_deref()),
    ) {
        (Ok(s), Ok(b)) => (s, b),
        (Err(e), _) | (_, Err(e)) => {
            // Config validation rejects bad globs; should one get here, nothing can match it.
            return fail(RULE, ReasonCode::ProvenanceSourceMismatch, e, evidence);
        }
    };

    let mut source_problems = Vec::new();
    let mut builder_problems = Vec::new();
    let mut seen = Vec::new();
    for m in &provs {
        let f = facts(m);
        let at = m.digest.short();
        if let Some((pattern, glob)) = &source_glob {
            let named: Vec<&(String, Option<String>)> = f.trigger.iter().chain(f.material.iter()).collect();
            if named.is_empty() {
                source_problems.push(format!("provenance {at} names no source repository"));
            }
            for (repo, _) in &named {
                if !glob.is_match(repo) {
                    source_problems.push(format!("provenance {at} was built from {repo}, not {pattern}"));
                }
            }
        }
        if let Some((pattern, glob)) = &builder_glob {
            match &f.builder_id {
                None => builder_problems.push(format!("provenance {at} names no builder")),
                Some(id) if !builder_matches(glob, id) => {
                    builder_problems.push(format!("provenance {at} was built by {id}, not {pattern}"))
                }
                Some(_) => {}
            }
        }
        if let Some(s) = source_of(m) {
            let mut line = s.repo.clone();
            if let Some(r) = &s.git_ref {
                line.push_str(&format!("@{r}"));
            }
            if let Some(c) = &s.commit {
                line.push_str(&format!(" ({})", c.chars().take(12).collect::<String>()));
            }
            if let Some(b) = &f.builder_id {
                line.push_str(&format!(" by {b}"));
            }
            seen.push(line);
        }
    }
    source_problems.dedup();
    let problems: Vec<String> = source_problems.iter().chain(&builder_problems).cloned().collect();
    match (source_problems.is_empty(), builder_problems.is_empty()) {
        (true, true) => pass(
            RULE,
            format!("{} provenance document(s) match: {}", provs.len(), seen.join("; ")),
            evidence,
        ),
        (false, _) => fail(
            RULE,
            ReasonCode::ProvenanceSourceMismatch,
            problems.join("; "),
            evidence,
        ),
        (true, false) => fail(
            RULE,
            ReasonCode::ProvenanceBuilderMismatch,
            problems.join("; "),
            evidence,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::rules::testing::{material, statement_material, vector};
    use base64::Engine as _;
    use serde_json::json;

    /// The in-toto statement inside a Sigstore bundle (`.json`) or the first line of a `.jsonl`.
    pub(crate) fn bundle_statement(path: &str) -> Value {
        let full = format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap();
        let doc = if path.ends_with(".jsonl") {
            text.lines().next().unwrap()
        } else {
            text.as_str()
        };
        let bundle: Value = serde_json::from_str(doc).unwrap();
        let env = bundle.get("dsseEnvelope").unwrap_or(&bundle);
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    fn rule(source: Option<&str>, builder: Option<&str>) -> ProvenanceRule {
        ProvenanceRule {
            source_repo: source.map(str::to_string),
            builder_id: builder.map(str::to_string),
        }
    }

    fn bcr() -> Material {
        statement_material(bundle_statement("slsa-provenance/bcr/MODULE.bazel.intoto.jsonl"), 1)
    }

    fn v02() -> Material {
        statement_material(vector("cosign-attestation-slsa-container/extracted/statement.json"), 2)
    }

    fn prober() -> Material {
        statement_material(
            bundle_statement(
                "gh-attestation-prober/actions-attest-build-provenance-attestation-13531551.sigstore.json",
            ),
            3,
        )
    }

    #[test]
    fn reads_source_and_builder_from_v1_and_v02() {
        assert_eq!(
            source_of(&bcr()),
            Some(Source {
                repo: "https://github.com/aspect-build/rules_lint".into(),
                git_ref: Some("refs/heads/publish-to-bcr".into()),
                commit: facts(&bcr()).commit,
            })
        );
        assert!(facts(&bcr()).commit.is_some_and(|c| c.len() == 40));
        assert_eq!(
            source_of(&v02()),
            Some(Source {
                repo: "https://github.com/slsa-framework/example-package".into(),
                git_ref: Some("refs/heads/main".into()),
                commit: Some("4d329c75e7ec1725f7c9ce917a8799d408d06be3".into()),
            })
        );
        assert_eq!(
            facts(&v02()).builder_id.as_deref(),
            Some("https://github.com/slsa-framework/slsa-github-generator/.github/workflows/generator_container_slsa3.yml@refs/tags/v2.1.0")
        );
    }

    #[test]
    fn table_of_real_provenance_against_patterns() {
        use ReasonCode::*;
        let table: [(&str, Material, ProvenanceRule, Option<ReasonCode>); 12] = [
            ("bcr source org", bcr(), rule(Some("https://github.com/aspect-build/*"), None), None),
            ("bcr source exact, no scheme", bcr(), rule(Some("github.com/aspect-build/rules_lint"), None), None),
            ("bcr source other org", bcr(), rule(Some("https://github.com/acme/*"), None), Some(ProvenanceSourceMismatch)),
            // slsa-verifier's Test_runVerifyGithubAttestation: builder without version passes.
            ("bcr builder loose", bcr(), rule(None, Some("https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml")), None),
            ("bcr builder pinned", bcr(), rule(None, Some("https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml@refs/tags/v0.0.1")), None),
            ("bcr builder other version", bcr(), rule(None, Some("https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml@refs/tags/v0.0.2")), Some(ProvenanceBuilderMismatch)),
            ("v0.2 both", v02(), rule(Some("https://github.com/slsa-framework/*"), Some("https://github.com/slsa-framework/slsa-github-generator/*")), None),
            ("v0.2 git+ pattern", v02(), rule(Some("git+https://github.com/slsa-framework/example-package"), None), None),
            ("v0.2 builder other", v02(), rule(None, Some("https://github.com/acme/*")), Some(ProvenanceBuilderMismatch)),
            ("prober github-hosted", prober(), rule(Some("https://github.com/actions/attest-build-provenance"), Some("https://github.com/actions/attest-build-provenance/.github/workflows/prober.yml")), None),
            ("source beats builder", prober(), rule(Some("https://github.com/acme/*"), Some("https://github.com/acme/*")), Some(ProvenanceSourceMismatch)),
            ("prefix is not a glob", prober(), rule(Some("https://github.com/actions/attest"), None), Some(ProvenanceSourceMismatch)),
        ];
        for (name, m, r, want) in table {
            let out = evaluate(&r, std::slice::from_ref(&m));
            assert_eq!(out.reason, want, "{name}: {}", out.message);
            assert_eq!(out.evidence, vec![m.digest.clone()], "{name}");
        }
    }

    #[test]
    fn messages_name_what_was_found() {
        let out = evaluate(
            &rule(Some("https://github.com/acme/*"), Some("https://github.com/acme/*")),
            &[bcr()],
        );
        assert!(
            out.message
                .contains("was built from https://github.com/aspect-build/rules_lint, not https://github.com/acme/*"),
            "{}",
            out.message
        );
        assert!(
            out.message.contains("was built by https://github.com/bazel-contrib/"),
            "{}",
            out.message
        );
        let ok = evaluate(&rule(Some("https://github.com/aspect-build/*"), None), &[bcr()]);
        assert!(
            ok.message
                .contains("https://github.com/aspect-build/rules_lint@refs/heads/publish-to-bcr"),
            "{}",
            ok.message
        );
    }

    #[test]
    fn every_provenance_must_match() {
        let r = rule(Some("https://github.com/aspect-build/*"), None);
        let out = evaluate(&r, &[bcr(), v02()]);
        assert_eq!(out.reason, Some(ReasonCode::ProvenanceSourceMismatch));
        assert_eq!(out.evidence.len(), 2);
    }

    #[test]
    fn a_trigger_and_a_material_that_disagree_fail() {
        let mut st = vector("cosign-attestation-slsa-container/extracted/statement.json");
        st["predicate"]["materials"][0]["uri"] = json!("git+https://github.com/evil/fork@refs/heads/main");
        let m = statement_material(st, 4);
        let out = evaluate(&rule(Some("https://github.com/slsa-framework/*"), None), &[m]);
        assert_eq!(out.reason, Some(ReasonCode::ProvenanceSourceMismatch));
        assert!(out.message.contains("https://github.com/evil/fork"), "{}", out.message);
    }

    #[test]
    fn missing_or_sourceless_provenance_fails() {
        let out = evaluate(
            &rule(Some("*"), None),
            &[material("https://cyclonedx.org/bom", json!({}), 1)],
        );
        assert_eq!(out.reason, Some(ReasonCode::MaterialMissing));
        let bare = material("https://slsa.dev/provenance/v1", json!({"buildDefinition": {}}), 2);
        let out = evaluate(&rule(Some("https://github.com/*"), Some("*")), &[bare]);
        assert_eq!(out.reason, Some(ReasonCode::ProvenanceSourceMismatch));
        assert!(out.message.contains("names no source repository"), "{}", out.message);
        assert!(out.message.contains("names no builder"), "{}", out.message);
    }

    #[test]
    fn hostile_shapes_do_not_panic() {
        for p in [
            json!(null),
            json!({"buildDefinition": 1, "runDetails": []}),
            json!({"buildDefinition": {"externalParameters": {"workflow": {"repository": 5}}, "resolvedDependencies": [null, {"uri": "git+"}]}}),
            json!({"invocation": {"configSource": {"uri": "git+@@@", "digest": {"sha1": ""}}}, "materials": "x"}),
        ] {
            let m = material("https://slsa.dev/provenance/v0.2", p, 1);
            let _ = evaluate(&rule(Some("https://github.com/*"), Some("*")), std::slice::from_ref(&m));
            let _ = source_of(&m);
        }
    }
}
