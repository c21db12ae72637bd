//! `quench bench soak`: a long run at a steady verify and revocation rate through the HTTP edges.
//!
//! Unlike `bench propagation`, the manager runs as a `quench manager` process of its own (SQLite in a
//! temporary directory, NATS bus), like every edge: the resident memory read for each part is then that
//! part's alone, not mixed with the load generator's. Verify clients ask the edges in turn for live keys
//! and, one call in ten, for a key whose revocation every edge already confirmed; revokers take a key
//! issued before the load started, see every edge accept it, revoke it with `wait=all` and see every edge
//! refuse it. A `valid` answer for a key after its confirmed revocation is a violation, counted apart
//! from errors.
//!
//! The keys to revoke are all issued, and asked about once at every edge, before the load starts: the
//! edges then hold the same number of keys (and of keys watched for usage) from the first memory reading
//! to the last, so growth in resident memory is growth over time, not the cost of keys added (which the
//! memory-per-key benchmark measures).

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader},
    process::{Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Args;
use quench_api::edge::{VerifyRequest, VerifyResponse};
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};

use super::{EdgeLink, Processes, api::Api, now_us, start_edge, start_nats};

mod output;
pub(super) mod record;

use record::{ErrorKind, Judged, Memory, Recorder, Violation, judge, rss_kb};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Seconds of measured load (after the warm-up).
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Seconds per reported interval (and between progress lines on stderr).
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
    /// Seconds of load before the measurement starts and the first RSS is read.
    #[arg(long, default_value_t = 30)]
    pub warmup: u64,
    /// Edge processes to start.
    #[arg(long, default_value_t = 3)]
    pub edges: usize,
    /// Verifications per second, over all edges.
    #[arg(long, default_value_t = 200.0)]
    pub verify_rate: f64,
    /// Revocations per second (each: take a key issued beforehand, verify it valid everywhere, revoke
    /// it, verify it refused everywhere).
    #[arg(long, default_value_t = 2.0)]
    pub revoke_rate: f64,
    /// Concurrent verify clients sharing the verify rate.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Live keys the verify clients present.
    #[arg(long, default_value_t = 50)]
    pub keys: usize,
    /// Use this NATS instead of starting one.
    #[arg(long)]
    pub nats: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl SoakArgs {
    fn check(&self) -> anyhow::Result<()> {
        let mut wrong = Vec::new();
        for (name, value) in [
            ("--duration", self.duration as usize),
            ("--interval", self.interval as usize),
            ("--edges", self.edges),
            ("--clients", self.clients),
            ("--keys", self.keys),
        ] {
            if value == 0 {
                wrong.push(format!("{name} must be at least 1"));
            }
        }
        for (name, rate) in [
            ("--verify-rate", self.verify_rate),
            ("--revoke-rate", self.revoke_rate),
        ] {
            if !(rate.is_finite() && rate > 0.0) {
                wrong.push(format!("{name} must be a positive number"));
            }
        }
        if !wrong.is_empty() {
            bail!("{}", wrong.join("; "));
        }
        Ok(())
    }

    fn seconds(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }
}

/// Revokers running at once, sharing the revoke rate: a slow revocation does not hold up the next.
const REVOKERS: usize = 2;
/// Revoked keys the verify clients keep presenting (the most recent ones).
const REVOKED_KEPT: usize = 256;

/// The deployment under soak; every process is killed on drop.
struct Deployment {
    api: Api,
    edges: Vec<String>,
    /// Each process whose memory is reported, by name.
    pids: Vec<(String, u32)>,
    _processes: Processes,
    _dir: tempfile::TempDir,
}

/// Starts `quench manager` and reads its URL from its first line; a thread keeps reading its standard
/// output after that, so a later line never finds the pipe closed.
fn start_manager(
    nats: &str,
    deployment: &str,
    dir: &std::path::Path,
    token: &str,
    processes: &mut Processes,
) -> anyhow::Result<(String, u32)> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["manager", "--nats", nats, "--deployment", deployment])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("manager"))
        .env("QUENCH_BOOTSTRAP_TOKEN", token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the manager")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("manager stdout")?;
    processes.0.push(child);
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if let Some(url) = line?.strip_prefix("manager listening on ") {
            let url = url.trim().to_owned();
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((url, pid));
        }
    }
    bail!("the manager exited before listening")
}

