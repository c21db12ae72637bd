//! What can go wrong in the store, as variants callers match on (never as text to parse).
//!
//! The texts of [`Conflict`] are what the manager's API answers with a 409, so they name the thing in
//! the words a user of the API knows.

use quench_core::{EdgeId, KeyId};

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(Conflict),
    /// A stored value does not parse as what Quench writes there: the database was changed behind
    /// Quench's back, or by a newer version.
    #[error("the stored data is not what Quench wrote: {what}: {source}")]
    Corrupt {
        /// Which value: `owner`, `key id`, `alert action`…
        what: &'static str,
        #[source]
        source: Source,
    },
    #[error("migrating the database failed: {name}: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported database URL scheme {0:?}: use postgres:// or sqlite:")]
    Unsupported(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// What a change collided with. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// The id of a new key is taken (by a key that exists or once existed).
    #[error("key id {0}")]
    KeyId(KeyId),
    /// One of a batch of new keys has an id that is taken.
    #[error("key id: one of the keys exists")]
    KeyIds,
    /// A revoked key cannot be rotated.
    #[error("key {0} is revoked")]
    KeyRevoked(KeyId),
    #[error("token id {0}")]
    TokenId(KeyId),
    /// The edge id is registered with another acknowledgement key.
    #[error("edge {0} is registered with another key")]
    EdgeKey(EdgeId),
    #[error("webhook {0}")]
    WebhookId(String),
}

impl From<Conflict> for StoreError {
    fn from(conflict: Conflict) -> Self {
        Self::Conflict(conflict)
    }
}

impl StoreError {
    /// A stored value that does not parse, with why.
    pub fn corrupt(what: &'static str, source: impl Into<Source>) -> Self {
        Self::Corrupt {
            what,
            source: source.into(),
        }
    }

    /// The database could not be reached, or gave no connection in time: the same request may succeed
    /// later (the API answers 503), unlike a fault in what was asked or stored.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

/// `Conflict(what)` when the statement broke a uniqueness constraint; any other error as it is.
pub(crate) fn unique(error: sqlx::Error, what: impl FnOnce() -> Conflict) -> StoreError {
    if error
        .as_database_error()
        .is_some_and(|d| d.is_unique_violation())
    {
        StoreError::Conflict(what())
    } else {
        error.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_database_is_unavailable() {
        for lost in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            std::io::Error::other("connection refused").into(),
        ] {
            assert!(StoreError::Database(lost).is_unavailable());
        }
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StoreError::corrupt("owner", "x").is_unavailable());
        assert!(!StoreError::NotFound.is_unavailable());
    }

    #[test]
    fn conflicts_read_as_before() {
        let id = KeyId::from_u64(7).expect("an id");
        assert_eq!(Conflict::KeyId(id).to_string(), format!("key id {id}"));
        assert_eq!(
            Conflict::KeyRevoked(id).to_string(),
            format!("key {id} is revoked")
        );
        assert_eq!(
            Conflict::EdgeKey(EdgeId::parse("eu-1").expect("id")).to_string(),
            "edge eu-1 is registered with another key"
        );
    }

    #[test]
    fn a_corrupt_value_says_which_and_why() {
        let error = StoreError::corrupt("owner", "not a name");
        assert_eq!(
            error.to_string(),
            "the stored data is not what Quench wrote: owner: not a name"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
