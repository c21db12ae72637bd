//! A whole key (or token) sent where its id belongs is refused, naming its id, and never echoed.

use serde_json::json;

use crate::helpers::{Reply, spawn_app};

/// The 43 secret characters of a key or token text (`<prefix>_<id:10><secret:43><checksum:6>`).
fn secret_of(key: &str) -> &str {
    let body = &key[key.find('_').expect("prefix") + 1..];
    &body[10..body.len() - 6]
}

fn assert_not_echoed(reply: &Reply, key: &str, id: &str, context: &str) {
    let text = reply.body.to_string();
    assert!(!text.contains(secret_of(key)), "{context}: echoed {text}");
    assert!(text.contains(id), "{context}: names the id: {text}");
}

#[tokio::test]
async fn a_whole_key_in_a_key_path_is_refused_with_its_id_and_never_echoed() {
    let app = spawn_app().await;
    let (id, key) = app.new_key("team-a").await;
    let cases = [
        app.get(&format!("/v1/keys/{key}")).await,
        app.post(&format!("/v1/keys/{key}/revoke"), json!({"reason": "leak"}))
            .await,
        app.post(
            &format!("/v1/keys/{key}/rotate"),
            json!({"grace_seconds": 0}),
        )
        .await,
    ];
    for (reply, route) in cases.into_iter().zip(["show", "revoke", "rotate"]) {
        assert_not_echoed(&reply, &key, &id, route);
        reply.expect(404);
    }
    let reply = app
        .post(
            "/v1/revocations",
            json!({"ids": [id, key], "reason": "leak"}),
        )
        .await;
    assert_not_echoed(&reply, &key, &id, "bulk");
    assert!(reply.body.to_string().contains("ids[1]"));
    reply.expect(422);
    // Nothing was acted on.
    assert_eq!(
        app.get(&format!("/v1/keys/{id}")).await.expect(200)["status"],
        "active"
    );
}

#[tokio::test]
async fn a_whole_token_in_the_token_path_is_refused_and_never_echoed() {
    let app = spawn_app().await;
    let token = app.token_with(&["keys:read"], None).await;
    let id = &token[3..13];
    let reply = app
        .post(&format!("/v1/tokens/{token}/revoke"), json!({}))
        .await;
    assert_not_echoed(&reply, &token, id, "token revoke");
    reply.expect(404);
    // Still a working token.
    app.send(reqwest::Method::GET, "/v1/keys", Some(&token), None)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_mistyped_key_in_a_key_path_is_not_echoed_either() {
    let app = spawn_app().await;
    let (_, key) = app.new_key("team-a").await;
    let mut typo = key.clone();
    typo.pop();
    typo.push(if key.ends_with('a') { 'b' } else { 'a' });
    let reply = app.get(&format!("/v1/keys/{typo}")).await;
    assert!(!reply.body.to_string().contains(secret_of(&key)));
    reply.expect(404);
    let reply = app
        .post("/v1/revocations", json!({"ids": [typo], "reason": "x"}))
        .await;
    assert!(!reply.body.to_string().contains(secret_of(&key)));
    reply.expect(422);
}
