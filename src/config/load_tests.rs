//! Tests for the configuration loader: the shipped example, defaults, path resolution, durations,
//! and one scenario per class of error, asserting key path, line and column.

use super::*;
use crate::config::{
    Author, ChainloopRule, CommitSigning, GitAuth, Mode, RegistryAuth, Signer, SubjectMatch, WriteMode,
};
use crate::keys::SigningKey;

/// A folder holding the files a configuration refers to, and `tollgate.yaml` beside them.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("keys/cosign.pub"), key.public_pem()).unwrap();
        std::fs::write(dir.path().join("keys/promotion.key"), key.to_pem()).unwrap();
        std::fs::write(
            dir.path().join("trusted_root.json"),
            r#"{"mediaType": "x", "tlogs": []}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("policies/prod.rego"),
            "package tollgate\n\nresult := {}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("policies/main.rego"), "package main\n\nresult := {}\n").unwrap();
        std::fs::write(dir.path().join("not-json.json"), "{nope").unwrap();
        std::fs::write(dir.path().join("not-a-key.pub"), "hello\n").unwrap();
        // Files that are only read when the daemon runs (secrets, CA and known_hosts files); validation
        // checks that they exist and can be read.
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        for (file, content) in [
            ("secrets/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n"),
            ("secrets/token", "s3cret\n"),
            ("pw", "hunter2\n"),
            ("certs/ca.pem", "-----BEGIN CERTIFICATE-----\n"),
            ("keys/sign", "-----BEGIN OPENSSH PRIVATE KEY-----\n"),
            ("known_hosts", "git.example ssh-ed25519 AAAA\n"),
            ("blank", " \n"),
        ] {
            std::fs::write(dir.path().join(file), content).unwrap();
        }
        Fixture { dir }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("tollgate.yaml")
    }

    fn parse(&self, yaml: &str) -> Result<Config, ConfigError> {
        parse(yaml, &self.config_path())
    }

    fn ok(&self, yaml: &str) -> Config {
        match self.parse(yaml) {
            Ok(c) => c,
            Err(e) => panic!("expected a valid config, got:\n{e}"),
        }
    }

    fn diags(&self, yaml: &str) -> Vec<Diagnostic> {
        match self.parse(yaml) {
            Ok(_) => panic!("expected errors, the config validated:\n{yaml}"),
            Err(e) => e.diagnostics().to_vec(),
        }
    }

    /// The single diagnostic at `key_path`, with its position and message.
    fn diag(&self, yaml: &str, key_path: &str) -> (usize, usize, String) {
        let all = self.diags(yaml);
        let found: Vec<&Diagnostic> = all.iter().filter(|d| d.key_path == key_path).collect();
        match found.as_slice() {
            [d] => (d.line, d.column, d.message.clone()),
            _ => panic!("expected one diagnostic at {key_path}, got:\n{}", display_lines(&all)),
        }
    }
}

/// Where `needle` starts on 1-based `line` of `yaml`: the position a diagnostic should point at.
fn pos(yaml: &str, line: usize, needle: &str) -> (usize, usize) {
    let text = yaml.lines().nth(line - 1).unwrap();
    (line, text.find(needle).unwrap() + 1)
}

fn lines(ls: &[&str]) -> String {
    let mut s = ls.join("\n");
    s.push('\n');
    s
}

/// A valid configuration touching every section; tests edit single lines of it.
fn full() -> Vec<&'static str> {
    vec![
        "version: 1",                                                        // 1
        "repositories:",                                                     // 2
        "  envs:",                                                           // 3
        "    url: https://git.example.com/envs.git",                         // 4
        "trust:",                                                            // 5
        "  trusted_root: trusted_root.json",                                 // 6
        "  signers:",                                                        // 7
        "    release-key: {key: keys/cosign.pub}",                           // 8
        "    ci:",                                                           // 9
        "      keyless: {issuer: https://issuer.example, subject: ci@acme}", // 10
        "contracts:",                                                        // 11
        "  release:",                                                        // 12
        "    materials:",                                                    // 13
        "      - {kind: IMAGE_SIGNATURE, signers: [release-key, ci]}",       // 14
        "      - {kind: SBOM_SPDX_JSON, signers: [ci]}",                     // 15
        "policies:",                                                         // 16
        "  prod:",                                                           // 17
        "    contract: release",                                             // 18
        "    rules: {upstream: {environment: staging}}",                     // 19
        "environments:",                                                     // 20
        "  staging: {repository: envs, path: clusters/staging}",             // 21
        "  prod:",                                                           // 22
        "    repository: envs",                                              // 23
        "    path: /clusters/prod/",                                         // 24
        "    promote_from: staging",                                         // 25
        "    policy: prod",                                                  // 26
    ]
}

fn with(line: usize, text: &'static str) -> String {
    let mut ls = full();
    ls[line - 1] = text;
    lines(&ls)
}

// ----- the example and the happy path -----

