//! A manifest GET that enforces the manifest size limit while reading: oci-client's
//! `pull_manifest_raw` buffers the whole body before anyone can look at its size, so a hostile
//! registry could stream gigabytes into memory within the request timeout. Here the declared
//! `Content-Length` is checked before reading and the body is read chunk by chunk, stopping at the
//! limit. Credentials come from oci-client (`Client::auth`: the bearer-token dance), so the
//! configured auth means the same thing as for every other request.

use std::collections::HashMap;

use base64::Engine as _;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::manifest::Limits;

/// What the registry sent: the manifest, or word that it is over the limit (and how big it said it
/// was, if it said).
#[derive(Debug)]
pub(crate) enum Got {
    Body(Vec<u8>),
    TooLarge { declared: Option<u64> },
}

/// Error bodies are read only this far (they are only ever shown, truncated).
const MAX_ERROR_BODY: usize = 4096;

pub(crate) struct BoundedGet {
    http: reqwest::Client,
    scheme: &'static str,
    /// `Authorization` header value per repository (bearer tokens are scoped to one), `None` for
    /// anonymous access. Refreshed once on a 401 (an expired token).
    authz: tokio::sync::Mutex<HashMap<String, Option<String>>>,
}

impl BoundedGet {
    pub(crate) fn new(insecure: bool, limits: &Limits) -> Result<BoundedGet, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(limits.request_timeout)
            .read_timeout(limits.request_timeout)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            // As oci-client (reqwest's default): registries may redirect, e.g. to a mirror. The
            // registry is trusted to name its hosts as it is to serve the bytes (whose digest is
            // checked anyway), and reqwest drops `Authorization` on a redirect to another host.
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()?;
        Ok(BoundedGet {
            http,
            scheme: if insecure { "http" } else { "https" },
            authz: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// GETs the manifest at `r`, reading at most `max` bytes of it.
    pub(crate) async fn get(
        &self,
        client: &Client,
        auth: &OciAuth,
        r: &Reference,
        accept: &[&str],
        max: u64,
    ) -> Result<Got, OciDistributionError> {
        let reference = r.digest().or(r.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{reference}",
            self.scheme,
            r.resolve_registry(),
            r.repository()
        );
        let mut refreshed = false;
        loop {
            let authz = self.authorization(client, auth, r, refreshed).await?;
            let mut req = self.http.get(&url).header(reqwest::header::ACCEPT, accept.join(", "));
            if let Some(a) = &authz {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let mut res = req.send().await?;
            let status = res.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && !refreshed {
                refreshed = true;
                continue;
            }
            if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                return Err(OciDistributionError::UnauthorizedError { url });
            }
            if !status.is_success() {
                let mut message = Vec::new();
                while let Some(chunk) = res.chunk().await.ok().flatten() {
                    message.extend_from_slice(&chunk);
                    if message.len() >= MAX_ERROR_BODY {
                        break;
                    }
                }
                message.truncate(MAX_ERROR_BODY);
                return Err(OciDistributionError::ServerError {
                    code: status.as_u16(),
                    url,
                    message: String::from_utf8_lossy(&message).into_owned(),
                });
            }
            if let Some(n) = res.content_length().filter(|n| *n > max) {
                return Ok(Got::TooLarge { declared: Some(n) });
            }
            // The declared length can lie or be absent (chunked): count what actually arrives.
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await? {
                if body.len() as u64 + chunk.len() as u64 > max {
                    return Ok(Got::TooLarge { declared: None });
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(Got::Body(body));
        }
    }

    async fn authorization(
        &self,
        client: &Client,
        auth: &OciAuth,
        r: &Reference,
        refresh: bool,
    ) -> Result<Option<String>, OciDistributionError> {
        let repository = r.repository().to_string();
        let mut cache = self.authz.lock().await;
        if !refresh {
            if let Some(a) = cache.get(&repository) {
                return Ok(a.clone());
            }
        }
        let value = match client.auth(r, auth, RegistryOperation::Pull).await? {
            Some(token) => Some(format!("Bearer {token}")),
            None => match auth {
                OciAuth::Basic(user, password) => Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                )),
                OciAuth::Bearer(token) => Some(format!("Bearer {token}")),
                OciAuth::Anonymous => None,
            },
        };
        cache.insert(repository, value.clone());
        Ok(value)
    }
}
