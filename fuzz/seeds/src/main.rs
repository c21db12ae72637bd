//! Writes the seed corpus of every fuzz target from real Quench inputs: keys as `ApiKey` issues them,
//! events, heartbeats and acknowledgements as the manager and edges serialise them, a snapshot written by
//! `SnapshotWriter`, a GitHub payload and public keys document, the documented usage policy, and a
//! well-formed request to every API route the `api` target drives.
//!
//! Usage (from the repository root): `cargo run --manifest-path fuzz/Cargo.toml -p quench-fuzz-seeds`.
//! Each file starts with the mode byte its target reads first (see each target's doc). Raw wire messages
//! are signed by a stranger's key, never by the keys the targets trust: raw mode asserts nothing opens.

use std::{fs, path::Path, sync::Arc};

use quench_bus::{Ack, EdgeRegistration, Heartbeat, snapshot::write_snapshot};
use quench_core::{
    ApiKey, Change, EdgeKey, Event, HashAlg, Owner, Prefix, Seq, Timestamp, Verifier,
    names::Label,
    record::Snapshot,
    sign::{Purpose, Signer},
    usage::UsagePolicy,
};
use quench_fuzz_checks::common;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let keys: Vec<ApiKey> = ["qk", "acme", "qt", "a1b2c3d4e5f6g7h8"]
        .iter()
        .map(|p| ApiKey::generate(Prefix::parse(p).expect("prefix")).expect("random"))
        .collect();
    let write = |target: &str, name: &str, mode: u8, body: &[u8]| -> std::io::Result<()> {
        let dir = root.join(target);
        fs::create_dir_all(&dir)?;
        let mut bytes = vec![mode];
        bytes.extend_from_slice(body);
        fs::write(dir.join(name), bytes)
    };

    // key: valid keys as issued, and one without its checksum (mode 1 appends one).
    for (i, key) in keys.iter().enumerate() {
        write("key", &format!("valid-{i}"), 0, key.expose().as_bytes())?;
    }
    let text = keys[0].expose();
    write("key", "no-checksum", 1, &text.as_bytes()[..text.len() - 6])?;
    write("key", "key-id", 0, keys[1].id().to_string().as_bytes())?;

    // event: single events of each kind (mode 0), and a batch body (mode 1).
    let edge_keys: Vec<EdgeKey> = keys.iter().map(edge_key).collect();
    let at = Timestamp::from_millis(1_700_000_000_123);
    let events = vec![
        Event {
            seq: Seq::new(1),
            at,
            change: Change::KeyCreated {
                key: edge_keys[0].clone(),
            },
        },
        Event {
            seq: Seq::new(2),
            at,
            change: Change::KeyExpiryChanged {
                id: keys[0].id(),
                expires_at: Some(at),
            },
        },
        Event {
            seq: Seq::new(3),
            at,
            change: Change::KeyRevoked {
                id: keys[0].id(),
                reason: "leaked: reported by ci".into(),
            },
        },
        Event {
            seq: Seq::new(4),
            at,
            change: Change::KeyCreated {
                key: edge_keys[1].clone(),
            },
        },
    ];
    for (i, event) in events.iter().enumerate() {
        write("event", &format!("event-{i}"), 0, &json(event))?;
    }
    write(
        "event",
        "batch",
        1,
        &json(&serde_json::json!({ "events": events })),
    )?;

    // wire: raw messages signed by a stranger (mode 0, kinds 0-2), signed bodies (modes 1-3).
    let stranger = Signer::from_seed_hex(&"0f".repeat(32)).expect("seed");
    let heartbeat = Heartbeat {
        manager: "manager-1".into(),
        head: Seq::new(42),
        at,
    };
    let ack = Ack {
        edge: "edge-eu-1".into(),
        region: "eu-west".into(),
        applied: Seq::new(41),
        at,
    };
    let batch = json(&serde_json::json!({ "events": events }));
    for (kind, purpose, body) in [
        (0u8, Purpose::Events, batch.clone()),
        (1, Purpose::Heartbeat, json(&heartbeat)),
        (2, Purpose::Ack, json(&ack)),
    ] {
        let mut message = stranger.sign(purpose, &body).encode().into_bytes();
        message.push(b'\n');
        message.extend_from_slice(&body);
        write("wire", &format!("raw-{kind}"), kind << 2, &message)?;
    }
    // A header that is a public key, then a signing seed, in hex (uppercase: read case-insensitively).
    let mut message = common::manager()
        .public()
        .to_hex()
        .to_uppercase()
        .into_bytes();
    message.extend_from_slice(b"\n{}");
    write("wire", "raw-public-key", 0, &message)?;
    let mut message = format!(" {} ", "0e".repeat(32)).into_bytes();
    message.extend_from_slice(b"\n{}");
    write("wire", "raw-seed", 1 << 2, &message)?;
    write("wire", "heartbeat", 1, &json(&heartbeat))?;
    write("wire", "ack", 2, &json(&ack))?;
    let registration = EdgeRegistration {
        id: "edge-eu-1".into(),
        region: "eu-west".into(),
        public_key: common::edge().public().to_hex(),
    };
    write("wire", "registration", 3, &json(&registration))?;

    // snapshot: written by SnapshotWriter with the trusted key and with a stranger's (mode 0), and a
    // structured input (mode 1).
    let snapshot = Snapshot {
        seq: Seq::new(4),
        keys: edge_keys.clone(),
    };
    write(
        "snapshot",
        "trusted",
        0,
        &write_snapshot(&Arc::new(common::manager()), &snapshot),
    )?;
    write(
        "snapshot",
        "stranger",
        8 << 1,
        &write_snapshot(&Arc::new(stranger), &snapshot),
    )?;
    let empty = Snapshot {
        seq: Seq::ZERO,
        keys: Vec::new(),
    };
    write(
        "snapshot",
        "empty",
        0,
        &write_snapshot(&Arc::new(common::manager()), &empty),
    )?;
    write(
        "snapshot",
        "structured",
        1,
        &(0u8..=255).collect::<Vec<_>>(),
    )?;

    // github: the public keys document (mode 0), a payload (mode 1), headers and body (mode 2).
    write(
        "github",
        "document",
        0,
        common::github_document().as_bytes(),
    )?;
    let payload = json(&serde_json::json!([
        {"token": keys[0].expose(), "type": "quench_api_key", "url": "https://github.invalid/a/b/blob/main/.env", "source": "content"},
        {"token": "qk_not_a_key", "type": "quench_api_key", "url": "https://github.invalid/a/b/issues/1", "source": "issue"},
        {"token": keys[2].expose(), "type": "quench_manager_token"}
    ]));
    write("github", "payload", 1, &payload)?;
    let mut headers = common::GITHUB_KEY_ID.as_bytes().to_vec();
    headers.push(0);
    headers.extend_from_slice(common::github_sign(&payload).as_bytes());
    headers.push(0);
    headers.extend_from_slice(&payload);
    write("github", "headers", 2, &headers)?;

    // usage_policy: the default, and the documented example with a request trace after a zero byte.
    let default = json(&UsagePolicy::default());
    fs::create_dir_all(root.join("usage_policy"))?;
    fs::write(root.join("usage_policy/default"), &default)?;
    let mut documented = br#"{"window_seconds": 60, "usual_windows": 60, "max_tracked_keys": 100000, "rules": [
  {"name": "many-addresses", "kind": "distinct_addresses", "more_than": 3, "action": "revoke"},
  {"name": "rate-spike", "kind": "above_usual", "factor": 1.5, "min_requests": 2, "min_history_windows": 1},
  {"name": "flood", "kind": "requests", "more_than": 5}
]}"#
    .to_vec();
    documented.push(0);
    for i in 0u8..64 {
        documented.extend_from_slice(&[
            i.wrapping_mul(37),
            i % 5,
            if i % 16 == 0 { 0x04 } else { 0 },
            i % 7,
        ]);
    }
    fs::write(root.join("usage_policy/documented"), documented)?;

    // scan: text with keys in common settings (mode 0); a planting seed and a haystack (mode 1).
    let text = format!(
        "API_KEY={}\n{{\"token\": \"{}\"}}\nexport X=tokenx{}; snake_case_identifiers_everywhere\n",
        keys[0].expose(),
        keys[1].expose(),
        keys[3].expose()
    );
    write("scan", "text", 0, text.as_bytes())?;
    let mut planting: Vec<u8> = (0u8..70).collect();
    planting.extend_from_slice(b"config:\n  key: value_with_underscores\n");
    write("scan", "planted", 64 << 1 | 1, &planting)?;

    // api: a well-formed request to every route the target drives (route byte, flags byte, the path
    // parameter and query, a newline, the body); flags 0 = the admin token and a JSON content type.
    let id = keys[0].id().to_string();
    let api_seeds: Vec<(&str, u8, String, serde_json::Value)> = vec![
        (
            "create",
            0,
            String::new(),
            serde_json::json!({
                "owner": "team-payments", "name": "ci deploys", "apis": ["orders"], "scopes": ["orders:read"],
                "expires_in": 3600, "metadata": {"env": "prod"}
            }),
        ),
        (
            "create-at",
            0,
            String::new(),
            serde_json::json!({
                "owner": "team-search", "expires_at": "2099-01-01T00:00:00Z", "issuer": "qk"
            }),
        ),
        (
            "list",
            1,
            "?owner=team-payments&status=active&api=orders&limit=10".into(),
            serde_json::Value::Null,
        ),
        ("show", 2, id.clone(), serde_json::Value::Null),
        (
            "revoke",
            3,
            format!("{id}?timeout_ms=10"),
            serde_json::json!({"reason": "leaked in a log"}),
        ),
        (
            "rotate",
            4,
            id.clone(),
            serde_json::json!({"grace_seconds": 60, "expires_in": 86400}),
        ),
        (
            "bulk-owner",
            5,
            String::new(),
            serde_json::json!({"owner": "team-payments", "reason": "offboarding"}),
        ),
        (
            "bulk-ids",
            5,
            String::new(),
            serde_json::json!({"ids": [id, "0000000001"], "reason": "incident 7"}),
        ),
        (
            "leaks",
            6,
            String::new(),
            serde_json::json!({"keys": [
                {"key": keys[0].expose(), "source": "scanner", "url": "https://git.invalid/a/b"},
                {"key": "qk_not_a_key"}
            ]}),
        ),
        (
            "alerts",
            7,
            String::new(),
            serde_json::json!({"edge": "edge-eu-1", "region": "eu-west", "alerts": [{
                "id": "0123456789abcdef0123456789abcdef", "key_id": keys[0].id(), "rule": "flood", "kind": "requests",
                "raised_at": at, "window_seconds": 60,
                "measures": {"requests": 120.0, "distinct_addresses": 3.0, "usual": 10.0, "history_windows": 5}
            }]}),
        ),
        ("alert-list", 8, "?limit=5".into(), serde_json::Value::Null),
        (
            "token",
            9,
            String::new(),
            serde_json::json!({"scopes": ["keys:read", "keys:write"], "owner": "team-payments"}),
        ),
        ("token-revoke", 10, "1".into(), serde_json::Value::Null),
        (
            "events",
            11,
            "?after=0&limit=10".into(),
            serde_json::Value::Null,
        ),
        (
            "edge",
            12,
            String::new(),
            serde_json::json!({
                "id": "edge-eu-1", "region": "eu-west", "public_key": common::edge().public().to_hex()
            }),
        ),
        (
            "audit",
            13,
            format!("?key_id={}&limit=10", keys[1].id()),
            serde_json::Value::Null,
        ),
        (
            "deliveries",
            14,
            "1?limit=10".into(),
            serde_json::Value::Null,
        ),
        ("webhook-delete", 15, "1".into(), serde_json::Value::Null),
        ("usage-policy", 16, String::new(), serde_json::Value::Null),
        (
            "verify",
            17,
            String::new(),
            serde_json::json!({
                "key": keys[0].expose(), "api": "orders", "scope": "orders:read", "client_ip": "203.0.113.9"
            }),
        ),
    ];
    for (name, route, head, body) in api_seeds {
        let mut bytes = vec![route, 0];
        bytes.extend_from_slice(head.as_bytes());
        bytes.push(b'\n');
        if !body.is_null() {
            bytes.extend_from_slice(&json(&body));
        }
        fs::create_dir_all(root.join("api"))?;
        fs::write(root.join("api").join(name), bytes)?;
    }
    let mut auth = vec![18, 0];
    auth.extend_from_slice(b"orders/list?api=orders&scope=orders:read\n");
    auth.extend_from_slice(keys[1].expose().as_bytes());
    fs::write(root.join("api/forward-auth"), auth)?;
    Ok(())
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialises")
}

fn edge_key(key: &ApiKey) -> EdgeKey {
    let alg = if key.prefix().as_str() == "acme" {
        HashAlg::Bcrypt
    } else {
        HashAlg::Sha256
    };
    EdgeKey {
        id: key.id(),
        prefix: key.prefix(),
        owner: Owner::parse("team-payments").expect("owner"),
        apis: vec![Label::parse("orders").expect("label")],
        scopes: vec![Label::parse("orders:read").expect("label")],
        expires_at: Some(Timestamp::from_millis(1_900_000_000_000)),
        revoked: false,
        verifier: Verifier::create(alg, key.secret()).expect("hash"),
    }
}