#[test]
fn the_shipped_example_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tollgate.yaml");
    let config = match load(&path) {
        Ok(c) => c,
        Err(e) => panic!("config/tollgate.yaml does not validate:\n{e}"),
    };
    assert_eq!(config.source, path);
    assert_eq!(config.listen.to_string(), "127.0.0.1:9464");
    let envs = &config.repositories["envs"];
    let GitAuth::Token { token_file } = &envs.auth else {
        panic!("expected token auth, got {:?}", envs.auth)
    };
    assert!(token_file.ends_with("example/git-token") && token_file.exists());
    assert!(envs.webhook_secret_file.as_ref().is_some_and(|f| f.exists()));
    assert_eq!(envs.author.email, "tollgate@example.com");
    assert!(config.registries["127.0.0.1:5000"].insecure);
    assert!(matches!(
        config.registries["ghcr.io"].auth,
        RegistryAuth::DockerConfig { .. }
    ));
    assert!(config.registries["registry.internal.example"].oci_layout.is_some());
    let root = config.trust.trusted_root.as_ref().unwrap();
    assert!(root.is_absolute() && root.exists(), "{}", root.display());
    assert!(matches!(config.trust.signers["release-key"], Signer::Key { .. }));
    assert!(matches!(
        &config.trust.signers["github-release"],
        Signer::Keyless {
            subject: SubjectMatch::Regex(_),
            ..
        }
    ));
    let materials = &config.contracts["release"].materials;
    assert_eq!(materials.len(), 5);
    assert!(materials[3].optional);
    assert_eq!(
        materials[4].predicate_type.as_deref(),
        Some("https://example.com/load-test/v1")
    );
    let prod = &config.policies["prod"];
    assert_eq!(prod.rules.max_vulnerabilities.as_ref().unwrap()["high"], 3);
    assert_eq!(prod.rules.upstream.as_ref().unwrap().soak, Duration::from_secs(30 * 60));
    assert!(prod.rules.rego.iter().all(|p| p.is_absolute() && p.exists()));
    assert_eq!(prod.waivers.as_deref(), Some(".tollgate/waivers.yaml"));
    let env = &config.environments["prod"];
    assert_eq!(env.write, WriteMode::Direct);
    assert!(env.attest_promotions.as_ref().is_some_and(|p| p.exists()));
    assert_eq!(config.promotion_targets().len(), 1);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let fx = Fixture::new();
    let config = fx.ok(&lines(&full()));
    assert_eq!(config.listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/tollgate"));
    let repo = &config.repositories["envs"];
    assert_eq!(repo.branch, "main");
    assert_eq!(repo.poll_interval, Duration::from_secs(30));
    assert_eq!(repo.auth, GitAuth::None);
    assert_eq!(
        repo.author,
        Author {
            name: "tollgate".into(),
            email: "tollgate@localhost".into()
        }
    );
    assert_eq!(repo.webhook_secret_file, None);
    let policy = &config.policies["prod"];
    assert_eq!(policy.mode, Mode::Enforce);
    assert!(!policy.rules.digest_pinned && policy.rules.rego.is_empty());
    assert_eq!(policy.rules.upstream.as_ref().unwrap().soak, Duration::ZERO);
    let prod = &config.environments["prod"];
    assert_eq!(prod.write, WriteMode::Direct);
    assert_eq!(prod.path, "clusters/prod", "leading and trailing '/' are dropped");
    assert!(!config.contracts["release"].materials[0].optional);

    let bare = fx.ok("version: 1\n");
    assert!(bare.repositories.is_empty() && bare.environments.is_empty() && bare.trust.trusted_root.is_none());
    let empty_sections = fx.ok("version: 1\nregistries:\nrepositories: {}\n");
    assert!(empty_sections.registries.is_empty());
}

#[test]
fn relative_paths_resolve_against_the_config_folder_and_come_back_absolute() {
    let fx = Fixture::new();
    let yaml = lines(&[
        "version: 1",
        "state_dir: state",
        "repositories:",
        "  envs: {url: 'git@git.example.com:envs.git', auth: {ssh_key_file: ./secrets/id_ed25519}}",
        "registries:",
        "  localhost:5000: {insecure: true, oci_layout: layouts/local}",
        "trust:",
        "  trusted_root: ./trusted_root.json",
        "  signers: {k: {key: keys/../keys/cosign.pub}}",
    ]);
    let config = fx.ok(&yaml);
    let base = fx.dir.path();
    assert_eq!(config.state_dir, base.join("state"));
    assert_eq!(
        config.repositories["envs"].auth,
        GitAuth::SshKey {
            ssh_key_file: base.join("secrets/id_ed25519")
        }
    );
    assert_eq!(
        config.registries["localhost:5000"].oci_layout,
        Some(base.join("layouts/local"))
    );
    assert_eq!(config.trust.trusted_root, Some(base.join("trusted_root.json")));
    let Signer::Key { path, .. } = &config.trust.signers["k"] else {
        panic!("not a key signer")
    };
    assert!(path.is_absolute() && path.ends_with("keys/cosign.pub"));

    // A config path given relative to the working directory still yields absolute paths.
    let config = parse("version: 1\nstate_dir: s\n", Path::new("tollgate.yaml")).unwrap();
    assert!(config.state_dir.is_absolute());
    assert_eq!(config.state_dir, std::env::current_dir().unwrap().join("s"));
}

