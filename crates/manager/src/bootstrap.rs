//! The first admin token.
//!
//! If `QUENCH_BOOTSTRAP_TOKEN` is set, that string is an admin token (held as a hash in memory, never
//! stored). Otherwise, on the first start against an empty store, an `admin` token is issued, written to
//! `<data-dir>/admin.token` with mode 0600, and returned so the caller prints it once. Later starts issue
//! nothing: the token is in the file, and the store holds only its hash.

use std::{io::Write, path::Path};

use quench_core::{
    Timestamp,
    scope::{Scope, Scopes},
};
use quench_store::{Actor, Store};

use crate::{
    auth::{MIN_BOOTSTRAP_LEN, issue_token},
    config::BootstrapToken,
};

/// The bootstrap token's file in a data directory.
pub fn token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("admin.token")
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("QUENCH_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_LEN} characters")]
    TooShort,
    #[error("issuing the bootstrap token: {0}")]
    Store(#[from] quench_store::StoreError),
    #[error("writing {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the signing key: {0}")]
    SigningKey(#[from] quench_api::key_file::KeyFileError),
}

/// The manager's event-signing key: read from `path`, or made and written there (mode 0600) the first
/// time. Managers sharing a database must share this file (or `QUENCH_SIGNING_KEY`).
pub fn signing_key(path: &Path) -> Result<quench_core::sign::Signer, BootstrapError> {
    use quench_api::key_file::{Origin, load_or_create};
    let (signer, origin) = load_or_create(path)?;
    if origin == Origin::Created {
        tracing::info!(key = %signer.id(), path = %path.display(), "made a new event-signing key");
    }
    Ok(signer)
}

/// Checks a configured bootstrap token.
pub fn configured(value: String) -> Result<BootstrapToken, BootstrapError> {
    if value.trim().len() < MIN_BOOTSTRAP_LEN {
        return Err(BootstrapError::TooShort);
    }
    Ok(BootstrapToken(value.trim().to_owned()))
}

/// Issues the first admin token if the store has none. Returns it when it was issued now.
pub async fn first_token(
    store: &dyn Store,
    data_dir: &Path,
) -> Result<Option<String>, BootstrapError> {
    if store.count_tokens().await? > 0 {
        return Ok(None);
    }
    let actor = Actor {
        principal: "bootstrap".into(),
        source: None,
        at: Timestamp::now(),
    };
    let (token, _) = issue_token(store, Scopes::new(vec![Scope::Admin]), None, &actor).await?;
    let path = token_path(data_dir);
    write_private(&path, &token).map_err(|source| BootstrapError::File {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some(token))
}

fn write_private(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    writeln!(file, "{token}")?;
    file.sync_all()
}
