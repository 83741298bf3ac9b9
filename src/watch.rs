//! File watching for remotes on this machine (`file://` URLs and plain paths): a change under the
//! remote's `refs/heads/` or its `packed-refs` wakes that repository's task, so a local push is seen in
//! milliseconds instead of at the next poll. Polling stays the fallback: a missed event only costs
//! latency, never a decision.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After a wake-up, further events within this window make at most one more: a push may touch
/// several refs, and `git gc` rewrites many at once.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// The git folder of a remote on this machine, if `url` names one that exists: `file:///srv/x.git`,
/// `file://localhost/srv/x.git` or a plain path; for a work tree, its `.git`. `None` for network URLs
/// (`https://`, `ssh://`, scp-like `host:path`).
pub fn local_git_dir(url: &str) -> Option<PathBuf> {
    let path = if let Some(rest) = url.strip_prefix("file://") {
        // `file://localhost/srv/x.git` names the same folder as `file:///srv/x.git`.
        PathBuf::from(rest.strip_prefix("localhost").unwrap_or(rest))
    } else if url.contains("://") {
        return None;
    } else {
        match (url.find(':'), url.find('/')) {
            (Some(colon), Some(slash)) if colon < slash => return None,
            (Some(_), None) => return None,
            _ => PathBuf::from(url),
        }
    };
    let dotgit = path.join(".git");
    if dotgit.is_dir() {
        Some(dotgit)
    } else if path.join("refs").is_dir() {
        Some(path)
    } else {
        None
    }
}

/// True for the paths whose change can move a branch: loose refs under `refs/heads/` and `packed-refs`.
/// Lock files are skipped (the rename that follows is the change), and so are `refs/tollgate/` and
/// `refs/notes/`, which tollgate itself writes: waking on our own writes would only add empty passes.
fn moves_a_branch(git_dir: &Path, path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "lock") {
        return false;
    }
    match path.strip_prefix(git_dir) {
        Ok(rel) => rel == Path::new("packed-refs") || rel.starts_with("refs/heads"),
        Err(_) => false,
    }
}

/// Watches `git_dir` and calls `notify_one` on `wake` until `shutdown`: at once on the first event
/// (the filtered events are completed ref updates, so the sync will see them), then at most once more
/// per [`DEBOUNCE`] window for whatever followed.
/// The watcher lives in a task on `tracker`. Errors only if the OS watch cannot be set up; the caller
/// then relies on polling.
pub fn watch_refs(
    git_dir: &Path,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> notify::Result<()> {
    // The canonical form, because the OS reports canonical paths (e.g. /tmp behind a symlink).
    let git_dir = git_dir.canonicalize().unwrap_or_else(|_| git_dir.to_path_buf());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let filter_dir = git_dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            if event.paths.iter().any(|p| moves_a_branch(&filter_dir, p)) {
                // The receiver is gone only during shutdown; nothing to wake then.
                let _ = tx.send(());
            }
        }
        Err(e) => tracing::warn!(error = %e, "file watch error; polling still covers this repository"),
    })?;
    watcher.watch(&git_dir.join("refs"), RecursiveMode::Recursive)?;
    // `packed-refs` sits in the git folder itself, which is watched shallowly: objects/ churn is not
    // interesting and a recursive watch over it would cost a descriptor per folder.
    watcher.watch(&git_dir, RecursiveMode::NonRecursive)?;
    tracker.spawn(async move {
        // Owned by the task: the OS watch ends when the task does.
        let _watcher = watcher;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                event = rx.recv() => if event.is_none() { break },
            }
            wake.notify_one();
            // Leading edge above, trailing edge here. A fixed window, not a sliding one: a steady
            // stream of ref updates must not postpone the next sync forever.
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(DEBOUNCE) => {}
                }
                let mut more = false;
                while rx.try_recv().is_ok() {
                    more = true;
                }
                if !more {
                    break;
                }
                wake.notify_one();
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_urls_have_no_local_folder() {
        for url in [
            "https://git.example.com/envs.git",
            "ssh://git@example.com/envs.git",
            "git@example.com:platform/envs.git",
            "example.com:envs",
        ] {
            assert_eq!(local_git_dir(url), None, "{url}");
        }
    }

    #[test]
    fn file_urls_and_paths_name_the_git_folder() {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("envs.git");
        std::fs::create_dir_all(bare.join("refs/heads")).unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join(".git/refs")).unwrap();
        assert_eq!(local_git_dir(&format!("file://{}", bare.display())), Some(bare.clone()));
        assert_eq!(
            local_git_dir(&format!("file://localhost{}", bare.display())),
            Some(bare.clone())
        );
        assert_eq!(local_git_dir(bare.to_str().unwrap()), Some(bare.clone()));
        assert_eq!(local_git_dir(work.to_str().unwrap()), Some(work.join(".git")));
        assert_eq!(local_git_dir(dir.path().join("missing").to_str().unwrap()), None);
    }

    #[test]
    fn only_branch_moves_count() {
        let g = Path::new("/srv/envs.git");
        assert!(moves_a_branch(g, Path::new("/srv/envs.git/refs/heads/main")));
        assert!(moves_a_branch(g, Path::new("/srv/envs.git/packed-refs")));
        assert!(!moves_a_branch(g, Path::new("/srv/envs.git/refs/heads/main.lock")));
        assert!(!moves_a_branch(
            g,
            Path::new("/srv/envs.git/refs/tollgate/processed/prod")
        ));
        assert!(!moves_a_branch(g, Path::new("/srv/envs.git/refs/notes/tollgate")));
        assert!(!moves_a_branch(g, Path::new("/srv/envs.git/objects/ab/cdef")));
    }

    #[tokio::test]
    async fn a_burst_of_ref_changes_wakes_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("refs/heads")).unwrap();
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        watch_refs(dir.path(), wake.clone(), shutdown.clone(), &tracker).unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join("refs/heads/main"), format!("{i}\n")).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(10), wake.notified())
            .await
            .expect("a wake-up after a ref change");
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(10), tracker.wait())
            .await
            .expect("the watch task ends on shutdown");
    }
}
