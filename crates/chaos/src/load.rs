//! The clients: writers that create, revoke (one by one and in bulk, by id list and by owner), rotate and
//! report leaked keys through either manager, and verifiers that ask every edge about keys all the time.
//! Every call is recorded in the history with its start, end and outcome.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    deploy::BOOTSTRAP,
    history::{Answer, Change, History, Key, Micros, Operation, Outcome, Verification, now_us},
    rng::Rng,
};

/// Owners keys are spread over; a bulk revocation by owner takes about one in this many keys.
const OWNERS: u64 = 30;
/// How many recently ended keys verifiers keep asking about.
const RECENT: usize = 256;

/// An edge as the verifiers see it: a URL that stays put across restarts, and its current id.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub named: Arc<AtomicU16>,
}

/// The keys the clients know, with their secrets (never written anywhere).
#[derive(Debug, Default)]
struct Pool {
    secrets: HashMap<u32, String>,
    by_id: HashMap<String, u32>,
    owners: HashMap<u32, String>,
    /// Created and not yet asked to end.
    active: Vec<u32>,
    /// Lately asked to end: what verifiers ask about most, to catch a valid answer after a revocation.
    ended: VecDeque<u32>,
}

impl Pool {
    fn take_active(&mut self, rng: &mut Rng) -> Option<(u32, String)> {
        if self.active.is_empty() {
            return None;
        }
        let key = self.active.swap_remove(rng.index(self.active.len()));
        self.end(key);
        Some((key, self.secrets.get(&key)?.clone()))
    }

    fn end(&mut self, key: u32) {
        if self.ended.len() == RECENT {
            self.ended.pop_front();
        }
        self.ended.push_back(key);
    }

    fn pick(&self, rng: &mut Rng) -> Option<(u32, String)> {
        let key = if !self.ended.is_empty() && (self.active.is_empty() || rng.chance(50)) {
            self.ended[rng.index(self.ended.len())]
        } else if !self.active.is_empty() {
            self.active[rng.index(self.active.len())]
        } else {
            return None;
        };
        Some((key, self.secrets.get(&key)?.clone()))
    }
}

/// How one call to a manager went.
struct Answered {
    manager: usize,
    /// When the call started and ended.
    span: (Micros, Micros),
    outcome: Outcome,
    /// The answer's body (`null` when there was none or it was not JSON).
    body: Value,
}

/// What every client shares.
pub struct Clients {
    http: reqwest::Client,
    verify_http: reqwest::Client,
    managers: Vec<String>,
    pub history: Arc<Mutex<History>>,
    pool: Mutex<Pool>,
}

