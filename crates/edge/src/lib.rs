//! A Quench edge: an in-memory replica of every key, kept fresh by following the bus, answering "is this
//! key valid?" without leaving the process.
//!
//! * [`Replica`] is the synchronous part a gateway embeds: verify a presented key in about a microsecond,
//!   never awaiting, never blocking on updates.
//! * [`follow`] is the background task that bootstraps the replica from a snapshot and applies every event
//!   in sequence order, repairing gaps from the manager's log, and reports progress back over the bus.
//! * [`http`] serves the edge API: verify, forward-auth for proxies, health and metrics.
//! * [`usage`] watches each key's traffic and reports anomalies to the manager.

pub mod contract;
pub mod follower;
pub mod http;
pub mod metrics;
pub mod replica;
pub mod usage;
pub mod web;

pub use follower::{Upstream, UpstreamError, follow};
pub use replica::{EdgeConfig, Replica, StalePolicy};
