//! The documented bulk-revocation limit is reachable over HTTP, and only that route takes a large body.

use quench_core::KeyId;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

fn random_ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|_| KeyId::generate().expect("random").to_string())
        .collect()
}

/// Pretty-printed, as a person's script is likely to send it: bigger than the compact form.
fn body(ids: &[String]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({"ids": ids, "reason": "bulk test"})).expect("json")
}

#[tokio::test]
async fn ten_thousand_ids_are_revoked_in_one_call_and_ten_thousand_and_one_refused() {
    let app = spawn_app().await;
    let (first, _) = app.new_key("team-a").await;
    let (second, _) = app.new_key("team-b").await;
    let mut ids = random_ids(9_998);
    ids.push(first.clone());
    ids.push(second.clone());
    let max = body(&ids);
    assert!(max.len() > 64 * 1024, "the body outgrows the default limit");
    let reply = app
        .post_raw("/v1/revocations?wait=none", "application/json", max)
        .await;
    let revoked = reply.expect(200)["revoked"].clone();
    let mut revoked: Vec<&str> = revoked
        .as_array()
        .expect("revoked ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    revoked.sort_unstable();
    let mut expected = vec![first.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(revoked, expected);

    ids.push(KeyId::generate().expect("random").to_string());
    let reply = app
        .post_raw("/v1/revocations?wait=none", "application/json", body(&ids))
        .await;
    assert_eq!(reply.code(), "invalid_request");
    let message = reply.expect(422)["error"]["message"].clone();
    assert!(
        message.as_str().is_some_and(|m| m.contains("10000")),
        "{message}"
    );
}

#[tokio::test]
async fn only_the_bulk_route_takes_a_large_body() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    let large = body(&random_ids(5_000));
    assert!(large.len() > 64 * 1024);
    for path in [format!("/v1/keys/{id}/revoke"), "/v1/keys".to_owned()] {
        let reply = app.post_raw(&path, "application/json", large.clone()).await;
        assert_eq!(reply.code(), "payload_too_large", "{path}");
        reply.expect(413);
    }
    // Beyond its own limit, the bulk route refuses with 413 too.
    let huge = body(&random_ids(20_000));
    let reply = app
        .post_raw("/v1/revocations", "application/json", huge)
        .await;
    assert_eq!(reply.code(), "payload_too_large");
    reply.expect(413);
    assert_eq!(
        app.get(&format!("/v1/keys/{id}")).await.expect(200)["status"],
        "active"
    );
}
