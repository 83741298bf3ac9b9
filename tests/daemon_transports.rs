//! The daemon end to end over real git servers (issue 5: "the same over the HTTPS-token and SSH servers"):
//! the environments repository is served by `git http-backend` behind nginx over TLS with a token, or by
//! OpenSSH `sshd` with a key and a pinned host key (tests/support/git_servers.rs). Image automation pushes
//! staging bumps with the git CLI over the same server; a `Daemon::pass` promotes a bump with complete
//! evidence into prod and notes a bump with missing evidence, and both writes land on the server's bare
//! repository. Evidence is signed in-process and attached to a real `docker-registry` to keep this fast.

mod support {
    pub mod git_servers;
    pub mod registry;
}

use std::path::{Path, PathBuf};
use std::sync::Arc;

use support::git_servers::{git, run, seed_repository, HttpsGit, SshGit};
use support::registry::Registry;
use tollgate::config;
use tollgate::daemon::{Daemon, PassReport};
use tollgate::dsse::{Envelope, Statement, INTOTO_PAYLOAD_TYPE};
use tollgate::gate::evidence::EvidenceStore as _;
use tollgate::image::{Digest, ImageRef};
use tollgate::keys::SigningKey;
use tollgate::oci::{RegistryStore, Stores};
use tollgate::pipeline::Gate;
use tollgate::telemetry::Metrics;

const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const SBOM: &str = "https://cyclonedx.org/bom";
const TOKEN: &str = "s3cr3t-token";

fn deployment(image: &str) -> String {
    format!(
        "# payments, deployed by Argo CD\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: \"{image}\"   # kept quoted\n"
    )
}

/// How the daemon and the CI's git CLI reach the server.
struct Transport {
    /// The `repositories.envs` entry of tollgate.yaml, without `author` and `branch`.
    yaml: String,
    /// The clone URL for the git CLI.
    url: String,
    /// Environment that lets the git CLI in (CA, SSH key and known hosts). An environment variable rather
    /// than `-c`, as a `GIT_SSL_CAINFO` in the test's environment would override `http.sslCAInfo`.
    cli_env: (&'static str, String),
    /// The server's bare repository on disk.
    bare: PathBuf,
}

struct World {
    dir: tempfile::TempDir,
    _registry: Registry,
    host: String,
    store: RegistryStore,
    key: SigningKey,
    transport: Transport,
    work: PathBuf,
}

/// Seeds `envs.git` under `root` with staging and prod pinned to `pinned`.
fn seed(root: &Path, pinned: &str) -> PathBuf {
    let file = deployment(pinned);
    seed_repository(
        root,
        "envs.git",
        &[
            ("clusters/staging/deployment.yaml", &file),
            ("clusters/prod/deployment.yaml", &file),
        ],
    )
}

impl World {
    /// A registry holding `acme/api:1.0`, the repository seeded by `serve` (given the pinned 1.0 reference),
    /// and a CI work clone made with the git CLI over the server.
    async fn new(serve: impl FnOnce(&str) -> Transport) -> World {
        let registry = Registry::start();
        let host = registry.host();
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::new(
            &host,
            &config::Registry {
                insecure: true,
                ..Default::default()
            },
        )
        .unwrap();
        let old = store
            .push_test_image("acme/api", "1.0", &[("VERSION", b"1.0")])
            .await
            .unwrap();
        let key = SigningKey::generate();
        std::fs::write(dir.path().join("ci-key.pub"), key.public_pem()).unwrap();

        let transport = serve(&format!("{host}/acme/api:1.0@{old}"));
        let work = dir.path().join("work");
        let (name, value) = &transport.cli_env;
        run(git(dir.path())
            .env(name, value)
            .args(["clone", "-q"])
            .arg(&transport.url)
            .arg(&work));
        World {
            dir,
            _registry: registry,
            host,
            store,
            key,
            transport,
            work,
        }
    }

