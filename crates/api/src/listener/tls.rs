//! TLS for the listeners: a certificate and key from PEM files, swapped in place when the files change.
//!
//! The listener's rustls configuration asks [`ServerCertificate`] for the certificate on every handshake,
//! so a reload never touches the listener or a connection already open: new connections get the new
//! certificate, old ones keep theirs. A reload that fails (a half-written file, a key that does not match)
//! keeps the certificate in use and logs why; only startup fails on a bad pair. rustls runs with the
//! *ring* provider, as everywhere else in Quench.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    InconsistentKeys, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

/// Where a listener's certificate chain and private key are, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it ({reason})")]
    NoCertificate { path: PathBuf, reason: String },
    #[error("{path}: no usable PEM private key in it ({reason})")]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// The two files' modification times and sizes: what "the files changed" means.
type Stamp = [Option<(SystemTime, u64)>; 2];

/// A listener's current certificate, reloadable from its files, and the rustls configuration that serves
/// it.
#[derive(Debug)]
pub struct ServerCertificate {
    resolver: Arc<Resolver>,
    config: Arc<ServerConfig>,
}

/// What rustls asks for the certificate on every handshake.
struct Resolver {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The stamp of the files last tried, so a failed reload is not retried (and logged) every poll.
    tried: Mutex<Stamp>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServerCertificate {
    /// Loads the pair, failing with a clear error when either file is unreadable, holds no certificate or
    /// key, or the two do not match.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamp = stamp(&files);
        let key = load_pair(&files, &provider)?;
        let resolver = Arc::new(Resolver {
            files,
            provider: provider.clone(),
            current: ArcSwap::from_pointee(key),
            tried: Mutex::new(stamp),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Self {
            resolver,
            config: Arc::new(config),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.resolver.files
    }

    /// The rustls server configuration (HTTP/1.1 over TLS 1.2 or 1.3) serving this certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// The DER of the certificate served now (the first of the chain).
    pub fn current_der(&self) -> Vec<u8> {
        self.resolver
            .current
            .load()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }

    /// Reads the files again and serves the new pair from the next handshake on; on error the current
    /// pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let resolver = &self.resolver;
        let stamp = stamp(&resolver.files);
        if let Ok(mut tried) = resolver.tried.lock() {
            *tried = stamp;
        }
        let key = load_pair(&resolver.files, &resolver.provider)?;
        resolver.current.store(Arc::new(key));
        Ok(())
    }

    /// Reloads when the files' times or sizes differ from the last attempt.
    fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamp(&self.resolver.files);
        let unchanged = self
            .resolver
            .tried
            .lock()
            .map(|t| *t == now)
            .unwrap_or(false);
        (!unchanged).then(|| self.reload())
    }

    /// Starts listening for SIGHUP now (so a signal sent once the process says it listens is not lost),
    /// and returns the task that reloads on SIGHUP and, with `poll`, whenever the files change (checked
    /// that often), until `cancel` fires.
    pub fn watcher(
        self: &Arc<Self>,
        poll: Option<Duration>,
        cancel: CancellationToken,
    ) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let certificate = self.clone();
        Ok(async move {
            let mut ticker = poll.map(|poll| {
                let mut ticker = tokio::time::interval(poll);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                ticker
            });
            loop {
                #[cfg(unix)]
                let signalled = hangup.recv();
                #[cfg(not(unix))]
                let signalled = std::future::pending::<Option<()>>();
                let tick = async {
                    match &mut ticker {
                        Some(ticker) => ticker.tick().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick => {
                        if let Some(outcome) = certificate.reload_if_changed() {
                            certificate.report(outcome, "the files changed");
                        }
                    }
                    _ = signalled => certificate.report(certificate.reload(), "SIGHUP"),
                }
            }
        })
    }

    fn report(&self, outcome: Result<(), TlsError>, cause: &str) {
        match outcome {
            Ok(()) => tracing::info!(
                cert = %self.files().cert.display(),
                cause,
                "reloaded the TLS certificate"
            ),
            Err(error) => tracing::error!(
                %error,
                cause,
                "reloading the TLS certificate failed; still serving the previous one"
            ),
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    let one = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [one(&files.cert), one(&files.key)]
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
            reason: "the file has no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| TlsError::BadKey {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::BadKey {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
    let pair = CertifiedKey::new(chain, key);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(error) => Err(TlsError::NoCertificate {
            path: files.cert.clone(),
            reason: format!("the certificate does not parse: {error}"),
        }),
    }
}
