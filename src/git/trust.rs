//! Who the server is: SSH host keys checked against an OpenSSH `known_hosts` file, and HTTPS server certificates
//! checked against a configured CA file. Pure functions over bytes (plus reading the configured file), called
//! from libgit2's `certificate_check` callback in `auth.rs`.
//!
//! A production daemon must never trust a host key on first use: a man in the middle would then receive the
//! push credentials and could feed tollgate a forged environment. So an SSH host key is accepted only when a
//! `known_hosts` file lists it for this host and port.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// What a `known_hosts` file says about a host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKeyCheck {
    /// The key is listed for this host.
    Match,
    /// The host is listed, with other keys only: the key changed, or someone is in the middle.
    Mismatch,
    /// The host is not listed at all.
    Unknown,
    /// The key is marked `@revoked`.
    Revoked,
}

/// The name `known_hosts` lists a server under: `host` on port 22, `[host]:port` elsewhere (as `ssh-keyscan -p`
/// writes it).
pub(crate) fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// Checks `key` (the SSH wire-format public key blob, what `known_hosts` holds in base64) for the server
/// `name` (see [`known_hosts_name`]) against the text of a `known_hosts` file.
///
/// Understood: comma-separated host patterns with `*`/`?` wildcards and `!` negation, and the `@revoked`
/// marker. Hashed host names (`|1|…`, from `ssh-keyscan -H`) and `@cert-authority` lines are skipped: list
/// plain host names in the file tollgate reads.
pub(crate) fn check_known_hosts(text: &str, name: &str, key: &[u8]) -> HostKeyCheck {
    use base64::Engine as _;
    let mut host_listed = false;
    let mut matched = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = first.strip_prefix('@');
        if marker.is_some() {
            first = fields.next().unwrap_or_default();
        }
        let (Some(_key_type), Some(blob)) = (fields.next(), fields.next()) else {
            continue;
        };
        if marker == Some("cert-authority") || first.starts_with('|') || !hosts_match(first, name) {
            continue;
        }
        let Ok(listed) = base64::engine::general_purpose::STANDARD.decode(blob) else {
            continue;
        };
        let same = listed == key;
        match marker {
            Some("revoked") if same => return HostKeyCheck::Revoked,
            Some(_) => {}
            None => {
                host_listed = true;
                matched |= same;
            }
        }
    }
    match (matched, host_listed) {
        (true, _) => HostKeyCheck::Match,
        (false, true) => HostKeyCheck::Mismatch,
        (false, false) => HostKeyCheck::Unknown,
    }
}

/// `patterns` as in sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT": any positive match and no negated match.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut any = false;
    for p in patterns.split(',') {
        match p.strip_prefix('!') {
            Some(neg) if wildcard(neg, name) => return false,
            Some(_) => {}
            None => any |= wildcard(p, name),
        }
    }
    any
}

fn wildcard(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Verifies an HTTPS server certificate (DER, as the TLS handshake presented it) for `host` against the CA
/// certificates in the PEM file `ca_file`: a chain from one of them, valid `now`, for server authentication,
/// naming `host` (a DNS name or an IP address in the subject alternative names). libgit2 hands over the leaf
/// certificate only, so an intermediate CA must be listed in `ca_file` itself.
pub(crate) fn verify_server_certificate(ca_file: &Path, leaf: &[u8], host: &str, now: UnixTime) -> Result<(), String> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read ca_file {}: {e}", ca_file.display()))?;
    if cas.is_empty() {
        return Err(format!("ca_file {} holds no PEM certificate", ca_file.display()));
    }
    let anchors = cas
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "ca_file {} holds a certificate that cannot be a CA: {e}",
                ca_file.display()
            )
        })?;
    let leaf = CertificateDer::from(leaf);
    let cert =
        webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("the server certificate is malformed: {e}"))?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| {
        format!(
            "the server certificate does not chain to ca_file {}: {e}",
            ca_file.display()
        )
    })?;
    let name = ServerName::try_from(host).map_err(|_| format!("`{host}` is not a valid server name"))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|e| format!("the server certificate is not valid for `{host}`: {e}"))
}

/// Host and port of an SSH URL (`ssh://[user@]host[:port]/path` or scp-like `[user@]host:path`), for the
/// `known_hosts` lookup: libgit2 tells the callback the host but not the port.
pub(crate) fn ssh_host_port(url: &str) -> Option<(String, u16)> {
    let (authority, default_port) = match url.split_once("://") {
        Some(("ssh" | "git+ssh" | "ssh+git", rest)) => (rest.split('/').next()?, true),
        Some(_) => return None,
        None => (url.split(':').next()?, false),
    };
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if !default_port {
        return Some((hostport.to_string(), 22));
    }
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 22,
        };
        return Some((host.to_string(), port));
    }
    match hostport.split_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((hostport.to_string(), 22)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIB0k1v3bXs8Y3Fq1Zc2c8bH6mG9HcQyYV1C3w8rB1m8t";

    fn blob(b64: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
    }

    #[test]
    fn known_hosts_matches_host_and_port_and_key() {
        let text =
            format!("# comment\n|1|abc=|def= ssh-ed25519 {KEY_B}\n[127.0.0.1]:2222,git.example ssh-ed25519 {KEY_A}\n");
        let name = known_hosts_name("127.0.0.1", 2222);
        assert_eq!(check_known_hosts(&text, &name, &blob(KEY_A)), HostKeyCheck::Match);
        assert_eq!(check_known_hosts(&text, &name, &blob(KEY_B)), HostKeyCheck::Mismatch);
        // The same host on another port is another server.
        assert_eq!(
            check_known_hosts(&text, &known_hosts_name("127.0.0.1", 22), &blob(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check_known_hosts(&text, "git.example", &blob(KEY_A)),
            HostKeyCheck::Match
        );
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let text = format!("*.example,!evil.example ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n");
        assert_eq!(
            check_known_hosts(&text, "git.example", &blob(KEY_A)),
            HostKeyCheck::Match
        );
        assert_eq!(
            check_known_hosts(&text, "evil.example", &blob(KEY_A)),
            HostKeyCheck::Unknown
        );
        assert_eq!(
            check_known_hosts(&text, "git.example", &blob(KEY_B)),
            HostKeyCheck::Revoked
        );
    }

    #[test]
    fn ssh_urls_give_host_and_port() {
        assert_eq!(
            ssh_host_port("ssh://root@127.0.0.1:2222/srv/envs.git"),
            Some(("127.0.0.1".into(), 2222))
        );
        assert_eq!(
            ssh_host_port("ssh://git.example/envs.git"),
            Some(("git.example".into(), 22))
        );
        assert_eq!(
            ssh_host_port("git@github.com:acme/envs.git"),
            Some(("github.com".into(), 22))
        );
        assert_eq!(ssh_host_port("ssh://[::1]:2200/x"), Some(("::1".into(), 2200)));
        assert_eq!(ssh_host_port("https://x/y"), None);
    }
}
