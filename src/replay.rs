//! `tollgate replay`: re-evaluates the promotions tollgate recorded into an environment under
//! today's policy and evidence, to answer "what would now be blocked?" before tightening a policy.
//! It reads git and registries; it writes nothing.

use std::sync::Arc;

use crate::context::PolicyContext;
use crate::gate::DecisionKind;
use crate::git::Mirror;
use crate::image::ImageRef;
use crate::pipeline::{Gate, Source};
use crate::reason::ReasonCode;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("environment `{0}` is not defined in the configuration")]
    UnknownEnvironment(String),
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("`{rev}` does not name a commit in repository `{repo}`: {source}")]
    Rev {
        rev: String,
        repo: String,
        source: git2::Error,
    },
    #[error("walking the history of `{repo}`: {source}")]
    Walk { repo: String, source: git2::Error },
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("a blocking task failed: {0}")]
    Join(String),
}

/// One recorded promotion and what today's policy says about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayRow {
    pub commit: String,
    pub image: String,
    /// `Tollgate-Policy` as recorded.
    pub recorded_policy: String,
    pub source: Option<String>,
    pub now: DecisionKind,
    pub policy_now: String,
    pub reasons: Vec<ReasonCode>,
    pub messages: Vec<String>,
}

/// A recorded allow, read from a commit's trailers.
struct Recorded {
    commit: String,
    image: String,
    policy: String,
    source: Option<String>,
}

fn recorded_promotions(mirror: &Mirror, environment: &str, since: Option<&str>) -> Result<Vec<Recorded>, ReplayError> {
    let repo_name = mirror.path().display().to_string();
    let Some(head) = mirror.head()? else {
        return Ok(Vec::new());
    };
    let repo = mirror.repository();
    let walk_err = |source| ReplayError::Walk {
        repo: repo_name.clone(),
        source,
    };
    let mut walk = repo.revwalk().map_err(walk_err)?;
    walk.push(head).map_err(walk_err)?;
    walk.simplify_first_parent().map_err(walk_err)?;
    if let Some(rev) = since {
        let oid = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(|source| ReplayError::Rev {
                rev: rev.to_string(),
                repo: repo_name.clone(),
                source,
            })?
            .id();
        walk.hide(oid).map_err(walk_err)?;
    }
    let mut out = Vec::new();
    for oid in walk {
        let oid = oid.map_err(walk_err)?;
        let info = mirror.commit_info(oid)?;
        let trailers = crate::git::trailers(&info.message);
        let get = |k: &str| trailers.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone());
        if get("Tollgate-Decision").as_deref() != Some("allow")
            || get("Tollgate-Environment").as_deref() != Some(environment)
        {
            continue;
        }
        let Some(image) = get("Tollgate-Image") else { continue };
        out.push(Recorded {
            commit: oid.to_string(),
            image,
            policy: get("Tollgate-Policy").unwrap_or_default(),
            source: get("Tollgate-Source"),
        });
    }
    // Oldest first, as they happened.
    out.reverse();
    Ok(out)
}

/// Every promotion into `environment` recorded after `since` (all of them when None), each
/// evaluated again now.
pub async fn replay(
    gate: &Arc<Gate>,
    environment: &str,
    since: Option<String>,
    ctx: &PolicyContext,
) -> Result<Vec<ReplayRow>, ReplayError> {
    let config = gate.config.clone();
    let env = config
        .environments
        .get(environment)
        .cloned()
        .ok_or_else(|| ReplayError::UnknownEnvironment(environment.into()))?;
    let repo = config
        .repositories
        .get(&env.repository)
        .cloned()
        .ok_or_else(|| ReplayError::UnknownEnvironment(environment.into()))?;
    let state_dir = config.state_dir.clone();
    let name = env.name.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        let mirror = Mirror::open(&state_dir, &repo)?;
        mirror.fetch()?;
        recorded_promotions(&mirror, &name, since.as_deref())
    })
    .await
    .map_err(|e| ReplayError::Join(e.to_string()))??;

    let mut rows = Vec::new();
    for r in recorded {
        let Ok(image) = ImageRef::parse(&r.image) else {
            tracing::warn!(commit = %r.commit, image = %r.image, "unreadable Tollgate-Image trailer; skipped");
            continue;
        };
        let source = r
            .source
            .as_deref()
            .and_then(|s| s.split_once('@'))
            .map(|(e, c)| Source {
                environment: e.to_string(),
                commit: c.to_string(),
            });
        let eval = gate.evaluate(environment, &image, source, ctx).await?;
        let failing: Vec<_> = eval
            .decision
            .results
            .iter()
            .filter(|x| matches!(x.outcome, crate::gate::Outcome::Fail | crate::gate::Outcome::Warn))
            .collect();
        rows.push(ReplayRow {
            commit: r.commit,
            image: r.image,
            recorded_policy: r.policy,
            source: r.source,
            now: eval.decision.kind,
            policy_now: format!("{}@{}", eval.policy, eval.policy_digest),
            reasons: eval.decision.reasons(),
            messages: failing.iter().map(|x| x.message.clone()).collect(),
        });
    }
    Ok(rows)
}

/// The text report: one line per promotion, then the failures of those that would now be blocked.
pub fn render(environment: &str, rows: &[ReplayRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let blocked = rows.iter().filter(|r| r.now == DecisionKind::Block).count();
    let _ = writeln!(
        out,
        "{} promotions into {environment} replayed; {blocked} would now be blocked.",
        rows.len()
    );
    for r in rows {
        let reasons: Vec<&str> = r.reasons.iter().map(|c| c.as_str()).collect();
        let _ = writeln!(
            out,
            "{} {:<5} {} {}",
            &r.commit[..r.commit.len().min(12)],
            r.now.as_str(),
            r.image,
            reasons.join(",")
        );
        if r.now != DecisionKind::Allow {
            for m in &r.messages {
                let _ = writeln!(out, "      {m}");
            }
        }
    }
    out
}
