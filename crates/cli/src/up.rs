//! `quench up`: the manager and an edge in one process.

use std::process::ExitCode;

use clap::Args;
use quench_bus::Role;
use quench_cli::embedded;
use tokio_util::sync::CancellationToken;

use crate::{
    logging::{self, LogArgs},
    node::{self, BusArgs, EdgeArgs, ListenArgs, ManagerArgs},
    settings::{ManagerSettings, Problems},
};

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

/// The configuration of `up`, checked before anything is written or bound: a bad flag is reported as
/// such even when a port is taken or the database is unreachable.
#[derive(Debug)]
struct Checked {
    edge_config: quench_edge::EdgeConfig,
    settings: ManagerSettings,
    certificate: Option<std::sync::Arc<quench_api::listener::ServerCertificate>>,
    access: Option<quench_bus::NatsAccess>,
}

/// Reads and checks every option; writes nothing. Every bad setting is reported at once.
async fn check(args: &UpArgs) -> anyhow::Result<Checked> {
    let mut problems = Problems::default();
    let edge_config = problems.take(node::edge_config(&args.edge, args.edge_id.clone()));
    let settings = problems.take(ManagerSettings::check(&args.manager).await);
    let certificate = problems.take(args.listen.certificate());
    let access = problems.take(node::bus_access(&args.bus));
    match (edge_config, settings, certificate, access) {
        (Some(edge_config), Some(settings), Some(certificate), Some(access)) => Ok(Checked {
            edge_config,
            settings,
            certificate,
            access,
        }),
        _ => Err(problems.into_error()),
    }
}

pub async fn run(args: UpArgs, log: LogArgs) -> anyhow::Result<ExitCode> {
    logging::init(log);
    let Checked {
        mut edge_config,
        settings,
        certificate,
        access,
    } = check(&args).await?;
    node::create_data_dir(&args.manager.data_dir)?;
    let key_file = args.edge_key_file.clone().unwrap_or_else(|| {
        args.manager
            .data_dir
            .join(format!("edge-{}.key", args.edge_id))
    });
    edge_config.ack_key = Some(node::edge_key(&key_file)?);
    let store = node::open_store(&args.manager).await?;
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
    let config = settings
        .into_config(&*store, &args.manager.data_dir, "manager-embedded".into())
        .await?;
    let bus = node::connect_bus(&args.bus, access, Role::Manager("quench-up".into())).await?;
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
