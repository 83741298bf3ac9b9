//! Recording a decision in git (SPEC §5): the commit message with its trailers (pure), and the
//! promotion commit or block note written with compare-and-swap pushes (I/O).

use std::fmt::Write as _;

use crate::gate::decide::Decision;
use crate::gate::{Candidate, DecisionKind, Material, Outcome};
use crate::image::Digest;

/// Everything a decision message says.
pub struct Record<'a> {
    pub candidate: &'a Candidate,
    pub decision: &'a Decision,
    pub policy_name: &'a str,
    pub policy_digest: &'a Digest,
    /// Verified materials; those a rule relied on are listed as evidence.
    pub materials: &'a [Material],
}

/// Trailer values and message lines must stay on one line: a newline in a registry-supplied string
/// would otherwise forge a trailer.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

impl Record<'_> {
    /// The materials the decision relied on, in result order, each once.
    pub fn evidence(&self) -> Vec<&Material> {
        let mut out: Vec<&Material> = Vec::new();
        for r in &self.decision.results {
            for d in &r.evidence {
                if let Some(m) = self.materials.iter().find(|m| &m.digest == d) {
                    if !out.iter().any(|o| o.digest == m.digest) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }

    pub fn subject(&self) -> String {
        let c = self.candidate;
        let verb = match self.decision.kind {
            DecisionKind::Allow => "promote",
            DecisionKind::Block => "block",
            DecisionKind::Defer => "defer",
        };
        let from = c
            .source_environment
            .as_deref()
            .map(|e| format!(" from {e}"))
            .unwrap_or_default();
        format!(
            "{verb}({}): {} {}{from}",
            c.environment,
            c.upstream_ref.short_name(),
            c.digest.short()
        )
    }

    /// The full message: subject, body, and the `Tollgate-*` trailers in the last paragraph.
    pub fn message(&self) -> String {
        let c = self.candidate;
        let d = self.decision;
        let mut m = String::new();
        let _ = writeln!(m, "{}\n", one_line(&self.subject()));
        let verb = match d.kind {
            DecisionKind::Allow => "Promoted",
            DecisionKind::Block => "Blocked",
            DecisionKind::Defer => "Deferred",
        };
        let tag = c
            .upstream_ref
            .tag
            .as_deref()
            .map(|t| format!(" (tag {})", one_line(t)))
            .unwrap_or_default();
        let from = match (&c.source_environment, &c.source_commit) {
            (Some(e), Some(commit)) => format!(" from {e}@{}", &commit[..commit.len().min(7)]),
            (Some(e), None) => format!(" from {e}"),
            _ => String::new(),
        };
        let _ = writeln!(m, "{verb} {}{tag}{from}.", c.pinned());
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        // The waived count only appears when there is one, so messages without waivers read as before.
        let waived = match d.count(Outcome::Waived) {
            0 => String::new(),
            n => format!(", {n} waived"),
        };
        let _ = writeln!(
            m,
            "Policy {} ({}): {} passed, {} failed, {}{waived}.",
            self.policy_name,
            d.mode.as_str(),
            d.count(Outcome::Pass),
            d.count(Outcome::Fail),
            plural(d.count(Outcome::Warn), "warning"),
        );
        for r in &d.results {
            let word = match r.outcome {
                Outcome::Fail => "fail",
                Outcome::Warn => "warn",
                Outcome::Waived => "waived",
                Outcome::Pass | Outcome::Skip => continue,
            };
            let code = r.reason.map(|c| c.as_str()).unwrap_or(&r.rule);
            let _ = writeln!(m, "  {word:<5} {code}: {}", one_line(&r.message));
        }
        let evidence = self.evidence();
        if !evidence.is_empty() {
            let _ = writeln!(m, "Evidence:");
            for e in &evidence {
                let _ = writeln!(
                    m,
                    "  {:<20} {:<7} {:<16} {:<6} {}",
                    e.kind.as_str(),
                    e.signer.method,
                    one_line(&e.signer.signer),
                    e.source.as_str(),
                    e.digest
                );
            }
        }
        let _ = writeln!(m);
        let _ = writeln!(m, "Tollgate-Decision: {}", d.kind);
        let _ = writeln!(m, "Tollgate-Environment: {}", c.environment);
        let _ = writeln!(m, "Tollgate-Image: {}", one_line(&c.pinned()));
        if let (Some(e), Some(commit)) = (&c.source_environment, &c.source_commit) {
            let _ = writeln!(m, "Tollgate-Source: {e}@{commit}");
        }
        let _ = writeln!(m, "Tollgate-Policy: {}@{}", self.policy_name, self.policy_digest);
        let _ = writeln!(m, "Tollgate-Mode: {}", d.mode.as_str());
        for e in &evidence {
            let _ = writeln!(m, "Tollgate-Evidence: {} {}", e.kind.as_str(), e.digest);
        }
        for w in &d.waivers {
            let _ = writeln!(m, "Tollgate-Waiver: {}", one_line(&w.trailer()));
        }
        for code in d.reasons() {
            let _ = writeln!(m, "Tollgate-Reason: {code}");
        }
        m
    }
}

/// True if `text` (a commit message or a note holding several decisions) already records this
/// candidate for this environment under this policy digest.
pub fn already_recorded(text: &str, environment: &str, image: &str, policy: &str) -> bool {
    crate::git::split_decisions(text).into_iter().any(|decision| {
        let t = crate::git::trailers(decision);
        let has = |k: &str, v: &str| t.iter().any(|(tk, tv)| tk == k && tv == v);
        has("Tollgate-Environment", environment) && has("Tollgate-Image", image) && has("Tollgate-Policy", policy)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    #[error("cannot rewrite {file}: {source}")]
    Manifest {
        file: String,
        source: crate::manifest::ManifestError,
    },
    #[error("image {image} is not referenced under {path} in the target environment")]
    NotInTarget { image: String, path: String },
    #[error("the remote kept rejecting our push ({attempts} attempts, last: {reason}); will retry on the next pass")]
    Contention { attempts: usize, reason: String },
    #[error("repository `{0}` has no branch `{1}` to promote into")]
    NoTargetBranch(String, String),
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The commit (promotion) or notes commit (block) that was pushed.
    Written(git2::Oid),
    /// Nothing to do: the same decision is already in git.
    AlreadyRecorded,
}

const MAX_ATTEMPTS: usize = 8;

/// Writes the promotion commit into `env`: every reference to the candidate's image under the
/// environment path is pointed at the candidate digest. Compare-and-swap: on a rejected push the
/// remote is fetched again and the change re-applied on its new head; never forced.
///
/// With `write: {mode: branch}` the commit goes onto the promotion branch instead (`{env}` and `{image}`
/// of the template filled in, see [`promotion_branch`]), on top of the target branch head, ready for a pull
/// request. A newer candidate for the same environment and image recreates the commit on the current target
/// head and moves the branch there: the one non-fast-forward update tollgate makes, on its own branch, as a
/// compare-and-swap against the value last fetched ([`crate::git::Mirror::replace_branch`]).
pub fn promote(
    mirror: &crate::git::Mirror,
    repo: &crate::config::Repository,
    env: &crate::config::Environment,
    candidate: &Candidate,
    message: &str,
    detect: &crate::manifest::DetectOptions,
) -> Result<Recorded, RecordError> {
    let new = candidate.upstream_ref.with_digest(candidate.digest.clone());
    let branch = match &env.write {
        crate::config::WriteMode::Direct => None,
        crate::config::WriteMode::Branch { branch } => {
            Some(promotion_branch(branch, &env.name, candidate.upstream_ref.short_name()))
        }
    };
    let mut last = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let head = mirror
            .fetch()?
            .ok_or_else(|| RecordError::NoTargetBranch(repo.name.clone(), repo.branch.clone()))?;
        let changes = pin_image(mirror, env, head, &new, detect)?;
        if changes.is_empty() {
            // The target already runs this digest (promoted directly, or the pull request was merged).
            return Ok(Recorded::AlreadyRecorded);
        }
        let (commit, outcome) = match &branch {
            None => {
                let commit = mirror.commit_files(head, &changes, message, &repo.author)?;
                (commit, mirror.push_ref(commit, &format!("refs/heads/{}", repo.branch))?)
            }
            Some(branch) => {
                let current = mirror.remote_branch(branch)?;
                if let Some(tip) = current {
                    if records_same_decision(&mirror.commit_info(tip)?.message, message) {
                        return Ok(Recorded::AlreadyRecorded);
                    }
                }
                let commit = mirror.commit_files(head, &changes, message, &repo.author)?;
                (
                    commit,
                    mirror.replace_branch(commit, &format!("refs/heads/{branch}"), current)?,
                )
            }
        };
        match outcome {
            crate::git::PushOutcome::Pushed => return Ok(Recorded::Written(commit)),
            crate::git::PushOutcome::Rejected { reason } => {
                tracing::info!(attempt, reason = %reason, "promotion push rejected; re-applying on the new head");
                last = reason;
            }
        }
    }
    Err(RecordError::Contention {
        attempts: MAX_ATTEMPTS,
        reason: last,
    })
}

/// The files under the environment path at `head` with every reference to `new`'s image pointed at `new`;
/// empty when they all already are.
fn pin_image(
    mirror: &crate::git::Mirror,
    env: &crate::config::Environment,
    head: git2::Oid,
    new: &crate::image::ImageRef,
    detect: &crate::manifest::DetectOptions,
) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
    let files = mirror.files_under(head, &env.path)?;
    let mut changes = Vec::new();
    let mut seen = false;
    for (path, bytes) in &files {
        let Ok(text) = std::str::from_utf8(bytes) else { continue };
        if !is_manifest_path(path) {
            continue;
        }
        let manifest_err = |source| RecordError::Manifest {
            file: path.clone(),
            source,
        };
        let images = crate::manifest::find_images(path, text, detect).map_err(manifest_err)?;
        if !images.iter().any(|l| l.image.name == new.name) {
            continue;
        }
        seen = true;
        let (rewritten, n) =
            crate::manifest::rewrite_image(path, text, &new.name, new, detect).map_err(manifest_err)?;
        if n > 0 && rewritten != text {
            changes.push((path.clone(), rewritten.into_bytes()));
        }
    }
    if !seen {
        return Err(RecordError::NotInTarget {
            image: new.name.clone(),
            path: env.path.clone(),
        });
    }
    Ok(changes)
}

/// Whether the commit message `existing` records the decision that `message` records: same environment,
/// image (by digest) and policy digest, read from the trailers.
fn records_same_decision(existing: &str, message: &str) -> bool {
    let trailers = crate::git::trailers(message);
    let get = |k: &str| trailers.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.as_str());
    match (
        get("Tollgate-Environment"),
        get("Tollgate-Image"),
        get("Tollgate-Policy"),
    ) {
        (Some(env), Some(image), Some(policy)) => already_recorded(existing, env, image, policy),
        _ => false,
    }
}

/// The promotion branch for `env` and the image short name `image`: the template with `{env}` and `{image}`
/// filled in, each made safe for a ref name (anything but letters, digits, `.`, `_`, `-` becomes `-`; no
/// leading `.` or `-`, no `..`, no trailing `.lock`).
pub fn promotion_branch(template: &str, env: &str, image: &str) -> String {
    fn component(s: &str) -> String {
        let mut out: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while out.contains("..") {
            out = out.replace("..", ".");
        }
        let mut out = out.trim_start_matches(['.', '-']).trim_end_matches('.').to_string();
        while let Some(stripped) = out.strip_suffix(".lock") {
            out = stripped.trim_end_matches('.').to_string();
        }
        if out.is_empty() {
            "_".to_string()
        } else {
            out
        }
    }
    template
        .replace("{env}", &component(env))
        .replace("{image}", &component(image))
}

/// Appends a block decision to the note of the upstream commit under `refs/notes/tollgate`, unless
/// the same (environment, image, policy) is already recorded there.
pub fn note_block(
    mirror: &crate::git::Mirror,
    commit: git2::Oid,
    message: &str,
    author: &crate::config::Author,
    key: (&str, &str, &str),
) -> Result<Recorded, RecordError> {
    let mut last = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        mirror.fetch()?;
        let existing = mirror.note(commit)?;
        if existing
            .as_deref()
            .is_some_and(|t| already_recorded(t, key.0, key.1, key.2))
        {
            return Ok(Recorded::AlreadyRecorded);
        }
        let text = crate::git::append_decision(existing.as_deref(), message);
        let notes = mirror.note_commit(commit, &text, author)?;
        match mirror.push_ref(notes, crate::git::NOTES_REF)? {
            crate::git::PushOutcome::Pushed => return Ok(Recorded::Written(notes)),
            crate::git::PushOutcome::Rejected { reason } => {
                tracing::info!(attempt, reason = %reason, "notes push rejected; re-applying");
                last = reason;
            }
        }
    }
    Err(RecordError::Contention {
        attempts: MAX_ATTEMPTS,
        reason: last,
    })
}

