//! Keyless Sigstore evidence made by tools nobody on tollgate wrote: runs
//! `tests/support/sigstore-js/produce.mjs` (sigstore-js signing against `@sigstore/mock` Fulcio and a
//! canonical Rekor log served on 127.0.0.1, attached with `@sigstore/oci` as GitHub's `actions/attest`
//! does), optionally with sigstore-python as the signer, and returns the bundle, the pinned
//! `trusted_root.json` made from the mock keys, and the digests involved.
//!
//! Every bundle it returns was first checked by `@sigstore/verify` and, when the venv has it, by
//! sigstore-python: a positive bundle verifies in both, a `tamper` variant is rejected by both for
//! the intended reason (produce.mjs fails otherwise).
//!
//! Use from a test file with `mod support { pub mod sigstore_js; }`. Tests fail, rather than skip,
//! when Node or the npm packages are missing: a skipped test reads as a pass in CI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate::image::Digest;

/// The GitHub Actions OIDC issuer, and a release workflow identity as Fulcio writes it in the SAN.
pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
pub const RELEASE_WORKFLOW: &str = "https://github.com/acme/api/.github/workflows/release.yml@refs/tags/v1.0.0";

/// What to break after (or, for `CertificateRoot`, while) signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// The DSSE payload is changed after signing (same subject, another predicate).
    Payload,
    /// One bit of the DSSE signature is flipped.
    Signature,
    /// The Rekor `integratedTime` is moved by 120 s, which breaks the signed entry timestamp only.
    IntegratedTime,
    /// Signed by a second mock Fulcio CA that the trusted root does not name.
    CertificateRoot,
}

impl Tamper {
    fn arg(self) -> &'static str {
        match self {
            Tamper::Payload => "payload",
            Tamper::Signature => "signature",
            Tamper::IntegratedTime => "integrated-time",
            Tamper::CertificateRoot => "certificate-root",
        }
    }
}

/// Which client signs against the mock servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Producer {
    /// sigstore-js `@sigstore/sign` (what GitHub's `actions/attest` runs).
    Js,
    /// sigstore-python 4.5, from `.tools/venv`.
    Python,
}

/// One run of produce.mjs. Build with [`Keyless::new`], adjust the public fields, then [`Keyless::run`].
#[derive(Debug, Clone)]
pub struct Keyless {
    /// `127.0.0.1:<port>` and repository (`acme/api`) to attach to; `None` writes the bundle only.
    pub registry: Option<String>,
    pub image: String,
    /// The image the bundle is attached to.
    pub digest: Digest,
    /// The in-toto subject digest; `None` means `digest`. Another value makes a replayed attestation.
    pub statement_digest: Option<Digest>,
    pub predicate_type: String,
    pub predicate: serde_json::Value,
    pub issuer: String,
    pub subject: String,
    pub tamper: Option<Tamper>,
    pub producer: Producer,
    /// Also check the result with sigstore-python (when `.tools/venv` has it; required for `Python`).
    pub check_with_python: bool,
}

/// What produce.mjs made.
#[derive(Debug, Clone)]
pub struct Produced {
    pub bundle: PathBuf,
    pub trusted_root: PathBuf,
    /// sigstore-python's client trust config (the trusted root plus the mock service URLs).
    pub trust_config: PathBuf,
    /// The image digest it was attached to (or made for).
    pub digest: Digest,
    /// The digest in the statement's subject.
    pub statement_digest: Digest,
    /// The digest of the bundle bytes (the layer digest of the attached referrer).
    pub bundle_digest: Digest,
    /// The referrer manifest digest, when attached.
    pub referrer: Option<Digest>,
    /// produce.mjs's JSON summary (verifier results, tree size and leaf index, …).
    pub summary: serde_json::Value,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The folder of the Node project (package.json, produce.mjs).
pub fn project_dir() -> PathBuf {
    root().join("tests/support/sigstore-js")
}

/// The venv interpreter that has sigstore-python, if installed.
pub fn python() -> Option<PathBuf> {
    let p = root().join(".tools/venv/bin/python");
    p.exists().then_some(p)
}

/// Panics with what to run when Node or the installed packages are missing.
pub fn require_installed() {
    let modules = project_dir().join("node_modules/@sigstore/sign");
    assert!(
        modules.exists(),
        "{} is missing: the keyless tests need sigstore-js. Run `scripts/setup-test-deps.sh` \
         (it runs `npm ci --prefix tests/support/sigstore-js`; needs Node.js >= 20.17 and npm).",
        modules.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "`node` does not run ({node:?}): install Node.js >= 20.17, then run `scripts/setup-test-deps.sh`"
    );
}

impl Keyless {
    /// A keyless SLSA provenance for `digest`, signed by the GitHub release workflow identity,
    /// attached to `registry/image` when `registry` is given.
    pub fn new(registry: Option<&str>, image: &str, digest: &Digest) -> Keyless {
        Keyless {
            registry: registry.map(str::to_string),
            image: image.to_string(),
            digest: digest.clone(),
            statement_digest: None,
            predicate_type: "https://slsa.dev/provenance/v1".to_string(),
            predicate: serde_json::json!({
                "buildDefinition": {
                    "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                    "externalParameters": {"workflow": {"ref": "refs/tags/v1.0.0", "repository": "https://github.com/acme/api", "path": ".github/workflows/release.yml"}},
                    "resolvedDependencies": [{"uri": "git+https://github.com/acme/api@refs/tags/v1.0.0", "digest": {"gitCommit": "b4e0c1f2a3d4e5f60718293a4b5c6d7e8f901234"}}]
                },
                "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}, "metadata": {"invocationId": "https://github.com/acme/api/actions/runs/1/attempts/1"}}
            }),
            issuer: GITHUB_ISSUER.to_string(),
            subject: RELEASE_WORKFLOW.to_string(),
            tamper: None,
            producer: Producer::Js,
            check_with_python: true,
        }
    }

