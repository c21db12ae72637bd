//! The copy of the manager's snapshot an edge keeps on its own disk, so a restart starts from it.
//!
//! At one million keys, reading the snapshot from the manager is nearly all of an edge's cold start: the
//! manager reads every key from its store, writes and hashes the stream (BENCHMARKS.md, "Edge start"). So
//! an edge with a persistent identity (`--id`) keeps the bytes of each snapshot it reads, exactly as the
//! manager signed them, at `<data-dir>/edge-<id>.<deployment>.snapshot`, and starts from them next time: it checks the
//! manager's signature over them again, installs them, applies the manager's log after their sequence
//! (pages, each answering a nonce of its own), and only then counts as current. Until that catch-up
//! succeeds it answers `stale`, as any edge that is starting does.
//!
//! Why the manager's bytes and not the edge's own state: the copy lives on a disk an attacker may write.
//! A file the edge wrote from its state would be believed on the edge's word, and one with a key marked
//! live at a sequence past its revocation would revive the key (the log after that sequence no longer
//! mentions it). The manager's signature cannot be made for a state the log never had, and an older
//! genuine copy put back only means more of the log to apply. A copy that does not verify (tampered,
//! truncated, signed by a key no longer trusted) is logged, deleted, and the edge reads a new snapshot;
//! one that verifies but is of another log signed by the same key is caught by the follower, which
//! installs a copy only if it holds the key the manager's log begins with (`Follower::same_log`).
//!
//! The deployment is in the name because a deployment started anew from a restored store
//! (docs/operations.md, "Backups") must not find the old deployment's copy, whose sequence the new log
//! never reached.
//!
//! The copy is written beside the download (`.partial`), synced and renamed into place only once the
//! snapshot verified, so a crash or a full disk never leaves a half copy under the real name; failing to
//! write it is logged and changes nothing else.

use std::path::{Path, PathBuf};

use quench_bus::SnapshotReader;
use quench_core::{record::Snapshot, sign::Trust};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

/// How much of the copy is read at a time on start.
const READ_CHUNK: usize = 1 << 20;

/// A copy being written while a snapshot is read.
pub struct Copy {
    partial: PathBuf,
    path: PathBuf,
    file: BufWriter<tokio::fs::File>,
}

impl Copy {
    /// Starts a copy next to `path`; `None` (logged) when the file cannot be made.
    pub async fn create(path: &Path) -> Option<Self> {
        let partial = partial_of(path);
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        match options.open(&partial).await {
            Ok(file) => Some(Self {
                partial,
                path: path.to_owned(),
                file: BufWriter::with_capacity(READ_CHUNK, file),
            }),
            Err(error) => {
                tracing::warn!(path = %partial.display(), %error, "cannot keep a copy of the snapshot; the next start will read it from the manager again");
                None
            }
        }
    }

    /// Appends a chunk; false (logged, the partial copy removed) when it cannot.
    pub async fn write(&mut self, chunk: &[u8]) -> bool {
        match self.file.write_all(chunk).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(path = %self.partial.display(), %error, "writing the copy of the snapshot failed; not keeping one");
                let _ = tokio::fs::remove_file(&self.partial).await;
                false
            }
        }
    }

    /// The snapshot verified: makes the copy durable and puts it in place of the previous one.
    pub async fn keep(mut self) {
        let kept = async {
            self.file.flush().await?;
            self.file.get_mut().sync_all().await?;
            tokio::fs::rename(&self.partial, &self.path).await
        }
        .await;
        match kept {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), "kept a copy of the snapshot for the next start")
            }
            Err(error) => {
                tracing::warn!(path = %self.path.display(), %error, "keeping the copy of the snapshot failed");
                let _ = tokio::fs::remove_file(&self.partial).await;
            }
        }
    }
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The stored copy at `path`, if there is one and it verifies against `trust`. One that does not is
/// logged and deleted.
pub async fn load(path: &Path, trust: &Trust) -> Option<Snapshot> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the stored snapshot; reading one from the manager");
            return None;
        }
    };
    let mut reader = SnapshotReader::new();
    let mut buffer = vec![0u8; READ_CHUNK];
    let read = loop {
        match file.read(&mut buffer).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if let Err(error) = reader.feed(&buffer[..n]) {
                    break Err(error.to_string());
                }
            }
            Err(error) => break Err(error.to_string()),
        }
    };
    match read.and_then(|()| reader.finish_stored(trust).map_err(|e| e.to_string())) {
        Ok(snapshot) => Some(snapshot),
        Err(why) => {
            tracing::warn!(path = %path.display(), %why, "the stored snapshot does not verify; deleting it and reading one from the manager");
            let _ = tokio::fs::remove_file(path).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use quench_bus::snapshot::write_snapshot;
    use quench_core::{
        ApiKey, HashAlg, Owner, Prefix, Seq, Timestamp, Verifier,
        record::KeyRecord,
        sign::{Nonce, Signer},
    };

    use super::*;

    fn snapshot(seq: u64, keys: usize) -> Snapshot {
        let keys = (0..keys)
            .map(|_| {
                let key = ApiKey::generate(Prefix::default()).expect("random");
                KeyRecord {
                    id: key.id(),
                    prefix: key.prefix(),
                    owner: Owner::parse("team-a").expect("owner"),
                    name: None,
                    apis: Vec::new(),
                    scopes: Vec::new(),
                    metadata: serde_json::Map::new(),
                    created_at: Timestamp::from_millis(1),
                    expires_at: None,
                    revoked: None,
                    rotated_from: None,
                    replaced_by: None,
                    verifier: Verifier::create(HashAlg::Sha256, key.secret()).expect("hash"),
                }
                .edge_view()
            })
            .collect();
        Snapshot {
            seq: Seq::new(seq),
            keys,
        }
    }

    async fn store(path: &Path, bytes: &[u8]) {
        let mut copy = Copy::create(path).await.expect("create");
        for chunk in bytes.chunks(7) {
            assert!(copy.write(chunk).await);
        }
        copy.keep().await;
    }

    #[tokio::test]
    async fn a_kept_copy_loads_only_whole_and_signed_by_a_trusted_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("edge-e1.snapshot");
        let manager = Arc::new(Signer::generate().expect("random"));
        let trust = Trust::new(vec![manager.public()]);
        let original = snapshot(42, 3);
        let nonce = Nonce::random().expect("random");
        let bytes = write_snapshot(&manager, &original, Timestamp::now(), Some(nonce));

        assert!(load(&path, &trust).await.is_none(), "no copy yet");
        store(&path, &bytes).await;
        assert!(!partial_of(&path).exists());
        assert_eq!(load(&path, &trust).await, Some(original.clone()));

        // Another manager key: not believed, and the copy is gone.
        let stranger = Trust::new(vec![Signer::generate().expect("random").public()]);
        assert!(load(&path, &stranger).await.is_none());
        assert!(!path.exists());

        // One byte changed (say, a revocation taken out): refused and deleted.
        let mut tampered = bytes.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 1;
        store(&path, &tampered).await;
        assert!(load(&path, &trust).await.is_none());
        assert!(!path.exists());

        // Cut short: refused.
        store(&path, &bytes[..bytes.len() - 10]).await;
        assert!(load(&path, &trust).await.is_none());
    }

    #[tokio::test]
    async fn a_copy_that_cannot_be_written_changes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("missing-dir").join("edge-e1.snapshot");
        assert!(Copy::create(&path).await.is_none());
    }
}
