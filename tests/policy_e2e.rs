//! The policy features on real parts (a `docker-registry` on loopback, a bare git repository over
//! `file://`, attestations made by PyPI in-toto): waivers in the environment repository, Rego
//! policies, `mode: warn` and `rule_modes`, and the `upstream` rule across staging → canary → prod.

mod support {
    pub mod cli_tools;
    pub mod registry;
}

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use std::sync::Arc;
use support::cli_tools::{git, intoto};

use support::registry::Registry;
use tollgate::config;
use tollgate::daemon::{Daemon, PassReport};
use tollgate::gate::evidence::EvidenceStore as _;
use tollgate::image::{Digest, ImageRef};
use tollgate::oci::{RegistryStore, Stores};
use tollgate::pipeline::Gate;
use tollgate::telemetry::Metrics;

const PROVENANCE: &str = "https://slsa.dev/provenance/v1";
const SBOM: &str = "https://cyclonedx.org/bom";

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: \"{image}\"\n"
    )
}

struct World {
    dir: tempfile::TempDir,
    _registry: Registry,
    host: String,
    store: RegistryStore,
    work: PathBuf,
    bare: PathBuf,
    key: PathBuf,
}

impl World {
    /// A registry with `acme/api:1.0`, and an `envs` repository where every environment in `envs`
    /// runs it.
    async fn new(envs: &[&str]) -> World {
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
        for env in envs {
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
            _registry: registry,
            host,
            store,
            work,
            bare,
            key,
        }
    }

    /// Writes tollgate.yaml with the given `policies:` and `environments:` sections (indented by two).
    fn config(&self, policies: &str, environments: &str) -> config::Config {
        let text = format!(
            r#"version: 1
state_dir: ./state
repositories:
  envs: {{url: "file://{bare}", branch: main, author: {{name: tollgate, email: tollgate@example.invalid}}}}
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
{policies}
environments:
{environments}
"#,
            bare = self.bare.display(),
            host = self.host,
        );
        let path = self.config_path();
        std::fs::write(&path, text).unwrap();
        config::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("tollgate.yaml")
    }

    fn daemon(&self, config: config::Config) -> Daemon {
        let stores = Stores::from_config(&config).unwrap();
        let gate = Gate {
            config: Arc::new(config),
            stores,
            metrics: Arc::new(Metrics::new()),
        };
        Daemon::open(Arc::new(gate)).unwrap()
    }

    fn image(&self) -> ImageRef {
        ImageRef::parse(&format!("{}/acme/api", self.host)).unwrap()
    }

    /// Pushes `acme/api:<tag>` with the given attestations by the CI key (`prov`, `sbom`).
    async fn image_with(&self, tag: &str, evidence: &[&str]) -> Digest {
        let digest = self
            .store
            .push_test_image("acme/api", tag, &[("VERSION", tag.as_bytes())])
            .await
            .unwrap();
        for what in evidence {
            let predicate_type = match *what {
                "prov" => PROVENANCE,
                "sbom" => SBOM,
                other => panic!("unknown evidence {other}"),
            };
            let env = intoto(
                self.dir.path(),
                &format!("{what}-{tag}"),
                &digest,
                predicate_type,
                Some(&self.key),
                None,
            );
            self.store
                .attach_attestation(&self.image(), &digest, &env, predicate_type)
                .await
                .unwrap();
        }
        digest
    }

    fn reference(&self, tag: &str, digest: &Digest) -> String {
        format!("{}/acme/api:{tag}@{digest}", self.host)
    }

