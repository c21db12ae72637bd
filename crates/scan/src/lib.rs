//! The leak scanner: finds Quench keys in bytes, files, directories and git history.
//!
//! A key is `<prefix>_<59 base62 characters>` whose last 6 characters are the CRC32 of the rest, so the
//! scanner needs no list of secrets and has no false positives from look-alike strings: a candidate is a
//! finding only when its checksum holds. The search looks for `_`, then checks the 59 characters after it
//! and the lowercase prefix before it, so text without keys is skipped at memchr speed.
//!
//! Findings never carry the secret: they name the issuer prefix and the key id, and keep the full key only
//! in a field that is not serialised (for `--report`, which sends it to the manager to prove the leak).

mod find;
pub mod output;
pub mod sources;

pub use find::{Candidate, find_in};
pub use sources::{Finding, Location, ScanError};
