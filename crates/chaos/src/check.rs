//! The checker: reads a finished history and what the deployment holds after healing, and reports every
//! breach of Quench's safety property.
//!
//! 1. **Confirmed means refused.** Once a `wait=all` answer named an edge as having applied a revocation
//!    (or a rotation that ended the key), no verification at that edge started after that answer is
//!    `valid`.
//! 2. **Bounded staleness everywhere.** No edge, partitioned or not, answers `valid` for a verification
//!    started more than `max_staleness` plus the clock allowance after the revocation committed. The
//!    commit is dated from above, by the first of: the answer of a call that showed the key revoked or
//!    ended, and the end of the first verification an edge answered `revoked` or `expired` (the edge had
//!    applied it, so it had committed). The `revoked_at` a manager stamps is not used: it is taken when
//!    the transaction starts, and a slow or paused transaction commits later.
//! 3. **Nothing lost, nothing invented.** Every key a client saw revoked (or ended by a rotation) is so in
//!    the store after every crash and refused by every edge; every key a client saw created and never
//!    asked to revoke is active and `valid` on every edge.
//! 4. **Convergence.** After healing every edge holds the same log head, the one the managers signed, and
//!    answers the same for every key.

use std::collections::HashMap;

use crate::history::{Answer, Change, History, Micros, Outcome};

/// A key as the managers hold it after healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// `active`, `revoked` or `expired`.
    pub status: String,
}

/// One edge after healing.
#[derive(Debug, Clone)]
pub struct EdgeState {
    pub id: String,
    pub applied: Option<u64>,
    pub head: Option<u64>,
    /// Its answer for every key of the history, in order.
    pub answers: Vec<Answer>,
}

/// What the deployment holds after healing.
#[derive(Debug, Clone, Default)]
pub struct Final {
    /// Per key of the history; `None` when no manager could show it.
    pub keys: Vec<Option<KeyState>>,
    pub edges: Vec<EdgeState>,
}

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_staleness_us: Micros,
    pub allowance_us: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: u8,
    pub message: String,
}

/// What the operations say of one key.
#[derive(Debug, Default, Clone)]
struct Fate {
    /// Edges that confirmed the key's end, with when that answer arrived.
    confirmed: Vec<(String, Micros)>,
    /// Some call may have revoked or ended it (whatever came of the call).
    targeted: bool,
    /// The earliest answer that showed it revoked.
    revoked_seen: Option<Micros>,
    /// The earliest answer that showed it ended by a rotation.
    rotated_seen: Option<Micros>,
}

impl Fate {
    fn saw_end(&mut self, at: Micros, rotated: bool) {
        let slot = if rotated {
            &mut self.rotated_seen
        } else {
            &mut self.revoked_seen
        };
        *slot = Some(slot.map_or(at, |s| s.min(at)));
    }

    fn confirm(&mut self, by: &[String], at: Micros) {
        self.confirmed.extend(by.iter().map(|e| (e.clone(), at)));
    }
}

