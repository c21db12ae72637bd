//! Attacks on the edge's verify path, performed over HTTP: floods of wrong secrets for one argon2id key
//! id, a full slow-hash pool, and keys padded with whitespace.

use std::{sync::Arc, time::Duration};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version, password_hash::SaltString};
use futures::FutureExt;
use quench_core::{
    EdgeKey, HashAlg, KeyId, Owner, Prefix, Seq, Timestamp, Verifier, base62, key::Secret,
};
use quench_edge::{EdgeConfig, Replica, SlowHashConfig, StalePolicy};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A key: its text, and the record the replica holds for it.
struct TestKey {
    text: String,
    edge: EdgeKey,
}

fn key_text(id: KeyId, secret: &[u8]) -> String {
    let body = format!(
        "qk_{id}{}",
        std::str::from_utf8(secret).expect("base62 secret")
    );
    let mut sum = [0u8; 6];
    base62::encode_fixed(u64::from(crc32fast::hash(body.as_bytes())), &mut sum);
    format!("{body}{}", std::str::from_utf8(&sum).expect("ascii"))
}

fn test_key(secret: &Secret, verifier: Verifier) -> TestKey {
    let id = KeyId::generate().expect("random");
    TestKey {
        text: key_text(id, secret.as_bytes()),
        edge: EdgeKey {
            id,
            prefix: Prefix::default(),
            owner: Owner::parse("team").expect("owner"),
            apis: Vec::new(),
            scopes: Vec::new(),
            expires_at: None,
            revoked: false,
            verifier,
        },
    }
}

fn issue(alg: HashAlg) -> TestKey {
    let secret = Secret::generate().expect("random");
    let verifier = Verifier::create(alg, &secret).expect("hash");
    test_key(&secret, verifier)
}

/// The key's id with a fresh random secret: well-formed, checksum valid, wrong.
fn wrong_secret(key: &TestKey) -> String {
    key_text(key.edge.id, Secret::generate().expect("random").as_bytes())
}

/// A replica holding `keys`, ready, and never stale for these tests (fail-open), so nothing but the
/// slow-hash rules decides.
fn replica(slow_hash: SlowHashConfig, keys: &[&TestKey]) -> Arc<Replica> {
    let replica = Replica::new(EdgeConfig {
        stale_policy: StalePolicy::FailOpen,
        slow_hash,
        ..EdgeConfig::default()
    });
    assert!(
        replica
            .keys()
            .install_snapshot(Seq::new(1), keys.iter().map(|k| k.edge.clone()))
    );
    replica.mark_ready();
    replica
}

async fn serve(replica: Arc<Replica>) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(quench_api::web::serve(
        listener,
        quench_edge::http::router(replica),
        std::future::pending(),
    ));
    url
}

