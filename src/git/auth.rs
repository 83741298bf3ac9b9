//! The libgit2 callbacks that say who tollgate is and who the server is: credentials for [`GitAuth`], and the
//! server check against `known_hosts_file` (SSH) or `ca_file` (HTTPS), see `trust.rs`.
//!
//! The credentials callback answers once, then gives up with a message that says why.
//!
//! libgit2 calls the callback again after the remote rejects what it returned, and keeps doing so for as long
//! as the callback hands out credentials: returning the same wrong token would loop forever. So every
//! callback answers a single real attempt and fails the second with "rejected"; the message is kept in
//! [`AuthState`] so the caller can report it as [`super::GitError::Auth`] instead of a bare libgit2 error.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use git2::cert::Cert;
use git2::{CertificateCheckStatus, Cred, CredentialType, RemoteCallbacks};

use super::trust::{self, HostKeyCheck};
use crate::config::GitAuth;

/// How to reach and trust one remote, from `repositories.<name>`.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) auth: GitAuth,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) known_hosts_file: Option<PathBuf>,
    /// From the URL: libgit2 tells the certificate callback the host but not the port, and `known_hosts`
    /// lists non-default ports as `[host]:port`.
    pub(crate) ssh_port: u16,
}

/// The HTTPS user name for token auth: accepted with a token as password by GitHub, Gitea and GitLab.
const TOKEN_USERNAME: &str = "x-access-token";
/// SSH user when the URL names none (`ssh://host/path`).
const DEFAULT_SSH_USER: &str = "git";

/// Per-operation state of the callback: how many credentials it handed out, and why it gave up, if it did.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    attempts: Cell<u32>,
    failure: RefCell<Option<String>>,
    /// Why the server's identity was not accepted, if it was not.
    server: RefCell<Option<String>>,
}

impl AuthState {
    /// Why the callback refused to go on, if it did: the actionable cause of an authentication failure.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Why the server's host key or certificate was refused, if it was.
    pub(crate) fn server_failure(&self) -> Option<String> {
        self.server.borrow().clone()
    }

    fn refuse_server(&self, message: String) -> git2::Error {
        let err = git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssh, message.as_str());
        *self.server.borrow_mut() = Some(message);
        err
    }

    fn fail(&self, message: String) -> git2::Error {
        let err = git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Net, message.as_str());
        *self.failure.borrow_mut() = Some(message);
        err
    }
}

/// Remote callbacks with the credentials and server checks for `access` installed; add push callbacks on top.
pub(crate) fn callbacks<'a>(access: &'a Access, state: &'a AuthState) -> RemoteCallbacks<'a> {
    let mut cbs = RemoteCallbacks::new();
    cbs.credentials(move |_url, username_from_url, allowed| {
        credentials(&access.auth, state, username_from_url, allowed)
    });
    cbs.certificate_check(move |cert, host| check_server(access, state, cert, host));
    cbs
}

/// Accepts the server if the configured file vouches for it. Without `known_hosts_file` libgit2's own check
/// against `~/.ssh/known_hosts` decides (an unlisted key is refused there too); without `ca_file` the system
/// trust store decides.
fn check_server(
    access: &Access,
    state: &AuthState,
    cert: &Cert<'_>,
    host: &str,
) -> Result<CertificateCheckStatus, git2::Error> {
    if let Some(hostkey) = cert.as_hostkey() {
        let Some(file) = &access.known_hosts_file else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let name = trust::known_hosts_name(host, access.ssh_port);
        let fingerprint = hostkey
            .hash_sha256()
            .map(|h| {
                use base64::Engine as _;
                format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(h))
            })
            .unwrap_or_else(|| "unknown fingerprint".into());
        let Some(key) = hostkey.hostkey() else {
            return Err(state.refuse_server(format!("{name} sent no host key")));
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| state.refuse_server(format!("cannot read known_hosts_file {}: {e}", file.display())))?;
        let file = file.display();
        return match trust::check_known_hosts(&text, &name, key) {
            HostKeyCheck::Match => Ok(CertificateCheckStatus::CertificateOk),
            HostKeyCheck::Mismatch => Err(state.refuse_server(format!(
                "the SSH host key of {name} ({fingerprint}) is not the one listed in {file}: the server key changed \
                 or someone is in the middle; update the file only after checking the new key out of band"
            ))),
            HostKeyCheck::Unknown => Err(state.refuse_server(format!(
                "{name} (host key {fingerprint}) is not listed in known_hosts_file {file}; add it \
                 (`ssh-keyscan -p PORT HOST`, checked out of band)"
            ))),
            HostKeyCheck::Revoked => Err(state.refuse_server(format!(
                "the SSH host key of {name} ({fingerprint}) is marked @revoked in {file}"
            ))),
        };
    }
    if let (Some(x509), Some(ca_file)) = (cert.as_x509(), &access.ca_file) {
        return match trust::verify_server_certificate(ca_file, x509.data(), host, rustls_pki_types::UnixTime::now()) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(why) => {
                // The system store may still trust it; if it does not, this is the reason worth reporting.
                *state.server.borrow_mut() = Some(why);
                Ok(CertificateCheckStatus::CertificatePassthrough)
            }
        };
    }
    Ok(CertificateCheckStatus::CertificatePassthrough)
}