fn fates(history: &History) -> Vec<Fate> {
    let mut fates = vec![Fate::default(); history.keys.len()];
    for op in &history.operations {
        let ok = op.outcome == Outcome::Ok;
        match &op.change {
            Change::Create { .. } => {}
            Change::Revoke { key, .. } => {
                let fate = &mut fates[*key as usize];
                fate.targeted = true;
                if ok {
                    fate.saw_end(op.end, false);
                    fate.confirm(&op.confirmed_by, op.end);
                }
            }
            Change::BulkIds { keys, .. } => {
                for key in keys {
                    let fate = &mut fates[*key as usize];
                    fate.targeted = true;
                    if ok {
                        fate.saw_end(op.end, false);
                        fate.confirm(&op.confirmed_by, op.end);
                    }
                }
            }
            Change::BulkOwner { owner, revoked } => {
                // A call whose answer was lost may still commit later (a paused manager finishes it when
                // it resumes), taking keys created after the client gave up: any key of the owner.
                let lost = matches!(op.outcome, Outcome::Indeterminate(_));
                for (i, key) in history.keys.iter().enumerate() {
                    if &key.owner != owner || (!lost && key.created.0 >= op.end) {
                        continue;
                    }
                    fates[i].targeted = true;
                    let taken = revoked.contains(&(i as u32));
                    // Created before the call began: the bulk revocation took it (or found it revoked).
                    if ok && (key.created.1 < op.start || taken) {
                        fates[i].saw_end(op.end, false);
                    }
                    // The edges that applied this revocation applied it for the keys it took.
                    if ok && taken {
                        fates[i].confirm(&op.confirmed_by, op.end);
                    }
                }
            }
            Change::Rotate { key, .. } => {
                let fate = &mut fates[*key as usize];
                fate.targeted = true;
                if ok {
                    fate.saw_end(op.end, true);
                    fate.confirm(&op.confirmed_by, op.end);
                }
            }
            Change::Leak { key, revoked } => {
                let fate = &mut fates[*key as usize];
                fate.targeted = true;
                if ok && *revoked {
                    fate.saw_end(op.end, false);
                }
            }
        }
    }
    fates
}

/// Every violation in the history, at most `limit` described per property (the rest counted).
pub fn check(history: &History, finals: &Final, rules: Rules, limit: usize) -> Vec<Violation> {
    let fates = fates(history);
    let mut found = Found::new(limit);
    confirmed_means_refused(history, &fates, &mut found);
    bounded_staleness(history, &fates, rules, &mut found);
    nothing_lost_nothing_invented(history, &fates, finals, &mut found);
    convergence(history, finals, &mut found);
    found.finish()
}

/// Violations found so far: described up to a limit per property, all counted.
struct Found {
    limit: usize,
    described: Vec<Violation>,
    counts: [usize; 5],
}

impl Found {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            described: Vec::new(),
            counts: [0; 5],
        }
    }

    fn add(&mut self, property: u8, message: impl FnOnce() -> String) {
        let count = &mut self.counts[usize::from(property)];
        *count += 1;
        if *count <= self.limit {
            self.described.push(Violation {
                property,
                message: message(),
            });
        }
    }

    fn finish(mut self) -> Vec<Violation> {
        for property in 1..=4u8 {
            let count = self.counts[usize::from(property)];
            if count > self.limit {
                self.described.push(Violation {
                    property,
                    message: format!("... and {} more of property {property}", count - self.limit),
                });
            }
        }
        self.described
    }
}

fn confirmed_means_refused(history: &History, fates: &[Fate], found: &mut Found) {
    for v in history
        .verifications
        .iter()
        .filter(|v| v.answer == Answer::Valid)
    {
        let edge = &history.edges[usize::from(v.edge)];
        let fate = &fates[v.key as usize];
        if let Some((_, at)) = fate
            .confirmed
            .iter()
            .find(|(by, at)| by == edge && *at < v.start)
        {
            found.add(1, || {
                format!(
                    "edge {edge} answered valid for key {} at {} (verification started {} µs after it confirmed the key's end at {at})",
                    history.keys[v.key as usize].id,
                    v.start,
                    v.start - at
                )
            });
        }
    }
}

