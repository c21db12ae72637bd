//! An attacker on the network between an edge and its manager, as real processes: the edge reaches the
//! bus through a gate the attacker can shut, and the manager through an HTTP proxy the attacker runs.
//! The proxy records the manager's signed answers and then replays them, drops requests, holds
//! answers back and mixes all of it. Every answer the edge gives is recorded with the moment it was
//! asked, and the history is checked:
//!
//! - once the edge has answered `revoked` for a key, it never answers `valid` for it again;
//! - a `valid` answer is only ever given within `max_staleness` of the last fresh proof that reached
//!   the edge (a genuine answer of the manager passed on by the proxy, or the bus while it was open);
//! - a restarted edge offered a recorded snapshot from before a revocation never vouches for the key.

mod support;

use std::{
    io,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use support::{Client, Nats, manager};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

const MAX_STALENESS: Duration = Duration::from_secs(2);
/// Clocks are read in whole milliseconds on both sides.
const SLACK: Duration = Duration::from_millis(5);

/// A TCP gate in front of the bus: while open it joins each client to the server; shutting it cuts every
/// connection and refuses new ones, as a partition would.
struct Gate {
    port: u16,
    state: Arc<Mutex<GateState>>,
    accept: AbortHandle,
}

#[derive(Default)]
struct GateState {
    open: bool,
    connections: Vec<AbortHandle>,
    /// When the gate opened and shut, in order.
    changes: Vec<(Instant, bool)>,
}

impl Gate {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(GateState {
            open: true,
            changes: vec![(Instant::now(), true)],
            ..GateState::default()
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let mut state = shared.lock().expect("lock");
                if !state.open {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                state.connections.push(task.abort_handle());
            }
        })
        .abort_handle();
        Self {
            port,
            state,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn set(&self, open: bool) {
        let mut state = self.state.lock().expect("lock");
        state.open = open;
        state.changes.push((Instant::now(), open));
        if !open {
            for connection in state.connections.drain(..) {
                connection.abort();
            }
        }
    }

    /// The latest moment at or before `at` when the gate was open.
    fn open_until(&self, at: Instant) -> Option<Instant> {
        let state = self.state.lock().expect("lock");
        let mut last = None;
        let mut open_since = None;
        for &(when, open) in &state.changes {
            if when > at {
                break;
            }
            match (open, open_since) {
                (true, None) => open_since = Some(when),
                (false, Some(_)) => {
                    open_since = None;
                    last = Some(when);
                }
                _ => {}
            }
        }
        if open_since.is_some() { Some(at) } else { last }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accept.abort();
        self.set(false);
    }
}

/// What the proxy does with the edge's reads of the manager's log and snapshot.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Passes them on, and records the first answers it sees.
    Pass,
    /// Answers with the recorded bytes, whatever was asked.
    Replay,
    /// Closes the connection without an answer.
    Drop,
    /// Passes them on, but holds each answer back for this long.
    Delay(Duration),
    /// Each request, in turn from a seeded sequence: pass, replay, drop or delay.
    Mixed,
}

#[derive(Clone)]
struct Recorded {
    status: u16,
    content_type: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

struct ProxyState {
    mode: Mode,
    /// The first answers seen for `/v1/events` and `/v1/snapshot`, before anything was revoked.
    events: Option<Recorded>,
    snapshot: Option<Recorded>,
    /// When the proxy handed the edge a genuine answer of the log or snapshot (a fresh proof).
    proofs: Vec<Instant>,
    replayed: usize,
    dropped: usize,
    step: u64,
}

/// An HTTP/1.1 proxy in front of the manager that the attacker controls.
struct Proxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(manager: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(ProxyState {
            mode: Mode::Pass,
            events: None,
            snapshot: None,
            proofs: Vec::new(),
            replayed: 0,
            dropped: 0,
            step: 0x9e37_79b9_7f4a_7c15,
        }));
        let shared = state.clone();
        let manager = manager.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(stream, manager.clone(), http.clone(), shared.clone()));
            }
        })
        .abort_handle();
        Self {
            port,
            state,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        self.state.lock().expect("lock").mode = mode;
    }

    /// The latest genuine answer handed on at or before `at`.
    fn proof_before(&self, at: Instant) -> Option<Instant> {
        let state = self.state.lock().expect("lock");
        state.proofs.iter().copied().filter(|&p| p <= at).max()
    }

    fn counts(&self) -> (usize, usize) {
        let state = self.state.lock().expect("lock");
        (state.replayed, state.dropped)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one request from a keep-alive connection; `None` when the client closed it.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > 64 * 1024 {
            return Err(io::Error::other("request head too long"));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buffer.drain(..head_end);
    while buffer.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = buffer.drain(..length).collect();
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

async fn forward(http: &reqwest::Client, manager: &str, request: &Request) -> Option<Recorded> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).ok()?;
    let mut outgoing = http.request(method, format!("{manager}{}", request.target));
    for (name, value) in &request.headers {
        if matches!(name.as_str(), "authorization" | "content-type" | "accept") {
            outgoing = outgoing.header(name, value);
        }
    }
    let response = outgoing.body(request.body.clone()).send().await.ok()?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let signature = header("quench-signature");
    let status = response.status().as_u16();
    let body = response.bytes().await.ok()?.to_vec();
    Some(Recorded {
        status,
        content_type,
        signature,
        body,
    })
}

