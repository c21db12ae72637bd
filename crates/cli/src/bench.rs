//! `quench bench propagation`: how long a revocation takes to reach every edge.
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

const WARMUP: usize = 10;

pub async fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Propagation(args) => propagation(args).await,
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

fn start_edge(
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

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self.post_timed(path, body).await?.0)
    }

    /// The body, and when the manager says the change committed (its `Server-Timing` header).
    async fn post_timed(&self, path: &str, body: Value) -> anyhow::Result<(Value, Option<i64>)> {
        self.post_as(&self.token, path, body).await
    }

    async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(Value, Option<i64>)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let committed = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("committed;desc=\"").nth(1))
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<i64>().ok());
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {body}");
        }
        Ok((body, committed))
    }

    async fn get(&self, url: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?)
    }
}

/// p50, p99 and max of a sample, in milliseconds.
fn summary(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or(f64::NAN)
    };
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({"n": samples.len(), "p50_ms": round(at(0.5)), "p99_ms": round(at(0.99)), "max_ms": round(at(1.0))})
}

async fn propagation(args: PropagationArgs) -> anyhow::Result<ExitCode> {
    if args.edges == 0 || args.revocations == 0 {
        bail!("--edges and --revocations: at least 1");
    }
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
    let edge_token = api.post("/v1/tokens", json!({"scopes": ["edge"]})).await?["token"]
        .as_str()
        .context("edge token")?
        .to_owned();

    eprintln!("starting {} edge(s) on {nats} ...", args.edges);
    let mut edges = Vec::new();
    for i in 0..args.edges {
        edges.push(start_edge(
            &nats,
            &deployment,
            &base,
            &edge_token,
            i,
            &mut processes,
        )?);
    }
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = api.get(&format!("{base}/v1/edges")).await?;
        let live = listed["edges"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["live"] == true).count());
        if live >= args.edges {
            break;
        }
        if Instant::now() > end {
            bail!("only {live} of {} edges came up", args.edges);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let total = WARMUP + args.revocations;
    eprintln!("issuing {total} keys ...");
    let mut ids = Vec::with_capacity(total);
    for _ in 0..total {
        let created = api
            .post("/v1/keys?wait=all", json!({"owner": "bench"}))
            .await?;
        ids.push((
            created["id"].as_str().context("id")?.to_owned(),
            created["key"].as_str().context("key")?.to_owned(),
        ));
    }

    let mut per_edge: Vec<Vec<f64>> = vec![Vec::new(); edges.len()];
    let mut last_edge = Vec::new();
    let mut last_after_commit = Vec::new();
    let mut commits = Vec::new();
    let mut call = Vec::new();
    let reporter = api
        .post("/v1/tokens", json!({"scopes": ["leaks:report"]}))
        .await?["token"]
        .as_str()
        .context("reporter token")?
        .to_owned();
    for (n, (id, key)) in ids.iter().enumerate() {
        let started = now_us();
        let clock = Instant::now();
        let (revoked, committed) = if args.leaks {
            let report = json!({"keys": [{"key": key, "source": "quench bench"}]});
            let (body, _) = api
                .post_as(&reporter, "/v1/leaks?wait=all&timeout_ms=10000", report)
                .await?;
            if body["results"][0]["outcome"] != "revoked" {
                bail!("the leak report did not revoke the key: {body}");
            }
            (body, None)
        } else {
            api.post_timed(
                &format!("/v1/keys/{id}/revoke?wait=all&timeout_ms=10000"),
                json!({"reason": "bench"}),
            )
            .await?
        };
        let call_ms = clock.elapsed().as_secs_f64() * 1000.0;
        if revoked["propagation"]["complete"] != true {
            bail!(
                "revocation {n} was not confirmed by every edge: {}",
                revoked["propagation"]
            );
        }
        let seq = revoked["propagation"]["seq"].as_u64().context("seq")?;
        let mut slowest = 0.0f64;
        for (i, edge) in edges.iter().enumerate() {
            let health = api.get(&format!("{edge}/healthz")).await?;
            if health["applied_seq"].as_u64() != Some(seq) {
                bail!("edge {i} moved past the revocation before it was read: {health}");
            }
            let ms = (health["applied_at_us"].as_i64().unwrap_or(0) - started) as f64 / 1000.0;
            slowest = slowest.max(ms);
            if n >= WARMUP {
                per_edge[i].push(ms);
            }
        }
        if n >= WARMUP {
            last_edge.push(slowest);
            if let Some(committed) = committed {
                last_after_commit.push(slowest - (committed - started) as f64 / 1000.0);
                commits.push((committed - started) as f64 / 1000.0);
            }
            call.push(call_ms);
        }
        if (n + 1) % 50 == 0 {
            eprintln!("  {}/{total} revocations", n + 1);
        }
    }

    let bulk = if args.bulk > 0 {
        Some(bulk_revocation(&api, &running.manager, &edges, args.bulk).await?)
    } else {
        None
    };

    let mut all: Vec<f64> = per_edge.iter().flatten().copied().collect();
    let edges_json: Vec<Value> = per_edge
        .iter_mut()
        .enumerate()
        .map(|(i, samples)| json!({"edge": format!("bench-e{i}"), "applied": summary(samples)}))
        .collect();
    let result = json!({
        "revoked_by": if args.leaks { "leak report" } else { "revoke call" },
        "edges": args.edges,
        "revocations": args.revocations,
        "all_edges": summary(&mut all),
        "last_edge": summary(&mut last_edge),
        "call_start_to_commit": summary(&mut commits),
        "commit_to_last_edge": summary(&mut last_after_commit),
        "revoke_call_with_wait_all": summary(&mut call),
        "per_edge": edges_json,
        "bulk": bulk,
    });
    cancel.cancel();
    running.finished().await;
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
    let head = manager.store.head().await?.get();
    let end = Instant::now() + Duration::from_secs(900);
    for edge in edges {
        while api.get(&format!("{edge}/healthz")).await?["applied_seq"].as_u64() < Some(head) {
            if Instant::now() > end {
                bail!("{edge} did not catch up with the issued keys");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let owner = owner.to_string();
    let started = now_us();
    let clock = Instant::now();
    let (revoked, committed) = api
        .post_timed(
            "/v1/revocations?wait=all&timeout_ms=60000",
            json!({"owner": owner, "reason": "bench bulk"}),
        )
        .await?;
    let call_ms = clock.elapsed().as_secs_f64() * 1000.0;
    let seq = revoked["propagation"]["seq"].as_u64().context("seq")?;
    let mut slowest = 0.0f64;
    for edge in edges {
        let health = api.get(&format!("{edge}/healthz")).await?;
        if health["applied_seq"].as_u64() < Some(seq) {
            bail!("an edge had not applied the bulk revocation: {health}");
        }
        let ms = (health["applied_at_us"].as_i64().unwrap_or(0) - started) as f64 / 1000.0;
        slowest = slowest.max(ms);
    }
    Ok(json!({
        "keys": count,
        "commit_ms": committed.map(|at| ((at - started) as f64 / 1000.0 * 1000.0).round() / 1000.0),
        "revoked": revoked["revoked"].as_array().map_or(0, Vec::len),
        "complete": revoked["propagation"]["complete"],
        "call_ms": (call_ms * 1000.0).round() / 1000.0,
        "last_edge_enforced_ms": (slowest * 1000.0).round() / 1000.0,
    }))
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

fn print_table(result: &Value) {
    let row = |name: &str, s: &Value| {
        println!(
            "{name:<28} {:>6} {:>10} {:>10} {:>10}",
            s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]
        );
    };
    println!(
        "propagation: {} edge(s), {} revocation(s); ms from the start of the revoke call",
        result["edges"], result["revocations"]
    );
    println!(
        "{:<28} {:>6} {:>10} {:>10} {:>10}",
        "", "n", "p50", "p99", "max"
    );
    row("every edge applied", &result["all_edges"]);
    row("last edge applied", &result["last_edge"]);
    row("  of which: until commit", &result["call_start_to_commit"]);
    row(
        "  of which: commit to last edge",
        &result["commit_to_last_edge"],
    );
    row(
        "revoke call (wait=all)",
        &result["revoke_call_with_wait_all"],
    );
    for edge in result["per_edge"].as_array().into_iter().flatten() {
        row(
            &format!("  {}", edge["edge"].as_str().unwrap_or("")),
            &edge["applied"],
        );
    }
    if !result["bulk"].is_null() {
        let bulk = &result["bulk"];
        println!(
            "bulk: {} keys revoked in one call; committed after {} ms; call {} ms; every edge enforcing after {} ms",
            bulk["revoked"], bulk["commit_ms"], bulk["call_ms"], bulk["last_edge_enforced_ms"]
        );
    }
}
