//! Which edges exist, what each has applied, and waiting until every live one has applied a change.
//!
//! Edges acknowledge their applied sequence after each batch of events and once a second regardless, so an
//! acknowledgement is also a liveness signal. An edge not heard from within `liveness` is reported but no
//! longer waited for: a dead edge must not block revocations, and a partitioned one stops answering
//! `valid` by itself once stale (see the edge's replica).

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use quench_bus::Ack;
use quench_core::{Seq, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
struct EdgeState {
    region: String,
    applied: Seq,
    last_seen: Instant,
    last_seen_at: Timestamp,
}

#[derive(Debug)]
pub struct Propagation {
    edges: Mutex<BTreeMap<String, EdgeState>>,
    changed: watch::Sender<u64>,
    liveness: Duration,
}

/// One edge as `GET /v1/edges` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeView {
    pub id: String,
    pub region: String,
    pub applied_seq: u64,
    /// Events the edge has not yet applied.
    pub lag: u64,
    pub last_contact: String,
    pub live: bool,
}

/// Per-edge outcome of waiting for a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeConfirmation {
    pub edge: String,
    pub region: String,
    pub confirmed: bool,
    /// When the manager learned the edge had applied the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    /// Milliseconds from the start of the wait to that moment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Confirmation {
    /// The change waited for.
    pub seq: u64,
    /// Every live edge applied it before the timeout.
    pub complete: bool,
    pub edges: Vec<EdgeConfirmation>,
}

impl Propagation {
    pub fn new(liveness: Duration) -> Self {
        Self {
            edges: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
            liveness,
        }
    }

    fn edges(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, EdgeState>> {
        self.edges.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an edge known to exist before it first reports (the embedded edge), so a change made
    /// at start-up waits for it.
    pub fn expect(&self, id: &str, region: &str) {
        self.edges().entry(id.to_owned()).or_insert(EdgeState {
            region: region.to_owned(),
            applied: Seq::ZERO,
            last_seen: Instant::now(),
            last_seen_at: Timestamp::now(),
        });
    }

    pub fn record(&self, ack: &Ack) {
        {
            let mut edges = self.edges();
            let state = edges.entry(ack.edge.clone()).or_insert(EdgeState {
                region: ack.region.clone(),
                applied: Seq::ZERO,
                last_seen: Instant::now(),
                last_seen_at: Timestamp::now(),
            });
            state.region.clone_from(&ack.region);
            // A restarted edge may report a lower sequence while it catches up; show what it says.
            state.applied = ack.applied;
            state.last_seen = Instant::now();
            state.last_seen_at = Timestamp::now();
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn view(&self, head: Seq) -> Vec<EdgeView> {
        let now = Instant::now();
        self.edges()
            .iter()
            .map(|(id, state)| EdgeView {
                id: id.clone(),
                region: state.region.clone(),
                applied_seq: state.applied.get(),
                lag: head.get().saturating_sub(state.applied.get()),
                last_contact: state.last_seen_at.to_string(),
                live: now.duration_since(state.last_seen) <= self.liveness,
            })
            .collect()
    }

    pub fn live_count(&self) -> usize {
        let now = Instant::now();
        self.edges()
            .values()
            .filter(|s| now.duration_since(s.last_seen) <= self.liveness)
            .count()
    }

    /// Waits until every edge live at the start has applied `seq`, or `timeout` passes.
    pub async fn wait_for(&self, seq: Seq, timeout: Duration) -> Confirmation {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut changes = self.changed.subscribe();
        let waiting: Vec<(String, String)> = {
            let edges = self.edges();
            edges
                .iter()
                .filter(|(_, s)| started.duration_since(s.last_seen) <= self.liveness)
                .map(|(id, s)| (id.clone(), s.region.clone()))
                .collect()
        };
        let mut confirmed: BTreeMap<String, (Timestamp, f64)> = BTreeMap::new();
        loop {
            changes.borrow_and_update();
            {
                let edges = self.edges();
                for (id, _) in &waiting {
                    if confirmed.contains_key(id) {
                        continue;
                    }
                    if edges.get(id).is_some_and(|s| s.applied >= seq) {
                        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                        confirmed.insert(id.clone(), (Timestamp::now(), elapsed));
                    }
                }
            }
            if confirmed.len() == waiting.len() {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero()
                || tokio::time::timeout(remaining, changes.changed())
                    .await
                    .is_err()
            {
                break;
            }
        }
        let edges: Vec<EdgeConfirmation> = waiting
            .into_iter()
            .map(|(edge, region)| {
                let done = confirmed.get(&edge);
                EdgeConfirmation {
                    confirmed: done.is_some(),
                    confirmed_at: done.map(|(at, _)| at.to_string()),
                    latency_ms: done.map(|(_, ms)| (ms * 1000.0).round() / 1000.0),
                    edge,
                    region,
                }
            })
            .collect();
        Confirmation {
            seq: seq.get(),
            complete: edges.iter().all(|e| e.confirmed),
            edges,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ack(edge: &str, applied: u64) -> Ack {
        Ack {
            edge: edge.into(),
            region: "eu".into(),
            applied: Seq::new(applied),
            at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn waits_for_every_live_edge_and_reports_each() {
        let tracker = Arc::new(Propagation::new(Duration::from_secs(5)));
        tracker.record(&ack("a", 1));
        tracker.record(&ack("b", 1));
        let waiter = {
            let tracker = tracker.clone();
            tokio::spawn(async move { tracker.wait_for(Seq::new(2), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        tracker.record(&ack("a", 2));
        tracker.record(&ack("b", 3));
        let confirmation = waiter.await.expect("waiter");
        assert!(confirmation.complete);
        assert_eq!(confirmation.edges.len(), 2);
        assert!(
            confirmation
                .edges
                .iter()
                .all(|e| e.confirmed && e.latency_ms.is_some())
        );
    }

    #[tokio::test]
    async fn times_out_naming_the_edges_that_did_not_confirm() {
        let tracker = Propagation::new(Duration::from_secs(5));
        tracker.record(&ack("a", 5));
        tracker.record(&ack("b", 1));
        let confirmation = tracker
            .wait_for(Seq::new(5), Duration::from_millis(50))
            .await;
        assert!(!confirmation.complete);
        let pending: Vec<&str> = confirmation
            .edges
            .iter()
            .filter(|e| !e.confirmed)
            .map(|e| e.edge.as_str())
            .collect();
        assert_eq!(pending, vec!["b"]);
    }

    #[tokio::test]
    async fn dead_edges_are_not_waited_for() {
        let tracker = Propagation::new(Duration::from_millis(10));
        tracker.record(&ack("gone", 0));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let confirmation = tracker.wait_for(Seq::new(1), Duration::from_secs(5)).await;
        assert!(confirmation.complete);
        assert!(confirmation.edges.is_empty());
        assert!(!tracker.view(Seq::new(1))[0].live);
    }
}