fn bounded_staleness(history: &History, fates: &[Fate], rules: Rules, found: &mut Found) {
    let mut refused: Vec<Option<Micros>> = vec![None; fates.len()];
    for v in &history.verifications {
        if matches!(v.answer, Answer::Revoked | Answer::Expired) {
            let first = &mut refused[v.key as usize];
            *first = Some(first.map_or(v.end, |f| f.min(v.end)));
        }
    }
    let deadlines: Vec<Option<(Micros, &str)>> = fates
        .iter()
        .zip(refused)
        .map(|(fate, refused)| {
            let seen = [fate.revoked_seen, fate.rotated_seen]
                .into_iter()
                .flatten()
                .min();
            match (seen, refused) {
                (Some(at), Some(by_edge)) if by_edge < at => Some((by_edge, "an edge refusing it")),
                (Some(at), _) => Some((at, "the answer that showed it")),
                (None, Some(by_edge)) => Some((by_edge, "an edge refusing it")),
                (None, None) => None,
            }
        })
        .collect();
    for v in history
        .verifications
        .iter()
        .filter(|v| v.answer == Answer::Valid)
    {
        let Some((ended, dated_by)) = deadlines[v.key as usize] else {
            continue;
        };
        let deadline = ended + rules.max_staleness_us + rules.allowance_us;
        if v.start > deadline {
            found.add(2, || {
                format!(
                    "edge {} answered valid for key {} at {}, {} ms after it had ended by {ended} (dated by {dated_by}); the bound is {} ms",
                    history.edges[usize::from(v.edge)],
                    history.keys[v.key as usize].id,
                    v.start,
                    (v.start - ended) / 1000,
                    (rules.max_staleness_us + rules.allowance_us) / 1000
                )
            });
        }
    }
}

fn nothing_lost_nothing_invented(
    history: &History,
    fates: &[Fate],
    finals: &Final,
    found: &mut Found,
) {
    for (i, (key, fate)) in history.keys.iter().zip(fates).enumerate() {
        let Some(Some(state)) = finals.keys.get(i) else {
            found.add(3, || {
                format!(
                    "key {} could not be read from any manager after healing",
                    key.id
                )
            });
            continue;
        };
        let must_end = fate.revoked_seen.is_some() || fate.rotated_seen.is_some();
        let allowed: &[&str] = if fate.revoked_seen.is_some() {
            &["revoked"]
        } else if must_end {
            &["expired", "revoked"]
        } else if !fate.targeted {
            &["active"]
        } else {
            &["active", "expired", "revoked"]
        };
        if !allowed.contains(&state.status.as_str()) {
            found.add(3, || {
                format!(
                    "key {} is {} in the store, but the clients saw it {}",
                    key.id,
                    state.status,
                    if must_end {
                        "ended"
                    } else {
                        "created and never revoked"
                    }
                )
            });
        }
        for edge in &finals.edges {
            let answer = edge.answers.get(i).copied().unwrap_or(Answer::Nothing);
            let wrong = if must_end {
                answer == Answer::Valid
            } else {
                !fate.targeted && answer != Answer::Valid
            };
            if wrong {
                found.add(3, || {
                    format!(
                        "edge {} answers {answer:?} for key {} after healing, which the clients saw {}",
                        edge.id,
                        key.id,
                        if must_end { "ended" } else { "created and never revoked" }
                    )
                });
            }
        }
    }
}

fn convergence(history: &History, finals: &Final, found: &mut Found) {
    let heads: HashMap<Option<u64>, Vec<&str>> =
        finals.edges.iter().fold(HashMap::new(), |mut by, edge| {
            by.entry(edge.applied).or_default().push(edge.id.as_str());
            by
        });
    let signed = finals.edges.iter().filter_map(|e| e.head).max();
    let caught_up = finals
        .edges
        .iter()
        .all(|e| e.applied.is_some() && e.applied >= signed);
    if heads.len() > 1 || !caught_up {
        found.add(4, || {
            format!("after healing the edges hold different log heads (signed head {signed:?}): {heads:?}")
        });
    }
    for (i, key) in history.keys.iter().enumerate() {
        let answers: HashMap<Answer, Vec<&str>> =
            finals.edges.iter().fold(HashMap::new(), |mut by, edge| {
                let answer = edge.answers.get(i).copied().unwrap_or(Answer::Nothing);
                by.entry(answer).or_default().push(edge.id.as_str());
                by
            });
        if answers.len() > 1 {
            found.add(4, || {
                format!(
                    "after healing the edges disagree on key {}: {answers:?}",
                    key.id
                )
            });
        }
    }
}

#[cfg(test)]
mod tests;
