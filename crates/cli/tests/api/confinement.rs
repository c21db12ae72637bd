//! Confinement and edge identity, attacked through the real entry points: HTTP for tokens and
//! registrations, the manager's own bus for acknowledgements.

use std::time::{Duration, Instant};

use futures::StreamExt;
use quench_bus::{Ack, EdgeRegistration, SignedAck};
use quench_core::{
    Seq, Timestamp,
    sign::{
        Signer,
        ack::{self as ack_mac, AckKey},
    },
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_with};

const SOON: Duration = Duration::from_secs(10);

fn new_key() -> Signer {
    Signer::generate().expect("random")
}

/// Registers as an edge does: its public key, and the acknowledgement MAC key with its proof.
async fn register(app: &TestApp, token: &str, id: &str, region: &str, key: &Signer) -> u16 {
    let body = serde_json::to_value(EdgeRegistration::of(id, region, key)).expect("json");
    app.send(Method::POST, "/v1/edges", Some(token), Some(body))
        .await
        .status
        .as_u16()
}

fn ack(edge: &str, region: &str, applied: u64, at: Timestamp) -> Ack {
    Ack {
        edge: edge.into(),
        region: region.into(),
        applied: Seq::new(applied),
        at,
    }
}

/// An acknowledgement signed with the edge's Ed25519 key (as edges before MAC'd ones sent them).
fn signed_ack(key: &Signer, edge: &str, region: &str, applied: u64, at: Timestamp) -> SignedAck {
    SignedAck::seal_ack(key, &ack(edge, region, applied, at))
}

/// An acknowledgement as edges send it: MAC'd with the key derived from `key`.
fn maced_ack(key: &Signer, edge: &str, region: &str, applied: u64, at: Timestamp) -> SignedAck {
    SignedAck::mac_ack(key.id(), &AckKey::of(key), &ack(edge, region, applied, at))
}

async fn send_ack(app: &TestApp, ack: &SignedAck) {
    app._running.manager.bus.ack(ack).await.expect("bus");
}

