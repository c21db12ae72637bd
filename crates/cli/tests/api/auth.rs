use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn missing_or_invalid_tokens_are_401() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    let fake = "qt_0000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000";
    let forged = {
        // A well-formed token whose id exists but whose secret is wrong.
        let real = &app.token;
        let mut chars: Vec<char> = real.chars().collect();
        let i = 20;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        chars.into_iter().collect::<String>()
    };
    for token in [
        None,
        Some(""),
        Some("nonsense"),
        Some(fake),
        Some(forged.as_str()),
    ] {
        for (method, path) in [
            (Method::GET, "/v1/keys".to_owned()),
            (Method::GET, format!("/v1/keys/{id}")),
            (Method::POST, "/v1/tokens".to_owned()),
        ] {
            let reply = app
                .send(
                    method.clone(),
                    &path,
                    token,
                    Some(json!({"scopes": ["admin"]})),
                )
                .await;
            assert_eq!(reply.code(), "unauthorized", "{token:?} {path}");
            reply.expect(401);
        }
    }
    // Basic auth is not a bearer token.
    let response = app
        .http
        .get(format!("{}/v1/keys", app.admin))
        .basic_auth("admin", Some(&app.token))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn scopes_limit_what_a_token_may_do() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    let reader = app.token_with(&["keys:read"], None).await;
    let revoker = app.token_with(&["keys:revoke"], None).await;
    let edge = app.token_with(&["edge"], None).await;

    app.send(Method::GET, "/v1/keys", Some(&reader), None)
        .await
        .expect(200);
    app.send(Method::GET, &format!("/v1/keys/{id}"), Some(&reader), None)
        .await
        .expect(200);
    app.send(Method::GET, "/v1/edges", Some(&reader), None)
        .await
        .expect(200);
    let refused = app
        .send(
            Method::POST,
            "/v1/keys",
            Some(&reader),
            Some(json!({"owner": "team-a"})),
        )
        .await;
    assert_eq!(refused.expect(403)["error"]["code"], "forbidden");
    app.send(
        Method::POST,
        &format!("/v1/keys/{id}/revoke"),
        Some(&reader),
        Some(json!({"reason": "x"})),
    )
    .await
    .expect(403);
    app.send(Method::GET, "/v1/events", Some(&reader), None)
        .await
        .expect(403);
    app.send(
        Method::POST,
        "/v1/tokens",
        Some(&reader),
        Some(json!({"scopes": ["admin"]})),
    )
    .await
    .expect(403);

    app.send(Method::GET, "/v1/keys", Some(&revoker), None)
        .await
        .expect(403);
    app.send(Method::GET, "/v1/events", Some(&edge), None)
        .await
        .expect(200);
    app.send(Method::GET, "/v1/keys", Some(&edge), None)
        .await
        .expect(403);
    let revoked = app
        .send(
            Method::POST,
            &format!("/v1/keys/{id}/revoke"),
            Some(&revoker),
            Some(json!({"reason": "x"})),
        )
        .await
        .expect(200);
    assert_eq!(revoked["key"]["status"], "revoked");
}