#[test]
fn durations_accept_units_and_combinations() {
    let fx = Fixture::new();
    for (text, secs) in [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("2h 5m", 7500)] {
        let yaml = format!("version: 1\nrepositories:\n  r: {{url: 'file:///srv/r', poll_interval: {text}}}\n");
        let config = fx.ok(&yaml);
        assert_eq!(
            config.repositories["r"].poll_interval,
            Duration::from_secs(secs),
            "{text}"
        );
    }
    let at = |v: &str| {
        let yaml = format!("version: 1\nrepositories:\n  r: {{url: 'file:///srv/r', poll_interval: {v}}}\n");
        fx.diag(&yaml, "repositories.r.poll_interval")
    };
    let (line, col, msg) = at("30");
    assert_eq!((line, col), (3, 44));
    assert!(msg.contains("no unit") && msg.contains("30s"), "{msg}");
    assert!(at("soon").2.contains("invalid duration \"soon\""));
    assert!(at("0s").2.contains("longer than zero"));
    assert!(at("[1m]").2.contains("found a list"));
}

// ----- one scenario per class of error -----

#[test]
fn unknown_contract_is_reported_where_it_is_named() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(&with(18, "    contract: relase"), "policies.prod.contract");
    assert_eq!((line, col), (18, 15));
    assert_eq!(msg, "unknown contract \"relase\"; expected one of: release");
    let text = fx.parse(&with(18, "    contract: relase")).unwrap_err().to_string();
    let expected = format!(
        "{}:18:15: policies.prod.contract: unknown contract \"relase\"; expected one of: release",
        fx.config_path().display()
    );
    assert_eq!(text, expected);
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(&lines(&["version: 1", "lisen: 0.0.0.0:1"]), "lisen");
    assert_eq!((line, col), (2, 1));
    assert!(
        msg.starts_with("unknown key \"lisen\"; expected one of: version, listen,"),
        "{msg}"
    );

    let (line, col, _) = fx.diag(
        &with(4, "    url: https://x/envs.git\n    brnach: main"),
        "repositories.envs.brnach",
    );
    assert_eq!((line, col), (5, 5));

    let (line, col, msg) = fx.diag(
        &with(19, "    rules: {digest_pined: true}"),
        "policies.prod.rules.digest_pined",
    );
    assert_eq!((line, col), (19, 13));
    assert!(msg.contains("unknown rule") && msg.contains("digest_pinned"), "{msg}");

    let yaml = with(15, "      - {kind: SBOM_SPDX_JSON, signers: [ci], optinal: true}");
    let (line, col, msg) = fx.diag(&yaml, "contracts.release.materials[1].optinal");
    assert_eq!((line, col), pos(&yaml, 15, "optinal"));
    assert!(msg.contains("kind, name, predicate_type, signers, optional"), "{msg}");
}

#[test]
fn wrong_types_say_what_was_expected_and_what_was_found() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(&with(4, "    url: [https://x]"), "repositories.envs.url");
    assert_eq!((line, col), (4, 10));
    assert!(
        msg.contains("expected a git URL") && msg.contains("found a list"),
        "{msg}"
    );

    let yaml = lines(&["version: 1", "registries:", "  localhost: {insecure: 'yes'}"]);
    let (line, col, msg) = fx.diag(&yaml, "registries.localhost.insecure");
    assert_eq!((line, col), pos(&yaml, 3, "'yes'"));
    assert_eq!(msg, "expected true or false, found the string \"yes\"");

    let (_, _, msg) = fx.diag(
        &with(19, "    rules: {sarif_max_errors: -1}"),
        "policies.prod.rules.sarif_max_errors",
    );
    assert!(msg.contains("whole number"), "{msg}");

    let (line, col, msg) = fx.diag("version: 1\ncontracts:\n  release: [a]\n", "contracts.release");
    assert_eq!((line, col), (3, 12));
    assert!(
        msg.starts_with("expected a mapping with keys materials, found a list"),
        "{msg}"
    );
}

#[test]
fn version_is_required_and_must_be_1() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag("listen: 127.0.0.1:1\n", "version");
    assert_eq!((line, col), (1, 1));
    assert!(msg.contains("missing required key"), "{msg}");
    let (line, col, msg) = fx.diag("version: 2\n", "version");
    assert_eq!((line, col), (1, 10));
    assert_eq!(msg, "unsupported version the number 2; expected 1");
    let all = fx.diags("");
    assert!(all[0].message.contains("empty"), "{}", all[0]);
}

#[test]
fn insecure_registries_must_be_loopback() {
    let fx = Fixture::new();
    let yaml = lines(&[
        "version: 1",
        "registries:",
        "  \"registry.example.com:5000\": {insecure: true}",
    ]);
    let (line, col, msg) = fx.diag(&yaml, "registries.\"registry.example.com:5000\".insecure");
    assert_eq!((line, col), pos(&yaml, 3, "true"));
    assert!(msg.contains("plain HTTP is refused"), "{msg}");

    for host in [
        "localhost",
        "localhost:5000",
        "127.0.0.1",
        "127.1.2.3:5000",
        "\"::1\"",
        "\"[::1]:5000\"",
    ] {
        let yaml = format!("version: 1\nregistries:\n  {host}: {{insecure: true}}\n");
        fx.ok(&yaml);
    }
    for host in ["\"10.0.0.1:5000\"", "\"[::2]:5000\"", "localhost.example.com"] {
        let yaml = format!("version: 1\nregistries:\n  {host}: {{insecure: true}}\n");
        assert!(fx.parse(&yaml).is_err(), "{host} should be refused");
    }
    let (line, col, msg) = fx.diag(
        "version: 1\nregistries:\n  https://ghcr.io: {}\n",
        "registries.\"https://ghcr.io\"",
    );
    assert_eq!((line, col), (3, 3));
    assert!(msg.contains("no scheme"), "{msg}");
}

