//! `quench edge`: one edge, following a deployment's NATS and reading its manager over HTTP.

use std::{process::ExitCode, sync::Arc};

use anyhow::{Context, bail};
use clap::Args;
use quench_bus::Role;
use quench_core::sign::{PublicKey, Trust};
use quench_edge::{Replica, follow};
use tokio_util::sync::CancellationToken;

use crate::{
    node::{self, BusArgs, EdgeArgs},
    remote::HttpUpstream,
};

#[derive(Debug, Args)]
pub struct EdgeCommand {
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    /// The manager's URL (any manager of the deployment, or a load balancer in front of them).
    #[arg(long, env = "QUENCH_MANAGER")]
    pub manager: String,
    /// Edge API address.
    #[arg(long, default_value = "127.0.0.1:7601")]
    pub listen: String,
    /// This edge's name; default `edge-<pid>`.
    #[arg(long)]
    pub id: Option<String>,
    /// An `edge`-scope manager token.
    #[arg(long, env = "QUENCH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Trust only these manager public keys (hex) instead of the list the manager serves.
    #[arg(long = "trust-key")]
    pub trust_keys: Vec<String>,
}

pub async fn run(args: EdgeCommand) -> anyhow::Result<ExitCode> {
    node::init_logging();
    if args.bus.nats.is_none() {
        bail!("--nats: an edge follows the deployment's NATS");
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("edge-{}", std::process::id()));
    let config = node::edge_config(&args.edge, id)?;
    let listener = node::bind(&args.listen, "edge API").await?;
    let upstream = HttpUpstream::new(&args.manager, args.token.clone())?;
    let trust = if args.trust_keys.is_empty() {
        upstream
            .trust()
            .await
            .context("--manager: fetching the signing keys")?
    } else {
        let keys = args
            .trust_keys
            .iter()
            .map(|k| PublicKey::parse(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--trust-key: {e}"))?;
        Trust::new(keys)
    };
    let bus = node::connect_bus(&args.bus, Role::Edge(config.id.clone())).await?;
    println!(
        "edge {} ({}) listening on http://{}",
        config.id,
        config.region,
        listener.local_addr()?
    );
    let replica = Replica::new(config);
    let cancel = CancellationToken::new();
    let follower = tokio::spawn(follow(
        replica.clone(),
        bus,
        Arc::new(upstream),
        trust,
        cancel.clone(),
    ));
    let server = {
        let cancel = cancel.clone();
        tokio::spawn(quench_edge::web::serve(
            listener,
            quench_edge::http::router(replica),
            async move { cancel.cancelled().await },
        ))
    };
    node::shutdown_signal(cancel).await;
    let _ = follower.await;
    if let Ok(Err(error)) = server.await {
        tracing::error!(%error, "the edge API failed");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
