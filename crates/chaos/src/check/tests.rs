//! The checker against small hand-written histories: a clean one passes, and each kind of breach is
//! reported under its property.

use super::*;
use crate::history::{Key, Operation, Verification};

const RULES: Rules = Rules {
    max_staleness_us: 4_000_000,
    allowance_us: 250_000,
};

/// Two keys on two edges: `k0` revoked with `wait=all` confirmed by both edges (call from 1 s to 1.1 s),
/// `k1` created and left alone.
fn base() -> (History, Final) {
    let mut history = History {
        edges: vec!["e0".into(), "e1".into()],
        ..History::default()
    };
    for id in ["k0", "k1"] {
        history.keys.push(Key {
            id: id.into(),
            owner: "o".into(),
            created: (0, 10),
        });
    }
    history.operations.push(Operation {
        start: 1_000_000,
        end: 1_100_000,
        manager: 0,
        change: Change::Revoke {
            key: 0,
            wait_all: true,
        },
        outcome: Outcome::Ok,
        confirmed_by: vec!["e0".into(), "e1".into()],
    });
    for (start, edge, key, answer) in [
        (500_000, 0, 0, Answer::Valid),
        (1_200_000, 0, 0, Answer::Revoked),
        (1_200_000, 1, 1, Answer::Valid),
    ] {
        history.verifications.push(Verification {
            start,
            end: start + 1000,
            edge,
            key,
            answer,
        });
    }
    let finals = Final {
        keys: vec![
            Some(KeyState {
                status: "revoked".into(),
            }),
            Some(KeyState {
                status: "active".into(),
            }),
        ],
        edges: ["e0", "e1"]
            .map(|id| EdgeState {
                id: id.into(),
                applied: Some(7),
                head: Some(7),
                answers: vec![Answer::Revoked, Answer::Valid],
            })
            .to_vec(),
    };
    (history, finals)
}

fn properties(history: &History, finals: &Final) -> Vec<u8> {
    check(history, finals, RULES, 10)
        .into_iter()
        .map(|v| v.property)
        .collect()
}

fn valid_at(history: &mut History, start: Micros, edge: u16, key: u32) {
    history.verifications.push(Verification {
        start,
        end: start + 1000,
        edge,
        key,
        answer: Answer::Valid,
    });
}

#[test]
fn a_clean_history_passes() {
    let (history, finals) = base();
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
}

#[test]
fn valid_after_a_confirmation_breaks_property_1() {
    let (mut history, finals) = base();
    valid_at(&mut history, 1_150_000, 1, 0);
    assert_eq!(properties(&history, &finals), vec![1]);
}

/// A valid answer that started before the confirmation arrived is allowed.
#[test]
fn valid_before_the_confirmation_is_allowed() {
    let (mut history, finals) = base();
    valid_at(&mut history, 1_050_000, 1, 0);
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
}

/// An edge outside the confirmation (partitioned) may answer valid up to max_staleness + allowance
/// after the revocation, and not later.
#[test]
fn an_unconfirmed_edge_is_bound_by_max_staleness() {
    let (mut history, mut finals) = base();
    history.edges.push("e2".into());
    finals.edges.push(EdgeState {
        id: "e2".into(),
        ..finals.edges[0].clone()
    });
    valid_at(&mut history, 1_100_000 + 4_200_000, 2, 0);
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
    valid_at(&mut history, 1_100_000 + 4_300_000, 2, 0);
    assert_eq!(properties(&history, &finals), vec![2]);
}

/// A revocation whose answer was lost is dated by the first edge that refused the key.
#[test]
fn a_lost_answer_is_dated_by_the_first_edge_that_refused() {
    let (mut history, mut finals) = base();
    history.operations[0].outcome = Outcome::Indeterminate("timed out".into());
    history.operations[0].confirmed_by.clear();
    history.edges.push("e2".into());
    finals.edges.push(EdgeState {
        id: "e2".into(),
        ..finals.edges[0].clone()
    });
    // e0 refused it in a verification ending at 1.201 s: it had committed by then.
    valid_at(&mut history, 1_201_000 + 4_200_000, 2, 0);
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
    valid_at(&mut history, 1_201_000 + 4_300_000, 2, 0);
    assert_eq!(properties(&history, &finals), vec![2]);
}

/// With no answer and no edge refusing it during the run, a revocation has no date to check against;
/// property 3 still requires every edge to refuse it after healing.
#[test]
fn an_undated_revocation_is_left_to_property_3() {
    let (mut history, finals) = base();
    history.operations[0].outcome = Outcome::Indeterminate("timed out".into());
    history.operations[0].confirmed_by.clear();
    history
        .verifications
        .retain(|v| v.answer != Answer::Revoked);
    valid_at(&mut history, 60_000_000, 1, 0);
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
}

