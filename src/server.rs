//! The HTTP side (SPEC §8): `/metrics`, `/healthz`, `/readyz` and `POST /hooks/git`.
//!
//! Webhooks only wake a repository's task (a sync now instead of at the next poll); they carry no
//! data the gate trusts, so the worst a valid sender can do is cause a fetch. Still, every request
//! must prove it knows the repository's secret, or nothing happens:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, `X-GitHub-Event`;
//! - Gitea / Forgejo: `X-Gitea-Signature: <hex>` (or the GitHub header), `X-Gitea-Event`;
//! - GitLab: `X-Gitlab-Token: <secret>` (compared in constant time), `X-Gitlab-Event`;
//! - anything else: `X-Tollgate-Signature: sha256=<hex>`.
//!
//! Secrets come from each repository's `webhook_secret_file`, read once at start-up (a missing or
//! empty file stops the start, like any configuration error). Rotating a secret means a restart,
//! which is safe at any instant: git is the state.
//!
//! The repository is found from the payload (`repository.clone_url`, `html_url`, `ssh_url`, `url`,
//! `git_http_url`, `git_ssh_url`, GitLab's `project.*`), compared with the configured URLs after
//! normalisation, or from a `?repository=<name>` query parameter. If neither names a configured
//! repository, every configured secret is tried and each repository whose secret verifies is synced.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::daemon::Daemon;

/// Push payloads of large monorepos stay well below this; anything bigger is refused with 413.
pub const MAX_HOOK_BODY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot read the webhook secret of repository `{repository}` from {path}: {source}")]
    Read {
        repository: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the webhook secret file of repository `{repository}` ({path}) is empty; put the shared secret in it")]
    Empty {
        repository: String,
        path: std::path::PathBuf,
    },
}

/// What the webhook endpoint knows about one repository.
#[derive(Debug, Clone)]
struct HookRepo {
    name: String,
    /// [`normalise_url`] of the configured URL.
    url_key: String,
    branch: String,
    secret: Option<Vec<u8>>,
}

/// The webhook secrets and URLs of every repository, loaded before the port is bound.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    repos: Vec<HookRepo>,
}

impl Webhooks {
    /// Reads every `webhook_secret_file`. Surrounding whitespace (the newline of `echo secret > f`) is
    /// not part of the secret.
    pub fn load(config: &Config) -> Result<Webhooks, WebhookError> {
        let mut repos = Vec::new();
        for (name, repo) in &config.repositories {
            let secret = match &repo.webhook_secret_file {
                None => None,
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|source| WebhookError::Read {
                        repository: name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                    let secret = bytes.trim_ascii().to_vec();
                    if secret.is_empty() {
                        return Err(WebhookError::Empty {
                            repository: name.clone(),
                            path: path.clone(),
                        });
                    }
                    Some(secret)
                }
            };
            repos.push(HookRepo {
                name: name.clone(),
                url_key: normalise_url(&repo.url),
                branch: repo.branch.clone(),
                secret,
            });
        }
        Ok(Webhooks { repos })
    }
}

