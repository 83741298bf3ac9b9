//! A registry as production meets it, played by a tiny stub on loopback: answers 503 or 429 before
//! it serves, never recovers, or is slow enough that requests pile up. Asserts what tollgate ends
//! up deciding (served, `Unavailable`) and how many requests the registry saw, never timings.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tollgate::config;
use tollgate::gate::evidence::{EvidenceError, EvidenceStore};
use tollgate::image::{Digest, ImageRef};
use tollgate::oci::cosign::Backend;
use tollgate::oci::{Limits, RegistryStore};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// What the stub does with manifest requests.
#[derive(Clone, Copy)]
enum Script {
    /// Answer this status to the first `n` manifest requests, then serve.
    FailFirst { n: usize, status: u16 },
    /// Serve, each answer after a delay (to see how many requests are in flight at once).
    Slow(Duration),
}

struct Stub {
    script: Script,
    manifest: Vec<u8>,
    manifest_requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

fn manifest() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": [],
    }))
    .unwrap()
}

async fn handle(State(stub): State<Arc<Stub>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if path == "/v2/" || path == "/v2" {
        return (StatusCode::OK, "{}").into_response();
    }
    if !path.contains("/manifests/") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let seen = stub.manifest_requests.fetch_add(1, Ordering::SeqCst);
    let now = stub.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stub.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = match stub.script {
        Script::FailFirst { n, status } if seen < n => {
            let status = StatusCode::from_u16(status).unwrap();
            (status, [(header::RETRY_AFTER, "1")], "busy").into_response()
        }
        Script::Slow(d) => {
            tokio::time::sleep(d).await;
            serve(&stub, req.method())
        }
        Script::FailFirst { .. } => serve(&stub, req.method()),
    };
    stub.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

fn serve(stub: &Stub, method: &Method) -> Response {
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(stub.manifest.clone())
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCI_MANIFEST)
        .header("Docker-Content-Digest", Digest::of(&stub.manifest).to_string())
        .header(header::CONTENT_LENGTH, stub.manifest.len())
        .body(body)
        .unwrap()
}

