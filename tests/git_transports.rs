//! git as production reaches it: HTTPS (`git http-backend` behind nginx, basic auth, a private CA) and SSH
//! (OpenSSH `sshd`, key auth, pinned host key), both real servers on loopback started by the tests. Each
//! scenario fetches, promotes (push), writes notes and loses a race the way two replicas would; credentials and
//! server identity failures come back as clear errors, never a hang or a silent trust. Also: promotion branches
//! (`write: {mode: branch}`) and signed commits checked by `git verify-commit`.

mod support {
    pub mod git_servers;
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::git_servers::{git, run, seed_repository, HttpsGit, SshGit};
use tollgate::config::{self, Author, CommitSigning, GitAuth, WriteMode};
use tollgate::gate::record::{self, Recorded};
use tollgate::gate::Candidate;
use tollgate::git::{GitError, Mirror, Oid, PushOutcome, NOTES_REF};
use tollgate::image::{Digest, ImageRef};

const TOKEN: &str = "s3cr3t-token";
const PASSWORD: &str = "correct horse";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: {image}\n"
    )
}

const OLD_IMAGE: &str = "ghcr.io/acme/payments-api:1.4.1";

fn seed(root: &Path) -> PathBuf {
    seed_repository(
        root,
        "envs.git",
        &[("clusters/prod/deploy.yaml", &deployment(OLD_IMAGE))],
    )
}

fn author() -> Author {
    Author {
        name: "tollgate".into(),
        email: "tollgate@example.com".into(),
    }
}

fn repository(url: &str, auth: GitAuth) -> config::Repository {
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

fn secret(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).expect("write secret");
    p
}

/// The value of `name` in the bare repository, read with the git CLI.
fn remote_ref(bare: &Path, name: &str) -> Option<Oid> {
    let out = git(bare)
        .args(["rev-parse", "--verify", "-q", name])
        .output()
        .expect("git runs");
    out.status
        .success()
        .then(|| Oid::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("oid"))
}

/// Fetch, commit a change, push it, write a note on it and push that: the writes of a promotion and a block.
fn fetch_promote_and_note(mirror: &Mirror, bare: &Path) {
    let head = mirror.fetch().expect("fetch").expect("a head");
    assert_eq!(Some(head), remote_ref(bare, "refs/heads/main"));
    let files = mirror.files_under(head, "clusters/prod").expect("files");
    assert_eq!(files.len(), 1);
    let commit = mirror
        .commit_files(
            head,
            &[(
                "clusters/prod/deploy.yaml".into(),
                deployment("ghcr.io/acme/payments-api:1.4.2").into_bytes(),
            )],
            "promote(prod): payments-api",
            &author(),
        )
        .expect("commit");
    assert_eq!(
        mirror.push_ref(commit, "refs/heads/main").expect("push"),
        PushOutcome::Pushed
    );
    assert_eq!(remote_ref(bare, "refs/heads/main"), Some(commit));

    let notes = mirror.note_commit(commit, "block(prod): x", &author()).expect("note");
    assert_eq!(
        mirror.push_ref(notes, NOTES_REF).expect("push notes"),
        PushOutcome::Pushed
    );
    assert_eq!(remote_ref(bare, NOTES_REF), Some(notes));
    let shown = run(git(bare).args(["notes", "--ref=tollgate", "show", &commit.to_string()]));
    assert_eq!(shown.trim(), "block(prod): x");
}

