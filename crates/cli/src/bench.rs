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
    path::PathBuf,
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
    #[arg(long)]
    pub nats: Option<String>,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

mod api;
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

fn start_nats(dir: &std::path::Path, processes: &mut Processes) -> anyhow::Result<String> {
    let binary = [
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
    .context("no nats-server found: install it (scripts/services) or pass --nats")?;
    let port = free_port()?;
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("nats"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nats-server")?;
    processes.0.push(child);
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > end {
            bail!("nats-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(format!("nats://127.0.0.1:{port}"))
}

/// Starts edge `index`; its key file goes under `dir` (the run's temporary directory), never into the
/// directory the benchmark was started from.
fn start_edge(
    dir: &std::path::Path,
    nats: &str,
    deployment: &str,
    manager: &str,
    token: &str,
    index: usize,
    processes: &mut Processes,
) -> anyhow::Result<String> {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "edge",
            "--nats",
            nats,
            "--deployment",
            deployment,
            "--manager",
            manager,
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--id",
            &format!("bench-e{index}"),
        ])
        .args(["--region", &format!("r{}", index % 3)])
        .arg("--data-dir")
        .arg(dir.join("edges"))
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
    bail!("edge {index} exited before listening")
}

/// A manager in this process, its API, and the edges following it.
struct Deployment {
    api: Api,
    edges: Vec<String>,
    running: embedded::Running,
    cancel: CancellationToken,
    /// The edges (and NATS, if started here): killed on drop.
    _processes: Processes,
    _dir: tempfile::TempDir,
}

/// Starts NATS (unless given), a manager in this process and `args.edges` edge processes, and waits until
/// every edge is live.
async fn deploy(args: &PropagationArgs) -> anyhow::Result<Deployment> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut processes = Processes(Vec::new());
    let nats = match &args.nats {
        Some(url) => url.clone(),
        None => start_nats(dir.path(), &mut processes)?,
    };
    let deployment = format!("bench-{}", std::process::id());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("quench.db")).await?);
    let bus: Arc<dyn Bus> = Arc::new(NatsBus::connect(&nats, &deployment, "quench-bench").await?);
    let token = format!("bench-{}-{}", now_us(), "x".repeat(32));
    let config = ManagerConfig {
        bootstrap_token: Some(bootstrap::configured(token.clone())?),
        ..ManagerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let cancel = CancellationToken::new();
    let running = embedded::start(store, bus, config, listener, None, cancel.clone()).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?,
        base: base.clone(),
        token,
    };
    let edge_token = api.token(&["edge"]).await?;
    eprintln!("starting {} edge(s) on {nats} ...", args.edges);
    let edges = (0..args.edges)
        .map(|i| {
            start_edge(
                dir.path(),
                &nats,
                &deployment,
                &base,
                &edge_token,
                i,
                &mut processes,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    api.wait_live(args.edges).await?;
    Ok(Deployment {
        api,
        edges,
        running,
        cancel,
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
    let mut samples = Samples::new(edges.len());
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
    eprintln!("issuing {count} keys for the bulk revocation ...");
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
