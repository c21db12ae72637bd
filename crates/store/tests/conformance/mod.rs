//! The store conformance suite: every backend runs these unchanged.
//!
//! A backend's test file provides `async fn fresh() -> Option<Fixture>` giving an empty store of its own
//! (`None` only where the backend is unavailable outside CI), and invokes `all_conformance_tests!()`.

use std::{collections::HashSet, sync::Arc};

use quench_core::{
    ApiKey, Change, EdgeId, HashAlg, KeyId, KeyRecord, Label, Owner, Prefix, Region, Seq,
    Timestamp, Verifier,
    record::KeyStatus,
    scope::{Scope, Scopes},
};
use quench_store::{
    Actor, AlertFilter, Attempt, Conflict, KeyFilter, NewAlert, NewDelivery, NotifyCursor,
    Selector, Store, StoreError, TokenRecord, WebhookRecord,
};

pub fn actor() -> Actor {
    Actor {
        principal: "tok_test".into(),
        source: Some("192.0.2.7".into()),
        at: Timestamp::from_millis(1_700_000_000_000),
    }
}

pub fn record(owner: &str, apis: &[&str]) -> KeyRecord {
    let key = ApiKey::generate(Prefix::default()).expect("random");
    let mut metadata = serde_json::Map::new();
    metadata.insert("team".into(), serde_json::json!("payments"));
    KeyRecord {
        id: key.id(),
        prefix: key.prefix(),
        owner: Owner::parse(owner).expect("owner"),
        name: Some(quench_core::KeyName::parse("ci key").expect("name")),
        apis: apis.iter().map(|a| Label::parse(a).expect("api")).collect(),
        scopes: vec![Label::parse("read").expect("scope")],
        metadata,
        created_at: actor().at,
        expires_at: None,
        revoked: None,
        rotated_from: None,
        replaced_by: None,
        verifier: Verifier::create(HashAlg::Sha256, key.secret()).expect("hash"),
    }
}

pub async fn creates_and_reads_back(store: Arc<dyn Store>) {
    let key = record("team-a", &["orders"]);
    let event = store.create_key(&key, &actor()).await.expect("create");
    assert_eq!(event.seq, Seq::new(1));
    assert!(matches!(&event.change, Change::KeyCreated { key: k } if k.id == key.id));
    assert_eq!(store.key(key.id).await.expect("read"), Some(key.clone()));
    assert_eq!(store.head().await.expect("head"), Seq::new(1));
    let missing = KeyId::generate().expect("random");
    assert_eq!(store.key(missing).await.expect("read"), None);
}

pub async fn creates_many_keys_in_one_transaction(store: Arc<dyn Store>) {
    let keys: Vec<KeyRecord> = (0..1_203)
        .map(|i| record("team-a", if i % 2 == 0 { &["orders"] } else { &[] }))
        .collect();
    let events = store.create_keys(&keys, &actor()).await.expect("create");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, (1..=1_203).collect::<Vec<u64>>());
    assert_eq!(
        store.events_after(Seq::ZERO, 2_000).await.expect("events"),
        events
    );
    for key in [&keys[0], &keys[601], &keys[1_202]] {
        assert_eq!(store.key(key.id).await.expect("read").as_ref(), Some(key));
        assert_eq!(
            store.audit_log(Some(key.id), 5).await.expect("audit")[0].action,
            "key.create"
        );
    }
    let orders = KeyFilter {
        api: Some(Label::parse("orders").expect("api")),
        ..KeyFilter::default()
    };
    assert_eq!(
        store
            .list_keys(&orders, None, 1_000, actor().at)
            .await
            .expect("list")
            .len(),
        602
    );
    // All or nothing: one reused id refuses the whole batch.
    let again = vec![record("team-a", &[]), keys[5].clone()];
    assert!(matches!(
        store.create_keys(&again, &actor()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.head().await.expect("head"), Seq::new(1_203));
    assert_eq!(store.key(again[0].id).await.expect("read"), None);
}

pub async fn refuses_a_reused_id(store: Arc<dyn Store>) {
    let key = record("team-a", &[]);
    store.create_key(&key, &actor()).await.expect("create");
    let again = store.create_key(&key, &actor()).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // The failed transaction handed back its sequence number.
    assert_eq!(store.head().await.expect("head"), Seq::new(1));
    let next = store
        .create_key(&record("team-a", &[]), &actor())
        .await
        .expect("create");
    assert_eq!(next.seq, Seq::new(2));
}

pub async fn revocation_is_idempotent(store: Arc<dyn Store>) {
    let key = record("team-a", &[]);
    store.create_key(&key, &actor()).await.expect("create");
    let first = store
        .revoke_key(key.id, "leaked", &actor())
        .await
        .expect("revoke");
    let event = first.event.expect("first revocation makes an event");
    assert_eq!(event.seq, Seq::new(2));
    let revoked_at = first.record.revoked.clone().expect("revoked").at;
    let mut later = actor();
    later.at = Timestamp::from_millis(later.at.as_millis() + 5_000);
    let second = store
        .revoke_key(key.id, "again", &later)
        .await
        .expect("revoke");
    assert!(second.event.is_none());
    let stored = second.record.revoked.expect("still revoked");
    assert_eq!(stored.at, revoked_at);
    assert_eq!(stored.reason, "leaked");
    assert_eq!(store.head().await.expect("head"), Seq::new(2));
    let unknown = store
        .revoke_key(KeyId::generate().expect("random"), "x", &actor())
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)));
}