#[tokio::test]
async fn a_token_confined_to_an_owner_touches_only_that_owners_keys() {
    let app = spawn_app().await;
    let (mine, _) = app.new_key("team-a").await;
    let (theirs, _) = app.new_key("team-b").await;
    let token = app
        .token_with(&["keys:read", "keys:write", "keys:revoke"], Some("team-a"))
        .await;

    let listed = app
        .send(Method::GET, "/v1/keys", Some(&token), None)
        .await
        .expect(200);
    let owners: Vec<&str> = listed["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["owner"].as_str().expect("owner"))
        .collect();
    assert_eq!(owners, vec!["team-a"]);
    app.send(Method::GET, "/v1/keys?owner=team-b", Some(&token), None)
        .await
        .expect(403);
    app.send(
        Method::GET,
        &format!("/v1/keys/{theirs}"),
        Some(&token),
        None,
    )
    .await
    .expect(403);
    app.send(Method::GET, &format!("/v1/keys/{mine}"), Some(&token), None)
        .await
        .expect(200);
    app.send(
        Method::POST,
        &format!("/v1/keys/{theirs}/revoke"),
        Some(&token),
        Some(json!({"reason": "x"})),
    )
    .await
    .expect(403);
    app.send(
        Method::POST,
        &format!("/v1/keys/{theirs}/rotate"),
        Some(&token),
        Some(json!({"grace_seconds": 0})),
    )
    .await
    .expect(403);
    app.send(
        Method::POST,
        "/v1/keys",
        Some(&token),
        Some(json!({"owner": "team-b"})),
    )
    .await
    .expect(403);
    let created = app
        .send(Method::POST, "/v1/keys", Some(&token), Some(json!({})))
        .await
        .expect(201);
    assert_eq!(created["owner"], "team-a", "owner defaults to the token's");
    app.send(
        Method::POST,
        "/v1/revocations",
        Some(&token),
        Some(json!({"owner": "team-b", "reason": "x"})),
    )
    .await
    .expect(403);
    let by_ids = app
        .send(
            Method::POST,
            "/v1/revocations",
            Some(&token),
            Some(json!({"ids": [theirs], "reason": "x"})),
        )
        .await
        .expect(200);
    assert_eq!(by_ids["revoked"], json!([]));
    assert_eq!(
        app.get(&format!("/v1/keys/{theirs}")).await.expect(200)["status"],
        "active"
    );
}

#[tokio::test]
async fn tokens_are_issued_by_admins_with_valid_scopes() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/v1/tokens",
            json!({"scopes": ["keys:read", "keys:read", "leaks:report"]}),
        )
        .await
        .expect(201);
    assert!(created["token"].as_str().expect("token").starts_with("qt_"));
    assert_eq!(created["scopes"], json!(["keys:read", "leaks:report"]));
    for body in [
        json!({"scopes": []}),
        json!({"scopes": ["root"]}),
        json!({"scopes": "admin"}),
        json!({}),
        json!({"scopes": ["admin"], "owner": "a b"}),
    ] {
        app.post("/v1/tokens", body).await.expect(422);
    }
    let confined_admin = app.token_with(&["admin"], Some("team-a")).await;
    let handed_out = app
        .send(
            Method::POST,
            "/v1/tokens",
            Some(&confined_admin),
            Some(json!({"scopes": ["keys:read"]})),
        )
        .await
        .expect(201);
    assert_eq!(handed_out["owner"], "team-a");
    app.send(
        Method::POST,
        "/v1/tokens",
        Some(&confined_admin),
        Some(json!({"scopes": ["keys:read"], "owner": "team-b"})),
    )
    .await
    .expect(403);
}

#[tokio::test]
async fn a_configured_bootstrap_token_is_an_admin() {
    let secret = "a-very-long-configured-bootstrap-token-0123456789";
    let config = quench_manager::ManagerConfig {
        bootstrap_token: Some(
            quench_manager::bootstrap::configured(secret.into()).expect("long enough"),
        ),
        ..Default::default()
    };
    let app = crate::helpers::spawn_with(config).await;
    app.send(Method::GET, "/v1/keys", Some(secret), None)
        .await
        .expect(200);
    app.send(Method::GET, "/v1/keys", Some(&secret[1..]), None)
        .await
        .expect(401);
    assert!(quench_manager::bootstrap::configured("short".into()).is_err());
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() {
    let app = spawn_app().await;
    let created = app
        .post("/v1/tokens", json!({"scopes": ["keys:read"]}))
        .await
        .expect(201);
    let (token, id) = (
        created["token"].as_str().expect("token").to_owned(),
        created["id"].as_str().expect("id").to_owned(),
    );
    app.send(Method::GET, "/v1/keys", Some(&token), None)
        .await
        .expect(200);
    let revoked = app
        .post(&format!("/v1/tokens/{id}/revoke"), json!({}))
        .await
        .expect(200);
    assert_eq!(revoked["already_revoked"], false);
    app.send(Method::GET, "/v1/keys", Some(&token), None)
        .await
        .expect(401);
    let again = app
        .post(&format!("/v1/tokens/{id}/revoke"), json!({}))
        .await
        .expect(200);
    assert_eq!(again["already_revoked"], true);
    app.post("/v1/tokens/0000000000/revoke", json!({}))
        .await
        .expect(404);
    app.post("/v1/tokens/nope/revoke", json!({}))
        .await
        .expect(404);
    let reader = app.token_with(&["keys:read"], None).await;
    let other = app.token_with(&["keys:read"], None).await;
    let other_id = {
        let parsed = quench_core::ApiKey::parse(&other).expect("token format");
        parsed.id().to_string()
    };
    app.send(
        Method::POST,
        &format!("/v1/tokens/{other_id}/revoke"),
        Some(&reader),
        Some(json!({})),
    )
    .await
    .expect(403);
    let audit = app.get("/v1/audit?limit=20").await.expect(200);
    assert!(
        audit["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["action"] == "token.revoke")
    );
}
