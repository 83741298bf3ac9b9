//! Signatures over commit objects (`repositories.<name>.signing`), made the way git makes them: the commit
//! buffer is signed by `ssh-keygen -Y sign -n git` (git's `gpg.format=ssh`) or `gpg --detach-sign --armor`,
//! and the armored signature goes into the commit's `gpgsig` header. `git verify-commit` checks them.
//!
//! The tools run as child processes rather than as linked crypto: they are what verifiers use, they keep the
//! private key handling (agent, smartcards, key formats) where operators already manage it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::config::CommitSigning;

/// Signs `payload` (a commit buffer); returns the ASCII-armored signature. `gnupg_home` is where an OpenPGP
/// `gpg_key_file` is imported (tollgate's own keyring, created 0700 on first use).
pub(crate) fn sign(signing: &CommitSigning, gnupg_home: &Path, payload: &[u8]) -> Result<String, String> {
    match signing {
        CommitSigning::Ssh { key_file } => {
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-q", "-Y", "sign", "-n", "git", "-f"]).arg(key_file);
            run("ssh-keygen", &mut cmd, payload)
        }
        CommitSigning::OpenPgp { key_file, key_id } => {
            let mut user = key_id.clone();
            let mut cmd = Command::new("gpg");
            if let Some(file) = key_file {
                prepare_home(gnupg_home)?;
                let mut import = Command::new("gpg");
                import
                    .arg("--homedir")
                    .arg(gnupg_home)
                    .args(["--batch", "--no-tty", "--quiet", "--import"])
                    .arg(file);
                run("gpg --import", &mut import, b"")?;
                if user.is_none() {
                    // The file's own key, not whichever secret key an earlier rotation left in the keyring.
                    user = Some(fingerprint(gnupg_home, file)?);
                }
                cmd.arg("--homedir").arg(gnupg_home);
            }
            cmd.args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--detach-sign",
                "--armor",
            ]);
            if let Some(user) = &user {
                cmd.args(["--local-user", user]);
            }
            run("gpg", &mut cmd, payload)
        }
    }
}

fn prepare_home(home: &Path) -> Result<(), String> {
    if home.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(home)
        .map_err(|e| format!("cannot create the keyring folder {}: {e}", home.display()))
}

/// The primary key fingerprint of the first key in an armored key file.
fn fingerprint(home: &Path, file: &Path) -> Result<String, String> {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--no-tty",
            "--with-colons",
            "--import-options",
            "show-only",
            "--import",
        ])
        .arg(file);
    let listing = run("gpg --import-options show-only", &mut cmd, b"")?;
    listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:").map(|r| r.trim_matches(':').to_string()))
        .filter(|f| !f.is_empty())
        .ok_or_else(|| format!("gpg_key_file {} holds no OpenPGP key", file.display()))
}

/// Runs `cmd` with `input` on stdin; its stdout on success, or an error quoting its stderr.
fn run(what: &str, cmd: &mut Command, input: &[u8]) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}; is it installed and on PATH?"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that fails early closes stdin: its exit status and stderr say why, not this write.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(|e| format!("{what} failed: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{what} wrote a signature that is not text"))
}
