//! The snapshot an edge starts from, streamed: one JSON line per key, signed at the end.
//!
//! ```text
//! {"seq":1234,"at":...,"nonce":"..."}  header: the log position the snapshot is consistent with, when
//!                                     the manager read it, and the nonce of the request it answers
//! {"id":"...","prefix":"qk",...}       one line per key (`EdgeKey`)
//! ...
//! {"end":{"count":2,"signature":"<signer>.<hex>"}}
//! ```
//!
//! The signature covers `seq=<S>;at=<T>;nonce=<N>;count=<C>;sha256=<hex>` where the digest runs over
//! every byte before the end line. Neither side holds the document whole: the manager writes a page of
//! keys at a time, and an edge hashes and parses lines as they arrive and believes none of it until the
//! end line verifies.
//!
//! The nonce is what makes a snapshot usable as proof: an edge asks with a nonce of its own and accepts
//! only a snapshot carrying it, so a snapshot recorded before a revocation cannot be served to it later
//! (not even to a freshly restarted edge that remembers nothing).

use std::sync::Arc;

use quench_core::{
    EdgeKey, Seq, Timestamp,
    hash::hex,
    record::Snapshot,
    sign::{Nonce, Purpose, Signature, Signer, Trust},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Freshness, OpenError, Unreadable};

#[derive(Serialize, Deserialize)]
struct Header {
    seq: Seq,
    at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nonce: Option<Nonce>,
}

#[derive(Serialize, Deserialize)]
struct End {
    count: u64,
    signature: Signature,
}

#[derive(Serialize, Deserialize)]
struct EndLine {
    end: End,
}

fn signed_message(header: &Header, count: u64, digest: &[u8]) -> Vec<u8> {
    let nonce = header
        .nonce
        .as_ref()
        .map(Nonce::to_string)
        .unwrap_or_default();
    format!(
        "seq={};at={};nonce={nonce};count={count};sha256={}",
        header.seq,
        header.at.as_millis(),
        hex(digest)
    )
    .into_bytes()
}

/// Writes a snapshot as chunks of bytes.
pub struct SnapshotWriter {
    signer: Arc<Signer>,
    hasher: Sha256,
    header: Header,
    count: u64,
}

impl SnapshotWriter {
    /// Starts a snapshot consistent at `fresh.head` as of `fresh.at`, answering the request that chose
    /// `nonce`; returns the writer and the header line.
    pub fn start(signer: Arc<Signer>, fresh: Freshness, nonce: Option<Nonce>) -> (Self, Vec<u8>) {
        let header_value = Header {
            seq: fresh.head,
            at: fresh.at,
            nonce,
        };
        let mut header = serde_json::to_vec(&header_value).unwrap_or_default();
        let mut writer = Self {
            signer,
            hasher: Sha256::new(),
            header: header_value,
            count: 0,
        };
        header.push(b'\n');
        writer.hasher.update(&header);
        (writer, header)
    }

    /// Lines for a page of keys.
    pub fn keys(&mut self, keys: &[EdgeKey]) -> Vec<u8> {
        let mut out = Vec::with_capacity(keys.len() * 256);
        for key in keys {
            if serde_json::to_writer(&mut out, key).is_ok() {
                out.push(b'\n');
                self.count += 1;
            }
        }
        self.hasher.update(&out);
        out
    }

