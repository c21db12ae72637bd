//! `quench up`: the manager and an edge in one process.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use quench_edge::{EdgeConfig, StalePolicy};
use quench_manager::{Issuer, ManagerConfig, bootstrap, embedded};
use quench_store::{Store, sqlite::SqliteStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the database and the bootstrap token live.
    #[arg(long, env = "QUENCH_DATA_DIR", default_value = "./quench-data")]
    pub data_dir: PathBuf,
    /// Manager API address.
    #[arg(long, default_value = "127.0.0.1:7600")]
    pub admin_listen: String,
    /// Edge API address.
    #[arg(long, default_value = "127.0.0.1:7601")]
    pub edge_listen: String,
    /// The store: a `postgres://` or `sqlite:` URL; default `<data-dir>/quench.db`.
    #[arg(long, env = "QUENCH_DATABASE")]
    pub database: Option<String>,
    /// An issuer as PREFIX or PREFIX:HASH (sha256, argon2id, bcrypt); repeat for several, the first is
    /// the default for new keys.
    #[arg(long = "issuer", default_value = "qk:sha256")]
    pub issuers: Vec<String>,
    /// Stop answering `valid` after this many seconds without hearing the manager.
    #[arg(long, default_value_t = 10)]
    pub max_staleness: u64,
    #[arg(long, value_enum, default_value_t = StaleMode::FailClosed)]
    pub stale_policy: StaleMode,
    /// The manager's event-signing key (hex seed); default `<data-dir>/signing.key`, made on first start.
    #[arg(long, env = "QUENCH_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// The embedded edge's id.
    #[arg(long, default_value = "embedded")]
    pub edge_id: String,
    #[arg(long, default_value = "local")]
    pub region: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StaleMode {
    FailClosed,
    FailOpen,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn open_store(args: &UpArgs) -> anyhow::Result<Arc<dyn Store>> {
    match &args.database {
        None => {
            let store = SqliteStore::open(&args.data_dir.join("quench.db"))
                .await
                .context("opening the SQLite store")?;
            Ok(Arc::new(store))
        }
        Some(url) => quench_store::open_url(url)
            .await
            .context("--database: opening the store"),
    }
}

fn create_data_dir(path: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

async fn shutdown_signal(cancel: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
    cancel.cancel();
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let issuers = args
        .issuers
        .iter()
        .map(|i| Issuer::parse(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--issuer: {e}"))?;
    if args.max_staleness == 0 {
        bail!("--max-staleness: at least 1 second");
    }
    let bootstrap_token = std::env::var("QUENCH_BOOTSTRAP_TOKEN")
        .ok()
        .filter(|v| !v.is_empty())
        .map(bootstrap::configured)
        .transpose()?;
    create_data_dir(&args.data_dir)?;
    let store = open_store(&args).await?;
    let admin = TcpListener::bind(&args.admin_listen)
        .await
        .with_context(|| format!("binding the manager API to {}", args.admin_listen))?;
    let edge = TcpListener::bind(&args.edge_listen)
        .await
        .with_context(|| format!("binding the edge API to {}", args.edge_listen))?;

    let first_token = match bootstrap_token {
        None => bootstrap::first_token(&*store, &args.data_dir).await?,
        Some(_) => None,
    };
    if let Some(token) = first_token {
        println!(
            "Bootstrap admin token (shown once, also saved to {}):",
            embedded::token_path(&args.data_dir).display()
        );
        println!("  {token}");
    }
    let signer = match std::env::var("QUENCH_SIGNING_KEY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(seed) => quench_core::sign::Signer::from_seed_hex(&seed)
            .map_err(|e| anyhow::anyhow!("QUENCH_SIGNING_KEY: {e}"))?,
        None => {
            let path = args
                .signing_key_file
                .clone()
                .unwrap_or_else(|| args.data_dir.join("signing.key"));
            bootstrap::signing_key(&path)?
        }
    };
    let manager_config = ManagerConfig {
        issuers,
        bootstrap_token,
        signer: Arc::new(signer),
        ..ManagerConfig::default()
    };
    let edge_config = EdgeConfig {
        id: args.edge_id.clone(),
        region: args.region.clone(),
        max_staleness: Duration::from_secs(args.max_staleness),
        stale_policy: match args.stale_policy {
            StaleMode::FailClosed => StalePolicy::FailClosed,
            StaleMode::FailOpen => StalePolicy::FailOpen,
        },
    };
    println!("manager listening on http://{}", admin.local_addr()?);
    println!("edge listening on http://{}", edge.local_addr()?);
    let cancel = CancellationToken::new();
    let running = embedded::start(
        store.clone(),
        manager_config,
        edge_config,
        admin,
        edge,
        cancel.clone(),
    )
    .await?;
    shutdown_signal(cancel).await;
    running.finished().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
