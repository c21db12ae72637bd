//! `quench up`: the manager and an edge in one process.

use std::process::ExitCode;

use clap::Args;
use quench_bus::Role;
use quench_cli::embedded;
use tokio_util::sync::CancellationToken;

use crate::node::{self, BusArgs, EdgeArgs, ListenArgs, ManagerArgs};

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub manager: ManagerArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Edge API address.
    #[arg(long, default_value = "127.0.0.1:7601")]
    pub edge_listen: String,
    /// Serve the edge's /metrics and detailed /healthz on this separate address (the edge API then
    /// answers /metrics with 404 and /healthz with its status only).
    #[arg(long)]
    pub edge_ops_listen: Option<String>,
    /// The embedded edge's id.
    #[arg(long, default_value = "embedded")]
    pub edge_id: String,
    /// The file holding the key the embedded edge signs its acknowledgements with; default
    /// `<data-dir>/edge-<edge-id>.key`, made on first start.
    #[arg(long, env = "QUENCH_EDGE_KEY_FILE")]
    pub edge_key_file: Option<std::path::PathBuf>,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    node::init_logging();
    let mut edge_config = node::edge_config(&args.edge, args.edge_id.clone())?;
    node::create_data_dir(&args.manager.data_dir)?;
    let key_file = args.edge_key_file.clone().unwrap_or_else(|| {
        args.manager
            .data_dir
            .join(format!("edge-{}.key", args.edge_id))
    });
    edge_config.ack_key = Some(node::edge_key(&key_file)?);
    let store = node::open_store(&args.manager).await?;
    let certificate = args.listen.certificate()?;
    let admin = node::listeners(
        &args.manager.admin_listen,
        args.manager.admin_ops_listen.as_deref(),
        "manager API",
        &args.listen,
        &certificate,
    )
    .await?;
    let edge = node::listeners(
        &args.edge_listen,
        args.edge_ops_listen.as_deref(),
        "edge API",
        &args.listen,
        &certificate,
    )
    .await?;
    node::raise_open_file_limit(args.listen.max_connections * 4);
    let config = node::manager_config(&args.manager, &*store, "manager-embedded".into()).await?;
    let bus = node::connect_bus(&args.bus, Role::Manager("quench-up".into())).await?;
    let cancel = CancellationToken::new();
    node::watch_certificate(&args.listen, &certificate, &cancel)?;
    node::announce("manager", &admin)?;
    node::announce("edge", &edge)?;
    let running = embedded::start_on(
        store.clone(),
        bus,
        config,
        admin,
        Some((edge_config, edge)),
        cancel.clone(),
    )
    .await?;
    node::shutdown_signal(cancel).await;
    running.finished().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