fn credentials(
    auth: &GitAuth,
    state: &AuthState,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let ssh_user = username_from_url.unwrap_or(DEFAULT_SSH_USER);
    // SSH first asks for a user name alone; that is not an attempt at authenticating.
    if allowed == CredentialType::USERNAME {
        return Cred::username(ssh_user);
    }
    let attempt = state.attempts.get();
    state.attempts.set(attempt + 1);
    if attempt > 0 {
        return Err(state.fail(match auth {
            GitAuth::None => "the remote requires credentials and none are configured".to_string(),
            GitAuth::Token { token_file } => format!("the remote rejected the token from {}", token_file.display()),
            GitAuth::Basic {
                username,
                password_file,
            } => format!(
                "the remote rejected user `{username}` with the password from {}",
                password_file.display()
            ),
            GitAuth::SshKey { ssh_key_file } => {
                format!(
                    "the remote rejected the SSH key {} for user `{ssh_user}`",
                    ssh_key_file.display()
                )
            }
        }));
    }
    match auth {
        GitAuth::None if allowed.contains(CredentialType::SSH_KEY) => {
            // Without configured auth an SSH URL can still work through a running ssh-agent.
            Cred::ssh_key_from_agent(ssh_user)
                .map_err(|e| state.fail(format!("no auth configured and no usable ssh-agent: {}", e.message())))
        }
        GitAuth::None => Err(state.fail("the remote requires credentials and none are configured".to_string())),
        GitAuth::Token { token_file } => {
            require(
                state,
                allowed,
                CredentialType::USER_PASS_PLAINTEXT,
                "token_file works with https:// URLs only",
            )?;
            let token = read_secret(state, token_file, "token_file")?;
            Cred::userpass_plaintext(TOKEN_USERNAME, &token)
        }
        GitAuth::Basic {
            username,
            password_file,
        } => {
            require(
                state,
                allowed,
                CredentialType::USER_PASS_PLAINTEXT,
                "a password works with https:// URLs only",
            )?;
            let password = read_secret(state, password_file, "password_file")?;
            Cred::userpass_plaintext(username, &password)
        }
        GitAuth::SshKey { ssh_key_file } => {
            require(
                state,
                allowed,
                CredentialType::SSH_KEY,
                "ssh_key_file works with ssh:// and git@host:path URLs only",
            )?;
            Cred::ssh_key(ssh_user, None, ssh_key_file, None).map_err(|e| {
                state.fail(format!(
                    "cannot use SSH key {}: {}",
                    ssh_key_file.display(),
                    e.message()
                ))
            })
        }
    }
}

fn require(state: &AuthState, allowed: CredentialType, needed: CredentialType, msg: &str) -> Result<(), git2::Error> {
    if allowed.contains(needed) {
        Ok(())
    } else {
        Err(state.fail(msg.to_string()))
    }
}

/// Reads a secret at the moment it is needed, so that a rotated token is picked up without a restart.
fn read_secret(state: &AuthState, path: &Path, key: &str) -> Result<String, git2::Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| state.fail(format!("cannot read {key} {}: {e}", path.display())))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(state.fail(format!("{key} {} is empty", path.display())));
    }
    Ok(secret.to_string())
}
