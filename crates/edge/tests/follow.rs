//! The edge against a scripted manager: bootstrap, ordering, gap repair, staleness, forward-auth.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use quench_api::alerts::AlertReport;
use quench_bus::{
    Bus, EdgeRegistration, EventBatch, Freshness, Heartbeat, InProcessBus, SignedHeartbeat,
    SignedPage, SnapshotReader, snapshot::write_snapshot,
};
use quench_core::{
    ApiKey, Change, EdgeKey, Event, HashAlg, Label, Owner, Prefix, Reason, Seq, Timestamp,
    Verifier,
    record::Snapshot,
    sign::{Nonce, Signer, Trust},
    usage::{Action, Condition, UsagePolicy, UsageRule},
};
use quench_edge::{EdgeConfig, Replica, StalePolicy, Upstream, UpstreamError, follow};
use tokio_util::sync::CancellationToken;

/// A manager's log, in memory: signed snapshots at the current head, signed pages of events. Whoever
/// sits between it and the edge can be played too: cut the link, or answer with what was recorded.
struct FakeManager {
    signer: Arc<Signer>,
    log: Mutex<Vec<Event>>,
    registered: Mutex<Vec<EdgeRegistration>>,
    policy: Mutex<UsagePolicy>,
    reports: Mutex<Vec<AlertReport>>,
    /// Every read of the log or snapshot fails, as if the link were cut.
    offline: AtomicBool,
    /// Reads of the log fail this many more times.
    failing_pages: AtomicUsize,
    /// Reads of the log never answer.
    hanging: AtomicBool,
    /// Pages answered with these bytes, whatever was asked.
    replayed_page: Mutex<Option<SignedPage>>,
    /// Snapshots answered with these bytes, whatever was asked.
    replayed_snapshot: Mutex<Option<Vec<u8>>>,
    /// The manager's state as it was at this many events (a store restored from an old backup).
    rolled_back_to: Mutex<Option<usize>>,
    /// When the manager last answered a read of the log itself (a fresh proof).
    last_answer: Mutex<Option<std::time::Instant>>,
    /// What the edge finds on its disk at start: a snapshot kept from an earlier answer.
    stored: Mutex<Option<Snapshot>>,
}

impl Default for FakeManager {
    fn default() -> Self {
        Self {
            signer: Arc::new(Signer::generate().expect("random")),
            log: Mutex::default(),
            registered: Mutex::default(),
            policy: Mutex::new(UsagePolicy::disabled()),
            reports: Mutex::default(),
            offline: AtomicBool::new(false),
            failing_pages: AtomicUsize::new(0),
            hanging: AtomicBool::new(false),
            replayed_page: Mutex::default(),
            replayed_snapshot: Mutex::default(),
            rolled_back_to: Mutex::default(),
            last_answer: Mutex::default(),
            stored: Mutex::default(),
        }
    }
}

impl FakeManager {
    fn append(&self, change: Change) -> Event {
        let mut log = self.log.lock().expect("lock");
        let event = Event {
            seq: Seq::new(log.len() as u64 + 1),
            at: Timestamp::now(),
            change,
        };
        log.push(event.clone());
        event
    }

    fn head(&self) -> Seq {
        Seq::new(self.log.lock().expect("lock").len() as u64)
    }

    /// The log as this manager currently serves it.
    fn served_log(&self) -> Vec<Event> {
        let log = self.log.lock().expect("lock").clone();
        match *self.rolled_back_to.lock().expect("lock") {
            Some(len) => log.into_iter().take(len).collect(),
            None => log,
        }
    }

    /// The signed snapshot bytes answering `nonce`, built from the served log.
    fn snapshot_bytes(&self, nonce: Option<Nonce>) -> Vec<u8> {
        let log = self.served_log();
        let mut keys: Vec<EdgeKey> = Vec::new();
        for event in &log {
            match &event.change {
                Change::KeyCreated { key } => keys.push(key.clone()),
                Change::KeyRevoked { id, .. } => keys
                    .iter_mut()
                    .filter(|k| k.id == *id)
                    .for_each(|k| k.revoked = true),
                Change::KeyExpiryChanged { id, expires_at } => keys
                    .iter_mut()
                    .filter(|k| k.id == *id)
                    .for_each(|k| k.expires_at = *expires_at),
            }
        }
        let snapshot = Snapshot {
            seq: Seq::new(log.len() as u64),
            keys,
        };
        write_snapshot(&self.signer, &snapshot, Timestamp::now(), nonce)
    }