/// Starts NATS (unless given), a manager process and `args.edges` edge processes, and waits until
/// every edge is live.
async fn deploy(args: &SoakArgs) -> anyhow::Result<Deployment> {
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut processes = Processes(Vec::new());
    let nats = match &args.nats {
        Some(url) => url.clone(),
        None => start_nats(dir.path(), &mut processes)?,
    };
    let deployment = format!("soak-{}", std::process::id());
    let token = format!("soak-{}-{}", now_us(), "x".repeat(32));
    let (base, manager_pid) =
        start_manager(&nats, &deployment, dir.path(), &token, &mut processes)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: base.clone(),
        token,
    };
    let edge_token = api.token(&["edge"]).await?;
    eprintln!(
        "starting a manager and {} edge(s) on {nats} ...",
        args.edges
    );
    let mut pids = vec![("manager".to_owned(), manager_pid)];
    let mut edges = Vec::with_capacity(args.edges);
    for i in 0..args.edges {
        let link = EdgeLink {
            nats: &nats,
            manager: &base,
            region: format!("r{}", i % 3),
            domain: None,
            data_dir: dir.path(),
        };
        edges.push(start_edge(
            &link,
            &deployment,
            &edge_token,
            &format!("bench-e{i}"),
            &mut processes,
        )?);
        let pid = processes.0.last().map(std::process::Child::id);
        pids.push((format!("edge-{i}"), pid.context("edge process")?));
    }
    api.wait_live(args.edges).await?;
    Ok(Deployment {
        api,
        edges,
        pids,
        _processes: processes,
        _dir: dir,
    })
}

/// A key whose revocation every edge confirmed at `confirmed`.
#[derive(Clone)]
struct Revoked {
    id: String,
    key: String,
    confirmed: Instant,
}

/// A failed operation: its kind and what happened.
type Failure = (ErrorKind, String);

/// What the load clients share.
struct Load {
    api: Api,
    http: reqwest::Client,
    edges: Vec<String>,
    /// Live keys (id, plaintext); nothing revokes them.
    keys: Vec<(String, String)>,
    /// Keys issued to be revoked, one per revocation.
    to_revoke: Mutex<Vec<(String, String)>>,
    revoked: Mutex<VecDeque<Revoked>>,
    recorder: Mutex<Recorder>,
    started: Instant,
    calls: AtomicUsize,
}

impl Load {
    fn record<T>(&self, write: impl FnOnce(&mut Recorder) -> T) -> T {
        let mut recorder = self.recorder.lock().unwrap_or_else(PoisonError::into_inner);
        write(&mut recorder)
    }

    fn fail(&self, (kind, message): Failure) {
        let at = self.started.elapsed();
        self.record(|r| r.error(at, kind, message));
    }

    /// One call to an edge's `/v1/verify`.
    async fn verify(&self, edge: &str, key: &str) -> Result<VerifyResponse, Failure> {
        let request = VerifyRequest {
            key: key.to_owned(),
            api: None,
            scope: None,
            client_ip: None,
        };
        let url = format!("{edge}/v1/verify");
        let failed = |kind, e: &dyn std::fmt::Display| (kind, format!("{edge}: {e}"));
        let response = self.http.post(&url).json(&request).send().await;
        let response = response.map_err(|e| failed(ErrorKind::EdgeTransport, &e))?;
        let status = response.status();
        let text = response.text().await;
        let text = text.map_err(|e| failed(ErrorKind::EdgeTransport, &e))?;
        if !status.is_success() {
            return Err(failed(
                ErrorKind::EdgeStatus,
                &format!("HTTP {status}: {text}"),
            ));
        }
        serde_json::from_str(&text).map_err(|e| failed(ErrorKind::EdgeUnreadable, &e))
    }

