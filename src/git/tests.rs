//! Tests of the git adapter against real repositories: a bare remote made with the git CLI, seeded through a
//! work tree, mirrored by one or two [`Mirror`]s (replicas with their own state_dir) over `file://` URLs, and
//! over `git://` (a `git daemon` on loopback) for the server-side refusals only a smart transport has.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::*;
use crate::config::{self, Author, GitAuth};

// --- fixtures --------------------------------------------------------------------------------------------

/// Runs the git CLI isolated from the user's configuration; panics with its stderr on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

fn oid(hex: &str) -> Oid {
    Oid::from_str(hex).expect("an object id")
}

fn author() -> Author {
    Author {
        name: "tollgate".into(),
        email: "tollgate@example.com".into(),
    }
}

/// A bare remote `remote.git` on branch `main`, a work tree that pushes to it, and room for replicas.
struct Remote {
    tmp: TempDir,
    url: String,
}

impl Remote {
    fn new() -> Remote {
        let tmp = TempDir::new().expect("tempdir");
        git(tmp.path(), &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git(tmp.path(), &["clone", "-q", "remote.git", "work"]);
        git(&tmp.path().join("work"), &["checkout", "-q", "-b", "main"]);
        let url = format!("file://{}", tmp.path().join("remote.git").display());
        Remote { tmp, url }
    }

    fn bare(&self) -> PathBuf {
        self.tmp.path().join("remote.git")
    }

    fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    /// Writes `files` in the work tree, commits and pushes them; returns the new commit.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> Oid {
        let work = self.work();
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(p, content).expect("write");
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
        oid(&git(&work, &["rev-parse", "HEAD"]))
    }

    fn remote_ref(&self, name: &str) -> Option<Oid> {
        let out = Command::new("git")
            .current_dir(self.bare())
            .args(["rev-parse", "--verify", "-q", name])
            .output()
            .expect("git runs");
        out.status
            .success()
            .then(|| oid(String::from_utf8_lossy(&out.stdout).trim()))
    }

    fn config(&self, url: &str, auth: GitAuth) -> config::Repository {
        config::Repository {
            name: "envs".into(),
            url: url.into(),
            branch: "main".into(),
            poll_interval: Duration::from_secs(30),
            auth,
            webhook_secret_file: None,
            author: author(),
            ca_file: None,
            known_hosts_file: None,
            signing: None,
        }
    }

    /// A replica: its own state_dir, its own mirror of the remote.
    fn mirror(&self, replica: &str) -> Mirror {
        self.mirror_at(replica, &self.url.clone())
    }

    fn mirror_at(&self, replica: &str, url: &str) -> Mirror {
        Mirror::open(&self.tmp.path().join(replica), &self.config(url, GitAuth::None)).expect("mirror opens")
    }
}

// --- opening and fetching --------------------------------------------------------------------------------

#[test]
fn fetch_of_an_empty_remote_has_no_head() {
    let remote = Remote::new();
    let mirror = remote.mirror("a");
    assert_eq!(mirror.fetch().expect("fetch"), None);
    assert_eq!(mirror.head().expect("head"), None);
    assert_eq!(
        mirror
            .note(oid("0123456789012345678901234567890123456789"))
            .expect("note"),
        None
    );
    assert_eq!(mirror.state_ref("processed/prod").expect("state"), None);
    assert!(mirror.path().ends_with("repos/envs.git"));
}

#[test]
fn fetch_returns_the_remote_head_and_a_reopened_mirror_keeps_it() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("clusters/prod/app.yaml", "a: 1\n")], "one");
    let mirror = remote.mirror("a");
    assert_eq!(mirror.fetch().expect("fetch"), Some(c1));
    let c2 = remote.commit(&[("clusters/prod/app.yaml", "a: 2\n")], "two");
    assert_eq!(mirror.head().expect("head"), Some(c1), "reads see the last fetch");
    assert_eq!(mirror.fetch().expect("fetch"), Some(c2));
    drop(mirror);
    let reopened = remote.mirror("a");
    assert_eq!(reopened.head().expect("head"), Some(c2));
    assert!(reopened.repository().is_bare());
}

