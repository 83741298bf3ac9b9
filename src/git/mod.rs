//! The git adapter: a bare local mirror per environment repository, and everything tollgate reads from and
//! writes to git (SPEC §5): files at a commit, first-parent history, commits with trailers, notes under
//! `refs/notes/tollgate`, tollgate's state refs under `refs/tollgate/*`, and compare-and-swap pushes.
//!
//! All functions are synchronous (libgit2 is); the daemon calls them through `spawn_blocking`.
//!
//! - [`Mirror`] (`mirror.rs`): open, fetch, read, commit, push.
//! - `auth.rs`: the credentials callback for [`crate::config::GitAuth`] and the server identity check.
//! - `trust.rs`: SSH host keys against `known_hosts_file`, HTTPS certificates against `ca_file` (pure).
//! - `sign.rs`: signed commits (`repositories.<name>.signing`) through `ssh-keygen -Y sign` or `gpg`.
//! - [`trailers`] and [`split_decisions`] (`trailers.rs`): pure parsing of commit messages and notes.
//!
//! Where the remote's refs land locally (all force-updated by a fetch, because they only mirror the remote):
//!
//! | remote | local tracking ref |
//! |---|---|
//! | `refs/heads/<branch>` | `refs/remotes/origin/<branch>` |
//! | `refs/heads/tollgate/*` (promotion branches) | `refs/remotes/origin/tollgate/*` |
//! | `refs/notes/tollgate` | `refs/tollgate-remote/notes` |
//! | `refs/tollgate/<name>` | `refs/tollgate-remote/state/<name>` |
//!
//! Nothing in the mirror is the only copy of anything: deleting `state_dir` loses nothing (SPEC §9).

mod auth;
mod mirror;
mod sign;
mod trailers;
mod trust;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use git2::Oid;
pub use mirror::Mirror;
pub use trailers::{append_decision, split_decisions, trailers, DECISION_SEPARATOR};

use crate::config::Author;

/// The notes ref where blocked decisions are recorded (SPEC §5).
pub const NOTES_REF: &str = "refs/notes/tollgate";
/// Prefix of tollgate's state refs in the remote: `refs/tollgate/processed/prod`, …
pub const STATE_REF_PREFIX: &str = "refs/tollgate/";
/// tollgate's own branches (`write: {mode: branch}` promotion branches): the only refs it ever moves without a
/// fast-forward ([`Mirror::replace_branch`]), and the namespace the config requires branch templates to use.
pub const REPLACEABLE_BRANCH_PREFIX: &str = "tollgate/";

/// What the remote did with a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The remote ref now points at the pushed commit (the local tracking ref too).
    Pushed,
    /// The remote refused the update: usually someone else pushed first (non-fast-forward, or the ref moved
    /// while we pushed), but also a hook or a protected branch. Re-fetch, re-apply on the new head and retry,
    /// a bounded number of times: a hook that always declines will decline again.
    Rejected { reason: String },
}

/// What tollgate needs to know about a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: Oid,
    /// The full message, subject included; not UTF-8 bytes are replaced (U+FFFD).
    pub message: String,
    pub author: Author,
    /// Committer time, unix seconds: when the commit landed in this history (what soak times measure).
    pub time: i64,
    /// Author time, unix seconds.
    pub author_time: i64,
}

/// Errors of the git adapter. Each says which repository (the `repositories` key in the config) and, where it
/// matters, which ref or commit, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("repository `{repo}`: cannot open or create its mirror at {path}: {source}; check that state_dir is writable, or delete the folder to re-create it")]
    Open {
        repo: String,
        path: PathBuf,
        #[source]
        source: git2::Error,
    },

    #[error("repository `{repo}`: {what} `{value}` is not valid: {reason}")]
    Invalid {
        repo: String,
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("repository `{repo}`: authentication to {url} failed: {message}; check `repositories.{repo}.auth`")]
    Auth { repo: String, url: String, message: String },

    /// The server is not who the configuration says it should be: an SSH host key not in `known_hosts`, or an
    /// HTTPS certificate nothing trusted vouches for. Never retried into success by accepting it.
    #[error("repository `{repo}`: the server at {url} was not verified: {message}; check `repositories.{repo}.known_hosts_file` / `ca_file`")]
    ServerIdentity { repo: String, url: String, message: String },

    #[error("repository `{repo}`: signing a commit failed: {message}; check `repositories.{repo}.signing`")]
    Sign { repo: String, message: String },

    #[error(
        "repository `{repo}`: fetching from {url} failed: {source}; check the URL and that the remote is reachable"
    )]
    Fetch {
        repo: String,
        url: String,
        #[source]
        source: git2::Error,
    },

    #[error("repository `{repo}`: pushing {refname} to {url} failed: {source}")]
    Push {
        repo: String,
        url: String,
        refname: String,
        #[source]
        source: git2::Error,
    },

    /// `from` is not an ancestor of `to`: the branch was force-pushed or rebased upstream. The caller should
    /// treat `to` as a fresh start (as if `from` were `None`) rather than diff across unrelated histories.
    #[error("repository `{repo}`: {from} is not an ancestor of {to}: the branch history was rewritten upstream; resynchronise from {to}")]
    NotAncestor { repo: String, from: Oid, to: Oid },

    #[error(
        "repository `{repo}`: {what} {id} not found in the mirror; fetch first, or the remote history was rewritten"
    )]
    NotFound { repo: String, what: &'static str, id: Oid },

    /// Any other libgit2 failure, with the operation it interrupted.
    #[error("repository `{repo}`: {op} failed: {source}")]
    Git {
        repo: String,
        op: &'static str,
        #[source]
        source: git2::Error,
    },
}
