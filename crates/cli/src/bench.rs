//! `quench bench propagation`: how long a revocation takes to reach every edge (and, in [`soak`], `quench
//! bench soak`: a long run under steady load).
//!
//! Starts (or uses) a NATS server, runs a manager in this process (SQLite in a temporary directory, NATS
//! bus) and N edges as separate `quench edge` processes. Each revocation is a real HTTP call with
//! `wait=all`; afterwards every edge is asked when it applied that event (`applied_at_us` in its
//! `/healthz`, read from the same clock), so each figure runs from the start of the revoke call to the
//! moment that edge applied the revocation. Revocations run one after another.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use quench_bus::{Bus, NatsBus};
use quench_cli::embedded;
use quench_manager::{ManagerConfig, bootstrap};
use quench_store::{Store, sqlite::SqliteStore};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time from each revoke call to each edge applying it.
    Propagation(PropagationArgs),
    /// A long run at steady verify and revocation rates: errors, latency over time, memory growth.
    Soak(soak::SoakArgs),
    /// Scanner throughput, recall and false positives, against detect-secrets.
    Scan(crate::bench_scan::ScanBenchArgs),
    /// What acknowledging a revocation costs an edge and the manager, per edge (run it under callgrind
    /// with scripts/bench-acks for instruction counts).
    Acks(acks::AcksArgs),
    /// Time from an edge's start to verifying, at 1 M and 10 M keys.
    Coldstart(coldstart::ColdStartArgs),
}

#[derive(Debug, Args)]
pub struct PropagationArgs {
    /// Edge processes to start.
    #[arg(long, default_value_t = 10)]
    pub edges: usize,
    /// Revocations to time (after a few untimed warm-up ones).
    #[arg(long, default_value_t = 200)]
    pub revocations: usize,
    /// Also time one bulk revocation of this many keys (0: skip).
    #[arg(long, default_value_t = 0)]
    pub bulk: usize,
    /// Revoke by reporting each key as leaked (`POST /v1/leaks`, scope leaks:report) instead of by id:
    /// the time from a leak report to every edge refusing the key.
    #[arg(long)]
    pub leaks: bool,
    /// Use this NATS instead of starting one.
    #[arg(long, conflicts_with = "regions")]
    pub nats: Option<String>,
    /// Regions by one-way latency in ms (e.g. `40,80,110`): the NATS started becomes a hub and each
    /// region a leaf node reached through a proxy with that latency, with `--edges` edges per region.
    #[arg(long, value_delimiter = ',')]
    pub regions: Vec<u64>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

mod acks;
mod api;
mod coldstart;
mod regions;
mod report;
mod soak;

use api::Api;
use report::{Samples, print_table};

const WARMUP: usize = 10;

pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Propagation(args) => propagation(args).await,
        BenchCommand::Soak(args) => soak::run(args).await,
        BenchCommand::Scan(args) => crate::bench_scan::run(args),
        BenchCommand::Acks(args) => acks::run(args).await,
        BenchCommand::Coldstart(args) => coldstart::run(args).await,
    }
}

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn nats_binary() -> anyhow::Result<PathBuf> {
    [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
    .context("no nats-server found: install it (scripts/services) or pass --nats")
}

/// Starts a NATS server with `args`, listening on `port`, and waits until it accepts connections.
fn spawn_nats(args: &[String], port: u16, processes: &mut Processes) -> anyhow::Result<String> {
    let child = Command::new(nats_binary()?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server")?;
    processes.0.push(child);
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            bail!("nats-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(format!("nats://127.0.0.1:{port}"))
}

fn start_nats(dir: &std::path::Path, processes: &mut Processes) -> anyhow::Result<String> {
    let port = free_port()?;
    let store = dir.join("nats").display().to_string();
    let args = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-js",
        "-sd",
        &store,
    ]
    .map(String::from);
    spawn_nats(&args, port, processes)
}

/// Where an edge finds its bus and its manager, and which region it reports.
struct EdgeLink<'a> {
    nats: &'a str,
    manager: &'a str,
    region: String,
    /// The JetStream domain holding the stream, when the edge's NATS is a leaf node of it.
    domain: Option<&'a str>,
    /// Where the edge keeps its acknowledgement key: the benchmark's temporary directory, not the
    /// directory it was started from.
    data_dir: &'a Path,
}

fn start_edge(
    link: &EdgeLink<'_>,
    deployment: &str,
    token: &str,
    id: &str,
    processes: &mut Processes,
) -> anyhow::Result<String> {
    let domain = link.domain.map(|d| ["--jetstream-domain", d]);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["edge", "--nats", link.nats, "--deployment", deployment])
        .args(["--manager", link.manager, "--listen", "127.0.0.1:0"])
        .args(["--id", id, "--region", &link.region])
        .arg("--data-dir")
        .arg(link.data_dir)
        .args(domain.iter().flatten())
        .env("QUENCH_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting an edge")?;
    let stdout = child.stdout.take().context("edge stdout")?;
    processes.0.push(child);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(at) = line.find("http://") {
            return Ok(line[at..].trim().to_owned());
        }
    }
    bail!("edge {id} exited before listening")
}

