//! The fault schedule, drawn from the seed before the campaign starts, and the injector that carries it
//! out against the running deployment and heals each fault when its time is up.
//!
//! At most two faults are active at once and never two of one class (edges, managers, hub servers,
//! regions): a three-server hub survives the loss of one server, and one manager down leaves another.

use std::{fmt, sync::Arc, sync::atomic::Ordering, time::Duration};

use quench_netfault::{Link, LinkState};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{
    deploy::Deployment,
    history::{FaultRecord, History, now_us},
    rng::Rng,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, started again when healed.
    KillEdge(usize),
    /// `kill -9`, its disk wiped, started again as a new edge when healed.
    EmptyEdge(usize),
    PauseEdge(usize),
    PartitionEdge(usize),
    KillManager(usize),
    PauseManager(usize),
    /// Cut off from the hub and from PostgreSQL, still reachable by clients.
    PartitionManager(usize),
    KillHubServer(usize),
    /// Kills whichever hub server leads the stream when the fault starts.
    KillStreamLeader,
    PauseHubServer(usize),
    /// The region's leaf node and edges cannot reach the hub or the managers (links silent).
    PartitionRegion(usize),
    /// The same, with every connection closed.
    CutRegion(usize),
    /// The region's links 300 ms slower each way and losing 5 % of their chunks.
    SlowRegion(usize),
}

impl Fault {
    fn class(self) -> u8 {
        match self {
            Self::KillEdge(_)
            | Self::EmptyEdge(_)
            | Self::PauseEdge(_)
            | Self::PartitionEdge(_) => 0,
            Self::KillManager(_) | Self::PauseManager(_) | Self::PartitionManager(_) => 1,
            Self::KillHubServer(_) | Self::KillStreamLeader | Self::PauseHubServer(_) => 2,
            Self::PartitionRegion(_) | Self::CutRegion(_) | Self::SlowRegion(_) => 3,
        }
    }

    /// The fault's kind, without its target.
    pub fn kind(self) -> &'static str {
        match self {
            Self::KillEdge(_) => "kill-edge",
            Self::EmptyEdge(_) => "empty-edge",
            Self::PauseEdge(_) => "pause-edge",
            Self::PartitionEdge(_) => "partition-edge",
            Self::KillManager(_) => "kill-manager",
            Self::PauseManager(_) => "pause-manager",
            Self::PartitionManager(_) => "partition-manager",
            Self::KillHubServer(_) => "kill-nats",
            Self::KillStreamLeader => "kill-stream-leader",
            Self::PauseHubServer(_) => "pause-nats",
            Self::PartitionRegion(_) => "partition-region",
            Self::CutRegion(_) => "cut-region",
            Self::SlowRegion(_) => "slow-region",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::KillEdge(i)
            | Self::EmptyEdge(i)
            | Self::PauseEdge(i)
            | Self::PartitionEdge(i) => {
                write!(f, "{} edge#{i}", self.kind())
            }
            Self::KillManager(i) | Self::PauseManager(i) | Self::PartitionManager(i) => {
                write!(f, "{} m{i}", self.kind())
            }
            Self::KillHubServer(i) | Self::PauseHubServer(i) => write!(f, "{} hub{i}", self.kind()),
            Self::KillStreamLeader => f.write_str(self.kind()),
            Self::PartitionRegion(i) | Self::CutRegion(i) | Self::SlowRegion(i) => {
                write!(f, "{} r{i}", self.kind())
            }
        }
    }
}

/// One planned fault: when it starts (from the campaign's start) and how long it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

/// The deployment's shape, as far as choosing targets goes.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub edges: usize,
    pub managers: usize,
    pub regions: usize,
}

