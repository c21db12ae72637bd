//! One connection: the TLS handshake (or a plain-HTTP refusal on a TLS listener), hyper's HTTP/1 state
//! machine, and a watchdog that closes the connection when its header or idle deadline passes.
//!
//! The deadlines follow what the connection reports through [`Activity`]: its reads and writes (through
//! [`Watched`]) and the start and end of each request (through the service). The body deadline lives on
//! the request body itself ([`TimedBody`]), because only the handler knows when it reads it.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::ConnectInfo,
    http::{HeaderValue, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use http_body::{Body as _, Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep, timeout_at},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Limits, OpenGuard};
use crate::web::ApiError;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

pub(super) struct Connection {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub acceptor: Option<TlsAcceptor>,
    pub router: Router,
    pub limits: Limits,
    pub stop: CancellationToken,
    pub stats: OpenGuard,
}

pub(super) async fn run(connection: Connection) {
    let Connection {
        stream,
        peer,
        acceptor,
        router,
        limits,
        stop,
        stats,
    } = connection;
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        return serve_http(stream, peer, router, limits, stop, &stats).await;
    };
    let deadline = Instant::now() + limits.header_timeout;
    match handshake(stream, &acceptor, deadline).await {
        Ok(tls) => serve_http(tls, peer, router, limits, stop, &stats).await,
        Err(HandshakeEnd::TimedOut) => {
            stats.timed_out();
            tracing::debug!(%peer, "TLS handshake timed out");
        }
        Err(HandshakeEnd::Failed) => {}
    }
}

enum HandshakeEnd {
    TimedOut,
    Failed,
}

async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    deadline: Instant,
) -> Result<TlsStream<TcpStream>, HandshakeEnd> {
    let mut first = [0u8; 1];
    match timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => return Err(HandshakeEnd::TimedOut),
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) => {
            refuse_plain_http(stream, deadline).await;
            return Err(HandshakeEnd::Failed);
        }
        Ok(_) => return Err(HandshakeEnd::Failed),
    }
    match timeout_at(deadline, acceptor.accept(stream)).await {
        Err(_) => Err(HandshakeEnd::TimedOut),
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            Err(HandshakeEnd::Failed)
        }
    }
}

/// Answers a plain-HTTP request on a TLS listener with a clear 400 instead of a TLS alert the client cannot
/// read, then closes.
async fn refuse_plain_http(mut stream: TcpStream, deadline: Instant) {
    const BODY: &str = r#"{"error":{"code":"tls_required","message":"this listener serves HTTPS only; use an https:// URL"}}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = timeout_at(deadline, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, so that closing does not reset the connection before the client has
        // read the answer.
        let mut sink = [0u8; 4096];
        let mut read = 0;
        while read < 64 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    stats: &OpenGuard,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(&limits));
    let service = {
        let activity = activity.clone();
        service_fn(move |request| {
            handle(
                request,
                router.clone(),
                peer,
                activity.clone(),
                limits.body_timeout,
            )
        })
    };
    let watched = Watched {
        io,
        activity: activity.clone(),
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(watched), service);
    tokio::pin!(connection);
    // One timer for the connection's life, re-armed only when it fires: requests never touch it.
    let watchdog = tokio::time::sleep_until(activity.next_check(Instant::now()));
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            () = watchdog.as_mut() => {
                let now = Instant::now();
                if activity.expired(now) {
                    stats.timed_out();
                    tracing::debug!(%peer, "closing a connection past its header or idle deadline");
                    return;
                }
                watchdog.as_mut().reset(activity.next_check(now));
            }
            () = stop.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    router: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    body_timeout: Duration,
) -> Result<Response<Body>, Infallible> {
    let _request = activity.begin_request();
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    // A request without a body (a forward-auth check) needs no body deadline.
    let (body, timed_out) = if body.is_end_stream() {
        (Body::new(body), None)
    } else {
        let timed_out = Arc::new(AtomicBool::new(false));
        let body = Body::new(TimedBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(body_timeout)),
            timed_out: timed_out.clone(),
        });
        (body, Some(timed_out))
    };
    let Ok(response) = router.oneshot(Request::from_parts(parts, body)).await;
    if timed_out.is_some_and(|t| t.load(Ordering::Relaxed)) {
        return Ok(body_timed_out(body_timeout));
    }
    Ok(response)
}

fn body_timed_out(limit: Duration) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body did not arrive within {} s",
            limit.as_secs_f64()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Marks "no time recorded" in [`Activity`]'s millisecond fields.
const NEVER: u64 = u64::MAX;

/// What a connection has been doing, in milliseconds since it started, shared by its IO, its requests and
/// its watchdog. Nothing here wakes the watchdog: it reads these when its timer fires, and never sleeps
/// past [`Activity::next_check`], so a deadline that begins while it sleeps is still kept to the
/// millisecond (waking a watchdog on every request cost a timer and a task switch per request).
struct Activity {
    origin: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The last read or write that moved bytes, or the end of the last request.
    last_progress: AtomicU64,
    /// The first byte read while no request was in progress: the next request's head has begun.
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    served: AtomicBool,
}

impl Activity {
    fn new(limits: &Limits) -> Self {
        Self {
            origin: Instant::now(),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            last_progress: AtomicU64::new(0),
            head_started: AtomicU64::new(NEVER),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    fn at(&self, millis: u64) -> Instant {
        self.origin + Duration::from_millis(millis)
    }

    fn on_read(&self) {
        let now = self.now();
        self.last_progress.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ =
                self.head_started
                    .compare_exchange(NEVER, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        self.last_progress.store(self.now(), Ordering::Relaxed);
    }

    fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NEVER, Ordering::Release);
        self.served.store(true, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// When the connection should be closed unless something happens first. While a request is in
    /// progress there is none; the idle timeout is only a re-check.
    fn deadline(&self) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + self.idle_timeout;
        }
        let head = self.head_started.load(Ordering::Acquire);
        if head != NEVER {
            return self.at(head) + self.header_timeout;
        }
        let wait = if self.served.load(Ordering::Relaxed) {
            self.idle_timeout
        } else {
            self.header_timeout
        };
        self.at(self.last_progress.load(Ordering::Relaxed)) + wait
    }

    fn expired(&self, now: Instant) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && now >= self.deadline()
    }

    /// When the watchdog looks again: the deadline as it stands, but no later than one header timeout
    /// from `now`, since a request head that starts after `now` has its deadline no earlier than that.
    fn next_check(&self, now: Instant) -> Instant {
        self.deadline().min(now + self.header_timeout)
    }
}

struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .last_progress
            .store(activity.now(), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's byte stream, reporting every read and write that moves bytes to its [`Activity`].
struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.on_write();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

/// A request body that fails once its deadline passes, and records that it did.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
