//! Regions over slow links: a hub NATS (JetStream, domain `hub`) and per region a leaf node whose link
//! to the hub, and whose path to the manager, go through a `quench-netfault` proxy. Cutting a region's
//! links must turn its edges `stale` on time while the other regions keep answering, and healing must
//! bring it back with what it missed.

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use quench_netfault::{Link, LinkState, Proxy};
use serde_json::json;
use support::{Client, Nats, Proc, manager};

const SOON: Duration = Duration::from_secs(30);
/// The edges' `--max-staleness`, in seconds.
const MAX_STALENESS_S: u64 = 2;
/// How much later than `max_staleness` after the cut a region's edge may still answer: it checks its
/// freshness every quarter of `max_staleness`, the last proof it holds may have arrived up to a
/// heartbeat before the cut, the test polls every 50 ms, and two shared cores schedule all of it.
const ALLOWANCE: Duration = Duration::from_secs(3);

/// A region: its leaf node, the proxies carrying its links (to the hub and to the manager), one edge.
struct Region {
    _leaf: Nats,
    links: [Proxy; 2],
    _edge: Proc,
    edge: String,
}

impl Region {
    fn set(&self, state: LinkState) {
        for link in &self.links {
            link.set(state);
        }
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn region(leaf_port: u16, admin: &str, token: &str, name: &str, latency_ms: u64) -> Region {
    let link = Link::latency(Duration::from_millis(latency_ms));
    let to_hub = Proxy::start(loopback(leaf_port), link)
        .await
        .expect("proxy");
    let manager_addr: SocketAddr = admin
        .trim_start_matches("http://")
        .parse()
        .expect("the manager listens on an address");
    let to_manager = Proxy::start(manager_addr, link).await.expect("proxy");
    let config = format!(
        "listen: 127.0.0.1:{{port}}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://{}\" }} ] }}\n",
        to_hub.addr()
    );
    let leaf = Nats::start_config(&config).expect("nats-server was found for the hub");
    let (edge_proc, edge) = support::edge_with(
        &leaf.url(),
        &format!("http://{}", to_manager.addr()),
        token,
        &format!("{name}-1"),
        name,
        MAX_STALENESS_S,
        &["--jetstream-domain", "hub"],
    );
    Region {
        _leaf: leaf,
        links: [to_hub, to_manager],
        _edge: edge_proc,
        edge,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_region_turns_stale_on_time_while_another_answers_and_recovers_after_healing() {
    let leaf_port = support::free_port();
    let hub_config = format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\", domain: hub }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n"
    );
    let Some(hub) = Nats::start_config(&hub_config) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(&hub.url(), dir.path(), None, &[]);
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let eu = region(leaf_port, &admin, &token, "eu", 20).await;
    let us = region(leaf_port, &admin, &token, "us", 40).await;
    client.until_edges_live(&admin, 2, SOON).await;
    let (_, kept) = client.create(&admin, "team-a").await;
    let (revoked_id, revoked) = client.create(&admin, "team-a").await;
    for edge in [&eu.edge, &us.edge] {
        for key in [&kept, &revoked] {
            let verdict = client.until_verdict(edge, key, None, SOON).await;
            assert_eq!(verdict["valid"], true, "{edge}: {verdict}");
        }
    }

    eu.set(LinkState::Partitioned);
    let cut_at = Instant::now();
    let deadline = Duration::from_secs(MAX_STALENESS_S) + ALLOWANCE;
    let verdict = client
        .until_verdict(&eu.edge, &kept, Some("stale"), deadline)
        .await;
    let took = cut_at.elapsed();
    assert_eq!(
        verdict["reason"], "stale",
        "not stale within {deadline:?} of the cut (waited {took:?}): {verdict}"
    );
    let health = reqwest::get(format!("{}/healthz", eu.edge))
        .await
        .expect("the cut-off edge still answers");
    assert_eq!(
        health.status(),
        503,
        "a stale edge asks to be routed around"
    );
    assert_eq!(
        client.verify(&us.edge, &kept).await["valid"],
        true,
        "the other region keeps answering"
    );

    // A revocation during the cut: the other region enforces it now, the cut-off one after healing.
    let (status, body) = client
        .post(
            &format!("{admin}/v1/keys/{revoked_id}/revoke?wait=all&timeout_ms=1000"),
            json!({"reason": "leaked while eu was cut off"}),
        )
        .await;
    assert!(status == 200 || status == 202, "{status}: {body}");
    assert_eq!(client.verify(&us.edge, &revoked).await["reason"], "revoked");
    assert_eq!(
        client.verify(&eu.edge, &revoked).await["reason"],
        "stale",
        "still cut off: vouches for nothing"
    );

    eu.set(LinkState::Open);
    let verdict = client.until_verdict(&eu.edge, &kept, None, SOON).await;
    assert_eq!(verdict["valid"], true, "recovers after healing: {verdict}");
    let verdict = client
        .until_verdict(&eu.edge, &revoked, Some("revoked"), SOON)
        .await;
    assert_eq!(verdict["reason"], "revoked", "enforces what it missed");
}

/// The propagation benchmark with regions runs end to end, and each region's figure is at least its
/// one-way latency (the physical floor), so the proxy really is on the path.
#[test]
fn the_propagation_benchmark_with_regions_runs() {
    if support::nats_server_binary().is_none() {
        assert!(!support::in_ci(), "nats-server is required in CI");
        return;
    }
    let out = std::process::Command::new(support::QUENCH)
        .args(["bench", "propagation", "--regions", "30,60"])
        .args(["--edges", "1", "--revocations", "3", "--json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(result["edges"], 2, "{result}");
    for (region, floor) in result["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .zip([30.0, 60.0])
    {
        assert_eq!(region["last_edge"]["n"], 3, "{region}");
        let p50 = region["last_edge"]["p50_ms"].as_f64().expect("p50");
        assert!(p50 >= floor, "{region}");
    }
    assert_eq!(result["per_edge"][1]["edge"], "bench-r1-e0");
}
