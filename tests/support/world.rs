//! A running-daemon fixture shared by tests/daemon_e2e.rs and benches/push_to_promotion.rs: a bare
//! environment repository over `file://` changed with the git CLI, a real `docker-registry` on
//! loopback, and releases whose evidence is signed in-process (`dsse::Envelope::sign`) so that a
//! release takes milliseconds. Declare it at the crate root next to `registry.rs`:
//! `#[path = "support/registry.rs"] mod registry; #[path = "support/cli_tools.rs"] mod cli_tools;
//! #[path = "support/world.rs"] mod world;`.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::registry::Registry;
use tollgate::config;
use tollgate::daemon::{Daemon, RunOptions};
use tollgate::dsse::{Envelope, Statement, INTOTO_PAYLOAD_TYPE};
use tollgate::gate::evidence::EvidenceStore as _;
use tollgate::image::{Digest, ImageRef};
use tollgate::keys::SigningKey;
use tollgate::oci::{RegistryStore, Stores};
use tollgate::pipeline::Gate;
use tollgate::telemetry::Metrics;

pub const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
pub const SBOM: &str = "https://cyclonedx.org/bom";
pub const SECRET: &str = "webhook-s3cret";

pub use crate::cli_tools::git;

pub fn deployment(image: &str) -> String {
    format!(
        "# payments, deployed by Argo CD\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: \"{image}\"\n"
    )
}

/// `hex(HMAC-SHA256(secret, body))`, as GitHub, Gitea and the generic sender sign.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// A minimal HTTP/1.1 exchange (`Connection: close`); returns the status and the body text.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // The server may answer (413) and close before it read the whole body: a failed write is
    // then expected, and the answer is still there to read.
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `f` every few milliseconds until it returns `Some`, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// How the daemon learns about pushes in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wakeup {
    /// Poll interval 1h, no file watching: only webhooks.
    Webhook,
    /// Poll interval 1h, file watching on.
    FileWatch,
    /// Poll interval 1s, no file watching.
    Poll,
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub registry: Option<Registry>,
    pub host: String,
    pub store: RegistryStore,
    pub work: PathBuf,
    pub bare: PathBuf,
    pub key: SigningKey,
    releases: AtomicUsize,
}

/// A daemon running in-process with its HTTP server.
pub struct Running {
    pub addr: SocketAddr,
    pub daemon: Arc<Daemon>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(15), self.tasks.wait())
            .await
            .expect("the daemon and server stop");
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.addr, "GET", path, &[], b"")
    }

    /// The value of one exposition line of `/metrics` (`name{labels}`), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn hook(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
        http(self.addr, "POST", path, headers, body)
    }

    /// A GitHub push event for `repo_url`, signed with `secret`.
    pub fn github_push(&self, repo_url: &str, secret: &str) -> (u16, String) {
        let body = serde_json::json!({
            "ref": "refs/heads/main",
            "repository": {"clone_url": repo_url, "full_name": "platform/envs"},
        })
        .to_string();
        self.hook(
            "/hooks/git",
            &[
                ("X-GitHub-Event", "push".into()),
                ("Content-Type", "application/json".into()),
                (
                    "X-Hub-Signature-256",
                    format!("sha256={}", hmac_hex(secret, body.as_bytes())),
                ),
            ],
            body.as_bytes(),
        )
    }
}