/// A comparable form of a git URL: `host/path`, lower-case, without scheme, user, port, trailing `/`
/// or `.git`. `https://github.com/Acme/Envs.git`, `git@github.com:acme/envs` and
/// `ssh://git@github.com:22/acme/envs.git` all become `github.com/acme/envs`; `file:///srv/envs.git`
/// becomes `/srv/envs`.
pub fn normalise_url(url: &str) -> String {
    let url = url.trim();
    let rest = if let Some((scheme, after)) = url.split_once("://") {
        // Drop `user[:password]@` and `:port` from the authority.
        let (authority, path) = after.split_once('/').unwrap_or((after, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = host.split_once(':').map_or(host, |(h, _)| h);
        let local = scheme.eq_ignore_ascii_case("file") && (host.is_empty() || host.eq_ignore_ascii_case("localhost"));
        if local {
            format!("/{path}")
        } else {
            format!("{host}/{path}")
        }
    } else {
        match (url.find(':'), url.find('/')) {
            // scp-like `user@host:path`.
            (Some(colon), slash) if slash.is_none_or(|s| colon < s) => {
                let (authority, path) = url.split_at(colon);
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{host}/{}", path[1..].trim_start_matches('/'))
            }
            _ => url.to_string(),
        }
    };
    let rest = rest.trim_end_matches('/');
    let rest = rest.strip_suffix(".git").unwrap_or(rest);
    rest.to_ascii_lowercase()
}

/// One proof of the secret that a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credential {
    /// An HMAC-SHA256 of the raw body, decoded from hex.
    Hmac(Vec<u8>),
    /// The secret itself (GitLab).
    Token(Vec<u8>),
}

/// Every credential in the headers; a malformed one (bad hex) is no credential.
fn credentials(headers: &HeaderMap) -> Vec<Credential> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let mut out = Vec::new();
    for name in ["x-hub-signature-256", "x-tollgate-signature"] {
        if let Some(sig) = text(name).and_then(|v| v.strip_prefix("sha256=")) {
            if let Ok(mac) = hex::decode(sig) {
                out.push(Credential::Hmac(mac));
            }
        }
    }
    if let Some(Ok(mac)) = text("x-gitea-signature").map(hex::decode) {
        out.push(Credential::Hmac(mac));
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        out.push(Credential::Token(token.as_bytes().to_vec()));
    }
    out
}

/// True if `credential` proves knowledge of `secret` for `body`. Both comparisons are constant-time:
/// `verify_slice` for the MAC, and equal-length digests for the token so that its length leaks nothing.
fn verifies(secret: &[u8], body: &[u8], credential: &Credential) -> bool {
    match credential {
        Credential::Hmac(mac) => match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mut m) => {
                m.update(body);
                m.verify_slice(mac).is_ok()
            }
            Err(_) => false,
        },
        Credential::Token(token) => Sha256::digest(token).ct_eq(&Sha256::digest(secret)).into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Ping,
    Push,
    /// Another event type (pull request, issue, …): nothing to sync.
    Other,
}

fn event(headers: &HeaderMap) -> Event {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(e) = text("x-github-event")
        .or_else(|| text("x-gitea-event"))
        .or_else(|| text("x-gogs-event"))
    {
        return match e {
            "ping" => Event::Ping,
            "push" => Event::Push,
            _ => Event::Other,
        };
    }
    if let Some(e) = text("x-gitlab-event") {
        return match e {
            "Push Hook" | "System Hook" => Event::Push,
            _ => Event::Other,
        };
    }
    // The generic sender says nothing about the event: every call is a push.
    Event::Push
}

/// What the payload says about where the push went.
#[derive(Debug, Default, PartialEq, Eq)]
struct Payload {
    /// Normalised repository URLs.
    urls: BTreeSet<String>,
    /// The pushed branch, from `ref: refs/heads/<branch>`.
    branch: Option<String>,
    /// `ref` named something other than a branch (a tag): nothing tollgate watches moved.
    not_a_branch: bool,
}

impl Payload {
    /// Reads what it can; a body that is not JSON (a generic sender) is an empty payload.
    fn parse(body: &[u8]) -> Payload {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Payload::default();
        };
        let mut urls = BTreeSet::new();
        for object in ["repository", "project"] {
            for key in [
                "clone_url",
                "html_url",
                "ssh_url",
                "url",
                "git_http_url",
                "git_ssh_url",
                "web_url",
            ] {
                if let Some(url) = json.get(object).and_then(|o| o.get(key)).and_then(|u| u.as_str()) {
                    urls.insert(normalise_url(url));
                }
            }
        }
        let reference = json.get("ref").and_then(|r| r.as_str());
        let branch = reference
            .and_then(|r| r.strip_prefix("refs/heads/"))
            .map(str::to_string);
        Payload {
            urls,
            not_a_branch: reference.is_some() && branch.is_none(),
            branch,
        }
    }
}

