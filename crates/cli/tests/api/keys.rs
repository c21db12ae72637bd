use std::collections::HashSet;

use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn create_shows_the_key_once_and_never_a_secret_or_hash_again() {
    let app = spawn_app().await;
    let created = app
        .create_key(json!({
            "owner": "team-a", "name": "ci deploy", "apis": ["orders"], "scopes": ["read", "write"],
            "expires_in": 3600, "metadata": {"ticket": "SEC-1"}
        }))
        .await;
    let key = created["key"].as_str().expect("plaintext key");
    let id = created["id"].as_str().expect("id");
    assert!(key.starts_with(&format!("qk_{id}")));
    assert_eq!(created["status"], "active");
    assert_eq!(created["owner"], "team-a");
    assert_eq!(created["scopes"], json!(["read", "write"]));
    assert_eq!(created["metadata"]["ticket"], "SEC-1");
    assert!(created["expires_at"].is_string());
    assert_eq!(created["propagation"]["complete"], true);

    let shown = app.get(&format!("/v1/keys/{id}")).await.expect(200);
    let listed = app.get("/v1/keys").await.expect(200);
    for text in [shown.to_string(), listed.to_string()] {
        assert!(!text.contains(&key[13..]), "secret leaked: {text}");
        assert!(!text.contains("sha256$"), "hash leaked: {text}");
        assert!(!text.contains("\"key\""), "key field leaked: {text}");
    }
    assert_eq!(shown["hashing"], "sha256");

    let verdict = app.verify(key, Some("orders"), Some("write")).await;
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["key_id"], id);
    assert_eq!(verdict["owner"], "team-a");
}

#[tokio::test]
async fn the_edge_refuses_a_revoked_key_before_the_revoke_call_returns() {
    let app = spawn_app().await;
    let (id, key) = app.new_key("team-a").await;
    assert_eq!(app.verify(&key, None, None).await["valid"], true);
    let revoked = app
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({"reason": "leaked in a public repo"}),
        )
        .await
        .expect(200);
    // No sleep, no retry: the answer was already enforced when the call returned.
    let verdict = app.verify(&key, None, None).await;
    assert_eq!(verdict["valid"], false);
    assert_eq!(verdict["reason"], "revoked");
    assert_eq!(revoked["key"]["status"], "revoked");
    assert_eq!(revoked["already_revoked"], false);
    let propagation = &revoked["propagation"];
    assert_eq!(propagation["complete"], true);
    assert_eq!(propagation["edges"][0]["edge"], "embedded");
    assert_eq!(propagation["edges"][0]["confirmed"], true);
    assert!(propagation["edges"][0]["latency_ms"].is_number());
}

#[tokio::test]
async fn revocation_is_idempotent_and_unknown_keys_are_404() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    let first = app
        .post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "first"}))
        .await
        .expect(200);
    let again = app
        .post(
            &format!("/v1/keys/{id}/revoke"),
            json!({"reason": "second"}),
        )
        .await
        .expect(200);
    assert_eq!(again["already_revoked"], true);
    assert_eq!(again["key"]["revoked_at"], first["key"]["revoked_at"]);
    assert_eq!(again["key"]["revoked_reason"], "first");
    let missing = app
        .post("/v1/keys/0000000000/revoke", json!({"reason": "x"}))
        .await;
    assert_eq!(missing.expect(404)["error"]["code"], "not_found");
    app.post("/v1/keys/not-an-id/revoke", json!({"reason": "x"}))
        .await
        .expect(404);
}