    /// The signed end line.
    pub fn finish(self) -> Vec<u8> {
        let digest = self.hasher.finalize();
        let message = signed_message(&self.header, self.count, &digest);
        let end = EndLine {
            end: End {
                count: self.count,
                signature: self.signer.sign(Purpose::Snapshot, &message),
            },
        };
        let mut line = serde_json::to_vec(&end).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// The longest line a reader accepts. A key's line is at most a few tens of kilobytes (64 APIs and 64
/// scopes of 128 characters each, an owner, a verifier), so this bounds a hostile stream's cost without
/// ever refusing a real snapshot.
pub const MAX_LINE: usize = 1 << 20;

/// Reads a snapshot from chunks as they arrive; yields it only once its signature verifies.
#[derive(Default)]
pub struct SnapshotReader {
    hasher: Sha256,
    pending: Vec<u8>,
    header: Option<Header>,
    keys: Vec<EdgeKey>,
    end: Option<End>,
}

impl SnapshotReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk, however the stream was cut. Only the new bytes are searched for line ends,
    /// so a line trickling in byte by byte costs linear time, and a line may not grow past
    /// [`MAX_LINE`]: a peer that never sends a newline cannot make the reader buffer without bound.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), OpenError> {
        let mut rest = chunk;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.buffer(&rest[..at])?;
            let line = std::mem::take(&mut self.pending);
            self.line(&line)?;
            self.pending = line;
            self.pending.clear();
            rest = &rest[at + 1..];
        }
        self.buffer(rest)
    }

    fn buffer(&mut self, bytes: &[u8]) -> Result<(), OpenError> {
        if self.pending.len() + bytes.len() > MAX_LINE {
            return Err(Unreadable::LineTooLong.into());
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), OpenError> {
        if self.end.is_some() {
            return Err(Unreadable::AfterEnd.into());
        }
        if line.starts_with(b"{\"end\"") {
            let end: EndLine = serde_json::from_slice(line)?;
            self.end = Some(end.end);
            return Ok(());
        }
        self.hasher.update(line);
        self.hasher.update(b"\n");
        match self.header {
            None => self.header = Some(serde_json::from_slice::<Header>(line)?),
            Some(_) => self.keys.push(serde_json::from_slice(line)?),
        }
        Ok(())
    }

    /// The snapshot and what it proves, if it is complete, signed by a trusted manager key, and
    /// answers the request that chose `nonce`.
    pub fn finish(self, trust: &Trust, nonce: &Nonce) -> Result<(Snapshot, Freshness), OpenError> {
        let (header, keys) = self.verified(trust)?;
        if header.nonce.as_ref() != Some(nonce) {
            return Err(OpenError::NotFresh {
                expected: nonce.clone(),
            });
        }
        let fresh = Freshness {
            head: header.seq,
            at: header.at,
        };
        Ok((
            Snapshot {
                seq: header.seq,
                keys,
            },
            fresh,
        ))
    }

    /// A snapshot kept from an earlier answer (an edge's copy on its own disk), if it is complete and
    /// signed by a trusted manager key. It proves nothing about now: the manager's signature says what
    /// the log held at its `seq`, so an edge may start from it and apply the log after it, but counts
    /// as current only once the manager answers a request of its own.
    pub fn finish_stored(self, trust: &Trust) -> Result<Snapshot, OpenError> {
        let (header, keys) = self.verified(trust)?;
        Ok(Snapshot {
            seq: header.seq,
            keys,
        })
    }

    fn verified(self, trust: &Trust) -> Result<(Header, Vec<EdgeKey>), OpenError> {
        if !self.pending.is_empty() {
            return Err(Unreadable::Truncated.into());
        }
        let end = self.end.ok_or(Unreadable::NoEndLine)?;
        let header = self.header.ok_or(Unreadable::NoHeader)?;
        if end.count != self.keys.len() as u64 {
            return Err(Unreadable::CountMismatch.into());
        }
        let digest = self.hasher.finalize();
        trust.verify(
            Purpose::Snapshot,
            &signed_message(&header, end.count, &digest),
            &end.signature,
        )?;
        Ok((header, self.keys))
    }
}