/// The outcome of a webhook request, decided without I/O.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// No credential, a wrong one, or a `?repository=` that is not configured.
    Unauthorized(&'static str),
    Pong,
    Ignored(&'static str),
    /// Sync these repositories now.
    Trigger(Vec<String>),
}

fn judge(hooks: &Webhooks, headers: &HeaderMap, query_repository: Option<&str>, body: &[u8]) -> Verdict {
    let creds = credentials(headers);
    if creds.is_empty() {
        return Verdict::Unauthorized("unsigned request");
    }
    let payload = Payload::parse(body);
    let candidates: Vec<&HookRepo> = match query_repository {
        Some(name) => match hooks.repos.iter().find(|r| r.name == name) {
            Some(r) => vec![r],
            None => return Verdict::Unauthorized("unknown repository"),
        },
        None => {
            let by_url: Vec<&HookRepo> = hooks
                .repos
                .iter()
                .filter(|r| payload.urls.contains(&r.url_key))
                .collect();
            // Not identifiable (a generic sender, a URL seen through a proxy): whoever's secret it
            // proves is who it is for.
            if by_url.is_empty() {
                hooks.repos.iter().collect()
            } else {
                by_url
            }
        }
    };
    let verified: Vec<&HookRepo> = candidates
        .into_iter()
        .filter(|r| {
            r.secret
                .as_deref()
                .is_some_and(|secret| creds.iter().any(|c| verifies(secret, body, c)))
        })
        .collect();
    if verified.is_empty() {
        return Verdict::Unauthorized("signature does not verify");
    }
    match event(headers) {
        Event::Ping => return Verdict::Pong,
        Event::Other => return Verdict::Ignored("not a push event"),
        Event::Push => {}
    }
    if payload.not_a_branch {
        return Verdict::Ignored("not a branch push");
    }
    let names: Vec<String> = verified
        .into_iter()
        .filter(|r| payload.branch.as_deref().is_none_or(|b| b == r.branch))
        .map(|r| r.name.clone())
        .collect();
    if names.is_empty() {
        return Verdict::Ignored("push to a branch no repository tracks");
    }
    Verdict::Trigger(names)
}

#[derive(Clone)]
struct AppState {
    daemon: Arc<Daemon>,
    hooks: Arc<Webhooks>,
}

pub fn router(daemon: Arc<Daemon>, hooks: Webhooks) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/hooks/git", post(hook).layer(DefaultBodyLimit::max(MAX_HOOK_BODY)))
        .with_state(AppState {
            daemon,
            hooks: Arc::new(hooks),
        })
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut text = s.daemon.gate.metrics.encode();
    let process = process_metrics();
    // OpenMetrics ends with `# EOF`; the process families go before it.
    match text.rfind("# EOF") {
        Some(at) => text.insert_str(at, &process),
        None => text.push_str(&process),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    if s.daemon.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sync of every repository\n",
        )
    }
}

#[derive(serde::Deserialize)]
struct HookQuery {
    repository: Option<String>,
}

/// `Bytes` under [`DefaultBodyLimit`] answers 413 by itself for a body over [`MAX_HOOK_BODY`].
async fn hook(
    State(s): State<AppState>,
    query: Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    match judge(&s.hooks, &headers, query.repository.as_deref(), &body) {
        Verdict::Unauthorized(why) => {
            tracing::warn!(reason = why, "webhook refused");
            (StatusCode::UNAUTHORIZED, format!("{why}\n"))
        }
        Verdict::Pong => (StatusCode::OK, "pong\n".to_string()),
        Verdict::Ignored(why) => (StatusCode::OK, format!("ignored: {why}\n")),
        Verdict::Trigger(names) => {
            for name in &names {
                tracing::info!(repository = %name, "webhook: syncing now");
                s.daemon.trigger(name);
            }
            (StatusCode::ACCEPTED, format!("syncing {}\n", names.join(", ")))
        }
    }
}

