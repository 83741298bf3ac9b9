//! Every built-in evidence rule (`max_vulnerabilities`, `sarif_max_errors`, `provenance`) in
//! `enforce` and `warn` mode, end to end: real documents (Trivy CycloneDX, CodeQL SARIF, SLSA v0.2
//! provenance from tests/vectors) signed in-process and attached to an image in a real
//! `docker-registry`, then judged by the `tollgate check` binary and by the daemon promoting
//! staging → prod in a bare git repository.

mod support {
    pub mod cli_tools;
    pub mod registry;
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::Value;
use support::cli_tools::git;
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

const CYCLONEDX: &str = "https://cyclonedx.org/bom";
const SARIF: &str = "https://docs.oasis-open.org/sarif/sarif/v2.1.0";

fn vector(path: &str) -> Value {
    let full = format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The SLSA v0.2 provenance of slsa-framework/example-package (its predicate type and predicate).
fn provenance_v02() -> (String, Value) {
    let st = vector("cosign-attestation-slsa-container/extracted/statement.json");
    (
        st["predicateType"].as_str().unwrap().to_string(),
        st["predicate"].clone(),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: \"{image}\"\n"
    )
}

/// A registry with signed evidence, and the key that signed it.
struct Evidence {
    _registry: Registry,
    host: String,
    store: RegistryStore,
    key: SigningKey,
}

impl Evidence {
    async fn start() -> Evidence {
        let registry = Registry::start();
        let host = registry.host();
        let store = RegistryStore::new(
            &host,
            &config::Registry {
                insecure: true,
                ..Default::default()
            },
        )
        .unwrap();
        Evidence {
            _registry: registry,
            host,
            store,
            key: SigningKey::generate(),
        }
    }

    fn image(&self) -> ImageRef {
        ImageRef::parse(&format!("{}/acme/api", self.host)).unwrap()
    }

    /// Pushes `acme/api:<tag>` with the three real documents attached, each signed by the key.
    async fn image_with_all_evidence(&self, tag: &str) -> Digest {
        let digest = self
            .store
            .push_test_image("acme/api", tag, &[("VERSION", tag.as_bytes())])
            .await
            .unwrap();
        let (slsa_type, slsa) = provenance_v02();
        for (predicate_type, predicate) in [
            (
                CYCLONEDX.to_string(),
                vector("policy/trivy-fluentd-multiple-lockfiles-short.cdx.json"),
            ),
            (SARIF.to_string(), vector("policy/codeql-2.2.4-js-xss.sarif")),
            (slsa_type, slsa),
        ] {
            let statement = Statement::new(&format!("{}/acme/api", self.host), &digest, &predicate_type, predicate);
            let payload = serde_json::to_vec(&statement).unwrap();
            let envelope = Envelope::sign(INTOTO_PAYLOAD_TYPE, &payload, &self.key);
            self.store
                .attach_attestation(&self.image(), &digest, &envelope.to_json(), &predicate_type)
                .await
                .unwrap();
        }
        digest
    }
}

/// A configuration with one policy `prod` (`mode`, `rules` as YAML flow text) and an empty
/// contract, so that the rules are the only results.
fn write_config(dir: &Path, repo_url: &str, host: &str, key: &SigningKey, mode: &str, rules: &str) -> PathBuf {
    std::fs::write(dir.join("release.pub"), key.public_pem()).unwrap();
    let path = dir.join("tollgate.yaml");
    std::fs::write(
        &path,
        format!(
            r#"version: 1
state_dir: ./state
repositories:
  envs: {{url: "{repo_url}", branch: main, author: {{name: tollgate, email: tollgate@example.invalid}}}}
registries:
  "{host}": {{insecure: true}}
trust:
  signers:
    release-key: {{key: ./release.pub}}
contracts:
  release:
    materials: []
policies:
  prod: {{contract: release, mode: {mode}, rules: {rules}}}
environments:
  staging: {{repository: envs, path: clusters/staging}}
  prod: {{repository: envs, path: clusters/prod, promote_from: staging, policy: prod}}
"#
        ),
    )
    .unwrap();
    path
}

fn check(config: &Path, image: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(config)
        .args(["--env", "prod", "--output", "json", image])
        .output()
        .expect("tollgate runs")
}

struct Case {
    rule: &'static str,
    failing: &'static str,
    passing: &'static str,
    reason: &'static str,
    /// Text the failure message must hold: it names what the evidence really says.
    message: &'static str,
}

const CASES: &[Case] = &[
    Case {
        rule: "max_vulnerabilities",
        failing: "{max_vulnerabilities: {critical: 0}}",
        passing: "{max_vulnerabilities: {critical: 5, high: 5}}",
        reason: "vulnerabilities-over-threshold",
        message: "critical 1 > 0",
    },
    Case {
        rule: "sarif_max_errors",
        failing: "{sarif_max_errors: 0}",
        passing: "{sarif_max_errors: 5}",
        reason: "sarif-errors",
        message: "2 error-level result(s) > 0 allowed",
    },
    Case {
        rule: "provenance",
        failing: "{provenance: {source_repo: 'https://github.com/other/*'}}",
        passing: "{provenance: {source_repo: 'https://github.com/slsa-framework/*'}}",
        reason: "provenance-source-mismatch",
        message: "https://github.com/slsa-framework/example-package",
    },
];

/// The one result of `rule` in `tollgate check --output json`.
fn result_of<'a>(json: &'a Value, rule: &str) -> &'a Value {
    let results = json["decision"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no decision.results in {json}"));
    let mine: Vec<&Value> = results.iter().filter(|r| r["rule"] == rule).collect();
    assert_eq!(mine.len(), 1, "one `{rule}` result expected in {json:#}");
    mine[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rule_blocks_in_enforce_warns_in_warn_and_passes_under_its_threshold() {
    let ev = Evidence::start().await;
    let digest = ev.image_with_all_evidence("1.0").await;
    let image = format!("{}/acme/api@{digest}", ev.host);

    for case in CASES {
        let rule = case.rule;
        for (mode, rules, code, outcome, kind) in [
            ("enforce", case.failing, 1, "fail", "block"),
            ("warn", case.failing, 0, "warn", "allow"),
            ("enforce", case.passing, 0, "pass", "allow"),
        ] {
            let what = format!("{rule} {mode} {rules}");
            let dir = tempfile::tempdir().unwrap();
            let cfg = write_config(dir.path(), "file:///nonexistent", &ev.host, &ev.key, mode, rules);
            let out = check(&cfg, &image);
            let stdout = text(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(code),
                "{what}: exit code\nstdout: {stdout}\nstderr: {}",
                text(&out.stderr)
            );
            let json: Value =
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {stdout}"));
            assert_eq!(json["decision"]["kind"], kind, "{what}: {json:#}");
            assert_eq!(
                json["decision"]["results"].as_array().map(Vec::len),
                Some(1),
                "{what}: the empty contract leaves only the rule: {json:#}"
            );
            let r = result_of(&json, rule);
            assert_eq!(r["outcome"], outcome, "{what}: {r:#}");
            // The rule read the attached document: its evidence is one attestation digest.
            assert_eq!(r["evidence"].as_array().map(Vec::len), Some(1), "{what}: {r:#}");
            if outcome == "pass" {
                assert!(r["reason"].is_null(), "{what}: a pass has no reason: {r:#}");
            } else {
                assert_eq!(r["reason"], case.reason, "{what}: {r:#}");
                let message = r["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains(case.message),
                    "{what}: message should hold `{}`: {message}",
                    case.message
                );
            }
        }
    }

    // The same check with a wrong key: the documents are not verified, so the rules have nothing
    // to read and fail closed even though the thresholds would pass.
    let stranger = SigningKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let all_passing = "{max_vulnerabilities: {critical: 5, high: 5}, sarif_max_errors: 5, provenance: {source_repo: 'https://github.com/slsa-framework/*'}}";
    let cfg = write_config(
        dir.path(),
        "file:///nonexistent",
        &ev.host,
        &stranger,
        "enforce",
        all_passing,
    );
    let out = check(&cfg, &image);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    for case in CASES {
        assert_eq!(result_of(&json, case.rule)["reason"], "material-missing", "{json:#}");
    }
}

/// A bare environments repository with staging and prod at `acme/api:1.0`.
struct Repo {
    dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
}

impl Repo {
    fn new(initial: &str) -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("envs.git");
        let work = dir.path().join("work");
        git(dir.path(), &["init", "--bare", "-q", bare.to_str().unwrap()]);
        git(
            dir.path(),
            &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()],
        );
        for env in ["staging", "prod"] {
            std::fs::create_dir_all(work.join(format!("clusters/{env}"))).unwrap();
            std::fs::write(
                work.join(format!("clusters/{env}/deployment.yaml")),
                deployment(initial),
            )
            .unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "initial environments"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        Repo { dir, work, bare }
    }

    fn daemon(&self, ev: &Evidence, mode: &str, rules: &str) -> Daemon {
        let url = format!("file://{}", self.bare.display());
        let path = write_config(self.dir.path(), &url, &ev.host, &ev.key, mode, rules);
        let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let stores = Stores::from_config(&config).unwrap();
        let gate = Gate {
            config: Arc::new(config),
            stores,
            metrics: Arc::new(Metrics::new()),
        };
        Daemon::open(Arc::new(gate)).unwrap()
    }

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

    fn note(&self, commit: &str) -> Option<String> {
        let out = Command::new("git")
            .current_dir(&self.bare)
            .args(["notes", "--ref=tollgate", "show", commit])
            .output()
            .unwrap();
        out.status.success().then(|| text(&out.stdout))
    }
}

async fn pass(d: &Daemon) -> PassReport {
    d.pass()
        .await
        .remove("prod")
        .expect("prod processed")
        .unwrap_or_else(|e| panic!("pass failed: {e}"))
}

fn reason_trailers(message: &str) -> Vec<String> {
    let mut reasons: Vec<String> = message
        .lines()
        .filter_map(|l| l.strip_prefix("Tollgate-Reason: "))
        .map(|s| s.trim().to_string())
        .collect();
    reasons.sort();
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_promotes_with_three_warned_reasons_and_blocks_the_same_evidence_in_enforce() {
    let ev = Evidence::start().await;
    let old = ev
        .store
        .push_test_image("acme/api", "1.0", &[("VERSION", b"1.0")])
        .await
        .unwrap();
    let repo = Repo::new(&format!("{}/acme/api:1.0@{old}", ev.host));
    let failing = CASES
        .iter()
        .map(|c| &c.failing[1..c.failing.len() - 1])
        .collect::<Vec<_>>()
        .join(", ");
    let failing = format!("{{{failing}}}");
    let mut expected: Vec<String> = CASES.iter().map(|c| c.reason.to_string()).collect();
    expected.sort();

    // warn: promoted, and every warned reason is on the promotion commit.
    let warn = repo.daemon(&ev, "warn", &failing);
    assert_eq!(
        pass(&warn).await,
        PassReport::default(),
        "the first pass takes a baseline"
    );
    let two = ev.image_with_all_evidence("2.0").await;
    let two_ref = format!("{}/acme/api:2.0@{two}", ev.host);
    let bump = repo.bump_staging(&two_ref);
    let r = pass(&warn).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (1, 0, 0), "{r:?}");
    assert_eq!(
        repo.remote(&["show", "main:clusters/prod/deployment.yaml"]),
        deployment(&two_ref)
    );
    let trailers = repo.remote(&["log", "-1", "--format=%(trailers:only,unfold)", "main"]);
    for t in [
        "Tollgate-Decision: allow".to_string(),
        "Tollgate-Mode: warn".to_string(),
        format!("Tollgate-Source: staging@{bump}"),
    ] {
        assert!(trailers.contains(&t), "missing `{t}` in:\n{trailers}");
    }
    assert_eq!(reason_trailers(&trailers), expected, "{trailers}");
    let body = repo.remote(&["log", "-1", "--format=%B", "main"]);
    for c in CASES {
        assert!(
            body.contains(&format!("warn  {}", c.reason)),
            "the message lists the warned `{}`:\n{body}",
            c.reason
        );
    }
    drop(warn);

    // enforce: the same kind of evidence blocks, prod stays, the note lists the three reasons.
    let enforce = repo.daemon(&ev, "enforce", &failing);
    let three = ev.image_with_all_evidence("3.0").await;
    let prod_before = repo.remote(&["rev-parse", "main:clusters/prod"]);
    let bump = repo.bump_staging(&format!("{}/acme/api:3.0@{three}", ev.host));
    let r = pass(&enforce).await;
    assert_eq!((r.promoted, r.blocked, r.deferred), (0, 1, 0), "{r:?}");
    assert_eq!(repo.remote(&["rev-parse", "main:clusters/prod"]), prod_before);
    let note = repo.note(&bump).expect("a block note on the staging commit");
    assert!(note.contains("Tollgate-Decision: block"), "{note}");
    assert!(note.contains("Tollgate-Mode: enforce"), "{note}");
    assert_eq!(reason_trailers(&note), expected, "{note}");
}