impl World {
    pub async fn new() -> World {
        let registry = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        let host = registry.host();
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
        std::fs::write(dir.path().join("webhook-secret"), format!("{SECRET}\n")).unwrap();

        let bare = dir.path().join("envs.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "--bare", "-q", bare.to_str().unwrap()]);
        git(
            dir.path(),
            &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()],
        );
        let pinned = format!("{host}/acme/api:1.0@{old}");
        for env in ["staging", "prod"] {
            std::fs::create_dir_all(work.join(format!("clusters/{env}"))).unwrap();
            std::fs::write(
                work.join(format!("clusters/{env}/deployment.yaml")),
                deployment(&pinned),
            )
            .unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial environments"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        World {
            dir,
            registry: Some(registry),
            host,
            store,
            work,
            bare,
            key,
            releases: AtomicUsize::new(0),
        }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes tollgate.yaml (listen on 127.0.0.1:0) and returns its path.
    pub fn write_config(&self, poll_interval: &str) -> PathBuf {
        let text = format!(
            r#"version: 1
listen: 127.0.0.1:0
state_dir: ./state
repositories:
  envs:
    url: "{url}"
    branch: main
    poll_interval: {poll_interval}
    webhook_secret_file: ./webhook-secret
    author: {{name: tollgate, email: tollgate@example.invalid}}
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
            url = self.url(),
            host = self.host,
        );
        let path = self.dir.path().join("tollgate.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn gate(&self, poll_interval: &str) -> Arc<Gate> {
        let path = self.write_config(poll_interval);
        let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let stores = Stores::from_config(&config).unwrap();
        Arc::new(Gate {
            config: Arc::new(config),
            stores,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Starts the HTTP server only; `run` starts the loop. Split so that a test can see `/readyz`
    /// before the first sync.
    pub async fn serve(&self, wakeup: Wakeup) -> Running {
        let poll = if wakeup == Wakeup::Poll { "1s" } else { "1h" };
        let gate = self.gate(poll);
        let hooks = tollgate::server::Webhooks::load(&gate.config).unwrap();
        let daemon = Arc::new(Daemon::open(gate).unwrap());
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let addr = tollgate::server::serve(daemon.clone(), hooks, shutdown.clone(), &tasks)
            .await
            .unwrap();
        Running {
            addr,
            daemon,
            shutdown,
            tasks,
        }
    }

    pub fn run(&self, running: &Running, wakeup: Wakeup) {
        let options = RunOptions {
            watch_files: wakeup == Wakeup::FileWatch,
            ..RunOptions::default()
        };
        running
            .tasks
            .spawn(running.daemon.clone().run_with(running.shutdown.clone(), options));
    }

    /// Server and loop, then waits for the first round to take its baseline.
    pub async fn start(&self, wakeup: Wakeup) -> Running {
        let running = self.serve(wakeup).await;
        self.run(&running, wakeup);
        let bare = self.bare.clone();
        tokio::task::spawn_blocking(move || wait_for(Duration::from_secs(30), "the baseline marker", || marker(&bare)))
            .await
            .unwrap();
        running
    }

    pub fn image(&self) -> ImageRef {
        ImageRef::parse(&format!("{}/acme/api", self.host)).unwrap()
    }

    async fn attest(&self, digest: &Digest, predicate_type: &str) {
        let statement = Statement::new(
            &self.image().name,
            digest,
            predicate_type,
            serde_json::json!({"builder": {"id": "https://github.com/acme/ci"}}),
        );
        let envelope = Envelope::sign(INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&statement).unwrap(), &self.key);
        self.store
            .attach_attestation(&self.image(), digest, &envelope.to_json(), predicate_type)
            .await
            .unwrap();
    }

    /// A new image with complete evidence (provenance and SBOM by the CI key); its pinned reference.
    pub async fn release(&self) -> String {
        let n = self.releases.fetch_add(1, Ordering::Relaxed) + 2;
        let tag = format!("{n}.0");
        let digest = self
            .store
            .push_test_image("acme/api", &tag, &[("VERSION", tag.as_bytes())])
            .await
            .unwrap();
        self.attest(&digest, PROVENANCE).await;
        self.attest(&digest, SBOM).await;
        format!("{}/acme/api:{tag}@{digest}", self.host)
    }

    /// Commits one staging bump per reference and pushes them together, as image automation does.
    pub fn bump_staging(&self, references: &[String]) -> String {
        git(&self.work, &["pull", "-q", "--rebase", "origin", "main"]);
        for reference in references {
            std::fs::write(
                self.work.join("clusters/staging/deployment.yaml"),
                deployment(reference),
            )
            .unwrap();
            git(
                &self.work,
                &["commit", "-q", "-am", &format!("bump staging to {reference}")],
            );
        }
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn remote(&self, args: &[&str]) -> String {
        git(&self.bare, args)
    }

    pub fn prod_file(&self) -> String {
        prod_file(&self.bare).unwrap_or_default()
    }
}

/// The prod deployment on the remote's main, read with libgit2 (no process spawn: the benchmark
/// polls this).
pub fn prod_file(bare: &Path) -> Option<String> {
    let repo = git2::Repository::open_bare(bare).ok()?;
    let blob = repo
        .revparse_single("refs/heads/main:clusters/prod/deployment.yaml")
        .ok()?
        .peel_to_blob()
        .ok()?;
    Some(String::from_utf8_lossy(blob.content()).into_owned())
}

/// The `processed/prod` marker on the remote, once the daemon has taken its baseline.
pub fn marker(bare: &Path) -> Option<String> {
    let repo = git2::Repository::open_bare(bare).ok()?;
    let r = repo.find_reference("refs/tollgate/processed/prod").ok()?;
    r.target().map(|o| o.to_string())
}