    /// Commits files as a human would (image automation, a reviewed waiver); returns the commit.
    fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        git(&self.work, &["pull", "-q", "--rebase", "origin", "main"]);
        for (path, text) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_string()
    }

    fn bump(&self, env: &str, reference: &str) -> String {
        self.commit(
            &[(&format!("clusters/{env}/deployment.yaml"), &deployment(reference))],
            &format!("bump {env} to {reference}"),
        )
    }

    fn remote(&self, args: &[&str]) -> String {
        git(&self.bare, args)
    }

    fn file(&self, env: &str) -> String {
        self.remote(&["show", &format!("main:clusters/{env}/deployment.yaml")])
    }

    fn last_message(&self) -> String {
        self.remote(&["log", "-1", "--format=%B", "main"])
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

    fn check_json(&self, env: &str, reference: &str) -> (Option<i32>, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["check", "--config"])
            .arg(self.config_path())
            .args(["--env", env, "--output", "json", reference])
            .output()
            .unwrap();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), json)
    }
}

/// One pass; the report per target environment.
async fn pass(d: &Daemon) -> BTreeMap<String, PassReport> {
    d.pass()
        .await
        .into_iter()
        .map(|(env, r)| (env, r.unwrap_or_else(|e| panic!("pass failed: {e}"))))
        .collect()
}

fn counts(r: &PassReport) -> (usize, usize, usize) {
    (r.promoted, r.blocked, r.deferred)
}

