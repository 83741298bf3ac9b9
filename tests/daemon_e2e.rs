//! The running daemon on real parts (a bare repository over `file://`, a real `docker-registry` on
//! loopback, the HTTP server on 127.0.0.1:0): webhooks wake it and are refused when forged, file
//! watching wakes it without a webhook, `/readyz` follows the first sync, and SIGTERM in the middle
//! of a run of promotions leaves the repository consistent and exits 0.

#[path = "support/cli_tools.rs"]
mod cli_tools;
#[path = "support/registry.rs"]
mod registry;
#[path = "support/world.rs"]
mod world;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use world::{hmac_hex, wait_for, Wakeup, World, SECRET};

const SYNCS: &str = "tollgate_repository_syncs_total{repository=\"envs\",result=\"success\"}";
const ALLOWS: &str = "tollgate_decisions_total{environment=\"prod\",decision=\"allow\"}";

/// Waits (off the runtime) until prod runs `reference`.
async fn promoted(w: &World, reference: &str) {
    let bare = w.bare.clone();
    let reference = reference.to_string();
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(60), "the promotion commit in prod", || {
            world::prod_file(&bare).filter(|f| f.contains(&reference)).map(|_| ())
        })
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_github_webhook_promotes_and_forged_ones_change_nothing() {
    let w = World::new().await;
    let d = w.serve(Wakeup::Webhook).await;
    let (status, _) = d.get("/readyz");
    assert_eq!(status, 503, "not ready before the first sync");
    assert_eq!(d.get("/healthz").0, 200);
    w.run(&d, Wakeup::Webhook);
    let bare = w.bare.clone();
    tokio::task::spawn_blocking(move || wait_for(Duration::from_secs(30), "the baseline", || world::marker(&bare)))
        .await
        .unwrap();
    assert_eq!(d.get("/readyz").0, 200, "ready after the first sync");
    assert_eq!(d.metric(SYNCS), 1.0);

    let reference = w.release().await;
    w.bump_staging(std::slice::from_ref(&reference));
    let prod_before = w.prod_file();

    // Forged: signed with a guessed secret. Unsigned. Both refused, and no sync happens.
    let (status, _) = d.github_push(&w.url(), "guessed");
    assert_eq!(status, 401);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let (status, _) = d.hook("/hooks/git", &[("X-GitHub-Event", "push".into())], body);
    assert_eq!(status, 401);
    let (status, _) = d.hook("/hooks/git", &[("X-Hub-Signature-256", "sha256=00".into())], body);
    assert_eq!(status, 401);
    // Give a wrongly woken task the chance to show itself before checking that none was.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.metric(SYNCS), 1.0, "a refused webhook triggers no sync");
    assert_eq!(w.prod_file(), prod_before);

    // A ping answers, and syncs nothing.
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let (status, text) = d.hook(
        "/hooks/git",
        &[
            ("X-GitHub-Event", "ping".into()),
            ("X-Hub-Signature-256", format!("sha256={}", hmac_hex(SECRET, ping))),
        ],
        ping,
    );
    assert_eq!((status, text.as_str()), (200, "pong\n"));

    let (status, text) = d.github_push(&w.url(), SECRET);
    assert_eq!(status, 202, "{text}");
    promoted(&w, &reference).await;
    let subject = w.remote(&["log", "-1", "--format=%s", "main"]);
    assert!(subject.starts_with("promote(prod): api "), "{subject}");
    // The decision is counted before the HTTP answer is read; the sync count follows the webhook.
    let d2 = &d;
    tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(10), "the allow in /metrics", || {
            (d2.metric(ALLOWS) == 1.0).then_some(())
        })
    });
    assert_eq!(d.metric(SYNCS), 2.0);
    let (_, text) = d.get("/metrics");
    assert!(
        text.contains("tollgate_decisions_total{environment=\"prod\",decision=\"allow\"} 1"),
        "{text}"
    );
    assert!(text.contains("process_resident_memory_bytes "), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gitlab_token_and_query_parameter_identify_the_repository() {
    let w = World::new().await;
    let d = w.start(Wakeup::Webhook).await;
    let reference = w.release().await;
    w.bump_staging(std::slice::from_ref(&reference));

    let body = serde_json::json!({
        "object_kind": "push",
        "ref": "refs/heads/main",
        "project": {"git_http_url": w.url(), "path_with_namespace": "platform/envs"},
    })
    .to_string();
    let wrong = [
        ("X-Gitlab-Event", "Push Hook".into()),
        ("X-Gitlab-Token", "not-it".into()),
    ];
    assert_eq!(d.hook("/hooks/git", &wrong, body.as_bytes()).0, 401);
    // Over 1 MiB: refused before anything is read into memory.
    let big = vec![b' '; 1024 * 1024 + 1];
    let token = [
        ("X-Gitlab-Event", "Push Hook".into()),
        ("X-Gitlab-Token", SECRET.into()),
    ];
    assert_eq!(d.hook("/hooks/git", &token, &big).0, 413);
    // An unknown repository by name.
    let generic = |b: &[u8]| vec![("X-Tollgate-Signature", format!("sha256={}", hmac_hex(SECRET, b)))];
    assert_eq!(d.hook("/hooks/git?repository=nope", &generic(b""), b"").0, 401);
    assert_eq!(d.metric(SYNCS), 1.0, "nothing refused was synced");

    let (status, text) = d.hook("/hooks/git", &token, body.as_bytes());
    assert_eq!(status, 202, "{text}");
    assert_eq!(text, "syncing envs\n");
    promoted(&w, &reference).await;

    // The generic sender, naming the repository in the query.
    let next = w.release().await;
    w.bump_staging(std::slice::from_ref(&next));
    let (status, _) = d.hook("/hooks/git?repository=envs", &generic(b""), b"");
    assert_eq!(status, 202);
    promoted(&w, &next).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_watching_promotes_without_a_webhook_despite_an_hour_long_poll() {
    let w = World::new().await;
    let d = w.start(Wakeup::FileWatch).await;
    for _ in 0..2 {
        let reference = w.release().await;
        w.bump_staging(std::slice::from_ref(&reference));
        promoted(&w, &reference).await;
    }
    let log = w.remote(&["log", "--format=%s", "main"]);
    assert_eq!(log.matches("promote(prod): ").count(), 2, "{log}");
    d.stop().await;
}

/// `Tollgate-Image` of every promotion commit on main, oldest first.
fn promoted_images(w: &World) -> Vec<String> {
    let log = w.remote(&[
        "log",
        "--reverse",
        "--format=%(trailers:key=Tollgate-Image,valueonly,unfold)%x00",
        "main",
    ]);
    log.split('\0')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_promotions_exits_zero_and_leaves_the_repository_consistent() {
    let w = World::new().await;
    let config = w.write_config("1h");
    let log = std::fs::File::create(w.dir.path().join("daemon.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let bare = w.bare.clone();
    tokio::task::spawn_blocking(move || wait_for(Duration::from_secs(30), "the baseline", || world::marker(&bare)))
        .await
        .unwrap();

    // Eight bumps in one push: the daemon promotes them one by one, a git write each.
    let mut references = Vec::new();
    for _ in 0..8 {
        references.push(w.release().await);
    }
    let initial = w.prod_file();
    w.bump_staging(&references);
    // SIGTERM as soon as the first promotion lands: the rest are in flight.
    let bare = w.bare.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(60), "the first promotion", || {
            world::prod_file(&bare).filter(|f| *f != initial).map(|_| ())
        })
    })
    .await
    .unwrap();
    let term = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if term.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!(
                "still running 10 s after SIGTERM (SPEC §9):\n{}",
                std::fs::read_to_string(w.dir.path().join("daemon.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(w.dir.path().join("daemon.log")).unwrap_or_default();
    assert_eq!(exit.code(), Some(0), "{log}");
    // JSON logs: one object per line, constant messages, identity in the span fields.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "shutdown requested"),
        "{log}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["span"]["repository"] == "envs" || l["fields"]["repository"] == "envs"),
        "{log}"
    );

    // Consistent: objects intact, prod runs the image of the last promotion commit, in order, no
    // duplicates, and the marker is in main's history.
    w.remote(&["fsck", "--no-progress", "--no-dangling"]);
    let images = promoted_images(&w);
    assert!(!images.is_empty() && images.len() <= references.len(), "{images:?}");
    for (image, reference) in images.iter().zip(&references) {
        let digest = reference.rsplit_once('@').unwrap().1;
        assert!(image.ends_with(digest), "promotions out of order: {images:?}");
    }
    let last = images.last().unwrap();
    let last_digest = last.rsplit_once('@').unwrap().1;
    assert!(
        w.prod_file().contains(last_digest),
        "prod does not run the last promotion"
    );
    // For the record in `--nocapture` runs: how far it got before stopping.
    eprintln!(
        "{} of {} promoted before SIGTERM took effect",
        images.len(),
        references.len()
    );
    let marker = world::marker(&w.bare).unwrap();
    w.remote(&["merge-base", "--is-ancestor", &marker, "main"]);

    // A restart finishes the rest, deciding nothing twice.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let images = promoted_images(&w);
    assert_eq!(images.len(), references.len(), "{images:?}");
    assert!(w.prod_file().contains(references.last().unwrap()));
}
