//! What policy evaluation needs from git besides the image's evidence (I/O): the waivers file of the
//! target environment's repository and the promotions tollgate recorded into the environment the
//! `upstream` rule names. Gathered into a [`PolicyContext`] before [`crate::pipeline::Gate::evaluate`],
//! which stays free of git; the rules over it (`gate::waivers`, `gate::upstream`) are pure.
//!
//! The daemon reads its already-synced mirrors ([`gather`]); `tollgate check` has none open, so
//! [`gather_fresh`] opens the same mirrors under `state_dir` and fetches them first.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

use crate::config::{Config, Environment, Mode};
use crate::gate::upstream::{self, Promotion};
use crate::gate::waivers::{self, Waiver};
use crate::git::{Mirror, Oid};
use crate::image::Digest;

/// How far back the history of an environment's repository is searched for promotions. Bounds the
/// cost per evaluation; a promotion older than this many commits is not found (a fail, never an allow).
pub const MAX_HISTORY: usize = 5000;

/// The state of the waivers file for one evaluation.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum WaiversState {
    /// The policy names no waivers file.
    NotConfigured,
    /// Nobody looked (a caller without git access): no waiver applies.
    NotGathered,
    /// The file does not exist in the repository: no waivers.
    Absent { file: String },
    Loaded {
        file: String,
        digest: Digest,
        waivers: Vec<Waiver>,
    },
    /// The file exists but cannot be read as written: every waiver is ignored.
    Malformed {
        file: String,
        digest: Digest,
        error: String,
    },
    /// The repository could not be read: the decision is deferred.
    Unavailable { file: String, error: String },
}

/// The promotions into the environment the `upstream` rule names.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum UpstreamFacts {
    NotConfigured,
    /// Nobody looked: the rule fails closed.
    NotGathered,
    Found {
        environment: String,
        promotions: Vec<Promotion>,
    },
    /// The repository could not be read: the decision is deferred.
    Unavailable {
        environment: String,
        error: String,
    },
}

/// Everything [`crate::pipeline::Gate::evaluate`] needs besides evidence, gathered for one target
/// environment at one instant.
#[derive(Debug, Clone)]
pub struct PolicyContext {
    pub now: OffsetDateTime,
    pub waivers: WaiversState,
    pub upstream: UpstreamFacts,
}

impl PolicyContext {
    /// A context with nothing gathered: waivers waive nothing, the upstream rule fails closed.
    pub fn new(now: OffsetDateTime) -> PolicyContext {
        PolicyContext {
            now,
            waivers: WaiversState::NotGathered,
            upstream: UpstreamFacts::NotGathered,
        }
    }

    /// The waivers that may apply (none unless the file was read cleanly).
    pub fn waivers(&self) -> &[Waiver] {
        match &self.waivers {
            WaiversState::Loaded { waivers, .. } => waivers,
            _ => &[],
        }
    }

    /// Why the evaluation cannot be decided now (a repository could not be read), if so.
    pub fn unavailable(&self) -> Option<String> {
        let mut out = Vec::new();
        if let WaiversState::Unavailable { file, error } = &self.waivers {
            out.push(format!("cannot read the waivers file {file}: {error}"));
        }
        if let UpstreamFacts::Unavailable { environment, error } = &self.upstream {
            out.push(format!("cannot read the promotions into {environment}: {error}"));
        }
        (!out.is_empty()).then(|| out.join("; "))
    }

    /// The promotions found, if they were gathered.
    pub fn promotions(&self) -> Option<&[Promotion]> {
        match &self.upstream {
            UpstreamFacts::Found { promotions, .. } => Some(promotions),
            _ => None,
        }
    }

    /// When `digest` was last promoted into `environment` by tollgate, if known.
    pub fn promoted_at(&self, environment: &str, digest: &Digest) -> Option<OffsetDateTime> {
        upstream::latest(self.promotions()?, environment, digest).map(|p| p.promoted_at)
    }
}