    fn daemon(&self) -> Daemon {
        let text = format!(
            r#"version: 1
state_dir: ./state
repositories:
  envs: {{{repo}, branch: main, author: {{name: tollgate, email: tollgate@example.invalid}}}}
registries:
  "{host}": {{insecure: true}}
trust:
  signers:
    ci-key: {{key: ./ci-key.pub}}
contracts:
  release:
    materials:
      - {{kind: SLSA_PROVENANCE, signers: [ci-key]}}
      - {{kind: SBOM_CYCLONEDX_JSON, signers: [ci-key]}}
policies:
  prod: {{contract: release, mode: enforce, rules: {{digest_pinned: true, no_latest_tag: true}}}}
environments:
  staging: {{repository: envs, path: clusters/staging}}
  prod: {{repository: envs, path: clusters/prod, promote_from: staging, policy: prod}}
"#,
            repo = self.transport.yaml,
            host = self.host,
        );
        let path = self.dir.path().join("tollgate.yaml");
        std::fs::write(&path, text).unwrap();
        let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let stores = Stores::from_config(&config).unwrap();
        Daemon::open(Arc::new(Gate {
            config: Arc::new(config),
            stores,
            metrics: Arc::new(Metrics::new()),
        }))
        .unwrap()
    }

    fn image(&self) -> ImageRef {
        ImageRef::parse(&format!("{}/acme/api", self.host)).unwrap()
    }

    /// A new image `acme/api:<tag>` with the given CI-signed attestations; its digest.
    async fn release(&self, tag: &str, predicate_types: &[&str]) -> Digest {
        let digest = self
            .store
            .push_test_image("acme/api", tag, &[("VERSION", tag.as_bytes())])
            .await
            .unwrap();
        for predicate_type in predicate_types {
            let statement = Statement::new(
                &self.image().name,
                &digest,
                predicate_type,
                serde_json::json!({"builder": {"id": "https://github.com/acme/ci"}}),
            );
            let envelope = Envelope::sign(INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&statement).unwrap(), &self.key);
            self.store
                .attach_attestation(&self.image(), &digest, &envelope.to_json(), predicate_type)
                .await
                .unwrap();
        }
        digest
    }

    /// The git CLI in the CI's work clone, able to reach the server.
    fn ci(&self) -> std::process::Command {
        let (name, value) = &self.transport.cli_env;
        let mut cmd = git(&self.work);
        cmd.env(name, value);
        cmd
    }

    /// Pushes a staging bump with the git CLI over the server, as image automation would; the commit id.
    fn bump_staging(&self, reference: &str) -> String {
        run(self.ci().args(["pull", "-q", "--rebase", "origin", "main"]));
        std::fs::write(
            self.work.join("clusters/staging/deployment.yaml"),
            deployment(reference),
        )
        .unwrap();
        run(self
            .ci()
            .args(["commit", "-q", "-am", &format!("bump staging to {reference}")]));
        run(self.ci().args(["push", "-q", "origin", "HEAD:main"]));
        run(self.ci().args(["rev-parse", "HEAD"])).trim().to_string()
    }

    /// The git CLI on the server's bare repository.
    fn remote(&self, args: &[&str]) -> String {
        run(git(&self.transport.bare).args(args))
    }

