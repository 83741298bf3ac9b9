//! SPEC §3 as code: the decoder for each section of `tollgate.yaml` (keys, types, defaults,
//! per-value checks such as loopback-only `insecure` and readable key files). Generic decoding and
//! the cross-reference checks live in `load.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::load::{child, Ctx, Fields, Kind, DURATION_HINT};
use super::yaml::{Loc, Node, Value};
use super::{
    Author, ChainloopRule, ClaimMatch, CommitSigning, Config, Contract, Environment, GitAuth, MaterialRequirement,
    Mode, Policy, ProvenanceRule, Registry, RegistryAuth, Repository, Rules, Signer, SubjectMatch, Trust, UpstreamRule,
    WriteMode,
};
use crate::gate::MaterialKind;
use crate::keys::{PublicKey, SigningKey};

const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
const DEFAULT_STATE_DIR: &str = "/var/lib/tollgate";
const DEFAULT_BRANCH: &str = "main";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

impl Ctx {
    pub(super) fn config(&mut self, root: &Node) -> Option<Config> {
        const TOP: [&str; 9] = [
            "version",
            "listen",
            "state_dir",
            "repositories",
            "registries",
            "trust",
            "contracts",
            "policies",
            "environments",
        ];
        let start = Loc { line: 1, column: 1 };
        if matches!(root.value, Value::Null) {
            self.err(
                start,
                "",
                "the configuration is empty; expected a mapping starting with `version: 1`",
            );
            return None;
        }
        let f = self.mapping(root, "", start, &TOP, "key")?;

        let version = self
            .required(&f, "version", "`version: 1`")
            .and_then(|(n, p)| match &n.value {
                Value::Int(1, _) => Some(()),
                other => {
                    self.err(
                        n.loc,
                        &p,
                        format!("unsupported version {}; expected 1", other.describe()),
                    );
                    None
                }
            });
        let listen = match f.get("listen") {
            None => DEFAULT_LISTEN.parse().ok(),
            Some((n, p)) => self.listen(n, &p),
        };
        let state_dir = match f.get("state_dir") {
            None => Some(PathBuf::from(DEFAULT_STATE_DIR)),
            Some((n, p)) => self.path(n, &p, "a directory path"),
        };

        let repositories = self.section(&f, "repositories", Some(Kind::Repository), Self::repository);
        let registries = self.section(&f, "registries", None, Self::registry);
        let trust = match f.get("trust") {
            None => Some(Trust::default()),
            Some((n, p)) => self.trust(n, &p, f.entries.iter().find(|e| e.0 == "trust").map_or(start, |e| e.1)),
        };
        let contracts = self.section(&f, "contracts", Some(Kind::Contract), Self::contract);
        let policies = self.section(&f, "policies", Some(Kind::Policy), Self::policy);
        let environments = self.section(&f, "environments", Some(Kind::Environment), Self::environment);

        self.check_references();
        self.check_cycles();

        version?;
        Some(Config {
            source: self.file.clone(),
            listen: listen?,
            state_dir: state_dir?,
            repositories: repositories?,
            registries: registries?,
            trust: trust?,
            contracts: contracts?,
            policies: policies?,
            environments: environments?,
        })
    }