/// The effective policy digest (`Tollgate-Policy`): the configured policy's digest
/// ([`crate::gate::policy::policy_digest`]) extended with what that digest does not cover: the Rego
/// sources, the per-rule mode overrides and the waivers file's bytes. Any change to them is a new
/// policy, so decisions recorded under the old one are not taken for the new one's.
pub fn effective_policy_digest(
    base: &Digest,
    rego: &[crate::gate::rego::RegoPolicy],
    modes: &BTreeMap<String, Mode>,
    waivers: &WaiversState,
) -> Digest {
    // Nothing beyond the configured policy: its digest as is, so upgrading tollgate does not make
    // every recorded decision look like one under another policy.
    if rego.is_empty() && modes.is_empty() && matches!(waivers, WaiversState::NotConfigured) {
        return base.clone();
    }
    let waivers = match waivers {
        WaiversState::NotConfigured => serde_json::Value::Null,
        WaiversState::Absent { file } => serde_json::json!({"file": file, "absent": true}),
        WaiversState::Loaded { file, digest, .. } | WaiversState::Malformed { file, digest, .. } => {
            serde_json::json!({"file": file, "digest": digest.as_str()})
        }
        WaiversState::NotGathered | WaiversState::Unavailable { .. } => serde_json::json!("unknown"),
    };
    let canonical = serde_json::json!({
        "version": 1,
        "base": base.as_str(),
        "rego": rego.iter().map(|p| serde_json::json!([p.rule, p.source_digest.as_str()])).collect::<Vec<_>>(),
        "rule_modes": modes.iter().map(|(k, m)| (k.clone(), m.as_str())).collect::<BTreeMap<_, _>>(),
        "waivers": waivers,
    });
    Digest::of(canonical.to_string().as_bytes())
}

/// Which repositories an evaluation for `environment` reads, and what.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// (repository, file) of the waivers file.
    pub waivers: Option<(String, String)>,
    /// (repository, environment) the `upstream` rule searches.
    pub upstream: Option<(String, Environment)>,
}

pub fn needs(config: &Config, environment: &str) -> Needs {
    let Some(env) = config.environments.get(environment) else {
        return Needs::default();
    };
    let Some(policy) = env.policy.as_ref().and_then(|p| config.policies.get(p)) else {
        return Needs::default();
    };
    Needs {
        waivers: policy.waivers.clone().map(|f| (env.repository.clone(), f)),
        upstream: policy
            .rules
            .upstream
            .as_ref()
            .and_then(|u| config.environments.get(&u.environment))
            .map(|e| (e.repository.clone(), e.clone())),
    }
}