    /// The signed page answering `nonce`, as the real manager's `GET /v1/events` makes it.
    fn page(&self, after: Seq, limit: u32, nonce: &Nonce) -> SignedPage {
        let at = Timestamp::now();
        let log = self.served_log();
        let events: Vec<Event> = log
            .iter()
            .filter(|e| e.seq > after)
            .take(limit as usize)
            .cloned()
            .collect();
        let fresh = Freshness {
            head: Seq::new(log.len() as u64),
            at,
        };
        SignedPage::seal_page(&self.signer, &events, fresh, Some(nonce))
    }

    fn link(&self) -> Result<(), UpstreamError> {
        if self.offline.load(Ordering::Acquire) {
            return Err(UpstreamError::Unreachable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Upstream for FakeManager {
    async fn snapshot(
        &self,
        trust: &Trust,
        nonce: &Nonce,
    ) -> Result<(Snapshot, Freshness), UpstreamError> {
        self.link()?;
        let bytes = match self.replayed_snapshot.lock().expect("lock").clone() {
            Some(recorded) => recorded,
            None => self.snapshot_bytes(Some(nonce.clone())),
        };
        let mut reader = SnapshotReader::new();
        reader
            .feed(&bytes)
            .map_err(|e| UpstreamError::Invalid(e.into()))?;
        reader
            .finish(trust, nonce)
            .map_err(|e| UpstreamError::Invalid(e.into()))
    }

    async fn events_after(
        &self,
        after: Seq,
        limit: u32,
        nonce: &Nonce,
    ) -> Result<SignedPage, UpstreamError> {
        self.link()?;
        if self.hanging.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        if self
            .failing_pages
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(UpstreamError::Unreachable("reset by peer".into()));
        }
        if let Some(recorded) = self.replayed_page.lock().expect("lock").clone() {
            return Ok(recorded);
        }
        let page = self.page(after, limit, nonce);
        *self.last_answer.lock().expect("lock") = Some(std::time::Instant::now());
        Ok(page)
    }

    async fn stored_snapshot(&self, _trust: &Trust) -> Option<Snapshot> {
        self.stored.lock().expect("lock").clone()
    }

    async fn register(&self, edge: &EdgeRegistration) -> Result<(), UpstreamError> {
        self.registered.lock().expect("lock").push(edge.clone());
        Ok(())
    }

    async fn usage_policy(&self) -> Result<UsagePolicy, UpstreamError> {
        Ok(self.policy.lock().expect("lock").clone())
    }

    async fn report_alerts(&self, report: &AlertReport) -> Result<(), UpstreamError> {
        self.reports.lock().expect("lock").push(report.clone());
        Ok(())
    }
}

fn new_key(scopes: &[&str]) -> (ApiKey, EdgeKey) {
    let key = ApiKey::generate(Prefix::default()).expect("random");
    let edge = EdgeKey {
        id: key.id(),
        prefix: key.prefix(),
        owner: Owner::parse("team-a").expect("owner"),
        apis: vec![],
        scopes: scopes
            .iter()
            .map(|s| Label::parse(s).expect("scope"))
            .collect(),
        expires_at: None,
        revoked: false,
        verifier: Verifier::create(HashAlg::Sha256, key.secret()).expect("hash"),
    };
    (key, edge)
}

struct Harness {
    manager: Arc<FakeManager>,
    bus: Arc<InProcessBus>,
    replica: Arc<Replica>,
    cancel: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(manager: Arc<FakeManager>, config: EdgeConfig) -> Harness {
    let bus = Arc::new(InProcessBus::default());
    let replica = Replica::new(config);
    let cancel = CancellationToken::new();
    let trust = Trust::new(vec![manager.signer.public()]);
    tokio::spawn(follow(
        replica.clone(),
        bus.clone(),
        manager.clone(),
        trust,
        cancel.clone(),
    ));
    let harness = Harness {
        manager,
        bus,
        replica,
        cancel,
    };
    harness.until(|r| r.is_ready()).await;
    harness
}

impl Harness {
    async fn until(&self, condition: impl Fn(&Replica) -> bool) {
        // Bounded in time, not in polls: on two busy cores a poll can take far longer than its sleep.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if condition(&self.replica) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "condition not reached in 10 s; applied {}",
            self.replica.applied()
        );
    }

    fn reason(&self, key: &ApiKey) -> Option<Reason> {
        self.replica
            .verify(&key.expose(), None, None, Timestamp::now())
            .reason()
    }

    async fn heartbeat(&self) {
        self.heartbeat_at(Timestamp::now()).await;
    }

    async fn heartbeat_at(&self, at: Timestamp) {
        let beat = Heartbeat {
            manager: "m".into(),
            head: self.manager.head(),
            at,
        };
        let sealed = SignedHeartbeat::seal_heartbeat(&self.manager.signer, &beat);
        self.bus.heartbeat(&sealed).await.expect("heartbeat");
    }

    async fn publish(&self, event: &Event) {
        let batch = EventBatch::seal_events(&self.manager.signer, std::slice::from_ref(event));
        self.bus.publish(&batch).await.expect("publish");
    }
}

#[tokio::test]
async fn bootstraps_from_a_snapshot_then_follows_the_bus() {
    let manager = Arc::new(FakeManager::default());
    let (early, early_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: early_edge });
    let h = start(manager, EdgeConfig::default()).await;
    assert_eq!(h.reason(&early), None);
    let (late, late_edge) = new_key(&[]);
    let created = h.manager.append(Change::KeyCreated { key: late_edge });
    h.publish(&created).await;
    h.until(|r| r.applied() == Seq::new(2)).await;
    assert_eq!(h.reason(&late), None);
    let revoked = h.manager.append(Change::KeyRevoked {
        id: early.id(),
        reason: "x".into(),
    });
    h.publish(&revoked).await;
    h.until(|r| r.applied() == Seq::new(3)).await;
    assert_eq!(h.reason(&early), Some(Reason::Revoked));
}

#[tokio::test]
async fn a_skipped_sequence_number_is_repaired_from_the_log() {
    let h = start(Arc::new(FakeManager::default()), EdgeConfig::default()).await;
    let (a, a_edge) = new_key(&[]);
    let (b, b_edge) = new_key(&[]);
    h.manager.append(Change::KeyCreated { key: a_edge });
    // Event 1 never reaches the bus; event 2 does.
    let second = h.manager.append(Change::KeyCreated { key: b_edge });
    h.publish(&second).await;
    h.until(|r| r.applied() == Seq::new(2)).await;
    assert_eq!(h.reason(&a), None);
    assert_eq!(h.reason(&b), None);
    assert_eq!(
        h.replica
            .metrics()
            .gaps_repaired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn a_heartbeat_ahead_of_the_replica_triggers_repair() {
    let h = start(Arc::new(FakeManager::default()), EdgeConfig::default()).await;
    let (a, a_edge) = new_key(&[]);
    h.manager.append(Change::KeyCreated { key: a_edge });
    h.manager.append(Change::KeyRevoked {
        id: a.id(),
        reason: "silent loss".into(),
    });
    h.heartbeat().await;
    h.until(|r| r.applied() == Seq::new(2)).await;
    assert_eq!(h.reason(&a), Some(Reason::Revoked));
}

/// A heartbeat can overtake the event it counts (they travel separately). The follower gives the bus a
/// moment before asking the manager: the event arriving just after is applied from the bus, with no
/// round trip to the manager's log (which, over a region's slow link, used to hold the event back by a
/// round trip or more; found as the tail of `quench bench propagation --regions`).
#[tokio::test]
async fn a_heartbeat_that_overtakes_its_event_does_not_send_the_edge_to_the_manager() {
    let h = start(Arc::new(FakeManager::default()), EdgeConfig::default()).await;
    let (a, a_edge) = new_key(&[]);
    let created = h.manager.append(Change::KeyCreated { key: a_edge });
    let asked_before = *h.manager.last_answer.lock().expect("lock");
    h.heartbeat().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.publish(&created).await;
    h.until(|r| r.applied() == Seq::new(1)).await;
    assert_eq!(h.reason(&a), None);
    // Past the grace, the follower finds nothing missing and does not ask either.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        *h.manager.last_answer.lock().expect("lock"),
        asked_before,
        "the follower asked the manager's log for an event the bus delivered"
    );
}

#[tokio::test]
async fn duplicates_and_replays_change_nothing() {
    let h = start(Arc::new(FakeManager::default()), EdgeConfig::default()).await;
    let (a, a_edge) = new_key(&[]);
    let created = h.manager.append(Change::KeyCreated { key: a_edge });
    let revoked = h.manager.append(Change::KeyRevoked {
        id: a.id(),
        reason: "x".into(),
    });
    for event in [&created, &revoked, &created, &revoked, &created] {
        h.publish(event).await;
    }
    h.heartbeat().await;
    h.until(|r| r.applied() == Seq::new(2)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(h.reason(&a), Some(Reason::Revoked));
    assert!(
        h.replica
            .metrics()
            .events_duplicate
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );
}

#[tokio::test]
async fn a_stale_edge_fails_closed_then_recovers() {
    let config = EdgeConfig {
        max_staleness: Duration::from_millis(200),
        ..EdgeConfig::default()
    };
    let manager = Arc::new(FakeManager::default());
    let (good, good_edge) = new_key(&[]);
    let (bad, bad_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: good_edge });
    manager.append(Change::KeyCreated { key: bad_edge });
    manager.append(Change::KeyRevoked {
        id: bad.id(),
        reason: "x".into(),
    });
    let h = start(manager, config).await;
    assert_eq!(h.reason(&good), None);
    h.manager.offline.store(true, Ordering::Release);
    // No heartbeats, no manager: past max_staleness the edge stops vouching for keys, but still refuses revoked ones.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.reason(&good), Some(Reason::Stale));
    assert_eq!(h.reason(&bad), Some(Reason::Revoked));
    h.heartbeat().await;
    h.until(|r| !r.is_stale(Timestamp::now())).await;
    assert_eq!(h.reason(&good), None);
}

#[tokio::test]
async fn fail_open_keeps_answering_when_stale() {
    let config = EdgeConfig {
        max_staleness: Duration::from_millis(100),
        stale_policy: StalePolicy::FailOpen,
        ..EdgeConfig::default()
    };
    let manager = Arc::new(FakeManager::default());
    let (good, good_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: good_edge });
    let h = start(manager, config).await;
    h.manager.offline.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.replica.is_stale(Timestamp::now()));
    assert_eq!(h.reason(&good), None);
}

#[tokio::test]
async fn an_edge_that_never_bootstrapped_vouches_for_nothing() {
    let replica = Replica::new(EdgeConfig::default());
    let (key, _) = new_key(&[]);
    let verdict = replica.verify(&key.expose(), None, None, Timestamp::now());
    assert_eq!(verdict.reason(), Some(Reason::Stale));
    assert_eq!(
        replica
            .verify("garbage", None, None, Timestamp::now())
            .reason(),
        Some(Reason::Malformed)
    );
}

#[tokio::test]
async fn forged_and_tampered_messages_are_dropped_and_counted() {
    let h = start(Arc::new(FakeManager::default()), EdgeConfig::default()).await;
    let (victim, victim_edge) = new_key(&[]);
    let created = h.manager.append(Change::KeyCreated { key: victim_edge });
    h.publish(&created).await;
    h.until(|r| r.applied() == Seq::new(1)).await;

    // An attacker on the bus: a revocation "un-done" by a re-creation, signed with the wrong key, and
    // a genuine batch with its bytes altered.
    let forger = Signer::generate().expect("random");
    let (impostor, impostor_edge) = new_key(&[]);
    let forged = Event {
        seq: Seq::new(2),
        at: Timestamp::now(),
        change: Change::KeyCreated { key: impostor_edge },
    };
    h.bus
        .publish(&EventBatch::seal_events(&forger, &[forged]))
        .await
        .expect("publish");
    let genuine = EventBatch::seal_events(&h.manager.signer, &[created]);
    let mut body = genuine.body().to_vec();
    let at = body.len() - 3;
    body[at] ^= 1;
    h.bus
        .publish(&EventBatch::from_parts(body, genuine.signature().clone()))
        .await
        .expect("publish");
    let forged_beat = Heartbeat {
        manager: "m".into(),
        head: Seq::new(99),
        at: Timestamp::now(),
    };
    h.bus
        .heartbeat(&SignedHeartbeat::seal_heartbeat(&forger, &forged_beat))
        .await
        .expect("heartbeat");

    let rejected = || {
        h.replica
            .metrics()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for _ in 0..200 {
        if rejected() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rejected(), 3);
    assert_eq!(h.replica.applied(), Seq::new(1));
    assert_eq!(h.reason(&impostor), Some(Reason::Unknown));
    assert_eq!(h.reason(&victim), None);
    assert_eq!(
        h.manager.registered.lock().expect("lock").len(),
        1,
        "the edge registered its key"
    );
}

#[tokio::test]
async fn a_replayed_heartbeat_does_not_stretch_freshness() {
    let config = EdgeConfig {
        max_staleness: Duration::from_millis(300),
        ..EdgeConfig::default()
    };
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: key_edge });
    let h = start(manager, config).await;
    h.manager.offline.store(true, Ordering::Release);
    let old = Timestamp::from_millis(Timestamp::now().as_millis() - 1_000);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.reason(&key), Some(Reason::Stale));
    h.heartbeat_at(old).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.reason(&key),
        Some(Reason::Stale),
        "an old heartbeat refreshes nothing"
    );
    let future = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
    h.heartbeat_at(future).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.reason(&key),
        Some(Reason::Stale),
        "a heartbeat from the future is not believed"
    );
    h.heartbeat().await;
    h.until(|r| !r.is_stale(Timestamp::now())).await;
    assert_eq!(h.reason(&key), None);
}