    fn note(&self, commit: &str) -> Option<String> {
        let out = git(&self.transport.bare)
            .args(["notes", "--ref=tollgate", "show", commit])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

async fn pass(d: &Daemon) -> PassReport {
    let mut reports = d.pass().await;
    reports
        .remove("prod")
        .expect("prod processed")
        .unwrap_or_else(|e| panic!("pass failed: {e}"))
}

/// Baseline, a promotion of a bump with complete evidence, a block note on a bump without an SBOM: every
/// write checked on the server's bare repository.
async fn promote_and_block(w: &World) {
    let d = w.daemon();
    let initial = w.remote(&["rev-parse", "main"]);
    assert_eq!(
        pass(&d).await,
        PassReport::default(),
        "the first pass only takes a baseline"
    );
    assert_eq!(
        w.remote(&["rev-parse", "refs/tollgate/processed/prod"]),
        initial,
        "the baseline marker is pushed to the server"
    );
    assert_eq!(w.remote(&["rev-parse", "main"]), initial, "a baseline commits nothing");

    // 2.0 with provenance and SBOM: promoted into prod on the server.
    let good = w.release("2.0", &[PROVENANCE, SBOM]).await;
    let good_ref = format!("{}/acme/api:2.0@{good}", w.host);
    let bump = w.bump_staging(&good_ref);
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (1, 0, 0), "{r:?}");
    assert_eq!(
        w.remote(&["show", "main:clusters/prod/deployment.yaml"]),
        deployment(&good_ref)
    );
    assert_eq!(
        w.remote(&["rev-parse", "main^"]).trim(),
        bump,
        "the promotion sits on the staging bump"
    );
    let message = w.remote(&["log", "-1", "--format=%B", "main"]);
    assert!(message.starts_with("promote(prod): api "), "{message}");
    assert_eq!(
        w.remote(&["log", "-1", "--format=%an <%ae>", "main"]).trim(),
        "tollgate <tollgate@example.invalid>"
    );
    let trailers = w.remote(&["log", "-1", "--format=%(trailers:only,unfold)", "main"]);
    for expected in [
        "Tollgate-Decision: allow".to_string(),
        "Tollgate-Environment: prod".to_string(),
        format!("Tollgate-Image: {}/acme/api@{good}", w.host),
        format!("Tollgate-Source: staging@{bump}"),
        "Tollgate-Mode: enforce".to_string(),
    ] {
        assert!(trailers.contains(&expected), "missing `{expected}` in:\n{trailers}");
    }
    assert_eq!(trailers.matches("Tollgate-Evidence: ").count(), 2, "{trailers}");

    // 3.0 has provenance but no SBOM: blocked, noted on the staging commit on the server, prod untouched.
    let bad = w.release("3.0", &[PROVENANCE]).await;
    let bad_bump = w.bump_staging(&format!("{}/acme/api:3.0@{bad}", w.host));
    let prod_before = w.remote(&["rev-parse", "main:clusters/prod"]);
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (0, 1, 0), "{r:?}");
    assert_eq!(
        w.remote(&["rev-parse", "main"]).trim(),
        bad_bump,
        "nothing committed on a block"
    );
    assert_eq!(w.remote(&["rev-parse", "main:clusters/prod"]), prod_before);
    let note = w.note(&bad_bump).expect("a block note on the staging commit");
    assert!(note.starts_with("block(prod): api "), "{note}");
    assert!(
        note.contains("Tollgate-Decision: block") && note.contains("Tollgate-Reason: material-missing"),
        "{note}"
    );
    assert!(
        note.contains(&format!("Tollgate-Image: {}/acme/api@{bad}", w.host)),
        "{note}"
    );
    assert!(w.note(&bump).is_none(), "the promoted bump has no block note");

    // The CI clone fetches the note through the server too, and a further pass decides nothing twice.
    run(w
        .ci()
        .args(["fetch", "-q", "origin", "+refs/notes/tollgate:refs/notes/tollgate"]));
    let seen = run(w.ci().args(["notes", "--ref=tollgate", "show", &bad_bump]));
    assert_eq!(seen, note);
    assert_eq!(pass(&d).await, PassReport::default(), "nothing new to decide");
    assert_eq!(
        w.remote(&["rev-list", "--count", "main"]).trim(),
        "4",
        "seed, two bumps, one promotion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_token_daemon_promotes_complete_evidence_and_notes_a_block() {
    let server = HttpsGit::start(&[("x-access-token", TOKEN)]);
    let w = World::new(|pinned| {
        let bare = seed(&server.root(), pinned);
        let token = server.scratch().join("git-token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let url = server.url("envs.git");
        Transport {
            yaml: format!(
                "url: \"{url}\", auth: {{token_file: \"{}\"}}, ca_file: \"{}\"",
                token.display(),
                server.ca_file().display()
            ),
            // The CI pushes with the same token, in the URL as a pipeline's credential would be.
            url: url.replacen("https://", &format!("https://x-access-token:{TOKEN}@"), 1),
            cli_env: ("GIT_SSL_CAINFO", server.ca_file().display().to_string()),
            bare,
        }
    })
    .await;
    promote_and_block(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_key_daemon_promotes_complete_evidence_and_notes_a_block() {
    let server = SshGit::start();
    let w = World::new(|pinned| {
        let bare = seed(&server.root(), pinned);
        let known_hosts = server.scratch().join("known_hosts");
        std::fs::write(&known_hosts, server.known_hosts_line()).unwrap();
        let url = server.url("envs.git");
        Transport {
            yaml: format!(
                "url: \"{url}\", auth: {{ssh_key_file: \"{}\"}}, known_hosts_file: \"{}\"",
                server.client_key().display(),
                known_hosts.display()
            ),
            url,
            cli_env: (
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} \
                 -o StrictHostKeyChecking=yes -o BatchMode=yes",
                    server.client_key().display(),
                    known_hosts.display()
                ),
            ),
            bare,
        }
    })
    .await;
    promote_and_block(&w).await;
}
