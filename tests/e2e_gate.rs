//! The whole gate on real parts: a bare git repository over `file://` changed with the git CLI, a
//! real `docker-registry` on 127.0.0.1, and attestations made by PyPI in-toto/securesystemslib.
//! An image bump pushed to staging becomes a promotion commit in prod when its evidence is
//! complete, and a note on the staging commit when it is not; bad input blocks or defers.

mod support {
    pub mod cli_tools;
    pub mod registry;
}

use std::path::PathBuf;
use std::process::Command;

use std::sync::Arc;
use support::cli_tools::{git, intoto};

use support::registry::Registry;
use tollgate::config;
use tollgate::daemon::{Daemon, PassReport};
use tollgate::gate::evidence::EvidenceStore;
use tollgate::image::{Digest, ImageRef};
use tollgate::oci::{RegistryStore, Stores};
use tollgate::pipeline::Gate;
use tollgate::telemetry::Metrics;

const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const SBOM: &str = "https://cyclonedx.org/bom";

fn deployment(image: &str) -> String {
    format!(
        "# payments, deployed by Argo CD\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: \"{image}\"   # kept quoted\n"
    )
}

struct World {
    dir: tempfile::TempDir,
    registry: Option<Registry>,
    host: String,
    store: RegistryStore,
    work: PathBuf,
    bare: PathBuf,
    key: PathBuf,
    old: Digest,
}