#[test]
fn open_follows_a_changed_url() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a.yaml", "a")], "one");
    let other = Remote::new();
    let d1 = other.commit(&[("b.yaml", "b")], "other");
    assert_eq!(remote.mirror("a").fetch().expect("fetch"), Some(c1));
    let moved = remote.mirror_at("a", &other.url);
    assert_eq!(moved.fetch().expect("fetch"), Some(d1));
}

#[test]
fn fetch_prunes_state_refs_deleted_in_the_remote() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a.yaml", "a")], "one");
    git(
        &remote.bare(),
        &["update-ref", "refs/tollgate/processed/prod", &c1.to_string()],
    );
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    assert_eq!(mirror.state_ref("processed/prod").expect("state"), Some(c1));
    git(&remote.bare(), &["update-ref", "-d", "refs/tollgate/processed/prod"]);
    mirror.fetch().expect("fetch");
    assert_eq!(mirror.state_ref("processed/prod").expect("state"), None);
    // A deleted branch reads as "no head", not as its last known commit.
    git(&remote.bare(), &["update-ref", "-d", "refs/heads/main"]);
    assert_eq!(mirror.fetch().expect("fetch"), None);
}

#[test]
fn plain_local_paths_work_as_urls() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a.yaml", "a")], "one");
    let path = remote.bare().display().to_string();
    let mirror = remote.mirror_at("a", &path);
    assert_eq!(mirror.fetch().expect("fetch"), Some(c1));
    let c2 = mirror
        .commit_files(c1, &[("a.yaml".into(), b"b".to_vec())], "two", &author())
        .expect("commit");
    assert_eq!(
        mirror.push_ref(c2, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    assert_eq!(remote.remote_ref("refs/heads/main"), Some(c2));
}

#[test]
fn open_refuses_names_that_would_escape_the_state_dir() {
    let remote = Remote::new();
    let mut cfg = remote.config(&remote.url, GitAuth::None);
    cfg.name = "../x".into();
    let err = Mirror::open(remote.tmp.path(), &cfg).expect_err("refused");
    assert!(
        matches!(
            err,
            GitError::Invalid {
                what: "repository name",
                ..
            }
        ),
        "{err}"
    );
}

// --- reading ---------------------------------------------------------------------------------------------

#[test]
fn files_under_lists_nested_folders_sorted_with_repo_relative_paths() {
    let remote = Remote::new();
    let head = remote.commit(
        &[
            ("clusters/prod/kustomization.yaml", "k"),
            ("clusters/prod/apps/web/deploy.yaml", "w"),
            ("clusters/prod/apps/api.yaml", "a"),
            ("clusters/staging/x.yaml", "s"),
            ("README.md", "r"),
        ],
        "seed",
    );
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    let files = mirror.files_under(head, "clusters/prod").expect("files");
    let expected: Vec<(String, Vec<u8>)> = vec![
        ("clusters/prod/apps/api.yaml".into(), b"a".to_vec()),
        ("clusters/prod/apps/web/deploy.yaml".into(), b"w".to_vec()),
        ("clusters/prod/kustomization.yaml".into(), b"k".to_vec()),
    ];
    assert_eq!(files, expected);
    assert_eq!(
        mirror.files_under(head, "/clusters/prod/").expect("files"),
        expected,
        "slashes are trimmed"
    );
    let all: Vec<String> = mirror
        .files_under(head, "")
        .expect("files")
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(
        all,
        [
            "README.md",
            "clusters/prod/apps/api.yaml",
            "clusters/prod/apps/web/deploy.yaml",
            "clusters/prod/kustomization.yaml",
            "clusters/staging/x.yaml"
        ]
    );
    assert!(
        mirror.files_under(head, "clusters/dev").expect("files").is_empty(),
        "a missing folder is empty"
    );
    assert_eq!(
        mirror.files_under(head, "README.md").expect("files"),
        vec![("README.md".into(), b"r".to_vec())]
    );
}

#[test]
fn commits_between_walks_first_parents_oldest_first() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a", "1")], "c1");
    let c2 = remote.commit(&[("a", "2")], "c2");
    let c3 = remote.commit(&[("a", "3")], "c3");
    let c4 = remote.commit(&[("a", "4")], "c4");
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    assert_eq!(mirror.commits_between(Some(c1), c4).expect("walk"), vec![c2, c3, c4]);
    assert_eq!(mirror.commits_between(Some(c3), c4).expect("walk"), vec![c4]);
    assert_eq!(mirror.commits_between(None, c4).expect("walk"), vec![c4]);
    assert_eq!(mirror.commits_between(Some(c4), c4).expect("walk"), Vec::<Oid>::new());
    assert_eq!(mirror.first_parent(c2).expect("parent"), Some(c1));
    assert_eq!(mirror.first_parent(c1).expect("parent"), None);

    // A merge: the side branch's commits are not first-parent history.
    let work = remote.work();
    git(&work, &["checkout", "-q", "-b", "side", &c4.to_string()]);
    std::fs::write(work.join("b"), "1").expect("write");
    git(&work, &["add", "b"]);
    git(&work, &["commit", "-q", "-m", "side"]);
    let s1 = oid(&git(&work, &["rev-parse", "HEAD"]));
    git(&work, &["checkout", "-q", "main"]);
    git(&work, &["reset", "-q", "--hard", &c4.to_string()]);
    let c5 = remote.commit(&[("a", "5")], "c5");
    git(&work, &["merge", "-q", "--no-ff", "-m", "merge side", "side"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let merge = oid(&git(&work, &["rev-parse", "HEAD"]));
    mirror.fetch().expect("fetch");
    assert_eq!(mirror.commits_between(Some(c4), merge).expect("walk"), vec![c5, merge]);
    assert_eq!(mirror.first_parent(merge).expect("parent"), Some(c5));
    // From a commit that arrived through the merge: stop where history already contains it.
    assert_eq!(mirror.commits_between(Some(s1), merge).expect("walk"), vec![c5, merge]);
}

#[test]
fn commits_between_reports_rewritten_history() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a", "1")], "c1");
    let c2 = remote.commit(&[("a", "2")], "c2");
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    let diverged = mirror
        .commit_files(c1, &[("a".into(), b"x".to_vec())], "elsewhere", &author())
        .expect("commit");
    let err = mirror.commits_between(Some(diverged), c2).expect_err("not an ancestor");
    match err {
        GitError::NotAncestor { from, to, .. } => assert_eq!((from, to), (diverged, c2)),
        other => panic!("unexpected {other}"),
    }
    let missing = oid("0123456789012345678901234567890123456789");
    assert!(matches!(
        mirror.commits_between(Some(missing), c2),
        Err(GitError::NotFound { .. })
    ));
}

#[test]
fn commit_info_reads_message_author_and_times() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a", "1")], "subject\n\nbody\n\nTollgate-Decision: allow");
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    let info = mirror.commit_info(c1).expect("info");
    assert_eq!(info.id, c1);
    assert_eq!(
        info.author,
        Author {
            name: "Dev".into(),
            email: "dev@example.com".into()
        }
    );
    assert_eq!(
        trailers(&info.message),
        vec![("Tollgate-Decision".to_string(), "allow".to_string())]
    );
    assert!(info.time > 1_600_000_000 && info.author_time > 1_600_000_000);
}

