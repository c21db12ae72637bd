//! Which edges exist, what each has applied, and waiting until every live one has applied a change.
//!
//! Edges acknowledge their applied sequence after each batch of events and once a second regardless, so an
//! acknowledgement is also a liveness signal. An edge not heard from within `liveness` is reported but no
//! longer waited for: a dead edge must not block revocations, and a partitioned one stops answering
//! `valid` by itself once stale (see the edge's replica).
//!
//! Liveness counts from the time the edge stamped on its (signed) acknowledgement, never from when it
//! arrived, and only an acknowledgement newer than the last one accepted from that edge counts
//! ([`admit`]). So a captured acknowledgement replayed on the bus cannot keep a dead edge "live", nor
//! move a restarted edge's progress back to what it had before. Acknowledgements stamped more than
//! [`MAX_ACK_AHEAD`] ahead of this manager's clock, or older than the liveness window, are refused: an
//! edge whose clock is that far off looks dead until its clock is fixed, which errs on the safe side
//! (it is reported, and its own staleness bound still holds).

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

pub use quench_api::{
    keys::{Confirmation, EdgeConfirmation},
    system::EdgeView,
};
use quench_core::{EdgeId, Region, Seq, Timestamp};
use tokio::sync::watch;

use crate::edges::VerifiedAck;

/// How far ahead of this manager's clock an acknowledgement may be stamped.
pub const MAX_ACK_AHEAD: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct EdgeState {
    region: Region,
    applied: Seq,
    /// The stamp of the last acknowledgement accepted (`None` before the first).
    last_stamp: Option<Timestamp>,
    /// When the edge was last known alive: the last accepted stamp, never later than its arrival.
    heard: Timestamp,
}

#[derive(Debug)]
pub struct Propagation {
    edges: Mutex<BTreeMap<EdgeId, EdgeState>>,
    changed: watch::Sender<u64>,
    liveness: Duration,
}

/// Why an acknowledgement was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckRefused {
    #[error("stamped {0} ms ahead of this manager's clock; check the edge's clock")]
    Ahead(i64),
    #[error(
        "stamped {0} ms ago, older than the liveness window; check the edge's clock, or it is a replay"
    )]
    Behind(i64),
    #[error(
        "not newer than the last acknowledgement accepted from this edge (a replay, or reordered)"
    )]
    NotNewer,
}

