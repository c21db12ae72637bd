//! A private Ed25519 key kept in a file: an edge's acknowledgement key (and the manager's event-signing
//! key, which has the same needs).
//!
//! An edge's key is its identity to the manager: a manager accepts exactly one key per edge id, so an
//! edge must present the same key after a restart. The file holds the hex seed, is created with mode
//! 0600, written whole before it appears under its name, and never replaces an existing file (two
//! processes starting at once end up with one key, and neither reads a half-written one). It is never
//! rewritten. Losing it means an operator rotates the edge's key on the manager.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use quench_core::{
    key::RandomError,
    sign::{SignError, Signer},
};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a key: {source}")]
    Invalid { path: PathBuf, source: SignError },
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Whether [`load_or_create`] found the key or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Loaded,
    Created,
}

/// The key in `path`, or a new one written there (mode 0600) when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<(Signer, Origin), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    match read(path) {
        Ok(signer) => return Ok((signer, Origin::Loaded)),
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(other) => return Err(other),
    }
    let signer = Signer::generate()?;
    // The key is written whole to a private file of its own, then linked under its name: a link never
    // replaces an existing file, so two processes starting at once end up with one key, and a reader
    // never sees a file that is created but not yet written.
    let staging = staging_path(path);
    let written = write_private(&staging, &signer.seed_hex());
    let linked = written.and_then(|()| std::fs::hard_link(&staging, path));
    let _ = std::fs::remove_file(&staging);
    match linked {
        Ok(()) => {
            sync_dir(path);
            Ok((signer, Origin::Created))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path).map(|signer| (signer, Origin::Loaded))
        }
        Err(e) => Err(io(e)),
    }
}

fn staging_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.{:x}.tmp", std::process::id(), rand_suffix()));
    path.with_file_name(name)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::thread::current().id())
}

fn write_private(path: &Path, seed_hex: &str) -> std::io::Result<()> {
    let mut file = create_private(path)?;
    writeln!(file, "{seed_hex}")?;
    file.sync_all()
}

/// Makes the new name durable: without it a crash right after creation could lose the link.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = dir.sync_all();
    }
}

fn read(path: &Path) -> Result<Signer, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    warn_if_shared(path);
    Signer::from_seed_hex(&text).map_err(|source| KeyFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "a private key file is readable by others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_privately_and_read_back_unchanged() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("edge.key");
        let (made, origin) = load_or_create(&path).expect("made");
        assert_eq!(origin, Origin::Created);
        let (again, origin) = load_or_create(&path).expect("read");
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(made.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not a key").expect("write");
        assert!(matches!(
            load_or_create(&path),
            Err(KeyFileError::Invalid { .. })
        ));
        assert!(matches!(
            load_or_create(&dir.path().join("missing-dir").join("edge.key")),
            Err(KeyFileError::Io { .. })
        ));
    }

    #[test]
    fn processes_starting_at_once_all_read_one_whole_key() {
        // Many starters race on one path: each must get the same key, none a half-written file.
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("dir");
            let path = dir.path().join("edge.key");
            let keys: Vec<_> = std::thread::scope(|scope| {
                let starters: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| load_or_create(&path).expect("key").0.public()))
                    .collect();
                starters
                    .into_iter()
                    .map(|s| s.join().expect("join"))
                    .collect()
            });
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
            let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
            assert_eq!(left.len(), 1, "no staging file is left behind");
        }
    }
}