/// Starts the stub on 127.0.0.1:0; it lives as long as the test's runtime.
async fn start(script: Script) -> (String, Arc<Stub>) {
    let stub = Arc::new(Stub {
        script,
        manifest: manifest(),
        manifest_requests: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(handle).with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (host, stub)
}

fn store(host: &str, max_concurrency: Option<usize>) -> RegistryStore {
    let cfg = config::Registry {
        insecure: true,
        max_concurrency: max_concurrency.and_then(NonZeroUsize::new),
        ..config::Registry::default()
    };
    let limits = Limits {
        request_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    RegistryStore::with_limits(host, &cfg, limits).unwrap()
}

fn image(host: &str) -> ImageRef {
    ImageRef::parse(&format!("{host}/acme/api:1")).unwrap()
}

#[tokio::test]
async fn resolves_after_two_503s() {
    let (host, stub) = start(Script::FailFirst { n: 2, status: 503 }).await;
    let digest = store(&host, None)
        .resolve(&image(&host))
        .await
        .expect("served on the third attempt");
    assert_eq!(digest, Digest::of(&stub.manifest));
    assert_eq!(stub.manifest_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn reads_a_manifest_after_a_429() {
    let (host, stub) = start(Script::FailFirst { n: 1, status: 429 }).await;
    let got = store(&host, None)
        .get_manifest(&image(&host), "1")
        .await
        .expect("served after the rate limit");
    assert_eq!(got, Some(stub.manifest.clone()));
    assert_eq!(stub.manifest_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_registry_that_stays_down_is_unavailable_after_three_attempts() {
    let (host, stub) = start(Script::FailFirst {
        n: usize::MAX,
        status: 503,
    })
    .await;
    let err = store(&host, None).get_manifest(&image(&host), "1").await.unwrap_err();
    assert!(
        matches!(err, EvidenceError::Unavailable { .. }),
        "a defer, not a block: {err}"
    );
    assert!(err.is_transient());
    assert_eq!(
        stub.manifest_requests.load(Ordering::SeqCst),
        3,
        "bounded: at most 3 attempts"
    );
}

#[tokio::test]
async fn resolving_against_a_registry_that_stays_down_defers() {
    let (host, stub) = start(Script::FailFirst {
        n: usize::MAX,
        status: 502,
    })
    .await;
    let err = store(&host, None).resolve(&image(&host)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    // oci-client asks HEAD, then GET when HEAD gave no digest: two requests per attempt.
    assert_eq!(stub.manifest_requests.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (host, stub) = start(Script::FailFirst {
        n: usize::MAX,
        status: 400,
    })
    .await;
    let err = store(&host, None).get_manifest(&image(&host), "1").await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(stub.manifest_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn max_concurrency_bounds_requests_in_flight_per_registry() {
    let (host, stub) = start(Script::Slow(Duration::from_millis(50))).await;
    let store = store(&host, Some(2));
    let img = image(&host);
    let all = (0..8).map(|_| store.resolve(&img));
    for r in futures_join_all(all).await {
        r.expect("served");
    }
    assert_eq!(stub.manifest_requests.load(Ordering::SeqCst), 8);
    assert_eq!(stub.max_in_flight.load(Ordering::SeqCst), 2);
}

/// `join_all` without a futures dependency: spawn-free, polls all on this task.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

const FLOOD: usize = 100 * 1024 * 1024;

/// A raw HTTP registry whose every manifest is 100 MiB of spaces, sent without a length (read until
/// the connection closes) or with an honest `Content-Length`. Returns the host and how many body
/// bytes it managed to send in all.
async fn start_flood(declare_length: bool) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let sent = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = conn.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&request[..end]).to_string();
                    request.drain(..end + 4);
                    if !head.contains("/manifests/") {
                        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}";
                        if conn.write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let length = if declare_length {
                        format!("Content-Length: {FLOOD}\r\n")
                    } else {
                        "Connection: close\r\n".to_string()
                    };
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: {OCI_MANIFEST}\r\n{length}\r\n");
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b' '; 64 * 1024];
                    let mut written = 0;
                    while written < FLOOD {
                        if conn.write_all(&chunk).await.is_err() {
                            break;
                        }
                        written += chunk.len();
                        sent.fetch_add(chunk.len(), Ordering::SeqCst);
                    }
                    return;
                }
            });
        }
    });
    (host, sent)
}

async fn assert_flood_is_cut(declare_length: bool) {
    let (host, sent) = start_flood(declare_length).await;
    let err = store(&host, None).get_manifest(&image(&host), "1").await.unwrap_err();
    assert!(matches!(err, EvidenceError::Invalid { .. }), "a reasoned block: {err}");
    assert!(err.to_string().contains("max manifest size"), "{err}");
    // Let the stub notice the closed connection, then check it could not deliver the whole body.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sent.load(Ordering::SeqCst) < FLOOD, "the client stopped reading");
}

#[tokio::test]
async fn a_100_mib_manifest_stream_without_length_is_cut_at_the_limit() {
    assert_flood_is_cut(false).await;
}

#[tokio::test]
async fn a_manifest_declaring_100_mib_is_refused_before_reading() {
    assert_flood_is_cut(true).await;
}

fn parse_registry(entry: &str) -> Result<config::Config, String> {
    let text = format!("version: 1\nregistries:\n  \"127.0.0.1:5000\": {entry}\n");
    config::parse(&text, std::path::Path::new("/tmp/tollgate.yaml")).map_err(|e| e.to_string())
}

#[test]
fn max_concurrency_is_validated_and_defaults_to_unset() {
    let err = parse_registry("{insecure: true, max_concurrency: 0}").unwrap_err();
    assert!(err.contains("max_concurrency") && err.contains("at least 1"), "{err}");
    let cfg = parse_registry("{insecure: true, max_concurrency: 4}").unwrap();
    assert_eq!(cfg.registries["127.0.0.1:5000"].max_concurrency, NonZeroUsize::new(4));
    let cfg = parse_registry("{insecure: true}").unwrap();
    assert_eq!(
        cfg.registries["127.0.0.1:5000"].max_concurrency, None,
        "the store applies the default, 8"
    );
}