#[test]
fn trusted_root_must_exist_and_be_json() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(&with(6, "  trusted_root: missing.json"), "trust.trusted_root");
    assert_eq!((line, col), (6, 17));
    assert!(msg.contains("missing.json does not exist"), "{msg}");
    let (_, _, msg) = fx.diag(&with(6, "  trusted_root: not-json.json"), "trust.trusted_root");
    assert!(msg.contains("is not valid JSON"), "{msg}");

    // Keyless signers need a root: without one, each keyless signer is named.
    let (line, col, msg) = fx.diag(&with(6, "  # no root"), "trust.signers.ci");
    assert_eq!((line, col), (9, 5));
    assert!(msg.contains("trust.trusted_root"), "{msg}");
}

#[test]
fn signer_keys_must_exist_and_parse_and_the_error_names_the_file() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(
        &with(8, "    release-key: {key: keys/nope.pub}"),
        "trust.signers.release-key.key",
    );
    assert_eq!((line, col), (8, 24));
    assert!(msg.contains("keys/nope.pub does not exist"), "{msg}");
    let (_, _, msg) = fx.diag(
        &with(8, "    release-key: {key: not-a-key.pub}"),
        "trust.signers.release-key.key",
    );
    assert!(msg.contains("not-a-key.pub") && msg.contains("PEM"), "{msg}");
    // A broken definition does not also make every use of the signer "unknown".
    let all = fx.diags(&with(8, "    release-key: {key: not-a-key.pub}"));
    assert_eq!(all.len(), 1, "{}", display_lines(&all));
}

#[test]
fn keyless_signers_need_exactly_one_valid_identity() {
    let fx = Fixture::new();
    let both = with(10, "      keyless: {issuer: https://i, subject: a, subject_regex: b}");
    let (line, col, msg) = fx.diag(&both, "trust.signers.ci.keyless.subject_regex");
    assert_eq!((line, col), (10, 63));
    assert!(msg.contains("not both"), "{msg}");

    let neither = with(10, "      keyless: {issuer: https://i}");
    let (line, col, msg) = fx.diag(&neither, "trust.signers.ci.keyless");
    assert_eq!((line, col), (10, 16));
    assert!(msg.contains("subject"), "{msg}");

    let bad = with(10, "      keyless: {issuer: https://i, subject_regex: '^(unclosed'}");
    let (line, col, msg) = fx.diag(&bad, "trust.signers.ci.keyless.subject_regex");
    assert_eq!((line, col), (10, 51));
    assert!(msg.starts_with("invalid regular expression"), "{msg}");

    let no_issuer = with(10, "      keyless: {subject: a}");
    let (_, _, msg) = fx.diag(&no_issuer, "trust.signers.ci.keyless.issuer");
    assert!(msg.contains("missing required key"), "{msg}");

    let key_and_keyless = with(
        8,
        "    release-key: {key: keys/cosign.pub, keyless: {issuer: i, subject: s}}",
    );
    let (_, _, msg) = fx.diag(&key_and_keyless, "trust.signers.release-key.keyless");
    assert!(msg.contains("cannot be combined"), "{msg}");
}

#[test]
fn materials_are_checked_for_kind_predicate_type_and_signers() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(
        &with(15, "      - {kind: SBOM, signers: [ci]}"),
        "contracts.release.materials[1].kind",
    );
    assert_eq!((line, col), (15, 16));
    assert!(msg.starts_with("unknown material kind \"SBOM\"; expected one of: IMAGE_SIGNATURE, SLSA_PROVENANCE"));

    let (line, col, msg) = fx.diag(
        &with(15, "      - {kind: ATTESTATION, signers: [ci]}"),
        "contracts.release.materials[1].predicate_type",
    );
    assert_eq!((line, col), (15, 16));
    assert!(msg.contains("required for kind ATTESTATION"), "{msg}");

    let yaml = with(
        14,
        "      - {kind: IMAGE_SIGNATURE, signers: [release-key, releas-key]}",
    );
    let (line, col, msg) = fx.diag(&yaml, "contracts.release.materials[0].signers[1]");
    assert_eq!((line, col), pos(&yaml, 14, "releas-key]"));
    assert_eq!(msg, "unknown signer \"releas-key\"; expected one of: ci, release-key");

    let yaml = with(15, "      - {kind: SBOM_SPDX_JSON, signers: []}");
    let (line, col, msg) = fx.diag(&yaml, "contracts.release.materials[1].signers");
    assert_eq!((line, col), pos(&yaml, 15, "[]"));
    assert!(msg.contains("at least one"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(15, "      - {kind: SBOM_SPDX_JSON}"),
        "contracts.release.materials[1].signers",
    );
    assert!(msg.contains("missing required key"), "{msg}");
}

