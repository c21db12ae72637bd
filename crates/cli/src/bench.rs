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
use quench_manager::{ManagerConfig, bootstrap, embedded};
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

    /// A new manager token with `scopes`.
    async fn token(&self, scopes: &[&str]) -> anyhow::Result<String> {
        let created = self.post("/v1/tokens", json!({ "scopes": scopes })).await?;
        Ok(created["token"].as_str().context("token")?.to_owned())
    }

    /// Waits (up to a minute) until `count` edges are live.
    async fn wait_live(&self, count: usize) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = self.get(&format!("{}/v1/edges", self.base)).await?;
            let live = listed["edges"]
                .as_array()
                .map_or(0, |e| e.iter().filter(|e| e["live"] == true).count());
            if live >= count {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("only {live} of {count} edges came up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Issues `total` keys one by one (each waiting for every edge): their ids and plaintexts.
    async fn issue_keys(&self, total: usize) -> anyhow::Result<Vec<(String, String)>> {
        eprintln!("issuing {total} keys ...");
        let mut keys = Vec::with_capacity(total);
        for _ in 0..total {
            let created = self
                .post("/v1/keys?wait=all", json!({"owner": "bench"}))
                .await?;
            keys.push((
                created["id"].as_str().context("id")?.to_owned(),
                created["key"].as_str().context("key")?.to_owned(),
            ));
        }
        Ok(keys)
    }

    /// Revokes key `id`, waiting for every edge.
    async fn revoke(&self, id: &str) -> anyhow::Result<(Value, Option<i64>)> {
        self.post_timed(
            &format!("/v1/keys/{id}/revoke?wait=all&timeout_ms=10000"),
            json!({"reason": "bench"}),
        )
        .await
    }

    /// Reports `key` as leaked with the `reporter` token, waiting for every edge.
    async fn report_leak(&self, reporter: &str, key: &str) -> anyhow::Result<(Value, Option<i64>)> {
        let report = json!({"keys": [{"key": key, "source": "quench bench"}]});
        let (body, _) = self
            .post_as(reporter, "/v1/leaks?wait=all&timeout_ms=10000", report)
            .await?;
        if body["results"][0]["outcome"] != "revoked" {
            bail!("the leak report did not revoke the key: {body}");
        }
        Ok((body, None))
    }

    /// When each edge applied `seq` (µs, its `applied_at_us`); an error if one has moved past it.
    async fn applied_at(&self, edges: &[String], seq: u64) -> anyhow::Result<Vec<i64>> {
        let mut applied = Vec::with_capacity(edges.len());
        for (i, edge) in edges.iter().enumerate() {
            let health = self.get(&format!("{edge}/healthz")).await?;
            if health["applied_seq"].as_u64() != Some(seq) {
                bail!("edge {i} moved past the revocation before it was read: {health}");
            }
            applied.push(health["applied_at_us"].as_i64().unwrap_or(0));
        }
        Ok(applied)
    }

    /// Waits until `edge` has applied `seq`, for at most `patience`.
    async fn wait_applied(&self, edge: &str, seq: u64, patience: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + patience;
        while self.get(&format!("{edge}/healthz")).await?["applied_seq"].as_u64() < Some(seq) {
            if Instant::now() > end {
                bail!("not applied after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
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

/// What the timed revocations measured, in milliseconds.
#[derive(Debug, Default)]
struct Samples {
    /// From the start of each revoke call to each edge applying it, per edge.
    per_edge: Vec<Vec<f64>>,
    /// ... to the last edge applying it.
    last_edge: Vec<f64>,
    /// From the commit to the last edge (when the manager reported its commit time).
    last_after_commit: Vec<f64>,
    /// From the start of the call to the commit.
    commits: Vec<f64>,
    /// The whole revoke call, `wait=all` included.
    call: Vec<f64>,
}

impl Samples {
    fn new(edges: usize) -> Self {
        Self {
            per_edge: vec![Vec::new(); edges],
            ..Self::default()
        }
    }

    /// Records one revocation that started at `started` (µs), committed at `committed` (µs, if known),
    /// took `call_ms`, and that edge `i` applied at `applied_at_us[i]`.
    fn record(
        &mut self,
        started: i64,
        committed: Option<i64>,
        call_ms: f64,
        applied_at_us: &[i64],
    ) {
        let ms = |us: i64| (us - started) as f64 / 1000.0;
        let mut slowest = 0.0f64;
        for (samples, &at) in self.per_edge.iter_mut().zip(applied_at_us) {
            samples.push(ms(at));
            slowest = slowest.max(ms(at));
        }
        self.last_edge.push(slowest);
        if let Some(committed) = committed {
            self.last_after_commit.push(slowest - ms(committed));
            self.commits.push(ms(committed));
        }
        self.call.push(call_ms);
    }

    /// The result document `--json` prints.
    fn report(mut self, args: &PropagationArgs, bulk: Option<Value>) -> Value {
        let mut all: Vec<f64> = self.per_edge.iter().flatten().copied().collect();
        let edges_json: Vec<Value> = self
            .per_edge
            .iter_mut()
            .enumerate()
            .map(|(i, samples)| json!({"edge": format!("bench-e{i}"), "applied": summary(samples)}))
            .collect();
        json!({
            "revoked_by": if args.leaks { "leak report" } else { "revoke call" },
            "edges": args.edges,
            "revocations": args.revocations,
            "all_edges": summary(&mut all),
            "last_edge": summary(&mut self.last_edge),
            "call_start_to_commit": summary(&mut self.commits),
            "commit_to_last_edge": summary(&mut self.last_after_commit),
            "revoke_call_with_wait_all": summary(&mut self.call),
            "per_edge": edges_json,
            "bulk": bulk,
        })
    }
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
        .map(|i| start_edge(&nats, &deployment, &base, &edge_token, i, &mut processes))
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
        let (revoked, committed) = if args.leaks {
            api.report_leak(&reporter, key).await?
        } else {
            api.revoke(id).await?
        };
        let call_ms = clock.elapsed().as_secs_f64() * 1000.0;
        if revoked["propagation"]["complete"] != true {
            bail!(
                "revocation {n} was not confirmed by every edge: {}",
                revoked["propagation"]
            );
        }
        let seq = revoked["propagation"]["seq"].as_u64().context("seq")?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(leaks: bool) -> PropagationArgs {
        PropagationArgs {
            edges: 2,
            revocations: 2,
            bulk: 0,
            leaks,
            nats: None,
            json: true,
        }
    }

    #[test]
    fn samples_time_each_edge_the_last_edge_and_the_commit_from_the_call_start() {
        let mut samples = Samples::new(2);
        // Started at 1 s; committed 2 ms later; the edges applied 5 ms and 9 ms after the start.
        samples.record(1_000_000, Some(1_002_000), 12.5, &[1_005_000, 1_009_000]);
        samples.record(2_000_000, None, 7.0, &[2_003_000, 2_001_000]);
        assert_eq!(samples.per_edge, [vec![5.0, 3.0], vec![9.0, 1.0]]);
        assert_eq!(samples.last_edge, [9.0, 3.0]);
        assert_eq!(
            samples.commits,
            [2.0],
            "only where the manager reported its commit"
        );
        assert_eq!(samples.last_after_commit, [7.0]);
        assert_eq!(samples.call, [12.5, 7.0]);

        let report = samples.report(&args(true), None);
        assert_eq!(report["revoked_by"], "leak report");
        assert_eq!(report["all_edges"]["n"], 4);
        assert_eq!(report["all_edges"]["max_ms"], 9.0);
        assert_eq!(report["last_edge"]["p50_ms"], 9.0);
        assert_eq!(report["per_edge"][1]["edge"], "bench-e1");
        assert_eq!(report["per_edge"][1]["applied"]["max_ms"], 9.0);
        assert!(report["bulk"].is_null());
    }

    #[test]
    fn a_summary_rounds_to_microseconds_and_survives_no_samples() {
        let mut samples = vec![3.000_4, 1.0, 2.0];
        let s = summary(&mut samples);
        assert_eq!(
            (s["n"].clone(), s["p50_ms"].clone()),
            (json!(3), json!(2.0))
        );
        assert_eq!(s["max_ms"], 3.0);
        assert_eq!(summary(&mut [])["n"], 0);
        assert_eq!(
            Samples::new(0).report(&args(false), None)["revoked_by"],
            "revoke call"
        );
    }
}