/// With no bus traffic at all, an edge that can reach its manager proves itself current from the log
/// and keeps answering.
#[tokio::test]
async fn a_reachable_manager_keeps_a_quiet_edge_fresh() {
    let config = EdgeConfig {
        max_staleness: Duration::from_millis(200),
        ..EdgeConfig::default()
    };
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: key_edge });
    let h = start(manager, config).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(h.reason(&key), None);
    }
}

/// A manager whose log never answers (or a path that holds every answer back) does not keep the edge
/// from the bus for long: the edge asks, gives up after twice `max_staleness`, and applies what the bus
/// carries meanwhile.
#[tokio::test]
async fn a_manager_that_never_answers_does_not_hold_the_bus_back() {
    let config = EdgeConfig {
        max_staleness: Duration::from_millis(200),
        ..EdgeConfig::default()
    };
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: key_edge });
    let h = start(manager, config).await;
    h.manager.hanging.store(true, Ordering::Release);
    // Quiet past half of max_staleness: the follower asks the log, which hangs.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let revoked = h.manager.append(Change::KeyRevoked {
        id: key.id(),
        reason: "leaked".into(),
    });
    h.publish(&revoked).await;
    h.until(|r| r.applied() == Seq::new(2)).await;
    assert_eq!(h.reason(&key), Some(Reason::Revoked));
}

