//! The daemon: one task per repository that syncs it (poll, or a trigger), turns each new image in
//! a `promote_from` environment into a candidate for the next environment, evaluates it through the
//! [`Gate`] and records the decision. Git is the only state: a restart resumes from the
//! `refs/tollgate/processed/<env>` marker in the upstream repository.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{Config, Environment};
use crate::gate::record::{self, Recorded};
use crate::gate::{detect, DecisionKind};
use crate::git::Mirror;
use crate::pipeline::{Gate, Source};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("a blocking task failed: {0}")]
    Join(String),
    #[error("environments.{environment}.attest_promotions.key: cannot load {path}: {error}")]
    PromotionKey {
        environment: String,
        path: std::path::PathBuf,
        error: String,
    },
}

/// What one pass over an environment did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub promoted: usize,
    pub blocked: usize,
    pub deferred: usize,
    pub skipped: usize,
}

pub struct Daemon {
    pub gate: Arc<Gate>,
    mirrors: BTreeMap<String, Arc<Mutex<Mirror>>>,
    ready: BTreeMap<String, AtomicBool>,
    /// One per repository: wakes its task for a sync now (webhook, file watch, a promotion upstream).
    triggers: BTreeMap<String, Arc<Notify>>,
    /// When each target's blocked candidates were last re-evaluated (see [`Daemon::recheck_blocked`]).
    rechecked: Mutex<BTreeMap<String, Instant>>,
    recheck_interval: Duration,
    /// Per environment with `attest_promotions`: the key its promotion attestations are signed
    /// with, read once at start (see docs/promotion-attestation.md).
    promotion_keys: BTreeMap<String, Arc<crate::keys::SigningKey>>,
}

/// Reads every `attest_promotions` key. Config validation already parsed them; this reads them
/// again only to hold them, and fails start-up if one changed in between.
fn load_promotion_keys(config: &Config) -> Result<BTreeMap<String, Arc<crate::keys::SigningKey>>, DaemonError> {
    let mut out = BTreeMap::new();
    for env in config.environments.values() {
        let Some(path) = &env.attest_promotions else {
            continue;
        };
        let err = |error: String| DaemonError::PromotionKey {
            environment: env.name.clone(),
            path: path.clone(),
            error,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let key = crate::keys::SigningKey::from_pem(&pem).map_err(|e| err(e.to_string()))?;
        out.insert(env.name.clone(), Arc::new(key));
    }
    Ok(out)
}

/// How often a blocked candidate that is still what upstream runs is evaluated again, so that
/// evidence attached after the bump (CI often attests after pushing) or a changed policy promotes
/// it without a new upstream commit.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// How far back in upstream history blocked candidates are looked for.
const RECHECK_DEPTH: usize = 200;

/// SIGTERM to exit stays under 10 s (SPEC §9): this much for in-flight passes, the rest for the HTTP
/// drain and the runtime.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// First retry after a defer or a failed sync; doubles per consecutive retry up to [`DEFER_MAX`], and
/// never waits longer than the repository's poll interval.
const DEFER_FIRST: Duration = Duration::from_secs(2);
const DEFER_MAX: Duration = Duration::from_secs(300);

/// How [`Daemon::run_with`] runs beyond the configuration; the default is what `tollgate run` does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Watch `file://` and path remotes for ref changes (see [`crate::watch`]).
    pub watch_files: bool,
    /// How long in-flight passes may take to finish after shutdown before the loop returns anyway.
    pub grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            watch_files: true,
            grace: SHUTDOWN_GRACE,
        }
    }
}

/// What one repository round did, to pick the next wake-up.
#[derive(Debug, Default)]
struct Round {
    /// A candidate was deferred, or the sync or a write failed: retry sooner than the poll interval.
    retry: bool,
    /// Repositories holding environments that promote from an environment we just wrote to.
    wake: BTreeSet<String>,
}

