//! `quench bench coldstart`: how long an edge takes from its start to verifying, at N keys.
//!
//! Starts NATS and a manager in this process (SQLite, like `bench propagation`), issues keys straight into
//! the store up to each size asked for, and at each size starts a new `quench edge` process several times
//! (each a new id with an empty data directory: nothing local to start from). For each start it reports
//! the time from spawning the process to its `/healthz` answering 200 with every key installed (the
//! snapshot downloaded from the manager, its signature checked, the key set built, fresh proof held), and
//! the edge's resident memory then. Then it starts the same edge again: now from the copy of the
//! snapshot it kept on its disk (`edge-<id>.<deployment>.snapshot`, checked and caught up from the log), which is the
//! restart figure. Before each cold start it also times the snapshot's download alone
//! (`GET /v1/snapshot` read to the end and dropped, with the edge's token), which splits the figure into
//! the manager's share (reading the store, writing and signing the stream) and the edge's (parsing,
//! checking, building its key set).

use std::{
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::{Processes, api::Api, issue_bulk, soak::record::rss_kb, start_manager, start_nats};

#[derive(Debug, Args)]
pub struct ColdStartArgs {
    /// Key counts to measure at, ascending (keys are added up to each in turn).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000_000usize, 10_000_000])]
    pub keys: Vec<usize>,
    /// Edge starts timed at each size.
    #[arg(long, default_value_t = 3)]
    pub starts: usize,
    /// The longest one start may take before the bench gives up, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout_secs: u64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ColdStartArgs) -> anyhow::Result<ExitCode> {
    if args.starts == 0 || args.keys.is_empty() || args.keys.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--starts must be at least 1 and --keys a list of ascending counts");
    }
    let dir = tempfile::tempdir().context("temporary directory")?;
    let mut processes = Processes(Vec::new());
    let nats = start_nats(dir.path(), &mut processes)?;
    let deployment = format!("bench-cold-{}", std::process::id());
    let manager = start_manager(&nats, dir.path(), &deployment).await?;
    let edge_token = manager.api.token(&["edge"]).await?;
    let mut issued = 0;
    let mut results = Vec::new();
    for &size in &args.keys {
        issue_bulk(&manager.running.manager, size - issued).await?;
        issued = size;
        for start in 0..args.starts {
            let id = format!("cold-{size}-{start}");
            let launch = Launch {
                nats: &nats,
                manager: &manager.api.base,
                deployment: &deployment,
                token: &edge_token,
                data_dir: &dir.path().join(&id),
            };
            let download = time_download(&manager.api.base, &edge_token).await?;
            let timeout = Duration::from_secs(args.timeout_secs);
            let mut measured = time_start(&launch, &id, size, &manager.api, timeout).await?;
            measured.download = download;
            let copy = launch
                .data_dir
                .join(format!("edge-{id}.{}.snapshot", launch.deployment));
            anyhow::ensure!(copy.exists(), "the edge kept no copy of the snapshot");
            let restart = time_start(&launch, &id, size, &manager.api, timeout).await?;
            measured.restart = restart.ready;
            eprintln!(
                "  {size} keys, start {}: ready after {:.2} s (the download alone {:.2} s), {:.0} MiB resident; restarted from its copy: {:.2} s",
                start + 1,
                measured.ready.as_secs_f64(),
                download.as_secs_f64(),
                measured.rss_kb as f64 / 1024.0,
                restart.ready.as_secs_f64(),
            );
            results.push((size, measured));
        }
    }
    manager.cancel.cancel();

    let report: Vec<_> = args
        .keys
        .iter()
        .map(|&size| {
            let at_size: Vec<&Measured> = results
                .iter()
                .filter(|(s, _)| *s == size)
                .map(|(_, m)| m)
                .collect();
            let seconds = |of: fn(&Measured) -> Duration| {
                let mut all: Vec<f64> = at_size.iter().map(|m| of(m).as_secs_f64()).collect();
                all.sort_by(f64::total_cmp);
                all
            };
            let ready = seconds(|m| m.ready);
            let download = seconds(|m| m.download);
            let restart = seconds(|m| m.restart);
            let rss: Vec<u64> = at_size.iter().map(|m| m.rss_kb).collect();
            json!({
                "keys": size,
                "ready_s": ready,
                "ready_median_s": ready[ready.len() / 2],
                "download_s": download,
                "download_median_s": download[download.len() / 2],
                "restart_s": restart,
                "restart_median_s": restart[restart.len() / 2],
                "rss_mib": rss.iter().map(|kb| *kb as f64 / 1024.0).collect::<Vec<_>>(),
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{:>12} {:>16} {:>18} {:>18}",
            "keys", "cold start", "download alone", "restart from copy"
        );
        for row in &report {
            println!(
                "{:>12} {:>14.2} s {:>16.2} s {:>16.2} s",
                row["keys"],
                row["ready_median_s"].as_f64().unwrap_or_default(),
                row["download_median_s"].as_f64().unwrap_or_default(),
                row["restart_median_s"].as_f64().unwrap_or_default(),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Launch<'a> {
    nats: &'a str,
    manager: &'a str,
    deployment: &'a str,
    token: &'a str,
    data_dir: &'a Path,
}

struct Measured {
    ready: Duration,
    download: Duration,
    restart: Duration,
    rss_kb: u64,
}

/// Reads the manager's snapshot to its end and drops it: the manager's share of a cold start.
async fn time_download(manager: &str, token: &str) -> anyhow::Result<Duration> {
    use futures::StreamExt;

    let nonce = quench_core::sign::Nonce::random()?;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{manager}/v1/snapshot?nonce={nonce}"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut bytes = 0usize;
    while let Some(chunk) = body.next().await {
        bytes += chunk?.len();
    }
    anyhow::ensure!(bytes > 0, "an empty snapshot");
    Ok(started.elapsed())
}

/// Starts one edge and waits until it is fresh with all `keys` installed; kills it after.
async fn time_start(
    launch: &Launch<'_>,
    id: &str,
    keys: usize,
    api: &Api,
    timeout: Duration,
) -> anyhow::Result<Measured> {
    let port = super::free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let child = Command::new(std::env::current_exe()?)
        .args([
            "edge",
            "--nats",
            launch.nats,
            "--deployment",
            launch.deployment,
        ])
        .args(["--manager", launch.manager])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--id", id, "--region", "cold"])
        .arg("--data-dir")
        .arg(launch.data_dir)
        .env("QUENCH_TOKEN", launch.token)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting an edge")?;
    let pid = child.id();
    let _edge = Processes(vec![child]);
    loop {
        if let Ok(health) = api.health(&url).await
            && health.status == "ok"
        {
            if health.keys < keys {
                bail!(
                    "edge {id} is ready with {} keys, expected {keys}",
                    health.keys
                );
            }
            let ready = started.elapsed();
            let rss_kb = rss_kb(pid).context("the edge's resident memory")?;
            return Ok(Measured {
                ready,
                download: Duration::ZERO,
                restart: Duration::ZERO,
                rss_kb,
            });
        }
        if started.elapsed() > timeout {
            bail!("edge {id} was not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
