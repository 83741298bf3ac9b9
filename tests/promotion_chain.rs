//! The build-to-promotion chain (SPEC §5) on real parts: dev → staging → prod in one bare repository
//! over `file://`, a real `docker-registry` on loopback. Staging signs a promotion attestation for
//! each allow; prod's `upstream` rule accepts a digest because of it, and blocks one that was
//! hand-edited into staging.

#[path = "support/cli_tools.rs"]
mod cli_tools;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/world.rs"]
mod world;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use tollgate::config;
use tollgate::daemon::{Daemon, PassReport};
use tollgate::gate::evidence::EvidenceStore as _;
use tollgate::gate::{promotion, verify, DecisionKind, MaterialKind};
use tollgate::image::{Digest, ImageRef};
use tollgate::keys::SigningKey;
use tollgate::oci::Stores;
use tollgate::pipeline::Gate;
use tollgate::telemetry::Metrics;
use world::{deployment, git, World};

fn config_text(w: &World) -> String {
    format!(
        r#"version: 1
state_dir: ./state
repositories:
  envs: {{url: "{url}", branch: main, author: {{name: tollgate, email: tollgate@example.invalid}}}}
registries:
  "{host}": {{insecure: true}}
trust:
  signers:
    ci-key: {{key: ./ci-key.pub}}
    staging-promoter: {{key: ./promotion.pub}}
contracts:
  release:
    materials:
      - {{kind: SLSA_PROVENANCE, signers: [ci-key]}}
      - {{kind: SBOM_CYCLONEDX_JSON, signers: [ci-key]}}
  promoted-release:
    materials:
      - {{kind: SLSA_PROVENANCE, signers: [ci-key]}}
      - {{kind: SBOM_CYCLONEDX_JSON, signers: [ci-key]}}
      - {{kind: PROMOTION, signers: [staging-promoter]}}
policies:
  staging: {{contract: release, mode: enforce, rules: {{digest_pinned: true}}}}
  prod: {{contract: promoted-release, mode: enforce, rules: {{digest_pinned: true, upstream: {{environment: staging, soak: 0s}}}}}}
environments:
  dev: {{repository: envs, path: clusters/dev}}
  staging: {{repository: envs, path: clusters/staging, promote_from: dev, policy: staging, attest_promotions: {{key: ./promotion.key}}}}
  prod: {{repository: envs, path: clusters/prod, promote_from: staging, policy: prod}}
"#,
        url = w.url(),
        host = w.host,
    )
}