/// Two replicas: the second pushes with a stale view and is rejected, then succeeds after fetching.
fn stale_replica_is_rejected_then_wins_after_fetch(a: &Mirror, b: &Mirror, bare: &Path) {
    let head = a.fetch().expect("fetch a").expect("head");
    b.fetch().expect("fetch b");
    let change = |m: &Mirror, parent: Oid, tag: &str| {
        m.commit_files(
            parent,
            &[(
                "clusters/prod/deploy.yaml".into(),
                deployment(&format!("ghcr.io/acme/payments-api:{tag}")).into_bytes(),
            )],
            &format!("promote(prod): {tag}"),
            &author(),
        )
        .expect("commit")
    };
    let first = change(a, head, "2.0.0");
    assert_eq!(
        a.push_ref(first, "refs/heads/main").expect("push a"),
        PushOutcome::Pushed
    );
    let stale = change(b, head, "2.0.1");
    match b.push_ref(stale, "refs/heads/main").expect("push b") {
        PushOutcome::Rejected { reason } => assert!(reason.contains("refs/heads/main"), "{reason}"),
        PushOutcome::Pushed => panic!("a stale push must not win"),
    }
    assert_eq!(remote_ref(bare, "refs/heads/main"), Some(first));
    let head = b.fetch().expect("refetch").expect("head");
    assert_eq!(head, first);
    let second = change(b, head, "2.0.1");
    assert_eq!(
        b.push_ref(second, "refs/heads/main").expect("push b again"),
        PushOutcome::Pushed
    );
    assert_eq!(remote_ref(bare, "refs/heads/main"), Some(second));
}

// --- HTTPS ---------------------------------------------------------------------------------------------------

#[test]
fn https_token_auth_fetches_promotes_and_pushes_notes_through_a_private_ca() {
    let server = HttpsGit::start(&[("x-access-token", TOKEN)]);
    let bare = seed(&server.root());
    let scratch = server.scratch();
    let mut repo = repository(
        &server.url("envs.git"),
        GitAuth::Token {
            token_file: secret(&scratch, "token", TOKEN),
        },
    );
    repo.ca_file = Some(server.ca_file());
    let mirror = Mirror::open(&scratch.join("a"), &repo).expect("mirror");
    fetch_promote_and_note(&mirror, &bare);
}

#[test]
fn https_basic_auth_replicas_race_and_the_loser_is_rejected() {
    let server = HttpsGit::start(&[("release-bot", PASSWORD)]);
    let bare = seed(&server.root());
    let scratch = server.scratch();
    let mut repo = repository(
        &server.url("envs.git"),
        GitAuth::Basic {
            username: "release-bot".into(),
            password_file: secret(&scratch, "password", PASSWORD),
        },
    );
    repo.ca_file = Some(server.ca_file());
    let a = Mirror::open(&scratch.join("a"), &repo).expect("mirror a");
    let b = Mirror::open(&scratch.join("b"), &repo).expect("mirror b");
    stale_replica_is_rejected_then_wins_after_fetch(&a, &b, &bare);
    fetch_promote_and_note(&a, &bare);
}

#[test]
fn https_wrong_password_is_a_clear_auth_error_not_a_hang() {
    let server = HttpsGit::start(&[("release-bot", PASSWORD)]);
    seed(&server.root());
    let scratch = server.scratch();
    let mut repo = repository(
        &server.url("envs.git"),
        GitAuth::Basic {
            username: "release-bot".into(),
            password_file: secret(&scratch, "password", "wrong"),
        },
    );
    repo.ca_file = Some(server.ca_file());
    let mirror = Mirror::open(&scratch.join("a"), &repo).expect("mirror");
    let started = Instant::now();
    let err = mirror.fetch().expect_err("a wrong password fails");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    match &err {
        GitError::Auth { message, .. } => assert!(message.contains("rejected user `release-bot`"), "{message}"),
        other => panic!("expected an auth error, got {other}"),
    }
    assert!(err.to_string().contains("check `repositories.envs.auth`"), "{err}");
}

