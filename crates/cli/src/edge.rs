//! `quench edge`: one edge, following a deployment's NATS and reading its manager over HTTP.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::bail;
use clap::Args;
use quench_api::listener::ServerCertificate;
use quench_bus::Role;
use quench_core::sign::{PublicKey, Trust};
use quench_edge::{Replica, follow};
use tokio_util::sync::CancellationToken;

use crate::{
    logging::{self, LogArgs},
    node::{self, BusArgs, EdgeArgs, ListenArgs},
    remote::HttpUpstream,
    settings::Problems,
};

#[derive(Debug, Args)]
pub struct EdgeCommand {
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub serving: ListenArgs,
    /// The managers' URLs, comma-separated (managers of the deployment, or a load balancer in front of
    /// them). The edge reads the one that answered last and moves on to the next when it cannot be reached
    /// or answers 502, 503 or 504.
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
    /// Do not keep a copy of the manager's snapshot at `<data-dir>/edge-<id>.<deployment>.snapshot`
    /// (with `--id`).
    /// With one, a restart starts from it (its signature checked again) and applies the manager's log
    /// after it, instead of reading every key from the manager.
    #[arg(long)]
    pub no_snapshot_copy: bool,
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

/// An edge's configuration, checked before anything is written or bound.
#[derive(Debug)]
struct EdgeSettings {
    config: quench_edge::EdgeConfig,
    /// Where the acknowledgement key lives (made there on first start), if it is kept.
    key_file: Option<PathBuf>,
    /// Where the copy of the manager's snapshot is kept, if it is.
    snapshot_file: Option<PathBuf>,
    managers: Vec<crate::remote::ManagerUrl>,
    /// `--trust-key`, or `None` to fetch the keys from the manager.
    trust: Option<Trust>,
    certificate: Option<Arc<ServerCertificate>>,
    access: Option<quench_bus::NatsAccess>,
}

/// Reads and checks every option; writes nothing. Every bad setting is reported at once.
fn check(args: &EdgeCommand) -> anyhow::Result<EdgeSettings> {
    if args.bus.nats.is_none() {
        bail!("--nats: an edge follows the deployment's NATS");
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("edge-{}", std::process::id()));
    let mut problems = Problems::default();
    let config = problems.take(node::edge_config(&args.edge, id));
    let managers = problems.take(manager_urls(args));
    let trust = problems.take(trust_keys(&args.trust_keys));
    let certificate = problems.take(args.serving.certificate());
    let access = problems.take(node::bus_access(&args.bus));
    let (Some(config), Some(managers), Some(trust), Some(certificate), Some(access)) =
        (config, managers, trust, certificate, access)
    else {
        return Err(problems.into_error());
    };
    let key_file = args.key_file.clone().or_else(|| {
        args.id
            .as_ref()
            .map(|id| args.data_dir.join(format!("edge-{id}.key")))
    });
    let snapshot_file = args
        .id
        .as_ref()
        .filter(|_| !args.no_snapshot_copy)
        .map(|id| {
            let deployment = &args.bus.deployment;
            args.data_dir
                .join(format!("edge-{id}.{deployment}.snapshot"))
        });
    Ok(EdgeSettings {
        config,
        key_file,
        snapshot_file,
        managers,
        trust,
        certificate,
        access,
    })
}

/// `--manager`, refused over plain HTTP to another host unless `--insecure-http` and `--trust-key` say so.
fn manager_urls(args: &EdgeCommand) -> anyhow::Result<Vec<crate::remote::ManagerUrl>> {
    let managers = crate::remote::manager_urls(&args.manager, args.insecure_http)?;
    if managers.iter().any(|m| m.plain_remote()) && args.trust_keys.is_empty() {
        bail!(
            "--insecure-http needs --trust-key: over plain HTTP the manager's signing keys could be \
             anyone's"
        );
    }
    Ok(managers)
}

fn trust_keys(texts: &[String]) -> anyhow::Result<Option<Trust>> {
    if texts.is_empty() {
        return Ok(None);
    }
    let keys = texts
        .iter()
        .map(|k| PublicKey::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--trust-key: {e}"))?;
    Ok(Some(Trust::new(keys)))
}

pub async fn run(args: EdgeCommand, log: LogArgs) -> anyhow::Result<ExitCode> {
    logging::init(log);
    let EdgeSettings {
        mut config,
        key_file,
        snapshot_file,
        managers,
        trust,
        certificate,
        access,
    } = check(&args)?;
    for manager in managers.iter().filter(|m| m.plain_remote()) {
        tracing::warn!(
            manager = %manager,
            "following a remote manager over plain HTTP (--insecure-http): the edge token and key \
             verifiers cross the network in the clear"
        );
    }
    if let Some(path) = key_file {
        config.ack_key = Some(node::edge_key(&path)?);
    }
    let listeners = node::listeners(
        &args.listen,
        args.ops_listen.as_deref(),
        "edge API",
        &args.serving,
        &certificate,
    )
    .await?;
    node::raise_open_file_limit(args.serving.max_connections * 2);
    let mut upstream = HttpUpstream::new(&managers, args.token.clone())?;
    if let Some(path) = snapshot_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            node::create_data_dir(&dir.to_path_buf())?;
        }
        upstream = upstream.with_snapshot_file(path);
    }
    let cancel = CancellationToken::new();
    node::watch_certificate(&args.serving, &certificate, &cancel)?;
    let id = config.id.clone();
    let replica = Replica::new(config);
    // Serve at once: until the manager and the bus are reached and the replica is loaded, the edge
    // answers `stale` and its health check says `starting`.
    node::announce(
        &format!("edge {} ({})", id, replica.config().region),
        &listeners,
    )?;
    let server = tokio::spawn(quench_api::listener::serve_listeners(
        listeners,
        quench_edge::http::router(replica.clone()),
        cancel.clone(),
    ));
    let stop = tokio::spawn(node::shutdown_signal(cancel.clone()));
    let reached = tokio::select! {
        reached = reach(&upstream, trust, &args.bus, access, Role::Edge(id)) => Some(reached),
        () = cancel.cancelled() => None,
    };
    match reached {
        Some(Ok((trust, bus))) => {
            follow(replica, bus, Arc::new(upstream), trust, cancel.clone()).await
        }
        Some(Err(error)) => {
            cancel.cancel();
            stop.abort();
            let _ = server.await;
            return Err(error);
        }
        None => {}
    }
    let _ = stop.await;
    if let Ok(Err(error)) = server.await {
        tracing::error!(%error, "the edge API failed");
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The manager's signing keys (unless pinned) and the bus, each retried until it answers: an edge
/// restarted while its region is cut off must come back by itself when the link does.
async fn reach(
    upstream: &HttpUpstream,
    trust: Option<Trust>,
    bus: &BusArgs,
    access: Option<quench_bus::NatsAccess>,
    role: Role,
) -> anyhow::Result<(Trust, Arc<dyn quench_bus::Bus>)> {
    let trust = match trust {
        Some(trust) => trust,
        None => {
            let mut wait = std::time::Duration::from_millis(250);
            loop {
                match upstream.trust().await {
                    Ok(trust) => break trust,
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), retry_in = ?wait, "cannot fetch the manager's signing keys yet; answering `stale` until it can");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(node::PATIENCE);
                    }
                }
            }
        }
    };
    let bus = node::connect_bus_patiently(bus, access, role).await?;
    Ok((trust, bus))
}
