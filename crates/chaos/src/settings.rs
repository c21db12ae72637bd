//! The campaign's command line.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Parser;

/// Quench's fault campaign: starts a real deployment on this machine (PostgreSQL, a three-server NATS
/// JetStream cluster, managers, regions of edges behind leaf nodes), drives client load recorded as a
/// history, injects seeded faults, heals, and checks the history against Quench's safety property.
/// Exits 0 when no violation was found, 1 when one was, 2 when the campaign could not run.
#[derive(Debug, Parser)]
#[command(name = "quench-chaos", version)]
pub struct Args {
    /// The seed of the fault schedule and of the clients' choices [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long load and faults run, e.g. `60s`, `10m`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub managers: u64,
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3))]
    pub regions: u64,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub edges_per_region: u64,
    /// Regions' one-way latencies to the hub and the managers, in ms, used in turn.
    #[arg(long, value_delimiter = ',', default_value = "20,40,60")]
    pub region_latency_ms: Vec<u64>,
    /// The edges' `--max-staleness`, in seconds.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub max_staleness: u64,
    /// What the checker adds to `max_staleness` for the machine's scheduling and millisecond rounding.
    #[arg(long, default_value_t = 250)]
    pub clock_allowance_ms: u64,
    /// Concurrent verification clients.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub verifiers: u64,
    /// Concurrent clients changing keys (create, revoke, bulk revoke, rotate, report leaks).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub writers: u64,
    /// Mean seconds between faults.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub fault_every: u64,
    /// Where each run keeps its processes' logs, its summary and (on failure) its history.
    #[arg(long, default_value = "target/chaos")]
    pub out: PathBuf,
    /// Write the history even when the campaign passes.
    #[arg(long)]
    pub keep_history: bool,
    /// PostgreSQL to create the campaign's database on.
    #[arg(
        long,
        env = "QUENCH_CHAOS_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres: String,
    /// The `quench` binary [default: beside this one].
    #[arg(long)]
    pub quench: Option<PathBuf>,
    /// The `nats-server` binary [default: QUENCH_TEST_NATS_SERVER, else one on PATH or in /usr/sbin].
    #[arg(long)]
    pub nats_server: Option<PathBuf>,
}

/// What the deployment and the clients need from the arguments, binaries found.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quench: PathBuf,
    pub nats_server: PathBuf,
    pub postgres: String,
    pub managers: usize,
    pub regions: usize,
    pub edges_per_region: usize,
    pub region_latency_ms: Vec<u64>,
    pub max_staleness: u64,
}

impl Settings {
    pub fn from_args(args: &Args) -> anyhow::Result<Self> {
        if args.region_latency_ms.is_empty() || args.region_latency_ms.iter().any(|&l| l > 10_000) {
            bail!("--region-latency-ms takes one to three latencies of at most 10000 ms");
        }
        let quench = match &args.quench {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("this binary has no directory")?
                .join("quench"),
        };
        if !quench.is_file() {
            bail!(
                "no quench binary at {} (build it: cargo build -p quench-cli, or pass --quench)",
                quench.display()
            );
        }
        Ok(Self {
            quench,
            nats_server: nats_server(args.nats_server.clone())?,
            postgres: args.postgres.clone(),
            managers: args.managers as usize,
            regions: args.regions as usize,
            edges_per_region: args.edges_per_region as usize,
            region_latency_ms: args.region_latency_ms.clone(),
            max_staleness: args.max_staleness,
        })
    }
}

fn nats_server(chosen: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let from_env = std::env::var_os("QUENCH_TEST_NATS_SERVER").map(PathBuf::from);
    let candidates = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ];
    chosen
        .into_iter()
        .chain(from_env)
        .chain(candidates.iter().map(PathBuf::from))
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context("no nats-server found: run scripts/services, or pass --nats-server")
}

/// `90`, `90s`, `10m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 60s, 10m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: the unit is s, m or h")),
    };
    if seconds == 0 || seconds > 24 * 3600 {
        return Err("a campaign runs from 1 s to 24 h".to_owned());
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        for bad in ["", "0s", "5d", "m", "-1s", "25h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