impl World {
    async fn new() -> World {
        let registry = Registry::start();
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::new(
            &registry.host(),
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
        // The CI signing key, made by securesystemslib: its public half is tollgate's `ci-key`.
        let key = dir.path().join("ci.key");
        intoto(dir.path(), "ci", &old, PROVENANCE, None, Some(&key));
        std::fs::copy(dir.path().join("ci.pub"), dir.path().join("ci-key.pub")).unwrap();

        let bare = dir.path().join("envs.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "--bare", "-q", bare.to_str().unwrap()]);
        git(
            dir.path(),
            &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()],
        );
        let pinned = format!("{}/acme/api:1.0@{old}", registry.host());
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
        let host = registry.host();
        World {
            dir,
            registry: Some(registry),
            host,
            store,
            work,
            bare,
            key,
            old,
        }
    }

    fn config(&self, registry_host: &str) -> config::Config {
        let text = format!(
            r#"version: 1
state_dir: ./state
repositories:
  envs: {{url: "file://{bare}", branch: main, author: {{name: tollgate, email: tollgate@example.invalid}}}}
registries:
  "{registry_host}": {{insecure: true}}
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
            bare = self.bare.display()
        );
        let path = self.dir.path().join("tollgate.yaml");
        std::fs::write(&path, text).unwrap();
        config::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn daemon(&self, registry_host: &str) -> Daemon {
        let config = self.config(registry_host);
        let stores = Stores::from_config(&config).unwrap();
        let gate = Gate {
            config: Arc::new(config),
            stores,
            metrics: Arc::new(Metrics::new()),
        };
        Daemon::open(Arc::new(gate)).unwrap()
    }

    async fn push_image(&self, tag: &str) -> Digest {
        self.store
            .push_test_image("acme/api", tag, &[("VERSION", tag.as_bytes())])
            .await
            .unwrap()
    }

    fn image(&self) -> ImageRef {
        ImageRef::parse(&format!("{}/acme/api", self.host)).unwrap()
    }

    async fn attach(&self, digest: &Digest, envelope: &[u8], predicate_type: &str) {
        self.store
            .attach_attestation(&self.image(), digest, envelope, predicate_type)
            .await
            .unwrap();
    }

    /// Attestations by the CI key for `subject`, attached to `target`.
    async fn attest(&self, name: &str, target: &Digest, subject: &Digest, predicate_type: &str) {
        let env = intoto(self.dir.path(), name, subject, predicate_type, Some(&self.key), None);
        self.attach(target, &env, predicate_type).await;
    }

    /// Pushes a staging bump as image automation would; returns the commit id.
    fn bump_staging(&self, reference: &str) -> String {
        git(&self.work, &["pull", "-q", "--rebase", "origin", "main"]);
        std::fs::write(
            self.work.join("clusters/staging/deployment.yaml"),
            deployment(reference),
        )
        .unwrap();
        git(
            &self.work,
            &["commit", "-q", "-am", &format!("bump staging to {reference}")],
        );
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    fn remote(&self, args: &[&str]) -> String {
        git(&self.bare, args)
    }

    fn prod_file(&self) -> String {
        self.remote(&["show", "main:clusters/prod/deployment.yaml"])
    }

    fn note(&self, commit: &str) -> Option<String> {
        let out = Command::new("git")
            .current_dir(&self.bare)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bump_with_complete_evidence_is_promoted_and_incomplete_one_is_noted() {
    let w = World::new().await;
    let d = w.daemon(&w.host.clone());
    assert_eq!(
        pass(&d).await,
        PassReport::default(),
        "the first pass only takes a baseline"
    );

    let good = w.push_image("2.0").await;
    w.attest("prov2", &good, &good, PROVENANCE).await;
    w.attest("sbom2", &good, &good, SBOM).await;
    let good_ref = format!("{}/acme/api:2.0@{good}", w.host.clone());
    let bump = w.bump_staging(&good_ref);
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (1, 0, 0), "{r:?}");

    // Only the image scalar changed, the comment and quoting stayed.
    assert_eq!(w.prod_file(), deployment(&good_ref));
    let message = w.remote(&["log", "-1", "--format=%B", "main"]);
    assert!(message.starts_with("promote(prod): api "), "{message}");
    let trailers = w.remote(&["log", "-1", "--format=%(trailers:only,unfold)", "main"]);
    for expected in [
        "Tollgate-Decision: allow".to_string(),
        "Tollgate-Environment: prod".to_string(),
        format!("Tollgate-Image: {}/acme/api@{good}", w.host.clone()),
        format!("Tollgate-Source: staging@{bump}"),
        "Tollgate-Mode: enforce".to_string(),
    ] {
        assert!(trailers.contains(&expected), "missing `{expected}` in:\n{trailers}");
    }
    assert_eq!(trailers.matches("Tollgate-Evidence: ").count(), 2, "{trailers}");
    assert!(trailers.contains("Tollgate-Policy: prod@sha256:"), "{trailers}");

    // 3.0 has provenance but no SBOM: blocked, noted on the staging commit, prod untouched.
    let bad = w.push_image("3.0").await;
    w.attest("prov3", &bad, &bad, PROVENANCE).await;
    let bad_bump = w.bump_staging(&format!("{}/acme/api:3.0@{bad}", w.host.clone()));
    let prod_before = w.remote(&["rev-parse", "main:clusters/prod"]);
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked), (0, 1), "{r:?}");
    assert_eq!(w.remote(&["rev-parse", "main:clusters/prod"]), prod_before);
    let note = w.note(&bad_bump).expect("a block note on the staging commit");
    assert!(note.starts_with("block(prod): api "), "{note}");
    assert!(
        note.contains("Tollgate-Decision: block") && note.contains("Tollgate-Reason: material-missing"),
        "{note}"
    );

    // A restarted daemon (new state dir contents, same git) decides nothing twice.
    std::fs::remove_dir_all(w.dir.path().join("state")).unwrap();
    let again = w.daemon(&w.host.clone());
    assert_eq!(pass(&again).await, PassReport::default());
    assert_eq!(w.note(&bad_bump).unwrap().matches("Tollgate-Decision").count(), 1);
    assert_eq!(
        w.remote(&["rev-list", "--count", "main"]).trim(),
        "4",
        "initial, two bumps, one promotion"
    );
}

/// One bump whose evidence is broken in one way; returns the note written on it.
async fn blocked_note(w: &World, d: &Daemon, tag: &str, prepare: impl AsyncFnOnce(&World, &Digest)) -> String {
    let digest = w.push_image(tag).await;
    prepare(w, &digest).await;
    let commit = w.bump_staging(&format!("{}/acme/api:{tag}@{digest}", w.host.clone()));
    let r = pass(d).await;
    assert_eq!((r.promoted, r.blocked), (0, 1), "{tag}: {r:?}");
    w.note(&commit).expect("a block note")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_evidence_blocks_with_the_reason_that_names_it() {
    let w = World::new().await;
    let d = w.daemon(&w.host.clone());
    pass(&d).await;

    // An attestation about another image, replayed onto this one.
    let note = blocked_note(&w, &d, "4.0", async |w, digest| {
        w.attest("prov4", digest, digest, PROVENANCE).await;
        w.attest("sbom4", digest, &w.old, SBOM).await;
    })
    .await;
    assert!(note.contains("Tollgate-Reason: subject-mismatch"), "{note}");

    // Signed by a key tollgate does not know.
    let note = blocked_note(&w, &d, "5.0", async |w, digest| {
        w.attest("prov5", digest, digest, PROVENANCE).await;
        let stranger = intoto(w.dir.path(), "stranger", digest, SBOM, None, None);
        w.attach(digest, &stranger, SBOM).await;
    })
    .await;
    assert!(note.contains("Tollgate-Reason: signature-invalid"), "{note}");

    // A corrupt DSSE envelope: valid JSON, payload not base64.
    let note = blocked_note(&w, &d, "6.0", async |w, digest| {
        w.attest("prov6", digest, digest, PROVENANCE).await;
        let corrupt =
            br#"{"payloadType":"application/vnd.in-toto+json","payload":"%%%","signatures":[{"sig":"AAAA"}]}"#;
        w.attach(digest, corrupt, SBOM).await;
    })
    .await;
    assert!(note.contains("Tollgate-Reason: signature-invalid"), "{note}");
    assert!(!w.prod_file().contains(":6.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_yaml_upstream_is_never_promoted_and_does_not_stop_the_gate() {
    let w = World::new().await;
    let d = w.daemon(&w.host.clone());
    pass(&d).await;
    let prod_before = w.prod_file();
    git(&w.work, &["pull", "-q", "--rebase", "origin", "main"]);
    std::fs::write(
        w.work.join("clusters/staging/deployment.yaml"),
        "spec: [unclosed\n  image: x:9\n",
    )
    .unwrap();
    git(&w.work, &["commit", "-q", "-am", "broken yaml"]);
    git(&w.work, &["push", "-q", "origin", "HEAD:main"]);
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (0, 0, 0), "{r:?}");
    assert_eq!(w.prod_file(), prod_before);

    // The next good bump still goes through.
    let good = w.push_image("7.0").await;
    w.attest("prov7", &good, &good, PROVENANCE).await;
    w.attest("sbom7", &good, &good, SBOM).await;
    w.bump_staging(&format!("{}/acme/api:7.0@{good}", w.host.clone()));
    assert_eq!(pass(&d).await.promoted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_defers_and_writes_nothing() {
    let w = World::new().await;
    let mut w = w;
    let good = w.push_image("2.0").await;
    let d = w.daemon(&w.host.clone());
    pass(&d).await;
    let bump = w.bump_staging(&format!("{}/acme/api:2.0@{good}", w.host));
    // The registry goes down between the push and the evaluation.
    drop(w.registry.take());
    let marker_before = w.remote(&["rev-parse", "refs/tollgate/processed/prod"]);
    let prod_before = w.prod_file();
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (0, 0, 1), "{r:?}");
    assert_eq!(w.prod_file(), prod_before);
    assert!(w.note(&bump).is_none(), "a defer writes no note");
    assert_eq!(
        w.remote(&["rev-parse", "refs/tollgate/processed/prod"]),
        marker_before,
        "the marker must not pass a deferred commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_command_exit_codes_follow_the_decision() {
    let w = World::new().await;
    w.config(&w.host.clone());
    let good = w.push_image("2.0").await;
    w.attest("prov2", &good, &good, PROVENANCE).await;
    w.attest("sbom2", &good, &good, SBOM).await;
    let bad = w.push_image("3.0").await;
    let config_path = w.dir.path().join("tollgate.yaml");
    let check = |reference: String, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["check", "--config"])
            .arg(&config_path)
            .args(["--env", "prod"])
            .args(extra)
            .arg(reference)
            .output()
            .unwrap()
    };
    let host = w.host.clone();
    let allow = check(format!("{host}/acme/api@{good}"), &[]);
    assert_eq!(
        allow.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allow.stderr)
    );
    let block = check(format!("{host}/acme/api:3.0@{bad}"), &["--output", "json"]);
    assert_eq!(block.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&block.stdout).unwrap();
    assert_eq!(json["decision"]["kind"], "block");
    let reasons: Vec<&str> = json["decision"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons, vec!["material-missing", "material-missing"]);
    // A tag resolves through the registry; digest_pinned then fails.
    let tag_only = check(format!("{host}/acme/api:2.0"), &["--output", "json"]);
    assert_eq!(tag_only.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&tag_only.stdout).unwrap();
    assert_eq!(json["candidate"]["digest"], good.as_str());
    let mut w = w;
    drop(w.registry.take());
    let down = check(format!("{host}/acme/api@{good}"), &[]);
    assert_eq!(down.status.code(), Some(2), "registry down is a defer: exit 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_attached_after_a_block_promotes_the_candidate_on_a_recheck() {
    let w = World::new().await;
    let mut d = w.daemon(&w.host.clone());
    d.set_recheck_interval(std::time::Duration::ZERO);
    pass(&d).await;
    let late = w.push_image("8.0").await;
    w.attest("prov8", &late, &late, PROVENANCE).await;
    let bump = w.bump_staging(&format!("{}/acme/api:8.0@{late}", w.host));
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked), (0, 1), "{r:?}");

    // Nothing changes while the evidence is still missing: the block is already recorded.
    assert_eq!(pass(&d).await, PassReport::default());
    assert_eq!(w.note(&bump).unwrap().matches("Tollgate-Decision: block").count(), 1);

    // CI attaches the SBOM later; no new upstream commit is needed.
    w.attest("sbom8", &late, &late, SBOM).await;
    let r = pass(&d).await;
    assert_eq!((r.promoted, r.blocked), (1, 0), "{r:?}");
    assert!(w.prod_file().contains(&format!("acme/api:8.0@{late}")));
    let trailers = w.remote(&["log", "-1", "--format=%(trailers:only,unfold)", "main"]);
    assert!(
        trailers.contains(&format!("Tollgate-Source: staging@{bump}")),
        "{trailers}"
    );
    assert_eq!(pass(&d).await, PassReport::default(), "promoted once");
}