    /// Decodes every entry of a named section; `None` if any entry failed.
    fn section<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        kind: Option<Kind>,
        decode: fn(&mut Self, &str, &Node, &str, Loc) -> Option<T>,
    ) -> Option<BTreeMap<String, T>> {
        let Some((node, path)) = f.get(key) else {
            return Some(BTreeMap::new());
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, key_loc, value) in self.named(node, &path, kind) {
            match decode(self, &name, value, &child(&path, &name), key_loc) {
                Some(v) => {
                    out.insert(name, v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn listen(&mut self, node: &Node, path: &str) -> Option<SocketAddr> {
        let s = self.string(node, path, "an address and port such as 127.0.0.1:9464")?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let msg = format!(
                    "invalid address {s:?}; expected an IP address and port such as 127.0.0.1:9464 or [::]:9464"
                );
                self.err(node.loc, path, msg);
                None
            }
        }
    }

    fn repository(&mut self, name: &str, node: &Node, path: &str, owner: Loc) -> Option<Repository> {
        const KEYS: [&str; 9] = [
            "url",
            "branch",
            "poll_interval",
            "auth",
            "webhook_secret_file",
            "author",
            "ca_file",
            "known_hosts_file",
            "signing",
        ];
        let f = self.mapping(node, path, owner, &KEYS, "key")?;
        const URL: &str = "a git URL (https://…, ssh://…, git@host:path or file:///…)";
        let url = self.required(&f, "url", URL).and_then(|(n, p)| {
            let url = self.string(n, &p, URL)?;
            if is_git_url(&url) {
                Some(url)
            } else {
                self.err(n.loc, &p, format!("invalid git URL {url:?}; expected {URL}"));
                None
            }
        });
        let branch = match f.get("branch") {
            None => Some(DEFAULT_BRANCH.to_string()),
            Some((n, p)) => self.string(n, &p, "a branch name").and_then(|b| {
                if git2::Reference::is_valid_name(&format!("refs/heads/{b}")) {
                    Some(b)
                } else {
                    self.err(
                        n.loc,
                        &p,
                        format!("{b:?} is not a valid git branch name; expected a branch name such as main"),
                    );
                    None
                }
            }),
        };
        let poll_interval = match f.get("poll_interval") {
            None => Some(DEFAULT_POLL_INTERVAL),
            Some((n, p)) => self.duration(n, &p).and_then(|d| {
                if d.is_zero() {
                    self.err(n.loc, &p, format!("must be longer than zero; expected {DURATION_HINT}"));
                    None
                } else {
                    Some(d)
                }
            }),
        };
        let auth = match f.get("auth") {
            None => Some(GitAuth::None),
            Some((n, p)) => self.git_auth(n, &p),
        };
        let webhook_secret_file = self.optional(&f, "webhook_secret_file", |cx, n, p| {
            cx.secret_file(n, p, "a file holding the webhook secret")
        });
        let author = match f.get("author") {
            None => Some(default_author()),
            Some((n, p)) => self.author(n, &p, owner),
        };
        let url = url?;
        let ca_file = self.optional(&f, "ca_file", |cx, n, p| {
            if url.starts_with("https://") {
                cx.readable_file(n, p, "a PEM file of CA certificates")
                    .map(|(file, _)| file)
            } else {
                cx.err(
                    n.loc,
                    p,
                    "only used with https:// URLs; remove it or use an https:// URL",
                );
                None
            }
        });
        let known_hosts_file = self.optional(&f, "known_hosts_file", |cx, n, p| {
            if is_ssh_url(&url) {
                cx.readable_file(n, p, "an OpenSSH known_hosts file")
                    .map(|(file, _)| file)
            } else {
                cx.err(
                    n.loc,
                    p,
                    "only used with ssh:// and git@host:path URLs; remove it or use an SSH URL",
                );
                None
            }
        });
        let signing = self.optional(&f, "signing", |cx, n, p| cx.commit_signing(n, p));
        Some(Repository {
            name: name.to_string(),
            url,
            branch: branch?,
            poll_interval: poll_interval?,
            auth: auth?,
            webhook_secret_file: webhook_secret_file?,
            author: author?,
            ca_file: ca_file?,
            known_hosts_file: known_hosts_file?,
            signing: signing?,
        })
    }

    fn commit_signing(&mut self, node: &Node, path: &str) -> Option<CommitSigning> {
        let variants: [&[&str]; 2] = [&["ssh_key_file"], &["gpg_key_file", "gpg_key_id"]];
        let (which, f) = self.variant(node, path, node.loc, &variants)?;
        if which == 0 {
            let (n, p) = self.required(&f, "ssh_key_file", "an OpenSSH private key file")?;
            let (key_file, _) = self.readable_file(n, &p, "an OpenSSH private key file")?;
            return Some(CommitSigning::Ssh { key_file });
        }
        let key_file = self.optional(&f, "gpg_key_file", |cx, n, p| {
            cx.readable_file(n, p, "an armored OpenPGP secret key file")
                .map(|(file, _)| file)
        });
        let key_id = self.optional(&f, "gpg_key_id", |cx, n, p| {
            let id = cx.string(n, p, "a key id or fingerprint")?;
            if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "@.<>_-+ ".contains(c)) {
                Some(id)
            } else {
                cx.err(
                    n.loc,
                    p,
                    format!("invalid key id {id:?}; expected a key id, fingerprint or e-mail address"),
                );
                None
            }
        });
        Some(CommitSigning::OpenPgp {
            key_file: key_file?,
            key_id: key_id?,
        })
    }

    fn git_auth(&mut self, node: &Node, path: &str) -> Option<GitAuth> {
        let variants: [&[&str]; 3] = [&["token_file"], &["ssh_key_file"], &["username", "password_file"]];
        let (which, f) = self.variant(node, path, node.loc, &variants)?;
        let file = |cx: &mut Self, key: &str| {
            cx.required(&f, key, "a file path")
                .and_then(|(n, p)| cx.secret_file(n, &p, "a file holding the secret"))
        };
        match which {
            0 => Some(GitAuth::Token {
                token_file: file(self, "token_file")?,
            }),
            1 => {
                const WHAT: &str = "an OpenSSH private key file";
                let (n, p) = self.required(&f, "ssh_key_file", WHAT)?;
                let (ssh_key_file, _) = self.readable_file(n, &p, WHAT)?;
                Some(GitAuth::SshKey { ssh_key_file })
            }
            _ => {
                let username = self
                    .required(&f, "username", "a user name")
                    .and_then(|(n, p)| self.string(n, &p, "a user name"));
                let password_file = file(self, "password_file");
                Some(GitAuth::Basic {
                    username: username?,
                    password_file: password_file?,
                })
            }
        }
    }

    fn author(&mut self, node: &Node, path: &str, owner: Loc) -> Option<Author> {
        let f = self.mapping(node, path, owner, &["name", "email"], "key")?;
        let default = default_author();
        let name = match f.get("name") {
            None => Some(default.name),
            Some((n, p)) => self.string(n, &p, "a committer name"),
        };
        let email = match f.get("email") {
            None => Some(default.email),
            Some((n, p)) => self.string(n, &p, "an e-mail address").and_then(|e| {
                if e.contains('@') && !e.contains(['<', '>', '\n']) {
                    Some(e)
                } else {
                    self.err(n.loc, &p, format!("invalid e-mail address {e:?}; expected name@host"));
                    None
                }
            }),
        };
        Some(Author {
            name: name?,
            email: email?,
        })
    }

    fn registry(&mut self, host: &str, node: &Node, path: &str, owner: Loc) -> Option<Registry> {
        let host_ok = match registry_host(host) {
            Some(_) => true,
            None => {
                let msg = format!("invalid registry host {host:?}; expected a host name with an optional port, such as ghcr.io or 127.0.0.1:5000 (no scheme, no path)");
                self.err(owner, path, msg);
                false
            }
        };
        let f = self.mapping(
            node,
            path,
            owner,
            &["insecure", "auth", "oci_layout", "max_concurrency"],
            "key",
        )?;
        let insecure = match f.get("insecure") {
            None => Some(false),
            Some((n, p)) => self.boolean(n, &p).and_then(|insecure| {
                if insecure && host_ok && !is_loopback_host(host) {
                    let msg = format!("plain HTTP is refused for {host:?}; expected `insecure: true` only for a loopback host (localhost, 127.0.0.0/8, ::1)");
                    self.err(n.loc, &p, msg);
                    None
                } else {
                    Some(insecure)
                }
            }),
        };
        let auth = match f.get("auth") {
            None => Some(RegistryAuth::Anonymous),
            Some((n, p)) => self.registry_auth(host, n, &p),
        };
        let oci_layout = self.optional(&f, "oci_layout", |cx, n, p| {
            cx.path(n, p, "an OCI image layout directory")
        });
        let max_concurrency = self.optional(&f, "max_concurrency", |cx, n, p| {
            let n_requests = cx.count(n, p)?;
            let nonzero = std::num::NonZeroUsize::new(n_requests as usize);
            if nonzero.is_none() {
                cx.err(
                    n.loc,
                    p,
                    "expected at least 1 request in flight (0 would never fetch); default 8",
                );
            }
            nonzero
        });
        host_ok.then_some(())?;
        Some(Registry {
            insecure: insecure?,
            auth: auth?,
            oci_layout: oci_layout?,
            max_concurrency: max_concurrency?,
        })
    }

    fn registry_auth(&mut self, host: &str, node: &Node, path: &str) -> Option<RegistryAuth> {
        let variants: [&[&str]; 3] = [&["username", "password_file"], &["token_file"], &["docker_config"]];
        let (which, f) = self.variant(node, path, node.loc, &variants)?;
        let file = |cx: &mut Self, key: &str| {
            cx.required(&f, key, "a file path")
                .and_then(|(n, p)| cx.secret_file(n, &p, "a file holding the secret"))
        };
        match which {
            0 => {
                let username = self
                    .required(&f, "username", "a user name")
                    .and_then(|(n, p)| self.string(n, &p, "a user name"));
                let password_file = file(self, "password_file");
                Some(RegistryAuth::Basic {
                    username: username?,
                    password_file: password_file?,
                })
            }
            1 => Some(RegistryAuth::Bearer {
                token_file: file(self, "token_file")?,
            }),
            _ => {
                const WHAT: &str = "a docker config.json";
                let (n, p) = self.required(&f, "docker_config", WHAT)?;
                let (file, bytes) = self.readable_file(n, &p, WHAT)?;
                // The same reading `run` does at start-up, for this host.
                if let Err(e) = crate::oci::auth::docker_config_auth(&bytes, host) {
                    self.err(n.loc, &p, format!("{}: {e}; expected {WHAT}", file.display()));
                    return None;
                }
                Some(RegistryAuth::DockerConfig { path: file })
            }
        }
    }

    fn trust(&mut self, node: &Node, path: &str, owner: Loc) -> Option<Trust> {
        let f = self.mapping(node, path, owner, &["trusted_root", "signers"], "key")?;
        let trusted_root = self.optional(&f, "trusted_root", |cx, n, p| {
            const WHAT: &str = "a Sigstore trusted_root.json";
            let (file, text) = cx.existing_file(n, p, WHAT)?;
            // Parsed once here, so that a root that cannot be used stops the daemon before it runs.
            match crate::sigstore::TrustedRoot::parse(&text) {
                Ok(root) => Some((file, std::sync::Arc::new(root))),
                Err(crate::sigstore::TrustRootError::Json(e)) => {
                    cx.err(
                        n.loc,
                        p,
                        format!("{} is not valid JSON ({e}); expected {WHAT}", file.display()),
                    );
                    None
                }
                Err(e) => {
                    cx.err(n.loc, p, format!("{}: {e}; expected {WHAT}", file.display()));
                    None
                }
            }
        });
        let signers = self.section(&f, "signers", Some(Kind::Signer), Self::signer);
        // A keyless signature is only as good as the roots it chains to; there is no default root
        // because tollgate never fetches one at run time.
        let has_root = f.has("trusted_root");
        if let (Some(signers), false) = (&signers, has_root) {
            if let Some((sn, sp)) = f.get("signers") {
                for (name, signer) in signers {
                    if matches!(signer, Signer::Keyless { .. }) {
                        let loc = match &sn.value {
                            Value::Map(es) => es
                                .iter()
                                .find(|e| e.key.as_deref() == Some(name))
                                .map_or(sn.loc, |e| e.key_loc),
                            _ => sn.loc,
                        };
                        let msg = "a keyless signer needs trust.trusted_root; expected the path of a pinned Sigstore trusted_root.json";
                        self.err(loc, &child(&sp, name), msg);
                    }
                }
            }
        }
        let trusted_root = trusted_root?;
        Some(Trust {
            root: trusted_root.as_ref().map(|(_, root)| root.clone()),
            trusted_root: trusted_root.map(|(file, _)| file),
            signers: signers?,
        })
    }

    fn signer(&mut self, _name: &str, node: &Node, path: &str, owner: Loc) -> Option<Signer> {
        let (which, f) = self.variant(node, path, owner, &[&["key"], &["keyless"]])?;
        if which == 0 {
            const WHAT: &str = "a PEM public key file (cosign.pub)";
            let (n, p) = self.required(&f, "key", WHAT)?;
            let (file, pem) = self.existing_file(n, &p, WHAT)?;
            return match PublicKey::from_pem(&pem) {
                Ok(key) => Some(Signer::Key { path: file, key }),
                Err(e) => {
                    self.err(n.loc, &p, format!("{}: {e}", file.display()));
                    None
                }
            };
        }
        let (n, p) = self.required(&f, "keyless", "a mapping {issuer, subject | subject_regex, claims}")?;
        let k = self.mapping(n, &p, f.owner, &["issuer", "subject", "subject_regex", "claims"], "key")?;
        let claims = self.optional(&k, "claims", |cx, n, p| {
            let names = crate::gate::CertificateIdentity::CLAIMS;
            let c = cx.mapping(n, p, n.loc, &names, "claim")?;
            let mut out = Vec::new();
            let mut ok = true;
            for (claim, _, _) in &c.entries {
                let Some((vn, vp)) = c.get(claim) else { continue };
                let pattern = cx.string(vn, &vp, "a glob pattern such as https://github.com/acme/*");
                match pattern.map(|s| (globset::Glob::new(&s).map(|g| g.compile_matcher()), s)) {
                    Some((Ok(glob), pattern)) => out.push(ClaimMatch {
                        claim: claim.to_string(),
                        pattern,
                        glob,
                    }),
                    Some((Err(e), pattern)) => {
                        cx.err(vn.loc, &vp, format!("invalid glob pattern {pattern:?}: {}", e.kind()));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        });
        let issuer = self
            .required(&k, "issuer", "the OIDC issuer URL")
            .and_then(|(n, p)| self.string(n, &p, "the OIDC issuer URL"));
        let subject = match (k.get("subject"), k.get("subject_regex")) {
            (Some((sn, sp)), None) => self
                .string(sn, &sp, "the exact certificate identity")
                .map(SubjectMatch::Exact),
            (None, Some((rn, rp))) => {
                self.string(rn, &rp, "a regular expression")
                    .and_then(|re| match regex::Regex::new(&re) {
                        Ok(re) => Some(SubjectMatch::Regex(re)),
                        Err(e) => {
                            // regex renders a caret diagram over several lines; its last line is the reason.
                            let why = e.to_string();
                            let why = why
                                .lines()
                                .last()
                                .unwrap_or_default()
                                .trim()
                                .trim_start_matches("error: ")
                                .to_string();
                            self.err(rn.loc, &rp, format!("invalid regular expression: {why}"));
                            None
                        }
                    })
            }
            (Some(_), Some((rn, rp))) => {
                self.err(rn.loc, &rp, "give either subject or subject_regex, not both");
                None
            }
            (None, None) => {
                self.err(
                    n.loc,
                    &p,
                    "missing the identity; expected subject (exact) or subject_regex",
                );
                None
            }
        };
        Some(Signer::Keyless {
            issuer: issuer?,
            subject: subject?,
            claims: claims?.unwrap_or_default(),
        })
    }

    fn contract(&mut self, name: &str, node: &Node, path: &str, owner: Loc) -> Option<Contract> {
        let f = self.mapping(node, path, owner, &["materials"], "key")?;
        let (n, p) = self.required(&f, "materials", "a list of materials")?;
        let items = self.list(n, &p, "materials {kind, signers, …}")?;
        let mut materials = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.material(item, &format!("{p}[{i}]")) {
                Some(m) => materials.push(m),
                None => ok = false,
            }
        }
        ok.then(|| Contract {
            name: name.to_string(),
            materials,
        })
    }

    fn material(&mut self, node: &Node, path: &str) -> Option<MaterialRequirement> {
        const KEYS: [&str; 5] = ["kind", "name", "predicate_type", "signers", "optional"];
        let f = self.mapping(node, path, node.loc, &KEYS, "key")?;
        let kinds = MaterialKind::ALL.map(|k| k.as_str()).join(", ");
        let kind = self
            .required(&f, "kind", &format!("one of: {kinds}"))
            .and_then(|(n, p)| {
                let s = self.string(n, &p, "a material kind")?;
                let found = MaterialKind::ALL.into_iter().find(|k| k.as_str() == s);
                if found.is_none() {
                    self.err(
                        n.loc,
                        &p,
                        format!("unknown material kind {s:?}; expected one of: {kinds}"),
                    );
                }
                found
            });
        let name = self.optional(&f, "name", |cx, n, p| cx.string(n, p, "a name for this material"));
        let predicate_type = self.optional(&f, "predicate_type", |cx, n, p| {
            cx.string(n, p, "an in-toto predicate type URI")
        });
        if let (Some(MaterialKind::Attestation), Some(None)) = (kind, &predicate_type) {
            let at = f.get("kind").map_or(node.loc, |(n, _)| n.loc);
            let msg = "required for kind ATTESTATION; expected the predicate type to look for, such as https://example.com/load-test/v1";
            self.err(at, &child(path, "predicate_type"), msg);
        }
        let signers = self
            .required(&f, "signers", "a list of signer names from trust.signers")
            .and_then(|(n, p)| {
                let items = self.list(n, &p, "signer names from trust.signers")?;
                if items.is_empty() {
                    self.err(n.loc, &p, "no signers; expected at least one name from trust.signers");
                    return None;
                }
                let mut names = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let ip = format!("{p}[{i}]");
                    if let Some(s) = self.string(item, &ip, "a signer name") {
                        self.reference(Kind::Signer, s.clone(), item, &ip);
                        names.push(s);
                    }
                }
                (names.len() == items.len()).then_some(names)
            });
        let optional = match f.get("optional") {
            None => Some(false),
            Some((n, p)) => self.boolean(n, &p),
        };
        if matches!(kind, Some(MaterialKind::Attestation)) && !matches!(predicate_type, Some(Some(_))) {
            return None;
        }
        Some(MaterialRequirement {
            kind: kind?,
            name: name?,
            predicate_type: predicate_type?,
            signers: signers?,
            optional: optional?,
        })
    }

    fn policy(&mut self, name: &str, node: &Node, path: &str, owner: Loc) -> Option<Policy> {
        const KEYS: [&str; 5] = ["contract", "mode", "rules", "rule_modes", "waivers"];
        let f = self.mapping(node, path, owner, &KEYS, "key")?;
        let contract = self
            .required(&f, "contract", "the name of a contract")
            .and_then(|(n, p)| {
                let s = self.string(n, &p, "the name of a contract")?;
                self.reference(Kind::Contract, s.clone(), n, &p);
                Some(s)
            });
        let mode = match f.get("mode") {
            None => Some(Mode::Enforce),
            Some((n, p)) => match self.string(n, &p, "enforce or warn").as_deref() {
                Some("enforce") => Some(Mode::Enforce),
                Some("warn") => Some(Mode::Warn),
                Some(other) => {
                    self.err(
                        n.loc,
                        &p,
                        format!("unknown mode {other:?}; expected one of: enforce, warn"),
                    );
                    None
                }
                None => None,
            },
        };
        let rules = match f.get("rules") {
            None => Some(Rules::default()),
            Some((n, p)) => {
                let owner = f.entries.iter().find(|e| e.0 == "rules").map_or(n.loc, |e| e.1);
                self.rules(n, &p, owner)
            }
        };
        let modes = self.optional(&f, "rule_modes", |cx, n, p| {
            let owner = f.entries.iter().find(|e| e.0 == "rule_modes").map_or(n.loc, |e| e.1);
            cx.rule_modes(n, p, owner, rules.as_ref())
        });
        let rules = match (rules, modes) {
            (Some(mut r), Some(m)) => {
                r.modes = m.unwrap_or_default();
                Some(r)
            }
            _ => None,
        };
        let waivers = self.optional(&f, "waivers", |cx, n, p| {
            let s = cx.string(n, p, "a path inside the environment repository")?;
            match repo_relative(&s) {
                Some(clean) => Some(clean),
                None => {
                    let msg = format!("invalid waivers path {s:?}; expected a relative path inside the environment repository, without `..`");
                    cx.err(n.loc, p, msg);
                    None
                }
            }
        });
        Some(Policy {
            name: name.to_string(),
            contract: contract?,
            mode: mode?,
            rules: rules?,
            waivers: waivers?,
        })
    }

    fn rules(&mut self, node: &Node, path: &str, owner: Loc) -> Option<Rules> {
        const KEYS: [&str; 8] = [
            "digest_pinned",
            "no_latest_tag",
            "max_vulnerabilities",
            "sarif_max_errors",
            "provenance",
            "upstream",
            "chainloop",
            "rego",
        ];
        let f = self.mapping(node, path, owner, &KEYS, "rule")?;
        let owner_of = |key: &str| f.entries.iter().find(|e| e.0 == key).map_or(owner, |e| e.1);
        let digest_pinned = self.optional(&f, "digest_pinned", Self::boolean);
        let no_latest_tag = self.optional(&f, "no_latest_tag", Self::boolean);
        let max_vulnerabilities = self.optional(&f, "max_vulnerabilities", |cx, n, p| {
            let m = cx.mapping(n, p, owner_of("max_vulnerabilities"), &SEVERITIES, "severity")?;
            let mut out = BTreeMap::new();
            let mut ok = true;
            for (sev, _, v) in &m.entries {
                match cx.count(v, &child(p, sev)) {
                    Some(c) => {
                        out.insert(sev.to_string(), c);
                    }
                    None => ok = false,
                }
            }
            ok.then_some(out)
        });
        let sarif_max_errors = self.optional(&f, "sarif_max_errors", Self::count);
        let provenance = self.optional(&f, "provenance", |cx, n, p| {
            let m = cx.mapping(n, p, owner_of("provenance"), &["source_repo", "builder_id"], "key")?;
            let mut glob = |key: &str| {
                cx.optional(&m, key, |cx, n, p| {
                    let s = cx.string(n, p, "a glob pattern such as https://github.com/acme/*")?;
                    match globset::Glob::new(&s) {
                        Ok(_) => Some(s),
                        Err(e) => {
                            cx.err(n.loc, p, format!("invalid glob pattern {s:?}: {}", e.kind()));
                            None
                        }
                    }
                })
            };
            let (source_repo, builder_id) = (glob("source_repo"), glob("builder_id"));
            if matches!((&source_repo, &builder_id), (Some(None), Some(None))) {
                cx.err(
                    n.loc,
                    p,
                    "empty provenance rule; expected source_repo, builder_id or both",
                );
                return None;
            }
            Some(ProvenanceRule {
                source_repo: source_repo?,
                builder_id: builder_id?,
            })
        });
        let upstream = self.optional(&f, "upstream", |cx, n, p| {
            let m = cx.mapping(n, p, owner_of("upstream"), &["environment", "soak"], "key")?;
            let environment = cx
                .required(&m, "environment", "the name of an environment")
                .and_then(|(n, p)| {
                    let s = cx.string(n, &p, "the name of an environment")?;
                    cx.reference(Kind::Environment, s.clone(), n, &p);
                    Some(s)
                });
            let soak = match m.get("soak") {
                None => Some(Duration::ZERO),
                Some((n, p)) => cx.duration(n, &p),
            };
            Some(UpstreamRule {
                environment: environment?,
                soak: soak?,
            })
        });
        let chainloop = self.optional(&f, "chainloop", |cx, n, p| {
            let m = cx.mapping(n, p, owner_of("chainloop"), &["require_not_blocked"], "key")?;
            let require_not_blocked = match m.get("require_not_blocked") {
                None => Some(true),
                Some((n, p)) => cx.boolean(n, &p),
            };
            Some(ChainloopRule {
                require_not_blocked: require_not_blocked?,
            })
        });
        let rego = match f.get("rego") {
            None => Some((Vec::new(), Vec::new())),
            Some((n, p)) => self.rego_files(n, &p),
        };
        let (rego, rego_policies) = rego.unzip();
        Some(Rules {
            digest_pinned: digest_pinned?.unwrap_or(false),
            no_latest_tag: no_latest_tag?.unwrap_or(false),
            max_vulnerabilities: max_vulnerabilities?,
            sarif_max_errors: sarif_max_errors?,
            provenance: provenance?,
            upstream: upstream?,
            chainloop: chainloop?,
            rego: rego?,
            rego_policies: rego_policies?,
            modes: BTreeMap::new(),
        })
    }

    /// `rule_modes: {sarif_max_errors: warn, rego: enforce}`: each key a configured rule (or
    /// `contract`, every contract material), each value a mode.
    fn rule_modes(
        &mut self,
        node: &Node,
        path: &str,
        owner: Loc,
        rules: Option<&Rules>,
    ) -> Option<BTreeMap<String, Mode>> {
        const KEYS: [&str; 9] = [
            "contract",
            "digest_pinned",
            "no_latest_tag",
            "max_vulnerabilities",
            "sarif_max_errors",
            "provenance",
            "upstream",
            "chainloop",
            "rego",
        ];
        let m = self.mapping(node, path, owner, &KEYS, "rule")?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, _, value) in &m.entries {
            let p = child(path, key);
            // An override of a rule that is not configured does nothing: almost certainly a mistake.
            let configured = rules.is_none_or(|r| match *key {
                "digest_pinned" => r.digest_pinned,
                "no_latest_tag" => r.no_latest_tag,
                "max_vulnerabilities" => r.max_vulnerabilities.is_some(),
                "sarif_max_errors" => r.sarif_max_errors.is_some(),
                "provenance" => r.provenance.is_some(),
                "upstream" => r.upstream.is_some(),
                "chainloop" => r.chainloop.is_some(),
                "rego" => !r.rego.is_empty(),
                _ => true,
            });
            if !configured {
                let msg = format!(
                    "rule `{key}` is not configured in this policy's rules; expected a configured rule or `contract`"
                );
                self.err(value.loc, &p, msg);
                ok = false;
                continue;
            }
            match self.string(value, &p, "enforce or warn").as_deref() {
                Some("enforce") => {
                    out.insert(key.to_string(), Mode::Enforce);
                }
                Some("warn") => {
                    out.insert(key.to_string(), Mode::Warn);
                }
                Some(other) => {
                    let msg = format!("unknown mode {other:?}; expected one of: enforce, warn");
                    self.err(value.loc, &p, msg);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn rego_files(&mut self, node: &Node, path: &str) -> Option<(Vec<PathBuf>, Vec<crate::gate::rego::RegoPolicy>)> {
        const WHAT: &str = "a Rego file with `package tollgate`";
        let items = self.list(node, path, "Rego file paths")?;
        let mut out = Vec::new();
        let mut compiled = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{path}[{i}]");
            let Some((file, text)) = self.existing_file(item, &ip, WHAT) else {
                continue;
            };
            // tollgate reads `data.tollgate.result`; a policy in another package (Chainloop's
            // `package main`) would silently never produce violations.
            let declares = text.lines().any(|l| {
                let l = l.split('#').next().unwrap_or_default();
                let mut words = l.split_whitespace();
                words.next() == Some("package") && words.next() == Some("tollgate") && words.next().is_none()
            });
            if !declares {
                self.err(
                    item.loc,
                    &ip,
                    format!(
                        "{} does not declare `package tollgate`; expected {WHAT}",
                        file.display()
                    ),
                );
                continue;
            }
            // Compiled now, once: `validate` reports a Rego error with the file, and the daemon
            // never meets a policy it cannot run.
            let label = match &item.value {
                Value::Str(s) => s.clone(),
                _ => file.display().to_string(),
            };
            match crate::gate::rego::compile(&crate::gate::rego::rule_name(&file), &label, &text) {
                Ok(policy) => {
                    out.push(file);
                    compiled.push(policy);
                }
                Err(e) => self.err(item.loc, &ip, format!("{e} ({})", file.display())),
            }
        }
        (out.len() == items.len()).then_some((out, compiled))
    }

    fn environment(&mut self, name: &str, node: &Node, path: &str, owner: Loc) -> Option<Environment> {
        const KEYS: [&str; 7] = [
            "repository",
            "path",
            "promote_from",
            "policy",
            "write",
            "attest_promotions",
            "helm_image_keys",
        ];
        let f = self.mapping(node, path, owner, &KEYS, "key")?;
        let repository = self
            .required(&f, "repository", "the name of a repository")
            .and_then(|(n, p)| {
                let s = self.string(n, &p, "the name of a repository")?;
                self.reference(Kind::Repository, s.clone(), n, &p);
                Some(s)
            });
        let env_path = match f.get("path") {
            None => Some(String::new()),
            Some((n, p)) => self.string(n, &p, "a folder inside the repository").and_then(|s| {
                match repo_relative(s.trim_matches('/')) {
                    Some(clean) => Some(clean),
                    None if s.trim_matches('/').is_empty() => Some(String::new()),
                    None => {
                        self.err(
                            n.loc,
                            &p,
                            format!("invalid path {s:?}; expected a folder inside the repository, without `..`"),
                        );
                        None
                    }
                }
            }),
        };
        let promote_from = self.optional(&f, "promote_from", |cx, n, p| {
            let s = cx.string(n, p, "the name of the upstream environment")?;
            cx.reference(Kind::Environment, s.clone(), n, p);
            cx.promote_from.insert(name.to_string(), (s.clone(), n.loc));
            Some(s)
        });
        let policy = self.optional(&f, "policy", |cx, n, p| {
            let s = cx.string(n, p, "the name of a policy")?;
            cx.reference(Kind::Policy, s.clone(), n, p);
            Some(s)
        });
        if let (Some(Some(_)), Some(None)) = (&promote_from, &policy) {
            if !f.has("policy") {
                self.err(owner, &child(path, "policy"), "missing required key: an environment with promote_from needs a policy; expected the name of a policy");
            } else {
                let at = f.entries.iter().find(|e| e.0 == "policy").map_or(owner, |e| e.2.loc);
                self.err(
                    at,
                    &child(path, "policy"),
                    "an environment with promote_from needs a policy; expected the name of a policy, found nothing",
                );
            }
        }
        let write = match f.get("write") {
            None => Some(WriteMode::Direct),
            Some((n, p)) => self.write_mode(n, &p),
        };
        let attest_promotions = self.optional(&f, "attest_promotions", |cx, n, p| {
            const WHAT: &str = "a PEM PKCS#8 P-256 private key file";
            let m = cx.mapping(n, p, n.loc, &["key"], "key")?;
            let (kn, kp) = cx.required(&m, "key", WHAT)?;
            let (file, pem) = cx.existing_file(kn, &kp, WHAT)?;
            match SigningKey::from_pem(&pem) {
                Ok(_) => Some(file),
                Err(e) => {
                    cx.err(kn.loc, &kp, format!("{}: {e}", file.display()));
                    None
                }
            }
        });
        let helm_image_keys = match f.get("helm_image_keys") {
            None => Some(Vec::new()),
            Some((n, p)) => self.helm_image_keys(n, &p),
        };
        if matches!((&promote_from, &policy), (Some(Some(_)), Some(None))) {
            return None;
        }
        Some(Environment {
            name: name.to_string(),
            repository: repository?,
            path: env_path?,
            promote_from: promote_from?,
            policy: policy?,
            write: write?,
            attest_promotions: attest_promotions?,
            helm_image_keys: helm_image_keys?,
        })
    }

    /// `helm_image_keys: [image, worker.image]`: dotted key paths from the values root to image mappings.
    fn helm_image_keys(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        const WHAT: &str = "a dotted key path from the values root, such as image or worker.image";
        let items = self.list(node, path, "Helm image key paths")?;
        if items.is_empty() {
            self.err(
                node.loc,
                path,
                "no key paths; expected at least one, or leave helm_image_keys out to find every `image` mapping",
            );
            return None;
        }
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = format!("{path}[{i}]");
            let Some(key) = self.string(item, &ip, WHAT) else {
                continue;
            };
            let dotted = key
                .split('.')
                .all(|part| !part.is_empty() && !part.chars().any(|c| c.is_whitespace() || c.is_control()));
            if dotted {
                out.push(key);
            } else {
                self.err(item.loc, &ip, format!("invalid key path {key:?}; expected {WHAT}"));
            }
        }
        (out.len() == items.len()).then_some(out)
    }

    fn write_mode(&mut self, node: &Node, path: &str) -> Option<WriteMode> {
        const SHAPES: &str = "{mode: direct} or {mode: branch, branch: 'tollgate/promote/{env}/{image}'}";
        if !matches!(node.value, Value::Map(_)) {
            self.err(
                node.loc,
                path,
                format!("expected {SHAPES}, found {}", node.value.describe()),
            );
            return None;
        }
        let f = self.mapping(node, path, node.loc, &["mode", "branch"], "key")?;
        let (mn, mp) = self.required(&f, "mode", "direct or branch")?;
        match self.string(mn, &mp, "direct or branch")?.as_str() {
            "direct" => {
                if let Some((bn, bp)) = f.get("branch") {
                    self.err(
                        bn.loc,
                        &bp,
                        "only used with `mode: branch`; remove it or set mode: branch",
                    );
                    return None;
                }
                Some(WriteMode::Direct)
            }
            "branch" => {
                let (bn, bp) = self.required(
                    &f,
                    "branch",
                    "a branch name template such as 'tollgate/promote/{env}/{image}'",
                )?;
                let template = self.string(bn, &bp, "a branch name template")?;
                match branch_template_problem(&template) {
                    None => Some(WriteMode::Branch { branch: template }),
                    Some(problem) => {
                        self.err(
                            bn.loc,
                            &bp,
                            format!("{problem}; expected a branch name template using {{env}} and {{image}}"),
                        );
                        None
                    }
                }
            }
            other => {
                self.err(
                    mn.loc,
                    &mp,
                    format!("unknown write mode {other:?}; expected one of: direct, branch"),
                );
                None
            }
        }
    }
}

fn default_author() -> Author {
    Author {
        name: "tollgate".into(),
        email: "tollgate@localhost".into(),
    }
}

/// A path inside a repository, normalised (`./a//b/` → `a/b`); `None` if absolute, empty or escaping.
fn repo_relative(s: &str) -> Option<String> {
    if s.starts_with('/') || s.contains('\\') {
        return None;
    }
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

/// `ssh://…` or scp-like `git@host:path`.
fn is_ssh_url(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, _)) => scheme == "ssh",
        None => !url.starts_with('/') && is_git_url(url),
    }
}

fn is_git_url(url: &str) -> bool {
    if url.chars().any(char::is_whitespace) {
        return false;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return matches!(scheme, "https" | "http" | "ssh" | "git" | "file") && !rest.is_empty();
    }
    if url.starts_with('/') {
        return true;
    }
    // scp-like `git@host:path`: a host before the first ':' and no '/' in it.
    match url.split_once(':') {
        Some((host, path)) => !host.is_empty() && !host.contains('/') && !path.is_empty(),
        None => false,
    }
}

/// The host part of a registry key (`host`, `host:port`, `[v6]:port`, bare IPv6), if well-formed.
fn registry_host(key: &str) -> Option<&str> {
    let valid_port = |p: &str| p.parse::<u16>().is_ok();
    let host = if let Some(rest) = key.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => h,
            _ => {
                let port = after.strip_prefix(':')?;
                valid_port(port).then_some(h)?
            }
        }
    } else if key.matches(':').count() > 1 {
        key.parse::<std::net::Ipv6Addr>().ok()?;
        key
    } else if let Some((h, port)) = key.split_once(':') {
        valid_port(port).then_some(h)?
    } else {
        key
    };
    let ok = !host.is_empty()
        && (host.parse::<IpAddr>().is_ok() || host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    ok.then_some(host)
}

fn is_loopback_host(key: &str) -> bool {
    match registry_host(key) {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false),
        None => false,
    }
}

/// Why a `write.branch` template cannot become a branch name, if it cannot.
fn branch_template_problem(t: &str) -> Option<String> {
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Some("unclosed `{` in the template".into());
        };
        let name = &after[..close];
        if name != "env" && name != "image" {
            return Some(format!("unknown placeholder {{{name}}}"));
        }
        rest = &after[close + 1..];
    }
    // tollgate replaces its promotion branches without a fast-forward (a newer candidate supersedes the old
    // one): keeping them under `tollgate/` means such an update can never land on a branch people work on.
    if !t.starts_with("tollgate/") {
        return Some(format!(
            "{t:?} is outside tollgate's branch namespace: it must start with `tollgate/`"
        ));
    }
    let literal = t.replace("{env}", "e").replace("{image}", "i");
    let bad = literal.starts_with('/')
        || literal.ends_with('/')
        || literal.ends_with(".lock")
        || literal.contains("..")
        || literal.contains("//")
        || literal.contains('}')
        || literal
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    bad.then(|| format!("{t:?} is not a valid git branch name"))
}
