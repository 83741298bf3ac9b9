//! [`Mirror`]: a bare local mirror of one remote repository, and every read and write tollgate does through it.
//!
//! Reads see the remote as last fetched (the tracking refs of the table in the module root). Writes build
//! objects in the mirror and publish them with [`Mirror::push_ref`], which never forces: a push either
//! fast-forwards the remote ref or comes back [`PushOutcome::Rejected`], which is the compare-and-swap
//! that lets two replicas share a repository (SPEC §9).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use git2::build::TreeUpdateBuilder;
use git2::{
    AutotagOption, Direction, ErrorCode, FetchOptions, FetchPrune, FileMode, ObjectType, Oid, PushOptions, Reference,
    Repository, RepositoryInitOptions, Signature, TreeWalkMode, TreeWalkResult,
};

use super::auth::{self, Access, AuthState};
use super::{CommitInfo, GitError, PushOutcome, NOTES_REF, REPLACEABLE_BRANCH_PREFIX, STATE_REF_PREFIX};
use crate::config::{self, Author, CommitSigning};

const REMOTE: &str = "origin";
const NOTES_TRACKING: &str = "refs/tollgate-remote/notes";
const STATE_TRACKING_PREFIX: &str = "refs/tollgate-remote/state/";
/// Where [`Mirror::note_commit`] lets libgit2 build a notes commit; never pushed under this name.
const NOTES_SCRATCH: &str = "refs/tollgate-local/notes";
/// tollgate's own keyring for `signing: {gpg_key_file}`, inside the mirror folder (nothing there is the only
/// copy of anything: the key file is).
const GNUPG_HOME: &str = "tollgate-gnupg";

/// A bare mirror of one remote repository at `<state_dir>/repos/<name>.git`. Not `Sync` (libgit2 handles are
/// not); give each blocking task its own, or guard one with a mutex.
pub struct Mirror {
    repo: Repository,
    path: PathBuf,
    name: String,
    url: String,
    branch: String,
    access: Access,
    signing: Option<CommitSigning>,
}

