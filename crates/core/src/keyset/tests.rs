use proptest::prelude::*;

use super::*;
use crate::{hash::HashAlg, key::ApiKey};

struct Issued {
    key: ApiKey,
    edge: EdgeKey,
}

fn issue(owner: &str, apis: &[&str], scopes: &[&str], alg: HashAlg) -> Issued {
    let key = ApiKey::generate(Prefix::default()).expect("random");
    let edge = EdgeKey {
        id: key.id(),
        prefix: key.prefix(),
        owner: Owner::parse(owner).expect("owner"),
        apis: apis.iter().map(|a| Label::parse(a).expect("api")).collect(),
        scopes: scopes
            .iter()
            .map(|s| Label::parse(s).expect("scope"))
            .collect(),
        expires_at: None,
        revoked: false,
        verifier: Verifier::create(alg, key.secret()).expect("hash"),
    };
    Issued { key, edge }
}

fn event(seq: u64, change: Change) -> Event {
    Event {
        seq: Seq::new(seq),
        at: Timestamp::from_millis(1),
        change,
    }
}

fn created(seq: u64, issued: &Issued) -> Event {
    event(
        seq,
        Change::KeyCreated {
            key: issued.edge.clone(),
        },
    )
}

fn revoked(seq: u64, id: KeyId) -> Event {
    event(
        seq,
        Change::KeyRevoked {
            id,
            reason: "test".into(),
        },
    )
}

const NOW: Timestamp = Timestamp::from_millis(1_000_000);

#[test]
fn verifies_then_refuses_after_revocation() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Sha256);
    assert_eq!(set.apply(&created(1, &a)), Ok(Applied::Changed));
    assert!(set.verify(&a.key.presented(), None, None, NOW).is_valid());
    assert_eq!(set.apply(&revoked(2, a.key.id())), Ok(Applied::Changed));
    assert_eq!(
        set.verify(&a.key.presented(), None, None, NOW).reason(),
        Some(Reason::Revoked)
    );
    assert_eq!(set.applied(), Seq::new(2));
}

#[test]
fn a_wrong_secret_is_unknown_and_reveals_no_id() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Sha256);
    set.apply(&created(1, &a)).expect("in order");
    let impostor = issue("team", &[], &[], HashAlg::Sha256);
    // Same id, other secret: build a key text with a's id and impostor's secret.
    let forged_text = {
        let text = impostor.key.expose();
        let id = a.key.id().to_string();
        let body = format!("qk_{id}{}", &text[13..text.len() - 6]);
        let mut sum = [0u8; 6];
        crate::base62::encode_fixed(u64::from(crc32fast::hash(body.as_bytes())), &mut sum);
        format!("{body}{}", std::str::from_utf8(&sum).expect("ascii"))
    };
    let forged = ApiKey::parse(&forged_text).expect("well-formed");
    match set.verify(&forged.presented(), None, None, NOW) {
        Verdict::Invalid { reason, key_id } => {
            assert_eq!(reason, Reason::Unknown);
            assert_eq!(key_id, None);
        }
        Verdict::Valid { .. } => panic!("forged key accepted"),
    }
}

#[test]
fn duplicates_are_ignored_and_gaps_reported() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Sha256);
    set.apply(&created(1, &a)).expect("in order");
    assert_eq!(set.apply(&created(1, &a)), Ok(Applied::Duplicate));
    assert_eq!(
        set.apply(&revoked(3, a.key.id())),
        Err(ApplyError::Gap {
            expected: Seq::new(2),
            got: Seq::new(3)
        })
    );
    assert!(set.verify(&a.key.presented(), None, None, NOW).is_valid());
}

