//! The daemon: one task per repository that syncs it (poll, or a trigger), turns each new image in
//! a `promote_from` environment into a candidate for the next environment, evaluates it through the
//! [`Gate`] and records the decision. Git is the only state: a restart resumes from the
//! `refs/tollgate/processed/<env>` marker in the upstream repository.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{Config, Environment};
use crate::gate::record::{self, Recorded};
use crate::gate::{detect, DecisionKind};
use crate::git::Mirror;
use crate::manifest::DetectOptions;
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
    detect: DetectOptions,
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
        for (name, repo) in &config.repositories {
            mirrors.insert(
                name.clone(),
                Arc::new(Mutex::new(Mirror::open(&config.state_dir, repo)?)),
            );
            ready.insert(name.clone(), AtomicBool::new(false));
        }
        Ok(Daemon {
            gate,
            mirrors,
            ready,
            detect: DetectOptions::default(),
        })
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
        Ok(report)
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
        let (bumps, errors) = detect::bumps(&before, &after, &self.detect);
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
        let (target_images, _) = detect::images_in(&target_files, &self.detect);
        let policy_digest = self.gate.policy_digest(&target.name)?;
        let policy_name = target.policy.clone().unwrap_or_default();
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
            let source = Source {
                environment: up.name.clone(),
                commit: commit.to_string(),
            };
            let eval = self
                .gate
                .evaluate(&target.name, &bump.after, Some(source))
                .instrument(span.clone())
                .await?;
            let pinned = eval.candidate.pinned();
            let policy_key = format!("{policy_name}@{policy_digest}");
            match eval.decision.kind {
                DecisionKind::Defer => {
                    tracing::warn!(parent: &span, "evidence unavailable; deferring");
                    self.gate.metrics.record_decision(&target.name, &eval.decision);
                    report.deferred += 1;
                    return Ok(true);
                }
                DecisionKind::Allow => {
                    let message = eval.record().message();
                    let env = target.clone();
                    let repo = self.config().repositories.get(&target.repository).cloned();
                    let detect = self.detect.clone();
                    let candidate = eval.candidate.clone();
                    let outcome = with_mirror(&tgt_mirror, move |m| {
                        let repo = repo.ok_or_else(|| DaemonError::Join("target repository vanished".into()))?;
                        Ok(record::promote(m, &repo, &env, &candidate, &message, &detect)?)
                    })
                    .await?;
                    match outcome {
                        Recorded::Written(id) => {
                            tracing::info!(parent: &span, commit = %id, "promoted");
                            report.promoted += 1;
                        }
                        Recorded::AlreadyRecorded => {
                            tracing::info!(parent: &span, "already promoted");
                            report.skipped += 1;
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
                            tracing::info!(parent: &span, notes = %id, "blocked; note written");
                            report.blocked += 1;
                        }
                        Recorded::AlreadyRecorded => {
                            tracing::info!(parent: &span, "block already recorded under this policy");
                            report.skipped += 1;
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
        }
        Ok(false)
    }

    /// The long-running loop: a pass on start, then one per repository poll interval (the shortest
    /// one, for now), until `shutdown` fires. An in-flight pass finishes its current git write
    /// before the loop returns.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = self
            .config()
            .repositories
            .values()
            .map(|r| r.poll_interval)
            .min()
            .unwrap_or(Duration::from_secs(30));
        loop {
            let reports = tokio::select! {
                r = self.pass() => r,
                _ = shutdown.cancelled() => break,
            };
            for (env, r) in reports {
                if let Ok(r) = r {
                    if r != PassReport::default() {
                        tracing::info!(environment = %env, promoted = r.promoted, blocked = r.blocked, deferred = r.deferred, skipped = r.skipped, "pass done");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("daemon stopped");
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