pub async fn rotation_creates_a_successor_and_bounds_the_old_key(store: Arc<dyn Store>) {
    let old = record("team-a", &["orders"]);
    store.create_key(&old, &actor()).await.expect("create");
    let mut new = record("team-a", &["orders"]);
    new.rotated_from = Some(old.id);
    let grace_end = Timestamp::from_millis(actor().at.as_millis() + 60_000);
    let rotated = store
        .rotate_key(old.id, &new, grace_end, &actor())
        .await
        .expect("rotate");
    assert_eq!(rotated.old.expires_at, Some(grace_end));
    assert_eq!(rotated.old.replaced_by, Some(new.id));
    let seqs: Vec<u64> = rotated.events.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, vec![2, 3]);
    let stored_new = store.key(new.id).await.expect("read").expect("exists");
    assert_eq!(stored_new.rotated_from, Some(old.id));
    store
        .revoke_key(new.id, "done", &actor())
        .await
        .expect("revoke");
    let refused = store
        .rotate_key(new.id, &record("team-a", &[]), grace_end, &actor())
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    let missing = store
        .rotate_key(
            KeyId::generate().expect("random"),
            &record("x1", &[]),
            grace_end,
            &actor(),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

pub async fn bulk_revocation_by_owner_api_and_ids(store: Arc<dyn Store>) {
    let a1 = record("team-a", &["orders"]);
    let a2 = record("team-a", &["billing"]);
    let b1 = record("team-b", &["orders"]);
    let b2 = record("team-b", &["billing"]);
    for k in [&a1, &a2, &b1, &b2] {
        store.create_key(k, &actor()).await.expect("create");
    }
    let by_api = store
        .revoke_many(
            &Selector::Api(Label::parse("orders").expect("api")),
            None,
            "api",
            &actor(),
        )
        .await
        .expect("bulk");
    assert_eq!(as_set(&by_api.revoked), as_set(&[a1.id, b1.id]));
    assert_eq!(by_api.last_seq(), Some(Seq::new(6)));
    let by_owner = store
        .revoke_many(
            &Selector::Owner(Owner::parse("team-a").expect("owner")),
            None,
            "owner",
            &actor(),
        )
        .await
        .expect("bulk");
    assert_eq!(by_owner.revoked, vec![a2.id]);
    assert_eq!(by_owner.already_revoked, 1);
    let by_ids = store
        .revoke_many(&Selector::Ids(vec![b2.id, a1.id]), None, "ids", &actor())
        .await
        .expect("bulk");
    assert_eq!(by_ids.revoked, vec![b2.id]);
    assert_eq!(by_ids.already_revoked, 1);
    let nothing = store
        .revoke_many(&Selector::Ids(vec![b2.id]), None, "ids", &actor())
        .await
        .expect("bulk");
    assert!(nothing.revoked.is_empty());
    assert_eq!(nothing.last_seq(), None);
    assert_eq!(store.head().await.expect("head"), Seq::new(8));
}

/// More keys than one multi-row statement holds: every one revoked, with contiguous events and an audit
/// record each.
pub async fn bulk_revocation_spans_many_statements(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..1_203 {
        let key = record("big-team", &[]);
        store.create_key(&key, &actor()).await.expect("create");
        ids.push(key.id);
    }
    let outcome = store
        .revoke_many(
            &Selector::Owner(Owner::parse("big-team").expect("owner")),
            None,
            "incident",
            &actor(),
        )
        .await
        .expect("bulk");
    assert_eq!(outcome.revoked, ids);
    let seqs: Vec<u64> = outcome.events.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, (1_204..=2_406).collect::<Vec<u64>>());
    assert_eq!(store.head().await.expect("head"), Seq::new(2_406));
    let logged = store
        .events_after(Seq::new(1_203), 2_000)
        .await
        .expect("events");
    assert_eq!(logged, outcome.events);
    for id in [ids[0], ids[600], ids[1_202]] {
        let key = store.key(id).await.expect("read").expect("exists");
        assert_eq!(key.revoked.expect("revoked").reason, "incident");
        let audit = store.audit_log(Some(id), 10).await.expect("audit");
        assert_eq!(audit[0].action, "key.revoke");
    }
}