impl fmt::Debug for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mirror")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("branch", &self.branch)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Mirror {
    /// Opens or creates `<state_dir>/repos/<name>.git` (bare) with remote `origin` = the configured URL
    /// (updated if the configuration changed). Fetches nothing.
    pub fn open(state_dir: &Path, repo: &config::Repository) -> Result<Mirror, GitError> {
        let invalid = |what, value: &str, reason| GitError::Invalid {
            repo: repo.name.clone(),
            what,
            value: value.to_string(),
            reason,
        };
        // The name becomes a folder name: keep it from escaping `repos/`.
        if repo.name.is_empty() || repo.name.starts_with('.') || repo.name.contains(['/', '\\']) {
            return Err(invalid("repository name", &repo.name, "it must be a plain folder name"));
        }
        if !Reference::is_valid_name(&format!("refs/heads/{}", repo.branch)) {
            return Err(invalid("branch", &repo.branch, "it is not a valid git branch name"));
        }
        let path = state_dir.join("repos").join(format!("{}.git", repo.name));
        let open_err = |source| GitError::Open {
            repo: repo.name.clone(),
            path: path.clone(),
            source,
        };
        let git = if path.exists() {
            Repository::open_bare(&path).map_err(open_err)?
        } else {
            let mut opts = RepositoryInitOptions::new();
            opts.bare(true).mkpath(true);
            Repository::init_opts(&path, &opts).map_err(open_err)?
        };
        // The remote is defined by its URL alone, without fetch refspecs: fetch passes its own, so nothing
        // but the refs tollgate asked for is ever written.
        let configured = git
            .find_remote(REMOTE)
            .ok()
            .and_then(|r| r.url().ok().map(str::to_string));
        if configured.as_deref() != Some(repo.url.as_str()) {
            let mut cfg = git.config().map_err(open_err)?;
            cfg.set_str(&format!("remote.{REMOTE}.url"), &repo.url)
                .map_err(open_err)?;
        }
        Ok(Mirror {
            repo: git,
            path,
            name: repo.name.clone(),
            url: repo.url.clone(),
            branch: repo.branch.clone(),
            access: Access {
                auth: repo.auth.clone(),
                ca_file: repo.ca_file.clone(),
                known_hosts_file: repo.known_hosts_file.clone(),
                ssh_port: super::trust::ssh_host_port(&repo.url).map_or(22, |(_, port)| port),
            },
            signing: repo.signing.clone(),
        })
    }

    /// The mirror's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configured branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The underlying libgit2 repository, for reads this adapter does not cover (e.g. `tollgate explain`).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Fetches the branch, tollgate's own branches (`refs/heads/tollgate/*`: promotion branches of
    /// `write: {mode: branch}`), `refs/notes/tollgate` and `refs/tollgate/*` into the tracking refs,
    /// force-updating and pruning them (they mirror the remote). Returns the remote branch head, `None` if it
    /// does not exist.
    pub fn fetch(&self) -> Result<Option<Oid>, GitError> {
        let branch = &self.branch;
        let mut refspecs = vec![
            format!("+refs/heads/{branch}:refs/remotes/{REMOTE}/{branch}"),
            format!("+{NOTES_REF}:{NOTES_TRACKING}"),
            format!("+{STATE_REF_PREFIX}*:{STATE_TRACKING_PREFIX}*"),
        ];
        // A configured branch inside the namespace is already covered (two refspecs writing one ref is an error).
        if !branch.starts_with(REPLACEABLE_BRANCH_PREFIX) {
            refspecs.push(format!(
                "+refs/heads/{REPLACEABLE_BRANCH_PREFIX}*:refs/remotes/{REMOTE}/{REPLACEABLE_BRANCH_PREFIX}*"
            ));
        }
        let state = AuthState::default();
        let mut remote = self
            .repo
            .find_remote(REMOTE)
            .map_err(|e| self.git_err("finding remote origin", e))?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(auth::callbacks(&self.access, &state))
            .download_tags(AutotagOption::None)
            .prune(FetchPrune::On)
            .update_fetchhead(false);
        remote
            .fetch(&refspecs, Some(&mut opts), Some("tollgate: fetch"))
            .map_err(|source| match self.transport_failure(&state, &source) {
                Some(e) => e,
                None => GitError::Fetch {
                    repo: self.name.clone(),
                    url: self.url.clone(),
                    source,
                },
            })?;
        self.head()
    }

    /// The remote branch head as last fetched (or pushed by this mirror).
    pub fn head(&self) -> Result<Option<Oid>, GitError> {
        self.read_ref(&format!("refs/remotes/{REMOTE}/{}", self.branch))
    }

    /// Another remote branch as last fetched (or pushed by this mirror): one of tollgate's own
    /// (`tollgate/…`, which [`Mirror::fetch`] mirrors), or a branch this mirror pushed.
    pub fn remote_branch(&self, branch: &str) -> Result<Option<Oid>, GitError> {
        if !Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(self.invalid("branch", branch, "it is not a valid git branch name"));
        }
        self.read_ref(&format!("refs/remotes/{REMOTE}/{branch}"))
    }

    /// Every blob under the folder `path` (`""` = the root) at `commit`, recursively, as (repo-relative path,
    /// content), sorted by path. A missing folder yields nothing (an environment not created yet); a path
    /// naming a file yields that file. Symlinks and submodules are skipped: they are not manifests.
    pub fn files_under(&self, commit: Oid, path: &str) -> Result<Vec<(String, Vec<u8>)>, GitError> {
        let tree = self
            .find_commit(commit)?
            .tree()
            .map_err(|e| self.git_err("reading a tree", e))?;
        let path = path.trim_matches('/');
        let (root, prefix) = if path.is_empty() {
            (tree, String::new())
        } else {
            let entry = match tree.get_path(Path::new(path)) {
                Ok(entry) => entry,
                Err(e) if e.code() == ErrorCode::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(self.git_err("looking up a path", e)),
            };
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .map_err(|e| self.git_err("reading a tree", e))?;
                    (sub, format!("{path}/"))
                }
                Some(ObjectType::Blob) if entry.filemode() != i32::from(FileMode::Link) => {
                    let blob = self
                        .repo
                        .find_blob(entry.id())
                        .map_err(|e| self.git_err("reading a blob", e))?;
                    return Ok(vec![(path.to_string(), blob.content().to_vec())]);
                }
                _ => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        let mut failure = None;
        root.walk(TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == i32::from(FileMode::Link) {
                return TreeWalkResult::Ok;
            }
            let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
                tracing::warn!(repo = %self.name, dir, "skipping a file whose name is not UTF-8");
                return TreeWalkResult::Ok;
            };
            match self.repo.find_blob(entry.id()) {
                Ok(blob) => {
                    out.push((format!("{prefix}{dir}{name}"), blob.content().to_vec()));
                    TreeWalkResult::Ok
                }
                Err(e) => {
                    failure = Some(e);
                    TreeWalkResult::Abort
                }
            }
        })
        .map_err(|e| self.git_err("walking a tree", failure.take().unwrap_or(e)))?;
        if let Some(e) = failure {
            return Err(self.git_err("reading a blob", e));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// First-parent commits after `from` (exclusive) up to `to` (inclusive), oldest first; `from` = `None`
    /// gives `[to]`, `from` = `to` gives `[]`. The walk stops at the first commit that `from` already contains,
    /// so a `from` merged in from a side branch works too. [`GitError::NotAncestor`] when `from` is not an
    /// ancestor of `to` (history rewritten upstream).
    pub fn commits_between(&self, from: Option<Oid>, to: Oid) -> Result<Vec<Oid>, GitError> {
        self.find_commit(to)?;
        let Some(from) = from else {
            return Ok(vec![to]);
        };
        if from == to {
            return Ok(Vec::new());
        }
        self.find_commit(from)?;
        if !self.is_ancestor(from, to)? {
            return Err(GitError::NotAncestor {
                repo: self.name.clone(),
                from,
                to,
            });
        }
        let mut out = Vec::new();
        let mut cur = Some(to);
        while let Some(id) = cur {
            if id == from || self.is_ancestor(id, from)? {
                break;
            }
            out.push(id);
            cur = self.first_parent(id)?;
        }
        out.reverse();
        Ok(out)
    }

    /// The first parent of `commit`; `None` for a root commit.
    pub fn first_parent(&self, commit: Oid) -> Result<Option<Oid>, GitError> {
        let c = self.find_commit(commit)?;
        Ok(c.parent_ids().next())
    }

    pub fn commit_info(&self, commit: Oid) -> Result<CommitInfo, GitError> {
        let c = self.find_commit(commit)?;
        let author = c.author();
        let time = c.committer().when().seconds();
        Ok(CommitInfo {
            id: commit,
            message: String::from_utf8_lossy(c.message_bytes()).into_owned(),
            author: Author {
                name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
                email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            },
            time,
            author_time: author.when().seconds(),
        })
    }

    /// A new commit (in the mirror only, not on any ref) whose tree is `parent`'s tree with `changes`
    /// (repo-relative path → new content) applied, and whose single parent is `parent`. Every other entry keeps
    /// its object id; a changed file keeps its mode (an executable stays executable); new folders are created.
    pub fn commit_files(
        &self,
        parent: Oid,
        changes: &[(String, Vec<u8>)],
        message: &str,
        author: &Author,
    ) -> Result<Oid, GitError> {
        let parent = self.find_commit(parent)?;
        let base = parent.tree().map_err(|e| self.git_err("reading a tree", e))?;
        let mut update = TreeUpdateBuilder::new();
        for (path, content) in changes {
            self.check_path(path)?;
            let mode = match base.get_path(Path::new(path)) {
                Ok(entry) if entry.filemode() == i32::from(FileMode::BlobExecutable) => FileMode::BlobExecutable,
                Ok(entry)
                    if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == i32::from(FileMode::Link) =>
                {
                    return Err(self.invalid("path", path, "it names a folder, symlink or submodule, not a file"));
                }
                _ => FileMode::Blob,
            };
            let blob = self.repo.blob(content).map_err(|e| self.git_err("writing a blob", e))?;
            update.upsert(path.as_str(), blob, mode);
        }
        let tree_id = update
            .create_updated(&self.repo, &base)
            .map_err(|e| self.git_err("building a tree", e))?;
        let tree = self
            .repo
            .find_tree(tree_id)
            .map_err(|e| self.git_err("reading a tree", e))?;
        let sig = self.signature(author)?;
        self.write_commit(&sig, &sig, message, &tree, &[&parent])
    }

    /// A commit object, signed when `signing` is configured (the `gpgsig` header, as `git commit -S`).
    fn write_commit(
        &self,
        author: &Signature<'_>,
        committer: &Signature<'_>,
        message: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
    ) -> Result<Oid, GitError> {
        let Some(signing) = &self.signing else {
            return self
                .repo
                .commit(None, author, committer, message, tree, parents)
                .map_err(|e| self.git_err("writing a commit", e));
        };
        let buffer = self
            .repo
            .commit_create_buffer(author, committer, message, tree, parents)
            .map_err(|e| self.git_err("writing a commit", e))?;
        let content = std::str::from_utf8(&buffer)
            .map_err(|_| self.git_err("signing a commit", git2::Error::from_str("the commit is not UTF-8")))?;
        let signature =
            super::sign::sign(signing, &self.path.join(GNUPG_HOME), content.as_bytes()).map_err(|message| {
                GitError::Sign {
                    repo: self.name.clone(),
                    message,
                }
            })?;
        self.repo
            .commit_signed(content, &signature, Some("gpgsig"))
            .map_err(|e| self.git_err("writing a signed commit", e))
    }

    /// Pushes `local` to `remote_ref` (a full ref name: `refs/heads/main`, `refs/notes/tollgate`,
    /// `refs/tollgate/processed/prod`), never forced. On success the local tracking ref follows, so reads see
    /// the new state without a fetch.
    ///
    /// Over the network (https, ssh, git) libgit2 refuses locally when the remote ref, as advertised when the
    /// push connects, is not an ancestor of `local`; the server then applies the update only if the ref still
    /// holds that advertised value, and reports any refusal per ref through the `push_update_reference`
    /// callback. Both come back as [`PushOutcome::Rejected`].
    ///
    /// For `file://` URLs and local paths libgit2's local transport force-writes the ref after its own check,
    /// which leaves a window in which a concurrent push is lost; so local remotes are written here directly,
    /// with the same fast-forward check and an atomic compare-and-swap on the ref (see `push_local`).
    pub fn push_ref(&self, local: Oid, remote_ref: &str) -> Result<PushOutcome, GitError> {
        if !remote_ref.starts_with("refs/") || !Reference::is_valid_name(remote_ref) {
            return Err(self.invalid("ref name", remote_ref, "pushes need a full, valid ref name (refs/…)"));
        }
        let outcome = match local_path(&self.url) {
            Some(path) => self.push_local(&path, local, remote_ref, None)?,
            None => self.push_remote(local, remote_ref, None)?,
        };
        self.after_push(local, remote_ref, outcome)
    }

    /// Moves one of tollgate's own branches (`refs/heads/tollgate/…`) to `local` whether or not that is a
    /// fast-forward, provided the remote still holds `expected` (`None`: the branch does not exist): a
    /// compare-and-swap against the value last fetched, so a concurrent writer's update is never lost, it makes
    /// this push come back [`PushOutcome::Rejected`]. Only promotion branches are ever replaced like this; the
    /// environment branch, notes and state refs only move forward ([`Mirror::push_ref`]).
    ///
    /// Local remotes: the ref is swapped atomically from `expected`. Network remotes: the push connects, checks
    /// that the advertised value is `expected`, then sends a forced update on the same connection; the server
    /// receives the advertised value as the old value and `git receive-pack` applies the update only if the ref
    /// still holds it. The residual race is with servers that ignore the old value of a forced update: a
    /// writer that moved the branch between the advertisement and the update would be overwritten. That
    /// writer could only be another tollgate replica promoting the same image into the same environment, and
    /// its own next pass finds the branch moved and rewrites it again, so the branch converges on the newest
    /// candidate either way.
    pub fn replace_branch(&self, local: Oid, remote_ref: &str, expected: Option<Oid>) -> Result<PushOutcome, GitError> {
        let ours = remote_ref
            .strip_prefix("refs/heads/")
            .is_some_and(|b| b.starts_with(REPLACEABLE_BRANCH_PREFIX));
        if !ours || !Reference::is_valid_name(remote_ref) {
            return Err(self.invalid(
                "ref name",
                remote_ref,
                "only tollgate's own branches (refs/heads/tollgate/…) are ever replaced",
            ));
        }
        let outcome = match local_path(&self.url) {
            Some(path) => self.push_local(&path, local, remote_ref, Some(expected))?,
            None => self.push_remote(local, remote_ref, Some(expected))?,
        };
        self.after_push(local, remote_ref, outcome)
    }

    fn after_push(&self, local: Oid, remote_ref: &str, outcome: PushOutcome) -> Result<PushOutcome, GitError> {
        if outcome == PushOutcome::Pushed {
            if let Some(tracking) = self.tracking_ref(remote_ref) {
                self.repo
                    .reference(&tracking, local, true, "tollgate: pushed")
                    .map_err(|e| self.git_err("updating a tracking ref after a push", e))?;
            }
        }
        Ok(outcome)
    }

    /// The note on `commit` under `refs/notes/tollgate`, as last fetched (or pushed by this mirror).
    pub fn note(&self, commit: Oid) -> Result<Option<String>, GitError> {
        match self.repo.find_note(Some(NOTES_TRACKING), commit) {
            Ok(note) => Ok(Some(String::from_utf8_lossy(note.message_bytes()).into_owned())),
            // Both "no notes ref yet" and "no note for this commit".
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.git_err("reading a note", e)),
        }
    }

    /// A notes commit on top of the fetched `refs/notes/tollgate` that sets the note of `commit` to `text`
    /// (replacing any note it had: append with [`super::append_decision`] first). Not pushed: publish it with
    /// `push_ref(id, NOTES_REF)`, and on `Rejected` fetch and redo from the new notes head.
    pub fn note_commit(&self, commit: Oid, text: &str, author: &Author) -> Result<Oid, GitError> {
        self.find_commit(commit)?;
        // libgit2 only writes notes onto a ref (and knows the fan-out layouts git uses for large note trees),
        // so it works on a scratch ref reset to the remote notes head each time.
        let base = self.read_ref(NOTES_TRACKING)?;
        match base {
            Some(base) => self
                .repo
                .reference(NOTES_SCRATCH, base, true, "tollgate: note base")
                .map(drop),
            None => match self.repo.find_reference(NOTES_SCRATCH) {
                Ok(mut r) => r.delete(),
                Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
        .map_err(|e| self.git_err("preparing the notes ref", e))?;
        let sig = self.signature(author)?;
        self.repo
            .note(&sig, &sig, Some(NOTES_SCRATCH), commit, text, true)
            .map_err(|e| self.git_err("writing a note", e))?;
        let notes = self
            .read_ref(NOTES_SCRATCH)?
            .ok_or_else(|| self.git_err("writing a note", git2::Error::from_str("the notes ref vanished")))?;
        if self.signing.is_none() {
            return Ok(notes);
        }
        // libgit2 cannot sign the notes commit it makes: rewrite the same tree, parents and message signed.
        let unsigned = self.find_commit(notes)?;
        let tree = unsigned.tree().map_err(|e| self.git_err("reading a tree", e))?;
        let parents = unsigned.parents().collect::<Vec<_>>();
        let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
        let message = String::from_utf8_lossy(unsigned.message_bytes()).into_owned();
        self.write_commit(&sig, &sig, &message, &tree, &parents)
    }

    /// tollgate's state ref `refs/tollgate/<name>` (e.g. `processed/prod`), as last fetched or pushed.
    /// Write it with `push_ref(oid, &format!("refs/tollgate/{name}"))`: it only moves forward along history.
    pub fn state_ref(&self, name: &str) -> Result<Option<Oid>, GitError> {
        if !Reference::is_valid_name(&format!("{STATE_REF_PREFIX}{name}")) {
            return Err(self.invalid("state ref name", name, "it is not a valid git ref name"));
        }
        self.read_ref(&format!("{STATE_TRACKING_PREFIX}{name}"))
    }

    // --- pushing -----------------------------------------------------------------------------------------

    /// `lease`: `None` pushes a fast-forward only; `Some(expected)` replaces the ref if it holds `expected`.
    fn push_remote(&self, local: Oid, remote_ref: &str, lease: Option<Option<Oid>>) -> Result<PushOutcome, GitError> {
        let state = AuthState::default();
        let refused: RefCell<Vec<String>> = RefCell::new(Vec::new());
        let push_err = |source: git2::Error| {
            self.transport_failure(&state, &source)
                .unwrap_or_else(|| GitError::Push {
                    repo: self.name.clone(),
                    url: self.url.clone(),
                    refname: remote_ref.to_string(),
                    source,
                })
        };
        let result = {
            let mut remote = self
                .repo
                .find_remote(REMOTE)
                .map_err(|e| self.git_err("finding remote origin", e))?;
            let mut cbs = auth::callbacks(&self.access, &state);
            // A push that the server refuses still "succeeds" as a libgit2 call: the per-ref status is the
            // only place a server-side refusal (stale old value, hook, protected branch) shows up.
            cbs.push_update_reference(|refname, status| {
                if let Some(status) = status {
                    refused.borrow_mut().push(format!("{refname}: {status}"));
                }
                Ok(())
            });
            let mut opts = PushOptions::new();
            opts.remote_callbacks(cbs);
            match lease {
                // No `+`: never forced.
                None => remote.push(&[format!("{local}:{remote_ref}")], Some(&mut opts)),
                Some(expected) => {
                    let mut conn = remote
                        .connect_auth(Direction::Push, Some(auth::callbacks(&self.access, &state)), None)
                        .map_err(push_err)?;
                    let advertised = conn
                        .list()
                        .map_err(push_err)?
                        .iter()
                        .find(|head| head.name() == remote_ref)
                        .map(|head| head.oid());
                    if advertised != expected {
                        return Ok(PushOutcome::Rejected {
                            reason: format!(
                                "{remote_ref}: the remote holds {}, expected {}",
                                show(advertised),
                                show(expected)
                            ),
                        });
                    }
                    // Forced, on the connection whose advertisement was just checked (see `replace_branch`).
                    conn.remote().push(&[format!("+{local}:{remote_ref}")], Some(&mut opts))
                }
            }
        };
        match result {
            Ok(()) => {}
            // libgit2's own check against the advertised ref: not a fast-forward, or the remote holds
            // commits this mirror has not fetched.
            Err(e) if e.code() == ErrorCode::NotFastForward => {
                return Ok(PushOutcome::Rejected {
                    reason: format!("{remote_ref}: {}", e.message()),
                });
            }
            Err(source) => return Err(push_err(source)),
        }
        let refused = refused.into_inner();
        if refused.is_empty() {
            Ok(PushOutcome::Pushed)
        } else {
            Ok(PushOutcome::Rejected {
                reason: refused.join("; "),
            })
        }
    }

    /// Push into a repository on this machine: copy the missing objects, then move the ref with an atomic
    /// compare-and-swap from the value it was checked at, as `git receive-pack` does.
    fn push_local(
        &self,
        remote_path: &Path,
        local: Oid,
        remote_ref: &str,
        lease: Option<Option<Oid>>,
    ) -> Result<PushOutcome, GitError> {
        let push_err = |source| GitError::Push {
            repo: self.name.clone(),
            url: self.url.clone(),
            refname: remote_ref.to_string(),
            source,
        };
        let target = Repository::open(remote_path).map_err(push_err)?;
        if !target.is_bare() {
            // As `git push` (receive.denyCurrentBranch): a work tree there would silently go stale.
            let msg = "the remote is not a bare repository; point the URL at a bare one (git init --bare)";
            return Err(push_err(git2::Error::from_str(msg)));
        }
        let old = match target.find_reference(remote_ref) {
            Ok(r) => Some(
                r.resolve()
                    .map_err(push_err)?
                    .target()
                    .ok_or_else(|| push_err(git2::Error::from_str("the remote ref does not point at an object")))?,
            ),
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(push_err(e)),
        };
        if old == Some(local) {
            return Ok(PushOutcome::Pushed);
        }
        if let Some(expected) = lease {
            // A replacement: the value last fetched must still be there; whether `local` descends from it
            // does not matter (the swap below is atomic from `old`, which equals `expected`).
            if old != expected {
                return Ok(PushOutcome::Rejected {
                    reason: format!(
                        "{remote_ref}: the remote holds {}, expected {}",
                        show(old),
                        show(expected)
                    ),
                });
            }
        } else if let Some(old) = old {
            let odb = self
                .repo
                .odb()
                .map_err(|e| self.git_err("opening the object database", e))?;
            if !odb.exists(old) {
                return Ok(PushOutcome::Rejected {
                    reason: format!("{remote_ref}: the remote is at {old}, which this mirror has not fetched"),
                });
            }
            if !self.is_ancestor(old, local)? {
                return Ok(PushOutcome::Rejected {
                    reason: format!("{remote_ref}: not a fast-forward of {old}"),
                });
            }
        }
        copy_missing_objects(&self.repo, &target, local).map_err(push_err)?;
        let msg = "tollgate: push";
        let written = match old {
            Some(old) => target.reference_matching(remote_ref, local, true, old, msg),
            None => target.reference(remote_ref, local, false, msg),
        };
        match written {
            Ok(_) => Ok(PushOutcome::Pushed),
            // The ref moved (or appeared) since it was read, or another writer holds its lock: lost the race.
            Err(e) if matches!(e.code(), ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked) => {
                Ok(PushOutcome::Rejected {
                    reason: format!("{remote_ref}: {}", e.message()),
                })
            }
            Err(e) => Err(push_err(e)),
        }
    }

    /// The local ref that mirrors `remote_ref`, if tollgate tracks that namespace.
    fn tracking_ref(&self, remote_ref: &str) -> Option<String> {
        if remote_ref == NOTES_REF {
            Some(NOTES_TRACKING.to_string())
        } else if let Some(name) = remote_ref.strip_prefix(STATE_REF_PREFIX) {
            Some(format!("{STATE_TRACKING_PREFIX}{name}"))
        } else {
            // Other branches (`write: branch` mode) are tracked like the main one, for the next read.
            remote_ref
                .strip_prefix("refs/heads/")
                .map(|b| format!("refs/remotes/{REMOTE}/{b}"))
        }
    }

    // --- helpers -----------------------------------------------------------------------------------------

    fn read_ref(&self, name: &str) -> Result<Option<Oid>, GitError> {
        match self.repo.refname_to_id(name) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(self.git_err("reading a ref", e)),
        }
    }

    fn find_commit(&self, id: Oid) -> Result<git2::Commit<'_>, GitError> {
        self.repo.find_commit(id).map_err(|e| match e.code() {
            ErrorCode::NotFound => GitError::NotFound {
                repo: self.name.clone(),
                what: "commit",
                id,
            },
            _ => self.git_err("reading a commit", e),
        })
    }

    /// Whether `ancestor` is `commit` or one of its ancestors.
    fn is_ancestor(&self, ancestor: Oid, commit: Oid) -> Result<bool, GitError> {
        if ancestor == commit {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(commit, ancestor)
            .map_err(|e| self.git_err("walking history", e))
    }

    fn signature(&self, author: &Author) -> Result<Signature<'static>, GitError> {
        Signature::now(&author.name, &author.email).map_err(|_| GitError::Invalid {
            repo: self.name.clone(),
            what: "author",
            value: format!("{} <{}>", author.name, author.email),
            reason: "a git signature needs a non-empty name and email without `<`, `>` or newlines",
        })
    }

    /// Repo-relative paths only: no absolute paths, no `.`/`..`/empty components, nothing under `.git`.
    fn check_path(&self, path: &str) -> Result<(), GitError> {
        let bad = path.is_empty()
            || path
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c.eq_ignore_ascii_case(".git"))
            || path.contains(['\0', '\\']);
        if bad {
            return Err(self.invalid("path", path, "it must be a relative path inside the repository"));
        }
        Ok(())
    }

    fn invalid(&self, what: &'static str, value: &str, reason: &'static str) -> GitError {
        GitError::Invalid {
            repo: self.name.clone(),
            what,
            value: value.to_string(),
            reason,
        }
    }

    fn git_err(&self, op: &'static str, source: git2::Error) -> GitError {
        GitError::Git {
            repo: self.name.clone(),
            op,
            source,
        }
    }

    /// An authentication or server identity error, if that is what `source` is.
    fn transport_failure(&self, state: &AuthState, source: &git2::Error) -> Option<GitError> {
        // libgit2 reports a certificate its TLS check refused as a plain SSL-class error.
        if source.code() == ErrorCode::Certificate || source.class() == git2::ErrorClass::Ssl {
            let message = state.server_failure().unwrap_or_else(|| {
                let hint = if super::trust::ssh_host_port(&self.url).is_some() {
                    "the SSH host key is not listed in ~/.ssh/known_hosts; list it there or in known_hosts_file"
                } else {
                    "the system trust store does not trust its certificate; set ca_file"
                };
                format!("{} ({hint})", source.message())
            });
            return Some(GitError::ServerIdentity {
                repo: self.name.clone(),
                url: self.url.clone(),
                message,
            });
        }
        let message = state
            .failure()
            .or_else(|| (source.code() == ErrorCode::Auth).then(|| source.message().to_string()))?;
        Some(GitError::Auth {
            repo: self.name.clone(),
            url: self.url.clone(),
            message,
        })
    }
}

