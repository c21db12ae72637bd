//! `quench manager`: the manager alone, for a deployment on NATS with any number of edges.

use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use quench_bus::Role;
use quench_cli::embedded;
use tokio_util::sync::CancellationToken;

use crate::{
    logging::{self, LogArgs},
    node::{self, BusArgs, ListenArgs, ManagerArgs},
    settings::{ManagerSettings, Problems},
};

#[derive(Debug, Args)]
pub struct ManagerCommand {
    #[command(flatten)]
    pub manager: ManagerArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    /// This manager's name in heartbeats and logs; default `manager-<pid>`.
    #[arg(long)]
    pub id: Option<String>,
}

pub async fn run(args: ManagerCommand, log: LogArgs) -> anyhow::Result<ExitCode> {
    logging::init(log);
    if args.bus.nats.is_none() {
        bail!("--nats: a standalone manager needs NATS to reach its edges (or run `quench up`)");
    }
    // Every setting is checked before anything is written or bound.
    let mut problems = Problems::default();
    let settings = problems.take(ManagerSettings::check(&args.manager).await);
    let certificate = problems.take(args.listen.certificate());
    let access = problems.take(node::bus_access(&args.bus));
    let (Some(settings), Some(certificate), Some(access)) = (settings, certificate, access) else {
        return Err(problems.into_error());
    };

    node::create_data_dir(&args.manager.data_dir)?;
    let store = node::open_store(&args.manager).await?;
    let admin = node::listeners(
        &args.manager.admin_listen,
        args.manager.admin_ops_listen.as_deref(),
        "manager API",
        &args.listen,
        &certificate,
    )
    .await?;
    node::raise_open_file_limit(args.listen.max_connections * 2);
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("manager-{}", std::process::id()));
    let config = settings
        .into_config(&*store, &args.manager.data_dir, id)
        .await?;
    let bus = node::connect_bus(&args.bus, access, Role::Manager("quench-manager".into())).await?;
    let cancel = CancellationToken::new();
    node::watch_certificate(&args.listen, &certificate, &cancel)?;
    node::announce("manager", &admin)?;
    let running =
        embedded::start_on(store.clone(), bus, config, admin, None, cancel.clone()).await?;
    node::shutdown_signal(cancel).await;
    running.finished().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
