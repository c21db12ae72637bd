use std::time::Duration;

use quench_core::usage::{Action, Condition, UsagePolicy, UsageRule};
use quench_manager::ManagerConfig;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_with};

fn revoking_policy() -> UsagePolicy {
    UsagePolicy {
        rules: vec![UsageRule {
            name: "spread".into(),
            condition: Condition::DistinctAddresses { more_than: 5 },
            action: Action::Revoke,
        }],
        ..UsagePolicy::default()
    }
}

fn report(key_id: &str, alert_id: &str, rule: &str) -> Value {
    json!({
        "edge": "edge-7",
        "region": "eu-west",
        "alerts": [{
            "id": alert_id,
            "key_id": key_id,
            "rule": rule,
            "kind": "distinct_addresses",
            "raised_at": "2026-11-22T10:00:00Z",
            "window_seconds": 60,
            "measures": {"requests": 80.0, "distinct_addresses": 61.0, "usual": 3.5, "history_windows": 40}
        }]
    })
}

#[tokio::test]
async fn a_key_used_from_too_many_addresses_is_revoked_by_policy() {
    let app = spawn_with(ManagerConfig {
        usage_policy: revoking_policy(),
        ..ManagerConfig::default()
    })
    .await;
    let (id, key) = app.new_key("team-a").await;
    let (_, bystander) = app.new_key("team-a").await;
    for i in 0..10 {
        let verdict = app
            .http
            .post(format!("{}/v1/verify", app.edge))
            .json(&json!({"key": key, "client_ip": format!("203.0.113.{i}")}))
            .send()
            .await
            .expect("verify");
        assert_eq!(verdict.status(), 200);
        app.verify(&bystander, None, None).await;
    }
    let mut revoked = false;
    for _ in 0..300 {
        if app.verify(&key, None, None).await["reason"] == "revoked" {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(revoked, "the edge's alert revoked the key everywhere");
    assert_eq!(app.verify(&bystander, None, None).await["valid"], true);
    let alerts = app
        .get(&format!("/v1/alerts?key_id={id}"))
        .await
        .expect(200);
    let alert = &alerts["alerts"][0];
    assert_eq!(alerts["alerts"].as_array().expect("alerts").len(), 1);
    assert_eq!(alert["rule"], "spread");
    assert_eq!(alert["action"], "revoke");
    assert_eq!(alert["owner"], "team-a");
    assert_eq!(alert["edge"], "embedded");
    assert!(
        alert["details"]["measures"]["distinct_addresses"]
            .as_f64()
            .expect("measure")
            > 5.0
    );
    let shown = app.get(&format!("/v1/keys/{id}")).await.expect(200);
    assert!(
        shown["revoked_reason"]
            .as_str()
            .expect("reason")
            .starts_with("anomaly: usage rule spread"),
        "{shown}"
    );
    let audit = app.get(&format!("/v1/audit?key_id={id}")).await.expect(200);
    assert_eq!(audit["records"][0]["principal"], "usage-policy:spread");
    let metrics = app.get("/metrics").await.body;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains("quench_alerts_total{rule=\"spread\",action=\"revoke\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("quench_anomalies_revoked_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn edge_reports_are_recorded_once_and_checked() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    let (other, _) = app.new_key("team-b").await;
    let edge = app.token_with(&["edge"], None).await;
    let reader = app.token_with(&["keys:read"], None).await;
    let send = |token: String, body: Value| {
        let app = &app;
        async move {
            app.send(Method::POST, "/v1/alerts", Some(&token), Some(body))
                .await
        }
    };
    let first = send(edge.clone(), report(&id, &"a".repeat(32), "many-addresses"))
        .await
        .expect(200);
    let outcome = &first["results"][0];
    assert_eq!(outcome["new"], true);
    assert_eq!(outcome["action"], "alert");
    assert_eq!(outcome["revoked"], false);
    // The same alert again (a retried report) is recorded once.
    let again = send(edge.clone(), report(&id, &"A".repeat(32), "many-addresses"))
        .await
        .expect(200);
    assert_eq!(again["results"][0]["new"], false);
    assert_eq!(again["results"][0]["seq"], outcome["seq"]);
    // A rule this manager does not know only alerts; an alert never revokes by itself.
    send(edge.clone(), report(&other, &"b".repeat(32), "invented"))
        .await
        .expect(200);
    assert_eq!(
        app.get(&format!("/v1/keys/{id}")).await.expect(200)["status"],
        "active"
    );

    // Only edges report; bad reports are refused whole.
    send(reader.clone(), report(&id, &"c".repeat(32), "x"))
        .await
        .expect(403);
    let mut empty = report(&id, &"d".repeat(32), "x");
    empty["alerts"] = json!([]);
    let mut negative = report(&id, &"e".repeat(32), "x");
    negative["alerts"][0]["measures"]["requests"] = json!(-1.0);
    let mut bad_edge = report(&id, &"f".repeat(32), "x");
    bad_edge["edge"] = json!("edge 7\n");
    for body in [
        empty,
        negative,
        bad_edge,
        report(&id, "short", "x"),
        report(&id, &"9".repeat(32), "no spaces allowed"),
        report("qk_nope", &"9".repeat(32), "x"),
        json!({"edge": "e"}),
    ] {
        send(edge.clone(), body).await.expect(422);
    }

    // Reading: newest first, paged, filtered, confined to a token's owner.
    let all = app.get("/v1/alerts").await.expect(200);
    let rules: Vec<&str> = all["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["rule"].as_str().expect("rule"))
        .collect();
    assert_eq!(rules, ["invented", "many-addresses"]);
    let page = app.get("/v1/alerts?limit=1").await.expect(200);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let next = app
        .get(&format!("/v1/alerts?limit=1&cursor={cursor}"))
        .await
        .expect(200);
    assert_eq!(next["alerts"][0]["rule"], "many-addresses");
    assert_eq!(next["alerts"][0]["details"]["region"], "eu-west");
    let team_b = app.token_with(&["keys:read"], Some("team-b")).await;
    let mine = app
        .send(Method::GET, "/v1/alerts", Some(&team_b), None)
        .await
        .expect(200);
    assert_eq!(mine["alerts"].as_array().expect("alerts").len(), 1);
    assert_eq!(mine["alerts"][0]["owner"], "team-b");
    app.send(Method::GET, "/v1/alerts?owner=team-a", Some(&team_b), None)
        .await
        .expect(403);
    app.get("/v1/alerts?cursor=abc").await.expect(422);
    app.get("/v1/alerts?key_id=nope").await.expect(422);
    let metrics = app.get("/metrics").await.body;
    let metrics = metrics.as_str().expect("text");
    assert!(
        metrics.contains("quench_alerts_total{rule=\"other\",action=\"alert\"} 1"),
        "{metrics}"
    );

    // Edges read the usage policy; nobody else needs it.
    let policy = app
        .send(Method::GET, "/v1/usage-policy", Some(&edge), None)
        .await
        .expect(200);
    assert_eq!(policy["window_seconds"], 60);
    assert_eq!(policy["rules"][0]["name"], "many-addresses");
    app.send(Method::GET, "/v1/usage-policy", Some(&reader), None)
        .await
        .expect(403);
}