/// The replay attack, in process: whoever sits on the edge's link to the manager records a signed
/// page of the log while a key is live, drops the bus, and from then on answers every read of the log
/// with the recording. The recording answers another nonce, so it proves nothing, and the edge stops
/// vouching for keys once `max_staleness` has passed since its last real proof.
#[tokio::test]
async fn a_replayed_page_of_the_log_proves_nothing() {
    let max_staleness = Duration::from_millis(300);
    let config = EdgeConfig {
        max_staleness,
        ..EdgeConfig::default()
    };
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: key_edge });
    let h = start(manager, config).await;
    let recorded = h
        .manager
        .page(h.replica.applied(), 1000, &Nonce::random().expect("random"));
    *h.manager.replayed_page.lock().expect("lock") = Some(recorded);
    let cut_at = std::time::Instant::now();
    // Revoked at the manager; the attacker keeps it from the bus and from the log.
    h.manager.append(Change::KeyRevoked {
        id: key.id(),
        reason: "leaked".into(),
    });
    let rejected = || h.replica.metrics().rejected.load(Ordering::Relaxed);
    let mut went_stale = None;
    for _ in 0..200 {
        let asked = cut_at.elapsed();
        let last_proof = h
            .manager
            .last_answer
            .lock()
            .expect("lock")
            .expect("answered");
        let since_proof = std::time::Instant::now().saturating_duration_since(last_proof);
        match h.reason(&key) {
            None => assert!(
                since_proof <= max_staleness + Duration::from_millis(2),
                "valid {since_proof:?} after the last real answer of the manager"
            ),
            Some(reason) => {
                assert_eq!(reason, Reason::Stale);
                went_stale.get_or_insert(asked);
            }
        }
        if went_stale.is_some_and(|at| asked > at + max_staleness) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(went_stale.is_some(), "the edge never stopped vouching");
    assert!(
        rejected() > 0,
        "the replayed pages were refused and counted"
    );
    // The link heals: the edge learns of the revocation and never answers valid again.
    *h.manager.replayed_page.lock().expect("lock") = None;
    h.until(|r| r.applied() == Seq::new(2)).await;
    h.until(|r| !r.is_stale(Timestamp::now())).await;
    assert_eq!(h.reason(&key), Some(Reason::Revoked));
}