async fn verify(http: &reqwest::Client, url: &str, key: &str) -> (StatusCode, Value) {
    let response = http
        .post(format!("{url}/v1/verify"))
        .json(&json!({ "key": key }))
        .send()
        .await
        .expect("verify");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

async fn auth(http: &reqwest::Client, url: &str, header: (&str, &str)) -> (StatusCode, String) {
    let response = http
        .get(format!("{url}/auth"))
        .header(header.0, header.1)
        .send()
        .await
        .expect("auth");
    let reason = response
        .headers()
        .get("x-quench-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (response.status(), reason)
}

/// A counter or gauge from the edge's `/metrics`.
async fn metric(http: &reqwest::Client, url: &str, name: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

const ATTACKERS: usize = 20;
const ATTEMPTS: usize = 5;
const FAILURES: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_floods_of_one_argon2id_key_are_throttled_and_other_keys_still_answer() {
    let victim = issue(HashAlg::Argon2id);
    let confirmed = issue(HashAlg::Argon2id);
    let fast = issue(HashAlg::Sha256);
    let config = SlowHashConfig {
        workers: 1,
        queue: 8,
        failures: FAILURES,
        window: Duration::from_secs(3600),
    };
    let url = serve(replica(config, &[&victim, &confirmed, &fast])).await;
    let http = reqwest::Client::new();
    // The owner of `confirmed` used it once: this edge paid its slow hash and remembers the result.
    let (status, body) = verify(&http, &url, &confirmed.text).await;
    assert_eq!(
        (status, body["valid"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(
        metric(&http, &url, "quench_edge_slow_hashes_total").await,
        1
    );

    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            let forged: Vec<String> = (0..ATTEMPTS).map(|_| wrong_secret(&victim)).collect();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for key in forged {
                    answers.push(verify(&http, &url, &key).await);
                }
                answers
            })
        })
        .collect();
    // Meanwhile another client keeps verifying a SHA-256 key and the confirmed argon2id key.
    let mut answered = 0;
    while !attackers.iter().all(|a| a.is_finished()) && answered < 2_000 {
        for key in [&fast.text, &confirmed.text] {
            let (status, body) = verify(&http, &url, key).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["valid"], true, "{body}");
            answered += 1;
        }
    }
    let mut refused = 0;
    for attacker in attackers {
        for (status, body) in attacker.await.expect("attacker") {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body["valid"], false, "{body}");
            assert_eq!(body["reason"], "unknown", "{body}");
            assert!(body.get("key_id").is_none(), "{body}");
            refused += 1;
        }
    }
    assert_eq!(refused, ATTACKERS * ATTEMPTS);
    // One hash for the confirmed key, FAILURES for the victim's id; every other attempt was refused
    // without hashing.
    let throttled = (ATTACKERS * ATTEMPTS) as u64 - u64::from(FAILURES);
    assert_eq!(
        metric(&http, &url, "quench_edge_slow_hashes_total").await,
        1 + u64::from(FAILURES)
    );
    assert_eq!(
        metric(
            &http,
            &url,
            "quench_edge_slow_checks_total{result=\"throttled\"}"
        )
        .await,
        throttled
    );
    assert_eq!(
        metric(
            &http,
            &url,
            "quench_edge_slow_checks_total{result=\"busy\"}"
        )
        .await,
        0
    );

    // The documented price: until the window passes, the victim's own first use is refused too,
    // still without hashing. Confirmed and SHA-256 keys are untouched.
    let (_, body) = verify(&http, &url, &victim.text).await;
    assert_eq!(body["reason"], "unknown", "{body}");
    assert_eq!(
        metric(&http, &url, "quench_edge_slow_hashes_total").await,
        1 + u64::from(FAILURES)
    );
    let (status, _) = auth(&http, &url, ("x-api-key", &victim.text)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for key in [&fast.text, &confirmed.text] {
        let (status, _) = auth(&http, &url, ("x-api-key", key)).await;
        assert_eq!(status, StatusCode::OK);
    }
}

/// An argon2id verifier costing about twenty times the default, so one check surely outlasts the few
/// requests the test sends while it runs.
fn expensive_verifier(secret: &Secret) -> Verifier {
    let params = Params::new(19 * 1024, 40, 1, None).expect("params");
    let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(secret.as_bytes(), &salt)
        .expect("hash");
    Verifier::decode(&hash.to_string()).expect("an argon2id verifier")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_slow_hash_pool_answers_busy_at_once_and_fast_keys_still_answer() {
    let secret = Secret::generate().expect("random");
    let verifier = expensive_verifier(&secret);
    // Two keys (two ids) that happen to share a verifier: each still needs its own check.
    let first = test_key(&secret, verifier.clone());
    let second = test_key(&secret, verifier);
    let fast = issue(HashAlg::Sha256);
    let config = SlowHashConfig {
        workers: 1,
        queue: 0,
        failures: 5,
        window: Duration::from_secs(3600),
    };
    let url = serve(replica(config, &[&first, &second, &fast])).await;
    let http = reqwest::Client::new();

    let running = {
        let (http, url, key) = (http.clone(), url.clone(), first.text.clone());
        tokio::spawn(async move { verify(&http, &url, &key).await })
    };
    // Wait (bounded) until the first check holds the only place in the pool.
    let mut admitted = false;
    for _ in 0..1_000 {
        if metric(&http, &url, "quench_edge_slow_hashes_in_flight").await == 1 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(admitted, "the first slow check never started");

    let response = http
        .post(format!("{url}/v1/verify"))
        .json(&json!({ "key": second.text }))
        .send()
        .await
        .expect("verify");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.as_bytes().to_vec()),
        Some(b"1".to_vec())
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "busy", "{body}");
    assert_eq!(
        auth(&http, &url, ("x-api-key", &second.text)).await,
        (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned())
    );
    let (status, body) = verify(&http, &url, &fast.text).await;
    assert_eq!(
        (status, body["valid"].as_bool()),
        (StatusCode::OK, Some(true))
    );

    let (status, body) = running.await.expect("first check");
    assert_eq!(
        (status, body["valid"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(
        metric(
            &http,
            &url,
            "quench_edge_slow_checks_total{result=\"busy\"}"
        )
        .await,
        2
    );
    // Busy refusals hashed nothing and spent none of the key's failure budget.
    assert_eq!(
        metric(&http, &url, "quench_edge_slow_hashes_total").await,
        1
    );
    let (status, body) = verify(&http, &url, &second.text).await;
    assert_eq!(
        (status, body["valid"].as_bool()),
        (StatusCode::OK, Some(true))
    );
}

#[tokio::test]
async fn sha256_and_confirmed_keys_are_answered_without_awaiting() {
    let fast = issue(HashAlg::Sha256);
    let slow = issue(HashAlg::Bcrypt);
    let replica = replica(SlowHashConfig::default(), &[&fast, &slow]);
    let now = Timestamp::now();
    // Embedders' synchronous verify pays the slow hash once, on the calling thread.
    assert!(replica.verify(&slow.text, None, None, now).is_valid());
    for key in [
        &fast.text,
        &slow.text,
        &wrong_secret(&slow),
        &wrong_secret(&fast),
    ] {
        let answer = replica
            .verify_pooled(key, None, None, now)
            .now_or_never()
            .expect("answered without awaiting");
        assert!(answer.is_ok());
    }
    // An unconfirmed slow key is the only thing that waits.
    let other = issue(HashAlg::Bcrypt);
    let replica = self::replica(SlowHashConfig::default(), &[&other]);
    let pending = Box::pin(replica.verify_pooled(&other.text, None, None, now));
    assert!(pending.now_or_never().is_none());
}

#[tokio::test]
async fn verify_and_forward_auth_trim_surrounding_whitespace_alike() {
    let key = issue(HashAlg::Sha256);
    let url = serve(replica(SlowHashConfig::default(), &[&key])).await;
    let http = reqwest::Client::new();
    let k = &key.text;
    for padded in [
        format!(" {k}"),
        format!("{k} "),
        format!("\t{k}  "),
        format!("  {k}\t"),
    ] {
        let (status, body) = verify(&http, &url, &padded).await;
        assert_eq!(
            (status, body["valid"].as_bool()),
            (StatusCode::OK, Some(true)),
            "{padded:?}"
        );
        assert_eq!(
            auth(&http, &url, ("x-api-key", &padded)).await.0,
            StatusCode::OK,
            "{padded:?}"
        );
        let bearer = format!("Bearer {padded}");
        assert_eq!(
            auth(&http, &url, ("authorization", &bearer)).await.0,
            StatusCode::OK,
            "{padded:?}"
        );
    }
    // Line breaks can only reach /v1/verify (a header cannot carry them): trimmed there too.
    let (_, body) = verify(&http, &url, &format!("\r\n{k}\n")).await;
    assert_eq!(body["valid"], true, "{body}");
    // Whitespace inside a key is never trimmed: malformed on both.
    let (split_head, split_tail) = k.split_at(10);
    let split = format!("{split_head} {split_tail}");
    let (_, body) = verify(&http, &url, &split).await;
    assert_eq!(body["reason"], "malformed", "{body}");
    assert_eq!(
        auth(&http, &url, ("x-api-key", &split)).await,
        (StatusCode::UNAUTHORIZED, "malformed".to_owned())
    );
}
