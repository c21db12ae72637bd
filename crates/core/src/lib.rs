//! Quench's domain, free of I/O and async: the key format, secret verifiers, key records, the event log's
//! vocabulary and the edge's replica of every key. Everything here is a plain function over plain data,
//! so it is tested without a runtime and embedded anywhere.
#![forbid(unsafe_code)]

pub mod base62;
pub mod event;
pub mod hash;
pub mod key;
pub mod keyset;
pub mod names;
pub mod record;
pub mod scope;
pub mod sign;
pub mod time;
pub mod usage;
pub mod webhook;
pub mod whole;

pub use event::{Change, Event, Seq};
pub use hash::{HashAlg, Verifier};
pub use key::{ApiKey, GivenId, KeyError, KeyId, Prefix};
pub use keyset::{Check, KeySet, Reason, SlowCheck, Verdict};
pub use names::{EdgeId, KeyName, Label, NameError, Owner, Region};
pub use record::{EdgeKey, KeyRecord, KeyStatus, Revocation};
pub use time::Timestamp;
pub use webhook::WebhookEvent;