#[test]
fn policies_are_checked_for_mode_rules_and_rego_files() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(
        &with(18, "    contract: release\n    mode: audit"),
        "policies.prod.mode",
    );
    assert_eq!((line, col), (19, 11));
    assert_eq!(msg, "unknown mode \"audit\"; expected one of: enforce, warn");

    let yaml = with(19, "    rules: {max_vulnerabilities: {critical: 0, severe: 1}}");
    let (line, col, msg) = fx.diag(&yaml, "policies.prod.rules.max_vulnerabilities.severe");
    assert_eq!((line, col), pos(&yaml, 19, "severe"));
    assert_eq!(
        msg,
        "unknown severity \"severe\"; expected one of: critical, high, medium, low, unknown"
    );

    let yaml = with(19, "    rules: {rego: [policies/prod.rego, policies/nope.rego]}");
    let (line, col, msg) = fx.diag(&yaml, "policies.prod.rules.rego[1]");
    assert_eq!((line, col), pos(&yaml, 19, "policies/nope.rego"));
    assert!(msg.contains("policies/nope.rego does not exist"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(19, "    rules: {rego: [policies/main.rego]}"),
        "policies.prod.rules.rego[0]",
    );
    assert!(msg.contains("does not declare `package tollgate`"), "{msg}");

    let yaml = with(19, "    rules: {upstream: {environment: stagin}}");
    let (line, col, msg) = fx.diag(&yaml, "policies.prod.rules.upstream.environment");
    assert_eq!((line, col), pos(&yaml, 19, "stagin"));
    assert_eq!(msg, "unknown environment \"stagin\"; expected one of: prod, staging");

    let (_, _, msg) = fx.diag(
        &with(19, "    rules: {provenance: {source_repo: 'a[b'}}"),
        "policies.prod.rules.provenance.source_repo",
    );
    assert!(msg.starts_with("invalid glob pattern"), "{msg}");

    let (_, _, msg) = fx.diag(&with(19, "    waivers: /etc/waivers.yaml"), "policies.prod.waivers");
    assert!(msg.contains("relative path inside the environment repository"), "{msg}");

    let config = fx.ok(&with(
        19,
        "    rules: {digest_pinned: true, chainloop: {}, provenance: {builder_id: 'https://github.com/*'}}",
    ));
    let rules = &config.policies["prod"].rules;
    assert!(rules.digest_pinned);
    assert_eq!(
        rules.chainloop,
        Some(ChainloopRule {
            require_not_blocked: true
        })
    );
    assert_eq!(rules.provenance.as_ref().unwrap().source_repo, None);
}

