//! Bad input gets a clear JSON error and changes nothing.

use serde_json::json;

use crate::helpers::spawn_app;

async fn key_count(app: &crate::helpers::TestApp) -> usize {
    app.get("/v1/keys").await.expect(200)["keys"]
        .as_array()
        .expect("keys")
        .len()
}

#[tokio::test]
async fn malformed_create_requests_are_refused_without_effect() {
    let app = spawn_app().await;
    let cases = [
        (json!({}), "owner required"),
        (json!({"owner": ""}), "empty owner"),
        (json!({"owner": "has space"}), "bad owner"),
        (json!({"owner": "x".repeat(129)}), "long owner"),
        (json!({"owner": 7}), "wrong type"),
        (json!({"owner": "a", "apis": "orders"}), "apis not a list"),
        (json!({"owner": "a", "apis": [""]}), "empty api"),
        (
            json!({"owner": "a", "scopes": vec!["s"; 65].iter().enumerate().map(|(i, _)| format!("s{i}")).collect::<Vec<_>>()}),
            "too many scopes",
        ),
        (json!({"owner": "a", "expires_in": 0}), "zero lifetime"),
        (json!({"owner": "a", "expires_in": -5}), "negative lifetime"),
        (
            json!({"owner": "a", "expires_in": 9_999_999_999u64}),
            "absurd lifetime",
        ),
        (
            json!({"owner": "a", "expires_at": "2001-01-01T00:00:00Z"}),
            "past expiry",
        ),
        (
            json!({"owner": "a", "expires_at": "tomorrow"}),
            "unparseable expiry",
        ),
        (
            json!({"owner": "a", "expires_at": "2099-01-01T00:00:00Z", "expires_in": 5}),
            "both expiries",
        ),
        (
            json!({"owner": "a", "metadata": [1, 2]}),
            "metadata not an object",
        ),
        (
            json!({"owner": "a", "metadata": {"blob": "x".repeat(9000)}}),
            "metadata too large",
        ),
        (
            json!({"owner": "a", "name": "bad\nname"}),
            "control characters",
        ),
        (json!({"owner": "a", "secret": "mine"}), "unknown field"),
        (json!(["owner"]), "not an object"),
    ];
    for (body, why) in cases {
        let reply = app.post("/v1/keys", body).await;
        assert_eq!(reply.code(), "invalid_request", "{why}");
        reply.expect(422);
    }
    assert_eq!(key_count(&app).await, 0);
}

#[tokio::test]
async fn broken_bodies_get_400_415_and_413() {
    let app = spawn_app().await;
    let broken = app
        .post_raw("/v1/keys", "application/json", "{\"owner\": ")
        .await;
    assert_eq!(broken.code(), "invalid_json");
    broken.expect(400);
    let empty = app.post_raw("/v1/keys", "application/json", "").await;
    empty.expect(400);
    let not_json = app
        .post_raw("/v1/keys", "text/plain", "{\"owner\": \"a\"}")
        .await;
    assert_eq!(not_json.code(), "unsupported_media_type");
    not_json.expect(415);
    let huge = format!(
        "{{\"owner\": \"a\", \"name\": \"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let too_big = app.post_raw("/v1/keys", "application/json", huge).await;
    assert_eq!(too_big.code(), "payload_too_large");
    too_big.expect(413);
    let bad_utf8 = app
        .post_raw("/v1/keys", "application/json", vec![b'{', 0xff, 0xfe, b'}'])
        .await;
    bad_utf8.expect(400);
    assert_eq!(key_count(&app).await, 0);
}

#[tokio::test]
async fn the_edge_answers_malformed_keys_without_error() {
    let app = spawn_app().await;
    let (_, key) = app.new_key("team-a").await;
    let mut typo = key.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    for text in [
        "",
        "qk_",
        "not a key",
        &"x".repeat(5000),
        "qk_\u{1F511}",
        &typo,
    ] {
        let verdict = app.verify(text, None, None).await;
        assert_eq!(verdict["valid"], false, "{text}");
        assert_eq!(verdict["reason"], "malformed", "{text}");
    }
    let forbidden = app.verify(&key, Some("billing"), None).await;
    assert_eq!(forbidden["reason"], "forbidden");
    assert_eq!(
        app.verify(&key, None, Some("admin")).await["reason"],
        "forbidden"
    );
}

/// Found by the `api` fuzz target: a path parameter that percent-decodes to invalid UTF-8 was answered
/// by the routing layer with a bare-text 400, not the JSON error every other refusal uses.
#[tokio::test]
async fn a_path_id_that_is_not_utf8_gets_the_json_404() {
    use reqwest::Method;
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/v1/keys/%FF"),
        (Method::POST, "/v1/keys/%C3%28/revoke?wait=none"),
        (Method::POST, "/v1/keys/%80/rotate?wait=none"),
        (Method::POST, "/v1/tokens/%FE/revoke"),
        (Method::DELETE, "/v1/webhooks/%B1"),
        (Method::GET, "/v1/webhooks/%B1/deliveries"),
    ] {
        let body = (method == Method::POST).then(|| json!({"reason": "x", "grace_seconds": 0}));
        let reply = app.send(method.clone(), path, Some(&app.token), body).await;
        assert_eq!(reply.code(), "not_found", "{method} {path}: {}", reply.body);
        reply.expect(404);
    }
}
