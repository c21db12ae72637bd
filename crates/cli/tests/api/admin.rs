use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_event_log_pages_in_sequence_order() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    app.new_key("team-a").await;
    app.post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "x"}))
        .await
        .expect(200);
    let page = app.get("/v1/events").await.expect(200);
    let events = page["events"].as_array().expect("events");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(events[0]["type"], "key_created");
    assert_eq!(events[2]["type"], "key_revoked");
    assert_eq!(events[2]["id"], id.as_str());
    let later = app.get("/v1/events?after=1&limit=1").await.expect(200);
    assert_eq!(later["events"].as_array().expect("events").len(), 1);
    assert_eq!(later["events"][0]["seq"], 2);
    assert_eq!(
        app.get("/v1/events?after=3").await.expect(200)["events"],
        json!([])
    );
    for bad in ["after=-1", "after=x", "limit=0", "limit=5000"] {
        app.get(&format!("/v1/events?{bad}")).await.expect(422);
    }
}

#[tokio::test]
async fn edges_report_their_progress() {
    let app = spawn_app().await;
    app.new_key("team-a").await;
    let edges = app.get("/v1/edges").await.expect(200);
    assert_eq!(edges["head_seq"], 1);
    let edge = &edges["edges"][0];
    assert_eq!(edge["id"], "embedded");
    assert_eq!(edge["region"], "local");
    assert_eq!(edge["applied_seq"], 1);
    assert_eq!(edge["lag"], 0);
    assert_eq!(edge["live"], true);
    assert!(edge["last_contact"].is_string());
}

#[tokio::test]
async fn every_mutation_is_audited_with_who_and_from_where() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    app.post(
        &format!("/v1/keys/{id}/revoke"),
        json!({"reason": "compromised laptop"}),
    )
    .await
    .expect(200);
    let page = app.get(&format!("/v1/audit?key_id={id}")).await.expect(200);
    let records = page["records"].as_array().expect("records");
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, vec!["key.revoke", "key.create"]);
    assert_eq!(records[0]["reason"], "compromised laptop");
    assert_eq!(records[0]["source"], "127.0.0.1");
    assert!(
        records[0]["principal"]
            .as_str()
            .expect("principal")
            .starts_with("token:")
    );
    let reader = app.token_with(&["keys:read"], None).await;
    app.send(Method::GET, "/v1/audit", Some(&reader), None)
        .await
        .expect(403);
    let all = app.get("/v1/audit?limit=10").await.expect(200);
    assert!(
        all["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["action"] == "token.create")
    );
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    app.post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "x"}))
        .await
        .expect(200);
    let health = app
        .send(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["head_seq"], 2);
    assert_eq!(health["live_edges"], 1);
    let metrics = app.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().expect("text").to_owned();
    for line in [
        "quench_keys_created_total 1",
        "quench_keys_revoked_total 1",
        "quench_log_head_seq 2",
        "quench_live_edges 1",
        "quench_revocation_waits_complete_total 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let edge_metrics = app
        .http
        .get(format!("{}/metrics", app.edge))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        edge_metrics.contains("quench_edge_applied_seq 2"),
        "{edge_metrics}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let missing = app.get("/v2/keys").await;
    assert_eq!(missing.expect(404)["error"]["code"], "not_found");
    let wrong = app
        .send(Method::DELETE, "/v1/keys", Some(&app.token), None)
        .await;
    assert_eq!(wrong.expect(405)["error"]["code"], "method_not_allowed");
}

/// The OpenAPI document is generated from the handlers; this snapshot shows every change to the
/// contract in review. Regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p quench-manager openapi`.
#[tokio::test]
async fn openapi_document_matches_the_snapshot() {
    let app = spawn_app().await;
    let served = app
        .send(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../manager/tests/snapshots/openapi.json");
    let rendered = serde_json::to_string_pretty(&served).expect("json") + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, &rendered).expect("write snapshot");
    }
    let stored =
        std::fs::read_to_string(&path).expect("snapshot exists; run with UPDATE_SNAPSHOTS=1");
    let stored: Value = serde_json::from_str(&stored).expect("snapshot is JSON");
    assert_eq!(
        served, stored,
        "the API contract changed; review and regenerate the snapshot"
    );
    for path in [
        "/v1/keys",
        "/v1/keys/{id}",
        "/v1/keys/{id}/revoke",
        "/v1/keys/{id}/rotate",
        "/v1/revocations",
        "/v1/tokens",
        "/v1/events",
        "/v1/edges",
        "/v1/snapshot",
        "/v1/signing-keys",
        "/v1/audit",
        "/healthz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(
            served["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
}

fn trust_from(keys: &Value) -> quench_core::sign::Trust {
    let keys = keys["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            quench_core::sign::PublicKey::parse(k["public_key"].as_str().expect("hex"))
                .expect("key")
        })
        .collect();
    quench_core::sign::Trust::new(keys)
}