fn git_message(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The bytes of `file` at the mirror's head, `None` if it does not exist there.
fn file_at_head(mirror: &Mirror, file: &str) -> Result<Option<Vec<u8>>, String> {
    let Some(head) = mirror.head().map_err(git_message)? else {
        return Ok(None);
    };
    let repo = mirror.repository();
    let tree = repo.find_commit(head).and_then(|c| c.tree()).map_err(git_message)?;
    let entry = match tree.get_path(Path::new(file)) {
        Ok(e) => e,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(git_message(e)),
    };
    match repo.find_blob(entry.id()) {
        Ok(blob) => Ok(Some(blob.content().to_vec())),
        // A folder where the file should be: not a waivers file.
        Err(_) => Err(format!("{file} is not a file")),
    }
}

/// Reads and parses the waivers file at the mirror's head.
pub fn read_waivers(mirror: &Mirror, file: &str) -> WaiversState {
    let bytes = match file_at_head(mirror, file) {
        Ok(Some(b)) => b,
        Ok(None) => return WaiversState::Absent { file: file.to_string() },
        Err(error) => {
            return WaiversState::Unavailable {
                file: file.to_string(),
                error,
            }
        }
    };
    let digest = Digest::of(&bytes);
    let parsed = std::str::from_utf8(&bytes)
        .map_err(|_| format!("{file}: not UTF-8 text"))
        .and_then(|text| waivers::parse(file, text).map_err(|e| e.to_string()));
    match parsed {
        Ok(waivers) => WaiversState::Loaded {
            file: file.to_string(),
            digest,
            waivers,
        },
        Err(error) => {
            tracing::warn!(error = %error, "the waivers file is malformed; every waiver is ignored");
            WaiversState::Malformed {
                file: file.to_string(),
                digest,
                error,
            }
        }
    }
}

/// The tree entry at `path` in `commit` (the root tree for the repository root).
fn entry_at(commit: &git2::Commit<'_>, path: &str) -> Result<Option<Oid>, git2::Error> {
    if path.is_empty() {
        return Ok(Some(commit.tree_id()));
    }
    match commit.tree()?.get_path(Path::new(path)) {
        Ok(e) => Ok(Some(e.id())),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Does `commit` change anything under `path` compared with its first parent?
fn touches(repo: &git2::Repository, commit: Oid, path: &str) -> Result<bool, git2::Error> {
    let c = repo.find_commit(commit)?;
    let now = entry_at(&c, path)?;
    let before = match c.parent(0) {
        Ok(p) => entry_at(&p, path)?,
        Err(_) => None,
    };
    Ok(now != before)
}

/// Searches the first-parent history of the mirror's head (newest first, at most [`MAX_HISTORY`]
/// commits) for tollgate's allow commits into `env` that touch its path.
pub fn read_promotions(mirror: &Mirror, env: &Environment) -> UpstreamFacts {
    match promotions(mirror, env) {
        Ok(promotions) => UpstreamFacts::Found {
            environment: env.name.clone(),
            promotions,
        },
        Err(error) => UpstreamFacts::Unavailable {
            environment: env.name.clone(),
            error,
        },
    }
}

fn promotions(mirror: &Mirror, env: &Environment) -> Result<Vec<Promotion>, String> {
    let mut out = Vec::new();
    let mut cur = mirror.head().map_err(git_message)?;
    let mut seen = 0;
    while let Some(id) = cur {
        if seen == MAX_HISTORY {
            tracing::warn!(environment = %env.name, limit = MAX_HISTORY, "promotion search stopped at the history limit");
            break;
        }
        seen += 1;
        let info = mirror.commit_info(id).map_err(git_message)?;
        // Cheap test first: most commits are not tollgate's.
        if info.message.contains("Tollgate-Decision") {
            let at = OffsetDateTime::from_unix_timestamp(info.time).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            if let Some(p) = upstream::promotion_in(&env.name, &id.to_string(), &info.message, at) {
                if touches(mirror.repository(), id, &env.path).map_err(git_message)? {
                    out.push(p);
                }
            }
        }
        cur = mirror.first_parent(id).map_err(git_message)?;
    }
    Ok(out)
}

/// Runs `read` on the mirror of `repo` off the async runtime.
async fn with<T: Send + 'static>(
    mirror: Option<Arc<Mutex<Mirror>>>,
    repo: &str,
    read: impl FnOnce(&Mirror) -> T + Send + 'static,
    unavailable: impl FnOnce(String) -> T,
) -> T {
    let Some(mirror) = mirror else {
        return unavailable(format!("no mirror of repository `{repo}`"));
    };
    let joined = tokio::task::spawn_blocking(move || match mirror.lock() {
        Ok(guard) => Ok(read(&guard)),
        Err(_) => Err("a git mirror lock was poisoned".to_string()),
    })
    .await;
    match joined {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => unavailable(e),
        Err(e) => unavailable(e.to_string()),
    }
}

/// Gathers the context for `environment` from the daemon's mirrors (already synced this pass).
pub async fn gather(
    config: &Config,
    environment: &str,
    mirrors: &BTreeMap<String, Arc<Mutex<Mirror>>>,
    now: OffsetDateTime,
) -> PolicyContext {
    let needs = needs(config, environment);
    let waivers = match needs.waivers {
        None => WaiversState::NotConfigured,
        Some((repo, file)) => {
            let f = file.clone();
            with(
                mirrors.get(&repo).cloned(),
                &repo,
                move |m| read_waivers(m, &f),
                |error| WaiversState::Unavailable { file, error },
            )
            .await
        }
    };
    let upstream = match needs.upstream {
        None => UpstreamFacts::NotConfigured,
        Some((repo, env)) => {
            let name = env.name.clone();
            with(
                mirrors.get(&repo).cloned(),
                &repo,
                move |m| read_promotions(m, &env),
                |error| UpstreamFacts::Unavailable {
                    environment: name,
                    error,
                },
            )
            .await
        }
    };
    PolicyContext { now, waivers, upstream }
}

/// Gathers the context for `tollgate check`: opens the mirrors under `state_dir` (creating them if
/// needed) and fetches them first, so the answer is the remote's current state. A repository that
/// cannot be opened or fetched leaves its part unavailable (a defer, exit 2), never an allow.
pub async fn gather_fresh(config: &Config, environment: &str, now: OffsetDateTime) -> PolicyContext {
    let needs = needs(config, environment);
    let mut repos: Vec<String> = needs.waivers.iter().map(|(r, _)| r.clone()).collect();
    repos.extend(needs.upstream.iter().map(|(r, _)| r.clone()));
    repos.sort();
    repos.dedup();
    let mut mirrors = BTreeMap::new();
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    for name in repos {
        let Some(repo) = config.repositories.get(&name).cloned() else {
            continue;
        };
        let state_dir = config.state_dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let m = Mirror::open(&state_dir, &repo)?;
            m.fetch()?;
            Ok::<_, crate::git::GitError>(m)
        })
        .await;
        match opened {
            Ok(Ok(m)) => {
                mirrors.insert(name, Arc::new(Mutex::new(m)));
            }
            Ok(Err(e)) => {
                failures.insert(name, e.to_string());
            }
            Err(e) => {
                failures.insert(name, e.to_string());
            }
        }
    }
    let mut ctx = gather(config, environment, &mirrors, now).await;
    // Say why a mirror is missing rather than just that it is.
    if let WaiversState::Unavailable { error, .. } = &mut ctx.waivers {
        if let Some((repo, _)) = &needs.waivers {
            if let Some(f) = failures.get(repo) {
                *error = f.clone();
            }
        }
    }
    if let UpstreamFacts::Unavailable { error, .. } = &mut ctx.upstream {
        if let Some((repo, _)) = &needs.upstream {
            if let Some(f) = failures.get(repo) {
                *error = f.clone();
            }
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    #[test]
    fn the_effective_digest_changes_with_waivers_and_modes() {
        let base = digest(1);
        let none = BTreeMap::new();
        let a = effective_policy_digest(&base, &[], &none, &WaiversState::NotConfigured);
        assert_eq!(
            a, base,
            "a policy without Rego, modes or waivers keeps its configured digest"
        );
        assert_ne!(
            a,
            effective_policy_digest(&digest(2), &[], &none, &WaiversState::NotConfigured)
        );
        let loaded = |d| WaiversState::Loaded {
            file: ".tollgate/waivers.yaml".into(),
            digest: d,
            waivers: vec![],
        };
        assert_ne!(
            effective_policy_digest(&base, &[], &none, &loaded(digest(3))),
            effective_policy_digest(&base, &[], &none, &loaded(digest(4)))
        );
        let modes = BTreeMap::from([("sarif_max_errors".to_string(), Mode::Warn)]);
        assert_ne!(
            a,
            effective_policy_digest(&base, &[], &modes, &WaiversState::NotConfigured)
        );
    }

    #[test]
    fn the_effective_digest_changes_with_rego_sources() {
        let p = |src: &str| crate::gate::rego::compile("rego:p.rego", "p.rego", src).unwrap();
        let none = BTreeMap::new();
        let a = p("package tollgate\nresult := {\"violations\": []}\n");
        let b = p("package tollgate\nresult := {\"violations\": [\"x\"]}\n");
        assert_ne!(
            effective_policy_digest(&digest(1), &[a], &none, &WaiversState::NotConfigured),
            effective_policy_digest(&digest(1), &[b], &none, &WaiversState::NotConfigured)
        );
    }

    #[test]
    fn nothing_gathered_waives_nothing_and_defers_nothing() {
        let ctx = PolicyContext::new(OffsetDateTime::UNIX_EPOCH);
        assert!(ctx.waivers().is_empty());
        assert!(ctx.unavailable().is_none());
        assert!(ctx.promotions().is_none());
    }
}
