//! Push-to-promotion latency: how long from `git push` of a staging bump until the promotion commit
//! is on prod's branch, with the daemon running in-process against a bare repository over `file://`
//! and a real `docker-registry` on loopback, each bump a new image with complete signed evidence.
//! Three ways to learn about the push, in the same process and on the same machine:
//! (a) a signed GitHub webhook sent right after the push (poll 1h, no file watching),
//! (b) file watching only (poll 1h), (c) polling only, every 1 s (pushes at a random phase of the
//! poll cycle).
//!
//! `cargo bench --bench push_to_promotion` (or `scripts/bench.sh`); `TOLLGATE_BENCH_BUMPS` sets the
//! number of bumps per mode (default 50). Loopback only; it stops by itself.

#[path = "../tests/support/cli_tools.rs"]
mod cli_tools;
#[path = "../tests/support/registry.rs"]
mod registry;
#[path = "../tests/support/world.rs"]
mod world;

use std::time::{Duration, Instant};

use world::{wait_for, Wakeup, World, SECRET};

struct Summary {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Summary {
    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.samples.clone();
        v.sort();
        v
    }

    fn median(&self) -> Duration {
        let v = self.sorted();
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2
        }
    }

    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Duration {
        let v = self.sorted();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(name: &'static str, wakeup: Wakeup, bumps: usize) -> Summary {
    let w = World::new().await;
    let d = w.start(wakeup).await;
    let mut samples = Vec::with_capacity(bumps);
    for _ in 0..bumps {
        let reference = w.release().await;
        if wakeup == Wakeup::Poll {
            // Pushes land at a random point of the poll cycle, as real ones do. Without this the
            // loop locks onto the cycle (the next push follows the last promotion by a fixed delay)
            // and measures that delay instead.
            let jitter = rand_core::RngCore::next_u64(&mut rand_core::OsRng) % 1000;
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        let latency = tokio::task::block_in_place(|| {
            w.bump_staging(std::slice::from_ref(&reference));
            let pushed = Instant::now();
            if wakeup == Wakeup::Webhook {
                let (status, text) = d.github_push(&w.url(), SECRET);
                assert_eq!(status, 202, "{text}");
            }
            wait_for(Duration::from_secs(60), "the promotion", || {
                world::prod_file(&w.bare).filter(|f| f.contains(&reference)).map(|_| ())
            });
            pushed.elapsed()
        });
        samples.push(latency);
    }
    d.stop().await;
    Summary { name, samples }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
    // then a two-bump smoke run checks that the benchmark still works without taking CI's time.
    let measuring = std::env::args().any(|a| a == "--bench");
    let bumps: usize = std::env::var("TOLLGATE_BENCH_BUMPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 50 } else { 2 })
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let results = runtime.block_on(async {
        vec![
            measure("webhook", Wakeup::Webhook, bumps).await,
            measure("file watch", Wakeup::FileWatch, bumps).await,
            measure("poll 1s", Wakeup::Poll, bumps).await,
        ]
    });
    println!(
        "push → promotion commit visible in prod, {bumps} bumps per mode (each a new image with provenance + SBOM)"
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10}",
        "mode", "median", "p95", "min", "max"
    );
    for s in &results {
        let v = s.sorted();
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}",
            s.name,
            ms(s.median()),
            ms(s.percentile(95.0)),
            ms(v[0]),
            ms(v[v.len() - 1])
        );
    }
    let ratio = results[0].median().as_secs_f64() / results[2].median().as_secs_f64();
    println!(
        "webhook / poll-1s median ratio: {ratio:.3} ({:.1}x faster)",
        1.0 / ratio
    );
    println!(
        "status quo: Argo CD polls every 3 min and Flux every 1-5 min by default, i.e. a median wait of \
         about half the interval (90 s at 3 min) before any of this starts"
    );
}