/// `process_*` metrics of the Prometheus client conventions, read from `/proc` at scrape time
/// (prometheus-client has no process collector). Empty where `/proc` is not available.
fn process_metrics() -> String {
    let mut out = String::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the `(comm)`, which may itself contain spaces: state is field 3.
    let Some(fields) = stat
        .rsplit_once(") ")
        .map(|(_, f)| f.split_whitespace().collect::<Vec<_>>())
    else {
        return out;
    };
    // /proc reports in USER_HZ, which Linux fixes at 100 for user space on every architecture.
    const TICKS: f64 = 100.0;
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        out.push_str("# HELP process_cpu_seconds Total user and system CPU time spent in seconds.\n");
        out.push_str("# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n");
        out.push_str(&format!("process_cpu_seconds_total {}\n", (utime + stime) / TICKS));
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok()))
    });
    if let (Some(start), Some(boot)) = (field(22), boot) {
        out.push_str("# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n");
        out.push_str("# TYPE process_start_time_seconds gauge\n# UNIT process_start_time_seconds seconds\n");
        out.push_str(&format!("process_start_time_seconds {}\n", boot + start / TICKS));
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
    });
    if let Some(kib) = rss_kib {
        out.push_str("# HELP process_resident_memory_bytes Resident memory size in bytes.\n");
        out.push_str("# TYPE process_resident_memory_bytes gauge\n# UNIT process_resident_memory_bytes bytes\n");
        out.push_str(&format!("process_resident_memory_bytes {}\n", kib * 1024));
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.push_str("# HELP process_open_fds Number of open file descriptors.\n");
        out.push_str("# TYPE process_open_fds gauge\n");
        out.push_str(&format!("process_open_fds {}\n", fds.count()));
    }
    out
}