fn draw(rng: &mut Rng, shape: Shape) -> Fault {
    let edge = rng.index(shape.edges);
    let manager = rng.index(shape.managers);
    let server = rng.index(3);
    let region = rng.index(shape.regions);
    match rng.below(13) {
        0 => Fault::KillEdge(edge),
        1 => Fault::EmptyEdge(edge),
        2 => Fault::PauseEdge(edge),
        3 => Fault::PartitionEdge(edge),
        4 => Fault::KillManager(manager),
        5 => Fault::PauseManager(manager),
        6 => Fault::PartitionManager(manager),
        7 => Fault::KillHubServer(server),
        8 => Fault::KillStreamLeader,
        9 => Fault::PauseHubServer(server),
        10 => Fault::PartitionRegion(region),
        11 => Fault::CutRegion(region),
        _ => Fault::SlowRegion(region),
    }
}

/// The faults for a campaign of `duration`, one every `every` on average, each held from one second to
/// twice `max_staleness` plus two seconds (so some outlast the edges' staleness bound). The last ends
/// before the campaign does.
pub fn schedule(
    seed: u64,
    duration: Duration,
    every: Duration,
    max_staleness: Duration,
    shape: Shape,
) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ 0xFA17_5C4E_D01E);
    let longest = (max_staleness * 2 + Duration::from_secs(2)).as_millis() as u64;
    let mean = every.as_millis() as u64;
    let mut planned: Vec<Planned> = Vec::new();
    let mut at = Duration::from_secs(3);
    while at < duration {
        let hold = Duration::from_millis(rng.between(1000, longest));
        let fault = draw(&mut rng, shape);
        let active: Vec<&Planned> = planned.iter().filter(|p| p.at + p.hold > at).collect();
        let fits = active.len() < 2
            && active.iter().all(|p| p.fault.class() != fault.class())
            && at + hold + Duration::from_secs(1) < duration;
        if fits {
            planned.push(Planned { at, hold, fault });
        }
        at += Duration::from_millis(rng.between(mean / 2, mean * 3 / 2));
    }
    planned
}

/// Carries out the schedule; returns when every fault has been healed (or at once when cancelled, after
/// healing what is active).
pub async fn inject(
    schedule: Vec<Planned>,
    deployment: Arc<Mutex<Deployment>>,
    history: Arc<std::sync::Mutex<History>>,
    stop: CancellationToken,
) {
    let began = tokio::time::Instant::now();
    let mut healing = tokio::task::JoinSet::new();
    for planned in schedule {
        tokio::select! {
            () = tokio::time::sleep_until(began + planned.at) => {}
            () = stop.cancelled() => break,
        }
        let fault = apply(planned.fault, &deployment).await;
        // The leader is named as the server it turned out to be.
        let label = match planned.fault {
            Fault::KillStreamLeader => format!("{} ({fault})", planned.fault.kind()),
            _ => fault.to_string(),
        };
        eprintln!(
            "quench-chaos: +{:>5.1}s {label} for {:.1}s",
            planned.at.as_secs_f64(),
            planned.hold.as_secs_f64()
        );
        let (deployment, history, stop) = (deployment.clone(), history.clone(), stop.clone());
        healing.spawn(async move {
            let start = now_us();
            tokio::select! {
                () = tokio::time::sleep(planned.hold) => {}
                () = stop.cancelled() => {}
            }
            heal(fault, &deployment, &history).await;
            if let Ok(mut history) = history.lock() {
                history.faults.push(FaultRecord {
                    start,
                    end: now_us(),
                    fault: label,
                });
            }
        });
    }
    while healing.join_next().await.is_some() {}
}