#[tokio::test]
async fn revoke_takes_wait_none_and_refuses_bad_wait_options() {
    let app = spawn_app().await;
    let (id, key) = app.new_key("team-a").await;
    let quick = app
        .post(
            &format!("/v1/keys/{id}/revoke?wait=none"),
            json!({"reason": "x"}),
        )
        .await
        .expect(200);
    assert!(quick.get("propagation").is_none());
    // Enforced promptly even when not waited for.
    let mut refused = false;
    for _ in 0..100 {
        if app.verify(&key, None, None).await["reason"] == "revoked" {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(refused);
    let (other, _) = app.new_key("team-a").await;
    for query in ["wait=some", "timeout_ms=600000", "timeout_ms=-1", "bogus=1"] {
        let reply = app
            .post(
                &format!("/v1/keys/{other}/revoke?{query}"),
                json!({"reason": "x"}),
            )
            .await;
        assert_eq!(
            reply.expect(422)["error"]["code"],
            "invalid_request",
            "{query}"
        );
    }
    // None of those changed the key.
    assert_eq!(
        app.get(&format!("/v1/keys/{other}")).await.expect(200)["status"],
        "active"
    );
}

#[tokio::test]
async fn revoke_requires_a_reason() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    for body in [
        json!({}),
        json!({"reason": ""}),
        json!({"reason": "   "}),
        json!({"reason": "x".repeat(501)}),
        json!({"reason": "a\u{0007}b"}),
    ] {
        app.post(&format!("/v1/keys/{id}/revoke"), body)
            .await
            .expect(422);
    }
    assert_eq!(
        app.get(&format!("/v1/keys/{id}")).await.expect(200)["status"],
        "active"
    );
}

#[tokio::test]
async fn show_unknown_or_malformed_ids_is_404() {
    let app = spawn_app().await;
    app.get("/v1/keys/0000000000").await.expect(404);
    app.get("/v1/keys/zz").await.expect(404);
    app.get("/v1/keys/%F0%9F%94%91").await.expect(404);
}

#[tokio::test]
async fn rotation_issues_a_successor_and_retires_the_old_key_after_the_grace() {
    let app = spawn_app().await;
    let (old_id, old_key) = app.new_key("team-a").await;
    let rotated = app
        .post(
            &format!("/v1/keys/{old_id}/rotate"),
            json!({"grace_seconds": 3600}),
        )
        .await
        .expect(201);
    let new_key = rotated["key"].as_str().expect("new key");
    assert_eq!(rotated["rotated_from"], old_id.as_str());
    assert_eq!(rotated["previous"]["replaced_by"], rotated["id"]);
    assert!(rotated["previous"]["expires_at"].is_string());
    assert_eq!(rotated["apis"], json!(["orders"]));
    assert_eq!(app.verify(new_key, None, None).await["valid"], true);
    assert_eq!(
        app.verify(&old_key, None, None).await["valid"],
        true,
        "within the grace"
    );

    let (id2, key2) = app.new_key("team-a").await;
    app.post(
        &format!("/v1/keys/{id2}/rotate"),
        json!({"grace_seconds": 0}),
    )
    .await
    .expect(201);
    assert_eq!(app.verify(&key2, None, None).await["reason"], "expired");
    assert_eq!(
        app.get(&format!("/v1/keys/{id2}")).await.expect(200)["status"],
        "expired"
    );
}

#[tokio::test]
async fn rotation_refuses_revoked_unknown_and_absurd_requests() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    for body in [
        json!({}),
        json!({"grace_seconds": -1}),
        json!({"grace_seconds": 1e12}),
        json!({"grace_seconds": 999_999_999_999u64}),
        json!({"grace_seconds": "soon"}),
    ] {
        app.post(&format!("/v1/keys/{id}/rotate"), body)
            .await
            .expect(422);
    }
    app.post("/v1/keys/0000000000/rotate", json!({"grace_seconds": 1}))
        .await
        .expect(404);
    app.post(&format!("/v1/keys/{id}/revoke"), json!({"reason": "x"}))
        .await
        .expect(200);
    let refused = app
        .post(
            &format!("/v1/keys/{id}/rotate"),
            json!({"grace_seconds": 1}),
        )
        .await;
    assert_eq!(refused.expect(409)["error"]["code"], "conflict");
}

#[tokio::test]
async fn bulk_revocation_by_owner_api_or_ids() {
    let app = spawn_app().await;
    let (a1, ka1) = app.new_key("team-a").await;
    let (a2, _) = app.new_key("team-a").await;
    let b1 = app
        .create_key(json!({"owner": "team-b", "apis": ["billing"]}))
        .await;
    let b2 = app
        .create_key(json!({"owner": "team-b", "apis": ["search"]}))
        .await;

    let by_owner = app
        .post(
            "/v1/revocations",
            json!({"owner": "team-a", "reason": "offboarded"}),
        )
        .await
        .expect(200);
    let revoked: HashSet<String> =
        serde_json::from_value(by_owner["revoked"].clone()).expect("ids");
    assert_eq!(revoked, HashSet::from([a1.clone(), a2.clone()]));
    assert_eq!(by_owner["propagation"]["complete"], true);
    assert_eq!(app.verify(&ka1, None, None).await["reason"], "revoked");

    let by_api = app
        .post(
            "/v1/revocations",
            json!({"api": "billing", "reason": "api retired"}),
        )
        .await
        .expect(200);
    assert_eq!(by_api["revoked"], json!([b1["id"]]));

    let by_ids = app
        .post(
            "/v1/revocations",
            json!({"ids": [b2["id"], a1], "reason": "incident"}),
        )
        .await
        .expect(200);
    assert_eq!(by_ids["revoked"], json!([b2["id"]]));
    assert_eq!(by_ids["already_revoked"], 1);
    assert_eq!(
        app.verify(b2["key"].as_str().expect("key"), None, None)
            .await["reason"],
        "revoked"
    );
}