/// An edge following `manager` with a bus that carries nothing, until the guard drops.
fn follow_quietly(manager: &Arc<FakeManager>) -> (Arc<Replica>, tokio_util::sync::DropGuard) {
    let replica = Replica::new(EdgeConfig::default());
    let cancel = CancellationToken::new();
    let stop = cancel.clone().drop_guard();
    tokio::spawn(follow(
        replica.clone(),
        Arc::new(InProcessBus::default()),
        manager.clone(),
        Trust::new(vec![manager.signer.public()]),
        cancel,
    ));
    (replica, stop)
}

/// Waits for the replica to start, then checks that it refuses `key` as revoked.
async fn ready_with_revoked(replica: &Replica, key: &ApiKey) {
    for _ in 0..500 {
        if replica.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(replica.is_ready());
    assert_eq!(
        replica
            .verify(&key.expose(), None, None, Timestamp::now())
            .reason(),
        Some(Reason::Revoked)
    );
}

/// A snapshot recorded before a key was revoked, served to a starting edge, is refused: it answers
/// another nonce. The edge vouches for nothing until it gets a snapshot of its own.
#[tokio::test]
async fn a_replayed_snapshot_is_refused() {
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: key_edge });
    let recorded = manager.snapshot_bytes(Some(Nonce::random().expect("random")));
    manager.append(Change::KeyRevoked {
        id: key.id(),
        reason: "leaked".into(),
    });
    *manager.replayed_snapshot.lock().expect("lock") = Some(recorded);
    let (replica, _stop) = follow_quietly(&manager);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!replica.is_ready());
        assert_ne!(
            replica
                .verify(&key.expose(), None, None, Timestamp::now())
                .reason(),
            None
        );
    }
    assert_eq!(replica.applied(), Seq::new(0));
    *manager.replayed_snapshot.lock().expect("lock") = None;
    ready_with_revoked(&replica, &key).await;
}