/// The shared World (staging and prod folders) plus a dev folder and the staging promoter's key pair.
fn setup(w: &World) -> config::Config {
    let initial = std::fs::read_to_string(w.work.join("clusters/staging/deployment.yaml")).unwrap();
    std::fs::create_dir_all(w.work.join("clusters/dev")).unwrap();
    std::fs::write(w.work.join("clusters/dev/deployment.yaml"), initial).unwrap();
    git(&w.work, &["add", "-A"]);
    git(&w.work, &["commit", "-q", "-m", "add dev"]);
    git(&w.work, &["push", "-q", "origin", "HEAD:main"]);
    let key = SigningKey::generate();
    std::fs::write(w.dir.path().join("promotion.key"), key.to_pem()).unwrap();
    std::fs::write(w.dir.path().join("promotion.pub"), key.public_pem()).unwrap();
    let path = w.dir.path().join("tollgate.yaml");
    std::fs::write(&path, config_text(w)).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn daemon(config: config::Config) -> Daemon {
    let stores = Stores::from_config(&config).unwrap();
    let gate = Gate {
        config: Arc::new(config),
        stores,
        metrics: Arc::new(Metrics::new()),
    };
    Daemon::open(Arc::new(gate)).unwrap()
}

/// Commits `reference` into `env`'s folder by hand (as image automation, or a person, would).
fn bump(w: &World, env: &str, reference: &str) -> String {
    git(&w.work, &["pull", "-q", "--rebase", "origin", "main"]);
    std::fs::write(
        w.work.join(format!("clusters/{env}/deployment.yaml")),
        deployment(reference),
    )
    .unwrap();
    git(&w.work, &["commit", "-q", "-am", &format!("bump {env} to {reference}")]);
    git(&w.work, &["push", "-q", "origin", "HEAD:main"]);
    git(&w.work, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Passes until nothing more happens (a promotion into staging becomes prod's candidate in the
/// same or the next pass); the sum of the reports per environment.
async fn settle(d: &Daemon) -> (PassReport, PassReport) {
    let (mut staging, mut prod) = (PassReport::default(), PassReport::default());
    for _ in 0..3 {
        let mut r = d.pass().await;
        let s = r.remove("staging").unwrap().unwrap_or_else(|e| panic!("{e}"));
        let p = r.remove("prod").unwrap().unwrap_or_else(|e| panic!("{e}"));
        if s == PassReport::default() && p == PassReport::default() {
            break;
        }
        for (sum, one) in [(&mut staging, s), (&mut prod, p)] {
            sum.promoted += one.promoted;
            sum.blocked += one.blocked;
            sum.deferred += one.deferred;
            sum.skipped += one.skipped;
        }
    }
    (staging, prod)
}

fn file_on_main(bare: &Path, env: &str) -> String {
    git(bare, &["show", &format!("main:clusters/{env}/deployment.yaml")])
}

/// The newest commit on main whose subject starts with `promote(<env>)`.
fn promotion_commit(bare: &Path, env: &str) -> String {
    git(
        bare,
        &["log", "-1", "--format=%H", &format!("--grep=^promote({env})"), "main"],
    )
    .trim()
    .to_string()
}

fn note(bare: &Path, commit: &str) -> Option<String> {
    let out = Command::new("git")
        .current_dir(bare)
        .args(["notes", "--ref=tollgate", "show", commit])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn digest_of(reference: &str) -> Digest {
    ImageRef::parse(reference).unwrap().digest.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_attests_its_promotion_and_prod_promotes_on_it_but_blocks_a_hand_edit() {
    let w = World::new().await;
    let config = setup(&w);
    let trust = config.trust.clone();
    let d = daemon(config);
    assert_eq!(
        settle(&d).await,
        (PassReport::default(), PassReport::default()),
        "baseline only"
    );

    // dev → staging: promoted, with a signed promotion attestation in the registry.
    let release = w.release().await;
    let digest = digest_of(&release);
    let dev_commit = bump(&w, "dev", &release);
    let (staging, prod) = settle(&d).await;
    assert_eq!(staging.promoted, 1, "{staging:?}");
    let staging_commit = promotion_commit(&w.bare, "staging");
    assert!(!staging_commit.is_empty());
    assert!(file_on_main(&w.bare, "staging").contains(&digest.to_string()));

    let evidence = w.store.fetch(&w.image(), &digest).await.unwrap();
    let verified = verify::verify(&evidence, &digest, &trust);
    let promotions: Vec<_> = verified
        .materials
        .iter()
        .filter(|m| m.kind == MaterialKind::Promotion)
        .collect();
    assert_eq!(promotions.len(), 1, "{verified:#?}");
    assert_eq!(promotions[0].signer.signer, "staging-promoter");
    let attested = promotion::attested(&verified.materials, &["staging-promoter".to_string()]);
    let p = &attested[0].predicate;
    assert_eq!(p.environment, "staging");
    assert_eq!(
        (p.source.environment.as_str(), p.source.commit.as_str()),
        ("dev", dev_commit.as_str())
    );
    assert_eq!(p.promotion.commit, staging_commit);
    assert_eq!(p.promotion.branch, "main");
    assert_eq!(p.promotion.repository, w.url());
    assert_eq!((p.policy.name.as_str(), p.policy.mode.as_str()), ("staging", "enforce"));
    assert_eq!(p.decision, DecisionKind::Allow);
    let kinds: Vec<&str> = p.evidence.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    assert!(kinds.contains(&"SLSA_PROVENANCE") && kinds.contains(&"SBOM_CYCLONEDX_JSON"));
    // Only the CI key's envelopes, never the promotion itself: it did not exist yet.
    assert!(!kinds.contains(&"PROMOTION"));

    // staging → prod: the attestation satisfies both the contract and the upstream rule.
    assert_eq!(prod.promoted, 1, "{prod:?}: {:?}", note(&w.bare, &staging_commit));
    let prod_commit = promotion_commit(&w.bare, "prod");
    assert!(file_on_main(&w.bare, "prod").contains(&digest.to_string()));
    let message = git(&w.bare, &["log", "-1", "--format=%B", &prod_commit]);
    assert!(message.contains("Tollgate-Decision: allow"), "{message}");
    let envelope = &attested[0].envelope;
    assert!(
        message.contains(&format!("Tollgate-Evidence: PROMOTION {envelope}")),
        "prod records the staging promotion it relied on: {message}"
    );

    // A digest edited into staging by hand (evidence complete, but never promoted by tollgate).
    let sneaky = w.release().await;
    let sneaky_commit = bump(&w, "staging", &sneaky);
    let (staging, prod) = settle(&d).await;
    assert_eq!(staging.promoted, 0, "{staging:?}");
    assert_eq!((prod.promoted, prod.blocked), (0, 1), "{prod:?}");
    let note = note(&w.bare, &sneaky_commit).expect("a block note on the hand edit");
    assert!(note.contains("Tollgate-Decision: block"), "{note}");
    assert!(note.contains("Tollgate-Reason: upstream-not-promoted"), "{note}");
    assert!(!file_on_main(&w.bare, "prod").contains(&digest_of(&sneaky).to_string()));
}
