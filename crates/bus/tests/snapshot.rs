//! The snapshot reader against a hostile stream (found while writing the `snapshot` fuzz target; see
//! docs/fuzzing.md): a peer on the edge-to-manager link that never ends a line, or trickles one in tiny
//! chunks, must neither make the reader buffer without bound nor rescan what it already buffered.

use std::sync::Arc;

use quench_bus::{
    OpenError, SnapshotReader, Unreadable,
    snapshot::{MAX_LINE, write_snapshot},
};
use quench_core::{
    ApiKey, EdgeKey, HashAlg, Owner, Prefix, Seq, Timestamp, Verifier,
    record::Snapshot,
    sign::{Signer, Trust},
};

fn unreadable(result: Result<(), OpenError>) -> Unreadable {
    match result {
        Err(OpenError::Unreadable(why)) => why,
        other => panic!("expected an unreadable snapshot, got {other:?}"),
    }
}

#[test]
fn a_line_that_never_ends_is_refused_at_the_limit() {
    let mut reader = SnapshotReader::new();
    let chunk = vec![b' '; 64 * 1024];
    let mut fed = 0;
    let error = loop {
        match reader.feed(&chunk) {
            Ok(()) => fed += chunk.len(),
            Err(error) => break error,
        }
        assert!(fed <= MAX_LINE, "buffered {fed} bytes of one line");
    };
    assert!(matches!(
        error,
        OpenError::Unreadable(Unreadable::LineTooLong)
    ));
}

#[test]
fn a_line_at_the_limit_is_still_read_and_one_byte_more_is_not() {
    // Whitespace is valid JSON around the header, so a header padded to the limit is one legal line.
    let mut header = br#"{"seq":7,"at":"2026-12-03T13:02:01.684Z"}"#.to_vec();
    header.resize(MAX_LINE, b' ');
    header.push(b'\n');
    let mut reader = SnapshotReader::new();
    assert!(reader.feed(&header).is_ok());

    let mut longer = br#"{"seq":7,"at":"2026-12-03T13:02:01.684Z"}"#.to_vec();
    longer.resize(MAX_LINE + 1, b' ');
    longer.push(b'\n');
    let why = unreadable(SnapshotReader::new().feed(&longer));
    assert_eq!(why, Unreadable::LineTooLong, "{why}");
}

#[test]
fn a_long_line_trickled_one_byte_at_a_time_is_read_once() {
    // 512 KiB fed a byte at a time: each byte is looked at once (the reader used to rescan everything it
    // had buffered on every chunk, about 1.4 * 10^11 comparisons here).
    let mut reader = SnapshotReader::new();
    let line = vec![b'x'; 512 * 1024];
    for byte in line.chunks(1) {
        reader
            .feed(byte)
            .expect("an unfinished line is only buffered");
    }
    assert!(matches!(reader.feed(b"\n"), Err(OpenError::Malformed(_))));
}

#[test]
fn a_real_snapshot_still_opens_in_any_chunking() {
    let signer = Arc::new(Signer::generate().expect("random"));
    let trust = Trust::new(vec![signer.public()]);
    let keys: Vec<EdgeKey> = (0..20)
        .map(|_| {
            let key = ApiKey::generate(Prefix::default()).expect("random");
            EdgeKey {
                id: key.id(),
                prefix: key.prefix(),
                owner: Owner::parse("team").expect("owner"),
                apis: vec![],
                scopes: vec![],
                expires_at: None,
                revoked: false,
                verifier: Verifier::create(HashAlg::Sha256, key.secret()).expect("hash"),
            }
        })
        .collect();
    let snapshot = Snapshot {
        seq: Seq::new(9),
        keys,
    };
    let nonce = quench_core::sign::Nonce::random().expect("random");
    let bytes = write_snapshot(&signer, &snapshot, Timestamp::now(), Some(nonce.clone()));
    for chunk in [1, 2, 3, 100, bytes.len()] {
        let mut reader = SnapshotReader::new();
        for piece in bytes.chunks(chunk) {
            reader.feed(piece).expect("feed");
        }
        let (opened, fresh) = reader.finish(&trust, &nonce).expect("opens");
        assert_eq!(opened, snapshot);
        assert_eq!(fresh.head, snapshot.seq);
    }
}
