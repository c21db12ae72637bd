//! A userspace TCP proxy on loopback that makes a link slow, silent or dead, for Quench's fault tests,
//! its fault campaign and `quench bench propagation --regions`.
//!
//! This machine's kernel has no `netem`, so the faults a real wide-area link has come from a proxy between
//! the two parts instead: [`Proxy::start`] listens on `127.0.0.1:0` and forwards every connection to one
//! upstream address.
//!
//! - **Latency** is one-way and per direction: each chunk read is stamped with `read time + latency` and
//!   written no earlier than that. Each direction has a queue, so many chunks are in flight at once (as on
//!   a real link) rather than one chunk per latency; the queue holds at most [`QUEUE_CHUNKS`] chunks of
//!   [`CHUNK`] bytes, and a full queue stops reading, so TCP's own flow control pushes back on the sender.
//! - **Loss**: TCP does not lose data, it retransmits, so a lost segment shows on a connection as a stall:
//!   each chunk is, with the link's loss probability, held back a further [`RETRANSMIT`] (Linux's
//!   smallest retransmission timeout) and, as in TCP, everything behind it waits too.
//! - **Partitioned** holds every connection silent: nothing is read or written, the sockets stay open (as
//!   when a router drops packets); new connections are accepted but not forwarded. Healing resumes them
//!   where they stopped.
//! - **Cut** closes every connection and closes new ones at once (as when a peer is gone).
//!
//! The proxy forwards only to loopback addresses: it exists to fault links between processes of one
//! machine, and refusing anything else keeps a mistyped address from sending traffic elsewhere.

#![forbid(unsafe_code)]

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};

/// The most bytes read at once from one side of a connection.
pub const CHUNK: usize = 16 * 1024;
/// The most chunks queued per direction of one connection: with [`CHUNK`], 1 MiB in flight at most.
pub const QUEUE_CHUNKS: usize = 64;
/// The most connections forwarded at once; further ones are closed when accepted.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a lost chunk takes to arrive after all: Linux's smallest TCP retransmission timeout.
pub const RETRANSMIT: Duration = Duration::from_millis(200);

/// What the link does to data while it is open; [`Proxy::set_link`] changes it on a running proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    /// One-way delay, applied in each direction.
    pub latency: Duration,
    /// Chunks lost (and so retransmitted, [`RETRANSMIT`] later) per thousand, 0 to 1000.
    pub loss_per_mille: u16,
}

impl Link {
    /// A link with this one-way latency and no loss.
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency,
            loss_per_mille: 0,
        }
    }
}

/// Whether the link carries anything at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Forwarding, with the link's latency.
    #[default]
    Open,
    /// Connections held silent, new ones accepted but not forwarded; [`LinkState::Open`] resumes them.
    Partitioned,
    /// Every connection closed, new ones closed when accepted.
    Cut,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy could not listen on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    #[error("{0} is not a loopback address: the proxy forwards only within this machine")]
    NotLoopback(SocketAddr),
}

/// A running proxy; it stops, closing every connection, when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: watch::Sender<LinkState>,
    link: watch::Sender<Link>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream` over `link`. Must be
    /// called within a Tokio runtime, which then runs the proxy.
    pub async fn start(upstream: SocketAddr, link: Link) -> Result<Self, ProxyError> {
        if !upstream.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(upstream));
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ProxyError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyError::Bind)?;
        let (state, watching) = watch::channel(LinkState::Open);
        let (link, links) = watch::channel(link);
        let accepting = tokio::spawn(accept(listener, upstream, links, watching));
        Ok(Self {
            addr,
            state,
            link,
            accepting,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the link; connections follow at once.
    pub fn set(&self, state: LinkState) {
        self.state.send_replace(state);
    }

    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// Changes the link's latency and loss; data read from now on follows the new link.
    pub fn set_link(&self, link: Link) {
        self.link.send_replace(link);
    }

    pub fn link(&self) -> Link {
        *self.link.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accepting task owns every connection's task: aborting it drops them and their sockets.
        self.accepting.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    link: watch::Receiver<Link>,
    state: watch::Receiver<LinkState>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of file descriptors or similar: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if *state.borrow() == LinkState::Cut || connections.len() >= MAX_CONNECTIONS {
                    continue;
                }
                connections.spawn(connection(client, upstream, link.clone(), state.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Forwards one connection until both sides are done or the link is cut.
async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    link: watch::Receiver<Link>,
    state: watch::Receiver<LinkState>,
) {
    let mut cut = state.clone();
    let forward = async move {
        let mut opened = state.clone();
        // A partitioned link does not even carry the connection attempt.
        if !until_open(&mut opened).await {
            return;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        tokio::join!(
            pipe(client_read, server_write, link.clone(), state.clone()),
            pipe(server_read, client_write, link, state),
        );
    };
    tokio::select! {
        () = forward => {}
        _ = cut.wait_for(|s| *s == LinkState::Cut) => {}
    }
}

/// A chunk read and when it may be written; an empty chunk is the end of the stream.
type Timed = (Instant, Vec<u8>);

/// One direction: a reader stamping chunks into a bounded queue, a writer delivering each when due.
async fn pipe(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    link: watch::Receiver<Link>,
    state: watch::Receiver<LinkState>,
) {
    let (queue, queued) = mpsc::channel(QUEUE_CHUNKS);
    tokio::join!(
        read_side(from, queue, link, state.clone()),
        write_side(queued, to, state),
    );
}

async fn read_side(
    mut from: OwnedReadHalf,
    queue: mpsc::Sender<Timed>,
    link: watch::Receiver<Link>,
    mut state: watch::Receiver<LinkState>,
) {
    let mut dice = Dice::new();
    loop {
        if !until_open(&mut state).await {
            return;
        }
        let mut chunk = vec![0; CHUNK];
        // A read error ends the stream like a close does: the other side sees the end.
        let read = from.read(&mut chunk).await.unwrap_or(0);
        chunk.truncate(read);
        let end = read == 0;
        let Link {
            latency,
            loss_per_mille,
        } = *link.borrow();
        let mut due = Instant::now() + latency;
        if !end && dice.below(loss_per_mille) {
            due += RETRANSMIT;
        }
        if queue.send((due, chunk)).await.is_err() || end {
            return;
        }
    }
}

async fn write_side(
    mut queued: mpsc::Receiver<Timed>,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
) {
    while let Some((due, chunk)) = queued.recv().await {
        tokio::time::sleep_until(due).await;
        if !until_open(&mut state).await {
            return;
        }
        if chunk.is_empty() {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

/// Waits while the link is partitioned: true once it is open, false if it is cut or the proxy is gone.
async fn until_open(state: &mut watch::Receiver<LinkState>) -> bool {
    match state.wait_for(|s| *s != LinkState::Partitioned).await {
        Ok(now) => *now == LinkState::Open,
        Err(_) => false,
    }
}

/// A small xorshift generator for the loss dice: the proxy needs chance, not secrecy or replay.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    /// True with probability `per_mille` / 1000.
    fn below(&mut self, per_mille: u16) -> bool {
        if per_mille == 0 {
            return false;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 1000 < u64::from(per_mille)
    }
}
