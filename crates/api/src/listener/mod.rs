//! Serving an HTTP API on a TCP listener, for the edge and the manager alike: one accept loop with a
//! connection cap, per-connection deadlines, optional TLS, and graceful shutdown.
//!
//! Why our own loop rather than `axum::serve`: a server that accepts every connection and waits forever
//! for its headers lets anyone exhaust the process's open files with a few hundred half-sent requests.
//! Each connection here lives under [`Limits`]:
//!
//! * the **connection cap** is a semaphore taken *before* `accept`, so at the cap further clients wait in
//!   the kernel's bounded accept queue instead of holding our file descriptors;
//! * the **header timeout** runs from a request's first byte (from the accepted connection for the first
//!   request, including the TLS handshake) until its head is parsed;
//! * the **idle timeout** closes a keep-alive connection that neither reads nor writes for that long
//!   between requests (a client that stops reading a response makes no progress either);
//! * the **body timeout** bounds how long a handler waits for a request body; a trickled body is answered
//!   with 408 and the connection closed.
//!
//! hyper's own `header_read_timeout` is not used: it also starts while a keep-alive connection waits for its
//! next request, which would make the idle timeout no longer than the header timeout.
//!
//! [`Exposure`] decides what a listener serves when `/metrics` and the detailed `/healthz` move to a
//! separate operations listener.

mod connection;
mod exposure;
pub mod tls;

use std::{
    future::Future,
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::Router;
use tokio::{
    net::TcpListener,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

pub use exposure::{Exposure, expose};
pub use tls::{ServerCertificate, TlsError, TlsFiles};

/// How long each connection may take, and how many may be open at once, on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte (or from the accepted connection) until its head is read; also bounds
    /// the TLS handshake.
    pub header_timeout: Duration,
    /// A connection with no request in progress and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// From a request's head until its body has been read.
    pub body_timeout: Duration,
    /// Connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// After shutdown, how long requests in flight may take before their connections are dropped.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// What a listener has done, for tests and metrics.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: AtomicUsize,
    accepted: AtomicU64,
    timed_out: AtomicU64,
}

impl ListenerStats {
    /// Connections accepted and not yet closed.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections closed because a header, idle or handshake deadline passed.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// A bound listener and how to serve it.
#[derive(Debug)]
pub struct Endpoint {
    pub listener: TcpListener,
    pub limits: Limits,
    /// Serve HTTPS with this (reloadable) certificate.
    pub tls: Option<Arc<ServerCertificate>>,
    pub stats: Arc<ListenerStats>,
    /// A name for logs: `manager`, `edge`, `edge ops`...
    pub name: &'static str,
}

impl Endpoint {
    pub fn new(listener: TcpListener, name: &'static str) -> Self {
        Self {
            listener,
            limits: Limits::default(),
            tls: None,
            stats: Arc::default(),
            name,
        }
    }

    /// `https` when the endpoint serves TLS, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `scheme://address` of the bound listener.
    pub fn url(&self) -> io::Result<String> {
        Ok(format!(
            "{}://{}",
            self.scheme(),
            self.listener.local_addr()?
        ))
    }
}

/// An API's listener and, optionally, the operations listener that takes over its `/metrics` and detailed
/// `/healthz`.
#[derive(Debug)]
pub struct Listeners {
    pub api: Endpoint,
    pub ops: Option<Endpoint>,
}

impl Listeners {
    /// One plain-HTTP listener with the default limits, serving everything.
    pub fn plain(listener: TcpListener, name: &'static str) -> Self {
        Self {
            api: Endpoint::new(listener, name),
            ops: None,
        }
    }
}

/// Serves `router` on the API listener and, when there is one, its operations part on the ops listener,
/// until `cancel` fires.
pub async fn serve_listeners(
    listeners: Listeners,
    router: Router,
    cancel: CancellationToken,
) -> io::Result<()> {
    let Listeners { api, ops } = listeners;
    let Some(ops) = ops else {
        return serve(api, router, async move { cancel.cancelled().await }).await;
    };
    let public = serve(api, expose(router.clone(), Exposure::Public), {
        let cancel = cancel.clone();
        async move { cancel.cancelled().await }
    });
    let private = serve(ops, expose(router, Exposure::Ops), async move {
        cancel.cancelled().await
    });
    let (public, private) = tokio::join!(public, private);
    public.and(private)
}

/// Serves `router` on `endpoint` until `shutdown` completes; then stops accepting, lets requests in flight
/// finish (up to the drain timeout) and returns.
pub async fn serve(
    endpoint: Endpoint,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let Endpoint {
        listener,
        limits,
        tls,
        stats,
        name,
    } = endpoint;
    let acceptor =
        tls.map(|certificate| tokio_rustls::TlsAcceptor::from(certificate.server_config()));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = CancellationToken::new();
    let mut connections = JoinSet::new();
    let mut cap_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = acquire(&permits, &mut cap_warned, name) => permit,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    pause_after_accept_error(&error, name).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        connections.spawn(connection::run(connection::Connection {
            stream,
            peer,
            acceptor: acceptor.clone(),
            router: router.clone(),
            limits,
            stop: stop.clone(),
            stats: OpenGuard::new(stats.clone(), permit),
        }));
    }
    drop(listener);
    stop.cancel();
    drain(connections, limits.drain_timeout, name).await;
    Ok(())
}

/// A connection slot: holds the cap's permit and the open count until the connection ends.
struct OpenGuard {
    stats: Arc<ListenerStats>,
    _permit: OwnedSemaphorePermit,
}

impl OpenGuard {
    fn new(stats: Arc<ListenerStats>, permit: OwnedSemaphorePermit) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Self {
            stats,
            _permit: permit,
        }
    }

    fn timed_out(&self) {
        self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for a connection slot, warning (at most once a minute) when the cap is reached.
async fn acquire(
    permits: &Arc<Semaphore>,
    warned: &mut Option<Instant>,
    name: &str,
) -> OwnedSemaphorePermit {
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return permit;
    }
    let now = Instant::now();
    if warned.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
        *warned = Some(now);
        tracing::warn!(
            listener = name,
            "connection cap reached; new connections wait in the accept queue (see --max-connections)"
        );
    }
    match permits.clone().acquire_owned().await {
        Ok(permit) => permit,
        // The semaphore is never closed; should it be, accept nothing more.
        Err(_) => std::future::pending().await,
    }
}

/// An accept error is usually one connection's (reset before accept) or a full file table: log it and,
/// for the latter, give closing connections a moment before trying again.
async fn pause_after_accept_error(error: &io::Error, name: &str) {
    use io::ErrorKind::*;
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        tracing::debug!(%error, listener = name, "a connection failed before it was accepted");
        return;
    }
    tracing::error!(%error, listener = name, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn drain(mut connections: JoinSet<()>, timeout: Duration, name: &str) {
    let all = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(timeout, all).await.is_err() {
        tracing::warn!(
            listener = name,
            remaining = connections.len(),
            "requests still in flight after the drain timeout; closing their connections"
        );
        connections.abort_all();
    }
}