#[test]
fn expiry_api_and_scope_are_checked_at_verify_time() {
    let set = KeySet::default();
    let mut a = issue("team", &["orders"], &["read"], HashAlg::Sha256);
    a.edge.expires_at = Some(Timestamp::from_millis(2_000_000));
    set.apply(&created(1, &a)).expect("in order");
    assert!(
        set.verify(&a.key.presented(), Some("orders"), Some("read"), NOW)
            .is_valid()
    );
    assert_eq!(
        set.verify(&a.key.presented(), Some("billing"), None, NOW)
            .reason(),
        Some(Reason::Forbidden)
    );
    assert_eq!(
        set.verify(&a.key.presented(), None, Some("write"), NOW)
            .reason(),
        Some(Reason::Forbidden)
    );
    let later = Timestamp::from_millis(2_000_000);
    assert_eq!(
        set.verify(&a.key.presented(), None, None, later).reason(),
        Some(Reason::Expired)
    );
    set.apply(&event(
        2,
        Change::KeyExpiryChanged {
            id: a.key.id(),
            expires_at: None,
        },
    ))
    .expect("in order");
    assert!(set.verify(&a.key.presented(), None, None, later).is_valid());
}

#[test]
fn keys_without_apis_may_call_any_api() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Sha256);
    set.apply(&created(1, &a)).expect("in order");
    assert!(
        set.verify(&a.key.presented(), Some("anything"), None, NOW)
            .is_valid()
    );
}

#[test]
fn slow_hashes_are_paid_once_and_still_refuse_wrong_secrets() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Argon2id);
    set.apply(&created(1, &a)).expect("in order");
    assert!(set.verify(&a.key.presented(), None, None, NOW).is_valid());
    // Second time goes through the in-memory cache.
    assert!(set.verify(&a.key.presented(), None, None, NOW).is_valid());
    set.apply(&revoked(2, a.key.id())).expect("in order");
    assert_eq!(
        set.verify(&a.key.presented(), None, None, NOW).reason(),
        Some(Reason::Revoked)
    );
}

/// A key text with `id` and another key's secret (a correct checksum, a wrong secret).
fn with_wrong_secret(id: KeyId) -> ApiKey {
    let other = ApiKey::generate(Prefix::default())
        .expect("random")
        .expose();
    let body = format!("qk_{id}{}", &other[13..other.len() - 6]);
    let mut sum = [0u8; 6];
    crate::base62::encode_fixed(u64::from(crc32fast::hash(body.as_bytes())), &mut sum);
    ApiKey::parse(&format!(
        "{body}{}",
        std::str::from_utf8(&sum).expect("ascii")
    ))
    .expect("well-formed")
}

#[test]
fn check_hands_back_slow_hashes_instead_of_running_them() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Argon2id);
    let fast = issue("team", &[], &[], HashAlg::Sha256);
    set.apply(&created(1, &a)).expect("in order");
    set.apply(&created(2, &fast)).expect("in order");
    assert!(matches!(
        set.check(&fast.key.presented(), None, None, NOW),
        Check::Done(Verdict::Valid { .. })
    ));
    let wrong = with_wrong_secret(a.key.id());
    let Check::Slow(slow) = set.check(&wrong.presented(), None, None, NOW) else {
        panic!("an unconfirmed slow key needs a slow check");
    };
    assert_eq!(slow.key_id(), a.key.id());
    assert!(!slow.run());
    let Check::Slow(slow) = set.check(&a.key.presented(), None, None, NOW) else {
        panic!("a failed check confirms nothing");
    };
    assert!(slow.run());
    // Confirmed: the right secret and every wrong one are now answered without a slow hash.
    assert!(matches!(
        set.check(&a.key.presented(), None, None, NOW),
        Check::Done(Verdict::Valid { .. })
    ));
    match set.check(&wrong.presented(), None, None, NOW) {
        Check::Done(verdict) => assert_eq!(verdict.reason(), Some(Reason::Unknown)),
        Check::Slow(_) => panic!("a confirmed key needs no slow hash"),
    }
}

#[test]
fn a_snapshot_keeps_confirmed_slow_secrets() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Bcrypt);
    set.apply(&created(1, &a)).expect("in order");
    assert!(set.verify(&a.key.presented(), None, None, NOW).is_valid());
    assert!(set.install_snapshot(Seq::new(3), [a.edge.clone()]));
    assert!(matches!(
        set.check(&a.key.presented(), None, None, NOW),
        Check::Done(Verdict::Valid { .. })
    ));
}