#[test]
fn https_server_no_configured_ca_vouches_for_is_refused() {
    let server = HttpsGit::start(&[("x-access-token", TOKEN)]);
    seed(&server.root());
    let scratch = server.scratch();
    let repo = repository(
        &server.url("envs.git"),
        GitAuth::Token {
            token_file: secret(&scratch, "token", TOKEN),
        },
    );
    // No ca_file: the system store does not know the test CA.
    let err = Mirror::open(&scratch.join("a"), &repo)
        .expect("mirror")
        .fetch()
        .expect_err("an unknown CA is refused");
    assert!(matches!(err, GitError::ServerIdentity { .. }), "{err}");
    assert!(err.to_string().contains("ca_file"), "{err}");

    // A ca_file of another CA: refused, and the reason names the file.
    let other = scratch.join("other-ca.pem");
    run(Command::new("openssl")
        .args(["req", "-x509", "-days", "1", "-subj", "/CN=other", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout"])
        .arg(scratch.join("other.key"))
        .arg("-out")
        .arg(&other));
    let mut repo = repo;
    repo.ca_file = Some(other.clone());
    let err = Mirror::open(&scratch.join("b"), &repo)
        .expect("mirror")
        .fetch()
        .expect_err("another CA is refused");
    match &err {
        GitError::ServerIdentity { message, .. } => {
            assert!(message.contains(&other.display().to_string()), "{message}")
        }
        other => panic!("expected a server identity error, got {other}"),
    }
}

// --- SSH -----------------------------------------------------------------------------------------------------

fn ssh_repository(server: &SshGit, key: PathBuf, known_hosts: &str) -> config::Repository {
    let file = server.scratch().join(format!("known_hosts-{}", known_hosts.len()));
    std::fs::write(&file, known_hosts).expect("write known_hosts");
    let mut repo = repository(&server.url("envs.git"), GitAuth::SshKey { ssh_key_file: key });
    repo.known_hosts_file = Some(file);
    repo
}

#[test]
fn ssh_key_auth_with_a_pinned_host_key_fetches_pushes_and_races() {
    let server = SshGit::start();
    let bare = seed(&server.root());
    let repo = ssh_repository(&server, server.client_key(), &server.known_hosts_line());
    let a = Mirror::open(&server.scratch().join("a"), &repo).expect("mirror a");
    let b = Mirror::open(&server.scratch().join("b"), &repo).expect("mirror b");
    fetch_promote_and_note(&a, &bare);
    stale_replica_is_rejected_then_wins_after_fetch(&a, &b, &bare);
}

#[test]
fn ssh_host_key_that_is_unknown_or_changed_is_refused_before_authenticating() {
    let server = SshGit::start();
    seed(&server.root());
    let changed = ssh_repository(&server, server.client_key(), &server.wrong_known_hosts_line());
    let err = Mirror::open(&server.scratch().join("a"), &changed)
        .expect("mirror")
        .fetch()
        .expect_err("a changed host key is refused");
    match &err {
        GitError::ServerIdentity { message, .. } => {
            assert!(message.contains("is not the one listed"), "{message}");
            assert!(message.contains("SHA256:"), "{message}");
        }
        other => panic!("expected a server identity error, got {other}"),
    }

    let unknown = ssh_repository(&server, server.client_key(), "# nothing yet\n");
    let err = Mirror::open(&server.scratch().join("b"), &unknown)
        .expect("mirror")
        .fetch()
        .expect_err("an unknown host is refused");
    match &err {
        GitError::ServerIdentity { message, .. } => assert!(message.contains("is not listed"), "{message}"),
        other => panic!("expected a server identity error, got {other}"),
    }

    // Without known_hosts_file, the service user's ~/.ssh/known_hosts decides: it cannot list the key this
    // server generated a moment ago, so the connection is refused too. Never trust on first use.
    let mut default = repository(
        &server.url("envs.git"),
        GitAuth::SshKey {
            ssh_key_file: server.client_key(),
        },
    );
    default.known_hosts_file = None;
    let err = Mirror::open(&server.scratch().join("c"), &default)
        .expect("mirror")
        .fetch()
        .expect_err("no trust on first use");
    assert!(matches!(err, GitError::ServerIdentity { .. }), "{err}");
}

#[test]
fn ssh_key_the_server_does_not_accept_is_a_clear_auth_error() {
    let server = SshGit::start();
    seed(&server.root());
    let repo = ssh_repository(&server, server.other_key(), &server.known_hosts_line());
    let started = Instant::now();
    let err = Mirror::open(&server.scratch().join("a"), &repo)
        .expect("mirror")
        .fetch()
        .expect_err("a wrong key fails");
    assert!(started.elapsed() < Duration::from_secs(20));
    match &err {
        GitError::Auth { message, .. } => assert!(message.contains("rejected the SSH key"), "{message}"),
        other => panic!("expected an auth error, got {other}"),
    }
}

// --- promotion branches (write: {mode: branch}) ---------------------------------------------------------------

const BRANCH: &str = "refs/heads/tollgate/promote/prod/payments-api";

fn digest(n: u8) -> Digest {
    Digest::parse(&format!("sha256:{}", hex(n))).expect("digest")
}

fn hex(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn candidate(n: u8) -> Candidate {
    Candidate {
        environment: "prod".into(),
        upstream_ref: ImageRef::parse(&format!("ghcr.io/acme/payments-api:1.5.{n}@{}", digest(n))).expect("ref"),
        digest: digest(n),
        source_environment: Some("staging".into()),
        source_commit: Some("9c1d2e4f00000000000000000000000000000000".into()),
    }
}

fn branch_env() -> config::Environment {
    config::Environment {
        name: "prod".into(),
        repository: "envs".into(),
        path: "clusters/prod".into(),
        promote_from: Some("staging".into()),
        policy: Some("prod".into()),
        write: WriteMode::Branch {
            branch: "tollgate/promote/{env}/{image}".into(),
        },
        attest_promotions: None,
        helm_image_keys: Vec::new(),
    }
}

/// A promotion message with the trailers idempotence reads; `policy` stands for the policy digest.
fn message(c: &Candidate, policy: u8) -> String {
    format!(
        "promote(prod): payments-api {}\n\nPromoted {}.\n\nTollgate-Decision: allow\nTollgate-Environment: prod\n\
         Tollgate-Image: {}\nTollgate-Policy: prod@sha256:{}\n",
        c.digest,
        c.pinned(),
        c.pinned(),
        hex(policy)
    )
}

fn promote(mirror: &Mirror, repo: &config::Repository, c: &Candidate, policy: u8) -> Recorded {
    record::promote(
        mirror,
        repo,
        &branch_env(),
        c,
        &message(c, policy),
        &tollgate::manifest::DetectOptions::default(),
    )
    .expect("promote")
}

fn file_at(bare: &Path, rev: &str) -> String {
    run(git(bare).args(["show", &format!("{rev}:clusters/prod/deploy.yaml")]))
}

fn parent(bare: &Path, rev: &str) -> Oid {
    Oid::from_str(run(git(bare).args(["rev-parse", &format!("{rev}^")])).trim()).expect("oid")
}

#[test]
fn branch_mode_promotes_onto_its_branch_and_updates_it_in_place_over_https() {
    let server = HttpsGit::start(&[("x-access-token", TOKEN)]);
    let bare = seed(&server.root());
    let scratch = server.scratch();
    let mut repo = repository(
        &server.url("envs.git"),
        GitAuth::Token {
            token_file: secret(&scratch, "token", TOKEN),
        },
    );
    repo.ca_file = Some(server.ca_file());
    let a = Mirror::open(&scratch.join("a"), &repo).expect("mirror a");
    let main = remote_ref(&bare, "refs/heads/main").expect("main");

    // The first candidate: a branch from the target head, ready for a pull request; main untouched.
    let Recorded::Written(first) = promote(&a, &repo, &candidate(1), 7) else {
        panic!("expected a write")
    };
    assert_eq!(remote_ref(&bare, BRANCH), Some(first));
    assert_eq!(remote_ref(&bare, "refs/heads/main"), Some(main));
    assert_eq!(parent(&bare, BRANCH), main);
    assert!(
        file_at(&bare, BRANCH).contains(&candidate(1).digest.to_string()),
        "{}",
        file_at(&bare, BRANCH)
    );

    // The same candidate under the same policy: nothing to do, from this replica or a fresh one.
    assert_eq!(promote(&a, &repo, &candidate(1), 7), Recorded::AlreadyRecorded);
    let b = Mirror::open(&scratch.join("b"), &repo).expect("mirror b");
    assert_eq!(promote(&b, &repo, &candidate(1), 7), Recorded::AlreadyRecorded);

    // main moves on; a newer candidate recreates the commit on the new head and moves the branch there,
    // a non-fast-forward of tollgate's own branch.
    let work = tempfile::tempdir().expect("tempdir");
    run(git(work.path()).arg("clone").arg("-q").arg(&bare).arg("w"));
    let w = work.path().join("w");
    std::fs::write(w.join("README.md"), "envs\n").expect("write");
    run(git(&w).args(["add", "-A"]));
    run(git(&w).args(["commit", "-q", "-m", "docs"]));
    run(git(&w).args(["push", "-q", "origin", "HEAD:main"]));
    let main = remote_ref(&bare, "refs/heads/main").expect("main");
    let Recorded::Written(second) = promote(&b, &repo, &candidate(2), 7) else {
        panic!("expected a write")
    };
    assert_eq!(remote_ref(&bare, BRANCH), Some(second));
    assert_eq!(parent(&bare, BRANCH), main);
    assert!(file_at(&bare, BRANCH).contains(&candidate(2).digest.to_string()));

    // The compare-and-swap: replica a still believes the branch is at `first`; its replacement is refused
    // and nothing is lost.
    a.fetch().expect("fetch");
    let stale = a
        .commit_files(main, &[("x.txt".into(), b"x".to_vec())], "stale", &author())
        .expect("commit");
    match a.replace_branch(stale, BRANCH, Some(first)).expect("push") {
        PushOutcome::Rejected { reason } => assert!(reason.contains("expected"), "{reason}"),
        PushOutcome::Pushed => panic!("a stale replacement must not win"),
    }
    assert_eq!(remote_ref(&bare, BRANCH), Some(second));
    // And promote itself re-fetches and converges: a third candidate from the stale replica lands.
    let Recorded::Written(third) = promote(&a, &repo, &candidate(3), 7) else {
        panic!("expected a write")
    };
    assert_eq!(remote_ref(&bare, BRANCH), Some(third));
    // Only tollgate's own branches are ever replaced.
    let err = a
        .replace_branch(third, "refs/heads/main", Some(main))
        .expect_err("main is never replaced");
    assert!(err.to_string().contains("only tollgate's own branches"), "{err}");
}

#[test]
fn branch_mode_replaces_over_ssh_and_a_policy_change_rewrites_the_branch() {
    let server = SshGit::start();
    let bare = seed(&server.root());
    let repo = ssh_repository(&server, server.client_key(), &server.known_hosts_line());
    let m = Mirror::open(&server.scratch().join("a"), &repo).expect("mirror");
    let Recorded::Written(first) = promote(&m, &repo, &candidate(1), 7) else {
        panic!("expected a write")
    };
    assert_eq!(remote_ref(&bare, BRANCH), Some(first));
    // The same candidate under another policy digest is another decision: recorded again, in place.
    let Recorded::Written(again) = promote(&m, &repo, &candidate(1), 8) else {
        panic!("expected a write")
    };
    assert_ne!(again, first);
    assert_eq!(remote_ref(&bare, BRANCH), Some(again));
    match m.replace_branch(first, BRANCH, Some(first)).expect("push") {
        PushOutcome::Rejected { reason } => assert!(reason.contains("expected"), "{reason}"),
        PushOutcome::Pushed => panic!("a stale replacement must not win"),
    }
}

#[test]
fn promotion_branch_names_are_safe_ref_names() {
    let t = "tollgate/promote/{env}/{image}";
    assert_eq!(
        record::promotion_branch(t, "prod", "payments-api"),
        "tollgate/promote/prod/payments-api"
    );
    assert_eq!(
        record::promotion_branch(t, "prod eu", "..weird:name.lock"),
        "tollgate/promote/prod-eu/weird-name"
    );
}

// --- signed commits ------------------------------------------------------------------------------------------

fn local_remote() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bare = seed(tmp.path());
    (tmp, bare)
}

fn verify_commit(bare: &Path, id: Oid, config: &[(&str, String)], env: &[(&str, &Path)]) -> String {
    let mut cmd = git(bare);
    for (k, v) in config {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(["verify-commit", "-v", &id.to_string()])
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git verify-commit {id} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn promotion_and_notes_commits_are_signed_with_an_ssh_key_that_git_verifies() {
    let (tmp, bare) = local_remote();
    let key = tmp.path().join("signing_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tollgate", "-f"])
        .arg(&key));
    let public = std::fs::read_to_string(tmp.path().join("signing_ed25519.pub")).expect("public key");
    let allowed = tmp.path().join("allowed_signers");
    std::fs::write(&allowed, format!("tollgate@example.com namespaces=\"git\" {public}")).expect("write");

    let mut repo = repository(&format!("file://{}", bare.display()), GitAuth::None);
    repo.signing = Some(CommitSigning::Ssh { key_file: key });
    let mirror = Mirror::open(&tmp.path().join("state"), &repo).expect("mirror");
    fetch_promote_and_note(&mirror, &bare);

    let ssh = [
        ("gpg.format", "ssh".to_string()),
        ("gpg.ssh.allowedSignersFile", allowed.display().to_string()),
    ];
    let promotion = remote_ref(&bare, "refs/heads/main").expect("main");
    let out = verify_commit(&bare, promotion, &ssh, &[]);
    assert!(out.contains("Good \"git\" signature for tollgate@example.com"), "{out}");
    let notes = remote_ref(&bare, NOTES_REF).expect("notes");
    verify_commit(&bare, notes, &ssh, &[]);
}

#[test]
fn promotion_and_notes_commits_are_signed_with_an_openpgp_key_that_git_verifies() {
    let (tmp, bare) = local_remote();
    let home = tmp.path().join("gnupg-verifier");
    std::fs::create_dir_all(&home).expect("mkdir");
    let gpg = |args: &[&str]| {
        run(Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args))
    };
    gpg(&[
        "--quick-gen-key",
        "tollgate <tollgate@example.com>",
        "ed25519",
        "sign",
        "never",
    ]);
    let secret_key = tmp.path().join("signing.asc");
    std::fs::write(
        &secret_key,
        gpg(&["--armor", "--export-secret-keys", "tollgate@example.com"]),
    )
    .expect("write");

    let mut repo = repository(&format!("file://{}", bare.display()), GitAuth::None);
    repo.signing = Some(CommitSigning::OpenPgp {
        key_file: Some(secret_key),
        key_id: None,
    });
    let state = tmp.path().join("state");
    let mirror = Mirror::open(&state, &repo).expect("mirror");
    fetch_promote_and_note(&mirror, &bare);

    let promotion = remote_ref(&bare, "refs/heads/main").expect("main");
    let out = verify_commit(&bare, promotion, &[], &[("GNUPGHOME", &home)]);
    assert!(
        out.contains("Good signature from \"tollgate <tollgate@example.com>\""),
        "{out}"
    );
    let notes = remote_ref(&bare, NOTES_REF).expect("notes");
    verify_commit(&bare, notes, &[], &[("GNUPGHOME", &home)]);

    // gpg leaves an agent per keyring running: stop both.
    for h in [home, mirror.path().join("tollgate-gnupg")] {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(h)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

#[test]
fn a_signing_key_that_cannot_sign_fails_the_commit_with_a_clear_error() {
    let (tmp, bare) = local_remote();
    let mut repo = repository(&format!("file://{}", bare.display()), GitAuth::None);
    repo.signing = Some(CommitSigning::Ssh {
        key_file: tmp.path().join("missing-key"),
    });
    let mirror = Mirror::open(&tmp.path().join("state"), &repo).expect("mirror");
    let head = mirror.fetch().expect("fetch").expect("head");
    let err = mirror
        .commit_files(head, &[("a.txt".into(), b"a".to_vec())], "m", &author())
        .expect_err("no key, no commit");
    assert!(matches!(err, GitError::Sign { .. }), "{err}");
    assert!(err.to_string().contains("repositories.envs.signing"), "{err}");
}
