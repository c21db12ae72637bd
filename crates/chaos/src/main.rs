//! `quench-chaos`: Quench's fault campaign (docs/chaos.md). Not part of the `quench` binary.

#![forbid(unsafe_code)]

mod check;
mod deploy;
mod faults;
mod finals;
mod history;
mod load;
mod process;
mod rng;
mod settings;
mod summary;

use std::{
    process::ExitCode,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use clap::Parser;
use tokio_util::sync::CancellationToken;

use crate::{
    check::Rules,
    deploy::Deployment,
    faults::Shape,
    history::History,
    load::{Clients, Target},
    rng::Rng,
    settings::{Args, Settings},
};

fn main() -> ExitCode {
    let args = Args::parse();
    // reqwest needs a TLS provider chosen even though the campaign speaks plain HTTP on loopback.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("quench-chaos: could not start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("quench-chaos: the campaign could not run: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let settings = Settings::from_args(&args)?;
    let seed = args
        .seed
        .unwrap_or_else(|| history::now_us() as u64 % 1_000_000_007);
    eprintln!(
        "quench-chaos: seed {seed} (replay: scripts/chaos --seed {seed} --duration {}s)",
        args.duration.as_secs()
    );
    let dir = std::path::absolute(&args.out)?
        .join(format!("seed-{seed}-{}", history::now_us() / 1_000_000));
    std::fs::create_dir_all(&dir)?;
    let deployment = Deployment::start(&settings, &dir).await?;
    let history = Arc::new(Mutex::new(History::default()));
    let targets = name_edges(&deployment, &history);
    let clients = Arc::new(Clients::new(deployment.manager_urls(), history.clone())?);
    let shape = Shape {
        edges: deployment.edges.len(),
        managers: deployment.managers.len(),
        regions: deployment.regions.len(),
    };
    let max_staleness = Duration::from_secs(settings.max_staleness);
    let schedule = faults::schedule(
        seed,
        args.duration,
        Duration::from_secs(args.fault_every),
        max_staleness,
        shape,
    );
    eprintln!(
        "quench-chaos: {} faults planned over {} s",
        schedule.len(),
        args.duration.as_secs()
    );
    let deployment = Arc::new(tokio::sync::Mutex::new(deployment));

    let mut rng = Rng::new(seed);
    let load_stop = CancellationToken::new();
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..args.writers {
        load.spawn(clients.clone().writer(rng.fork(), load_stop.clone()));
    }
    for _ in 0..args.verifiers {
        load.spawn(
            clients
                .clone()
                .verifier(targets.clone(), rng.fork(), load_stop.clone()),
        );
    }
    load.spawn(clients.clone().sweeper(targets.clone(), load_stop.clone()));
    let fault_stop = CancellationToken::new();
    let injector = tokio::spawn(faults::inject(
        schedule,
        deployment.clone(),
        history.clone(),
        fault_stop.clone(),
    ));
    summary::progress(&history, args.duration).await;
    fault_stop.cancel();
    let _ = injector.await;
    eprintln!(
        "quench-chaos: every fault healed; load continues for {} s",
        settings.max_staleness + 2
    );
    tokio::time::sleep(max_staleness + Duration::from_secs(2)).await;
    load_stop.cancel();
    while load.join_next().await.is_some() {}

    let deployment = Arc::try_unwrap(deployment)
        .map_err(|_| anyhow::anyhow!("the deployment is still shared"))?
        .into_inner();
    eprintln!("quench-chaos: waiting for the edges to converge ...");
    let converged = finals::converge(&deployment, Duration::from_secs(120)).await;
    let finals = finals::gather(&deployment, &clients).await?;
    let rules = Rules {
        max_staleness_us: max_staleness.as_micros() as i64,
        allowance_us: args.clock_allowance_ms as i64 * 1000,
    };
    let history = std::mem::take(
        &mut *history
            .lock()
            .map_err(|_| anyhow::anyhow!("history lock poisoned"))?,
    );
    let violations = check::check(&history, &finals, rules, 20);
    let passed = violations.is_empty() && converged;
    summary::report(&summary::Report {
        seed,
        args: &args,
        dir: &dir,
        history: &history,
        violations: &violations,
        converged,
        keep_history: args.keep_history,
    })?;
    deployment.tear_down(!passed).await;
    Ok(passed)
}

/// Enters every edge's id in the history and gives the verifiers their targets.
fn name_edges(deployment: &Deployment, history: &Mutex<History>) -> Vec<Target> {
    let Ok(mut history) = history.lock() else {
        return Vec::new();
    };
    deployment
        .edges
        .iter()
        .map(|edge| {
            edge.named
                .store(history.edge_index(&edge.id), Ordering::Release);
            Target {
                url: edge.url.clone(),
                named: edge.named.clone(),
            }
        })
        .collect()
}