    /// Verifies `key` at `edge` and judges the answer: valid unless `revoked` says when its revocation
    /// was confirmed. Returns how long a right answer took (ms), or None for a violation (recorded
    /// here, apart from errors).
    async fn check(
        &self,
        edge: &str,
        id: &str,
        key: &str,
        revoked: Option<Instant>,
    ) -> Result<Option<f64>, Failure> {
        let asked = Instant::now();
        let answer = self.verify(edge, key).await?;
        let ms = asked.elapsed().as_secs_f64() * 1000.0;
        match judge(&answer, revoked.is_some()) {
            Judged::Right => Ok(Some(ms)),
            Judged::Wrong(what) => {
                Err((ErrorKind::WrongAnswer, format!("{edge}, key {id}: {what}")))
            }
            Judged::Violation => {
                let after = revoked.map_or(Duration::ZERO, |at| asked.duration_since(at));
                let violation = Violation {
                    key_id: id.to_owned(),
                    edge: edge.to_owned(),
                    ms_after_confirmation: after.as_secs_f64() * 1000.0,
                };
                eprintln!("VIOLATION: {violation:?}");
                self.record(|r| r.violation(violation));
                Ok(None)
            }
        }
    }

    /// One verification: the next edge in turn, a live key, or every tenth call a revoked one.
    async fn verify_once(&self) {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let edge = &self.edges[n % self.edges.len()];
        let revoked = if n % 10 == 9 {
            let revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
            revoked.get((n / 10) % revoked.len().max(1)).cloned()
        } else {
            None
        };
        let result = match &revoked {
            Some(r) => self.check(edge, &r.id, &r.key, Some(r.confirmed)).await,
            None => {
                let (id, key) = &self.keys[(n / self.edges.len()) % self.keys.len()];
                self.check(edge, id, key, None).await
            }
        };
        match result {
            Ok(Some(ms)) => {
                let at = self.started.elapsed();
                self.record(|r| r.verify(at, ms));
            }
            Ok(None) => {}
            Err(failure) => self.fail(failure),
        }
    }

    /// One revocation: take a key issued beforehand, see every edge accept it, revoke it with
    /// `wait=all`, and see every edge refuse it; the time runs from the revoke call to the last edge's
    /// refusal.
    async fn revoke_once(&self) -> Result<(), Failure> {
        let manager = |e: anyhow::Error| (ErrorKind::ManagerCall, format!("{e:#}"));
        let taken = self
            .to_revoke
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let (id, key) = taken.ok_or_else(|| {
            (
                ErrorKind::ManagerCall,
                "no key issued beforehand is left to revoke".to_owned(),
            )
        })?;
        for edge in &self.edges {
            self.check(edge, &id, &key, None).await?;
        }
        let started = Instant::now();
        let revoked = self.api.revoke(&id).await.map_err(manager)?;
        if !revoked.body.as_ref().is_some_and(|c| c.complete) {
            let what = format!("key {id}: {:?}", revoked.body);
            return Err((ErrorKind::Unconfirmed, what));
        }
        let confirmed = Instant::now();
        let mut refused_everywhere = true;
        for edge in &self.edges {
            let refused = self.check(edge, &id, &key, Some(confirmed)).await?;
            refused_everywhere &= refused.is_some();
        }
        // A time is taken only when every edge refused the key; a violation is counted instead.
        if refused_everywhere {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let at = self.started.elapsed();
            self.record(|r| r.revoke(at, ms));
        }
        let mut kept = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        kept.push_back(Revoked { id, key, confirmed });
        if kept.len() > REVOKED_KEPT {
            kept.pop_front();
        }
        Ok(())
    }
}

