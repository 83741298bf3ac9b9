//! Registry credentials from the config: password and token files, and the `auths` section of a
//! docker `config.json` (no credential helpers: tollgate runs unattended and must not exec them).

use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth as OciAuth;

use super::StoreError;
use crate::config::RegistryAuth;

/// The credentials to present to `host`, read once at startup.
pub fn credentials(host: &str, auth: &RegistryAuth) -> Result<OciAuth, StoreError> {
    Ok(match auth {
        RegistryAuth::Anonymous => OciAuth::Anonymous,
        RegistryAuth::Basic {
            username,
            password_file,
        } => OciAuth::Basic(username.clone(), read_secret(host, "password_file", password_file)?),
        RegistryAuth::Bearer { token_file } => OciAuth::Bearer(read_secret(host, "token_file", token_file)?),
        RegistryAuth::DockerConfig { path } => {
            let bytes = std::fs::read(path).map_err(|e| StoreError::credentials(host, "docker_config", path, e))?;
            docker_config_auth(&bytes, host).map_err(|e| StoreError::credentials(host, "docker_config", path, e))?
        }
    })
}

/// A secret file's content without the trailing newline editors and `echo` add.
fn read_secret(host: &str, what: &'static str, path: &Path) -> Result<String, StoreError> {
    let s = std::fs::read_to_string(path).map_err(|e| StoreError::credentials(host, what, path, e))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(StoreError::credentials(host, what, path, "the file is empty"));
    }
    Ok(s)
}

/// The entry for `host` in a docker `config.json`. Keys may be written as `host`, `https://host`
/// or `https://host/v1/`; Docker Hub is also known as `index.docker.io`. No entry means anonymous,
/// as with `docker pull`.
pub fn docker_config_auth(json: &[u8], host: &str) -> Result<OciAuth, String> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize, Default)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
        registrytoken: Option<String>,
        identitytoken: Option<String>,
    }
    let file: File = serde_json::from_slice(json).map_err(|e| format!("not a docker config.json: {e}"))?;
    let wanted = normalise(host);
    let Some(entry) = file.auths.iter().find(|(k, _)| normalise(k) == wanted).map(|(_, v)| v) else {
        return Ok(OciAuth::Anonymous);
    };
    if let Some(token) = &entry.registrytoken {
        return Ok(OciAuth::Bearer(token.clone()));
    }
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| format!("auths.\"{host}\".auth is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| format!("auths.\"{host}\".auth is not UTF-8"))?;
        let (user, pass) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths.\"{host}\".auth is not `user:password`"))?;
        return Ok(OciAuth::Basic(user.to_string(), pass.to_string()));
    }
    match (&entry.username, &entry.password) {
        (Some(u), Some(p)) => Ok(OciAuth::Basic(u.clone(), p.clone())),
        _ if entry.identitytoken.is_some() => {
            Err(format!("auths.\"{host}\" holds an identitytoken (OAuth refresh token), which tollgate does not support; use username/password or a token_file"))
        }
        _ => Err(format!("auths.\"{host}\" has neither `auth` nor `username` and `password`")),
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://h:5000/` → `h:5000`.
fn normalise(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_username_password_and_hub_aliases() {
        let cfg = br#"{"auths":{
            "ghcr.io":{"auth":"dXNlcjpwYTpzcw=="},
            "https://index.docker.io/v1/":{"username":"hub","password":"pw"},
            "quay.io":{"registrytoken":"tok"}}}"#;
        assert_eq!(
            docker_config_auth(cfg, "ghcr.io").unwrap(),
            OciAuth::Basic("user".into(), "pa:ss".into())
        );
        assert_eq!(
            docker_config_auth(cfg, "docker.io").unwrap(),
            OciAuth::Basic("hub".into(), "pw".into())
        );
        assert_eq!(
            docker_config_auth(cfg, "quay.io").unwrap(),
            OciAuth::Bearer("tok".into())
        );
        assert_eq!(docker_config_auth(cfg, "example.com").unwrap(), OciAuth::Anonymous);
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        let err = docker_config_auth(br#"{"auths":{"h":{"auth":"!!"}}}"#, "h").unwrap_err();
        assert!(err.contains("not base64"), "{err}");
        let err = docker_config_auth(br#"{"auths":{"h":{"identitytoken":"x"}}}"#, "h").unwrap_err();
        assert!(err.contains("identitytoken"), "{err}");
        assert!(docker_config_auth(b"nope", "h").is_err());
    }
}
