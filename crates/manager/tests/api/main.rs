//! Black-box tests of the manager and embedded edge, over HTTP.

mod admin;
mod alerts;
mod auth;
mod contract;
mod helpers;
mod input;
mod keys;
mod leaks;
mod webhooks;
