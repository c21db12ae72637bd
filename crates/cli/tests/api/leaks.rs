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

mod github {
    use p256::{
        ecdsa::{Signature, SigningKey, signature::Signer},
        pkcs8::{EncodePublicKey, LineEnding},
    };
    use serde_json::{Value, json};

    use crate::helpers::{TestApp, spawn_with};

    fn github_key() -> SigningKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random");
        SigningKey::from_slice(&seed).expect("a valid scalar")
    }

    async fn app_trusting(key: &SigningKey) -> TestApp {
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        let document = json!({"public_keys": [{"key_identifier": "gh-key-1", "key": pem, "is_current": true}]});
        let keys =
            quench_manager::github::GithubKeys::parse(&document.to_string()).expect("document");
        spawn_with(quench_manager::ManagerConfig {
            github_keys: Some(keys),
            ..Default::default()
        })
        .await
    }

    async fn send(
        app: &TestApp,
        body: &[u8],
        key_id: Option<&str>,
        signature: Option<String>,
    ) -> (u16, Value) {
        let mut request = app
            .http
            .post(format!(
                "{}/v1/integrations/github/secret-scanning",
                app.admin
            ))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(id) = key_id {
            request = request.header("Github-Public-Key-Identifier", id);
        }
        if let Some(signature) = signature {
            request = request.header("Github-Public-Key-Signature", signature);
        }
        let response = request.send().await.expect("request");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    fn sign(key: &SigningKey, body: &[u8]) -> String {
        use base64::Engine;
        let signature: Signature = key.sign(body);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    #[tokio::test]
    async fn signed_reports_revoke_and_get_githubs_feedback_format() {
        let github = github_key();
        let app = app_trusting(&github).await;
        let (_, key) = app.new_key("team-a").await;
        let body = json!([
            {"token": key, "type": "quench_api_key", "url": "https://example.invalid/blob/x", "source": "content"},
            {"token": "qk_looks_like_nothing", "type": "quench_api_key", "url": "u", "source": "content"},
        ])
        .to_string();
        let (status, feedback) = send(
            &app,
            body.as_bytes(),
            Some("gh-key-1"),
            Some(sign(&github, body.as_bytes())),
        )
        .await;
        assert_eq!(status, 200, "{feedback}");
        assert_eq!(feedback[0]["label"], "true_positive");
        assert_eq!(feedback[1]["label"], "false_positive");
        assert_eq!(feedback[0]["token_type"], "quench_api_key");
        assert_eq!(feedback[0]["token_hash"].as_str().expect("hash").len(), 64);
        assert_eq!(app.verify(&key, None, None).await["reason"], "revoked");
        // The same report again: still a true positive, nothing changes.
        let (status, again) = send(
            &app,
            body.as_bytes(),
            Some("gh-key-1"),
            Some(sign(&github, body.as_bytes())),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(again[0]["label"], "true_positive");
    }

    #[tokio::test]
    async fn bad_or_missing_signatures_revoke_nothing() {
        let github = github_key();
        let app = app_trusting(&github).await;
        let (_, key) = app.new_key("team-a").await;
        let body =
            json!([{"token": key, "type": "quench_api_key", "url": "u", "source": "content"}])
                .to_string();
        let impostor = github_key();
        let tampered = body.replace("content", "commit");
        let cases: Vec<(&[u8], Option<&str>, Option<String>)> = vec![
            (body.as_bytes(), None, None),
            (body.as_bytes(), Some("gh-key-1"), None),
            (
                body.as_bytes(),
                Some("gh-key-9"),
                Some(sign(&github, body.as_bytes())),
            ),
            (
                body.as_bytes(),
                Some("gh-key-1"),
                Some(sign(&impostor, body.as_bytes())),
            ),
            (
                tampered.as_bytes(),
                Some("gh-key-1"),
                Some(sign(&github, body.as_bytes())),
            ),
            (
                body.as_bytes(),
                Some("gh-key-1"),
                Some("not base64!".into()),
            ),
        ];
        for (payload, id, signature) in cases {
            let (status, reply) = send(&app, payload, id, signature).await;
            assert_eq!(status, 401, "{reply}");
            assert_eq!(reply["error"]["code"], "unauthorized");
        }
        assert_eq!(app.verify(&key, None, None).await["valid"], true);
        // Signed but malformed, or too large: refused, nothing revoked.
        let garbage = b"{\"not\": \"an array\"}";
        assert_eq!(
            send(
                &app,
                garbage,
                Some("gh-key-1"),
                Some(sign(&github, garbage))
            )
            .await
            .0,
            422
        );
        let many =
            serde_json::to_string(&vec![json!({"token": "x", "type": "t"}); 1001]).expect("json");
        let reply = send(
            &app,
            many.as_bytes(),
            Some("gh-key-1"),
            Some(sign(&github, many.as_bytes())),
        )
        .await;
        assert_eq!(reply.0, 422, "{}", reply.1);
        // GitHub sends JSON as JSON: a signed report declared as something else is refused.
        let response = app
            .http
            .post(format!(
                "{}/v1/integrations/github/secret-scanning",
                app.admin
            ))
            .header("content-type", "text/plain")
            .header("Github-Public-Key-Identifier", "gh-key-1")
            .header(
                "Github-Public-Key-Signature",
                sign(&github, body.as_bytes()),
            )
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 415);
        let huge = vec![b' '; 100 * 1024];
        assert_eq!(
            send(&app, &huge, Some("gh-key-1"), Some(sign(&github, &huge)))
                .await
                .0,
            413
        );
        assert_eq!(app.verify(&key, None, None).await["valid"], true);
    }

    #[tokio::test]
    async fn without_configured_keys_the_endpoint_is_absent() {
        let app = crate::helpers::spawn_app().await;
        let (status, reply) = send(&app, b"[]", Some("x"), Some("y".into())).await;
        assert_eq!(status, 404, "{reply}");
    }
}

#[tokio::test]
async fn a_leaked_manager_token_is_revoked_only_with_its_whole_text() {
    let app = spawn_app().await;
    let leaked = app.token_with(&["keys:read"], None).await;
    let reporter = app.token_with(&["leaks:report"], None).await;
    app.send(Method::GET, "/v1/keys", Some(&leaked), None)
        .await
        .expect(200);
    // The same token id with another secret (and a valid checksum) proves nothing.
    let forged = {
        let body = &leaked[..leaked.len() - 6];
        let mut secret: Vec<u8> = body.bytes().collect();
        let last = secret.len() - 1;
        secret[last] = if secret[last] == b'A' { b'B' } else { b'A' };
        let body = String::from_utf8(secret).expect("ascii");
        let mut sum = [0u8; 6];
        quench_core::base62::encode_fixed(u64::from(crc32fast::hash(body.as_bytes())), &mut sum);
        format!("{body}{}", std::str::from_utf8(&sum).expect("ascii"))
    };
    let reply = app
        .send(
            Method::POST,
            "/v1/leaks",
            Some(&reporter),
            Some(json!({"keys": [{"key": forged}, {"key": leaked, "source": "quench scan"}]})),
        )
        .await
        .expect(200);
    assert_eq!(reply["results"][0]["outcome"], "unknown");
    assert_eq!(reply["results"][1]["outcome"], "revoked");
    app.send(Method::GET, "/v1/keys", Some(&leaked), None)
        .await
        .expect(401);
    let again = app
        .send(
            Method::POST,
            "/v1/leaks",
            Some(&reporter),
            Some(json!({"keys": [{"key": leaked}]})),
        )
        .await
        .expect(200);
    assert_eq!(again["results"][0]["outcome"], "unknown");
    let audit = app.get("/v1/audit").await.expect(200);
    assert!(
        audit["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["action"] == "token.revoke"),
        "{audit}"
    );
}
