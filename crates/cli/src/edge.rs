//! `quench edge`: one edge, following a deployment's NATS and reading its manager over HTTP.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, bail};
use clap::Args;
use quench_bus::Role;
use quench_core::sign::{PublicKey, Trust};
use quench_edge::{Replica, follow};
use tokio_util::sync::CancellationToken;

use crate::{
    node::{self, BusArgs, EdgeArgs, ListenArgs},
    remote::HttpUpstream,
};

#[derive(Debug, Args)]
pub struct EdgeCommand {
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub serving: ListenArgs,
    /// The manager's URL (any manager of the deployment, or a load balancer in front of them).
    #[arg(long, env = "QUENCH_MANAGER")]
    pub manager: String,
    /// Edge API address.
    #[arg(long, default_value = "127.0.0.1:7601")]
    pub listen: String,
    /// Serve /metrics and the detailed /healthz on this separate address (the edge API then answers
    /// /metrics with 404 and /healthz with its status only).
    #[arg(long)]
    pub ops_listen: Option<String>,
    /// This edge's name; default `edge-<pid>` (then a new edge, with a new key, at every start).
    #[arg(long)]
    pub id: Option<String>,
    /// Where the edge keeps its key (with `--id`): `<data-dir>/edge-<id>.key`.
    #[arg(long, env = "QUENCH_DATA_DIR", default_value = "./quench-data")]
    pub data_dir: PathBuf,
    /// The file holding the key this edge signs its acknowledgements with (made, mode 0600, on first
    /// start); default `<data-dir>/edge-<id>.key` when `--id` is given. The manager accepts one key per
    /// edge id: keep this file across restarts, and if it is lost, an admin rotates the edge's key.
    #[arg(long, env = "QUENCH_EDGE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// An `edge`-scope manager token.
    #[arg(long, env = "QUENCH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Trust only these manager public keys (hex) instead of the list the manager serves.
    #[arg(long = "trust-key")]
    pub trust_keys: Vec<String>,
    /// Allow plain `http://` to a manager that is not on this host. Anyone on the path could then read
    /// the edge's token and every key's verifier, and withhold answers; it needs `--trust-key`.
    #[arg(long)]
    pub insecure_http: bool,
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
    let mut config = node::edge_config(&args.edge, id)?;
    let key_file = args.key_file.clone().or_else(|| {
        args.id
            .as_ref()
            .map(|id| args.data_dir.join(format!("edge-{id}.key")))
    });
    if let Some(path) = key_file {
        config.ack_key = Some(node::edge_key(&path)?);
    }
    let manager = crate::remote::manager_url(&args.manager, args.insecure_http)?;
    if manager.plain_remote() {
        if args.trust_keys.is_empty() {
            bail!(
                "--insecure-http needs --trust-key: over plain HTTP the manager's signing keys could be \
                 anyone's"
            );
        }
        tracing::warn!(
            manager = %manager,
            "following a remote manager over plain HTTP (--insecure-http): the edge token and key \
             verifiers cross the network in the clear"
        );
    }
    let certificate = args.serving.certificate()?;
    let listeners = node::listeners(
        &args.listen,
        args.ops_listen.as_deref(),
        "edge API",
        &args.serving,
        &certificate,
    )
    .await?;
    node::raise_open_file_limit(args.serving.max_connections * 2);
    let upstream = HttpUpstream::new(manager.as_str(), args.token.clone())?;
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
    let cancel = CancellationToken::new();
    node::watch_certificate(&args.serving, &certificate, &cancel)?;
    node::announce(
        &format!("edge {} ({})", config.id, config.region),
        &listeners,
    )?;
    let replica = Replica::new(config);
    let follower = tokio::spawn(follow(
        replica.clone(),
        bus,
        Arc::new(upstream),
        trust,
        cancel.clone(),
    ));
    let server = {
        let cancel = cancel.clone();
        tokio::spawn(quench_api::listener::serve_listeners(
            listeners,
            quench_edge::http::router(replica),
            cancel,
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