#[test]
fn a_lost_revocation_breaks_property_3() {
    let (history, mut finals) = base();
    finals.keys[0] = Some(KeyState {
        status: "active".into(),
    });
    assert_eq!(properties(&history, &finals), vec![3]);
}

#[test]
fn a_revoked_key_valid_on_one_edge_after_healing_breaks_properties_3_and_4() {
    let (history, mut finals) = base();
    finals.edges[1].answers[0] = Answer::Valid;
    assert_eq!(properties(&history, &finals), vec![3, 4]);
}

#[test]
fn a_key_revoked_that_nobody_asked_to_revoke_breaks_property_3() {
    let (history, mut finals) = base();
    finals.keys[1] = Some(KeyState {
        status: "revoked".into(),
    });
    for edge in &mut finals.edges {
        edge.answers[1] = Answer::Revoked;
    }
    assert_eq!(properties(&history, &finals), vec![3, 3, 3]);
}

#[test]
fn edges_on_different_heads_break_property_4() {
    let (history, mut finals) = base();
    finals.edges[1].applied = Some(6);
    assert_eq!(properties(&history, &finals), vec![4]);
}

/// A bulk revocation by owner takes every key of the owner created before it began; a key created
/// during it may go either way, and one created after it is untouched.
#[test]
fn a_bulk_revocation_by_owner_covers_keys_created_before_it() {
    let (mut history, mut finals) = base();
    history.operations.push(Operation {
        start: 2_000_000,
        end: 2_100_000,
        manager: 1,
        change: Change::BulkOwner {
            owner: "o".into(),
            revoked: vec![],
        },
        outcome: Outcome::Ok,
        confirmed_by: vec![],
    });
    // k1 stays active in the store and valid on both edges: lost, three times over.
    assert_eq!(properties(&history, &finals), vec![3, 3, 3]);
    finals.keys[1] = Some(KeyState {
        status: "revoked".into(),
    });
    for edge in &mut finals.edges {
        edge.answers[1] = Answer::Revoked;
    }
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
}

#[test]
fn descriptions_are_capped_but_every_breach_is_counted() {
    let (mut history, finals) = base();
    for i in 0..5 {
        valid_at(&mut history, 1_150_000 + i, 1, 0);
    }
    let found = check(&history, &finals, RULES, 2);
    assert_eq!(found.len(), 3);
    assert!(found[2].message.contains("3 more"), "{found:?}");
}

/// The edges a bulk revocation by owner names confirm it for the keys it took.
#[test]
fn a_bulk_revocation_by_owner_binds_the_edges_that_confirmed_it() {
    let (mut history, mut finals) = base();
    history.operations.push(Operation {
        start: 2_000_000,
        end: 2_100_000,
        manager: 0,
        change: Change::BulkOwner {
            owner: "o".into(),
            revoked: vec![1],
        },
        outcome: Outcome::Ok,
        confirmed_by: vec!["e1".into()],
    });
    finals.keys[1] = Some(KeyState {
        status: "revoked".into(),
    });
    for edge in &mut finals.edges {
        edge.answers[1] = Answer::Revoked;
    }
    valid_at(&mut history, 2_150_000, 1, 1);
    assert_eq!(properties(&history, &finals), vec![1]);
}

/// A bulk revocation by owner whose answer was lost may commit long after the client gave up, taking keys
/// created in between: those keys may end up revoked without a breach.
#[test]
fn a_lost_bulk_revocation_by_owner_may_take_keys_created_after_it() {
    let (mut history, mut finals) = base();
    history.keys[1].created = (3_000_000, 3_010_000);
    history.operations.push(Operation {
        start: 2_000_000,
        end: 2_100_000,
        manager: 0,
        change: Change::BulkOwner {
            owner: "o".into(),
            revoked: vec![],
        },
        outcome: Outcome::Indeterminate("timed out".into()),
        confirmed_by: vec![],
    });
    finals.keys[1] = Some(KeyState {
        status: "revoked".into(),
    });
    for edge in &mut finals.edges {
        edge.answers[1] = Answer::Revoked;
    }
    assert_eq!(properties(&history, &finals), Vec::<u8>::new());
    // Had the call answered, a key created after it could not have been taken.
    history.operations.last_mut().expect("op").outcome = Outcome::Ok;
    assert_eq!(properties(&history, &finals), vec![3, 3, 3]);
}
