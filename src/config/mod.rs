//! Configuration (SPEC §3): `load` parses the YAML and validates it into the typed [`Config`] below
//! before anything binds a port or fetches. Every error names file, line, column and key path.

mod load;
mod schema;
// The waivers file (in environment repositories) is read with the same position-tracking tree.
pub(crate) mod yaml;

pub use load::{load, parse, ConfigError, Diagnostic};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::gate::MaterialKind;
use crate::keys::PublicKey;

/// The validated configuration. Paths are absolute (resolved against the config file's folder);
/// every cross-reference (contract, policy, signer, environment) is known to exist.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from.
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub repositories: BTreeMap<String, Repository>,
    pub registries: BTreeMap<String, Registry>,
    pub trust: Trust,
    pub contracts: BTreeMap<String, Contract>,
    pub policies: BTreeMap<String, Policy>,
    pub environments: BTreeMap<String, Environment>,
}

#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    /// `https://…`, `ssh://…`, `git@host:path` or `file:///…`.
    pub url: String,
    pub branch: String,
    /// Default 30s.
    pub poll_interval: Duration,
    pub auth: GitAuth,
    pub webhook_secret_file: Option<PathBuf>,
    /// Default `tollgate <tollgate@localhost>`.
    pub author: Author,
    /// PEM CA certificates trusted for this repository's HTTPS server, besides the system store (a private CA,
    /// a self-signed server). Only for `https://` URLs.
    pub ca_file: Option<PathBuf>,
    /// OpenSSH `known_hosts` file that the SSH server's host key must be listed in. Default: the service
    /// user's `~/.ssh/known_hosts`; an unlisted host key is refused either way. Only for SSH URLs.
    pub known_hosts_file: Option<PathBuf>,
    /// Signs promotion commits and notes commits, as `git commit -S` would. Default: unsigned.
    pub signing: Option<CommitSigning>,
}

