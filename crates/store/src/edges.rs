//! Edge registrations: the SQL both backends share (both take `$n` placeholders and `ON CONFLICT`).
//!
//! Registration is one statement so that two managers registering the same edge at once cannot both
//! win: an existing row is refreshed only when it already holds the presented key, and zero rows
//! changed means the id belongs to another key. Rotation is the only way a key is replaced; it runs in
//! a write transaction with its audit record.

use quench_core::sign::PublicKey;

use crate::EdgeRecord;

///
/// The MAC key comes only with a registration whose proof the manager checked against the same public
/// key, and one seed always gives the same MAC key: so a registration may set it, and one without it (an
/// edge signing its acknowledgements) keeps the one stored.
pub(crate) const REGISTER: &str = "INSERT INTO edges (id, region, public_key, registered_at, ack_key) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET region = excluded.region, registered_at = excluded.registered_at, \
     ack_key = COALESCE(excluded.ack_key, edges.ack_key) \
     WHERE edges.public_key = excluded.public_key";

pub(crate) const ONE: &str =
    "SELECT id, region, public_key, registered_at, ack_key FROM edges WHERE id = $1";

pub(crate) const ALL: &str =
    "SELECT id, region, public_key, registered_at, ack_key FROM edges ORDER BY id";

/// A rotation forgets the MAC key: the edge's next registration brings the new key's, with its proof.
pub(crate) const ROTATE: &str =
    "UPDATE edges SET public_key = $2, registered_at = $3, ack_key = NULL WHERE id = $1";

pub(crate) const ROTATE_ACTION: &str = "edge.rotate";

/// What the audit record of a rotation says: both keys by their short ids, never more.
pub(crate) fn rotation_reason(old: &EdgeRecord, new_key: &PublicKey) -> String {
    format!(
        "edge {}: key {} replaced by {}",
        old.id,
        old.public_key.id(),
        new_key.id()
    )
}
