use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use hmac::{Hmac, Mac};
use quench_cli::embedded;
use quench_manager::{
    ManagerConfig, bootstrap,
    webhooks::{
        WebhookSettings,
        guard::{AddressGuard, Cidr},
    },
};
use quench_store::{Store, sqlite::SqliteStore};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, spawn_with};

/// A webhook receiver: records what it gets, answers 500 to the first `fail` requests.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    pub(crate) got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    pub(crate) fail: Arc<AtomicUsize>,
}

impl Receiver {
    pub(crate) async fn start(&self) -> String {
        async fn take(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let failing = r
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            r.got.lock().expect("lock").push((headers, body));
            if failing {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::NO_CONTENT
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/hooks/quench",
            listener.local_addr().expect("addr")
        );
        let app = axum::Router::new()
            .route("/hooks/quench", post(take))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Waits for `n` requests and returns them all.
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<(HeaderMap, Value)> {
        for _ in 0..500 {
            let got = self.got.lock().expect("lock").clone();
            if got.len() >= n {
                return got
                    .into_iter()
                    .map(|(h, b)| (h, serde_json::from_slice(&b).expect("json body")))
                    .collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the receiver got {} requests, not {n}",
            self.got.lock().expect("lock").len()
        );
    }
}

/// Checks `Quench-Signature: t=..,v1=..` against the raw body, as a receiver would.
fn check_signature(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let header = headers["quench-signature"].to_str().expect("ascii");
    let (t, v1) = header
        .split_once(",v1=")
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v)))
        .expect("t=..,v1=..");
    let age = quench_core::Timestamp::now().as_millis() / 1000 - t.parse::<i64>().expect("t");
    assert!((0..60).contains(&age), "a fresh timestamp");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    assert_eq!(v1, quench_core::hash::hex(&mac.finalize().into_bytes()));
}

/// Fast retries, and no address guard for loopback: these tests' receivers listen on 127.0.0.1, as
/// `--webhook-allow 127.0.0.0/8` would allow.
pub(crate) fn quick() -> ManagerConfig {
    ManagerConfig {
        webhooks: WebhookSettings {
            first_retry: Duration::from_millis(50),
            poll: Duration::from_millis(50),
            guard: AddressGuard::new(vec![Cidr::parse("127.0.0.0/8").expect("cidr")]),
            ..WebhookSettings::default()
        },
        ..ManagerConfig::default()
    }
}

pub(crate) async fn subscribe(app: &TestApp, url: &str, events: Option<Value>) -> (String, String) {
    let mut body = json!({"url": url});
    if let Some(events) = events {
        body["events"] = events;
    }
    let created = app.post("/v1/webhooks", body).await.expect(201);
    (
        created["id"].as_str().expect("id").to_owned(),
        created["secret"].as_str().expect("secret").to_owned(),
    )
}

pub(crate) async fn revoke(app: &TestApp, id: &str) {
    app.post(
        &format!("/v1/keys/{id}/revoke"),
        json!({"reason": "rotated out"}),
    )
    .await
    .expect(200);
}