impl Clients {
    pub fn new(managers: Vec<String>, history: Arc<Mutex<History>>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            verify_http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .pool_max_idle_per_host(64)
                .build()?,
            managers,
            history,
            pool: Mutex::new(Pool::default()),
        })
    }

    /// Verifies keys at random edges until stopped. An edge that gave no answer is left alone for a
    /// moment (it is down or paused), so one dead edge does not hold every verifier up.
    pub async fn verifier(
        self: Arc<Self>,
        targets: Vec<Target>,
        mut rng: Rng,
        stop: CancellationToken,
    ) {
        let mut resting = vec![tokio::time::Instant::now(); targets.len()];
        while !stop.is_cancelled() {
            let now = tokio::time::Instant::now();
            let first = rng.index(targets.len());
            let Some(at) = (0..targets.len())
                .map(|i| (first + i) % targets.len())
                .find(|&i| resting[i] <= now)
            else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let picked = self.pool.lock().ok().and_then(|p| p.pick(&mut rng));
            let Some((key, secret)) = picked else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            if self.verify_recorded(&targets[at], key, &secret).await == Answer::Nothing {
                resting[at] = tokio::time::Instant::now() + Duration::from_secs(2);
            }
        }
    }

    /// Asks each edge in turn about every key lately asked to end, newest first, until stopped: so an edge
    /// cut off while keys are revoked is asked about each of them while it may still be past its bound,
    /// which random picks alone seldom do.
    pub async fn sweeper(self: Arc<Self>, targets: Vec<Target>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let recent: Vec<(u32, String)> = self.pool.lock().map_or_else(
                |_| Vec::new(),
                |pool| {
                    pool.ended
                        .iter()
                        .rev()
                        .filter_map(|k| Some((*k, pool.secrets.get(k)?.clone())))
                        .collect()
                },
            );
            if recent.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            for target in &targets {
                for (key, secret) in &recent {
                    if stop.is_cancelled() {
                        return;
                    }
                    if self.verify_recorded(target, *key, secret).await == Answer::Nothing {
                        break;
                    }
                }
            }
        }
    }

    /// Verifies `key` at `target` and records the verification under the edge's id at the start.
    async fn verify_recorded(&self, target: &Target, key: u32, secret: &str) -> Answer {
        let edge = target.named.load(Ordering::Acquire);
        let start = now_us();
        let answer = self.verify(&target.url, secret).await;
        let end = now_us();
        if let Ok(mut history) = self.history.lock() {
            history.verifications.push(Verification {
                start,
                end,
                edge,
                key,
                answer,
            });
        }
        answer
    }

    pub async fn verify(&self, url: &str, secret: &str) -> Answer {
        let sent = self
            .verify_http
            .post(format!("{url}/v1/verify"))
            .json(&json!({ "key": secret }))
            .send()
            .await;
        match sent {
            Ok(response) => match response.json::<Value>().await {
                Ok(body) => Answer::from_body(&body),
                Err(_) => Answer::Nothing,
            },
            Err(_) => Answer::Nothing,
        }
    }

    /// Changes keys until stopped, one call at a time.
    pub async fn writer(self: Arc<Self>, mut rng: Rng, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let roll = rng.below(100);
            let wait_all = rng.chance(50);
            match roll {
                0..40 => self.create(&mut rng).await,
                40..65 => self.revoke(&mut rng, wait_all).await,
                65..77 => self.bulk_ids(&mut rng, wait_all).await,
                77..79 => self.bulk_owner(&mut rng).await,
                79..89 => self.rotate(&mut rng, wait_all).await,
                _ => self.leak(&mut rng).await,
            }
            tokio::time::sleep(Duration::from_millis(rng.between(10, 50))).await;
        }
    }

    /// POSTs to a manager chosen at random: which one, when, what came of it, and the body.
    async fn call(&self, rng: &mut Rng, path: &str, body: Value) -> Answered {
        let manager = rng.index(self.managers.len());
        let start = now_us();
        let sent = self
            .http
            .post(format!("{}{path}", self.managers[manager]))
            .bearer_auth(BOOTSTRAP)
            .json(&body)
            .send()
            .await;
        let (outcome, body) = match sent {
            Err(error) => (Outcome::Indeterminate(short(&error)), Value::Null),
            Ok(response) => {
                let status = response.status();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                if status.is_success() {
                    (Outcome::Ok, body)
                } else if status.is_client_error() && status.as_u16() != 408 {
                    (Outcome::Refused(status.as_u16()), body)
                } else {
                    (Outcome::Indeterminate(format!("HTTP {status}")), body)
                }
            }
        };
        Answered {
            manager,
            span: (start, now_us()),
            outcome,
            body,
        }
    }

    /// Records a call as the change it asked for, with the edges its answer named as confirming it.
    fn record(&self, answered: Answered, change: Change) {
        let confirmed_by = answered.body["propagation"]["edges"]
            .as_array()
            .map(|edges| {
                edges
                    .iter()
                    .filter(|e| e["confirmed"] == true)
                    .filter_map(|e| e["edge"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(mut history) = self.history.lock() {
            history.operations.push(Operation {
                start: answered.span.0,
                end: answered.span.1,
                manager: answered.manager,
                change,
                outcome: answered.outcome,
                confirmed_by,
            });
        }
    }

    /// Adds a key the manager created (from a successful create or rotate answer) to the history and the
    /// pool.
    fn learn(&self, answered: &Answered, owner: &str) -> Option<u32> {
        if answered.outcome != Outcome::Ok {
            return None;
        }
        let body = &answered.body;
        let (id, secret) = (body["id"].as_str()?, body["key"].as_str()?);
        let mut history = self.history.lock().ok()?;
        history.keys.push(Key {
            id: id.to_owned(),
            owner: owner.to_owned(),
            created: answered.span,
        });
        let key = (history.keys.len() - 1) as u32;
        let mut pool = self.pool.lock().ok()?;
        pool.secrets.insert(key, secret.to_owned());
        pool.by_id.insert(id.to_owned(), key);
        pool.owners.insert(key, owner.to_owned());
        pool.active.push(key);
        Some(key)
    }

    async fn create(&self, rng: &mut Rng) {
        let owner = format!("o{}", rng.below(OWNERS));
        // Mostly without waiting for the edges, as a busy issuer would; verifiers then meet keys some
        // edges do not know yet (answered `unknown`, which is allowed).
        let path = format!("/v1/keys?{}", wait(rng.chance(20)));
        let answered = self.call(rng, &path, json!({ "owner": owner })).await;
        let key = self.learn(&answered, &owner);
        self.record(answered, Change::Create { owner, key });
    }

    fn take(&self, rng: &mut Rng) -> Option<(u32, String)> {
        self.pool.lock().ok()?.take_active(rng)
    }

    fn id_of(&self, key: u32) -> Option<String> {
        Some(self.history.lock().ok()?.keys.get(key as usize)?.id.clone())
    }

    async fn revoke(&self, rng: &mut Rng, wait_all: bool) {
        let Some((key, _)) = self.take(rng) else {
            return;
        };
        let Some(id) = self.id_of(key) else { return };
        let path = format!("/v1/keys/{id}/revoke?{}", wait(wait_all));
        let answered = self
            .call(rng, &path, json!({"reason": "chaos: revoke"}))
            .await;
        self.record(answered, Change::Revoke { key, wait_all });
    }

    async fn bulk_ids(&self, rng: &mut Rng, wait_all: bool) {
        let count = rng.between(2, 10);
        let keys: Vec<u32> = (0..count)
            .filter_map(|_| self.take(rng).map(|(k, _)| k))
            .collect();
        if keys.is_empty() {
            return;
        }
        let ids: Vec<String> = keys.iter().filter_map(|k| self.id_of(*k)).collect();
        let path = format!("/v1/revocations?{}", wait(wait_all));
        let answered = self
            .call(rng, &path, json!({"ids": ids, "reason": "chaos: bulk"}))
            .await;
        self.record(answered, Change::BulkIds { keys, wait_all });
    }

    async fn bulk_owner(&self, rng: &mut Rng) {
        let owner = format!("o{}", rng.below(OWNERS));
        if let Ok(mut pool) = self.pool.lock() {
            let (taken, kept): (Vec<u32>, Vec<u32>) = pool
                .active
                .iter()
                .partition(|k| pool.owners.get(k) == Some(&owner));
            pool.active = kept;
            taken.into_iter().for_each(|k| pool.end(k));
        }
        let body = json!({"owner": owner, "reason": "chaos: owner"});
        let answered = self.call(rng, "/v1/revocations", body).await;
        let revoked = self.pool.lock().map_or_else(
            |_| Vec::new(),
            |pool| {
                answered.body["revoked"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| pool.by_id.get(id.as_str()?).copied())
                    .collect()
            },
        );
        self.record(answered, Change::BulkOwner { owner, revoked });
    }

    async fn rotate(&self, rng: &mut Rng, wait_all: bool) {
        let Some((key, _)) = self.take(rng) else {
            return;
        };
        let Some(id) = self.id_of(key) else { return };
        let owner = self
            .pool
            .lock()
            .ok()
            .and_then(|p| p.owners.get(&key).cloned())
            .unwrap_or_default();
        let path = format!("/v1/keys/{id}/rotate?{}", wait(wait_all));
        let answered = self.call(rng, &path, json!({"grace_seconds": 0})).await;
        let new_key = self.learn(&answered, &owner);
        let change = Change::Rotate {
            key,
            new_key,
            wait_all,
        };
        self.record(answered, change);
    }

    async fn leak(&self, rng: &mut Rng) {
        let Some((key, secret)) = self.take(rng) else {
            return;
        };
        let report = json!({"keys": [{"key": secret, "source": "quench-chaos"}]});
        let answered = self.call(rng, "/v1/leaks", report).await;
        let revoked = matches!(
            answered.body["results"][0]["outcome"].as_str(),
            Some("revoked" | "already_revoked")
        );
        self.record(answered, Change::Leak { key, revoked });
    }

    /// Every key the clients know, with its secret, in history order.
    pub fn all_keys(&self) -> Vec<(u32, String)> {
        let Ok(pool) = self.pool.lock() else {
            return Vec::new();
        };
        let mut keys: Vec<(u32, String)> =
            pool.secrets.iter().map(|(k, s)| (*k, s.clone())).collect();
        keys.sort_unstable_by_key(|(k, _)| *k);
        keys
    }
}

fn wait(all: bool) -> &'static str {
    if all {
        "wait=all&timeout_ms=3000"
    } else {
        "wait=none"
    }
}

fn short(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "connection lost".to_owned()
    }
}