async fn signed_get(
    app: &crate::helpers::TestApp,
    token: &str,
    path: &str,
) -> (Vec<u8>, quench_core::sign::Signature) {
    let response = app
        .http
        .get(format!("{}{path}", app.admin))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let signature = response.headers()["quench-signature"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body = response.bytes().await.expect("body").to_vec();
    (
        body,
        quench_core::sign::Signature::decode(&signature).expect("signature"),
    )
}

#[tokio::test]
async fn edges_get_signed_snapshots_and_event_pages() {
    use quench_core::sign::Purpose;
    let app = spawn_app().await;
    let (id, key) = app.new_key("team-a").await;
    app.post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "x"}))
        .await
        .expect(200);
    let edge = app.token_with(&["edge"], None).await;
    let keys = app
        .send(Method::GET, "/v1/signing-keys", Some(&edge), None)
        .await
        .expect(200);
    assert_eq!(keys["keys"][0]["current"], true);
    let trust = trust_from(&keys);

    let nonce = quench_core::sign::Nonce::random().expect("random");
    let response = app
        .http
        .get(format!("{}/v1/snapshot?nonce={nonce}", app.admin))
        .bearer_auth(&edge)
        .send()
        .await
        .expect("snapshot");
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.bytes().await.expect("body").to_vec();
    let mut reader = quench_bus::SnapshotReader::new();
    reader.feed(&body).expect("well-formed lines");
    let mut again = quench_bus::SnapshotReader::new();
    again.feed(&body).expect("well-formed lines");
    let (snapshot, fresh) = again
        .finish(&trust, &nonce)
        .expect("the snapshot is signed");
    assert_eq!(snapshot.seq.get(), 2);
    assert_eq!(fresh.head.get(), 2);
    assert!(snapshot.keys[0].revoked);
    let other = quench_core::sign::Nonce::random().expect("random");
    assert!(
        reader.finish(&trust, &other).is_err(),
        "a snapshot answers the nonce it was asked with, no other"
    );
    let mut tampered = quench_bus::SnapshotReader::new();
    tampered
        .feed(
            &String::from_utf8_lossy(&body)
                .replacen("\"revoked\":true", "\"revoked\":false", 1)
                .into_bytes(),
        )
        .expect("still well-formed");
    assert!(
        tampered.finish(&trust, &nonce).is_err(),
        "an altered snapshot is refused"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains(&key[13..]),
        "a snapshot carries verifiers, never secrets"
    );

    let (body, signature) =
        signed_get(&app, &edge, &format!("/v1/events?after=1&nonce={nonce}")).await;
    trust
        .verify(Purpose::Page, &body, &signature)
        .expect("the page is signed");
    let page: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(page["events"][0]["type"], "key_revoked");
    assert_eq!(page["head"], 2);
    assert_eq!(page["nonce"], nonce.to_string());
    let sealed = quench_bus::SignedPage::from_parts(body, signature);
    assert!(sealed.open(&trust, &nonce).is_ok());
    assert!(
        sealed.open(&trust, &other).is_err(),
        "a page answers the nonce it was asked with, no other"
    );
    app.send(Method::GET, "/v1/events?nonce=xyz", Some(&edge), None)
        .await
        .expect(422);
    app.send(Method::GET, "/v1/snapshot?nonce=00", Some(&edge), None)
        .await
        .expect(422);

    let reader = app.token_with(&["keys:read"], None).await;
    app.send(Method::GET, "/v1/snapshot", Some(&reader), None)
        .await
        .expect(403);
    app.send(Method::GET, "/v1/signing-keys", Some(&reader), None)
        .await
        .expect(200);
    let reporter = app.token_with(&["leaks:report"], None).await;
    app.send(Method::GET, "/v1/signing-keys", Some(&reporter), None)
        .await
        .expect(403);
    app.send(Method::GET, "/v1/snapshot", None, None)
        .await
        .expect(401);
}

#[tokio::test]
async fn edges_register_their_acknowledgement_keys() {
    let app = spawn_app().await;
    let edge = app.token_with(&["edge"], None).await;
    let key = quench_core::sign::Signer::generate()
        .expect("random")
        .public()
        .to_hex();
    let ok = app
        .send(
            Method::POST,
            "/v1/edges",
            Some(&edge),
            Some(json!({"id": "edge-eu-1", "region": "eu", "public_key": key})),
        )
        .await;
    assert_eq!(ok.status, 204);
    for body in [
        json!({"id": "edge-eu-1", "region": "eu", "public_key": "00"}),
        json!({"id": "bad id", "region": "eu", "public_key": key}),
        json!({"id": "e", "region": "", "public_key": key}),
        json!({"id": "e", "region": "eu"}),
        json!({"id": "e", "region": "eu", "public_key": key, "extra": true}),
    ] {
        app.send(Method::POST, "/v1/edges", Some(&edge), Some(body))
            .await
            .expect(422);
    }
    let reader = app.token_with(&["keys:read"], None).await;
    app.send(
        Method::POST,
        "/v1/edges",
        Some(&reader),
        Some(json!({"id": "e", "region": "eu", "public_key": key})),
    )
    .await
    .expect(403);
}