/// An object id for a message, or `absent`.
fn show(id: Option<Oid>) -> String {
    id.map_or_else(|| "absent".to_string(), |id| id.to_string())
}

/// The folder of a remote on this machine: `file://` URLs and plain paths, but not `scheme://` URLs nor
/// scp-like `host:path` (a `:` before the first `/`).
pub(super) fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        // `file://localhost/srv/x.git` names the same folder as `file:///srv/x.git`.
        let rest = rest.strip_prefix("localhost").unwrap_or(rest);
        return Some(PathBuf::from(rest));
    }
    if url.contains("://") {
        return None;
    }
    match (url.find(':'), url.find('/')) {
        (Some(colon), Some(slash)) if colon < slash => None,
        (Some(_), None) => None,
        _ => Some(PathBuf::from(url)),
    }
}

/// Copies every object reachable from `tip` that `target` lacks. A commit or tree the target already has
/// is assumed complete (git's connectivity invariant), which keeps a push proportional to what is new.
fn copy_missing_objects(source: &Repository, target: &Repository, tip: Oid) -> Result<(), git2::Error> {
    let from = source.odb()?;
    let to = target.odb()?;
    let mut seen = HashSet::new();
    let mut stack = vec![tip];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || to.exists(id) {
            continue;
        }
        let object = from.read(id)?;
        match object.kind() {
            ObjectType::Commit => {
                let commit = source.find_commit(id)?;
                stack.push(commit.tree_id());
                stack.extend(commit.parent_ids());
            }
            ObjectType::Tree => {
                let tree = source.find_tree(id)?;
                // Submodule entries point at commits of another repository: nothing to copy.
                stack.extend(
                    tree.iter()
                        .filter(|e| e.kind() != Some(ObjectType::Commit))
                        .map(|e| e.id()),
                );
            }
            ObjectType::Tag => stack.push(source.find_tag(id)?.target_id()),
            _ => {}
        }
        to.write(object.kind(), object.data())?;
    }
    Ok(())
}
