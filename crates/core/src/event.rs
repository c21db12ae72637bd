//! Changes as the edges see them: an ordered, gap-free log.
//!
//! The store assigns each event its sequence number in the same transaction as the change it describes, so
//! the log is exactly the history of committed changes, in commit order, without holes. An edge that has
//! applied sequence `n` can apply only `n + 1` next; anything else is a duplicate (ignored) or a gap
//! (repaired before going on).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{key::KeyId, record::EdgeKey, time::Timestamp};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: Seq,
    pub at: Timestamp,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    KeyCreated {
        key: EdgeKey,
    },
    KeyRevoked {
        id: KeyId,
        reason: String,
    },
    /// A key's expiry moved (rotation with a grace period). Never revives a revoked key.
    KeyExpiryChanged {
        id: KeyId,
        expires_at: Option<Timestamp>,
    },
}

impl Change {
    pub fn key_id(&self) -> KeyId {
        match self {
            Self::KeyCreated { key } => key.id,
            Self::KeyRevoked { id, .. } | Self::KeyExpiryChanged { id, .. } => *id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::KeyCreated { .. } => "key_created",
            Self::KeyRevoked { .. } => "key_revoked",
            Self::KeyExpiryChanged { .. } => "key_expiry_changed",
        }
    }
}