#[tokio::test]
async fn bulk_revocation_refuses_ambiguous_or_invalid_selectors() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    for body in [
        json!({"reason": "x"}),
        json!({"owner": "team-a", "api": "orders", "reason": "x"}),
        json!({"ids": [], "reason": "x"}),
        json!({"ids": ["nope"], "reason": "x"}),
        json!({"owner": "", "reason": "x"}),
        json!({"owner": "team-a"}),
    ] {
        app.post("/v1/revocations", body).await.expect(422);
    }
    assert_eq!(
        app.get(&format!("/v1/keys/{id}")).await.expect(200)["status"],
        "active"
    );
}

#[tokio::test]
async fn list_filters_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let owner = if i % 2 == 0 { "team-a" } else { "team-b" };
        let created = app
            .create_key(json!({"owner": owner, "apis": [if i < 2 { "orders" } else { "search" }]}))
            .await;
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    app.post(
        &format!("/v1/keys/{}/revoke", ids[0]),
        json!({"reason": "x"}),
    )
    .await
    .expect(200);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/keys?limit=2&cursor={c}"),
            None => "/v1/keys?limit=2".into(),
        };
        let page = app.get(&path).await.expect(200);
        for key in page["keys"].as_array().expect("keys") {
            seen.push(key["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    let ids_of = |body: serde_json::Value| -> HashSet<String> {
        body["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        ids_of(app.get("/v1/keys?owner=team-b").await.expect(200)),
        HashSet::from([ids[1].clone(), ids[3].clone()])
    );
    assert_eq!(
        ids_of(app.get("/v1/keys?status=revoked").await.expect(200)),
        HashSet::from([ids[0].clone()])
    );
    assert_eq!(
        ids_of(
            app.get("/v1/keys?api=orders&status=active")
                .await
                .expect(200)
        ),
        HashSet::from([ids[1].clone()])
    );
    for bad in [
        "status=gone",
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=abc",
        "owner=",
        "sort=asc",
    ] {
        app.get(&format!("/v1/keys?{bad}")).await.expect(422);
    }
}

#[tokio::test]
async fn expired_keys_are_refused_and_listed_as_expired() {
    let app = spawn_app().await;
    let created = app
        .create_key(json!({"owner": "team-a", "expires_in": 1}))
        .await;
    let key = created["key"].as_str().expect("key");
    assert_eq!(app.verify(key, None, None).await["valid"], true);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(app.verify(key, None, None).await["reason"], "expired");
    let listed = app.get("/v1/keys?status=expired").await.expect(200);
    assert_eq!(listed["keys"][0]["id"], created["id"]);
}

#[tokio::test]
async fn slow_hash_issuers_work_end_to_end() {
    let config = quench_manager::ManagerConfig {
        issuers: vec![
            quench_manager::Issuer::parse("qk").expect("issuer"),
            quench_manager::Issuer::parse("qs:argon2id").expect("issuer"),
            quench_manager::Issuer::parse("qb:bcrypt").expect("issuer"),
        ],
        ..Default::default()
    };
    let app = crate::helpers::spawn_with(config).await;
    for (issuer, hashing) in [("qs", "argon2id"), ("qb", "bcrypt")] {
        let created = app
            .create_key(json!({"owner": "team-a", "issuer": issuer}))
            .await;
        assert_eq!(created["hashing"], hashing);
        let key = created["key"].as_str().expect("key");
        assert!(key.starts_with(&format!("{issuer}_")));
        assert_eq!(app.verify(key, None, None).await["valid"], true);
        assert_eq!(
            app.verify(key, None, None).await["valid"],
            true,
            "cached second time"
        );
        app.post(
            &format!("/v1/keys/{}/revoke", created["id"].as_str().expect("id")),
            json!({"reason": "x"}),
        )
        .await
        .expect(200);
        assert_eq!(app.verify(key, None, None).await["reason"], "revoked");
    }
    app.post("/v1/keys", json!({"owner": "team-a", "issuer": "zz"}))
        .await
        .expect(422);
    let _ = Method::GET;
}