/// Runs blocking git work off the async runtime, holding the mirror's lock for its duration.
async fn with_mirror<T: Send + 'static>(
    mirror: &Arc<Mutex<Mirror>>,
    f: impl FnOnce(&Mirror) -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    let m = mirror.clone();
    tokio::task::spawn_blocking(move || {
        let guard = m
            .lock()
            .map_err(|_| DaemonError::Join("a git mirror lock was poisoned".into()))?;
        f(&guard)
    })
    .await
    .map_err(|e| DaemonError::Join(e.to_string()))?
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Daemon {
    /// Opens (or creates) the local mirror of every repository. No network yet.
    pub fn open(gate: Arc<Gate>) -> Result<Daemon, DaemonError> {
        let config = gate.config.clone();
        let mut mirrors = BTreeMap::new();
        let mut ready = BTreeMap::new();
        let mut triggers = BTreeMap::new();
        for (name, repo) in &config.repositories {
            mirrors.insert(
                name.clone(),
                Arc::new(Mutex::new(Mirror::open(&config.state_dir, repo)?)),
            );
            ready.insert(name.clone(), AtomicBool::new(false));
            triggers.insert(name.clone(), Arc::new(Notify::new()));
        }
        Ok(Daemon {
            gate,
            mirrors,
            ready,
            triggers,
            rechecked: Mutex::new(BTreeMap::new()),
            recheck_interval: RECHECK_INTERVAL,
            promotion_keys: load_promotion_keys(&config)?,
        })
    }

    /// Asks `repo`'s task for a sync and pass now. Bursts coalesce: triggers that arrive while a pass
    /// runs make exactly one more pass. Returns false for a repository that is not configured.
    pub fn trigger(&self, repo: &str) -> bool {
        match self.triggers.get(repo) {
            Some(t) => {
                t.notify_one();
                true
            }
            None => false,
        }
    }

    /// The promotion targets whose upstream environment lives in `repo`, upstream first: what that
    /// repository's task processes after each sync.
    pub fn targets_of(&self, repo: &str) -> Vec<Environment> {
        let config = self.config();
        config
            .promotion_targets()
            .into_iter()
            .filter(|t| {
                t.promote_from
                    .as_ref()
                    .and_then(|up| config.environments.get(up))
                    .is_some_and(|up| up.repository == repo)
            })
            .cloned()
            .collect()
    }

    fn config(&self) -> &Config {
        &self.gate.config
    }

    /// Ready once every repository has synced at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.values().all(|r| r.load(Ordering::Relaxed))
    }

    fn mirror(&self, repo: &str) -> Result<&Arc<Mutex<Mirror>>, DaemonError> {
        self.mirrors
            .get(repo)
            .ok_or_else(|| DaemonError::Join(format!("no mirror for repository `{repo}`")))
    }

    /// Fetches one repository.
    pub async fn sync(&self, repo: &str) -> Result<(), DaemonError> {
        let result = with_mirror(self.mirror(repo)?, |m| Ok(m.fetch()?)).await;
        self.gate.metrics.record_sync(repo, result.is_ok(), unix_now());
        if result.is_ok() {
            if let Some(r) = self.ready.get(repo) {
                r.store(true, Ordering::Relaxed);
            }
        }
        result.map(|_| ())
    }

    /// Syncs every repository, then processes every promotion target once, upstream first.
    pub async fn pass(&self) -> BTreeMap<String, Result<PassReport, DaemonError>> {
        let names: Vec<String> = self.mirrors.keys().cloned().collect();
        for name in &names {
            if let Err(e) = self.sync(name).await {
                tracing::error!(repository = %name, error = %e, "repository sync failed");
            }
        }
        let mut out = BTreeMap::new();
        for env in self.config().promotion_targets() {
            let span = tracing::info_span!("environment", environment = %env.name);
            let report = self.process(env).instrument(span).await;
            if let Err(e) = &report {
                tracing::error!(environment = %env.name, error = %e, "processing failed");
            }
            out.insert(env.name.clone(), report);
        }
        out
    }

    /// Processes the upstream commits of `target` not yet processed, oldest first.
    pub async fn process(&self, target: &Environment) -> Result<PassReport, DaemonError> {
        self.process_until(target, &CancellationToken::new()).await
    }

    /// As [`Daemon::process`], but stops between upstream commits once `shutdown` fires: the commit in
    /// hand is finished (its git write included) and the marker says where the next start resumes.
    pub async fn process_until(
        &self,
        target: &Environment,
        shutdown: &CancellationToken,
    ) -> Result<PassReport, DaemonError> {
        let config = self.config();
        let Some(up_name) = target.promote_from.clone() else {
            return Ok(PassReport::default());
        };
        let up = config.environments.get(&up_name).cloned().ok_or_else(|| {
            DaemonError::Pipeline(crate::pipeline::PipelineError::UnknownEnvironment(up_name.clone()))
        })?;
        let up_mirror = self.mirror(&up.repository)?.clone();
        let marker_name = format!("processed/{}", target.name);
        let marker_ref = format!("refs/tollgate/{marker_name}");
        let (head, marker) = {
            let name = marker_name.clone();
            with_mirror(&up_mirror, move |m| Ok((m.head()?, m.state_ref(&name)?))).await?
        };
        let Some(head) = head else {
            return Ok(PassReport::default());
        };
        let Some(marker) = marker else {
            // First start for this environment: what is upstream now is the baseline, not a flood of
            // candidates. Later commits are candidates.
            tracing::info!(commit = %head, "no processed marker yet: taking the upstream head as the baseline");
            let r = marker_ref.clone();
            with_mirror(&up_mirror, move |m| Ok(m.push_ref(head, &r)?)).await?;
            return Ok(PassReport::default());
        };
        let commits = match with_mirror(&up_mirror, move |m| Ok(m.commits_between(Some(marker), head)?)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the processed marker is not in the upstream history (rewritten?): re-baselining");
                let r = marker_ref.clone();
                with_mirror(&up_mirror, move |m| Ok(m.push_ref(head, &r)?)).await?;
                return Ok(PassReport::default());
            }
        };
        self.gate.metrics.set_pending(&target.name, commits.len() as i64);
        let mut report = PassReport::default();
        for (i, commit) in commits.iter().copied().enumerate() {
            if shutdown.is_cancelled() {
                tracing::info!("shutting down; the rest is processed after the restart");
                break;
            }
            let deferred = self.process_commit(target, &up, commit, &mut report).await?;
            if deferred {
                break;
            }
            let r = marker_ref.clone();
            let outcome = with_mirror(&up_mirror, move |m| Ok(m.push_ref(commit, &r)?)).await?;
            if let crate::git::PushOutcome::Rejected { reason } = outcome {
                // Another replica moved the marker: it is processing the same history. Stop; the
                // next pass re-reads the marker and idempotence covers any overlap.
                tracing::info!(reason = %reason, "processed marker moved by someone else; yielding");
                break;
            }
            self.gate
                .metrics
                .set_pending(&target.name, (commits.len() - i - 1) as i64);
        }
        if report.deferred == 0 && !shutdown.is_cancelled() {
            // Blocks written in this pass are fresh: look for older ones, from the previous marker.
            let mut rechecked = PassReport::default();
            self.recheck_blocked(target, &up, head, marker, &mut rechecked).await?;
            report.promoted += rechecked.promoted;
            report.blocked += rechecked.blocked;
        }
        Ok(report)
    }

    /// How often blocked candidates are evaluated again (default [`RECHECK_INTERVAL`]).
    pub fn set_recheck_interval(&mut self, every: Duration) {
        self.recheck_interval = every;
    }

    /// Evaluates again the blocked candidates that upstream still runs and the target does not:
    /// evidence attached after the bump, a fixed signature or a new policy then promotes them
    /// without a new upstream commit. A block under the same policy digest is not noted twice; a
    /// block under a new one is appended to the note. The [`RECHECK_DEPTH`] upstream commits up to
    /// `search_from` are searched for block notes; what upstream runs is read at `head`.
    async fn recheck_blocked(
        &self,
        target: &Environment,
        up: &Environment,
        head: git2::Oid,
        search_from: git2::Oid,
        report: &mut PassReport,
    ) -> Result<(), DaemonError> {
        {
            let mut last = self.rechecked.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .get(&target.name)
                .is_some_and(|t| t.elapsed() < self.recheck_interval)
            {
                return Ok(());
            }
            last.insert(target.name.clone(), Instant::now());
        }
        let up_mirror = self.mirror(&up.repository)?.clone();
        let tgt_mirror = self.mirror(&target.repository)?.clone();
        let env_name = target.name.clone();
        let up_path = up.path.clone();
        // image name → (most recent upstream commit with a block note for it, the digests blocked there)
        let (upstream_files, blocked) = with_mirror(&up_mirror, move |m| {
            let files = m.files_under(head, &up_path)?;
            let mut blocked: BTreeMap<String, (git2::Oid, BTreeSet<String>)> = BTreeMap::new();
            let mut cur = Some(search_from);
            for _ in 0..RECHECK_DEPTH {
                let Some(c) = cur else { break };
                if let Some(note) = m.note(c)? {
                    for decision in crate::git::split_decisions(&note) {
                        let t = crate::git::trailers(decision);
                        let get = |k: &str| t.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.as_str());
                        if get("Tollgate-Decision") != Some("block") || get("Tollgate-Environment") != Some(&env_name) {
                            continue;
                        }
                        let Some(image) = get("Tollgate-Image").and_then(|i| crate::image::ImageRef::parse(i).ok())
                        else {
                            continue;
                        };
                        let entry = blocked.entry(image.name.clone()).or_insert((c, BTreeSet::new()));
                        if entry.0 == c {
                            entry.1.extend(image.digest.map(|d| d.to_string()));
                        }
                    }
                }
                cur = m.first_parent(c)?;
            }
            Ok((files, blocked))
        })
        .await?;
        if blocked.is_empty() {
            return Ok(());
        }
        let tgt_path = target.path.clone();
        let target_files = with_mirror(&tgt_mirror, move |m| match m.head()? {
            Some(h) => Ok(m.files_under(h, &tgt_path)?),
            None => Ok(Vec::new()),
        })
        .await?;
        let (upstream_images, _) = detect::images_in(&upstream_files, &up.detect_options());
        let (target_images, _) = detect::images_in(&target_files, &target.detect_options());
        let mut seen = BTreeSet::new();
        let mut ctx = None;
        for loc in upstream_images {
            let Some((commit, digests)) = blocked.get(&loc.image.name) else {
                continue;
            };
            // A pinned upstream reference is rechecked only if that very digest was blocked; a
            // tag-only one is re-resolved, as the daemon would on a new bump.
            if let Some(d) = &loc.image.digest {
                if !digests.contains(d.as_str()) {
                    continue;
                }
            }
            if !seen.insert(loc.image.to_string()) {
                continue;
            }
            let present: Vec<_> = target_images
                .iter()
                .filter(|l| l.image.name == loc.image.name)
                .collect();
            if present.is_empty()
                || loc
                    .image
                    .digest
                    .as_ref()
                    .is_some_and(|d| present.iter().all(|l| l.image.digest.as_ref() == Some(d)))
            {
                continue;
            }
            if ctx.is_none() {
                ctx = Some(
                    crate::context::gather(
                        self.config(),
                        &target.name,
                        &self.mirrors,
                        time::OffsetDateTime::now_utc(),
                    )
                    .await,
                );
            }
            let Some(ctx) = ctx.as_ref() else { continue };
            let span = tracing::info_span!("recheck", environment = %target.name, image = %loc.image);
            self.decide_and_record(target, up, *commit, &loc.image, ctx, &span, Instant::now(), report)
                .await?;
        }
        Ok(())
    }

    /// Evaluates and records every bump in one upstream commit. Returns true if a candidate was
    /// deferred (the marker must not move past this commit).
    async fn process_commit(
        &self,
        target: &Environment,
        up: &Environment,
        commit: git2::Oid,
        report: &mut PassReport,
    ) -> Result<bool, DaemonError> {
        let detected = Instant::now();
        let up_mirror = self.mirror(&up.repository)?.clone();
        let tgt_mirror = self.mirror(&target.repository)?.clone();
        let up_path = up.path.clone();
        let (before, after) = with_mirror(&up_mirror, move |m| {
            let before = match m.first_parent(commit)? {
                Some(p) => m.files_under(p, &up_path)?,
                None => Vec::new(),
            };
            Ok((before, m.files_under(commit, &up_path)?))
        })
        .await?;
        let (bumps, errors) = detect::bumps(&before, &after, &up.detect_options());
        for e in &errors {
            // Malformed YAML upstream: nothing in that file can be a candidate. Never an allow.
            tracing::error!(commit = %commit, error = %e, "cannot read an upstream manifest; its images are not promoted");
        }
        if bumps.is_empty() {
            return Ok(false);
        }
        let tgt_path = target.path.clone();
        let target_files = with_mirror(&tgt_mirror, move |m| match m.head()? {
            Some(h) => Ok(m.files_under(h, &tgt_path)?),
            None => Ok(Vec::new()),
        })
        .await?;
        let (target_images, _) = detect::images_in(&target_files, &target.detect_options());
        // A target without a policy is an error here, before anything is evaluated.
        self.gate.policy_for(&target.name)?;
        // Waivers and upstream promotions from the mirrors this pass synced: read once per upstream
        // commit, at one instant, for every bump in it.
        let ctx = crate::context::gather(
            self.config(),
            &target.name,
            &self.mirrors,
            time::OffsetDateTime::now_utc(),
        )
        .await;
        for bump in bumps {
            let span = tracing::info_span!("candidate", environment = %target.name, image = %bump.after);
            let _enter = span.enter();
            let name = &bump.after.name;
            let present: Vec<_> = target_images.iter().filter(|l| &l.image.name == name).collect();
            if present.is_empty() {
                tracing::info!("image not deployed in the target environment; not a candidate");
                report.skipped += 1;
                continue;
            }
            if let Some(d) = &bump.after.digest {
                if present.iter().all(|l| l.image.digest.as_ref() == Some(d)) {
                    tracing::info!("target already runs this digest");
                    report.skipped += 1;
                    continue;
                }
            }
            drop(_enter);
            if self
                .decide_and_record(target, up, commit, &bump.after, &ctx, &span, detected, report)
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Evaluates one candidate introduced by upstream `commit` and records the decision: the
    /// promotion commit, or a note on `commit`. Returns true if it was deferred.
    #[allow(clippy::too_many_arguments)]
    async fn decide_and_record(
        &self,
        target: &Environment,
        up: &Environment,
        commit: git2::Oid,
        upstream_ref: &crate::image::ImageRef,
        ctx: &crate::context::PolicyContext,
        span: &tracing::Span,
        detected: Instant,
        report: &mut PassReport,
    ) -> Result<bool, DaemonError> {
        let up_mirror = self.mirror(&up.repository)?.clone();
        let tgt_mirror = self.mirror(&target.repository)?.clone();
        let policy_name = target.policy.clone().unwrap_or_default();
        let source = Source {
            environment: up.name.clone(),
            commit: commit.to_string(),
        };
        let eval = self
            .gate
            .evaluate(&target.name, upstream_ref, Some(source), ctx)
            .instrument(span.clone())
            .await?;
        let pinned = eval.candidate.pinned();
        // The effective digest: a changed waivers file or Rego source is a new policy.
        let policy_key = format!("{policy_name}@{}", eval.policy_digest);
        match eval.decision.kind {
            DecisionKind::Defer => {
                tracing::warn!(parent: span, "evidence unavailable; deferring");
                self.gate.metrics.record_decision(&target.name, &eval.decision);
                report.deferred += 1;
                return Ok(true);
            }
            DecisionKind::Allow => {
                let message = eval.record().message();
                let env = target.clone();
                let repo = self.config().repositories.get(&target.repository).cloned();
                let detect = target.detect_options();
                let candidate = eval.candidate.clone();
                let outcome = with_mirror(&tgt_mirror, move |m| {
                    let repo = repo.ok_or_else(|| DaemonError::Join("target repository vanished".into()))?;
                    Ok(record::promote(m, &repo, &env, &candidate, &message, &detect)?)
                })
                .await?;
                match outcome {
                    Recorded::Written(id) => {
                        tracing::info!(parent: span, commit = %id, "promoted");
                        report.promoted += 1;
                        if let Some(key) = self.promotion_keys.get(&target.name) {
                            // The promotion stands either way; a failure is logged inside.
                            self.attest_promotion(target, &eval, id, key)
                                .instrument(span.clone())
                                .await;
                        }
                    }
                    Recorded::AlreadyRecorded => {
                        tracing::info!(parent: span, "already promoted");
                        report.skipped += 1;
                        return Ok(false);
                    }
                }
            }
            DecisionKind::Block => {
                let message = eval.record().message();
                let env_name = target.name.clone();
                let author = self.config().repositories.get(&up.repository).map(|r| r.author.clone());
                let outcome = with_mirror(&up_mirror, move |m| {
                    let author = author.ok_or_else(|| DaemonError::Join("upstream repository vanished".into()))?;
                    Ok(record::note_block(
                        m,
                        commit,
                        &message,
                        &author,
                        (&env_name, &pinned, &policy_key),
                    )?)
                })
                .await?;
                match outcome {
                    Recorded::Written(id) => {
                        tracing::info!(parent: span, notes = %id, "blocked; note written");
                        report.blocked += 1;
                    }
                    Recorded::AlreadyRecorded => {
                        tracing::info!(parent: span, "block already recorded under this policy");
                        report.skipped += 1;
                        return Ok(false);
                    }
                }
            }
        }
        self.gate.metrics.record_decision(&target.name, &eval.decision);
        self.gate
            .metrics
            .detection_to_decision
            .get_or_create(&crate::telemetry::EnvLabel {
                environment: target.name.clone(),
            })
            .observe(detected.elapsed().as_secs_f64());
        Ok(false)
    }

    /// Signs and attaches the promotion attestation for the allow of `eval` that `commit` recorded.
    /// The promotion stands whatever happens here: a failed attach is retried once, immediately, then
    /// logged as an error (`attestation = "failed"`, with the commit); the next environment then
    /// falls back to git history or blocks (docs/promotion-attestation.md). Returns true if attached.
    async fn attest_promotion(
        &self,
        target: &Environment,
        eval: &crate::pipeline::Evaluation,
        commit: git2::Oid,
        key: &crate::keys::SigningKey,
    ) -> bool {
        use crate::gate::promotion::{self, PromotionCommit, PromotionPredicate};
        let Some(repo) = self.config().repositories.get(&target.repository) else {
            return false;
        };
        // A promotion branch is a proposal until someone merges it: attesting it would start the next
        // environment's soak before anything is deployed. Only direct writes are attested.
        if target.write != crate::config::WriteMode::Direct {
            tracing::info!(commit = %commit, attestation = "skipped", "promotion branch pushed; not attested until it is a direct write");
            return false;
        }
        let branch = repo.branch.clone();
        let predicate = PromotionPredicate::for_allow(
            eval,
            PromotionCommit {
                repository: repo.url.clone(),
                branch,
                commit: commit.to_string(),
            },
            time::OffsetDateTime::now_utc(),
        );
        let envelope = promotion::sign(&promotion::statement(&eval.candidate, &predicate), key);
        let image = &eval.candidate.upstream_ref;
        let store = self.gate.stores.for_image(image);
        let mut last = None;
        for attempt in 1..=2 {
            match store
                .attach_attestation(
                    image,
                    &eval.candidate.digest,
                    &envelope,
                    crate::gate::PROMOTION_PREDICATE_TYPE,
                )
                .await
            {
                Ok(()) => {
                    tracing::info!(commit = %commit, attestation = "attached", "promotion attestation attached");
                    // The next environment evaluates this digest right after (same pass): the evidence
                    // list cached by this evaluation lacks the statement just attached, so refresh it.
                    match store.fetch(image, &eval.candidate.digest).await {
                        Ok(list) => self.gate.stores.cache().store_fetched(
                            image.registry(),
                            &image.repository(),
                            &eval.candidate.digest,
                            Arc::new(list),
                            Instant::now(),
                        ),
                        Err(e) => tracing::warn!(error = %e, "re-reading evidence after attaching failed"),
                    }
                    return true;
                }
                Err(e) => {
                    tracing::warn!(commit = %commit, attempt, error = %e, "attaching the promotion attestation failed");
                    last = Some(e);
                }
            }
        }
        if let Some(e) = last {
            tracing::error!(
                commit = %commit,
                attestation = "failed",
                error = %e,
                "promotion recorded without its attestation"
            );
        }
        false
    }

    /// One round for `repo`: sync it, then process the targets whose upstream lives in it. A failed
    /// sync skips processing: that repository's candidates wait, nobody else's do.
    async fn round(&self, repo: &str, shutdown: &CancellationToken) -> Round {
        let mut round = Round::default();
        if let Err(e) = self.sync(repo).await {
            tracing::error!(error = %e, "repository sync failed");
            round.retry = true;
            return round;
        }
        let config = self.config();
        for target in self.targets_of(repo) {
            if shutdown.is_cancelled() {
                break;
            }
            let span = tracing::info_span!("environment", environment = %target.name);
            match self.process_until(&target, shutdown).instrument(span).await {
                Ok(r) => {
                    if r != PassReport::default() {
                        tracing::info!(environment = %target.name, promoted = r.promoted, blocked = r.blocked, deferred = r.deferred, skipped = r.skipped, "pass done");
                    }
                    round.retry |= r.deferred > 0;
                    if r.promoted > 0 {
                        // A chain (staging → prod → dr): whoever promotes from this target may now
                        // have a candidate, possibly in another repository.
                        for next in config.environments.values() {
                            if next.promote_from.as_deref() == Some(target.name.as_str()) {
                                round.wake.insert(target.repository.clone());
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(environment = %target.name, error = %e, "processing failed");
                    // A failure (e.g. a push that kept losing the race) is retried like a defer.
                    round.retry = true;
                }
            }
        }
        round
    }

    /// One repository's task: a round on start, then one per poll interval or trigger, until
    /// `shutdown`. Deferred candidates and failed syncs are retried with backoff, sooner than the
    /// poll interval.
    async fn repository_task(self: Arc<Self>, repo: String, shutdown: CancellationToken) {
        let Some(trigger) = self.triggers.get(&repo).cloned() else {
            return;
        };
        let poll = self
            .config()
            .repositories
            .get(&repo)
            .map(|r| r.poll_interval)
            .unwrap_or(Duration::from_secs(30));
        let mut backoff: Option<Duration> = None;
        loop {
            let round = self.round(&repo, &shutdown).await;
            for other in &round.wake {
                self.trigger(other);
            }
            let wait = if round.retry {
                let next = backoff.map_or(DEFER_FIRST, |b| (b * 2).min(DEFER_MAX));
                backoff = Some(next);
                next.min(poll)
            } else {
                backoff = None;
                poll
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = trigger.notified() => tracing::debug!("triggered"),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts a file watcher (see [`crate::watch`]) for every repository whose remote is on this
    /// machine. A watcher that cannot start leaves that repository to polling.
    fn watch_local_remotes(&self, shutdown: &CancellationToken, tracker: &TaskTracker) {
        for (name, repo) in &self.config().repositories {
            let (Some(dir), Some(wake)) = (crate::watch::local_git_dir(&repo.url), self.triggers.get(name)) else {
                continue;
            };
            match crate::watch::watch_refs(&dir, wake.clone(), shutdown.clone(), tracker) {
                Ok(()) => tracing::info!(repository = %name, "watching the remote's refs"),
                Err(e) => tracing::warn!(repository = %name, error = %e, "cannot watch the remote; polling only"),
            }
        }
    }

    /// The long-running loop with default [`RunOptions`].
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.run_with(shutdown, RunOptions::default()).await
    }

    /// The long-running loop: one task per repository (see [`Daemon::trigger`]), file watchers for
    /// local remotes, and the systemd watchdog if asked for. Returns after `shutdown` fires, once the
    /// in-flight passes have finished their current commit, or after `options.grace` at the latest.
    /// An abandoned pass is safe to abandon: every push is compare-and-swap and git is the state.
    pub async fn run_with(self: Arc<Self>, shutdown: CancellationToken, options: RunOptions) {
        let tracker = TaskTracker::new();
        if options.watch_files {
            self.watch_local_remotes(&shutdown, &tracker);
        }
        for name in self.mirrors.keys() {
            let span = tracing::info_span!("repository", repository = %name);
            tracker.spawn(
                self.clone()
                    .repository_task(name.clone(), shutdown.clone())
                    .instrument(span),
            );
        }
        if let Some(every) = watchdog_interval() {
            tracker.spawn(watchdog(every, shutdown.clone()));
        }
        tracker.close();
        shutdown.cancelled().await;
        sd_notify("STOPPING=1");
        tracing::info!("stopping: waiting for in-flight passes");
        match tokio::time::timeout(options.grace, tracker.wait()).await {
            Ok(()) => tracing::info!("daemon stopped"),
            Err(_) => tracing::warn!(
                grace = ?options.grace,
                "in-flight work did not finish within the grace period; leaving it (pushes are compare-and-swap)"
            ),
        }
    }
}

/// Half the systemd watchdog period (`WATCHDOG_USEC`), if systemd asked this process for pings.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID").ok().and_then(|p| p.parse::<u32>().ok()) {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings systemd's watchdog. It runs on the same runtime as the repository tasks, so a wedged
/// runtime stops the pings and systemd restarts us.
async fn watchdog(every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => sd_notify("WATCHDOG=1"),
        }
    }
}

/// Tells systemd (`Type=notify`) the service state, e.g. `READY=1` or `STOPPING=1`. A no-op
/// outside systemd. Failures are logged, never fatal: the daemon works the same without it.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let path = path.to_string_lossy();
        if let Some(name) = path.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(state.as_bytes(), &addr)?;
            }
            #[cfg(not(target_os = "linux"))]
            let _ = name;
        } else {
            socket.send_to(state.as_bytes(), path.as_ref())?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(dir: &std::path::Path) -> Daemon {
        let yaml = r#"version: 1
state_dir: ./state
repositories:
  envs: {url: 'file:///nonexistent/envs.git'}
  dr: {url: 'file:///nonexistent/dr.git'}
contracts:
  c: {materials: []}
policies:
  p: {contract: c, mode: warn}
environments:
  staging: {repository: envs, path: clusters/staging}
  prod: {repository: envs, path: clusters/prod, promote_from: staging, policy: p}
  dr: {repository: dr, path: clusters/dr, promote_from: prod, policy: p}
"#;
        let config = crate::config::parse(yaml, &dir.join("tollgate.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let gate = Gate {
            stores: crate::oci::Stores::from_config(&config).unwrap(),
            config: Arc::new(config),
            metrics: Arc::new(crate::telemetry::Metrics::new()),
        };
        Daemon::open(Arc::new(gate)).unwrap()
    }

    const ATTESTING: &str = r#"version: 1
state_dir: ./state
repositories:
  envs: {url: 'file:///nonexistent/envs.git'}
contracts:
  c: {materials: []}
policies:
  p: {contract: c, mode: enforce}
environments:
  staging: {repository: envs, path: clusters/staging}
  prod: {repository: envs, path: clusters/prod, promote_from: staging, policy: p, attest_promotions: {key: ./promotion.key}}
"#;

    fn attesting_config(dir: &std::path::Path) -> crate::config::Config {
        std::fs::write(dir.join("promotion.key"), crate::keys::SigningKey::generate().to_pem()).unwrap();
        crate::config::parse(ATTESTING, &dir.join("tollgate.yaml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_promotion_key_is_loaded_at_start_and_a_vanished_one_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = attesting_config(dir.path());
        let gate = |config: &crate::config::Config| {
            Arc::new(Gate {
                stores: crate::oci::Stores::from_config(config).unwrap(),
                config: Arc::new(config.clone()),
                metrics: Arc::new(crate::telemetry::Metrics::new()),
            })
        };
        let d = Daemon::open(gate(&config)).unwrap();
        assert_eq!(d.promotion_keys.keys().collect::<Vec<_>>(), ["prod"]);
        std::fs::remove_file(dir.path().join("promotion.key")).unwrap();
        match Daemon::open(gate(&config)) {
            Err(DaemonError::PromotionKey { environment, .. }) => assert_eq!(environment, "prod"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started without its promotion key"),
        }
    }

    /// A registry that serves nothing and refuses every write, counting the attempts.
    #[derive(Default)]
    struct ReadOnly(std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl crate::gate::evidence::EvidenceStore for ReadOnly {
        async fn resolve(
            &self,
            image: &crate::image::ImageRef,
        ) -> Result<crate::image::Digest, crate::gate::evidence::EvidenceError> {
            image
                .digest
                .clone()
                .ok_or(crate::gate::evidence::EvidenceError::NotFound {
                    registry: "ro.example".into(),
                    reference: image.to_string(),
                })
        }
        async fn fetch(
            &self,
            _: &crate::image::ImageRef,
            _: &crate::image::Digest,
        ) -> Result<Vec<crate::gate::RawEvidence>, crate::gate::evidence::EvidenceError> {
            Ok(vec![])
        }
        async fn attach_attestation(
            &self,
            _: &crate::image::ImageRef,
            _: &crate::image::Digest,
            _: &[u8],
            _: &str,
        ) -> Result<(), crate::gate::evidence::EvidenceError> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(crate::gate::evidence::EvidenceError::Write {
                registry: "ro.example".into(),
                detail: "denied".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_failed_attach_is_retried_once_then_reported_without_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = attesting_config(dir.path());
        let ro = Arc::new(ReadOnly::default());
        let store: Arc<dyn crate::gate::evidence::EvidenceStore> = ro.clone();
        let gate = Gate {
            stores: crate::oci::Stores::from_stores([("ro.example".to_string(), store)]).unwrap(),
            config: Arc::new(config),
            metrics: Arc::new(crate::telemetry::Metrics::new()),
        };
        let d = Daemon::open(Arc::new(gate)).unwrap();
        let digest = crate::image::Digest::of(b"image");
        let image = crate::image::ImageRef::parse(&format!("ro.example/acme/api@{digest}")).unwrap();
        let ctx = crate::context::PolicyContext::new(time::OffsetDateTime::now_utc());
        let eval = d
            .gate
            .evaluate("prod", &image, None, &ctx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let prod = d.config().environments["prod"].clone();
        let key = d.promotion_keys["prod"].clone();
        let commit = git2::Oid::from_str("2222222222222222222222222222222222222222").unwrap();
        // Returns instead of erroring: the promotion commit is already pushed and counted.
        assert!(!d.attest_promotion(&prod, &eval, commit, &key).await);
        assert_eq!(ro.0.load(Ordering::Relaxed), 2, "one immediate retry");
    }

    #[test]
    fn each_target_belongs_to_the_task_of_its_upstream_repository() {
        let dir = tempfile::tempdir().unwrap();
        let d = daemon(dir.path());
        let names = |repo: &str| d.targets_of(repo).into_iter().map(|e| e.name).collect::<Vec<_>>();
        // dr is written into the `dr` repository, but its candidates appear in `envs` (prod).
        assert_eq!(names("envs"), ["prod", "dr"]);
        assert!(names("dr").is_empty());
    }

    #[tokio::test]
    async fn triggers_coalesce_and_unknown_repositories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = daemon(dir.path());
        assert!(!d.trigger("nope"));
        assert!(d.trigger("envs") && d.trigger("envs"));
        let wake = d.triggers["envs"].clone();
        // Two triggers before the task waits make one wake-up, not two.
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), wake.notified())
            .await
            .is_err());
        assert!(!d.is_ready(), "nothing synced yet");
    }
}