pub async fn bulk_revocation_stays_within_an_owner(store: Arc<dyn Store>) {
    let a = record("team-a", &["orders"]);
    let b = record("team-b", &["orders"]);
    for k in [&a, &b] {
        store.create_key(k, &actor()).await.expect("create");
    }
    let team_a = Owner::parse("team-a").expect("owner");
    let by_api = store
        .revoke_many(
            &Selector::Api(Label::parse("orders").expect("api")),
            Some(&team_a),
            "x",
            &actor(),
        )
        .await
        .expect("bulk");
    assert_eq!(by_api.revoked, vec![a.id]);
    let by_ids = store
        .revoke_many(&Selector::Ids(vec![b.id]), Some(&team_a), "x", &actor())
        .await
        .expect("bulk");
    assert!(by_ids.revoked.is_empty());
    assert!(
        store
            .key(b.id)
            .await
            .expect("read")
            .expect("exists")
            .revoked
            .is_none()
    );
}

fn as_set(ids: &[KeyId]) -> HashSet<KeyId> {
    ids.iter().copied().collect()
}

pub async fn lists_with_filters_and_cursor(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let owner = if i % 2 == 0 { "team-a" } else { "team-b" };
        let mut key = record(owner, if i < 2 { &["orders"] } else { &[] });
        if i == 4 {
            key.expires_at = Some(Timestamp::from_millis(1));
        }
        store.create_key(&key, &actor()).await.expect("create");
        ids.push(key.id);
    }
    store
        .revoke_key(ids[0], "x", &actor())
        .await
        .expect("revoke");
    let now = actor().at;
    let all = store
        .list_keys(&KeyFilter::default(), None, 100, now)
        .await
        .expect("list");
    let listed: Vec<KeyId> = all.iter().map(|(_, k)| k.id).collect();
    let newest_first: Vec<KeyId> = ids.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);

    let page1 = store
        .list_keys(&KeyFilter::default(), None, 2, now)
        .await
        .expect("list");
    let cursor = page1.last().map(|(c, _)| *c);
    let page2 = store
        .list_keys(&KeyFilter::default(), cursor, 2, now)
        .await
        .expect("list");
    let page3 = store
        .list_keys(&KeyFilter::default(), page2.last().map(|(c, _)| *c), 2, now)
        .await
        .expect("list");
    let paged: Vec<KeyId> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|(_, k)| k.id)
        .collect();
    assert_eq!(paged, newest_first);

    let filter = |owner: Option<&str>, status: Option<KeyStatus>, api: Option<&str>| KeyFilter {
        owner: owner.map(|o| Owner::parse(o).expect("owner")),
        status,
        api: api.map(|a| Label::parse(a).expect("api")),
    };
    let count =
        |rows: Vec<(u64, KeyRecord)>| rows.into_iter().map(|(_, k)| k.id).collect::<HashSet<_>>();
    let team_a = store
        .list_keys(&filter(Some("team-a"), None, None), None, 100, now)
        .await
        .expect("list");
    assert_eq!(count(team_a), as_set(&[ids[0], ids[2], ids[4]]));
    let revoked = store
        .list_keys(
            &filter(None, Some(KeyStatus::Revoked), None),
            None,
            100,
            now,
        )
        .await
        .expect("list");
    assert_eq!(count(revoked), as_set(&[ids[0]]));
    let expired = store
        .list_keys(
            &filter(None, Some(KeyStatus::Expired), None),
            None,
            100,
            now,
        )
        .await
        .expect("list");
    assert_eq!(count(expired), as_set(&[ids[4]]));
    let active = store
        .list_keys(&filter(None, Some(KeyStatus::Active), None), None, 100, now)
        .await
        .expect("list");
    assert_eq!(count(active), as_set(&[ids[1], ids[2], ids[3]]));
    let orders = store
        .list_keys(&filter(None, None, Some("orders")), None, 100, now)
        .await
        .expect("list");
    assert_eq!(count(orders), as_set(&[ids[0], ids[1]]));
    let combined = store
        .list_keys(
            &filter(Some("team-b"), Some(KeyStatus::Active), Some("orders")),
            None,
            100,
            now,
        )
        .await
        .expect("list");
    assert_eq!(count(combined), as_set(&[ids[1]]));
}