#[test]
fn environments_are_checked_for_references_and_write_modes() {
    let fx = Fixture::new();
    let (line, col, msg) = fx.diag(&with(23, "    repository: env"), "environments.prod.repository");
    assert_eq!((line, col), (23, 17));
    assert_eq!(msg, "unknown repository \"env\"; expected one of: envs");

    let (line, col, msg) = fx.diag(
        &with(25, "    promote_from: stagging"),
        "environments.prod.promote_from",
    );
    assert_eq!((line, col), (25, 19));
    assert!(msg.starts_with("unknown environment \"stagging\""), "{msg}");

    let (line, col, msg) = fx.diag(&with(26, "    # no policy"), "environments.prod.policy");
    assert_eq!((line, col), (22, 3));
    assert!(msg.contains("needs a policy"), "{msg}");

    let (line, col, msg) = fx.diag(&with(26, "    policy: pord"), "environments.prod.policy");
    assert_eq!((line, col), (26, 13));
    assert_eq!(msg, "unknown policy \"pord\"; expected one of: prod");

    let (line, col, msg) = fx.diag(
        &with(26, "    policy: prod\n    write: {mode: branch}"),
        "environments.prod.write.branch",
    );
    assert_eq!((line, col), (27, 12));
    assert!(msg.contains("missing required key"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(
            26,
            "    policy: prod\n    write: {mode: branch, branch: 'promote/{environment}'}",
        ),
        "environments.prod.write.branch",
    );
    assert!(msg.contains("unknown placeholder {environment}"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(26, "    policy: prod\n    write: {mode: pr}"),
        "environments.prod.write.mode",
    );
    assert_eq!(msg, "unknown write mode \"pr\"; expected one of: direct, branch");

    let (line, col, msg) = fx.diag(
        &with(26, "    policy: prod\n    attest_promotions: {key: keys/none.key}"),
        "environments.prod.attest_promotions.key",
    );
    assert_eq!((line, col), (27, 30));
    assert!(msg.contains("keys/none.key does not exist"), "{msg}");

    let (_, _, msg) = fx.diag(&with(24, "    path: clusters/../secrets"), "environments.prod.path");
    assert!(msg.contains("without `..`"), "{msg}");

    let config = fx.ok(&with(
        26,
        "    policy: prod\n    write: {mode: branch, branch: 'tollgate/promote/{env}/{image}'}\n    attest_promotions: {key: keys/promotion.key}",
    ));
    let prod = &config.environments["prod"];
    assert_eq!(
        prod.write,
        WriteMode::Branch {
            branch: "tollgate/promote/{env}/{image}".into()
        }
    );
    assert_eq!(prod.attest_promotions, Some(fx.dir.path().join("keys/promotion.key")));
}

#[test]
fn promotion_cycles_are_named() {
    let fx = Fixture::new();
    let yaml = with(21, "  staging: {repository: envs, promote_from: prod, policy: prod}");
    let (line, col, msg) = fx.diag(&yaml, "environments.prod.promote_from");
    assert_eq!((line, col), (25, 19));
    assert!(msg.starts_with("promotion cycle: prod -> staging -> prod"), "{msg}");
    // Reported once, not once per environment in the cycle.
    assert_eq!(fx.diags(&yaml).len(), 1);

    let (_, _, msg) = fx.diag(&with(25, "    promote_from: prod"), "environments.prod.promote_from");
    assert!(msg.starts_with("promotion cycle: prod -> prod"), "{msg}");

    // Found even when the environments in it have other errors.
    let broken = "version: 1\nenvironments:\n  a: {promote_from: b}\n  b: {promote_from: a}\n";
    let (_, _, msg) = fx.diag(broken, "environments.a.promote_from");
    assert!(msg.starts_with("promotion cycle: a -> b -> a"), "{msg}");

    let three = lines(&[
        "version: 1",
        "repositories: {r: {url: 'file:///r'}}",
        "contracts: {c: {materials: []}}",
        "policies: {p: {contract: c}}",
        "environments:",
        "  a: {repository: r, promote_from: c, policy: p}",
        "  b: {repository: r, promote_from: a, policy: p}",
        "  c: {repository: r, promote_from: b, policy: p}",
        "  d: {repository: r, promote_from: c, policy: p}",
    ]);
    let (line, col, msg) = fx.diag(&three, "environments.a.promote_from");
    assert!(
        msg.ends_with("a promotion chain must start at an environment without promote_from"),
        "{msg}"
    );
    assert_eq!((line, col), pos(&three, 6, "c, policy"));
    assert!(msg.starts_with("promotion cycle: a -> b -> c -> a"), "{msg}");
}

#[test]
fn git_and_registry_auth_take_exactly_one_shape() {
    let fx = Fixture::new();
    let yaml = with(
        4,
        "    url: https://x/envs.git\n    auth: {token_file: t, ssh_key_file: k}",
    );
    let (line, col, msg) = fx.diag(&yaml, "repositories.envs.auth.ssh_key_file");
    assert_eq!((line, col), (5, 27));
    assert!(msg.contains("cannot be combined with token_file"), "{msg}");

    let yaml = with(4, "    url: https://x/envs.git\n    auth: {username: bot}");
    let (_, _, msg) = fx.diag(&yaml, "repositories.envs.auth.password_file");
    assert!(msg.contains("missing required key"), "{msg}");

    let config = fx.ok(&with(
        4,
        "    url: https://x/envs.git\n    auth: {username: bot, password_file: pw}",
    ));
    assert_eq!(
        config.repositories["envs"].auth,
        GitAuth::Basic {
            username: "bot".into(),
            password_file: fx.dir.path().join("pw")
        }
    );

    let yaml = "version: 1\nregistries:\n  ghcr.io: {auth: {}}\n";
    let (line, col, msg) = fx.diag(yaml, "registries.\"ghcr.io\".auth");
    assert_eq!((line, col), (3, 19));
    assert!(
        msg.contains("{username, password_file} or {token_file} or {docker_config}"),
        "{msg}"
    );
    let config = fx.ok("version: 1\nregistries:\n  ghcr.io: {auth: {token_file: secrets/token}}\n");
    assert_eq!(
        config.registries["ghcr.io"].auth,
        RegistryAuth::Bearer {
            token_file: fx.dir.path().join("secrets/token")
        }
    );
}

#[test]
fn transport_trust_and_commit_signing_are_per_repository() {
    let fx = Fixture::new();
    let config = fx.ok(&with(
        4,
        "    url: https://x/envs.git\n    ca_file: certs/ca.pem\n    signing: {ssh_key_file: keys/sign}",
    ));
    let envs = &config.repositories["envs"];
    assert_eq!(envs.ca_file, Some(fx.dir.path().join("certs/ca.pem")));
    assert_eq!(envs.known_hosts_file, None);
    assert_eq!(
        envs.signing,
        Some(CommitSigning::Ssh {
            key_file: fx.dir.path().join("keys/sign")
        })
    );

    let config = fx.ok(&with(
        4,
        "    url: ssh://git@git.example/envs.git\n    known_hosts_file: known_hosts\n    signing: {gpg_key_id: tollgate@example.com}",
    ));
    let envs = &config.repositories["envs"];
    assert_eq!(envs.known_hosts_file, Some(fx.dir.path().join("known_hosts")));
    assert_eq!(
        envs.signing,
        Some(CommitSigning::OpenPgp {
            key_file: None,
            key_id: Some("tollgate@example.com".into())
        })
    );

    let (line, col, msg) = fx.diag(
        &with(4, "    url: git@git.example:envs.git\n    ca_file: ca.pem"),
        "repositories.envs.ca_file",
    );
    assert_eq!((line, col), (5, 14));
    assert!(msg.contains("only used with https:// URLs"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(4, "    url: https://x/envs.git\n    known_hosts_file: kh"),
        "repositories.envs.known_hosts_file",
    );
    assert!(msg.contains("only used with ssh://"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(
            4,
            "    url: https://x/envs.git\n    signing: {ssh_key_file: k, gpg_key_id: x}",
        ),
        "repositories.envs.signing.gpg_key_id",
    );
    assert!(msg.contains("cannot be combined with ssh_key_file"), "{msg}");

    let (_, _, msg) = fx.diag(
        &with(
            26,
            "    policy: prod\n    write: {mode: branch, branch: 'promote/{env}/{image}'}",
        ),
        "environments.prod.write.branch",
    );
    assert!(msg.contains("must start with `tollgate/`"), "{msg}");
}

#[test]
fn duplicate_keys_and_syntax_errors_have_positions() {
    let fx = Fixture::new();
    let all = fx.diags(&with(24, "    path: a\n    path: b"));
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].line, all[0].column), (25, 5));
    assert!(all[0].message.contains("duplicate"), "{}", all[0]);

    let all = fx.diags("version: 1\nrepositories: {envs: [\n");
    assert_eq!(all.len(), 1);
    assert!(all[0].message.starts_with("invalid YAML"), "{}", all[0]);
    assert!(all[0].line >= 2, "{}", all[0]);
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let fx = Fixture::new();
    let mut ls = full();
    ls[3] = "    url: nowhere"; // 4
    ls[7] = "    release-key: {key: keys/missing.pub}"; // 8
    ls[14] = "      - {kind: SBOM_SPDX, signers: [ci]}"; // 15
    ls[17] = "    contract: relase"; // 18
    ls[22] = "    repository: env"; // 23
    let err = fx.parse(&lines(&ls)).unwrap_err();
    let got: Vec<(usize, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.key_path.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, "repositories.envs.url"),
            (8, "trust.signers.release-key.key"),
            (15, "contracts.release.materials[1].kind"),
            (18, "policies.prod.contract"),
            (23, "environments.prod.repository"),
        ]
    );
    let text = err.to_string();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(text
        .lines()
        .all(|l| l.starts_with(&*fx.config_path().to_string_lossy())));
}