/// A manager in this process, its API, and the edges following it.
struct Deployment {
    api: Api,
    edges: Vec<String>,
    /// With `--regions`: the regions, which edges are in each.
    regions: Vec<regions::Region>,
    running: embedded::Running,
    cancel: CancellationToken,
    /// The regions' links: they stop when dropped.
    _proxies: Vec<quench_netfault::Proxy>,
    /// The edges (and NATS, if started here): killed on drop.
    _processes: Processes,
    _dir: tempfile::TempDir,
}

/// The manager running in this process.
struct Manager {
    api: Api,
    addr: std::net::SocketAddr,
    running: embedded::Running,
    cancel: CancellationToken,
}

/// Starts a manager in this process (SQLite in `dir`, the bus on `nats`) with a fresh bootstrap token.
async fn start_manager(nats: &str, dir: &Path, deployment: &str) -> anyhow::Result<Manager> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("quench.db")).await?);
    let bus: Arc<dyn Bus> = Arc::new(NatsBus::connect(nats, deployment, "quench-bench").await?);
    let token = format!("bench-{}-{}", now_us(), "x".repeat(32));
    let config = ManagerConfig {
        bootstrap_token: Some(bootstrap::configured(token.clone())?),
        ..ManagerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let running = embedded::start(store, bus, config, listener, None, cancel.clone()).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
        base: format!("http://{addr}"),
        token,
    };
    Ok(Manager {
        api,
        addr,
        running,
        cancel,
    })
}

/// Starts `count` edges on `nats`, spread over three region names, their keys in `dir`.
fn start_edges(
    count: usize,
    (nats, manager): (&str, &str),
    deployment: &str,
    token: &str,
    dir: &Path,
    processes: &mut Processes,
) -> anyhow::Result<Vec<String>> {
    eprintln!("starting {count} edge(s) on {nats} ...");
    (0..count)
        .map(|i| {
            let link = EdgeLink {
                nats,
                manager,
                region: format!("r{}", i % 3),
                domain: None,
                data_dir: dir,
            };
            start_edge(&link, deployment, token, &format!("bench-e{i}"), processes)
        })
        .collect()
}

/// Starts NATS (unless given; a hub when `--regions`), a manager in this process and the edges (per
/// region with `--regions`), and waits until every edge is live.
async fn deploy(args: &PropagationArgs) -> anyhow::Result<Deployment> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut processes = Processes(Vec::new());
    let hub = match args.regions.is_empty() {
        true => None,
        false => Some(regions::start_hub(dir.path(), &mut processes)?),
    };
    let nats = match (&args.nats, &hub) {
        (Some(url), _) => url.clone(),
        (None, Some(hub)) => hub.url.clone(),
        (None, None) => start_nats(dir.path(), &mut processes)?,
    };
    let deployment = format!("bench-{}", std::process::id());
    let manager = start_manager(&nats, dir.path(), &deployment).await?;
    let base = manager.api.base.clone();
    let edge_token = manager.api.token(&["edge"]).await?;
    let started = match &hub {
        Some(hub) => {
            let launch = regions::Launch {
                dir: dir.path(),
                deployment: &deployment,
                token: &edge_token,
                manager: manager.addr,
            };
            regions::start_regions(hub, &args.regions, args.edges, &launch, &mut processes).await?
        }
        None => regions::Started {
            edges: start_edges(
                args.edges,
                (&nats, &base),
                &deployment,
                &edge_token,
                dir.path(),
                &mut processes,
            )?,
            regions: Vec::new(),
            proxies: Vec::new(),
        },
    };
    manager.api.wait_live(started.edges.len()).await?;
    Ok(Deployment {
        api: manager.api,
        edges: started.edges,
        regions: started.regions,
        running: manager.running,
        cancel: manager.cancel,
        _proxies: started.proxies,
        _processes: processes,
        _dir: dir,
    })
}

