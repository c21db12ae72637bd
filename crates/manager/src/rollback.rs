//! A store whose log went backwards: restored from an older backup, or pointed at another deployment's
//! database.
//!
//! The log's sequence numbers are the one order every edge applies. A store that lost the end of its log
//! would hand those numbers out again for other changes, which edges that applied the old ones skip as
//! already seen; and its snapshots would show keys revoked after the backup as valid to every new edge.
//! So a manager that sees signed proof of a longer log than its store holds stops vouching for anything
//! until an operator resolves it: it refuses to start, or (found while running) answers every API call
//! but health and metrics with 503 and stops its heartbeats, so edges fail closed after `max_staleness`.
//!
//! Two witnesses hold such proof: the bus keeps the last batch of events it carried (signed by a key this
//! deployment trusts), and every edge acknowledges the sequence it has applied (signed with its own key).

use std::sync::atomic::Ordering;

use quench_core::Seq;

use crate::Manager;

/// Who showed that the log once went further than the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Witness {
    /// The last batch of events on the bus.
    Bus,
    /// An edge's signed acknowledgement.
    Edge(String),
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bus => f.write_str("the bus"),
            Self::Edge(id) => write!(f, "edge {id}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the store's log ends at {store_head}, but {witness} holds signed proof of events up to {seen}: the \
     database was restored from an older backup or is not this deployment's. Quench serves nothing until \
     it points at a database at least that new (docs/operations.md, \"Backups and restores\")"
)]
pub struct LogBehind {
    pub store_head: Seq,
    pub seen: Seq,
    pub witness: Witness,
}

/// Why a manager could not start its background work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] quench_bus::BusError),
    #[error("reading the log head: {0}")]
    Store(#[from] quench_store::StoreError),
    #[error(transparent)]
    LogBehind(#[from] LogBehind),
}

/// Whether a witness's `seen` proves the log once went past `store_head`.
pub fn behind(store_head: Seq, seen: Seq, witness: Witness) -> Option<LogBehind> {
    (seen > store_head).then_some(LogBehind {
        store_head,
        seen,
        witness,
    })
}

impl Manager {
    /// Set once the store is known to be behind; never cleared (a restart after the operator's fix is
    /// the way back).
    pub fn log_behind(&self) -> Option<&LogBehind> {
        self.log_behind.get()
    }

    /// Remembers that the store's log reaches `head` (read from it, or just committed to it), so that
    /// acknowledgements up to there are checked without a read: only one past every head this manager
    /// has seen, normally a change another manager just committed, costs a read of the store.
    pub(crate) fn note_head(&self, head: Seq) {
        self.known_head.fetch_max(head.get(), Ordering::Relaxed);
    }

    fn halt(&self, found: LogBehind) {
        if self.log_behind.set(found.clone()).is_ok() {
            tracing::error!(%found, "refusing to serve");
        }
    }

    /// At start: the last batch on the bus, if one this deployment signed, must not be past the store.
    pub(crate) async fn check_log_against_bus(&self) -> Result<(), StartError> {
        // Unreadable (older NATS permissions without the stream's MSG.GET, say): the edges' signed
        // acknowledgements remain a witness, so the manager starts and says what it could not check.
        let batch = match self.bus.last_events().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(()),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "could not read the bus's last batch to check the store against it; edges' \
                     acknowledgements still are (docs/operations.md, Securing NATS)"
                );
                return Ok(());
            }
        };
        // A batch nobody this deployment trusts signed proves nothing (and an attacker on the bus could
        // otherwise stop every manager with one forged message).
        let Ok(events) = batch.open(&self.trust()) else {
            tracing::warn!("the last batch on the bus is not signed by a trusted key; ignored");
            return Ok(());
        };
        let Some(seen) = events.iter().map(|e| e.seq).max() else {
            return Ok(());
        };
        let head = self.store.head().await?;
        self.note_head(head);
        if let Some(found) = behind(head, seen, Witness::Bus) {
            self.halt(found.clone());
            return Err(found.into());
        }
        Ok(())
    }

    /// While running: an edge that applied past the store's head (re-read, as another manager may have
    /// just committed it) shows the store went backwards.
    pub(crate) async fn check_log_against_ack(&self, edge: &str, applied: Seq) {
        if self.log_behind().is_some() || applied.get() <= self.known_head.load(Ordering::Relaxed) {
            return;
        }
        let head = match self.store.head().await {
            Ok(head) => head,
            Err(error) => {
                tracing::warn!(%error, "reading the log head to check an acknowledgement failed");
                return;
            }
        };
        self.note_head(head);
        if let Some(found) = behind(head, applied, Witness::Edge(edge.to_owned())) {
            self.halt(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_longer_log_is_proof() {
        let s = Seq::new;
        assert_eq!(behind(s(5), s(5), Witness::Bus), None);
        assert_eq!(behind(s(5), s(3), Witness::Bus), None);
        let found = behind(s(5), s(9), Witness::Edge("e1".into())).expect("behind");
        let text = found.to_string();
        assert!(
            text.contains("ends at 5") && text.contains("edge e1") && text.contains("up to 9"),
            "{text}"
        );
    }
}