impl Load {
    /// Asks every edge once about every key to be revoked, so that each edge watches them for usage
    /// from the start rather than taking on a key's usage record during the measurement.
    async fn ask_every_edge_once(&self) -> anyhow::Result<()> {
        let keys = self
            .to_revoke
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        eprintln!(
            "asking every edge about the {} keys to revoke ...",
            keys.len()
        );
        for (id, key) in &keys {
            for edge in &self.edges {
                if let Err((kind, message)) = self.check(edge, id, key, None).await {
                    bail!("before the load, {kind:?}: {message}");
                }
            }
        }
        Ok(())
    }
}

/// Runs `op` `rate` times a second until `until`; a tick missed while `op` ran late is skipped, so the
/// load never bursts to catch up.
async fn paced<F: std::future::Future<Output = ()>>(
    rate: f64,
    until: Instant,
    mut op: impl FnMut() -> F,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        if Instant::now() >= until {
            return;
        }
        op().await;
    }
}

/// Starts the verify clients and the revokers; they stop at `until`, each finishing its last call.
fn spawn_load(
    load: &Arc<Load>,
    args: &SoakArgs,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let verify_rate = args.verify_rate / args.clients as f64;
    for _ in 0..args.clients {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            paced(verify_rate, until, || load.verify_once()).await;
        }));
    }
    let revoke_rate = args.revoke_rate / REVOKERS as f64;
    for _ in 0..REVOKERS {
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            paced(revoke_rate, until, || async {
                if let Err(failure) = load.revoke_once().await {
                    load.fail(failure);
                }
            })
            .await;
        }));
    }
    tasks
}

pub async fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    args.check()?;
    let deployment = deploy(&args).await?;
    let keys = deployment.api.issue_keys(args.keys).await?;
    let (warmup, duration) = (
        SoakArgs::seconds(args.warmup),
        SoakArgs::seconds(args.duration),
    );
    // Every tick of the whole run can revoke, plus a margin for the first tick and rounding.
    let revocations = (args.revoke_rate * (warmup + duration).as_secs_f64()).ceil() as usize + 16;
    let to_revoke = deployment.api.issue_keys(revocations).await?;
    let interval = SoakArgs::seconds(args.interval);
    let mut load = Load {
        api: deployment.api.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        edges: deployment.edges.clone(),
        keys,
        to_revoke: Mutex::new(to_revoke),
        revoked: Mutex::new(VecDeque::new()),
        recorder: Mutex::new(Recorder::new(warmup, duration, interval)),
        started: Instant::now(),
        calls: AtomicUsize::new(0),
    };
    load.ask_every_edge_once().await?;
    load.started = Instant::now();
    let load = Arc::new(load);
    let measured = load.started + warmup;
    let until = measured + duration;
    let tasks = spawn_load(&load, &args, until);
    eprintln!("warming up for {} s ...", args.warmup);
    tokio::time::sleep_until(measured).await;
    let mut memory = read_memory(&deployment.pids);
    output::progress_until(&load, &deployment.pids, measured, interval, until).await;
    for (entry, end) in memory.iter_mut().zip(read_memory(&deployment.pids)) {
        entry.end_kb = end.start_kb;
    }
    for task in tasks {
        task.await.context("a load task failed")?;
    }
    let report = output::report(&args, &load, &memory);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        output::print_report(&report);
    }
    let clean = load.record(|r| r.errors() == 0 && r.violations() == 0);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The resident memory of each process now (as `start_kb`).
fn read_memory(pids: &[(String, u32)]) -> Vec<Memory> {
    pids.iter()
        .map(|(name, pid)| Memory {
            process: name.clone(),
            pid: *pid,
            start_kb: rss_kb(*pid),
            end_kb: None,
        })
        .collect()
}

/// The settings a report states, beside what was measured.
fn settings(args: &SoakArgs) -> Value {
    json!({
        "duration_s": args.duration,
        "interval_s": args.interval,
        "warmup_s": args.warmup,
        "edges": args.edges,
        "verify_rate": args.verify_rate,
        "revoke_rate": args.revoke_rate,
        "clients": args.clients,
        "keys": args.keys,
    })
}