/// The edge as `GET /v1/edges` shows it, if listed.
async fn edge_view(app: &TestApp, id: &str) -> Option<Value> {
    let list = app.get("/v1/edges").await.expect(200);
    list["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
}

async fn until_live(app: &TestApp, id: &str) -> Value {
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(view) = edge_view(app, id).await
            && view["live"] == true
        {
            return view;
        }
        assert!(Instant::now() < deadline, "edge {id} never became live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn acks_refused(app: &TestApp) -> u64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix("quench_acks_refused_total "))
        .and_then(|v| v.parse().ok())
        .expect("the counter is exported")
}

/// Waits until the manager has refused at least `more` acknowledgements beyond `before`.
async fn until_refused(app: &TestApp, before: u64, more: u64) {
    let deadline = Instant::now() + SOON;
    while acks_refused(app).await < before + more {
        assert!(
            Instant::now() < deadline,
            "the acknowledgements were never processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_confined_token_is_refused_on_every_edge_endpoint() {
    let app = spawn_app().await;
    app.new_key("team-b").await;
    let confined = app.token_with(&["admin"], Some("team-a")).await;
    let key = new_key();
    let registration = json!({"id": "rogue", "region": "eu", "public_key": key.public().to_hex()});
    for (method, path, body) in [
        (Method::GET, "/v1/snapshot", None),
        (Method::GET, "/v1/events", None),
        (Method::GET, "/v1/events?after=0", None),
        (Method::GET, "/v1/usage-policy", None),
        (Method::POST, "/v1/edges", Some(registration.clone())),
        (
            Method::POST,
            "/v1/alerts",
            Some(json!({"edge": "embedded", "region": "local", "alerts": []})),
        ),
        (
            Method::POST,
            "/v1/edges/embedded/rotate",
            Some(json!({"public_key": key.public().to_hex()})),
        ),
    ] {
        let reply = app.send(method, path, Some(&confined), body).await;
        assert_eq!(reply.status, 403, "{path}: {}", reply.body);
    }
    // Its admin power over its own owner is intact.
    let created = app
        .send(Method::POST, "/v1/keys", Some(&confined), Some(json!({})))
        .await
        .expect(201);
    assert_eq!(created["owner"], "team-a");
    // An unconfined edge token is served: the 403s above are confinement, not scope.
    let edge = app.token_with(&["edge"], None).await;
    app.send(Method::GET, "/v1/events", Some(&edge), None)
        .await
        .expect(200);
    assert_eq!(register(&app, &edge, "rogue", "eu", &key).await, 204);
}

#[tokio::test]
async fn an_edge_token_cannot_be_minted_confined() {
    let app = spawn_app().await;
    for scopes in [json!(["edge"]), json!(["keys:read", "edge"])] {
        let reply = app
            .post("/v1/tokens", json!({"scopes": scopes, "owner": "team-a"}))
            .await;
        assert_eq!(reply.status, 422, "{}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .expect("message")
                .contains("edge"),
            "{}",
            reply.body
        );
    }
    // A confined admin cannot hand one out either, and what it can hand out has no edge power.
    let confined = app.token_with(&["admin"], Some("team-a")).await;
    app.send(
        Method::POST,
        "/v1/tokens",
        Some(&confined),
        Some(json!({"scopes": ["edge"]})),
    )
    .await
    .expect(403);
    let handed = app
        .send(
            Method::POST,
            "/v1/tokens",
            Some(&confined),
            Some(json!({"scopes": ["admin"]})),
        )
        .await
        .expect(201);
    assert_eq!(handed["owner"], "team-a");
    let handed = handed["token"].as_str().expect("token");
    app.send(Method::GET, "/v1/snapshot", Some(handed), None)
        .await
        .expect(403);
    let key = new_key();
    assert_eq!(register(&app, handed, "embedded", "local", &key).await, 403);
}

#[tokio::test]
async fn another_key_cannot_take_over_an_edges_registration() {
    let app = spawn_app().await;
    let edge = app.token_with(&["edge"], None).await;
    let attacker = new_key();

    // The attack: an edge token registers its own key under the embedded edge's id.
    let hijack = app
        .send(
            Method::POST,
            "/v1/edges",
            Some(&edge),
            Some(json!({"id": "embedded", "region": "local", "public_key": attacker.public().to_hex()})),
        )
        .await;
    assert_eq!(hijack.status, 409, "{}", hijack.body);
    assert!(
        hijack.body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("/v1/edges/embedded/rotate"),
        "{}",
        hijack.body
    );
    // Its acknowledgements claiming to be `embedded` do not count.
    let before = acks_refused(&app).await;
    send_ack(
        &app,
        &signed_ack(&attacker, "embedded", "local", 1_000, Timestamp::now()),
    )
    .await;
    until_refused(&app, before, 1).await;
    let head = app.get("/v1/edges").await.expect(200)["head_seq"]
        .as_u64()
        .expect("head");
    let view = edge_view(&app, "embedded").await.expect("listed");
    assert!(view["applied_seq"].as_u64().expect("seq") <= head, "{view}");

    // The real edge's acknowledgements still count: a revocation is confirmed on it.
    let (id, _) = app.new_key("team-a").await;
    let revoked = app
        .post(
            &format!("/v1/keys/{id}/revoke?wait=all&timeout_ms=10000"),
            json!({"reason": "leaked"}),
        )
        .await
        .expect(200);
    let propagation = &revoked["propagation"];
    assert_eq!(propagation["complete"], true, "{propagation}");
    let embedded = propagation["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["edge"] == "embedded")
        .expect("the embedded edge was waited for");
    assert_eq!(embedded["confirmed"], true);

    // The same key again is fine (an edge restarting); another key is not.
    let mine = new_key();
    assert_eq!(register(&app, &edge, "edge-x", "eu", &mine).await, 204);
    assert_eq!(register(&app, &edge, "edge-x", "eu", &mine).await, 204);
    assert_eq!(register(&app, &edge, "edge-x", "eu", &attacker).await, 409);
}

#[tokio::test]
async fn only_an_unconfined_admin_rotates_an_edges_key_and_it_is_audited() {
    let app = spawn_app().await;
    let edge = app.token_with(&["edge"], None).await;
    let lost = new_key();
    let replacement = new_key();
    assert_eq!(register(&app, &edge, "edge-x", "eu", &lost).await, 204);
    let body = json!({"public_key": replacement.public().to_hex()});
    let admin = app.token_with(&["admin"], None).await;
    let owner_admin = app.token_with(&["admin"], Some("team-a")).await;
    for token in [&edge, &owner_admin] {
        app.send(
            Method::POST,
            "/v1/edges/edge-x/rotate",
            Some(token),
            Some(body.clone()),
        )
        .await
        .expect(403);
    }
    app.post("/v1/edges/edge-x/rotate", json!({"public_key": "00"}))
        .await
        .expect(422);
    app.post("/v1/edges/nobody/rotate", body.clone())
        .await
        .expect(404);
    app.post("/v1/edges/bad%20id/rotate", body.clone())
        .await
        .expect(404);

    let rotated = app
        .send(
            Method::POST,
            "/v1/edges/edge-x/rotate",
            Some(&admin),
            Some(body),
        )
        .await
        .expect(200);
    assert_eq!(rotated["id"], "edge-x");
    assert_eq!(rotated["region"], "eu");
    assert_eq!(rotated["replaced_key_id"], lost.id().as_str());
    assert_eq!(rotated["key_id"], replacement.id().as_str());
    let audit = app.get("/v1/audit?limit=5").await.expect(200);
    let record = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|r| r["action"] == "edge.rotate")
        .expect("the rotation is audited");
    assert!(
        record["principal"]
            .as_str()
            .expect("principal")
            .starts_with("token:")
    );
    assert!(
        record["reason"]
            .as_str()
            .expect("reason")
            .contains(lost.id().as_str())
    );

    // The lost key no longer speaks for the edge; the new one does, and registers idempotently.
    let before = acks_refused(&app).await;
    send_ack(
        &app,
        &signed_ack(&lost, "edge-x", "eu", 0, Timestamp::now()),
    )
    .await;
    until_refused(&app, before, 1).await;
    assert!(edge_view(&app, "edge-x").await.is_none());
    send_ack(
        &app,
        &signed_ack(&replacement, "edge-x", "eu", 0, Timestamp::now()),
    )
    .await;
    until_live(&app, "edge-x").await;
    assert_eq!(
        register(&app, &edge, "edge-x", "eu", &replacement).await,
        204
    );
    assert_eq!(register(&app, &edge, "edge-x", "eu", &lost).await, 409);
}

#[tokio::test]
async fn a_mac_key_for_a_real_edge_needs_that_edges_signature() {
    let app = spawn_app().await;
    let edge = app.token_with(&["edge"], None).await;
    let real = new_key();
    assert_eq!(register(&app, &edge, "edge-m", "eu", &real).await, 204);

    // A holder of an edge token knows the real edge's public key (it is logged and listed) and
    // presents it with a MAC key of its own, proven by its own key, or with no proof at all.
    let thief = new_key();
    let thief_mac = AckKey::of(&thief);
    let mut hijack = EdgeRegistration::of("edge-m", "eu", &real);
    hijack.ack_key = Some(thief_mac.to_hex());
    hijack.ack_key_proof = Some(ack_mac::prove(&thief, "edge-m", &thief_mac).encode());
    let mut unproven = hijack.clone();
    unproven.ack_key_proof = None;
    for body in [hijack, unproven] {
        let refused = app
            .send(
                Method::POST,
                "/v1/edges",
                Some(&edge),
                Some(serde_json::to_value(body).expect("json")),
            )
            .await
            .expect(422);
        assert!(refused.to_string().contains("ack_key"), "{refused}");
    }

    // Its acknowledgements in the real edge's name, MAC'd with its key, are refused and never make the
    // edge live; the real edge's are accepted.
    let before = acks_refused(&app).await;
    let forged = SignedAck::mac_ack(
        real.id(),
        &thief_mac,
        &ack("edge-m", "eu", 0, Timestamp::now()),
    );
    send_ack(&app, &forged).await;
    until_refused(&app, before, 1).await;
    assert!(edge_view(&app, "edge-m").await.is_none());
    send_ack(&app, &maced_ack(&real, "edge-m", "eu", 0, Timestamp::now())).await;
    until_live(&app, "edge-m").await;
}

#[tokio::test]
async fn a_replayed_ack_does_not_keep_a_dead_edge_live() {
    let liveness = Duration::from_secs(2);
    let app = spawn_with(quench_manager::ManagerConfig {
        edge_liveness: liveness,
        ..Default::default()
    })
    .await;
    let edge = app.token_with(&["edge"], None).await;
    let key = new_key();
    assert_eq!(register(&app, &edge, "e-dead", "eu", &key).await, 204);

    // The edge acknowledges once; an attacker on the bus captures that acknowledgement.
    let mut wire = app._running.manager.bus.acks().await.expect("subscribe");
    send_ack(&app, &maced_ack(&key, "e-dead", "eu", 0, Timestamp::now())).await;
    let captured = loop {
        let sealed = tokio::time::timeout(SOON, wire.next())
            .await
            .expect("an ack in time")
            .expect("stream");
        if sealed.signer() == key.id() {
            break sealed;
        }
    };
    until_live(&app, "e-dead").await;

    // The edge dies; the attacker replays the captured acknowledgement past the liveness window.
    let before = acks_refused(&app).await;
    let until = Instant::now() + liveness + Duration::from_secs(1);
    let mut replays = 0;
    while Instant::now() < until {
        send_ack(&app, &captured).await;
        replays += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_refused(&app, before, replays).await;
    let view = edge_view(&app, "e-dead").await.expect("listed");
    assert_eq!(view["live"], false, "{view}");

    // Acknowledgements stamped far from the manager's clock are refused outright, either way.
    for (id, at) in [
        ("e-ahead", Timestamp::now().as_millis() + 3_600_000),
        ("e-behind", Timestamp::now().as_millis() - 3_600_000),
    ] {
        let key = new_key();
        assert_eq!(register(&app, &edge, id, "eu", &key).await, 204);
        let before = acks_refused(&app).await;
        send_ack(
            &app,
            &signed_ack(&key, id, "eu", 0, Timestamp::from_millis(at)),
        )
        .await;
        until_refused(&app, before, 1).await;
        assert!(edge_view(&app, id).await.is_none(), "{id} was counted");
    }
}

#[tokio::test]
async fn a_region_that_would_forge_metrics_is_refused_and_never_exported() {
    let app = spawn_app().await;
    let edge = app.token_with(&["edge"], None).await;
    let key = new_key();
    let injection = "eu\"} 1\nquench_injected{x=\"1";
    assert_eq!(register(&app, &edge, "e-label", injection, &key).await, 422);
    assert_eq!(
        register(&app, &edge, "e\"}{label", "eu", &key).await,
        422,
        "an edge id is checked the same way"
    );
    assert_eq!(register(&app, &edge, "e-label", "eu", &key).await, 204);

    // Registered with a clean region, the edge then signs acknowledgements naming a hostile one.
    let before = acks_refused(&app).await;
    send_ack(
        &app,
        &signed_ack(&key, "e-label", injection, 0, Timestamp::now()),
    )
    .await;
    until_refused(&app, before, 1).await;
    assert!(edge_view(&app, "e-label").await.is_none());

    send_ack(
        &app,
        &signed_ack(&key, "e-label", "eu", 0, Timestamp::now()),
    )
    .await;
    until_live(&app, "e-label").await;
    let metrics = app
        .http
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("quench_edge_lag_events{edge=\"e-label\",region=\"eu\"}"));
    assert!(!metrics.contains("quench_injected"), "{metrics}");
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("quench_"), "{line:?}");
    }
}