/// How tollgate signs the commits it writes (`repositories.<name>.signing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitSigning {
    /// `{ssh_key_file: …}`: an OpenSSH private key, signed with `ssh-keygen -Y sign -n git` (git's
    /// `gpg.format=ssh`); verifiers list its public key in `gpg.ssh.allowedSignersFile`.
    Ssh { key_file: PathBuf },
    /// `{gpg_key_file: …, gpg_key_id: …}`: OpenPGP, signed with `gpg --detach-sign --armor`. With a key file
    /// (an armored secret key without passphrase) tollgate imports it into its own keyring in the mirror
    /// folder; without one it uses the service user's keyring. `gpg_key_id` picks the key (`gpg -u`).
    OpenPgp {
        key_file: Option<PathBuf>,
        key_id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitAuth {
    None,
    Token { token_file: PathBuf },
    SshKey { ssh_key_file: PathBuf },
    Basic { username: String, password_file: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// Keyed by registry host (`ghcr.io`, `127.0.0.1:5000`).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Plain HTTP. Refused at validation for hosts that are not loopback.
    pub insecure: bool,
    pub auth: RegistryAuth,
    /// Serve this registry's images from an OCI image layout directory instead of the network.
    pub oci_layout: Option<PathBuf>,
    /// Requests in flight to this registry at once (`max_concurrency`); `None`: the default, 8.
    pub max_concurrency: Option<std::num::NonZeroUsize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RegistryAuth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password_file: PathBuf,
    },
    Bearer {
        token_file: PathBuf,
    },
    DockerConfig {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub trusted_root: Option<PathBuf>,
    /// `trusted_root`, parsed and validated at load time.
    pub root: Option<std::sync::Arc<crate::sigstore::TrustedRoot>>,
    pub signers: BTreeMap<String, Signer>,
}

#[derive(Debug, Clone)]
pub enum Signer {
    Key {
        path: PathBuf,
        key: PublicKey,
    },
    Keyless {
        issuer: String,
        subject: SubjectMatch,
        /// `claims`: globs over the certificate's GitHub workflow claims; all must match.
        claims: Vec<ClaimMatch>,
    },
}

/// One `trust.signers.<name>.keyless.claims` entry: a claim of [`crate::gate::CertificateIdentity`]
/// (named as in its `CLAIMS`) and a glob in which `*` also matches `/`. A certificate without the
/// claim does not match.
#[derive(Debug, Clone)]
pub struct ClaimMatch {
    pub claim: String,
    pub pattern: String,
    pub glob: globset::GlobMatcher,
}

/// The claims part of a keyless signer's identity in digests (policy digest, verification cache key):
/// empty without claims, so that digests of configurations that do not use them stay as they were.
pub fn claims_id(claims: &[ClaimMatch]) -> String {
    claims
        .iter()
        .map(|c| format!(":claim:{}={}", c.claim, c.pattern))
        .collect()
}

#[derive(Debug, Clone)]
pub enum SubjectMatch {
    Exact(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
pub struct Contract {
    pub name: String,
    pub materials: Vec<MaterialRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterialRequirement {
    pub kind: MaterialKind,
    /// Shown in messages; defaults to the kind.
    pub name: Option<String>,
    /// Overrides the kind's default predicate types. Required for `ATTESTATION`.
    pub predicate_type: Option<String>,
    /// Names of signers in `trust.signers` whose signatures count for this material.
    pub signers: Vec<String>,
    pub optional: bool,
}

impl MaterialRequirement {
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind.as_str().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Warn,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub contract: String,
    pub mode: Mode,
    pub rules: Rules,
    /// Path of the waivers file inside the environment repository.
    pub waivers: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub digest_pinned: bool,
    pub no_latest_tag: bool,
    /// Severity (`critical`, `high`, `medium`, `low`, `unknown`) → maximum count.
    pub max_vulnerabilities: Option<BTreeMap<String, u32>>,
    pub sarif_max_errors: Option<u32>,
    pub provenance: Option<ProvenanceRule>,
    pub upstream: Option<UpstreamRule>,
    pub chainloop: Option<ChainloopRule>,
    /// Absolute paths of Rego files.
    pub rego: Vec<PathBuf>,
    /// The same files, compiled when the configuration was loaded (one per path, same order).
    pub rego_policies: Vec<crate::gate::rego::RegoPolicy>,
    /// `rule_modes`: per-rule overrides of the policy's mode, keyed by rule name (`sarif_max_errors`,
    /// `rego`, `contract`, …; `contract` and `rego` cover every result of that family).
    pub modes: BTreeMap<String, Mode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceRule {
    /// Glob patterns (`https://github.com/acme/*`).
    pub source_repo: Option<String>,
    pub builder_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRule {
    pub environment: String,
    pub soak: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainloopRule {
    pub require_not_blocked: bool,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub repository: String,
    /// Folder inside the repository, without leading or trailing `/`.
    pub path: String,
    pub promote_from: Option<String>,
    pub policy: Option<String>,
    pub write: WriteMode,
    pub attest_promotions: Option<PathBuf>,
    /// Key paths of Helm image mappings (`image`, `worker.image`), relative to the values root (SPEC §2).
    /// Empty (the default): any mapping under a key named `image` that has a `repository`.
    pub helm_image_keys: Vec<String>,
}

impl Environment {
    /// What image detection looks for in this environment's files.
    pub fn detect_options(&self) -> crate::manifest::DetectOptions {
        crate::manifest::DetectOptions {
            helm_image_keys: self.helm_image_keys.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    Direct,
    /// Branch name template with `{env}` and `{image}`.
    Branch {
        branch: String,
    },
}

impl Config {
    /// Environments that promote from another, upstream first (validation guarantees no cycles).
    pub fn promotion_targets(&self) -> Vec<&Environment> {
        let mut out: Vec<&Environment> = Vec::new();
        let depth = |e: &Environment| {
            let mut d = 0;
            let mut cur = e.promote_from.as_deref();
            while let Some(up) = cur {
                d += 1;
                cur = self.environments.get(up).and_then(|u| u.promote_from.as_deref());
            }
            d
        };
        let mut targets: Vec<(usize, &Environment)> = self
            .environments
            .values()
            .filter(|e| e.promote_from.is_some())
            .map(|e| (depth(e), e))
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.name.cmp(&b.1.name)));
        out.extend(targets.into_iter().map(|(_, e)| e));
        out
    }
}