/// A whole snapshot in one buffer (for callers that have it in memory anyway), read at `at` for the
/// request that chose `nonce`.
pub fn write_snapshot(
    signer: &Arc<Signer>,
    snapshot: &Snapshot,
    at: Timestamp,
    nonce: Option<Nonce>,
) -> Vec<u8> {
    let fresh = Freshness {
        head: snapshot.seq,
        at,
    };
    let (mut writer, mut out) = SnapshotWriter::start(signer.clone(), fresh, nonce);
    out.extend(writer.keys(&snapshot.keys));
    out.extend(writer.finish());
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use quench_core::{ApiKey, HashAlg, Owner, Prefix, Verifier};

    use super::*;

    fn key() -> EdgeKey {
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
    }

    fn read(
        bytes: &[u8],
        chunk: usize,
        trust: &Trust,
        nonce: &Nonce,
    ) -> Result<Snapshot, OpenError> {
        let mut reader = SnapshotReader::new();
        for piece in bytes.chunks(chunk) {
            reader.feed(piece)?;
        }
        reader.finish(trust, nonce).map(|(snapshot, _)| snapshot)
    }

    #[test]
    fn round_trips_in_any_chunking_and_refuses_tampering() {
        let signer = Arc::new(Signer::generate().expect("random"));
        let trust = Trust::new(vec![signer.public()]);
        let snapshot = Snapshot {
            seq: Seq::new(42),
            keys: (0..50).map(|_| key()).collect(),
        };
        let nonce = Nonce::random().expect("random");
        let at = Timestamp::from_millis(77);
        let bytes = write_snapshot(&signer, &snapshot, at, Some(nonce.clone()));
        for chunk in [1, 7, 4096, bytes.len()] {
            assert_eq!(
                read(&bytes, chunk, &trust, &nonce).expect("valid"),
                snapshot
            );
        }
        let mut reader = SnapshotReader::new();
        reader.feed(&bytes).expect("feed");
        let (_, fresh) = reader.finish(&trust, &nonce).expect("valid");
        assert_eq!((fresh.head, fresh.at), (Seq::new(42), at));
        // Truncated, altered, a key dropped, or signed by another key: refused.
        assert!(read(&bytes[..bytes.len() - 10], 64, &trust, &nonce).is_err());
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        let dropped = [&lines[..3], &lines[4..]].concat().join("\n") + "\n";
        assert!(read(dropped.as_bytes(), 64, &trust, &nonce).is_err());
        let altered = text.replacen("\"seq\":42", "\"seq\":43", 1);
        assert!(read(altered.as_bytes(), 64, &trust, &nonce).is_err());
        let other = Arc::new(Signer::generate().expect("random"));
        let forged = write_snapshot(&other, &snapshot, at, Some(nonce.clone()));
        assert!(read(&forged, 64, &trust, &nonce).is_err());
    }

    #[test]
    fn a_snapshot_answers_only_the_request_that_chose_its_nonce() {
        let signer = Arc::new(Signer::generate().expect("random"));
        let trust = Trust::new(vec![signer.public()]);
        let snapshot = Snapshot {
            seq: Seq::new(7),
            keys: vec![key()],
        };
        let first = Nonce::random().expect("random");
        let recorded = write_snapshot(&signer, &snapshot, Timestamp::from_millis(1), Some(first));
        let later = Nonce::random().expect("random");
        assert!(matches!(
            read(&recorded, 64, &trust, &later),
            Err(OpenError::NotFresh { .. })
        ));
        let unbound = write_snapshot(&signer, &snapshot, Timestamp::from_millis(1), None);
        assert!(matches!(
            read(&unbound, 64, &trust, &later),
            Err(OpenError::NotFresh { .. })
        ));
        // Rewriting the nonce in the header breaks the signature.
        let text = String::from_utf8(recorded).expect("utf8");
        let first_line = text.lines().next().expect("header").to_owned();
        let header: serde_json::Value = serde_json::from_str(&first_line).expect("json");
        let swapped = text.replacen(
            header["nonce"].as_str().expect("nonce"),
            &later.to_string(),
            1,
        );
        assert!(read(swapped.as_bytes(), 64, &trust, &later).is_err());
    }
}
