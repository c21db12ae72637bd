//! A Quench edge: an in-memory replica of every key, kept fresh by following the bus, answering "is this
//! key valid?" without leaving the process.
//!
//! * [`Replica`] is the synchronous part a gateway embeds: verify a presented key in about a microsecond,
//!   never awaiting, never blocking on updates.
//! * [`follow`] is the background task that bootstraps the replica from a snapshot and applies every event
//!   in sequence order, repairing gaps from the manager's log, and reports progress back over the bus.
//! * [`http`] serves the edge API: verify, forward-auth for proxies, health and metrics.
//! * [`slow`] runs argon2id and bcrypt checks in a bounded pool, throttled per key id.
//! * [`listener`] serves an API on a TCP listener (the edge's and the manager's): connection cap,
//!   header, idle and body timeouts, TLS with certificate reload, an optional operations listener.
//! * [`usage`] watches each key's traffic and reports anomalies to the manager.
//! * [`key_file`] keeps the key the edge signs its acknowledgements with across restarts.

pub mod contract;
pub mod follower;
pub mod http;
pub mod key_file;
pub mod listener;
pub mod metrics;
pub mod replica;
pub mod slow;
pub mod usage;
pub mod web;

pub use follower::{Upstream, UpstreamError, follow};
pub use replica::{EdgeConfig, Replica, StalePolicy};
pub use slow::{Busy, SlowHashConfig};
