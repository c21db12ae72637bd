//! What Quench's servers and clients say to each other over HTTP, in one crate that both sides use, so the
//! control plane (the manager) and the data plane (the edges) never depend on each other and the command
//! line sends and reads the very types the servers parse and answer with.
//!
//! * [`contract`]: what the manager's and the edge's OpenAPI documents share: the error body, the string
//!   formats the servers parse, the refusals every endpoint of a kind can give.
//! * [`keys`], [`tokens`], [`leaks`], [`alerts`], [`webhooks`], [`system`]: the manager API's bodies and
//!   query parameters.
//! * [`edge`]: the edge API's bodies.
//! * [`key_file`]: the private-key file an edge (and a manager) keeps its signing key in.
//! * With the `server` feature, [`web`] (JSON extractors and the error answer) and [`listener`] (serving
//!   on a TCP listener with connection caps, deadlines and TLS): the serving layer both servers share.
//!   Without it, the crate compiles no HTTP server, so a client or an embedded edge pulls in none.
//!
//! The types only describe the JSON; what a field must hold is checked where the server parses it into
//! `quench_core`'s types, and the schemas here say exactly that (`scripts/contract` holds them to it).

pub mod alerts;
pub mod contract;
pub mod edge;
pub mod key_file;
pub mod keys;
pub mod leaks;
pub mod system;
pub mod tokens;
pub mod webhooks;

#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "server")]
pub mod web;

pub use contract::{ErrorDetail, ErrorResponse};