async fn propagation(args: PropagationArgs) -> anyhow::Result<ExitCode> {
    if args.edges == 0 || args.revocations == 0 {
        bail!("--edges and --revocations: at least 1");
    }
    let deployment = deploy(&args).await?;
    let (api, edges) = (&deployment.api, &deployment.edges);
    let total = WARMUP + args.revocations;
    let keys = api.issue_keys(total).await?;
    let reporter = api.token(&["leaks:report"]).await?;
    let mut samples = Samples::new(edges.len(), deployment.regions.clone());
    for (n, (id, key)) in keys.iter().enumerate() {
        let started = now_us();
        let clock = Instant::now();
        let revoked = if args.leaks {
            api.report_leak(&reporter, key).await?
        } else {
            api.revoke(id).await?
        };
        let call_ms = clock.elapsed().as_secs_f64() * 1000.0;
        let seq = match &revoked.body {
            Some(confirmation) if confirmation.complete => confirmation.seq,
            other => bail!("revocation {n} was not confirmed by every edge: {other:?}"),
        };
        let committed = revoked.committed_us;
        let applied = api.applied_at(edges, seq).await?;
        if n >= WARMUP {
            samples.record(started, committed, call_ms, &applied);
        }
        if (n + 1) % 50 == 0 {
            eprintln!("  {}/{total} revocations", n + 1);
        }
    }
    let bulk = match args.bulk {
        0 => None,
        count => Some(bulk_revocation(api, &deployment.running.manager, edges, count).await?),
    };
    let result = samples.report(&args, bulk);
    deployment.cancel.cancel();
    deployment.running.finished().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_table(&result);
    }
    Ok(ExitCode::SUCCESS)
}

/// Issues `count` keys straight into the store (in transactions of 10,000, published like any change:
/// issuing them over HTTP one by one would take longer than the measurement), waits until every edge
/// holds them, then revokes them all in one API call and times until every edge applied it.
async fn bulk_revocation(
    api: &Api,
    manager: &quench_manager::Manager,
    edges: &[String],
    count: usize,
) -> anyhow::Result<Value> {
    let owner = issue_bulk(manager, count).await?;
    let head = manager.store.head().await?.get();
    for edge in edges {
        api.wait_applied(edge, head, Duration::from_secs(900))
            .await
            .with_context(|| format!("{edge} did not catch up with the issued keys"))?;
    }
    let owner = owner.to_string();
    let started = now_us();
    let clock = Instant::now();
    let revoked = api.revoke_owner(&owner).await?;
    let call_ms = clock.elapsed().as_secs_f64() * 1000.0;
    let committed = revoked.committed_us;
    let propagation = revoked
        .body
        .propagation
        .context("no confirmation in the answer")?;
    let mut slowest = 0.0f64;
    for edge in edges {
        let health = api.health(edge).await?;
        if health.applied_seq < propagation.seq {
            bail!(
                "{edge} had not applied the bulk revocation: applied {}, wanted {}",
                health.applied_seq,
                propagation.seq
            );
        }
        let ms = (health.applied_at_us - started) as f64 / 1000.0;
        slowest = slowest.max(ms);
    }
    Ok(json!({
        "keys": count,
        "commit_ms": committed.map(|at| ((at - started) as f64 / 1000.0 * 1000.0).round() / 1000.0),
        "revoked": revoked.body.revoked.len(),
        "complete": propagation.complete,
        "call_ms": (call_ms * 1000.0).round() / 1000.0,
        "last_edge_enforced_ms": (slowest * 1000.0).round() / 1000.0,
    }))
}

/// Issues `count` keys of a new owner straight into the store, 10,000 per transaction, each batch
/// published like any change; returns the owner.
async fn issue_bulk(
    manager: &quench_manager::Manager,
    count: usize,
) -> anyhow::Result<quench_core::Owner> {
    eprintln!("issuing {count} keys straight into the store ...");
    let owner = quench_core::Owner::parse(&format!("bulk-{}", now_us()))?;
    let mut issued = 0;
    while issued < count {
        let batch = (count - issued).min(10_000);
        let actor = quench_store::Actor::system(quench_core::Timestamp::now());
        let records = (0..batch)
            .map(|_| bulk_key(&owner, actor.at))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let events = manager.store.create_keys(&records, &actor).await?;
        manager.publish(&events).await;
        issued += batch;
        if issued % 100_000 == 0 || issued == count {
            eprintln!("  {issued}/{count} keys");
        }
    }
    Ok(owner)
}

fn bulk_key(
    owner: &quench_core::Owner,
    at: quench_core::Timestamp,
) -> anyhow::Result<quench_core::KeyRecord> {
    use quench_core::{ApiKey, HashAlg, Prefix, Verifier};
    let key = ApiKey::generate(Prefix::default())?;
    Ok(quench_core::KeyRecord {
        id: key.id(),
        prefix: key.prefix(),
        owner: owner.clone(),
        name: None,
        apis: Vec::new(),
        scopes: Vec::new(),
        metadata: serde_json::Map::new(),
        created_at: at,
        expires_at: None,
        revoked: None,
        rotated_from: None,
        replaced_by: None,
        verifier: Verifier::create(HashAlg::Sha256, key.secret())?,
    })
}