async fn respond(stream: &mut TcpStream, answer: &Recorded) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
        answer.status,
        answer.body.len()
    );
    if let Some(content_type) = &answer.content_type {
        head.push_str(&format!("content-type: {content_type}\r\n"));
    }
    if let Some(signature) = &answer.signature {
        head.push_str(&format!("quench-signature: {signature}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&answer.body).await
}

async fn serve(
    mut stream: TcpStream,
    manager: String,
    http: reqwest::Client,
    state: Arc<Mutex<ProxyState>>,
) {
    let mut buffer = Vec::new();
    while let Ok(Some(request)) = read_request(&mut stream, &mut buffer).await {
        let path = request.target.split('?').next().unwrap_or_default();
        let proof = match path {
            "/v1/events" => Some(false),
            "/v1/snapshot" => Some(true),
            _ => None,
        };
        let Some(is_snapshot) = proof else {
            // Registration, signing keys, usage: passed on untouched.
            let Some(answer) = forward(&http, &manager, &request).await else {
                return;
            };
            if respond(&mut stream, &answer).await.is_err() {
                return;
            }
            continue;
        };
        let mode = {
            let mut state = state.lock().expect("lock");
            match state.mode {
                Mode::Mixed => {
                    state.step = state
                        .step
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    match (state.step >> 33) % 4 {
                        0 => Mode::Pass,
                        1 => Mode::Replay,
                        2 => Mode::Drop,
                        _ => Mode::Delay(MAX_STALENESS + Duration::from_millis(300)),
                    }
                }
                mode => mode,
            }
        };
        let answer = match mode {
            Mode::Drop => {
                state.lock().expect("lock").dropped += 1;
                return;
            }
            Mode::Replay => {
                let mut state = state.lock().expect("lock");
                state.replayed += 1;
                let recorded = if is_snapshot {
                    state.snapshot.clone()
                } else {
                    state.events.clone()
                };
                match recorded {
                    Some(recorded) => recorded,
                    None => return,
                }
            }
            Mode::Pass | Mode::Delay(_) | Mode::Mixed => {
                let Some(answer) = forward(&http, &manager, &request).await else {
                    return;
                };
                if let Mode::Delay(hold) = mode {
                    tokio::time::sleep(hold).await;
                }
                let mut state = state.lock().expect("lock");
                if answer.status == 200 {
                    let slot = if is_snapshot {
                        &mut state.snapshot
                    } else {
                        &mut state.events
                    };
                    slot.get_or_insert_with(|| answer.clone());
                    // Handed on now; the manager signed it earlier still.
                    state.proofs.push(Instant::now());
                }
                answer
            }
        };
        if respond(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

/// Every answer the edge gave: when it was asked, for which key, and what it said.
#[derive(Default)]
struct History {
    answers: Vec<(Instant, &'static str, Option<String>)>,
}

impl History {
    async fn ask(&mut self, client: &Client, edge: &str, name: &'static str, key: &str) {
        let asked = Instant::now();
        let verdict = client.verify(edge, key).await;
        if verdict.is_null() {
            return;
        }
        let reason = if verdict["valid"] == true {
            None
        } else {
            Some(verdict["reason"].as_str().unwrap_or("?").to_owned())
        };
        self.answers.push((asked, name, reason));
    }

    /// Asks about every key every 20 ms for `span`.
    async fn watch(
        &mut self,
        client: &Client,
        edge: &str,
        keys: &[(&'static str, &str)],
        span: Duration,
    ) {
        let end = Instant::now() + span;
        while Instant::now() < end {
            for (name, key) in keys {
                self.ask(client, edge, name, key).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn last(&self, name: &str) -> Option<Option<String>> {
        self.answers
            .iter()
            .rev()
            .find(|(_, n, _)| *n == name)
            .map(|(_, _, reason)| reason.clone())
    }

    /// The two properties, over everything recorded.
    fn check(&self, proxy: &Proxy, gate: &Gate) {
        let mut revoked_seen: Vec<&str> = Vec::new();
        for (asked, name, reason) in &self.answers {
            match reason.as_deref() {
                Some("revoked") => revoked_seen.push(name),
                Some(_) => {}
                None => {
                    assert!(
                        !revoked_seen.contains(name),
                        "{name} answered valid after the edge had answered revoked"
                    );
                    let proof = [proxy.proof_before(*asked), gate.open_until(*asked)]
                        .into_iter()
                        .flatten()
                        .max()
                        .expect("a valid answer with no proof ever given");
                    let since = asked.saturating_duration_since(proof);
                    assert!(
                        since <= MAX_STALENESS + SLACK,
                        "{name} answered valid {since:?} after the last fresh proof"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_network_cannot_undo_a_revocation_or_keep_an_edge_fresh() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let nats_port: u16 = nats
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("nats port");
    let gate = Gate::start(nats_port).await;
    let proxy = Proxy::start(&admin).await;
    let (leaked_id, leaked) = client.create(&admin, "team-a").await;
    let (_, kept) = client.create(&admin, "team-a").await;

    let (mut e1, e1_url) = support::edge_with(
        &gate.url(),
        &proxy.url(),
        &token,
        "e1",
        "local",
        MAX_STALENESS.as_secs(),
        // Every start reads its snapshot through the proxy (the attacker's), never from its own disk.
        &["--no-snapshot-copy"],
    );
    client
        .until_edges_live(&admin, 1, Duration::from_secs(20))
        .await;
    let keys = [("leaked", leaked.as_str()), ("kept", kept.as_str())];
    let mut history = History::default();
    history
        .watch(&client, &e1_url, &keys, Duration::from_millis(300))
        .await;
    assert_eq!(history.last("leaked"), Some(None), "the edge serves");
    assert!(
        proxy.state.lock().expect("lock").snapshot.is_some(),
        "the proxy recorded a snapshot from before the revocation"
    );

    // Replay: the bus is cut, the key revoked at the manager, and every read of the log answered with
    // the page recorded before.
    gate.set(false);
    proxy.set(Mode::Replay);
    let (status, body) = client
        .post(
            &format!("{admin}/v1/keys/{leaked_id}/revoke"),
            serde_json::json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    history
        .watch(&client, &e1_url, &keys, MAX_STALENESS * 2)
        .await;
    assert_eq!(history.last("leaked"), Some(Some("stale".into())));
    assert_eq!(history.last("kept"), Some(Some("stale".into())));
    assert!(proxy.counts().0 > 0, "replays were tried");

    // Drop, then hold genuine answers back past max_staleness: a late answer counts from when it was
    // asked for, so it applies the revocation but proves nothing current.
    proxy.set(Mode::Drop);
    history
        .watch(&client, &e1_url, &keys, Duration::from_secs(1))
        .await;
    proxy.set(Mode::Delay(MAX_STALENESS + Duration::from_millis(500)));
    history
        .watch(&client, &e1_url, &keys, MAX_STALENESS * 2)
        .await;
    assert_eq!(history.last("leaked"), Some(Some("revoked".into())));
    assert_eq!(history.last("kept"), Some(Some("stale".into())));

    // Everything at once, in a seeded order.
    proxy.set(Mode::Mixed);
    history
        .watch(&client, &e1_url, &keys, MAX_STALENESS * 3)
        .await;
    let (replayed, dropped) = proxy.counts();
    assert!(
        replayed > 1 && dropped > 0,
        "mixed mode replayed {replayed} and dropped {dropped}"
    );

    // Healed: the edge is fresh again, and the revocation stands.
    proxy.set(Mode::Pass);
    gate.set(true);
    let verdict = client
        .until_verdict(&e1_url, &kept, None, Duration::from_secs(20))
        .await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    history
        .watch(&client, &e1_url, &keys, Duration::from_millis(500))
        .await;
    assert_eq!(history.last("leaked"), Some(Some("revoked".into())));
    history.check(&proxy, &gate);

    // A restarted edge offered the snapshot recorded before the revocation: it never vouches for the
    // key, and starts once it gets a snapshot of its own.
    // The bus stays open: an edge takes nothing from it before it has a snapshot.
    e1.kill9();
    proxy.set(Mode::Replay);
    let (_e2, e2_url) = support::edge_with(
        &gate.url(),
        &proxy.url(),
        &token,
        "e2",
        "local",
        MAX_STALENESS.as_secs(),
        // Every start reads its snapshot through the proxy (the attacker's), never from its own disk.
        &["--no-snapshot-copy"],
    );
    let mut restarted = History::default();
    restarted
        .watch(&client, &e2_url, &keys, MAX_STALENESS)
        .await;
    assert!(
        restarted
            .answers
            .iter()
            .all(|(_, _, reason)| reason.as_deref() == Some("stale")),
        "a replayed snapshot started nothing"
    );
    proxy.set(Mode::Pass);
    let verdict = client
        .until_verdict(&e2_url, &kept, None, Duration::from_secs(20))
        .await;
    assert_eq!(verdict["valid"], true, "{verdict}");
    restarted
        .watch(&client, &e2_url, &keys, Duration::from_millis(300))
        .await;
    assert_eq!(restarted.last("leaked"), Some(Some("revoked".into())));
    restarted.check(&proxy, &gate);
}