pub async fn events_page_in_order(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let key = record("team-a", &[]);
        store.create_key(&key, &actor()).await.expect("create");
        ids.push(key.id);
    }
    store
        .revoke_key(ids[1], "x", &actor())
        .await
        .expect("revoke");
    let all = store.events_after(Seq::ZERO, 100).await.expect("events");
    let seqs: Vec<u64> = all.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert!(
        matches!(&all[5].change, Change::KeyRevoked { id, reason } if *id == ids[1] && reason == "x")
    );
    let page = store.events_after(Seq::new(2), 2).await.expect("events");
    let seqs: Vec<u64> = page.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, vec![3, 4]);
    assert!(
        store
            .events_after(Seq::new(6), 10)
            .await
            .expect("events")
            .is_empty()
    );
}

pub async fn snapshot_is_consistent_with_head(store: Arc<dyn Store>) {
    let a = record("team-a", &[]);
    let b = record("team-a", &[]);
    store.create_key(&a, &actor()).await.expect("create");
    store.create_key(&b, &actor()).await.expect("create");
    store.revoke_key(a.id, "x", &actor()).await.expect("revoke");
    let snapshot = store.snapshot().await.expect("snapshot");
    assert_eq!(snapshot.seq, Seq::new(3));
    assert_eq!(snapshot.keys.len(), 2);
    let revoked: Vec<bool> = snapshot.keys.iter().map(|k| k.revoked).collect();
    assert_eq!(revoked, vec![true, false]);
    assert_eq!(snapshot.keys[1], b.edge_view());
}

pub async fn snapshot_pages_stop_at_their_sequence(store: Arc<dyn Store>) {
    let mut keys = Vec::new();
    for n in 0..5 {
        let mut key = record("team-a", &["billing", "search"][..n % 3]);
        if n == 2 {
            key.expires_at = Some(Timestamp::from_millis(4_000_000_000_000));
        }
        store.create_key(&key, &actor()).await.expect("create");
        keys.push(key);
    }
    // A revocation after the snapshot's sequence may show early: it only moves forward.
    store
        .revoke_key(keys[0].id, "x", &actor())
        .await
        .expect("revoke");
    let first = store.snapshot_page(Seq::new(4), 0, 3).await.expect("page");
    let ids: Vec<_> = first.iter().map(|(_, k)| k.id).collect();
    assert_eq!(ids, vec![keys[0].id, keys[1].id, keys[2].id]);
    assert!(first[0].1.revoked);
    // A page holds exactly what the edges' view of each whole record holds.
    for (_, key) in &first {
        let whole = store.key(key.id).await.expect("read").expect("the key");
        assert_eq!(key, &whole.edge_view());
    }
    let cursor = first.last().map(|(c, _)| *c).expect("cursor");
    let rest = store
        .snapshot_page(Seq::new(4), cursor, 3)
        .await
        .expect("page");
    let ids: Vec<_> = rest.iter().map(|(_, k)| k.id).collect();
    assert_eq!(
        ids,
        vec![keys[3].id],
        "keys created after the sequence are left to the log"
    );
}