#[test]
fn an_unreadable_file_is_an_io_error() {
    let err = load(Path::new("/nonexistent/tollgate.yaml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.diagnostics().is_empty());
    assert!(
        err.to_string().starts_with("/nonexistent/tollgate.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn strange_input_yields_diagnostics_not_panics() {
    let fx = Fixture::new();
    let inputs = [
        "- a\n- b\n",
        "just a string",
        "version: 1\n? [a, b]\n: c\n",
        "version: !custom 1\n",
        "version: 1\nrepositories: &a {x: *a}\n",
        "version: 1\nenvironments: {e: {repository: *nope}}\n",
        "version: 1\ntrust: {signers: {k: {key: ''}}}\n",
        "version: 1\ncontracts: {c: {materials: [1, [2], {kind: {}}]}}\n",
        "version: 1\nregistries: {'[::1': {}, ':5000': {}, 'a:b:c': {}}\n",
        "version: 1\nenvironments: {'': {repository: r}}\n",
        "\u{feff}version: 1\n\t- x\n",
        "version: 1\nlisten: ''\nstate_dir: ~\n",
    ];
    for input in inputs {
        let result = std::panic::catch_unwind(|| fx.parse(input));
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => assert!(!e.diagnostics().is_empty(), "{input:?}"),
            Err(_) => panic!("panicked on {input:?}"),
        }
    }
}

// ----- files the daemon reads when it runs -----

#[test]
fn secret_files_must_exist_and_be_readable_and_the_error_names_the_key() {
    let fx = Fixture::new();
    let missing = |key_path: &str, yaml: &str| {
        let (_, _, msg) = fx.diag(yaml, key_path);
        assert!(msg.contains("does not exist"), "{key_path}: {msg}");
        assert!(msg.contains(&*fx.dir.path().to_string_lossy()), "names the file: {msg}");
    };
    missing(
        "repositories.envs.auth.token_file",
        &with(4, "    url: https://x/envs.git\n    auth: {token_file: secrets/nope}"),
    );
    missing(
        "repositories.envs.auth.password_file",
        &with(
            4,
            "    url: https://x/envs.git\n    auth: {username: bot, password_file: nope}",
        ),
    );
    missing(
        "repositories.envs.auth.ssh_key_file",
        &with(4, "    url: ssh://git@x/envs.git\n    auth: {ssh_key_file: nope}"),
    );
    missing(
        "repositories.envs.webhook_secret_file",
        &with(4, "    url: https://x/envs.git\n    webhook_secret_file: nope"),
    );
    missing(
        "repositories.envs.ca_file",
        &with(4, "    url: https://x/envs.git\n    ca_file: certs/nope.pem"),
    );
    missing(
        "repositories.envs.known_hosts_file",
        &with(4, "    url: ssh://git@x/envs.git\n    known_hosts_file: nope"),
    );
    missing(
        "repositories.envs.signing.ssh_key_file",
        &with(4, "    url: https://x/envs.git\n    signing: {ssh_key_file: keys/nope}"),
    );
    missing(
        "repositories.envs.signing.gpg_key_file",
        &with(
            4,
            "    url: https://x/envs.git\n    signing: {gpg_key_file: keys/nope.asc}",
        ),
    );
    missing(
        "registries.\"ghcr.io\".auth.password_file",
        "version: 1\nregistries:\n  ghcr.io: {auth: {username: u, password_file: nope}}\n",
    );
    missing(
        "registries.\"ghcr.io\".auth.token_file",
        "version: 1\nregistries:\n  ghcr.io: {auth: {token_file: nope}}\n",
    );
    missing(
        "registries.\"ghcr.io\".auth.docker_config",
        "version: 1\nregistries:\n  ghcr.io: {auth: {docker_config: nope.json}}\n",
    );

    // Where the daemon would refuse the content, validation does too.
    let yaml = with(4, "    url: https://x/envs.git\n    webhook_secret_file: blank");
    let (line, col, msg) = fx.diag(&yaml, "repositories.envs.webhook_secret_file");
    assert_eq!((line, col), pos(&yaml, 5, "blank"));
    assert!(msg.contains("is empty"), "{msg}");
    let (_, _, msg) = fx.diag(
        "version: 1\nregistries:\n  ghcr.io: {auth: {token_file: blank}}\n",
        "registries.\"ghcr.io\".auth.token_file",
    );
    assert!(msg.contains("is empty"), "{msg}");
    let (_, _, msg) = fx.diag(
        "version: 1\nregistries:\n  ghcr.io: {auth: {docker_config: not-json.json}}\n",
        "registries.\"ghcr.io\".auth.docker_config",
    );
    assert!(msg.contains("not-json.json"), "{msg}");
    // A folder where a file belongs cannot be read as one.
    let (_, _, msg) = fx.diag(
        &with(4, "    url: https://x/envs.git\n    auth: {token_file: secrets}"),
        "repositories.envs.auth.token_file",
    );
    assert!(msg.starts_with("cannot read"), "{msg}");
}

#[cfg(unix)]
#[test]
fn an_unreadable_secret_file_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let file = fx.dir.path().join("secrets/locked");
    std::fs::write(&file, "s3cret\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&file).is_ok() {
        return; // root reads anything: nothing to check here.
    }
    let (_, _, msg) = fx.diag(
        &with(4, "    url: https://x/envs.git\n    auth: {token_file: secrets/locked}"),
        "repositories.envs.auth.token_file",
    );
    assert!(msg.starts_with("cannot read"), "{msg}");
}

#[test]
fn repository_names_and_branches_must_work_as_folder_and_ref_names() {
    let fx = Fixture::new();
    let yaml = "version: 1\nrepositories:\n  .envs: {url: 'file:///srv/envs'}\n";
    let (line, col, msg) = fx.diag(yaml, "repositories.\".envs\"");
    assert_eq!((line, col), (3, 3));
    assert!(
        msg.contains("must not start with '.'") || msg.contains("does not start with '.'"),
        "{msg}"
    );
    let (_, _, msg) = fx.diag(
        "version: 1\nrepositories:\n  envs: {url: 'file:///srv/envs', branch: 'main..x'}\n",
        "repositories.envs.branch",
    );
    assert!(msg.contains("not a valid git branch name"), "{msg}");
    fx.ok("version: 1\nrepositories:\n  envs.v2: {url: 'file:///srv/envs', branch: release/2024}\n");
}

#[test]
fn helm_image_keys_are_dotted_paths_per_environment() {
    let fx = Fixture::new();
    let config = fx.ok(&with(
        26,
        "    policy: prod\n    helm_image_keys: [image, worker.image]",
    ));
    assert_eq!(config.environments["prod"].helm_image_keys, ["image", "worker.image"]);
    assert!(
        config.environments["staging"].helm_image_keys.is_empty(),
        "default: any `image` mapping"
    );

    let yaml = with(
        26,
        "    policy: prod\n    helm_image_keys: [image, 'worker..image', '']",
    );
    let all = fx.diags(&yaml);
    let paths: Vec<&str> = all.iter().map(|d| d.key_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "environments.prod.helm_image_keys[1]",
            "environments.prod.helm_image_keys[2]"
        ]
    );
    assert!(all[0].message.contains("dotted key path"), "{}", all[0]);
    let (_, _, msg) = fx.diag(
        &with(26, "    policy: prod\n    helm_image_keys: []"),
        "environments.prod.helm_image_keys",
    );
    assert!(msg.contains("expected at least one"), "{msg}");
    let (_, _, msg) = fx.diag(
        &with(26, "    policy: prod\n    helm_image_keys: image"),
        "environments.prod.helm_image_keys",
    );
    assert!(msg.contains("expected a list"), "{msg}");
}

#[test]
fn only_the_configured_helm_image_keys_are_candidates() {
    let fx = Fixture::new();
    let config = fx.ok(&with(
        21,
        "  staging: {repository: envs, path: clusters/staging, helm_image_keys: [worker.image]}",
    ));
    let values = |api: &str, worker: &str| {
        let text = format!(
            "image:\n  repository: ghcr.io/acme/api\n  tag: {api}\nworker:\n  image:\n    repository: ghcr.io/acme/worker\n    tag: {worker}\n"
        );
        vec![("clusters/staging/values.yaml".to_string(), text.into_bytes())]
    };
    let (before, after) = (values("1.0.0", "2.0.0"), values("1.1.0", "2.1.0"));
    // Both mappings changed; only the configured one is a candidate.
    let opts = config.environments["staging"].detect_options();
    let (bumps, errors) = crate::gate::detect::bumps(&before, &after, &opts);
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<String> = bumps.iter().map(|b| b.after.name.clone()).collect();
    assert_eq!(names, ["ghcr.io/acme/worker"]);
    // Without the key both are.
    let opts = config.environments["prod"].detect_options();
    assert_eq!(crate::gate::detect::bumps(&before, &after, &opts).0.len(), 2);
}
