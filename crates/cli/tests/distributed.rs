//! Quench across processes: managers, edges and NATS servers as separate processes, killed and restarted
//! the hard way. Each test runs its own NATS server on a free port.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{Client, Nats, NatsCluster, edge, manager, manager_with};

const SOON: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_wait_all_every_edge_refuses_the_key() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let edges: Vec<_> = (1..=3)
        .map(|i| edge(&nats.url(), &admin, &token, &format!("e{i}"), 10))
        .collect();
    client.until_edges_live(&admin, 3, SOON).await;

    let (id, key) = client.create(&admin, "team-a").await;
    for (_, url) in &edges {
        assert_eq!(client.verify(url, &key).await["valid"], true);
    }
    let (status, revoked) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke?wait=all&timeout_ms=5000"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    let propagation = &revoked["propagation"];
    assert_eq!(propagation["complete"], true, "{propagation}");
    assert_eq!(propagation["edges"].as_array().expect("edges").len(), 3);
    // Immediately, with no retry: every edge already refuses.
    for (_, url) in &edges {
        assert_eq!(client.verify(url, &key).await["reason"], "revoked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_key_used_from_many_addresses_is_revoked_on_every_edge() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let policy = dir.path().join("usage.json");
    std::fs::write(
        &policy,
        r#"{"window_seconds": 60, "rules": [
            {"name": "spread", "kind": "distinct_addresses", "more_than": 8, "action": "revoke"},
            {"name": "busy", "kind": "requests", "more_than": 100000}]}"#,
    )
    .expect("policy");
    let policy = policy.display().to_string();
    let (_m, admin) = manager(
        &nats.url(),
        &dir.path().join("m"),
        None,
        &[("QUENCH_USAGE_POLICY", &policy)],
    );
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, first) = edge(&nats.url(), &admin, &token, "e1", 10);
    let (_e2, second) = edge(&nats.url(), &admin, &token, "e2", 10);
    client.until_edges_live(&admin, 2, SOON).await;
    let (id, key) = client.create(&admin, "team-a").await;
    let (_, bystander) = client.create(&admin, "team-a").await;
    client.until_verdict(&first, &key, None, SOON).await;
    // The edge applies the manager's policy once it has read it.
    let deadline = std::time::Instant::now() + SOON;
    while !client
        .text(&format!("{first}/metrics"))
        .await
        .contains("quench_edge_usage_rules 2")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the edge never read the usage policy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let http = reqwest::Client::new();
    for i in 0..20 {
        let response = http
            .get(format!("{first}/auth"))
            .header("x-api-key", &key)
            .header("x-real-ip", format!("198.51.100.{i}"))
            .send()
            .await
            .expect("auth");
        if response.status() == 401 {
            break;
        }
        assert_eq!(response.status(), 200);
    }
    for url in [&first, &second] {
        let verdict = client.until_verdict(url, &key, Some("revoked"), SOON).await;
        assert_eq!(verdict["reason"], "revoked", "{url}: {verdict}");
        assert_eq!(client.verify(url, &bystander).await["valid"], true);
    }
    let (status, alerts) = client.get(&format!("{admin}/v1/alerts?key_id={id}")).await;
    assert_eq!(status, 200, "{alerts}");
    assert_eq!(alerts["alerts"][0]["rule"], "spread");
    assert_eq!(alerts["alerts"][0]["edge"], "e1");
    assert_eq!(alerts["alerts"][0]["action"], "revoke");
    let metrics = client.text(&format!("{first}/metrics")).await;
    assert!(
        metrics.contains("quench_edge_usage_alerts_total{rule=\"spread\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_during_revocations_comes_back_with_all_of_them() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, e1) = edge(&nats.url(), &admin, &token, "e1", 10);
    let (mut e2_proc, _) = edge(&nats.url(), &admin, &token, "e2", 10);
    client.until_edges_live(&admin, 2, SOON).await;
    let mut keys = Vec::new();
    for _ in 0..3 {
        keys.push(client.create(&admin, "team-a").await);
    }

    e2_proc.kill9();
    for (id, _) in &keys {
        let (status, body) = client
            .post(
                &format!("{admin}/v1/keys/{id}/revoke?timeout_ms=300"),
                json!({"reason": "incident"}),
            )
            .await;
        assert_eq!(status, 200);
        let pending: Vec<_> = body["propagation"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter(|e| e["confirmed"] == false)
            .map(|e| e["edge"].clone())
            .collect();
        assert!(pending.is_empty() || pending == vec![json!("e2")], "{body}");
    }
    let (_, fresh_key) = client.create(&admin, "team-a").await;

    let (_e2_again, e2) = edge(&nats.url(), &admin, &token, "e2", 10);
    for (_, key) in &keys {
        for url in [&e1, &e2] {
            let verdict = client.until_verdict(url, key, Some("revoked"), SOON).await;
            assert_eq!(verdict["reason"], "revoked", "{url}");
        }
    }
    assert_eq!(
        client.until_verdict(&e2, &fresh_key, None, SOON).await["valid"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_loses_no_revocation() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, e1) = edge(&nats.url(), &admin, &token, "e1", 30);
    client.until_edges_live(&admin, 1, SOON).await;
    let (id, key) = client.create(&admin, "team-a").await;
    assert_eq!(client.verify(&e1, &key).await["valid"], true);

    nats.kill();
    // Committed while the bus is down: the call still answers (the change is durable in the store).
    let (status, _) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke?wait=none"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200);
    nats.restart();
    let verdict = client
        .until_verdict(&e1, &key, Some("revoked"), Duration::from_secs(30))
        .await;
    assert_eq!(verdict["reason"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_event_on_the_bus_is_ignored() {
    use quench_bus::{Bus, EventBatch, NatsBus};
    use quench_core::{
        ApiKey, Change, EdgeKey, Event, HashAlg, Owner, Prefix, Seq, Timestamp, Verifier,
        sign::Signer,
    };

    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, e1) = edge(&nats.url(), &admin, &token, "e1", 10);
    client.until_edges_live(&admin, 1, SOON).await;
    let (_, genuine) = client.create(&admin, "team-a").await;

    // An attacker with publish rights on NATS announces a key of their own as the next event.
    let attacker_key = ApiKey::generate(Prefix::default()).expect("random");
    let forged = Event {
        seq: Seq::new(2),
        at: Timestamp::now(),
        change: Change::KeyCreated {
            key: EdgeKey {
                id: attacker_key.id(),
                prefix: attacker_key.prefix(),
                owner: Owner::parse("attacker").expect("owner"),
                apis: vec![],
                scopes: vec![],
                expires_at: None,
                revoked: false,
                verifier: Verifier::create(HashAlg::Sha256, attacker_key.secret()).expect("hash"),
            },
        },
    };
    let forger = Signer::generate().expect("random");
    let bus = NatsBus::connect(&nats.url(), "quench", "attacker")
        .await
        .expect("connect");
    bus.publish(&EventBatch::seal_events(&forger, &[forged]))
        .await
        .expect("publish");

    let metrics = format!("{e1}/metrics");
    let mut rejected = false;
    for _ in 0..100 {
        if client
            .text(&metrics)
            .await
            .contains("quench_edge_rejected_messages_total 1")
        {
            rejected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rejected, "the edge counted the forged message");
    assert_eq!(
        client.verify(&e1, &attacker_key.expose()).await["reason"],
        "unknown"
    );
    assert_eq!(client.verify(&e1, &genuine).await["valid"], true);
    // The real next event still applies.
    let (_, next) = client.create(&admin, "team-a").await;
    assert_eq!(
        client.until_verdict(&e1, &next, None, SOON).await["valid"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_past_max_staleness_refuses_then_recovers() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let (mut m, admin) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, e1) = edge(&nats.url(), &admin, &token, "e1", 2);
    client.until_edges_live(&admin, 1, SOON).await;
    let (_, key) = client.create(&admin, "team-a").await;
    assert_eq!(
        client.until_verdict(&e1, &key, None, SOON).await["valid"],
        true
    );

    // The bus alone is lost: the edge proves itself current from the manager's log, so it keeps
    // answering past max-staleness.
    nats.kill();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            client.verify(&e1, &key).await["valid"],
            true,
            "a reachable manager keeps the edge fresh without the bus"
        );
    }
    // The manager too: nothing can prove the edge current, and it fails closed.
    m.kill9();
    let verdict = client
        .until_verdict(&e1, &key, Some("stale"), Duration::from_secs(10))
        .await;
    assert_eq!(
        verdict["reason"], "stale",
        "fails closed once past max-staleness"
    );
    nats.restart();
    let (_m, _) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let verdict = client
        .until_verdict(&e1, &key, None, Duration::from_secs(30))
        .await;
    assert_eq!(verdict["valid"], true, "recovers by itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_crash_between_commit_and_publish_loses_nothing() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let (mut m, admin) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, e1) = edge(&nats.url(), &admin, &token, "e1", 30);
    client.until_edges_live(&admin, 1, SOON).await;
    let (id, key) = client.create(&admin, "team-a").await;
    assert_eq!(
        client.until_verdict(&e1, &key, None, SOON).await["valid"],
        true
    );

    m.kill9();
    // A test-only flag, hidden from help: the manager aborts after the commit, before the publish.
    let (mut crashing, admin) = support::manager_with(
        &listen,
        &nats.url(),
        dir.path(),
        None,
        &[],
        &["--fault", "crash-before-publish"],
    );
    let (status, _) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 0, "the manager died before answering");
    for _ in 0..100 {
        if crashing.exited() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crashing.exited());

    let (_m2, admin) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let (status, shown) = client.get(&format!("{admin}/v1/keys/{id}")).await;
    assert_eq!(
        shown["status"], "revoked",
        "the revocation was committed ({status} {shown})"
    );
    let verdict = client
        .until_verdict(&e1, &key, Some("revoked"), Duration::from_secs(20))
        .await;
    assert_eq!(verdict["reason"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_on_one_postgresql_serve_at_once() {
    let Some(nats) = Nats::start() else { return };
    let Some(db) = support::PgDatabase::create("two_managers") else {
        return;
    };
    let mut managers = TwoManagers::start(&nats, &db);
    let (a, b) = (managers.a.clone(), managers.b.clone());
    let client = Client::default();
    let token = client.edge_token(&a).await;
    let (_e1, e1) = edge(&nats.url(), &a, &token, "e1", 10);
    client.until_edges_live(&a, 1, SOON).await;
    client.until_edges_live(&b, 1, SOON).await;

    // Both write at once.
    let writes: Vec<_> = (0..20)
        .map(|i| {
            let url = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { Client::default().create(&url, "team-a").await })
        })
        .collect();
    let mut keys = Vec::new();
    for write in writes {
        keys.push(write.await.expect("write"));
    }
    let (_, page) = client.get(&format!("{b}/v1/events?limit=1000")).await;
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<u64>>(),
        "gap-free across both managers"
    );

    // B revokes and sees the edge (registered through A) confirm over the bus.
    let (id, key) = &keys[0];
    let (status, body) = client
        .post(
            &format!("{b}/v1/keys/{id}/revoke?wait=all&timeout_ms=5000"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["propagation"]["complete"], true, "{body}");
    assert_eq!(body["propagation"]["edges"][0]["edge"], "e1");
    assert_eq!(client.verify(&e1, key).await["reason"], "revoked");

    // With A gone, B alone keeps revocations flowing to the edge.
    managers.proc_a.kill9();
    let (id, key) = &keys[1];
    let (status, body) = client
        .post(
            &format!("{b}/v1/keys/{id}/revoke?wait=all&timeout_ms=5000"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["propagation"]["complete"], true, "{body}");
    assert_eq!(client.verify(&e1, key).await["reason"], "revoked");
}

/// Regions: the manager on a hub NATS, each region's edges on a leaf node of it. JetStream lives in the
/// hub (domain `hub`); edges on the leaf nodes reach the stream through that domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_on_leaf_nodes_of_a_hub_get_every_revocation() {
    let leaf_port = support::free_port();
    let hub_config = format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\", domain: hub }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n"
    );
    let Some(hub) = Nats::start_config(&hub_config) else {
        return;
    };
    let leaf_config = format!(
        "listen: 127.0.0.1:{{port}}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ] }}\n"
    );
    let Some(eu) = Nats::start_config(&leaf_config) else {
        return;
    };
    let Some(us) = Nats::start_config(&leaf_config) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&hub.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let hub_domain = ["--jetstream-domain", "hub"];
    let (_eu1, eu1) = support::edge_with(&eu.url(), &admin, &token, "eu-1", "eu", 10, &hub_domain);
    let (_us1, us1) = support::edge_with(&us.url(), &admin, &token, "us-1", "us", 10, &hub_domain);
    client
        .until_edges_live(&admin, 2, Duration::from_secs(30))
        .await;

    let (id, key) = client.create(&admin, "team-a").await;
    for url in [&eu1, &us1] {
        assert_eq!(
            client.until_verdict(url, &key, None, SOON).await["valid"],
            true
        );
    }
    let (status, body) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke?wait=all&timeout_ms=5000"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["propagation"]["complete"], true, "{body}");
    let regions: Vec<_> = body["propagation"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["region"].clone())
        .collect();
    assert_eq!(regions, vec![json!("eu"), json!("us")]);
    for url in [&eu1, &us1] {
        assert_eq!(client.verify(url, &key).await["reason"], "revoked");
    }
}

/// The propagation benchmark itself runs end to end (tiny sizes; the figures are in BENCHMARKS.md).
#[test]
fn the_propagation_benchmark_runs() {
    if support::nats_server_binary().is_none() {
        assert!(!support::in_ci(), "nats-server is required in CI");
        return;
    }
    for extra in [&[][..], &["--leaks"][..]] {
        let out = std::process::Command::new(support::QUENCH)
            .args([
                "bench",
                "propagation",
                "--edges",
                "1",
                "--revocations",
                "3",
                "--json",
            ])
            .args(extra)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(result["last_edge"]["n"], 3, "{result}");
        assert!(
            result["last_edge"]["p50_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0)
        );
    }
}

/// An edge that lost its key file comes back with a new key: the manager refuses to let the new key
/// speak for the old id until an admin rotates it, and then the edge counts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_lost_its_key_counts_again_only_after_an_admin_rotates_it() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&nats.url(), &dir.path().join("m"), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let key_file = dir.path().join("e-disk.key");
    let key_arg = key_file.display().to_string();
    let extra = ["--key-file", key_arg.as_str()];
    let (mut first, _) =
        support::edge_with(&nats.url(), &admin, &token, "e-disk", "local", 10, &extra);
    client.until_edges_live(&admin, 1, SOON).await;

    // A plain restart keeps the key, and the edge is simply live again.
    first.kill9();
    let (mut again, _) =
        support::edge_with(&nats.url(), &admin, &token, "e-disk", "local", 10, &extra);
    assert!(!again.log_tail().contains("registered with another key"));
    client.until_edges_live(&admin, 1, SOON).await;

    // The disk is lost: a new key under the same id is refused.
    again.kill9();
    std::fs::remove_file(&key_file).expect("remove the key");
    let (reborn, _) =
        support::edge_with(&nats.url(), &admin, &token, "e-disk", "local", 10, &extra);
    let deadline = std::time::Instant::now() + SOON;
    while !reborn.log_tail().contains("registered with another key") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            reborn.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let (_, list) = client.get(&format!("{admin}/v1/edges")).await;
        let live = list["edges"][0]["live"] == true;
        if !live {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "its acknowledgements still count: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The operator rotates the edge's key to the one it now holds (the edge logs it too).
    let seed = std::fs::read_to_string(&key_file).expect("the new key file");
    let public = quench_core::sign::Signer::from_seed_hex(&seed)
        .expect("a key")
        .public()
        .to_hex();
    assert!(reborn.log_tail().contains(&public), "{}", reborn.log_tail());
    let (status, rotated) = client
        .post(
            &format!("{admin}/v1/edges/e-disk/rotate"),
            json!({"public_key": public}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    client.until_edges_live(&admin, 1, SOON).await;
    let (id, _) = client.create(&admin, "team-a").await;
    let (status, revoked) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke?wait=all&timeout_ms=10000"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["propagation"]["complete"], true, "{revoked}");
    assert_eq!(
        revoked["propagation"]["edges"][0]["edge"], "e-disk",
        "{revoked}"
    );
}

/// The recommended hub: three NATS servers in a JetStream cluster keeping the stream on all three. Kill
/// the stream's leader, then (with it back) another server: each time a revocation issued while a server
/// is dead is confirmed by every edge and refused by every edge, and edges that started on the dead server
/// carry on through the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_keeps_revoking_when_any_one_server_dies() {
    let Some(mut cluster) = NatsCluster::start(3) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager_with(
        "127.0.0.1:0",
        &cluster.urls_from(0),
        dir.path(),
        None,
        &[],
        &["--stream-replicas", "3"],
    );
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let edges: Vec<_> = (0..3)
        .map(|i| edge(&cluster.urls_from(i), &admin, &token, &format!("c{i}"), 30))
        .collect();
    client.until_edges_live(&admin, 3, SOON).await;
    let stream = "QUENCH_QUENCH";
    let info = cluster.stream_info(stream).await.expect("the stream");
    assert_eq!(info.config.num_replicas, 3, "{info:?}");

    let leader = cluster.stream_leader(stream).await.expect("a leader");
    for victim in [leader, (leader + 1) % 3] {
        let (id, key) = client.create(&admin, "team-a").await;
        cluster.servers[victim].kill();
        let (status, body) = client
            .post(
                &format!("{admin}/v1/keys/{id}/revoke?wait=all&timeout_ms=20000"),
                json!({"reason": "leaked"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let confirmed: Vec<&str> = body["propagation"]["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["confirmed"] == true)
            .filter_map(|e| e["edge"].as_str())
            .collect();
        assert_eq!(
            confirmed.len(),
            3,
            "with server n{victim} dead every edge confirms: {body}"
        );
        for (_, url) in &edges {
            assert_eq!(client.verify(url, &key).await["reason"], "revoked");
        }
        cluster.servers[victim].restart();
    }
}

/// Copies of the stream on servers that are not a cluster can never be made: the manager says so at
/// once instead of retrying as if JetStream were still starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_copies_on_a_single_server_are_refused_at_once() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let started = std::time::Instant::now();
    let output = std::process::Command::new(support::QUENCH)
        .args(["manager", "--nats", &nats.url(), "--stream-replicas", "3"])
        .args(["--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("QUENCH_SIGNING_KEY", support::SIGNING_SEED)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("need a NATS JetStream cluster") && stderr.contains("--stream-replicas 1"),
        "{stderr}"
    );
    // Not the ten seconds of retries a starting JetStream gets.
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(8), "{stderr}");
}

/// An edge given several managers reads whichever answers: one starts while the first manager on its
/// list is down, the other keeps learning changes from the log after its manager dies with the bus down
/// too (so nothing but the second manager's log can tell it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_fails_over_between_managers() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let Some(db) = support::PgDatabase::create("manager_failover") else {
        return;
    };
    let mut managers = TwoManagers::start(&nats, &db);
    let (a, b) = (managers.a.clone(), managers.b.clone());
    let client = Client::default();
    let token = client.edge_token(&a).await;
    let (_e1, e1) = edge(&nats.url(), &format!("{a},{b}"), &token, "e1", 4);
    let nobody = format!("http://127.0.0.1:{}", support::free_port());
    let (_e2, e2) = edge(&nats.url(), &format!("{nobody},{b}"), &token, "e2", 4);
    client.until_edges_live(&b, 2, SOON).await;

    managers.proc_a.kill9();
    nats.kill();
    let (_, key) = client.create(&b, "team-a").await;
    for url in [&e1, &e2] {
        let verdict = client
            .until_verdict(url, &key, None, Duration::from_secs(20))
            .await;
        assert_eq!(verdict["valid"], true, "{url}: {verdict}");
    }
}

/// Copies the SQLite files of a stopped manager's data directory from `from` to `to` (a backup, or its
/// restore).
fn copy_database(from: &std::path::Path, to: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("quench.db{suffix}");
        let _ = std::fs::remove_file(to.join(&name));
        if from.join(&name).exists() {
            std::fs::copy(from.join(&name), to.join(&name)).expect("copy");
        }
    }
}

/// The database is restored from a backup older than what edges applied: its log would hand out again
/// the sequence numbers of changes edges hold, and its snapshots would show a key revoked since as valid.
/// With the revocation's batch still on the bus, the manager refuses to start; with the bus emptied, an
/// edge's acknowledgement of the lost sequence stops it serving anything but health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_older_backup_serves_nothing() {
    restored_from_an_older_backup(None).await;
}

/// The same with PostgreSQL, the backup a copy of the database taken while the manager was stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_store_restored_from_an_older_backup_serves_nothing() {
    let Some(db) = support::PgDatabase::create("restored") else {
        return;
    };
    restored_from_an_older_backup(Some(db)).await;
}

/// A backup of the store: the SQLite files, or a copy of the PostgreSQL database.
enum Backup {
    Sqlite(tempfile::TempDir),
    Postgres(support::PgDatabase),
}

async fn restored_from_an_older_backup(postgres: Option<support::PgDatabase>) {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let database = postgres.as_ref().map(support::PgDatabase::url);
    let (mut first, admin) = manager(&nats.url(), dir.path(), database.as_deref(), &[]);
    let listen = admin.trim_start_matches("http://").to_owned();
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_e1, e1) = edge(&nats.url(), &admin, &token, "e1", 30);
    client.until_edges_live(&admin, 1, SOON).await;
    let (id, key) = client.create(&admin, "team-a").await;
    first.kill9();
    let backup = match &postgres {
        None => {
            let files = tempfile::tempdir().expect("dir");
            copy_database(dir.path(), files.path());
            Backup::Sqlite(files)
        }
        Some(db) => Backup::Postgres(db.copy("restored_backup")),
    };

    let (mut second, _) =
        support::manager_at(&listen, &nats.url(), dir.path(), database.as_deref(), &[]);
    let (status, body) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["propagation"]["complete"], true, "{body}");
    second.kill9();
    let restored = match &backup {
        Backup::Sqlite(files) => {
            copy_database(files.path(), dir.path());
            None
        }
        Backup::Postgres(copy) => Some(copy.url()),
    };

    // Bounded: a manager that wrongly starts would otherwise serve until killed.
    let log = dir.path().join("restarted.log");
    let mut restarted = std::process::Command::new(support::QUENCH)
        .args(["manager", "--nats", &nats.url(), "--admin-listen", &listen])
        .args(restored.iter().flat_map(|url| ["--database", url.as_str()]))
        .arg("--data-dir")
        .arg(dir.path())
        .env("QUENCH_SIGNING_KEY", support::SIGNING_SEED)
        .env("QUENCH_BOOTSTRAP_TOKEN", support::BOOTSTRAP)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = restarted.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = restarted.kill();
            let _ = restarted.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the manager started on the restored store: {stderr}"
    );
    assert!(
        stderr.contains("restored from an older backup") && stderr.contains("the bus"),
        "{stderr}"
    );

    // Without the bus's copy, the edge that applied the revocation is the witness.
    quench_bus::NatsBus::connect(&nats.url(), "quench", "test")
        .await
        .expect("connect")
        .delete_stream()
        .await
        .expect("delete the stream");
    let (_third, _) =
        support::manager_at(&listen, &nats.url(), dir.path(), restored.as_deref(), &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = client.get(&format!("{admin}/v1/keys/{id}")).await;
        if status == 503 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("edge e1")),
        "{body}"
    );
    assert_eq!(client.get(&format!("{admin}/healthz")).await.0, 200);
    // The edge never took the restored log's word: the key stays revoked there.
    assert_eq!(client.verify(&e1, &key).await["reason"], "revoked");
}

/// Two managers on one PostgreSQL database and one NATS, each with a data directory of its own.
struct TwoManagers {
    proc_a: support::Proc,
    a: String,
    _proc_b: support::Proc,
    b: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl TwoManagers {
    fn start(nats: &Nats, db: &support::PgDatabase) -> Self {
        let dirs = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let (proc_a, a) = manager(&nats.url(), dirs.0.path(), Some(&db.url()), &[]);
        let (proc_b, b) = manager(&nats.url(), dirs.1.path(), Some(&db.url()), &[]);
        Self {
            proc_a,
            a,
            _proc_b: proc_b,
            b,
            _dirs: dirs,
        }
    }
}

/// An edge (re)started while its manager and its bus cannot be reached, as in a region cut off, keeps
/// running: it says it is starting and refuses keys (`stale`), and comes up by itself once they can be
/// reached. The fault campaign found edges that exited instead and never came back (seed 20261203,
/// docs/chaos.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_started_while_cut_off_comes_up_when_the_link_does() {
    let Some(mut nats) = Nats::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let (mut first, admin) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (_, key) = client.create(&admin, "team-a").await;
    first.kill9();
    nats.kill();

    let (mut cut_off, url) = edge(&nats.url(), &admin, &token, "cut-off", 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !cut_off.exited(),
        "the edge gave up:\n{}",
        cut_off.log_tail()
    );
    let (_, health) = client.get(&format!("{url}/healthz")).await;
    assert_eq!(health["status"], "starting", "{health}");
    assert_eq!(client.verify(&url, &key).await["valid"], false);

    nats.restart();
    let (_manager, _) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let verdict = client
        .until_verdict(&url, &key, None, Duration::from_secs(30))
        .await;
    assert_eq!(verdict["valid"], true, "{verdict}\n{}", cut_off.log_tail());
}

/// An edge with an id keeps the manager's snapshot on its disk and restarts from it: a key revoked while it
/// was down is refused after the restart (the log after the copy is applied), the copy proves nothing
/// until the manager answers (with the manager down, the restarted edge is `starting` and refuses keys),
/// and a copy tampered with on disk (a revocation taken out) is refused, deleted and read anew; an older
/// genuine copy put back only means more of the log to apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restarts_from_its_stored_snapshot_and_believes_it_only_as_signed() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let listen = format!("127.0.0.1:{}", support::free_port());
    let (manager_proc, admin) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let (revoked_id, revoked) = client.create(&admin, "team-a").await;
    let (_, kept) = client.create(&admin, "team-a").await;
    let id = format!("stored-{}", std::process::id());
    let start = || support::edge_with(&nats.url(), &admin, &token, &id, "local", 4, &[]);
    // Where `edge_with` keeps edges' files; the id is this run's own.
    let copy = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("edge-keys")
        .join(format!("edge-{id}.quench.snapshot"));

    let (mut first, url) = start();
    assert_eq!(
        client.until_verdict(&url, &revoked, None, SOON).await["valid"],
        true
    );
    assert!(copy.exists(), "no stored snapshot:\n{}", first.log_tail());
    let before_revocation = std::fs::read(&copy).expect("the copy");
    first.kill9();

    // Revoked while the edge is down: the copy still has the key live.
    let (status, body) = client
        .post(
            &format!("{admin}/v1/keys/{revoked_id}/revoke"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut second = refusing(&client, start(), &revoked, &kept).await;
    assert!(
        second
            .log_text()
            .contains("loaded the snapshot stored on its disk"),
        "{}",
        second.log_tail()
    );
    second.kill9();

    // An older genuine copy put back: loaded, and the log after it revokes the key again.
    std::fs::write(&copy, &before_revocation).expect("put back");
    let mut third = refusing(&client, start(), &revoked, &kept).await;
    third.kill9();

    // A copy made after the revocation (none on disk: the edge reads and keeps a new one)...
    std::fs::remove_file(&copy).expect("remove the copy");
    let mut renewed = refusing(&client, start(), &revoked, &kept).await;
    let end = std::time::Instant::now() + SOON;
    while !copy.exists() {
        assert!(std::time::Instant::now() < end, "{}", renewed.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    renewed.kill9();

    // ...tampered with: the revoked key's line changed back to live is not believed; the copy is
    // deleted and a new snapshot read.
    let text = String::from_utf8(std::fs::read(&copy).expect("the copy")).expect("utf-8");
    let tampered: String = text
        .lines()
        .map(|line| {
            if line.contains(&revoked_id) && line.contains("\"revoked\":true") {
                let value: serde_json::Value = serde_json::from_str(line).expect("a key line");
                let mut value = value;
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("revoked".into(), serde_json::Value::Bool(false));
                }
                serde_json::to_string(&value).expect("json")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    assert_ne!(tampered, text, "the test did not find the key's line");
    std::fs::write(&copy, tampered).expect("tamper");
    let mut fourth = refusing(&client, start(), &revoked, &kept).await;
    assert!(
        fourth.log_text().contains("does not verify"),
        "{}",
        fourth.log_tail()
    );
    fourth.kill9();

    // The manager down: the copy loads (checked against the manager key given on the command line),
    // but nothing is vouched for until the manager answers.
    assert!(copy.exists(), "a new copy was kept");
    let (_, keys) = client.get(&format!("{admin}/v1/signing-keys")).await;
    let manager_key = keys["keys"][0]["public_key"]
        .as_str()
        .expect("the manager's key")
        .to_owned();
    let mut manager_proc = manager_proc;
    manager_proc.kill9();
    let (fifth, url) = support::edge_with(
        &nats.url(),
        &admin,
        &token,
        &id,
        "local",
        4,
        &["--trust-key", &manager_key],
    );
    let end = std::time::Instant::now() + SOON;
    while !fifth
        .log_text()
        .contains("read the snapshot stored on its disk")
    {
        assert!(std::time::Instant::now() < end, "{}", fifth.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, health) = client.get(&format!("{url}/healthz")).await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "starting", "{health}");
    let verdict = client.verify(&url, &kept).await;
    assert_eq!(verdict["valid"], false, "{verdict}");
    assert_eq!(verdict["reason"], "stale", "{verdict}");
    let (_manager, _) = support::manager_at(&listen, &nats.url(), dir.path(), None, &[]);
    let verdict = client.until_verdict(&url, &kept, None, SOON).await;
    assert_eq!(verdict["valid"], true, "{verdict}\n{}", fifth.log_tail());
    assert!(
        fifth
            .log_text()
            .contains("loaded the snapshot stored on its disk"),
        "{}",
        fifth.log_tail()
    );
    let _ = std::fs::remove_file(&copy);
}

/// A stored copy of another log, signed by the same manager key under the same deployment name (a
/// database started afresh; here two deployments sharing the tests' key), is not a starting point: its
/// keys are not this log's. The edge sees that this log does not begin with the copy's first key, reads
/// a new snapshot, and the other log's key is unknown to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_snapshot_of_another_log_is_not_loaded() {
    let Some(nats_a) = Nats::start() else { return };
    let Some(nats_b) = Nats::start() else { return };
    let dir_a = tempfile::tempdir().expect("dir");
    let dir_b = tempfile::tempdir().expect("dir");
    let (_a, admin_a) = manager(&nats_a.url(), dir_a.path(), None, &[]);
    let (_b, admin_b) = manager(&nats_b.url(), dir_b.path(), None, &[]);
    let client = Client::default();
    let (_, from_b) = client.create(&admin_b, "team-b").await;
    let (_, from_a) = client.create(&admin_a, "team-a").await;
    let id = format!("other-log-{}", std::process::id());

    let token_b = client.edge_token(&admin_b).await;
    let (mut on_b, url) = edge(&nats_b.url(), &admin_b, &token_b, &id, 4);
    assert_eq!(
        client.until_verdict(&url, &from_b, None, SOON).await["valid"],
        true
    );
    let copy = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("edge-keys")
        .join(format!("edge-{id}.quench.snapshot"));
    let end = std::time::Instant::now() + SOON;
    while !copy.exists() {
        assert!(std::time::Instant::now() < end, "{}", on_b.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    on_b.kill9();

    // The same edge id, key file and deployment name, now following deployment A. (Its id registered
    // with B's database only, so A takes its key as new.)
    let token_a = client.edge_token(&admin_a).await;
    let (on_a, url) = edge(&nats_a.url(), &admin_a, &token_a, &id, 4);
    let verdict = client.until_verdict(&url, &from_a, None, SOON).await;
    assert_eq!(verdict["valid"], true, "{verdict}\n{}", on_a.log_tail());
    let verdict = client.verify(&url, &from_b).await;
    assert_eq!(verdict["valid"], false, "{verdict}");
    assert_eq!(verdict["reason"], "unknown", "{verdict}");
    assert!(
        on_a.log_text().contains("is of another log"),
        "{}",
        on_a.log_tail()
    );
    let _ = std::fs::remove_file(&copy);
}

/// Waits until the edge just started refuses `revoked` (the log after its starting point applied) and
/// checks it accepts `kept`.
async fn refusing(
    client: &Client,
    (edge, url): (support::Proc, String),
    revoked: &str,
    kept: &str,
) -> support::Proc {
    let verdict = client
        .until_verdict(&url, revoked, Some("revoked"), SOON)
        .await;
    assert_eq!(
        verdict["reason"],
        "revoked",
        "{verdict}\n{}",
        edge.log_tail()
    );
    assert_eq!(client.verify(&url, kept).await["valid"], true);
    edge
}
