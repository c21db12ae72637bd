//! A private Ed25519 key kept in a file: an edge's acknowledgement key (and the manager's event-signing
//! key, which has the same needs).
//!
//! An edge's key is its identity to the manager: a manager accepts exactly one key per edge id, so an
//! edge must present the same key after a restart. The file holds the hex seed, is created with mode
//! 0600 and without replacing an existing file (two processes starting at once end up with one key), and
//! is never rewritten. Losing it means an operator rotates the edge's key on the manager.

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
    match create_private(path) {
        Ok(mut file) => {
            writeln!(file, "{}", signer.seed_hex()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok((signer, Origin::Created))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path).map(|signer| (signer, Origin::Loaded))
        }
        Err(e) => Err(io(e)),
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
}