/// Starts a fault; a stream leader is resolved to its server here.
async fn apply(fault: Fault, deployment: &Mutex<Deployment>) -> Fault {
    let mut d = deployment.lock().await;
    let fault = match fault {
        Fault::KillStreamLeader => Fault::KillHubServer(d.stream_leader().await.unwrap_or(0)),
        other => other,
    };
    match fault {
        Fault::KillEdge(i) | Fault::EmptyEdge(i) => d.edges[i].service.kill(),
        Fault::PauseEdge(i) => d.edges[i].service.pause(),
        Fault::PartitionEdge(i) => d.edges[i]
            .links
            .iter()
            .for_each(|l| l.set(LinkState::Partitioned)),
        Fault::KillManager(i) => d.managers[i].service.kill(),
        Fault::PauseManager(i) => d.managers[i].service.pause(),
        Fault::PartitionManager(i) => d.managers[i]
            .links
            .iter()
            .for_each(|l| l.set(LinkState::Partitioned)),
        Fault::KillHubServer(i) => d.hub[i].service.kill(),
        Fault::PauseHubServer(i) => d.hub[i].service.pause(),
        Fault::PartitionRegion(i) => d.regions[i]
            .links
            .iter()
            .for_each(|l| l.set(LinkState::Partitioned)),
        Fault::CutRegion(i) => d.regions[i]
            .links
            .iter()
            .for_each(|l| l.set(LinkState::Cut)),
        Fault::SlowRegion(i) => {
            let link = Link {
                latency: d.regions[i].latency + Duration::from_millis(300),
                loss_per_mille: 50,
            };
            d.regions[i].links.iter().for_each(|l| l.set_link(link));
        }
        Fault::KillStreamLeader => {}
    }
    fault
}

async fn heal(fault: Fault, deployment: &Mutex<Deployment>, history: &std::sync::Mutex<History>) {
    let mut d = deployment.lock().await;
    let open = |links: &[quench_netfault::Proxy]| links.iter().for_each(|l| l.set(LinkState::Open));
    let restarted = match fault {
        Fault::KillEdge(i) => d.edges[i].service.start(),
        Fault::EmptyEdge(i) => d.restart_empty(i).map(|id| {
            if let Ok(mut history) = history.lock() {
                let named = history.edge_index(&id);
                d.edges[i].named.store(named, Ordering::Release);
            }
        }),
        Fault::KillManager(i) => d.managers[i].service.start(),
        Fault::KillHubServer(i) => d.hub[i].service.start(),
        Fault::PauseEdge(i) => {
            d.edges[i].service.resume();
            Ok(())
        }
        Fault::PauseManager(i) => {
            d.managers[i].service.resume();
            Ok(())
        }
        Fault::PauseHubServer(i) => {
            d.hub[i].service.resume();
            Ok(())
        }
        Fault::PartitionEdge(i) => {
            open(&d.edges[i].links);
            Ok(())
        }
        Fault::PartitionManager(i) => {
            open(&d.managers[i].links);
            Ok(())
        }
        Fault::PartitionRegion(i) | Fault::CutRegion(i) => {
            open(&d.regions[i].links);
            Ok(())
        }
        Fault::SlowRegion(i) => {
            let link = Link::latency(d.regions[i].latency);
            d.regions[i].links.iter().for_each(|l| l.set_link(link));
            Ok(())
        }
        Fault::KillStreamLeader => Ok(()),
    };
    if let Err(error) = restarted {
        eprintln!("quench-chaos: healing {fault} failed: {error:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        edges: 6,
        managers: 2,
        regions: 2,
    };

    fn plan(seed: u64) -> Vec<Planned> {
        schedule(
            seed,
            Duration::from_secs(600),
            Duration::from_secs(4),
            Duration::from_secs(4),
            SHAPE,
        )
    }

    #[test]
    fn a_seed_names_one_schedule() {
        assert_eq!(plan(3), plan(3));
        assert_ne!(plan(3), plan(4));
    }

    /// Every kind is drawn in a long campaign, never more than two at once, never two of a class, and
    /// each ends before the campaign does.
    #[test]
    fn schedules_keep_their_limits_and_cover_every_kind() {
        let planned = plan(11);
        let kinds: std::collections::BTreeSet<&str> =
            planned.iter().map(|p| p.fault.kind()).collect();
        assert_eq!(kinds.len(), 13, "{kinds:?}");
        for p in &planned {
            assert!(p.at + p.hold < Duration::from_secs(600));
            let overlapping: Vec<&Planned> = planned
                .iter()
                .filter(|q| q.at <= p.at && q.at + q.hold > p.at)
                .collect();
            assert!(overlapping.len() <= 2, "{overlapping:?}");
            let classes: std::collections::BTreeSet<u8> =
                overlapping.iter().map(|q| q.fault.class()).collect();
            assert_eq!(classes.len(), overlapping.len(), "{overlapping:?}");
        }
    }
}
