//! The `tollgate` command line (SPEC §4): parse arguments, set up logging, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use tollgate::gate::DecisionKind;
use tollgate::telemetry::{LogFormat, Metrics};

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "A GitOps promotion gate: promotes image bumps only on verified evidence"
)]
struct Cli {
    /// Log format on stderr (`RUST_LOG` sets the level).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        /// One pass over every repository, then exit (for cron jobs and tests).
        #[arg(long)]
        once: bool,
    },
    /// Evaluate one image for an environment, as the daemon would. Exit 0 allow, 1 block, 2 error or defer.
    Check {
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        env: String,
        /// The image reference (`registry/repo:tag` or `registry/repo@sha256:…`).
        image: String,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Validate the configuration, keys and referenced files. Exit 0 valid, 2 invalid.
    Validate {
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
    },
    /// Show the decision recorded on a commit (its trailers, or the note on it). Exit 2 if none.
    Explain {
        /// A git repository (work tree or bare); default the current directory.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// The commit; default HEAD.
        #[arg(default_value = "HEAD")]
        rev: String,
    },
    /// Sign an in-toto statement about IMAGE@DIGEST and attach it (cosign `.att` layout).
    Attest {
        /// PEM PKCS#8 P-256 private key.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        predicate_type: String,
        /// JSON file with the predicate.
        #[arg(long)]
        predicate: PathBuf,
        /// Registry settings (insecure, auth, oci_layout) from this config.
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: Option<PathBuf>,
        image: String,
    },
    /// A self-contained run of the whole gate on embedded defaults.
    /// Re-evaluate past promotions into ENV under today's policy and evidence: what would now be blocked.
    Replay {
        #[arg(long, short, env = "TOLLGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        env: String,
        /// Only promotions after this commit (of the environment's repository).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    Demo {
        /// Keep the demo's files here instead of a temporary folder.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tollgate::telemetry::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    };
    // Dropping a runtime waits for every `spawn_blocking` task, and a git fetch stuck on a dead
    // network would hold the exit forever; SIGTERM must end the process within 10 s (SPEC §9).
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

/// After the daemon's grace period: time for HTTP requests in flight, then for blocking work.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(500);

fn load_config(path: &std::path::Path) -> anyhow::Result<tollgate::config::Config> {
    tollgate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn gate(config: tollgate::config::Config) -> anyhow::Result<Arc<tollgate::pipeline::Gate>> {
    let stores = tollgate::oci::Stores::from_config(&config).context("setting up registries")?;
    Ok(Arc::new(tollgate::pipeline::Gate {
        config: Arc::new(config),
        stores,
        metrics: Arc::new(Metrics::new()),
    }))
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Validate { config } => match tollgate::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: valid ({} repositories, {} environments, {} policies)",
                    config.display(),
                    c.repositories.len(),
                    c.environments.len(),
                    c.policies.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Check {
            config,
            env,
            image,
            output,
        } => {
            let gate = gate(load_config(&config)?)?;
            let image = tollgate::image::ImageRef::parse(&image)?;
            // `check` has no daemon mirrors: waivers and upstream promotions are read through the
            // mirrors under state_dir, fetched now.
            let ctx = tollgate::context::gather_fresh(&gate.config, &env, time::OffsetDateTime::now_utc()).await;
            let eval = gate.evaluate(&env, &image, None, &ctx).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&eval)?),
                Output::Text => print!("{}", eval.record().message()),
            }
            Ok(match eval.decision.kind {
                DecisionKind::Allow => ExitCode::SUCCESS,
                DecisionKind::Block => ExitCode::from(1),
                DecisionKind::Defer => ExitCode::from(2),
            })
        }
        Command::Run { config, once } => {
            let gate = gate(load_config(&config)?)?;
            let daemon = Arc::new(tollgate::daemon::Daemon::open(gate)?);
            if once {
                let mut failed = false;
                for (env, report) in daemon.pass().await {
                    match report {
                        Ok(r) => println!(
                            "{env}: {} promoted, {} blocked, {} deferred, {} skipped",
                            r.promoted, r.blocked, r.deferred, r.skipped
                        ),
                        Err(e) => {
                            failed = true;
                            println!("{env}: error: {e}");
                        }
                    }
                }
                return Ok(if failed { ExitCode::from(2) } else { ExitCode::SUCCESS });
            }
            // Secrets are read before the port is bound: a bad secret file stops the start.
            let hooks = tollgate::server::Webhooks::load(&daemon.gate.config)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_shutdown(shutdown.clone()));
            let http = tokio_util::task::TaskTracker::new();
            tollgate::server::serve(daemon.clone(), hooks, shutdown.clone(), &http).await?;
            http.close();
            tollgate::daemon::sd_notify("READY=1");
            // Returns within the grace period after SIGTERM (and tells systemd STOPPING=1).
            daemon.run(shutdown).await;
            // Whatever time is left of the 10 s budget goes to requests in flight; a client that
            // keeps a connection open does not hold the exit.
            if tokio::time::timeout(HTTP_DRAIN, http.wait()).await.is_err() {
                tracing::warn!("HTTP connections still open after the drain period; closing them");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            env,
            since,
            output,
        } => {
            let gate = gate(load_config(&config)?)?;
            let ctx = tollgate::context::gather_fresh(&gate.config, &env, time::OffsetDateTime::now_utc()).await;
            let rows = tollgate::replay::replay(&gate, &env, since, &ctx).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Text => print!("{}", tollgate::replay::render(&env, &rows)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { repo, rev } => match tollgate::explain::explain(&repo, &rev)? {
            Some(text) => {
                print!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no tollgate decision recorded on {rev}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Attest {
            key,
            predicate_type,
            predicate,
            config,
            image,
        } => {
            let config = config.as_deref().map(load_config).transpose()?;
            let summary = tollgate::attest::attest(&key, &predicate_type, &predicate, config.as_ref(), &image).await?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir } => {
            tollgate::demo::run(dir).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SIGTERM and SIGINT both stop the daemon gracefully.
async fn signal_shutdown(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
    token.cancel();
}