pub async fn conflicts_say_what_collided(store: Arc<dyn Store>) {
    let conflict = |result: Result<(), StoreError>| match result {
        Err(StoreError::Conflict(what)) => what,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let key = record("team-a", &[]);
    store.create_key(&key, &actor()).await.expect("create");
    assert_eq!(
        conflict(store.create_key(&key, &actor()).await.map(drop)),
        Conflict::KeyId(key.id)
    );
    assert_eq!(
        conflict(
            store
                .create_keys(&[record("team-a", &[]), key.clone()], &actor())
                .await
                .map(drop)
        ),
        Conflict::KeyIds
    );
    store
        .revoke_key(key.id, "leaked", &actor())
        .await
        .expect("revoke");
    let successor = record("team-a", &[]);
    assert_eq!(
        conflict(
            store
                .rotate_key(key.id, &successor, actor().at, &actor())
                .await
                .map(drop)
        ),
        Conflict::KeyRevoked(key.id)
    );
    let secret = ApiKey::generate(Prefix::parse("qt").expect("prefix")).expect("random");
    let token = TokenRecord {
        id: secret.id(),
        verifier: Verifier::create(HashAlg::Sha256, secret.secret()).expect("hash"),
        scopes: Scopes::new(vec![Scope::KeysRead]),
        owner: None,
        created_at: actor().at,
        created_by: "bootstrap".into(),
    };
    store.create_token(&token, &actor()).await.expect("create");
    assert_eq!(
        conflict(store.create_token(&token, &actor()).await),
        Conflict::TokenId(token.id)
    );
    let edge = |key: quench_core::sign::PublicKey| quench_store::EdgeRecord {
        id: EdgeId::parse("edge-eu-1").expect("id"),
        region: Region::parse("eu").expect("region"),
        public_key: key,
        registered_at: actor().at,
        ack_key: None,
    };
    let signer = || {
        quench_core::sign::Signer::generate()
            .expect("random")
            .public()
    };
    store
        .register_edge(&edge(signer()))
        .await
        .expect("register");
    assert_eq!(
        conflict(store.register_edge(&edge(signer())).await),
        Conflict::EdgeKey(EdgeId::parse("edge-eu-1").expect("id"))
    );
    store
        .create_webhook(&webhook("wh-1"))
        .await
        .expect("create");
    assert_eq!(
        conflict(store.create_webhook(&webhook("wh-1")).await),
        Conflict::WebhookId("wh-1".into())
    );
}

pub async fn stores_tokens_as_verifiers(store: Arc<dyn Store>) {
    assert_eq!(store.count_tokens().await.expect("count"), 0);
    let secret = ApiKey::generate(Prefix::parse("qt").expect("prefix")).expect("random");
    let token = TokenRecord {
        id: secret.id(),
        verifier: Verifier::create(HashAlg::Sha256, secret.secret()).expect("hash"),
        scopes: Scopes::new(vec![Scope::KeysRead, Scope::KeysRevoke]),
        owner: Some(Owner::parse("team-a").expect("owner")),
        created_at: actor().at,
        created_by: "bootstrap".into(),
    };
    store.create_token(&token, &actor()).await.expect("create");
    let read = store.token(token.id).await.expect("read").expect("exists");
    assert_eq!(read, token);
    assert!(read.verifier.matches(secret.secret().as_bytes()));
    assert_eq!(store.count_tokens().await.expect("count"), 1);
    assert!(matches!(
        store.create_token(&token, &actor()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .token(KeyId::generate().expect("random"))
            .await
            .expect("read"),
        None
    );
}

pub async fn audits_every_mutation(store: Arc<dyn Store>) {
    let key = record("team-a", &[]);
    store.create_key(&key, &actor()).await.expect("create");
    store
        .revoke_key(key.id, "compromised", &actor())
        .await
        .expect("revoke");
    store
        .revoke_key(key.id, "again", &actor())
        .await
        .expect("revoke");
    let log = store.audit_log(Some(key.id), 10).await.expect("audit");
    let actions: Vec<&str> = log.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        vec!["key.revoke", "key.create"],
        "a no-op revocation is not a mutation"
    );
    assert_eq!(log[0].reason.as_deref(), Some("compromised"));
    assert_eq!(log[0].principal, "tok_test");
    assert_eq!(log[0].source.as_deref(), Some("192.0.2.7"));
    assert_eq!(log[0].at, actor().at);
    assert_eq!(store.audit_log(None, 1).await.expect("audit").len(), 1);
}

pub async fn registers_edges_and_replaces_keys_only_by_rotation(store: Arc<dyn Store>) {
    assert!(store.edges().await.expect("edges").is_empty());
    let first_signer = quench_core::sign::Signer::generate().expect("random");
    let first_key = first_signer.public();
    let second_key = quench_core::sign::Signer::generate()
        .expect("random")
        .public();
    let mac_key = quench_core::sign::ack::AckKey::of(&first_signer);
    let mut edge = quench_store::EdgeRecord {
        id: EdgeId::parse("edge-eu-1").expect("id"),
        region: Region::parse("eu").expect("region"),
        public_key: first_key.clone(),
        registered_at: actor().at,
        ack_key: None,
    };
    store.register_edge(&edge).await.expect("register");
    // The same key again (an edge restarting) refreshes the region, and sets the MAC key it brings.
    edge.region = Region::parse("eu-west").expect("region");
    edge.ack_key = Some(mac_key.clone());
    store.register_edge(&edge).await.expect("re-register");
    assert_eq!(store.edges().await.expect("edges"), vec![edge.clone()]);
    // A registration without one (an edge that signs its acknowledgements) keeps the stored MAC key.
    let unmaced = quench_store::EdgeRecord {
        ack_key: None,
        ..edge.clone()
    };
    store.register_edge(&unmaced).await.expect("re-register");
    assert_eq!(store.edges().await.expect("edges"), vec![edge.clone()]);

    // Another key for the same id is refused and changes nothing.
    let hijack = quench_store::EdgeRecord {
        public_key: second_key.clone(),
        region: Region::parse("elsewhere").expect("region"),
        ..edge.clone()
    };
    assert!(matches!(
        store.register_edge(&hijack).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.edges().await.expect("edges"), vec![edge.clone()]);

    // An operator's rotation replaces it, audited, and returns what was there; the old key's MAC key
    // goes with it.
    let rotated = quench_store::EdgeRecord {
        public_key: second_key.clone(),
        ack_key: None,
        ..edge.clone()
    };
    let old = store
        .rotate_edge(&edge.id, &rotated.public_key, &actor())
        .await
        .expect("rotate");
    assert_eq!(old, edge);
    assert_eq!(store.edges().await.expect("edges"), vec![rotated.clone()]);
    let log = store.audit_log(None, 1).await.expect("audit");
    assert_eq!(log[0].action, "edge.rotate");
    let reason = log[0].reason.as_deref().expect("reason");
    assert!(reason.contains(first_key.id().as_str()), "{reason}");
    assert!(reason.contains(second_key.id().as_str()), "{reason}");
    store
        .register_edge(&rotated)
        .await
        .expect("the new key registers");

    assert!(matches!(
        store
            .rotate_edge(
                &EdgeId::parse("edge-nowhere").expect("id"),
                &rotated.public_key,
                &actor()
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn the_outbox_mark_advances_only_contiguously(store: Arc<dyn Store>) {
    for _ in 0..5 {
        store
            .create_key(&record("team-a", &[]), &actor())
            .await
            .expect("create");
    }
    assert_eq!(store.published_through().await.expect("mark"), Seq::ZERO);
    store
        .mark_published(Seq::new(3), Seq::new(4))
        .await
        .expect("mark");
    assert_eq!(
        store.published_through().await.expect("mark"),
        Seq::ZERO,
        "1..2 not yet published"
    );
    store
        .mark_published(Seq::new(1), Seq::new(2))
        .await
        .expect("mark");
    assert_eq!(store.published_through().await.expect("mark"), Seq::new(2));
    store
        .mark_published(Seq::new(1), Seq::new(4))
        .await
        .expect("mark");
    assert_eq!(store.published_through().await.expect("mark"), Seq::new(4));
    store
        .mark_published(Seq::new(2), Seq::new(3))
        .await
        .expect("mark");
    assert_eq!(
        store.published_through().await.expect("mark"),
        Seq::new(4),
        "never moves back"
    );
}

/// Concurrent writers still produce a gap-free log in commit order.
pub async fn concurrent_writers_keep_the_log_gap_free(store: Arc<dyn Store>) {
    let writers = 8;
    let per_writer = 25;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..per_writer {
                let event = store
                    .create_key(&record("team-a", &[]), &actor())
                    .await
                    .expect("create");
                seqs.push(event.seq.get());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=(writers * per_writer) as u64).collect();
    assert_eq!(all, expected);
    let logged: Vec<u64> = store
        .events_after(Seq::ZERO, 1_000)
        .await
        .expect("events")
        .iter()
        .map(|e| e.seq.get())
        .collect();
    assert_eq!(logged, expected);
}

pub type BoxedStore = std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn Store>> + Send>>;

/// A fresh, empty store, and a way to open a second handle on the same database (a second manager).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub reopen: Box<dyn Fn() -> BoxedStore + Send + Sync>,
    pub _guard: Box<dyn std::any::Any + Send>,
}

/// Two managers writing at once through separate handles still produce a gap-free log.
pub async fn two_managers_keep_the_log_gap_free(fixture: Fixture) {
    let second = (fixture.reopen)().await;
    let stores = [fixture.store.clone(), second];
    let mut tasks = Vec::new();
    for (i, store) in stores.iter().cycle().take(6).enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..20 {
                let key = record(if i % 2 == 0 { "team-a" } else { "team-b" }, &[]);
                seqs.push(
                    store
                        .create_key(&key, &actor())
                        .await
                        .expect("create")
                        .seq
                        .get(),
                );
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=120).collect();
    assert_eq!(all, expected);
    for store in &stores {
        let logged: Vec<u64> = store
            .events_after(Seq::ZERO, 1_000)
            .await
            .expect("events")
            .iter()
            .map(|e| e.seq.get())
            .collect();
        assert_eq!(logged, expected);
    }
}

fn alert(id: &str, key: KeyId, owner: &str) -> NewAlert {
    NewAlert {
        id: id.into(),
        key_id: key,
        owner: Some(Owner::parse(owner).expect("owner")),
        rule: "many-addresses".into(),
        kind: "distinct_addresses".into(),
        action: quench_core::usage::Action::Alert,
        edge: "edge-1".into(),
        raised_at: Timestamp::from_millis(1_700_000_000_000),
        received_at: Timestamp::from_millis(1_700_000_000_100),
        details: r#"{"distinct_addresses":61.0}"#.into(),
    }
}

pub async fn records_alerts_once_and_pages_them(store: Arc<dyn Store>) {
    let (a, b) = (
        KeyId::generate().expect("id"),
        KeyId::generate().expect("id"),
    );
    let (first, new) = store
        .record_alert(&alert("al-1", a, "team-a"))
        .await
        .expect("record");
    assert!(new);
    assert_eq!(first.alert, alert("al-1", a, "team-a"));
    // A retried report is the same alert.
    let (again, new) = store
        .record_alert(&alert("al-1", a, "team-a"))
        .await
        .expect("replay");
    assert!(!new);
    assert_eq!(again, first);
    store
        .record_alert(&alert("al-2", b, "team-b"))
        .await
        .expect("record");
    store
        .record_alert(&alert("al-3", a, "team-a"))
        .await
        .expect("record");
    let all = store
        .alerts(&AlertFilter::default(), None, 10)
        .await
        .expect("list");
    let ids: Vec<&str> = all.iter().map(|r| r.alert.id.as_str()).collect();
    assert_eq!(ids, ["al-3", "al-2", "al-1"]);
    let page = store
        .alerts(&AlertFilter::default(), Some(all[0].seq), 1)
        .await
        .expect("page");
    assert_eq!(page[0].alert.id, "al-2");
    let for_a = AlertFilter {
        key_id: Some(a),
        owner: None,
    };
    assert_eq!(
        store.alerts(&for_a, None, 10).await.expect("by key").len(),
        2
    );
    let for_b = AlertFilter {
        key_id: None,
        owner: Some(Owner::parse("team-b").expect("owner")),
    };
    assert_eq!(
        store
            .alerts(&for_b, None, 10)
            .await
            .expect("by owner")
            .len(),
        1
    );
    let after: Vec<String> = store
        .alerts_after(first.seq, 10)
        .await
        .expect("after")
        .into_iter()
        .map(|r| r.alert.id)
        .collect();
    assert_eq!(after, ["al-2", "al-3"]);
    assert_eq!(store.last_alert_seq().await.expect("last"), all[0].seq);
}

fn webhook(id: &str) -> WebhookRecord {
    WebhookRecord {
        id: id.into(),
        url: "https://hooks.example/quench".into(),
        secret: "whsec_test".into(),
        events: vec!["key.revoked".into(), "alert.raised".into()],
        owner: None,
        created_at: actor().at,
        created_by: "tok_test".into(),
        from_seq: Seq::new(3),
        from_alert: 1,
    }
}

fn delivery(hook: &str, n: u32) -> NewDelivery {
    NewDelivery {
        webhook_id: hook.into(),
        event_type: "key.revoked".into(),
        payload: format!(r#"{{"n":{n}}}"#),
        created_at: Timestamp::from_millis(1_000 + i64::from(n)),
    }
}

pub async fn finds_the_owners_of_many_keys(store: Arc<dyn Store>) {
    let keys: Vec<KeyRecord> = (0..1_203)
        .map(|i| record(if i % 3 == 0 { "team-a" } else { "team-b" }, &[]))
        .collect();
    store.create_keys(&keys, &actor()).await.expect("create");
    let mut ids: Vec<KeyId> = keys.iter().map(|k| k.id).collect();
    ids.push(KeyId::generate().expect("id"));
    let mut owners = store.owners(&ids).await.expect("owners");
    owners.sort_by_key(|(id, _)| *id);
    let mut expected: Vec<(KeyId, Owner)> = keys.iter().map(|k| (k.id, k.owner.clone())).collect();
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(
        owners, expected,
        "every known id once, the unknown one left out"
    );
    assert!(store.owners(&[]).await.expect("none").is_empty());
}

pub async fn webhooks_are_created_listed_and_deleted(store: Arc<dyn Store>) {
    store
        .create_webhook(&webhook("wh-1"))
        .await
        .expect("create");
    assert!(matches!(
        store.create_webhook(&webhook("wh-1")).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .create_webhook(&webhook("wh-2"))
        .await
        .expect("create");
    let hooks = store.webhooks().await.expect("list");
    assert_eq!(hooks, vec![webhook("wh-1"), webhook("wh-2")]);
    assert!(
        !format!("{:?}", hooks[0]).contains("whsec_test"),
        "the secret never prints"
    );
    let at = Timestamp::from_millis(5_000);
    assert!(store.delete_webhook("wh-1", at).await.expect("delete"));
    assert!(!store.delete_webhook("wh-1", at).await.expect("again"));
    assert!(matches!(
        store.delete_webhook("wh-none", at).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.webhooks().await.expect("list"), vec![webhook("wh-2")]);
}

pub async fn the_notify_cursor_moves_only_from_where_it_is(store: Arc<dyn Store>) {
    store
        .create_webhook(&webhook("wh-1"))
        .await
        .expect("create");
    let start = store.notify_cursor().await.expect("cursor");
    assert_eq!(start, NotifyCursor::default());
    let to = NotifyCursor {
        event_seq: Seq::new(7),
        alert_seq: 2,
    };
    assert!(
        store
            .advance_notify(start, to, &[delivery("wh-1", 1)])
            .await
            .expect("advance")
    );
    // A second manager that read the old cursor cannot fan the same range out again.
    assert!(
        !store
            .advance_notify(start, to, &[delivery("wh-1", 1)])
            .await
            .expect("stale")
    );
    assert_eq!(store.notify_cursor().await.expect("cursor"), to);
    assert_eq!(store.pending_deliveries().await.expect("pending"), 1);
    // A delivery for a webhook that does not exist is refused, and nothing moves.
    let further = NotifyCursor {
        event_seq: Seq::new(9),
        alert_seq: 2,
    };
    assert!(
        store
            .advance_notify(to, further, &[delivery("wh-none", 2)])
            .await
            .is_err()
    );
    assert_eq!(store.notify_cursor().await.expect("cursor"), to);
    assert_eq!(store.pending_deliveries().await.expect("pending"), 1);
}

pub async fn deliveries_are_leased_retried_and_finished(store: Arc<dyn Store>) {
    store
        .create_webhook(&webhook("wh-1"))
        .await
        .expect("create");
    let batch: Vec<NewDelivery> = (1..=3).map(|n| delivery("wh-1", n)).collect();
    let to = NotifyCursor {
        event_seq: Seq::new(5),
        alert_seq: 0,
    };
    assert!(
        store
            .advance_notify(NotifyCursor::default(), to, &batch)
            .await
            .expect("advance")
    );
    let now = Timestamp::from_millis(10_000);
    let lease = Timestamp::from_millis(40_000);
    let claimed = store.claim_deliveries(now, lease, 2).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    assert_eq!(claimed[0].delivery, batch[0]);
    assert_eq!(claimed[0].attempts, 0);
    // Leased: not handed out again until the lease ends.
    let rest = store.claim_deliveries(now, lease, 10).await.expect("claim");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].delivery, batch[2]);
    assert!(
        store
            .claim_deliveries(now, lease, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    store
        .finish_delivery(claimed[0].id, &Attempt::Delivered { at: now })
        .await
        .expect("delivered");
    store
        .finish_delivery(
            claimed[1].id,
            &Attempt::Retry {
                next: Timestamp::from_millis(20_000),
                error: "HTTP 500".into(),
            },
        )
        .await
        .expect("retry");
    store
        .finish_delivery(
            rest[0].id,
            &Attempt::GaveUp {
                at: now,
                error: "connection refused".into(),
            },
        )
        .await
        .expect("gave up");
    assert_eq!(store.pending_deliveries().await.expect("pending"), 1);
    // Due again at its retry time, with its attempt counted.
    let later = Timestamp::from_millis(20_000);
    let retried = store
        .claim_deliveries(later, lease, 10)
        .await
        .expect("claim");
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, claimed[1].id);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("HTTP 500"));
    let listed = store.deliveries("wh-1", 10).await.expect("list");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2].delivered_at, Some(now));
    assert_eq!(listed[0].failed_at, Some(now));
    // Deleting the webhook abandons what is still pending.
    store.delete_webhook("wh-1", later).await.expect("delete");
    assert_eq!(store.pending_deliveries().await.expect("pending"), 0);
    let after = Timestamp::from_millis(50_000);
    assert!(
        store
            .claim_deliveries(after, after, 10)
            .await
            .expect("claim")
            .is_empty()
    );
}

#[macro_export]
macro_rules! conformance_suite {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fixture) = fresh().await else { return };
                conformance::$name(fixture.store.clone()).await;
            }
        )*
    };
}

#[macro_export]
macro_rules! all_conformance_tests {
    () => {
        conformance_suite!(
            creates_and_reads_back,
            refuses_a_reused_id,
            conflicts_say_what_collided,
            creates_many_keys_in_one_transaction,
            revocation_is_idempotent,
            rotation_creates_a_successor_and_bounds_the_old_key,
            bulk_revocation_by_owner_api_and_ids,
            bulk_revocation_stays_within_an_owner,
            bulk_revocation_spans_many_statements,
            lists_with_filters_and_cursor,
            events_page_in_order,
            snapshot_is_consistent_with_head,
            stores_tokens_as_verifiers,
            snapshot_pages_stop_at_their_sequence,
            audits_every_mutation,
            concurrent_writers_keep_the_log_gap_free,
            registers_edges_and_replaces_keys_only_by_rotation,
            the_outbox_mark_advances_only_contiguously,
            records_alerts_once_and_pages_them,
            webhooks_are_created_listed_and_deleted,
            finds_the_owners_of_many_keys,
            the_notify_cursor_moves_only_from_where_it_is,
            deliveries_are_leased_retried_and_finished,
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_managers_keep_the_log_gap_free() {
            let Some(fixture) = fresh().await else { return };
            conformance::two_managers_keep_the_log_gap_free(fixture).await;
        }
    };
}
