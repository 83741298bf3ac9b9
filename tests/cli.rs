//! The `tollgate` binary as users run it: `demo`, `validate`, `attest` then `check`, `explain`.

mod support {
    pub mod registry;
}

use std::process::{Command, Output};

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("tollgate runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn demo_promotes_one_image_and_blocks_the_other_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let out = tollgate(&["demo", "--dir", dir.path().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("prod: 1 promoted, 1 blocked, 0 deferred"), "{stdout}");
    for trailer in [
        "Tollgate-Decision: allow",
        "Tollgate-Decision: block",
        "Tollgate-Reason: material-missing",
        "Tollgate-Policy: prod@sha256:",
    ] {
        assert!(stdout.contains(trailer), "missing {trailer}:\n{stdout}");
    }
    // What the demo printed is really in git: explain reads it back from the bare repository.
    let repo = dir.path().join("envs.git");
    let explained = tollgate(&["explain", "--repo", repo.to_str().unwrap(), "main"]);
    assert_eq!(explained.status.code(), Some(0), "{}", text(&explained.stderr));
    assert!(text(&explained.stdout).contains("Tollgate-Decision: allow"));
    let first = tollgate(&["explain", "--repo", repo.to_str().unwrap(), "main~3"]);
    assert_eq!(first.status.code(), Some(2), "the initial commit has no decision");
}

#[test]
fn validate_accepts_the_example_and_reports_errors_with_positions() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.yaml");
    let ok = tollgate(&["validate", "--config", example]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "version: 1\nrepositories:\n  envs: {url: file:///tmp/x}\ncontracts:\n  release: {materials: []}\npolicies:\n  prod: {contract: relase}\nenvironments:\n  prod: {repository: envs, path: p, promote_from: nowhere, policy: prod}\n",
    )
    .unwrap();
    let out = tollgate(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.yaml:7:") && err.contains("policies.prod.contract"),
        "{err}"
    );
    assert!(err.contains("environments.prod.promote_from"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attest_attaches_an_attestation_that_check_then_verifies() {
    let registry = support::registry::Registry::start();
    let host = registry.host();
    let store = tollgate::oci::RegistryStore::new(
        &host,
        &tollgate::config::Registry {
            insecure: true,
            ..Default::default()
        },
    )
    .unwrap();
    let digest = store
        .push_test_image("acme/api", "1.0", &[("VERSION", b"1")])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let key = tollgate::keys::SigningKey::generate();
    std::fs::write(dir.path().join("release.key"), key.to_pem()).unwrap();
    std::fs::write(dir.path().join("release.pub"), key.public_pem()).unwrap();
    std::fs::write(
        dir.path().join("sbom.json"),
        r#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[]}"#,
    )
    .unwrap();
    let config = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstate_dir: ./state\nrepositories:\n  envs: {{url: file:///nonexistent}}\nregistries:\n  \"{host}\": {{insecure: true}}\ntrust:\n  signers:\n    release-key: {{key: ./release.pub}}\ncontracts:\n  release:\n    materials:\n      - {{kind: SBOM_CYCLONEDX_JSON, signers: [release-key]}}\npolicies:\n  prod: {{contract: release, rules: {{digest_pinned: true}}}}\nenvironments:\n  staging: {{repository: envs, path: s}}\n  prod: {{repository: envs, path: p, promote_from: staging, policy: prod}}\n"
        ),
    )
    .unwrap();
    let image = format!("{host}/acme/api@{digest}");
    let cfg = config.to_str().unwrap();
    let before = tollgate(&["check", "--config", cfg, "--env", "prod", &image]);
    assert_eq!(before.status.code(), Some(1), "no SBOM yet: {}", text(&before.stdout));

    let key_path = dir.path().join("release.key");
    let sbom = dir.path().join("sbom.json");
    let attested = tollgate(&[
        "attest",
        "--key",
        key_path.to_str().unwrap(),
        "--predicate-type",
        "https://cyclonedx.org/bom",
        "--predicate",
        sbom.to_str().unwrap(),
        "--config",
        cfg,
        &image,
    ]);
    assert!(attested.status.success(), "{}", text(&attested.stderr));

    let after = tollgate(&["check", "--config", cfg, "--env", "prod", "--output", "json", &image]);
    assert_eq!(after.status.code(), Some(0), "{}", text(&after.stdout));
    let json: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(json["decision"]["kind"], "allow");
    assert_eq!(json["verified"]["materials"][0]["signer"]["signer"], "release-key");

    // Without a digest, attest refuses: a statement must name exactly one image.
    let tag_only = tollgate(&[
        "attest",
        "--key",
        key_path.to_str().unwrap(),
        "--predicate-type",
        "x",
        "--predicate",
        sbom.to_str().unwrap(),
        &format!("{host}/acme/api:1.0"),
    ]);
    assert_eq!(tag_only.status.code(), Some(2));
}

#[test]
fn replay_shows_which_past_promotions_a_stricter_policy_would_block() {
    let dir = tempfile::tempdir().unwrap();
    let out = tollgate(&["demo", "--dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.path().join("tollgate.yaml");
    let cfg = config.to_str().unwrap();

    let same = tollgate(&["replay", "--config", cfg, "--env", "prod"]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(
        text(&same.stdout).starts_with("1 promotions into prod replayed; 0 would now be blocked."),
        "{}",
        text(&same.stdout)
    );

    // Tighten the contract: an SPDX SBOM is now required too.
    let yaml = std::fs::read_to_string(&config).unwrap();
    let stricter = yaml.replace(
        "      - {kind: SBOM_CYCLONEDX_JSON, signers: [release-key]}\n",
        "      - {kind: SBOM_CYCLONEDX_JSON, signers: [release-key]}\n      - {kind: SBOM_SPDX_JSON, signers: [release-key]}\n",
    );
    assert_ne!(yaml, stricter, "the demo config changed shape; update this test");
    std::fs::write(&config, stricter).unwrap();
    let out = tollgate(&["replay", "--config", cfg, "--env", "prod", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["now"], "block");
    assert_eq!(rows[0]["reasons"], serde_json::json!(["material-missing"]));
    assert_ne!(
        rows[0]["recorded_policy"], rows[0]["policy_now"],
        "the policy digest moved with the policy"
    );
}