// --- writing ---------------------------------------------------------------------------------------------

#[test]
fn commit_files_changes_only_the_given_files() {
    let remote = Remote::new();
    let head = remote.commit(
        &[
            ("clusters/prod/a.yaml", "a"),
            ("clusters/prod/b.yaml", "b"),
            ("clusters/staging/c.yaml", "c"),
        ],
        "seed",
    );
    let work = remote.work();
    std::fs::write(work.join("run.sh"), "#!/bin/sh\n").expect("write");
    git(&work, &["add", "run.sh"]);
    git(&work, &["update-index", "--chmod=+x", "run.sh"]);
    git(&work, &["commit", "-q", "-m", "script"]);
    git(&work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    let head2 = oid(&git(&work, &["rev-parse", "HEAD"]));
    assert_ne!(head, head2);

    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    let changes = vec![
        ("clusters/prod/a.yaml".to_string(), b"A".to_vec()),
        ("run.sh".to_string(), b"#!/bin/sh\nexit 0\n".to_vec()),
        ("clusters/dev/new.yaml".to_string(), b"n".to_vec()),
    ];
    let new = mirror
        .commit_files(head2, &changes, "promote(prod): a", &author())
        .expect("commit");
    let repo = mirror.repository();
    let (old_tree, new_tree) = (
        repo.find_commit(head2).expect("c").tree().expect("t"),
        repo.find_commit(new).expect("c").tree().expect("t"),
    );
    let entry = |tree: &git2::Tree<'_>, p: &str| tree.get_path(Path::new(p)).expect("entry");
    for unchanged in ["clusters/prod/b.yaml", "clusters/staging/c.yaml", "clusters/staging"] {
        assert_eq!(
            entry(&old_tree, unchanged).id(),
            entry(&new_tree, unchanged).id(),
            "{unchanged}"
        );
    }
    assert_eq!(
        entry(&new_tree, "run.sh").filemode(),
        0o100755,
        "an executable stays executable"
    );
    assert_eq!(mirror.first_parent(new).expect("parent"), Some(head2));
    let info = mirror.commit_info(new).expect("info");
    assert_eq!((info.message.as_str(), info.author), ("promote(prod): a", author()));
    let files = mirror.files_under(new, "clusters").expect("files");
    assert_eq!(
        files,
        vec![
            ("clusters/dev/new.yaml".to_string(), b"n".to_vec()),
            ("clusters/prod/a.yaml".to_string(), b"A".to_vec()),
            ("clusters/prod/b.yaml".to_string(), b"b".to_vec()),
            ("clusters/staging/c.yaml".to_string(), b"c".to_vec()),
        ]
    );
    // Only the listed paths differ, as the git CLI sees it after the push.
    assert_eq!(
        mirror.push_ref(new, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    let diff = git(
        &remote.bare(),
        &["diff", "--name-only", &head2.to_string(), &new.to_string()],
    );
    assert_eq!(diff, "clusters/dev/new.yaml\nclusters/prod/a.yaml\nrun.sh");
}

#[test]
fn commit_files_refuses_paths_outside_the_tree() {
    let remote = Remote::new();
    let head = remote.commit(&[("dir/a", "a")], "seed");
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    for bad in ["", "/etc/passwd", "../x", "a//b", ".git/config", "dir"] {
        let res = mirror.commit_files(head, &[(bad.to_string(), b"x".to_vec())], "m", &author());
        assert!(
            matches!(res, Err(GitError::Invalid { what: "path", .. })),
            "{bad:?}: {res:?}"
        );
    }
}

#[test]
fn second_replica_push_is_rejected_then_succeeds_after_fetch_and_reapply() {
    let remote = Remote::new();
    let base = remote.commit(
        &[("clusters/prod/app.yaml", "image: v1\n"), ("other.yaml", "o")],
        "seed",
    );
    let a = remote.mirror("replica-a");
    let b = remote.mirror("replica-b");
    assert_eq!(a.fetch().expect("fetch"), Some(base));
    assert_eq!(b.fetch().expect("fetch"), Some(base));

    let from_a = a
        .commit_files(
            base,
            &[("clusters/prod/app.yaml".into(), b"image: v2\n".to_vec())],
            "a",
            &author(),
        )
        .expect("a");
    assert_eq!(
        a.push_ref(from_a, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    assert_eq!(a.head().expect("head"), Some(from_a), "the tracking ref follows a push");

    let change_b = [("other.yaml".to_string(), b"b".to_vec())];
    let stale = b.commit_files(base, &change_b, "b", &author()).expect("b");
    match b.push_ref(stale, "refs/heads/main").expect("push") {
        PushOutcome::Rejected { reason } => assert!(reason.contains("refs/heads/main"), "{reason}"),
        PushOutcome::Pushed => panic!("a push that is not a fast-forward was accepted"),
    }
    assert_eq!(
        remote.remote_ref("refs/heads/main"),
        Some(from_a),
        "the remote is untouched"
    );
    assert_eq!(
        b.head().expect("head"),
        Some(base),
        "a rejected push leaves the tracking ref alone"
    );

    let head = b.fetch().expect("fetch").expect("a head");
    assert_eq!(head, from_a);
    let retried = b.commit_files(head, &change_b, "b", &author()).expect("b");
    assert_eq!(
        b.push_ref(retried, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    assert_eq!(remote.remote_ref("refs/heads/main"), Some(retried));
    assert_eq!(
        b.commits_between(Some(base), retried).expect("walk"),
        vec![from_a, retried]
    );

    // And now replica A is the stale one, even with a change it already pushed.
    assert!(matches!(
        a.push_ref(from_a, "refs/heads/main").expect("push"),
        PushOutcome::Rejected { .. }
    ));
}

#[test]
fn promotion_branches_are_replaced_only_from_the_value_last_fetched() {
    let remote = Remote::new();
    let base = remote.commit(&[("clusters/prod/app.yaml", "image: v1\n")], "seed");
    let a = remote.mirror("replica-a");
    let b = remote.mirror("replica-b");
    a.fetch().expect("fetch");
    b.fetch().expect("fetch");
    let branch = "refs/heads/tollgate/promote/prod/app";
    let change = |m: &Mirror, v: &str| {
        m.commit_files(
            base,
            &[("clusters/prod/app.yaml".into(), format!("image: {v}\n").into_bytes())],
            v,
            &author(),
        )
        .expect("commit")
    };
    let v2 = change(&a, "v2");
    assert_eq!(a.replace_branch(v2, branch, None).expect("create"), PushOutcome::Pushed);
    assert_eq!(remote.remote_ref(branch), Some(v2));
    // b has not seen the branch: creating it again is a lost race, not an overwrite.
    let v3 = change(&b, "v3");
    assert!(matches!(
        b.replace_branch(v3, branch, None).expect("push"),
        PushOutcome::Rejected { .. }
    ));
    // After a fetch (which mirrors tollgate/* branches) b replaces it: v3 is not a descendant of v2.
    b.fetch().expect("fetch");
    assert_eq!(b.remote_branch("tollgate/promote/prod/app").expect("read"), Some(v2));
    assert_eq!(
        b.replace_branch(v3, branch, Some(v2)).expect("replace"),
        PushOutcome::Pushed
    );
    assert_eq!(remote.remote_ref(branch), Some(v3));
    // a still expects v2: refused, v3 stays.
    assert!(matches!(
        a.replace_branch(v2, branch, Some(v2)).expect("push"),
        PushOutcome::Rejected { .. }
    ));
    assert_eq!(remote.remote_ref(branch), Some(v3));
    // Deleted upstream (pull request merged): the fetch prunes it.
    git(&remote.bare(), &["update-ref", "-d", branch]);
    a.fetch().expect("fetch");
    assert_eq!(a.remote_branch("tollgate/promote/prod/app").expect("read"), None);
    // Anything outside refs/heads/tollgate/ is never replaced.
    assert!(matches!(
        a.replace_branch(v2, "refs/heads/main", Some(base)),
        Err(GitError::Invalid { .. })
    ));
}

#[test]
fn pushing_a_commit_the_remote_already_has_at_that_ref_is_a_no_op() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a", "1")], "c1");
    let mirror = remote.mirror("a");
    mirror.fetch().expect("fetch");
    assert_eq!(
        mirror.push_ref(c1, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    assert!(matches!(
        mirror.push_ref(c1, "main"),
        Err(GitError::Invalid { what: "ref name", .. })
    ));
}

#[test]
fn notes_round_trip_between_replicas() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a", "1")], "c1");
    let c2 = remote.commit(&[("a", "2")], "c2");
    let a = remote.mirror("a");
    let b = remote.mirror("b");
    a.fetch().expect("fetch");
    b.fetch().expect("fetch");

    let first = "block(prod): app sha256:aa from staging\n\nTollgate-Decision: block\nTollgate-Reason: latest-tag\n";
    let notes = a.note_commit(c1, first, &author()).expect("note");
    assert_eq!(a.note(c1).expect("note"), None, "not visible before the push");
    assert_eq!(a.push_ref(notes, NOTES_REF).expect("push"), PushOutcome::Pushed);
    assert_eq!(a.note(c1).expect("note").as_deref(), Some(first));
    // The git CLI reads what tollgate wrote.
    assert_eq!(
        git(&remote.bare(), &["notes", "--ref=tollgate", "show", &c1.to_string()]),
        first.trim_end()
    );

    // B appends a second decision to the same note.
    b.fetch().expect("fetch");
    let existing = b.note(c1).expect("note");
    assert_eq!(existing.as_deref(), Some(first));
    let second = "block(prod): app sha256:aa from staging\n\nTollgate-Decision: block\nTollgate-Reason: sarif-errors";
    let appended = append_decision(existing.as_deref(), second);
    let notes_b = b.note_commit(c1, &appended, &author()).expect("note");
    assert_eq!(b.push_ref(notes_b, NOTES_REF).expect("push"), PushOutcome::Pushed);

    // A is stale now: its note on c2 is rejected, and lands after fetch + redo, keeping B's.
    let stale = a.note_commit(c2, "on c2\n", &author()).expect("note");
    assert!(matches!(
        a.push_ref(stale, NOTES_REF).expect("push"),
        PushOutcome::Rejected { .. }
    ));
    a.fetch().expect("fetch");
    let redone = a.note_commit(c2, "on c2\n", &author()).expect("note");
    assert_eq!(a.push_ref(redone, NOTES_REF).expect("push"), PushOutcome::Pushed);

    b.fetch().expect("fetch");
    let note = b.note(c1).expect("note").expect("a note on c1");
    let decisions = split_decisions(&note);
    assert_eq!(decisions.len(), 2, "{note:?}");
    assert_eq!(
        trailers(decisions[0])[1],
        ("Tollgate-Reason".to_string(), "latest-tag".to_string())
    );
    assert_eq!(
        trailers(decisions[1])[1],
        ("Tollgate-Reason".to_string(), "sarif-errors".to_string())
    );
    assert_eq!(b.note(c2).expect("note").as_deref(), Some("on c2\n"));
}

#[test]
fn state_ref_round_trip_only_moves_forward() {
    let remote = Remote::new();
    let c1 = remote.commit(&[("a", "1")], "c1");
    let c2 = remote.commit(&[("a", "2")], "c2");
    let c3 = remote.commit(&[("a", "3")], "c3");
    let a = remote.mirror("a");
    let b = remote.mirror("b");
    a.fetch().expect("fetch");
    assert_eq!(a.state_ref("processed/prod").expect("state"), None);
    let name = format!("{STATE_REF_PREFIX}processed/prod");
    assert_eq!(a.push_ref(c1, &name).expect("push"), PushOutcome::Pushed);
    assert_eq!(a.state_ref("processed/prod").expect("state"), Some(c1));
    assert_eq!(remote.remote_ref(&name), Some(c1));

    b.fetch().expect("fetch");
    assert_eq!(b.state_ref("processed/prod").expect("state"), Some(c1));
    assert_eq!(b.push_ref(c3, &name).expect("push"), PushOutcome::Pushed);
    // A, stale at c1, would move it back to c2: refused.
    assert!(matches!(
        a.push_ref(c2, &name).expect("push"),
        PushOutcome::Rejected { .. }
    ));
    a.fetch().expect("fetch");
    assert_eq!(a.state_ref("processed/prod").expect("state"), Some(c3));
    assert!(matches!(a.state_ref("bad..name"), Err(GitError::Invalid { .. })));
}

// --- smart transport: server-side refusals ---------------------------------------------------------------

/// `git daemon` serving `root` over git:// on a loopback port, with pushes enabled; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(root: &Path) -> Option<Daemon> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--informative-errors",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", root.display()),
                &root.display().to_string(),
            ])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut daemon = Daemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline || daemon.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(daemon)
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/remote.git", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_hook(remote: &Remote, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = remote.bare().join("hooks").join(name);
    std::fs::write(&path, script).expect("hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn a_push_that_loses_the_race_on_the_server_is_rejected() {
    let remote = Remote::new();
    let base = remote.commit(&[("a", "1")], "c1");
    let theirs = remote.commit(&[("a", "2")], "someone else");
    git(
        &remote.bare(),
        &["update-ref", "refs/heads/main", &base.to_string(), &theirs.to_string()],
    );
    let Some(daemon) = Daemon::start(remote.tmp.path()) else {
        eprintln!("git daemon unavailable: skipping the smart-transport test");
        return;
    };
    let mirror = remote.mirror_at("a", &daemon.url());
    assert_eq!(mirror.fetch().expect("fetch over git://"), Some(base));
    // Another writer lands `theirs` after our push was checked against `base` and before the server moves
    // the ref: receive-pack's compare-and-swap must refuse ours, and only the callback can tell.
    write_hook(
        &remote,
        "pre-receive",
        &format!("#!/bin/sh\nenv -u GIT_QUARANTINE_PATH git update-ref refs/heads/main {theirs}\n"),
    );
    let ours = mirror
        .commit_files(base, &[("b".into(), b"b".to_vec())], "ours", &author())
        .expect("commit");
    match mirror.push_ref(ours, "refs/heads/main").expect("push") {
        // The server's per-ref status ("failed to update ref"), not libgit2's own fast-forward check.
        PushOutcome::Rejected { reason } => {
            assert!(
                reason.contains("refs/heads/main") && !reason.contains("fastforward"),
                "{reason}"
            )
        }
        PushOutcome::Pushed => panic!("a push that lost the race was reported as pushed"),
    }
    assert_eq!(remote.remote_ref("refs/heads/main"), Some(theirs));
    assert_eq!(mirror.head().expect("head"), Some(base));

    // A declining hook is a refusal too; with no hook the retry goes through.
    write_hook(
        &remote,
        "pre-receive",
        "#!/bin/sh\necho 'branch is frozen' >&2\nexit 1\n",
    );
    let head = mirror.fetch().expect("fetch").expect("head");
    let retried = mirror
        .commit_files(head, &[("b".into(), b"b".to_vec())], "ours", &author())
        .expect("commit");
    let outcome = mirror.push_ref(retried, "refs/heads/main").expect("push");
    assert!(
        matches!(&outcome, PushOutcome::Rejected { reason } if reason.contains("declined")),
        "{outcome:?}"
    );
    std::fs::remove_file(remote.bare().join("hooks/pre-receive")).expect("rm hook");
    assert_eq!(
        mirror.push_ref(retried, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    assert_eq!(remote.remote_ref("refs/heads/main"), Some(retried));
    assert_eq!(mirror.head().expect("head"), Some(retried));
}

// --- credentials -----------------------------------------------------------------------------------------

/// An HTTP server that answers every request with 401: counts requests so a credential loop would show.
fn always_unauthorized() -> (String, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/envs.git", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn wrong_credentials_fail_once_with_a_clear_error() {
    let remote = Remote::new();
    let token_file = remote.tmp.path().join("token");
    std::fs::write(&token_file, "wrong-token\n").expect("token");
    let (url, requests) = always_unauthorized();
    let cfg = remote.config(
        &url,
        GitAuth::Token {
            token_file: token_file.clone(),
        },
    );
    let mirror = Mirror::open(&remote.tmp.path().join("a"), &cfg).expect("open");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(mirror.fetch().map_err(|e| e.to_string()));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("fetch gives up instead of retrying forever");
    let err = result.expect_err("fetch fails");
    assert!(
        err.contains("rejected the token") && err.contains("repositories.envs.auth"),
        "{err}"
    );
    assert!(
        requests.try_iter().count() <= 3,
        "at most: anonymous probe, one attempt with the token"
    );
}

#[test]
fn an_unreadable_token_file_is_an_auth_error() {
    let remote = Remote::new();
    let (url, _requests) = always_unauthorized();
    let missing = remote.tmp.path().join("nope");
    let cfg = remote.config(&url, GitAuth::Token { token_file: missing });
    let mirror = Mirror::open(&remote.tmp.path().join("a"), &cfg).expect("open");
    match mirror.fetch() {
        Err(GitError::Auth { message, .. }) => assert!(message.contains("cannot read token_file"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn local_paths_are_told_apart_from_network_urls() {
    use super::mirror::local_path;
    assert_eq!(local_path("file:///srv/envs.git"), Some(PathBuf::from("/srv/envs.git")));
    assert_eq!(
        local_path("file://localhost/srv/envs.git"),
        Some(PathBuf::from("/srv/envs.git"))
    );
    assert_eq!(local_path("/srv/envs.git"), Some(PathBuf::from("/srv/envs.git")));
    assert_eq!(local_path("repos/envs.git"), Some(PathBuf::from("repos/envs.git")));
    assert_eq!(local_path("https://git.example.com/envs.git"), None);
    assert_eq!(local_path("ssh://git@host/envs.git"), None);
    assert_eq!(local_path("git@github.com:acme/envs.git"), None);
    assert_eq!(local_path("host:envs.git"), None);
}

// --- trailers --------------------------------------------------------------------------------------------

#[test]
fn trailers_come_from_the_last_paragraph() {
    let msg = "promote(prod): app sha256:3f9a from staging\n\nPromoted app.\nEvidence:\n  IMAGE_SIGNATURE key\n\n\
               Tollgate-Decision: allow\nTollgate-Environment: prod\nTollgate-Evidence: SBOM sha256:1\n\
               Tollgate-Evidence: SARIF sha256:2\n";
    let t = trailers(msg);
    let keys: Vec<&str> = t.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "Tollgate-Decision",
            "Tollgate-Environment",
            "Tollgate-Evidence",
            "Tollgate-Evidence"
        ]
    );
    assert_eq!(t[3].1, "SARIF sha256:2");
}

#[test]
fn a_message_without_trailers_has_none() {
    assert!(trailers("fix the thing").is_empty());
    assert!(trailers("Key: value").is_empty(), "the subject line is never a trailer");
    assert!(trailers("subject\n\njust prose in the body.\n").is_empty());
    assert!(trailers("").is_empty());
    assert!(trailers("\n\n").is_empty());
}

#[test]
fn a_key_value_line_in_the_body_is_not_a_trailer() {
    let msg = "subject\n\nNote: this is prose, not a trailer.\n\nThe last paragraph is prose too.\n";
    assert!(trailers(msg).is_empty());
    let msg = "subject\n\nNote: in the body\n\nSigned-off-by: Dev <dev@example.com>\n";
    assert_eq!(
        trailers(msg),
        vec![("Signed-off-by".to_string(), "Dev <dev@example.com>".to_string())]
    );
}

#[test]
fn a_last_paragraph_mixing_prose_and_trailers_has_no_trailers() {
    assert!(trailers("subject\n\nsee below\nKey: value\n").is_empty());
    assert!(trailers("subject\n\nKey: value\nno colon on this line\n").is_empty());
}

#[test]
fn trailers_fold_continuation_lines_and_stop_at_a_separator() {
    let msg = "subject\n\nTollgate-Reason: rego-violation\n  second line\nKey : spaced\r\n---\nAfter: ignored\n";
    assert_eq!(
        trailers(msg),
        vec![
            ("Tollgate-Reason".to_string(), "rego-violation second line".to_string()),
            ("Key".to_string(), "spaced".to_string())
        ]
    );
}

#[test]
fn decisions_append_and_split() {
    let one = "block(prod): a\n\nTollgate-Decision: block\n";
    let two = "block(prod): b\n\nTollgate-Decision: block\nTollgate-Reason: latest-tag";
    let note = append_decision(None, one);
    assert_eq!(note, one);
    assert_eq!(append_decision(Some(""), one), one);
    let note = append_decision(Some(&note), two);
    assert_eq!(note, format!("{}\n{DECISION_SEPARATOR}{two}\n", one.trim_end()));
    let parts = split_decisions(&note);
    assert_eq!(parts, vec![one.trim_end(), two]);
    assert_eq!(trailers(parts[1]).len(), 2);
    // Read as a whole, the note yields the first decision's trailers only, as git interpret-trailers does.
    assert_eq!(
        trailers(&note),
        vec![("Tollgate-Decision".to_string(), "block".to_string())]
    );
    assert_eq!(split_decisions(one), vec![one.trim_end()]);
    assert!(split_decisions("").is_empty());
}

#[test]
fn a_mirror_can_move_into_a_blocking_task() {
    // The daemon hands each Mirror to spawn_blocking.
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Mirror>();
    assert_send::<GitError>();
}