/// Binds the configured `listen` address and serves on a task of `tracker` until `shutdown`, then
/// drains: in-flight requests finish, new connections are refused. Returns once bound, so that a port
/// conflict is an error at start-up, not a log line later. Wait on `tracker` for the drain.
pub async fn serve(
    daemon: Arc<Daemon>,
    hooks: Webhooks,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(daemon.gate.config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let app = router(daemon, hooks);
    tracker.spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hooks() -> Webhooks {
        Webhooks {
            repos: vec![
                HookRepo {
                    name: "envs".into(),
                    url_key: normalise_url("https://git.example.com/platform/envs.git"),
                    branch: "main".into(),
                    secret: Some(b"s3cret".to_vec()),
                },
                HookRepo {
                    name: "other".into(),
                    url_key: normalise_url("git@git.example.com:platform/other.git"),
                    branch: "main".into(),
                    secret: Some(b"another".to_vec()),
                },
                HookRepo {
                    name: "open".into(),
                    url_key: normalise_url("https://git.example.com/platform/open.git"),
                    branch: "main".into(),
                    secret: None,
                },
            ],
        }
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const PUSH: &[u8] = br#"{"ref":"refs/heads/main","repository":{"clone_url":"https://git.example.com/platform/envs.git","ssh_url":"git@git.example.com:platform/envs.git"}}"#;

    #[test]
    fn urls_normalise_to_host_and_path() {
        for url in [
            "https://git.example.com/platform/envs.git",
            "https://user:pw@git.example.com:8443/Platform/Envs/",
            "git@git.example.com:platform/envs.git",
            "ssh://git@git.example.com:22/platform/envs.git",
            "http://git.example.com/platform/envs",
        ] {
            assert_eq!(normalise_url(url), "git.example.com/platform/envs", "{url}");
        }
        assert_eq!(normalise_url("file:///srv/envs.git"), "/srv/envs");
        assert_eq!(normalise_url("file://localhost/srv/envs.git"), "/srv/envs");
        assert_eq!(normalise_url("/srv/envs.git"), "/srv/envs");
    }

    #[test]
    fn github_push_signed_with_the_repository_secret_triggers_it() {
        let h = headers(&[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", format!("sha256={}", sign(b"s3cret", PUSH))),
        ]);
        assert_eq!(judge(&hooks(), &h, None, PUSH), Verdict::Trigger(vec!["envs".into()]));
    }

    #[test]
    fn a_signature_with_another_repositorys_secret_is_refused() {
        let h = headers(&[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", format!("sha256={}", sign(b"another", PUSH))),
        ]);
        assert!(matches!(judge(&hooks(), &h, None, PUSH), Verdict::Unauthorized(_)));
    }

    #[test]
    fn forged_unsigned_and_malformed_requests_are_refused() {
        let forged = headers(&[("x-hub-signature-256", format!("sha256={}", sign(b"guess", PUSH)))]);
        assert!(matches!(judge(&hooks(), &forged, None, PUSH), Verdict::Unauthorized(_)));
        assert_eq!(
            judge(&hooks(), &HeaderMap::new(), None, PUSH),
            Verdict::Unauthorized("unsigned request")
        );
        let bad_hex = headers(&[("x-hub-signature-256", "sha256=zz".into())]);
        assert_eq!(
            judge(&hooks(), &bad_hex, None, PUSH),
            Verdict::Unauthorized("unsigned request")
        );
        // A body changed after signing.
        let h = headers(&[("x-hub-signature-256", format!("sha256={}", sign(b"s3cret", PUSH)))]);
        let mut tampered = PUSH.to_vec();
        tampered.push(b' ');
        assert!(matches!(judge(&hooks(), &h, None, &tampered), Verdict::Unauthorized(_)));
    }

    #[test]
    fn gitea_and_gitlab_and_generic_senders_are_understood() {
        let gitea = headers(&[
            ("x-gitea-event", "push".into()),
            ("x-gitea-signature", sign(b"s3cret", PUSH)),
        ]);
        assert_eq!(
            judge(&hooks(), &gitea, None, PUSH),
            Verdict::Trigger(vec!["envs".into()])
        );
        let gitlab_body = br#"{"object_kind":"push","ref":"refs/heads/main","project":{"git_ssh_url":"git@git.example.com:platform/other.git"}}"#;
        let gitlab = headers(&[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "another".into()),
        ]);
        assert_eq!(
            judge(&hooks(), &gitlab, None, gitlab_body),
            Verdict::Trigger(vec!["other".into()])
        );
        let wrong = headers(&[
            ("x-gitlab-event", "Push Hook".into()),
            ("x-gitlab-token", "s3cret".into()),
        ]);
        assert!(matches!(
            judge(&hooks(), &wrong, None, gitlab_body),
            Verdict::Unauthorized(_)
        ));
        let generic = headers(&[("x-tollgate-signature", format!("sha256={}", sign(b"another", b"")))]);
        assert_eq!(
            judge(&hooks(), &generic, None, b""),
            Verdict::Trigger(vec!["other".into()])
        );
    }

    #[test]
    fn the_query_parameter_names_the_repository() {
        let body = b"{}";
        let h = headers(&[("x-tollgate-signature", format!("sha256={}", sign(b"s3cret", body)))]);
        assert_eq!(
            judge(&hooks(), &h, Some("envs"), body),
            Verdict::Trigger(vec!["envs".into()])
        );
        assert!(matches!(
            judge(&hooks(), &h, Some("other"), body),
            Verdict::Unauthorized(_)
        ));
        assert_eq!(
            judge(&hooks(), &h, Some("nope"), body),
            Verdict::Unauthorized("unknown repository")
        );
    }

    #[test]
    fn pings_answer_and_other_events_or_branches_trigger_nothing() {
        let ping = headers(&[
            ("x-github-event", "ping".into()),
            ("x-hub-signature-256", format!("sha256={}", sign(b"s3cret", PUSH))),
        ]);
        assert_eq!(judge(&hooks(), &ping, None, PUSH), Verdict::Pong);
        let pr = headers(&[
            ("x-github-event", "pull_request".into()),
            ("x-hub-signature-256", format!("sha256={}", sign(b"s3cret", PUSH))),
        ]);
        assert!(matches!(judge(&hooks(), &pr, None, PUSH), Verdict::Ignored(_)));
        let body =
            br#"{"ref":"refs/heads/feature","repository":{"clone_url":"https://git.example.com/platform/envs.git"}}"#;
        let h = headers(&[
            ("x-github-event", "push".into()),
            ("x-hub-signature-256", format!("sha256={}", sign(b"s3cret", body))),
        ]);
        assert!(matches!(judge(&hooks(), &h, None, body), Verdict::Ignored(_)));
    }

    #[test]
    fn process_metrics_read_from_proc() {
        let text = process_metrics();
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_start_time_seconds ",
                "process_resident_memory_bytes ",
                "process_open_fds ",
            ] {
                assert!(text.contains(name), "missing {name} in\n{text}");
            }
        }
    }
}
