//! Black-box tests of the manager and embedded edge, over HTTP.

mod admin;
mod alerts;
mod auth;
mod bulk;
mod confinement;
mod contract;
mod helpers;
mod input;
mod keys;
mod leaks;
mod pasted_keys;
mod webhook_guard;
mod webhooks;
