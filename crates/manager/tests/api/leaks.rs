use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_reported_leak_is_revoked_once_and_only_with_the_real_secret() {
    let app = spawn_app().await;
    let (id, key) = app.new_key("team-a").await;
    let (other_id, other_key) = app.new_key("team-b").await;
    let reporter = app.token_with(&["leaks:report"], None).await;
    // Same id, another secret (with a valid checksum): proves nothing.
    let forged = {
        let fake = quench_core::ApiKey::generate(quench_core::Prefix::default())
            .expect("random")
            .expose();
        let body = format!("qk_{other_id}{}", &fake[13..fake.len() - 6]);
        let mut sum = [0u8; 6];
        quench_core::base62::encode_fixed(u64::from(crc32fast::hash(body.as_bytes())), &mut sum);
        format!("{body}{}", std::str::from_utf8(&sum).expect("ascii"))
    };
    let report = json!({"keys": [
        {"key": key, "source": "github", "url": "https://example.invalid/repo/blob/main/.env"},
        {"key": forged},
        {"key": "not a key at all"},
    ]});
    let reply = app
        .send(
            Method::POST,
            "/v1/leaks",
            Some(&reporter),
            Some(report.clone()),
        )
        .await
        .expect(200);
    let outcomes: Vec<&str> = reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, vec!["revoked", "unknown", "not_quench_key"]);
    assert_eq!(reply["results"][0]["key_id"], id.as_str());
    assert_eq!(reply["propagation"]["complete"], true);
    assert_eq!(app.verify(&key, None, None).await["reason"], "revoked");
    assert_eq!(
        app.verify(&other_key, None, None).await["valid"],
        true,
        "a forged report revokes nothing"
    );
    let shown = app.get(&format!("/v1/keys/{id}")).await.expect(200);
    assert!(
        shown["revoked_reason"]
            .as_str()
            .expect("reason")
            .starts_with("leaked")
    );
    let audit = app.get(&format!("/v1/audit?key_id={id}")).await.expect(200);
    assert_eq!(audit["records"][0]["action"], "key.revoke");

    // A replay changes nothing.
    let again = app
        .send(Method::POST, "/v1/leaks", Some(&reporter), Some(report))
        .await
        .expect(200);
    assert_eq!(again["results"][0]["outcome"], "already_revoked");
    assert_eq!(
        app.get(&format!("/v1/keys/{id}")).await.expect(200)["revoked_at"],
        shown["revoked_at"]
    );
}

#[tokio::test]
async fn leak_reports_need_the_scope_and_a_sane_body() {
    let app = spawn_app().await;
    let (_, key) = app.new_key("team-a").await;
    let reader = app.token_with(&["keys:read"], None).await;
    app.send(
        Method::POST,
        "/v1/leaks",
        Some(&reader),
        Some(json!({"keys": [{"key": key}]})),
    )
    .await
    .expect(403);
    app.send(
        Method::POST,
        "/v1/leaks",
        None,
        Some(json!({"keys": [{"key": key}]})),
    )
    .await
    .expect(401);
    let reporter = app.token_with(&["leaks:report"], None).await;
    for body in [
        json!({"keys": []}),
        json!({}),
        json!({"keys": [{"secret": key}]}),
        json!({"keys": "x"}),
    ] {
        app.send(Method::POST, "/v1/leaks", Some(&reporter), Some(body))
            .await
            .expect(422);
    }
    assert_eq!(app.verify(&key, None, None).await["valid"], true);
}