/// Whether an acknowledgement stamped `at` reporting `applied` counts, given the last one accepted
/// from the same edge, and if so, the moment it proves the edge alive. Pure, so it is tested directly.
pub fn admit(
    last: Option<(Timestamp, Seq)>,
    at: Timestamp,
    applied: Seq,
    now: Timestamp,
    liveness: Duration,
) -> Result<Timestamp, AckRefused> {
    let ahead = at.millis_since(now);
    if ahead > millis(MAX_ACK_AHEAD) {
        return Err(AckRefused::Ahead(ahead));
    }
    let behind = now.millis_since(at);
    if behind > millis(liveness) {
        return Err(AckRefused::Behind(behind));
    }
    if let Some((last_at, last_applied)) = last {
        // Two acknowledgements in one millisecond are both genuine only if the second says more.
        let newer = at > last_at || (at == last_at && applied > last_applied);
        if !newer {
            return Err(AckRefused::NotNewer);
        }
    }
    Ok(at.min(now))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Propagation {
    pub fn new(liveness: Duration) -> Self {
        Self {
            edges: Mutex::new(BTreeMap::new()),
            changed: watch::channel(0).0,
            liveness,
        }
    }

    fn edges(&self) -> std::sync::MutexGuard<'_, BTreeMap<EdgeId, EdgeState>> {
        self.edges.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_live(&self, state: &EdgeState, now: Timestamp) -> bool {
        now.millis_since(state.heard) <= millis(self.liveness)
    }

    /// Registers an edge known to exist before it first reports (the embedded edge), so a change made
    /// at start-up waits for it.
    pub fn track_edge(&self, id: &EdgeId, region: &Region) {
        self.edges().entry(id.clone()).or_insert(EdgeState {
            region: region.clone(),
            applied: Seq::ZERO,
            last_stamp: None,
            heard: Timestamp::now(),
        });
    }

    /// Counts an acknowledgement received at `now`, unless [`admit`] refuses it.
    pub fn record(&self, ack: &VerifiedAck, now: Timestamp) -> Result<(), AckRefused> {
        {
            let mut edges = self.edges();
            let last = edges
                .get(&ack.edge)
                .and_then(|s| s.last_stamp.map(|at| (at, s.applied)));
            let heard = admit(last, ack.at, ack.applied, now, self.liveness)?;
            let state = edges.entry(ack.edge.clone()).or_insert(EdgeState {
                region: ack.region.clone(),
                applied: Seq::ZERO,
                last_stamp: None,
                heard,
            });
            state.region.clone_from(&ack.region);
            // A restarted edge may report a lower sequence while it catches up; show what it says.
            state.applied = ack.applied;
            state.last_stamp = Some(ack.at);
            state.heard = heard;
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    pub fn view(&self, head: Seq) -> Vec<EdgeView> {
        let now = Timestamp::now();
        self.edges()
            .iter()
            .map(|(id, state)| EdgeView {
                id: id.to_string(),
                region: state.region.to_string(),
                applied_seq: state.applied.get(),
                lag: head.get().saturating_sub(state.applied.get()),
                last_contact: state.heard.to_string(),
                live: self.is_live(state, now),
            })
            .collect()
    }

    pub fn live_count(&self) -> usize {
        let now = Timestamp::now();
        self.edges()
            .values()
            .filter(|s| self.is_live(s, now))
            .count()
    }

    /// Waits until every edge live at the start has applied `seq`, or `timeout` passes.
    pub async fn wait_for(&self, seq: Seq, timeout: Duration) -> Confirmation {
        use std::time::Instant;
        let started = Instant::now();
        let deadline = started + timeout;
        let mut changes = self.changed.subscribe();
        let waiting = self.live_edges();
        let mut confirmed: Confirmed = BTreeMap::new();
        loop {
            changes.borrow_and_update();
            self.note_applied(&waiting, seq, started, &mut confirmed);
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
        confirmation(seq, waiting, &confirmed)
    }

    /// The edges live now, with their regions.
    fn live_edges(&self) -> Vec<(EdgeId, Region)> {
        let now = Timestamp::now();
        self.edges()
            .iter()
            .filter(|(_, s)| self.is_live(s, now))
            .map(|(id, s)| (id.clone(), s.region.clone()))
            .collect()
    }

    /// Adds to `confirmed` those of `waiting` that have now applied `seq`, with when and how long after
    /// `started`.
    fn note_applied(
        &self,
        waiting: &[(EdgeId, Region)],
        seq: Seq,
        started: std::time::Instant,
        confirmed: &mut Confirmed,
    ) {
        let edges = self.edges();
        for (id, _) in waiting {
            if !confirmed.contains_key(id) && edges.get(id).is_some_and(|s| s.applied >= seq) {
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                confirmed.insert(id.clone(), (Timestamp::now(), elapsed));
            }
        }
    }
}

/// The edges that confirmed a change: when, and milliseconds after the wait began.
type Confirmed = BTreeMap<EdgeId, (Timestamp, f64)>;

/// What a wait for `seq` reports: every edge waited for, confirmed or not, latencies to the microsecond.
fn confirmation(seq: Seq, waiting: Vec<(EdgeId, Region)>, confirmed: &Confirmed) -> Confirmation {
    let edges: Vec<EdgeConfirmation> = waiting
        .into_iter()
        .map(|(edge, region)| {
            let done = confirmed.get(&edge);
            EdgeConfirmation {
                confirmed: done.is_some(),
                confirmed_at: done.map(|(at, _)| at.to_string()),
                latency_ms: done.map(|(_, ms)| (ms * 1000.0).round() / 1000.0),
                edge: edge.to_string(),
                region: region.to_string(),
            }
        })
        .collect();
    Confirmation {
        seq: seq.get(),
        complete: edges.iter().all(|e| e.confirmed),
        edges,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ack(edge: &str, applied: u64) -> VerifiedAck {
        VerifiedAck {
            edge: EdgeId::parse(edge).expect("id"),
            region: Region::parse("eu").expect("region"),
            applied: Seq::new(applied),
            at: Timestamp::now(),
        }
    }

    fn count(tracker: &Propagation, ack: &VerifiedAck) {
        tracker.record(ack, Timestamp::now()).expect("counted");
    }

    const LIVENESS: Duration = Duration::from_secs(5);

    #[test]
    fn an_ack_counts_only_if_newer_and_near_this_managers_clock() {
        let now = Timestamp::from_millis(1_000_000);
        let at = |ms: i64| Timestamp::from_millis(1_000_000 + ms);
        let seq = Seq::new;
        assert_eq!(admit(None, at(-20), seq(3), now, LIVENESS), Ok(at(-20)));
        // Liveness never counts from later than the arrival, whatever the edge's clock says.
        assert_eq!(admit(None, at(4_000), seq(3), now, LIVENESS), Ok(now));
        assert_eq!(
            admit(None, at(5_001), seq(3), now, LIVENESS),
            Err(AckRefused::Ahead(5_001))
        );
        assert_eq!(
            admit(None, at(-5_001), seq(3), now, LIVENESS),
            Err(AckRefused::Behind(5_001))
        );
        let last = Some((at(-100), seq(3)));
        assert_eq!(
            admit(last, at(-100), seq(3), now, LIVENESS),
            Err(AckRefused::NotNewer),
            "the same acknowledgement again"
        );
        assert_eq!(
            admit(last, at(-200), seq(9), now, LIVENESS),
            Err(AckRefused::NotNewer),
            "an older one, whatever it claims"
        );
        assert_eq!(admit(last, at(-100), seq(4), now, LIVENESS), Ok(at(-100)));
        assert_eq!(admit(last, at(-50), seq(1), now, LIVENESS), Ok(at(-50)));
    }

    #[tokio::test]
    async fn a_replayed_ack_neither_revives_an_edge_nor_moves_its_progress() {
        let tracker = Propagation::new(Duration::from_millis(200));
        let old = ack("e", 7);
        count(&tracker, &old);
        let newer = VerifiedAck {
            applied: Seq::new(3),
            at: Timestamp::from_millis(old.at.as_millis() + 1),
            ..old.clone()
        };
        count(&tracker, &newer);
        assert_eq!(
            tracker.record(&old, Timestamp::now()),
            Err(AckRefused::NotNewer)
        );
        assert_eq!(tracker.view(Seq::new(7))[0].applied_seq, 3);

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(tracker.record(&newer, Timestamp::now()).is_err());
        assert!(!tracker.view(Seq::new(7))[0].live);
        assert_eq!(tracker.live_count(), 0);
    }

    #[tokio::test]
    async fn waits_for_every_live_edge_and_reports_each() {
        let tracker = Arc::new(Propagation::new(Duration::from_secs(5)));
        count(&tracker, &ack("a", 1));
        count(&tracker, &ack("b", 1));
        let waiter = {
            let tracker = tracker.clone();
            tokio::spawn(async move { tracker.wait_for(Seq::new(2), Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        count(&tracker, &ack("a", 2));
        count(&tracker, &ack("b", 3));
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
        count(&tracker, &ack("a", 5));
        count(&tracker, &ack("b", 1));
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

    #[test]
    fn a_confirmation_lists_every_edge_waited_for_and_is_complete_only_when_all_confirmed() {
        let id = |t: &str| EdgeId::parse(t).expect("id");
        let eu = Region::parse("eu").expect("region");
        let waiting = vec![(id("a"), eu.clone()), (id("b"), eu.clone())];
        let mut confirmed = Confirmed::new();
        confirmed.insert(id("a"), (Timestamp::from_millis(0), 1.234_567_8));
        let partial = confirmation(Seq::new(4), waiting.clone(), &confirmed);
        assert_eq!(partial.seq, 4);
        assert!(!partial.complete);
        assert_eq!(partial.edges[0].latency_ms, Some(1.235));
        assert!(!partial.edges[1].confirmed && partial.edges[1].confirmed_at.is_none());
        confirmed.insert(id("b"), (Timestamp::from_millis(1), 2.0));
        assert!(confirmation(Seq::new(4), waiting, &confirmed).complete);
        assert!(confirmation(Seq::new(4), Vec::new(), &Confirmed::new()).complete);
    }

    #[tokio::test]
    async fn dead_edges_are_not_waited_for() {
        let tracker = Propagation::new(Duration::from_millis(10));
        count(&tracker, &ack("gone", 0));
        tokio::time::sleep(Duration::from_millis(30)).await;
        let confirmation = tracker.wait_for(Seq::new(1), Duration::from_secs(5)).await;
        assert!(confirmation.complete);
        assert!(confirmation.edges.is_empty());
        assert!(!tracker.view(Seq::new(1))[0].live);
    }
}