const STAGING_PROD: &str = "  staging: {repository: envs, path: clusters/staging}\n  prod: {repository: envs, path: clusters/prod, promote_from: staging, policy: prod}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiver_in_the_environment_repository_turns_a_block_into_an_allow() {
    let w = World::new(&["staging", "prod"]).await;
    let config = w.config(
        "  prod: {contract: release, mode: enforce, waivers: .tollgate/waivers.yaml}",
        STAGING_PROD,
    );
    let d = w.daemon(config);
    pass(&d).await;

    // No SBOM, no waiver: blocked.
    let d3 = w.image_with("3.0", &["prov"]).await;
    let c3 = w.bump("staging", &w.reference("3.0", &d3));
    assert_eq!(counts(&pass(&d).await["prod"]), (0, 1, 0));
    let note = w.note(&c3).expect("a block note");
    assert!(note.contains("Tollgate-Reason: material-missing"), "{note}");

    // A reviewed waiver lands in the environment repository; the next such image is allowed.
    let waivers = format!(
        "# reviewed in PR 17\n- reason: material-missing\n  image: \"{}/acme/*\"\n  expires: 2099-01-01\n  justification: SBOM generator broken, ACME-17\n  approved_by: jane@acme.example\n",
        w.host
    );
    w.commit(
        &[(".tollgate/waivers.yaml", &waivers)],
        "waive missing SBOMs until the generator is fixed",
    );
    let d4 = w.image_with("4.0", &["prov"]).await;
    w.bump("staging", &w.reference("4.0", &d4));
    assert_eq!(counts(&pass(&d).await["prod"]), (1, 0, 0));
    assert!(w.file("prod").contains(&d4.to_string()));
    let message = w.last_message();
    assert!(message.starts_with("promote(prod): api "), "{message}");
    let expected = format!(
        "Tollgate-Waiver: material-missing {}/acme/* expires 2099-01-01 approved-by jane@acme.example",
        w.host
    );
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("Tollgate-Reason: waived"), "{message}");
    assert!(message.contains("  waived material-missing: "), "{message}");

    // `check --output json` shows the waiver, the file it came from and both policy digests.
    let (code, json) = w.check_json("prod", &w.reference("4.0", &d4));
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["decision"]["waivers"][0]["reason"], "material-missing");
    assert_eq!(json["decision"]["waivers"][0]["approved_by"], "jane@acme.example");
    assert_eq!(json["waivers_file"]["state"], "loaded");
    assert_ne!(json["policy_digest"], json["base_policy_digest"]);
    let waived: Vec<_> = json["decision"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["outcome"] == "waived")
        .collect();
    assert_eq!(waived.len(), 1);
    assert_eq!(waived[0]["reason"], "material-missing");

    // A malformed waivers file waives nothing: blocked again, and the decision says why.
    w.commit(
        &[(".tollgate/waivers.yaml", "- reason: material-missing\n  image: [\n")],
        "oops",
    );
    let d5 = w.image_with("5.0", &["prov"]).await;
    let c5 = w.bump("staging", &w.reference("5.0", &d5));
    assert_eq!(counts(&pass(&d).await["prod"]), (0, 1, 0));
    let note = w.note(&c5).expect("a block note");
    assert!(
        note.contains("warn  waivers: waivers file ignored: .tollgate/waivers.yaml:"),
        "{note}"
    );
    assert!(!note.contains("Tollgate-Waiver"), "{note}");

    // An expired waiver does not apply either.
    let expired = waivers.replace("2099-01-01", "2020-01-01");
    w.commit(&[(".tollgate/waivers.yaml", &expired)], "expired waiver");
    let d6 = w.image_with("6.0", &["prov"]).await;
    let c6 = w.bump("staging", &w.reference("6.0", &d6));
    assert_eq!(counts(&pass(&d).await["prod"]), (0, 1, 0));
    let note = w.note(&c6).expect("a block note");
    assert!(note.contains("a waiver for it expired 2020-01-01"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rego_violation_blocks_with_its_message() {
    let w = World::new(&["staging", "prod"]).await;
    std::fs::create_dir_all(w.dir.path().join("policies")).unwrap();
    std::fs::write(
        w.dir.path().join("policies/prod.rego"),
        r#"package tollgate

default result := {"violations": [], "skipped": false, "skip_reason": ""}

result := {"violations": v, "skipped": false, "skip_reason": ""} if count(v) > 0

v contains msg if {
    input.image.tag == "9.9-rc"
    msg := sprintf("release candidates are not promoted into %s", [input.environment])
}

v contains "no signed SBOM" if {
    not "SBOM_CYCLONEDX_JSON" in {m.kind | some m in input.materials}
}
"#,
    )
    .unwrap();
    let config = w.config(
        "  prod: {contract: release, rules: {rego: [policies/prod.rego]}}",
        STAGING_PROD,
    );
    let d = w.daemon(config);
    pass(&d).await;

    let rc = w.image_with("9.9-rc", &["prov", "sbom"]).await;
    let c = w.bump("staging", &w.reference("9.9-rc", &rc));
    assert_eq!(counts(&pass(&d).await["prod"]), (0, 1, 0));
    let note = w.note(&c).expect("a block note");
    assert!(note.contains("Tollgate-Reason: rego-violation"), "{note}");
    assert!(
        note.contains("fail  rego-violation: release candidates are not promoted into prod"),
        "{note}"
    );

    // The same policy lets a release through.
    let good = w.image_with("2.0", &["prov", "sbom"]).await;
    w.bump("staging", &w.reference("2.0", &good));
    assert_eq!(counts(&pass(&d).await["prod"]), (1, 0, 0));
    assert!(!w.last_message().contains("rego-violation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warn_mode_allows_with_reasons_and_rule_modes_can_still_enforce() {
    let w = World::new(&["staging", "prod"]).await;
    let config = w.config(
        "  prod: {contract: release, mode: warn, rules: {digest_pinned: true}, rule_modes: {digest_pinned: enforce}}",
        STAGING_PROD,
    );
    let d = w.daemon(config);
    pass(&d).await;

    // Missing SBOM in warn mode: promoted, and the reason is on the commit.
    let d2 = w.image_with("2.0", &["prov"]).await;
    w.bump("staging", &w.reference("2.0", &d2));
    assert_eq!(counts(&pass(&d).await["prod"]), (1, 0, 0));
    let message = w.last_message();
    assert!(message.contains("Tollgate-Decision: allow"), "{message}");
    assert!(message.contains("Tollgate-Mode: warn"), "{message}");
    assert!(message.contains("Tollgate-Reason: material-missing"), "{message}");
    assert!(message.contains("  warn  material-missing: "), "{message}");

    // `digest_pinned` is overridden to enforce: an unpinned reference blocks even in warn mode.
    w.image_with("3.0", &["prov", "sbom"]).await;
    let c = w.bump("staging", &format!("{}/acme/api:3.0", w.host));
    assert_eq!(counts(&pass(&d).await["prod"]), (0, 1, 0));
    let note = w.note(&c).expect("a block note");
    assert!(note.contains("Tollgate-Reason: digest-not-pinned"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_rule_follows_a_two_hop_chain() {
    let w = World::new(&["staging", "canary", "prod"]).await;
    let config = w.config(
        "  canary: {contract: release}\n  prod: {contract: release, rules: {upstream: {environment: canary, soak: 0s}}}",
        "  staging: {repository: envs, path: clusters/staging}\n  canary: {repository: envs, path: clusters/canary, promote_from: staging, policy: canary}\n  prod: {repository: envs, path: clusters/prod, promote_from: canary, policy: prod}",
    );
    let d = w.daemon(config);
    pass(&d).await;

    // Staging → canary by tollgate, then canary → prod: the upstream rule finds the canary promotion.
    let good = w.image_with("2.0", &["prov", "sbom"]).await;
    w.bump("staging", &w.reference("2.0", &good));
    let mut promoted = BTreeMap::new();
    for _ in 0..2 {
        for (env, r) in pass(&d).await {
            *promoted.entry(env).or_insert(0) += r.promoted;
        }
    }
    assert_eq!(promoted.get("canary"), Some(&1), "{promoted:?}");
    assert_eq!(promoted.get("prod"), Some(&1), "{promoted:?}");
    assert!(w.file("canary").contains(&good.to_string()));
    assert!(w.file("prod").contains(&good.to_string()));
    let message = w.last_message();
    assert!(message.starts_with("promote(prod): "), "{message}");
    assert!(message.contains("Tollgate-Source: canary@"), "{message}");

    // An image put into canary by hand was not promoted there by tollgate: prod blocks it.
    let manual = w.image_with("3.0", &["prov", "sbom"]).await;
    let c = w.bump("canary", &w.reference("3.0", &manual));
    let r = pass(&d).await;
    assert_eq!(counts(&r["prod"]), (0, 1, 0), "{r:?}");
    let note = w.note(&c).expect("a block note on the canary commit");
    assert!(note.contains("Tollgate-Reason: upstream-not-promoted"), "{note}");
    assert!(!w.file("prod").contains(&manual.to_string()));

    // `check` answers the same from the mirrors it fetches itself.
    let (code, json) = w.check_json("prod", &w.reference("2.0", &good));
    assert_eq!(code, Some(0), "{json:#}");
    assert_eq!(json["upstream_promotion"]["environment"], "canary");
    let (code, json) = w.check_json("prod", &w.reference("3.0", &manual));
    assert_eq!(code, Some(1), "{json:#}");
}

#[test]
fn validate_reports_rego_errors_and_unknown_rule_modes_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.rego"), "package tollgate\nresult := {\n").unwrap();
    let config = |policy: &str| {
        format!(
            "version: 1\ncontracts:\n  c: {{materials: []}}\npolicies:\n  p: {policy}\nenvironments:\n  e: {{repository: r, path: x}}\nrepositories:\n  r: {{url: file:///tmp/x.git}}\n"
        )
    };
    let path = dir.path().join("tollgate.yaml");
    let e = config::parse(&config("{contract: c, rules: {rego: [bad.rego]}}"), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rego bad.rego: syntax error: bad.rego:3:1"), "{e}");
    assert!(e.contains("policies.p.rules.rego[0]"), "{e}");

    let e = config::parse(&config("{contract: c, rule_modes: {sarif_max_errors: warn}}"), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rule `sarif_max_errors` is not configured"), "{e}");
    let e = config::parse(&config("{contract: c, rule_modes: {contract: sometimes}}"), &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown mode \"sometimes\""), "{e}");

    let ok = config::parse(
        &config("{contract: c, rules: {digest_pinned: true}, rule_modes: {digest_pinned: warn, contract: enforce}}"),
        &path,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let modes = &ok.policies["p"].rules.modes;
    assert_eq!(modes.get("digest_pinned"), Some(&config::Mode::Warn));
    assert_eq!(modes.get("contract"), Some(&config::Mode::Enforce));
}
