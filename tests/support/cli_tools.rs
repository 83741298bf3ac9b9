//! The command-line tools the integration tests drive as users do: the git CLI (as the author of
//! upstream bumps, "Flux") and tests/support/intoto_attest.py, the independent in-toto producer.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate::image::Digest;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `git ARGS` in `dir` as the image automation bot; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Flux",
            "-c",
            "user.email=flux@example.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tests/support/intoto_attest.py (PyPI in-toto + securesystemslib) for `subject` and returns
/// the DSSE envelope. It writes `<name>.pub` (and `key_out` if given) into `dir`; `key_in` reuses a key.
pub fn intoto(
    dir: &Path,
    name: &str,
    subject: &Digest,
    predicate_type: &str,
    key_in: Option<&Path>,
    key_out: Option<&Path>,
) -> Vec<u8> {
    let python = root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-deps.sh",
        python.display()
    );
    let predicate = dir.join(format!("{name}.predicate.json"));
    std::fs::write(
        &predicate,
        r#"{"builder": {"id": "https://github.com/acme/ci"}, "components": []}"#,
    )
    .unwrap();
    let out_path = dir.join(format!("{name}.dsse.json"));
    let mut cmd = Command::new(python);
    cmd.arg(root().join("tests/support/intoto_attest.py"))
        .args([
            "--subject-name",
            "127.0.0.1/acme/api",
            "--digest",
            subject.as_str(),
            "--predicate-type",
            predicate_type,
        ])
        .arg("--predicate")
        .arg(&predicate)
        .arg("--out")
        .arg(&out_path)
        .arg("--pubkey-out")
        .arg(dir.join(format!("{name}.pub")));
    if let Some(k) = key_in {
        cmd.arg("--key-in").arg(k);
    }
    if let Some(k) = key_out {
        cmd.arg("--key-out").arg(k);
    }
    let out = cmd.output().expect("python runs");
    assert!(
        out.status.success(),
        "intoto_attest.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(out_path).unwrap()
}
