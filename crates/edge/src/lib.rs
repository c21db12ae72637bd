//! A Quench edge: an in-memory replica of every key, kept fresh by following the bus, answering "is this
//! key valid?" without leaving the process.
//!
//! * [`Replica`] is the synchronous part a gateway embeds: verify a presented key in about a microsecond,
//!   never awaiting, never blocking on updates.
//! * [`follow`] is the background task that bootstraps the replica from a snapshot and applies every event
//!   in sequence order, repairing gaps from the manager's log, and reports progress back over the bus.
//! * `http` (the `http` feature, on by default) serves the edge API: verify, forward-auth for proxies,
//!   health and metrics, on `quench_api`'s listener. A gateway that embeds the replica turns the default
//!   features off and compiles no HTTP server.
//! * [`slow`] runs argon2id and bcrypt checks in a bounded pool, throttled per key id.
//! * [`usage`] watches each key's traffic and reports anomalies to the manager.
//!
//! The bodies the edge and the manager exchange, and the serving layer, are in `quench_api`.

pub mod follower;
#[cfg(feature = "http")]
pub mod http;
pub mod metrics;
pub mod replica;
pub mod slow;
pub mod usage;

pub use follower::{Upstream, UpstreamError, follow};
pub use replica::{EdgeConfig, Replica, StalePolicy};
pub use slow::{Busy, SlowHashConfig};
