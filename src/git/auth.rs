//! The libgit2 credentials callback for [`GitAuth`]: answers once, then gives up with a message that says why.
//!
//! libgit2 calls the callback again after the remote rejects what it returned, and keeps doing so for as long
//! as the callback hands out credentials: returning the same wrong token would loop forever. So every
//! callback answers a single real attempt and fails the second with "rejected"; the message is kept in
//! [`AuthState`] so the caller can report it as [`super::GitError::Auth`] instead of a bare libgit2 error.

use std::cell::{Cell, RefCell};
use std::path::Path;

use git2::{Cred, CredentialType, RemoteCallbacks};

use crate::config::GitAuth;

/// The HTTPS user name for token auth: accepted with a token as password by GitHub, Gitea and GitLab.
const TOKEN_USERNAME: &str = "x-access-token";
/// SSH user when the URL names none (`ssh://host/path`).
const DEFAULT_SSH_USER: &str = "git";

/// Per-operation state of the callback: how many credentials it handed out, and why it gave up, if it did.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    attempts: Cell<u32>,
    failure: RefCell<Option<String>>,
}

impl AuthState {
    /// Why the callback refused to go on, if it did: the actionable cause of an authentication failure.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    fn fail(&self, message: String) -> git2::Error {
        let err = git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Net, message.as_str());
        *self.failure.borrow_mut() = Some(message);
        err
    }
}

/// Remote callbacks with the credentials callback for `auth` installed; add push callbacks on top.
pub(crate) fn callbacks<'a>(auth: &'a GitAuth, state: &'a AuthState) -> RemoteCallbacks<'a> {
    let mut cbs = RemoteCallbacks::new();
    cbs.credentials(move |_url, username_from_url, allowed| credentials(auth, state, username_from_url, allowed));
    cbs
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
