//! `quench up`: the manager and an edge in one process.

use std::process::ExitCode;

use clap::Args;
use quench_bus::Role;
use quench_manager::embedded::{self, EmbeddedEdge};
use tokio_util::sync::CancellationToken;

use crate::node::{self, BusArgs, EdgeArgs, ManagerArgs};

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub manager: ManagerArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    /// Edge API address.
    #[arg(long, default_value = "127.0.0.1:7601")]
    pub edge_listen: String,
    /// The embedded edge's id.
    #[arg(long, default_value = "embedded")]
    pub edge_id: String,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    node::init_logging();
    let edge_config = node::edge_config(&args.edge, args.edge_id.clone())?;
    node::create_data_dir(&args.manager.data_dir)?;
    let store = node::open_store(&args.manager).await?;
    let admin = node::bind(&args.manager.admin_listen, "manager API").await?;
    let edge = node::bind(&args.edge_listen, "edge API").await?;
    let config = node::manager_config(&args.manager, &*store, "manager-embedded".into()).await?;
    let bus = node::connect_bus(&args.bus, Role::Manager("quench-up".into())).await?;
    println!("manager listening on http://{}", admin.local_addr()?);
    println!("edge listening on http://{}", edge.local_addr()?);
    let cancel = CancellationToken::new();
    let edge = EmbeddedEdge {
        config: edge_config,
        listener: edge,
    };
    let running = embedded::start(
        store.clone(),
        bus,
        config,
        admin,
        Some(edge),
        cancel.clone(),
    )
    .await?;
    node::shutdown_signal(cancel).await;
    running.finished().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