#[test]
fn snapshots_never_revive_a_revoked_key() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Sha256);
    set.apply(&created(1, &a)).expect("in order");
    set.apply(&revoked(2, a.key.id())).expect("in order");
    // A snapshot taken a moment too early still lists the key as active.
    assert!(set.install_snapshot(Seq::new(5), [a.edge.clone()]));
    assert_eq!(
        set.verify(&a.key.presented(), None, None, NOW).reason(),
        Some(Reason::Revoked)
    );
    // An older snapshot is refused outright.
    assert!(!set.install_snapshot(Seq::new(1), [a.edge.clone()]));
}

#[test]
fn a_revocation_before_creation_leaves_a_tombstone() {
    let set = KeySet::default();
    let a = issue("team", &[], &[], HashAlg::Sha256);
    set.apply(&revoked(1, a.key.id())).expect("in order");
    set.apply(&created(2, &a)).expect("in order");
    assert_eq!(
        set.verify(&a.key.presented(), None, None, NOW).reason(),
        Some(Reason::Unknown)
    );
    assert_eq!(set.is_revoked(a.key.id()), Some(true));
}

#[test]
fn profiles_are_shared_between_keys() {
    let set = KeySet::default();
    let a = issue("team", &["x"], &[], HashAlg::Sha256);
    let b = issue("team", &["x"], &[], HashAlg::Sha256);
    set.apply(&created(1, &a)).expect("in order");
    set.apply(&created(2, &b)).expect("in order");
    let (Verdict::Valid { profile: pa, .. }, Verdict::Valid { profile: pb, .. }) = (
        set.verify(&a.key.presented(), None, None, NOW),
        set.verify(&b.key.presented(), None, None, NOW),
    ) else {
        panic!("both valid");
    };
    assert!(std::ptr::eq(pa, pb));
}

#[derive(Debug, Clone)]
enum Op {
    Revoke(usize),
    Extend(usize),
    Recreate(usize),
    Replay(usize),
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize).prop_map(Op::Revoke),
        (0..4usize).prop_map(Op::Extend),
        (0..4usize).prop_map(Op::Recreate),
        (0..64usize).prop_map(Op::Replay),
        Just(Op::Snapshot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever follows a revocation -- re-creations, expiry changes, replays of any earlier event,
    /// early snapshots -- the key never verifies again.
    #[test]
    fn revocation_is_sticky(ops in prop::collection::vec(op(), 1..40)) {
        let keys: Vec<Issued> = (0..4).map(|_| issue("team", &[], &[], HashAlg::Sha256)).collect();
        let set = KeySet::default();
        let mut log: Vec<Event> = Vec::new();
        let mut revoked_ids = std::collections::HashSet::new();
        for k in &keys {
            let e = created(log.len() as u64 + 1, k);
            set.apply(&e).expect("in order");
            log.push(e);
        }
        for op in ops {
            let next = log.len() as u64 + 1;
            match op {
                Op::Revoke(i) => {
                    let e = revoked(next, keys[i].key.id());
                    set.apply(&e).expect("in order");
                    log.push(e);
                    revoked_ids.insert(keys[i].key.id());
                }
                Op::Extend(i) => {
                    let e = event(next, Change::KeyExpiryChanged { id: keys[i].key.id(), expires_at: None });
                    set.apply(&e).expect("in order");
                    log.push(e);
                }
                Op::Recreate(i) => {
                    let e = created(next, &keys[i]);
                    set.apply(&e).expect("in order");
                    log.push(e);
                }
                Op::Replay(i) => {
                    let old = &log[i % log.len()];
                    prop_assert_eq!(set.apply(old), Ok(Applied::Duplicate));
                }
                Op::Snapshot => {
                    let early = keys.iter().map(|k| k.edge.clone());
                    set.install_snapshot(set.applied(), early);
                }
            }
            for k in &keys {
                let verdict = set.verify(&k.key.presented(), None, None, NOW);
                if revoked_ids.contains(&k.key.id()) {
                    prop_assert_eq!(verdict.reason(), Some(Reason::Revoked));
                } else {
                    prop_assert!(verdict.is_valid());
                }
            }
        }
    }
}