#[tokio::test]
async fn revocations_and_alerts_reach_webhooks_signed() {
    let app = spawn_with(quick()).await;
    let (before, _) = app.new_key("team-a").await;
    revoke(&app, &before).await;
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let (hook, secret) = subscribe(&app, &url, None).await;
    assert!(hook.starts_with("wh_") && secret.starts_with("whsec_"));
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    let got = receiver.wait_for(1).await;
    let (headers, body) = &got[0];
    let raw = receiver.got.lock().expect("lock")[0].1.clone();
    check_signature(&secret, headers, &raw);
    assert_eq!(headers["quench-webhook"], hook.as_str());
    assert_eq!(headers["quench-event"], "key.revoked");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["type"], "key.revoked");
    assert_eq!(headers["quench-delivery"], body["id"].as_str().expect("id"));
    let revocations = body["data"]["revocations"].as_array().expect("list");
    assert_eq!(
        revocations.len(),
        1,
        "only what happened after subscribing: {body}"
    );
    assert_eq!(revocations[0]["key_id"], id.as_str());
    assert_eq!(revocations[0]["owner"], "team-a");
    assert_eq!(revocations[0]["reason"], "rotated out");

    let edge = app.token_with(&["edge"], None).await;
    let report = json!({"edge": "edge-7", "region": "eu", "alerts": [{
        "id": "0123456789abcdef0123456789abcdef", "key_id": id, "rule": "many-addresses",
        "kind": "distinct_addresses", "raised_at": "2026-11-22T10:00:00Z", "window_seconds": 60,
        "measures": {"requests": 90.0, "distinct_addresses": 70.0, "usual": 1.0, "history_windows": 12}}]});
    app.send(Method::POST, "/v1/alerts", Some(&edge), Some(report))
        .await
        .expect(200);
    let got = receiver.wait_for(2).await;
    let (headers, body) = &got[1];
    assert_eq!(headers["quench-event"], "alert.raised");
    assert_eq!(body["data"]["alerts"][0]["rule"], "many-addresses");
    assert_eq!(body["data"]["alerts"][0]["key_id"], id.as_str());
    assert_eq!(body["data"]["alerts"][0]["edge"], "edge-7");

    let listed = app.get("/v1/webhooks").await.expect(200);
    assert_eq!(listed["webhooks"][0]["id"], hook.as_str());
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );
    let deliveries = app
        .get(&format!("/v1/webhooks/{hook}/deliveries"))
        .await
        .expect(200);
    let statuses: Vec<&str> = deliveries["deliveries"]
        .as_array()
        .expect("list")
        .iter()
        .map(|d| d["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, ["delivered", "delivered"]);
    let metrics = app.get("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("quench_webhook_deliveries_total 2")
    );
}

#[tokio::test]
async fn failing_deliveries_are_retried_then_given_up() {
    let mut config = quick();
    config.webhooks.give_up_after = Duration::from_millis(600);
    let app = spawn_with(config).await;
    let flaky = Receiver::default();
    flaky.fail.store(2, Ordering::SeqCst);
    let (flaky_hook, _) = subscribe(&app, &flaky.start().await, None).await;
    // Nothing listens here: every attempt fails until the delivery is given up.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/gone", listener.local_addr().expect("addr"))
    };
    let (dead_hook, _) = subscribe(&app, &closed, Some(json!(["key.revoked"]))).await;
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    let got = flaky.wait_for(3).await;
    assert_eq!(got[0].1, got[2].1, "a retry sends the same document");
    let mut statuses = (String::new(), String::new());
    for _ in 0..300 {
        let status = |hook: String| {
            let app = &app;
            async move {
                let list = app
                    .get(&format!("/v1/webhooks/{hook}/deliveries"))
                    .await
                    .expect(200);
                (
                    list["deliveries"][0]["status"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    list["deliveries"][0].clone(),
                )
            }
        };
        let (flaky_status, flaky_delivery) = status(flaky_hook.clone()).await;
        let (dead_status, dead_delivery) = status(dead_hook.clone()).await;
        statuses = (flaky_status, dead_status);
        if statuses.0 == "delivered" && statuses.1 == "failed" {
            assert_eq!(flaky_delivery["attempts"], 3);
            assert!(dead_delivery["attempts"].as_u64().expect("attempts") >= 2);
            assert!(dead_delivery["last_error"].is_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, ("delivered".into(), "failed".into()));
    let metrics = app.get("/metrics").await.body;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains("quench_webhook_given_up_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("quench_webhook_pending 0"), "{metrics}");
}

#[tokio::test]
async fn owner_webhooks_hear_only_their_keys_and_input_is_checked() {
    let app = spawn_with(quick()).await;
    let receiver = Receiver::default();
    let url = receiver.start().await;
    let team_a = app
        .token_with(&["keys:write", "keys:read"], Some("team-a"))
        .await;
    let created = app
        .send(
            Method::POST,
            "/v1/webhooks",
            Some(&team_a),
            Some(json!({"url": url, "events": ["key.revoked"]})),
        )
        .await
        .expect(201);
    assert_eq!(created["owner"], "team-a");
    let (b, _) = app.new_key("team-b").await;
    let (a, _) = app.new_key("team-a").await;
    revoke(&app, &b).await;
    revoke(&app, &a).await;
    let got = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.got.lock().expect("lock").len(), 1);
    let revocations = &got[0].1["data"]["revocations"];
    assert_eq!(revocations.as_array().expect("list").len(), 1);
    assert_eq!(revocations[0]["key_id"], a.as_str());

    // Another owner's webhooks are invisible to a confined token.
    let (admin_hook, _) = subscribe(&app, &url, None).await;
    let mine = app
        .send(Method::GET, "/v1/webhooks", Some(&team_a), None)
        .await
        .expect(200);
    assert_eq!(mine["webhooks"].as_array().expect("list").len(), 1);
    app.send(
        Method::DELETE,
        &format!("/v1/webhooks/{admin_hook}"),
        Some(&team_a),
        None,
    )
    .await
    .expect(404);
    app.send(
        Method::POST,
        "/v1/webhooks",
        Some(&team_a),
        Some(json!({"url": url, "owner": "team-b"})),
    )
    .await
    .expect(403);
    for body in [
        json!({"url": "ftp://example.invalid/x"}),
        json!({"url": "not a url"}),
        json!({"url": "https://example.invalid/x", "events": ["key.created"]}),
        json!({"url": "https://example.invalid/x", "events": []}),
        json!({"url": format!("https://example.invalid/{}", "a".repeat(3000))}),
        json!({"url": "https://example.invalid/x", "color": "red"}),
    ] {
        app.post("/v1/webhooks", body).await.expect(422);
    }
    let deleted = app
        .send(
            Method::DELETE,
            &format!("/v1/webhooks/{admin_hook}"),
            Some(&app.token),
            None,
        )
        .await;
    assert_eq!(deleted.status.as_u16(), 204);
    app.send(
        Method::DELETE,
        "/v1/webhooks/wh_unknown",
        Some(&app.token),
        None,
    )
    .await
    .expect(404);
    app.get("/v1/webhooks/wh_unknown/deliveries")
        .await
        .expect(404);
}

#[tokio::test]
async fn pending_deliveries_survive_a_manager_restart() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("quench.db");
    let receiver = Receiver::default();
    receiver.fail.store(usize::MAX, Ordering::SeqCst);
    let url = receiver.start().await;
    let start = |token: Option<String>| {
        let path = path.clone();
        let dir = dir.path().to_owned();
        async move {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("store"));
            let token = match token {
                Some(token) => token,
                None => bootstrap::first_token(&*store, &dir)
                    .await
                    .expect("bootstrap")
                    .expect("token"),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let cancel = CancellationToken::new();
            let running = embedded::start(
                store,
                embedded::in_process_bus(),
                quick(),
                listener,
                None,
                cancel.clone(),
            )
            .await
            .expect("start");
            (base, token, cancel, running)
        }
    };
    let http = reqwest::Client::new();
    let (base, token, cancel, running) = start(None).await;
    let call = |base: String, method: Method, path: &'static str, body: Option<Value>| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let mut request = http
                .request(method, format!("{base}{path}"))
                .bearer_auth(&token);
            if let Some(body) = body {
                request = request.json(&body);
            }
            request
                .send()
                .await
                .expect("request")
                .json::<Value>()
                .await
                .expect("json")
        }
    };
    call(
        base.clone(),
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": url})),
    )
    .await;
    let key = call(
        base.clone(),
        Method::POST,
        "/v1/keys",
        Some(json!({"owner": "team-a"})),
    )
    .await;
    let id = key["id"].as_str().expect("id").to_owned();
    let revoked = http
        .post(format!("{base}/v1/keys/{id}/revoke?wait=none"))
        .bearer_auth(&token)
        .json(&json!({"reason": "leaked"}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let first = receiver.wait_for(1).await;
    cancel.cancel();
    running.finished().await;

    // The receiver recovers while no manager runs; the next manager delivers what is pending.
    receiver.fail.store(0, Ordering::SeqCst);
    let (_base, _, cancel, running) = start(Some(token.clone())).await;
    let seen = receiver.got.lock().expect("lock").len();
    let got = receiver.wait_for(seen + 1).await;
    let last = got.last().expect("delivered");
    assert_eq!(last.1, first[0].1, "the same delivery, sent again");
    assert_eq!(last.1["data"]["revocations"][0]["key_id"], id.as_str());
    cancel.cancel();
    running.finished().await;
}
