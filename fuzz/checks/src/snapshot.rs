//! The snapshot reader, fed the way an edge feeds it: whatever chunks the HTTP stream delivers.
//!
//! Mode 0 (first byte even): arbitrary bytes, cut into chunks of a size the input chooses. Reading them
//! in those chunks and in one piece gives the same outcome (the same snapshot or the same error), and a
//! snapshot that opens has as many keys as key lines and re-writes to one that opens the same.
//!
//! Mode 1: a snapshot built from the input (sequence number and keys) and written by `SnapshotWriter`
//! with the trusted key, then altered by edits the input chooses (flip, insert, delete bytes; truncate)
//! and read in chunks. Unaltered, it opens to exactly what was written; altered, it either is refused or
//! opens to exactly what was written (only the end line's JSON layout may change): never to anything else.

use std::sync::Arc;

use crate::common::{self, Input};
use quench_bus::{Freshness, OpenError, SnapshotReader, snapshot::write_snapshot};
use quench_core::{
    EdgeKey, KeyId, Owner, Prefix, Seq, Timestamp, Verifier, names::Label, record::Snapshot,
    sign::Nonce,
};

/// The nonce every snapshot here answers (a fixed one: the fuzzer may write it into raw inputs).
fn nonce() -> Nonce {
    Nonce::parse("000102030405060708090a0b0c0d0e0f").expect("a valid nonce")
}

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(mode >> 1, rest);
    } else {
        written(rest);
    }
}

fn read(bytes: &[u8], chunk: usize) -> Result<(Snapshot, Freshness), OpenError> {
    let mut reader = SnapshotReader::new();
    for piece in bytes.chunks(chunk.max(1)) {
        reader.feed(piece)?;
    }
    reader.finish(&common::trust(), &nonce())
}

fn outcome(
    result: &Result<(Snapshot, Freshness), OpenError>,
) -> Result<&(Snapshot, Freshness), String> {
    result.as_ref().map_err(ToString::to_string)
}

fn write(snapshot: &Snapshot, at: Timestamp) -> Vec<u8> {
    write_snapshot(&Arc::new(common::manager()), snapshot, at, Some(nonce()))
}

fn raw(chunk: u8, bytes: &[u8]) {
    let whole = read(bytes, bytes.len());
    let pieces = read(bytes, usize::from(chunk));
    assert_eq!(
        outcome(&whole),
        outcome(&pieces),
        "chunking changed the outcome"
    );
    if let Ok((snapshot, fresh)) = whole {
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        // Header, one line per key, end line.
        assert_eq!(snapshot.keys.len() + 2, lines);
        assert_eq!(fresh.head, snapshot.seq);
        let again = write(&snapshot, fresh.at);
        assert_eq!(
            read(&again, 64).expect("a re-written snapshot opens"),
            (snapshot, fresh)
        );
    }
}

fn written(data: &[u8]) {
    let mut input = Input::new(data);
    let snapshot = snapshot(&mut input);
    let at = Timestamp::from_millis(input.in_range(0, 253_402_300_799_999) as i64);
    let mut bytes = write(&snapshot, at);
    let chunk = usize::from(input.byte());
    let (opened, fresh) = read(&bytes, chunk).expect("an unaltered snapshot opens");
    assert_eq!(opened, snapshot);
    assert_eq!((fresh.head, fresh.at), (snapshot.seq, at));
    let original = bytes.clone();
    for _ in 0..input.in_range(1, 4) {
        edit(&mut input, &mut bytes);
    }
    if bytes == original {
        return;
    }
    if let Ok((opened, _)) = read(&bytes, chunk) {
        assert_eq!(
            opened, snapshot,
            "an altered snapshot opened as something else"
        );
        // Everything before the end line is covered by its signature.
        let end = original
            .iter()
            .rev()
            .skip(1)
            .position(|&b| b == b'\n')
            .unwrap_or(0);
        let signed = original.len() - 1 - end;
        assert_eq!(
            bytes.get(..signed),
            Some(&original[..signed]),
            "signed bytes changed, yet it opened"
        );
    }
}

fn edit(input: &mut Input<'_>, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let at = input.index(bytes.len());
    match input.in_range(0, 3) {
        0 => bytes[at] ^= input.byte().max(1),
        1 => bytes.insert(at, input.byte()),
        2 => {
            bytes.remove(at);
        }
        _ => bytes.truncate(at),
    }
}

fn snapshot(input: &mut Input<'_>) -> Snapshot {
    let seq = Seq::new(input.u64());
    let count = input.in_range(0, 6);
    let keys = (0..count).map(|_| key(input)).collect();
    Snapshot { seq, keys }
}

fn label(input: &mut Input<'_>) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/+-";
    // A label starts with a letter or digit.
    let first = char::from(*input.choose(&CHARS[..62]));
    let len = input.in_range(0, 11);
    std::iter::once(first)
        .chain((0..len).map(|_| char::from(*input.choose(CHARS))))
        .collect()
}

fn labels(input: &mut Input<'_>) -> Vec<Label> {
    let n = input.in_range(0, 3);
    (0..n)
        .filter_map(|_| Label::parse(&label(input)).ok())
        .collect()
}

fn key(input: &mut Input<'_>) -> EdgeKey {
    let id = KeyId::from_u64(input.u64() % KeyId::LIMIT).expect("below the limit");
    let prefix = if input.bool() { "qk" } else { "acme2" };
    let verifier = match input.in_range(0, 2) {
        0 => Verifier::Sha256 {
            salt: input.array(),
            digest: input.array(),
        },
        1 => Verifier::decode("$2b$04$abcdefghijklmnopqrstuuQ3x0zN1Z9r8s7t6u5v4w3x2y1z0AbCd")
            .expect("a valid bcrypt string"),
        _ => Verifier::decode(
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2cNhC1Up0Y7j4mOeWmD1sVaLQr5nEAe2PLe1YT8IyB0",
        )
        .expect("a valid argon2id string"),
    };
    let owner = Owner::parse(&label(input)).unwrap_or_else(|_| Owner::parse("o").expect("valid"));
    EdgeKey {
        id,
        prefix: Prefix::parse(prefix).expect("a valid prefix"),
        owner,
        apis: labels(input),
        scopes: labels(input),
        expires_at: input
            .bool()
            .then(|| Timestamp::from_millis(input.in_range(0, 253_402_300_799_999) as i64)),
        revoked: input.bool(),
        verifier,
    }
}