/// YAML files are the only ones that can hold image references.
fn is_manifest_path(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::gate::decide::decide;
    use crate::gate::{EvidenceSource, MaterialKind, RuleResult, SignerMatch};
    use crate::image::ImageRef;
    use crate::reason::ReasonCode;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", hex::encode([n; 32]))).unwrap()
    }

    fn candidate() -> Candidate {
        Candidate {
            environment: "prod".into(),
            upstream_ref: ImageRef::parse(&format!("ghcr.io/acme/payments-api:1.4.2@{}", digest(0x3f))).unwrap(),
            digest: digest(0x3f),
            source_environment: Some("staging".into()),
            source_commit: Some("9c1d2e4f00000000000000000000000000000000".into()),
        }
    }

    fn sbom() -> Material {
        Material {
            kind: MaterialKind::SbomCyclonedxJson,
            predicate_type: "https://cyclonedx.org/bom".into(),
            signer: SignerMatch {
                signer: "release-key".into(),
                method: "key",
                identity: None,
            },
            source: EvidenceSource::Att,
            digest: digest(0xab),
            statement: serde_json::json!({}),
        }
    }

    fn result(
        rule: &str,
        outcome: Outcome,
        reason: Option<ReasonCode>,
        message: &str,
        evidence: Vec<Digest>,
    ) -> RuleResult {
        RuleResult {
            rule: rule.into(),
            outcome,
            reason,
            message: message.into(),
            evidence,
        }
    }

    #[test]
    fn allow_message_has_the_spec_trailers() {
        let decision = decide(
            Mode::Warn,
            vec![
                result(
                    "contract:SBOM_CYCLONEDX_JSON",
                    Outcome::Pass,
                    None,
                    "ok",
                    vec![digest(0xab)],
                ),
                result(
                    "contract:SLSA_PROVENANCE",
                    Outcome::Fail,
                    Some(ReasonCode::MaterialMissing),
                    "no SLSA_PROVENANCE found for the image",
                    vec![],
                ),
            ],
        );
        let materials = [sbom()];
        let pd = digest(0x77);
        let record = Record {
            candidate: &candidate(),
            decision: &decision,
            policy_name: "prod",
            policy_digest: &pd,
            materials: &materials,
        };
        let message = record.message();
        insta::assert_snapshot!("allow_warn_message", message);
        let trailers = crate::git::trailers(&message);
        let get = |k: &str| {
            trailers
                .iter()
                .filter(|(tk, _)| tk == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("Tollgate-Decision"), vec!["allow"]);
        assert_eq!(get("Tollgate-Reason"), vec!["material-missing"]);
        assert_eq!(
            get("Tollgate-Evidence"),
            vec![format!("SBOM_CYCLONEDX_JSON {}", digest(0xab)).as_str()]
        );
        assert!(already_recorded(
            &message,
            "prod",
            &candidate().pinned(),
            &format!("prod@{pd}")
        ));
        assert!(!already_recorded(
            &message,
            "prod",
            &candidate().pinned(),
            &format!("prod@{}", digest(1))
        ));
    }

    #[test]
    fn block_message_names_each_failure() {
        let decision = decide(
            Mode::Enforce,
            vec![result(
                "contract:IMAGE_SIGNATURE",
                Outcome::Fail,
                Some(ReasonCode::SignatureInvalid),
                "present but not accepted: signed by no configured key",
                vec![digest(2)],
            )],
        );
        let pd = digest(0x77);
        let record = Record {
            candidate: &candidate(),
            decision: &decision,
            policy_name: "prod",
            policy_digest: &pd,
            materials: &[],
        };
        insta::assert_snapshot!("block_message", record.message());
    }

    #[test]
    fn a_newline_in_a_tag_cannot_forge_a_trailer() {
        let mut c = candidate();
        c.upstream_ref.tag = Some("1\nTollgate-Decision: allow".into());
        let decision = decide(
            Mode::Enforce,
            vec![result(
                "x",
                Outcome::Fail,
                Some(ReasonCode::LatestTag),
                "m\nTollgate-Decision: allow",
                vec![],
            )],
        );
        let pd = digest(1);
        let message = Record {
            candidate: &c,
            decision: &decision,
            policy_name: "prod",
            policy_digest: &pd,
            materials: &[],
        }
        .message();
        let decisions: Vec<_> = crate::git::trailers(&message)
            .into_iter()
            .filter(|(k, _)| k == "Tollgate-Decision")
            .collect();
        assert_eq!(decisions, vec![("Tollgate-Decision".to_string(), "block".to_string())]);
    }

    #[test]
    fn a_waived_failure_allows_with_a_waiver_trailer() {
        let waivers = crate::gate::waivers::parse(
            ".tollgate/waivers.yaml",
            "- reason: material-missing\n  image: ghcr.io/acme/*\n  expires: 2025-06-30\n  justification: SBOM tooling broken, ACME-17\n  approved_by: jane@acme.example\n",
        )
        .unwrap();
        let (results, applied, expired) = crate::gate::waivers::apply(
            vec![
                result(
                    "contract:SBOM_CYCLONEDX_JSON",
                    Outcome::Pass,
                    None,
                    "ok",
                    vec![digest(0xab)],
                ),
                result(
                    "contract:SLSA_PROVENANCE",
                    Outcome::Fail,
                    Some(ReasonCode::MaterialMissing),
                    "no SLSA_PROVENANCE found for the image",
                    vec![],
                ),
            ],
            &waivers,
            "ghcr.io/acme/payments-api",
            &digest(0x3f),
            time::macros::datetime!(2025-03-01 12:00 UTC),
        );
        let decision = crate::gate::decide::decide_with(Mode::Enforce, &Default::default(), results, applied, expired);
        assert_eq!(decision.kind, crate::gate::DecisionKind::Allow);
        let materials = [sbom()];
        let pd = digest(0x77);
        let message = Record {
            candidate: &candidate(),
            decision: &decision,
            policy_name: "prod",
            policy_digest: &pd,
            materials: &materials,
        }
        .message();
        insta::assert_snapshot!("allow_waived_message", message);
        let trailers = crate::git::trailers(&message);
        let get = |k: &str| {
            trailers
                .iter()
                .filter(|(tk, _)| tk == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            get("Tollgate-Waiver"),
            vec!["material-missing ghcr.io/acme/* expires 2025-06-30 approved-by jane@acme.example"]
        );
        assert_eq!(get("Tollgate-Reason"), vec!["waived"]);
    }
}