/// A manager whose store went back in time (restored from an old backup) signs a snapshot from before
/// a revocation the edge already holds. The edge does not install it: nothing goes backwards.
#[tokio::test]
async fn a_snapshot_older_than_what_the_edge_holds_is_refused() {
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated { key: key_edge });
    manager.append(Change::KeyRevoked {
        id: key.id(),
        reason: "leaked".into(),
    });
    // The first read of the log after the snapshot fails, so the edge starts over from a snapshot;
    // by then the manager has been rolled back to before the revocation.
    manager.failing_pages.store(1, Ordering::Release);
    let (replica, _stop) = follow_quietly(&manager);
    for _ in 0..500 {
        if replica.applied() == Seq::new(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(replica.applied(), Seq::new(2));
    *manager.rolled_back_to.lock().expect("lock") = Some(1);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            replica.applied(),
            Seq::new(2),
            "the applied sequence never goes down"
        );
        assert_ne!(
            replica
                .verify(&key.expose(), None, None, Timestamp::now())
                .reason(),
            None,
            "the revoked key is never valid again"
        );
    }
    *manager.rolled_back_to.lock().expect("lock") = None;
    ready_with_revoked(&replica, &key).await;
}

mod http {
    use super::*;
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    async fn serve(replica: Arc<Replica>) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(quench_api::web::serve(
            listener,
            quench_edge::http::router(replica),
            std::future::pending(),
        ));
        url
    }

    async fn auth(
        url: &str,
        headers: &[(&str, &str)],
        query: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap) {
        let mut request = reqwest::Client::new().get(format!("{url}/auth{query}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("auth");
        (response.status(), response.headers().clone())
    }

    #[tokio::test]
    async fn forward_auth_answers_200_401_403_and_503() {
        let manager = Arc::new(FakeManager::default());
        let (key, edge_key) = new_key(&["read"]);
        let (revoked, revoked_edge) = new_key(&[]);
        manager.append(Change::KeyCreated { key: edge_key });
        manager.append(Change::KeyCreated { key: revoked_edge });
        manager.append(Change::KeyRevoked {
            id: revoked.id(),
            reason: "x".into(),
        });
        let h = start(manager, EdgeConfig::default()).await;
        let url = serve(h.replica.clone()).await;
        let text = key.expose();

        let (status, headers) = auth(&url, &[("x-api-key", &text)], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-quench-key-id"], key.id().to_string().as_str());
        assert_eq!(headers["x-quench-owner"], "team-a");
        let bearer = format!("Bearer {text}");
        assert_eq!(
            auth(&url, &[("authorization", &bearer)], "").await.0,
            StatusCode::OK
        );
        assert_eq!(
            auth(&url, &[("x-api-key", &text)], "?scope=read").await.0,
            StatusCode::OK
        );
        // Envoy's ext_authz forwards the original method and path under the prefix.
        let envoy = reqwest::Client::new()
            .post(format!("{url}/auth/orders/42"))
            .header("x-api-key", &text)
            .send()
            .await
            .expect("auth");
        assert_eq!(envoy.status(), StatusCode::OK);

        let (status, headers) = auth(&url, &[("x-api-key", &text)], "?scope=write").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-quench-reason"], "forbidden");
        assert_eq!(
            auth(
                &url,
                &[("x-quench-scope", "write"), ("x-api-key", &text)],
                ""
            )
            .await
            .0,
            StatusCode::FORBIDDEN
        );
        let (status, headers) = auth(&url, &[("x-api-key", &revoked.expose())], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers["x-quench-reason"], "revoked");
        assert!(headers.contains_key("www-authenticate"));
        assert_eq!(auth(&url, &[], "").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            auth(&url, &[("authorization", "Basic Zm9vOmJhcg==")], "")
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            auth(&url, &[("x-api-key", "qk_broken")], "").await.0,
            StatusCode::UNAUTHORIZED
        );

        let cold = Replica::new(EdgeConfig::default());
        let cold_url = serve(cold).await;
        assert_eq!(
            auth(&cold_url, &[("x-api-key", &text)], "").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn verify_and_health_over_http() {
        let manager = Arc::new(FakeManager::default());
        let (key, edge_key) = new_key(&["read"]);
        manager.append(Change::KeyCreated { key: edge_key });
        let cold_url = serve(Replica::new(EdgeConfig::default())).await;
        let health = reqwest::get(format!("{cold_url}/healthz"))
            .await
            .expect("health");
        assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            health.json::<Value>().await.expect("json")["status"],
            "starting"
        );

        let h = start(manager, EdgeConfig::default()).await;
        h.heartbeat().await;
        let url = serve(h.replica.clone()).await;
        let client = reqwest::Client::new();
        let post = |body: Value| client.post(format!("{url}/v1/verify")).json(&body).send();
        let valid: Value = post(json!({"key": key.expose(), "scope": "read"}))
            .await
            .expect("verify")
            .json()
            .await
            .expect("json");
        assert_eq!(
            valid,
            json!({"valid": true, "key_id": key.id().to_string(), "owner": "team-a", "scopes": ["read"]})
        );
        let malformed: Value = post(json!({"key": "qk_nope"}))
            .await
            .expect("verify")
            .json()
            .await
            .expect("json");
        assert_eq!(malformed, json!({"valid": false, "reason": "malformed"}));
        for (body, status) in [
            (json!({}), 422),
            (json!({"key": 5}), 422),
            (json!({"key": "x", "extra": 1}), 422),
        ] {
            let response = post(body).await.expect("verify");
            assert_eq!(response.status().as_u16(), status);
            let error: Value = response.json().await.expect("json");
            assert_eq!(error["error"]["code"], "invalid_request");
        }
        let broken = client
            .post(format!("{url}/v1/verify"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .expect("verify");
        assert_eq!(broken.status(), StatusCode::BAD_REQUEST);
        let text = client
            .post(format!("{url}/v1/verify"))
            .body("key")
            .send()
            .await
            .expect("verify");
        assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let big = client
            .post(format!("{url}/v1/verify"))
            .header("content-type", "application/json")
            .body(vec![b' '; 100_000])
            .send()
            .await
            .expect("verify");
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);

        let health: Value = reqwest::get(format!("{url}/healthz"))
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        assert_eq!(health["status"], "ok");
        assert_eq!(health["applied_seq"], 1);
        assert_eq!(health["keys"], 1);
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("quench_edge_verifications_total{result=\"valid\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("quench_edge_verifications_total{result=\"malformed\"} 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn usage_alerts_reach_the_manager_with_the_client_addresses() {
        let manager = Arc::new(FakeManager::default());
        *manager.policy.lock().expect("lock") = UsagePolicy {
            rules: vec![UsageRule {
                name: "spread".into(),
                condition: Condition::DistinctAddresses { more_than: 8 },
                action: Action::Alert,
            }],
            ..UsagePolicy::default()
        };
        let (key, edge_key) = new_key(&["read"]);
        let (quiet, quiet_edge) = new_key(&["read"]);
        manager.append(Change::KeyCreated { key: edge_key });
        manager.append(Change::KeyCreated { key: quiet_edge });
        let h = start(manager.clone(), EdgeConfig::default()).await;
        h.heartbeat().await;
        h.until(|r| r.usage().policy().is_enabled()).await;
        let url = serve(h.replica.clone()).await;
        let client = reqwest::Client::new();
        // Forward-auth from twenty addresses (as a proxy reports them) and /v1/verify from twenty more.
        for i in 0..20 {
            let address = format!("198.51.100.{i}");
            let response = client
                .get(format!("{url}/auth"))
                .header("x-api-key", key.expose())
                .header("x-real-ip", &address)
                .send()
                .await
                .expect("auth");
            assert_eq!(response.status(), StatusCode::OK);
            let response = client
                .post(format!("{url}/v1/verify"))
                .json(&json!({"key": key.expose(), "client_ip": format!("2001:db8::{i}")}))
                .send()
                .await
                .expect("verify");
            assert_eq!(response.status(), StatusCode::OK);
        }
        // The quiet key, used many times from one address, raises nothing.
        for _ in 0..50 {
            let response = client
                .get(format!("{url}/auth"))
                .header("x-api-key", quiet.expose())
                .header("x-forwarded-for", "203.0.113.1, 192.0.2.50")
                .send()
                .await
                .expect("auth");
            assert_eq!(response.status(), StatusCode::OK);
        }
        let bad = client
            .post(format!("{url}/v1/verify"))
            .json(&json!({"key": key.expose(), "client_ip": "somewhere"}))
            .send()
            .await
            .expect("verify");
        assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
        for _ in 0..400 {
            if !manager.reports.lock().expect("lock").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let reports = manager.reports.lock().expect("lock").clone();
        let alerts: Vec<_> = reports.iter().flat_map(|r| r.alerts.iter()).collect();
        assert_eq!(alerts.len(), 1, "{reports:?}");
        assert_eq!(reports[0].edge, "edge-1");
        assert_eq!(alerts[0].key_id, key.id());
        assert_eq!(alerts[0].rule, "spread");
        assert!(alerts[0].measures.distinct_addresses > 8.0);
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        assert!(
            metrics.contains("quench_edge_usage_alerts_total{rule=\"spread\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("quench_edge_usage_tracked_keys 2"),
            "{metrics}"
        );
    }
}

/// A stored snapshot ahead of the manager's log (the edge kept it before the manager's store was restored
/// from an older backup) makes the edge current with nothing: it is refused, the edge reads the manager's
/// snapshot instead, and, that one being older than what it holds, vouches for nothing.
#[tokio::test]
async fn a_stored_snapshot_ahead_of_the_managers_log_is_not_current() {
    let manager = Arc::new(FakeManager::default());
    let (created, created_edge) = new_key(&[]);
    let (later, later_edge) = new_key(&[]);
    manager.append(Change::KeyCreated {
        key: created_edge.clone(),
    });
    manager.append(Change::KeyCreated {
        key: later_edge.clone(),
    });
    *manager.stored.lock().expect("lock") = Some(Snapshot {
        seq: Seq::new(2),
        keys: vec![created_edge, later_edge],
    });
    *manager.rolled_back_to.lock().expect("lock") = Some(1);
    let (replica, _stop) = follow_quietly(&manager);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!replica.is_ready(), "current on a copy ahead of the log");
        for key in [&created, &later] {
            assert_eq!(
                replica
                    .verify(&key.expose(), None, None, Timestamp::now())
                    .reason(),
                Some(Reason::Stale)
            );
        }
    }
}

/// A stored snapshot of this log starts the edge, which applies the log after it and is current only
/// then.
#[tokio::test]
async fn a_stored_snapshot_of_this_log_is_caught_up() {
    let manager = Arc::new(FakeManager::default());
    let (key, key_edge) = new_key(&[]);
    manager.append(Change::KeyCreated {
        key: key_edge.clone(),
    });
    *manager.stored.lock().expect("lock") = Some(Snapshot {
        seq: Seq::new(1),
        keys: vec![key_edge],
    });
    manager.append(Change::KeyRevoked {
        id: key.id(),
        reason: "leaked".into(),
    });
    let (replica, _stop) = follow_quietly(&manager);
    ready_with_revoked(&replica, &key).await;
    assert_eq!(replica.applied(), Seq::new(2));
}