    /// Runs produce.mjs, writing `<name>.bundle.json`, `<name>.trusted_root.json` and
    /// `<name>.trust_config.json` into `dir`. Panics with produce.mjs's stderr if it fails.
    pub fn run(&self, dir: &Path, name: &str) -> Produced {
        require_installed();
        let predicate = dir.join(format!("{name}.predicate.json"));
        std::fs::write(&predicate, self.predicate.to_string()).expect("write predicate");
        let bundle = dir.join(format!("{name}.bundle.json"));
        let trusted_root = dir.join(format!("{name}.trusted_root.json"));
        let trust_config = dir.join(format!("{name}.trust_config.json"));

        let mut cmd = Command::new("node");
        cmd.arg(project_dir().join("produce.mjs"))
            .args(["--image", &self.image, "--digest", self.digest.as_str()])
            .args(["--predicate-type", &self.predicate_type])
            .arg("--predicate")
            .arg(&predicate)
            .args(["--issuer", &self.issuer, "--subject", &self.subject])
            .arg("--out-bundle")
            .arg(&bundle)
            .arg("--out-trusted-root")
            .arg(&trusted_root)
            .arg("--out-trust-config")
            .arg(&trust_config);
        match &self.registry {
            Some(r) => {
                cmd.args(["--registry", r]);
            }
            None => {
                cmd.arg("--no-attach");
            }
        }
        if let Some(d) = &self.statement_digest {
            cmd.args(["--statement-digest", d.as_str()]);
        }
        if let Some(t) = self.tamper {
            cmd.args(["--tamper", t.arg()]);
        }
        let python = python();
        if self.producer == Producer::Python {
            assert!(
                python.is_some(),
                ".tools/venv/bin/python is missing: run `scripts/setup-test-deps.sh` (it installs sigstore-python)"
            );
            cmd.args(["--signer", "python"]);
        }
        if self.check_with_python || self.producer == Producer::Python {
            if let Some(p) = &python {
                cmd.arg("--python").arg(p);
            }
        }

        let out = cmd.output().expect("run node");
        assert!(
            out.status.success(),
            "produce.mjs failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "produce.mjs printed no JSON summary ({e}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        let digest_at = |key: &str| -> Option<Digest> {
            summary[key]
                .as_str()
                .map(|s| Digest::parse(s).unwrap_or_else(|e| panic!("summary.{key} `{s}`: {e}")))
        };
        let produced = Produced {
            bundle,
            trusted_root,
            trust_config,
            digest: digest_at("digest").expect("summary.digest"),
            statement_digest: digest_at("statement_digest").expect("summary.statement_digest"),
            bundle_digest: digest_at("bundle_digest").expect("summary.bundle_digest"),
            referrer: digest_at("referrer"),
            summary,
        };
        assert_eq!(
            Digest::of(&std::fs::read(&produced.bundle).expect("read bundle")),
            produced.bundle_digest,
            "the bundle file is not what produce.mjs attached"
        );
        produced
    }
}

impl Produced {
    pub fn bundle_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.bundle).expect("read bundle")
    }

    /// Whether sigstore-python also checked this bundle (it was installed).
    pub fn checked_by_python(&self) -> bool {
        self.summary["checks"]["sigstore_python"].is_object()
    }
}
