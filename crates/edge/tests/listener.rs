//! The serving layer under attack, through real sockets: half-sent headers held open, idle keep-alive
//! connections, trickled bodies, more connections than the cap, plain HTTP on a TLS listener, bad and
//! replaced certificates; and graceful shutdown still finishing what is in flight.
//!
//! Deadlines are short (about a second) so the attacks finish quickly; every assertion on time is a lower
//! bound ("not before the timeout") or a generous liveness bound, so a loaded machine cannot fail them.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use quench_api::listener::{
    self, Endpoint, Limits, ListenerStats, ServerCertificate, TlsError, TlsFiles,
};
use quench_edge::{EdgeConfig, Replica};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

/// Far beyond any deadline under test: a connection still open after this is a failure.
const LIVENESS: Duration = Duration::from_secs(120);

struct Server {
    addr: SocketAddr,
    stats: Arc<ListenerStats>,
    cancel: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

fn limits(header: u64, idle: u64, body: u64, cap: usize) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(header),
        idle_timeout: Duration::from_millis(idle),
        body_timeout: Duration::from_millis(body),
        max_connections: cap,
        drain_timeout: Duration::from_secs(30),
    }
}

/// A small API: `/ok` answers at once, `/slow` after a second; the edge API under `/v1/verify`.
fn router() -> Router {
    let edge = quench_edge::http::router(Replica::new(EdgeConfig::default()));
    let own = Router::new().route("/ok", get(|| async { "ok" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        }),
    );
    own.merge(edge)
}

async fn start(limits: Limits, tls: Option<Arc<ServerCertificate>>) -> Server {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let endpoint = Endpoint {
        limits,
        tls,
        ..Endpoint::new(tcp, "test")
    };
    let stats = endpoint.stats.clone();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(listener::serve(endpoint, router(), {
        let cancel = cancel.clone();
        async move { cancel.cancelled().await }
    }));
    Server {
        addr,
        stats,
        cancel,
        task,
    }
}

/// Reads one response (head and a `content-length` body) from `stream`.
async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&buf[..n]);
            }
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
            return Some((status, body));
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Waits until the server closes `stream` (end of file or reset); the time it took, or `None` when it
/// answered something instead or stayed open past [`LIVENESS`].
async fn closed(stream: &mut TcpStream) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    match tokio::time::timeout(LIVENESS, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(start.elapsed()),
        Ok(Ok(_)) | Err(_) => None,
    }
}

/// A client that sends half a request head and then one more byte every 300 ms, never finishing it.
/// Returns once the server closed the connection.
async fn slowloris(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: quench\r\nX-Slow: ")
        .await;
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let mut buf = [0u8; 256];
    let end = tokio::time::Instant::now() + LIVENESS;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => return match read {
                Ok(0) | Err(_) => Ok(()),
                Ok(n) => Err(format!("the server answered a half-sent head: {:?}", String::from_utf8_lossy(&buf[..n]))),
            },
            _ = tick.tick() => {
                if stream.write_all(b"a").await.is_err() {
                    return Ok(());
                }
            }
            () = tokio::time::sleep_until(end) => return Err("still open".into()),
        }
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(LIVENESS)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_cut_and_the_connection_cap_holds() {
    const CAP: usize = 20;
    const ATTACKERS: usize = 200;
    let server = start(limits(1_000, 30_000, 30_000, CAP), None).await;

    let sampling = Arc::new(AtomicBool::new(true));
    let most_open = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn({
        let (sampling, most_open, stats) =
            (sampling.clone(), most_open.clone(), server.stats.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                most_open.fetch_max(stats.open(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });

    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| tokio::spawn(slowloris(server.addr)))
        .collect();
    // A real client arriving while the cap is full is served once the attackers' slots free.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = client()
        .get(format!("http://{}/ok", server.addr))
        .send()
        .await
        .expect("a normal client is served once the cap frees");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");

    for attacker in attackers {
        attacker
            .await
            .expect("attacker task")
            .expect("closed by the server");
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.expect("sampler");

    let most = most_open.load(Ordering::Relaxed);
    assert!(
        most <= CAP,
        "{most} connections were open at once, over the cap of {CAP}"
    );
    assert_eq!(most, CAP, "the attack filled the cap");
    assert!(
        server.stats.timed_out() >= ATTACKERS as u64,
        "every attacker was cut by the header timeout: {}",
        server.stats.timed_out()
    );
    // Still serving afterwards.
    let response = client()
        .get(format!("http://{}/ok", server.addr))
        .send()
        .await
        .expect("served after the attack");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let server = start(limits(1_000, 30_000, 30_000, 8), None).await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    closed(&mut silent).await.expect("closed by the server");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(950), "closed after {took:?}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout_not_the_header_timeout() {
    let server = start(limits(500, 2_000, 30_000, 8), None).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let request = b"GET /ok HTTP/1.1\r\nHost: quench\r\n\r\n";
    stream.write_all(request).await.expect("send");
    assert_eq!(read_response(&mut stream).await, Some((200, "ok".into())));
    // Waiting longer than the header timeout between requests is fine: that is the idle timeout's job.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let sent = Instant::now();
    stream.write_all(request).await.expect("send again");
    assert_eq!(
        read_response(&mut stream).await,
        Some((200, "ok".into())),
        "a keep-alive connection survives a pause shorter than the idle timeout"
    );
    closed(&mut stream)
        .await
        .expect("the idle connection is closed by the server");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(1_950),
        "closed after {took:?}, before the idle timeout"
    );
}

/// The header deadline of a keep-alive connection's next request starts with that request's first byte,
/// even long after the last one (the watchdog is not woken by requests; it looks again at least once a
/// header timeout).
#[tokio::test]
async fn a_later_requests_half_sent_head_is_cut_at_the_header_timeout_not_the_idle_one() {
    let server = start(limits(500, 30_000, 30_000, 8), None).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: quench\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(read_response(&mut stream).await, Some((200, "ok".into())));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let sent = Instant::now();
    stream
        .write_all(b"GET /ok HTTP/1.1\r\nHost: qu")
        .await
        .expect("send half a head");
    closed(&mut stream)
        .await
        .expect("the half-sent head is cut");
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(5_000),
        "cut after {took:?}: the header timeout is 500 ms, the idle one 30 s"
    );
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_timeout_with_408() {
    let server = start(limits(1_000, 30_000, 1_000, 8), None).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    let start = Instant::now();
    stream
        .write_all(
            b"POST /v1/verify HTTP/1.1\r\nHost: quench\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"key\":\"",
        )
        .await
        .expect("send head");
    // Trickle from a second handle of the same socket while reading the answer.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = async {
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    };
    let read = async {
        let mut data = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return data,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    };
    let answer = tokio::select! {
        answer = tokio::time::timeout(LIVENESS, read) => answer.expect("answered and closed"),
        () = trickle => panic!("the server kept reading a trickled body"),
    };
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(start.elapsed() >= Duration::from_millis(950));

    // A body sent at once is not affected.
    let response = client()
        .post(format!("http://{}/v1/verify", server.addr))
        .json(&serde_json::json!({"key": "qk_nope"}))
        .send()
        .await
        .expect("verify");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight_and_closes_idle_connections() {
    // Long idle and header timeouts: shutdown must not wait for them.
    let server = start(limits(300_000, 300_000, 300_000, 8), None).await;
    let mut idle = TcpStream::connect(server.addr).await.expect("connect");
    idle.write_all(b"GET /ok HTTP/1.1\r\nHost: quench\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(read_response(&mut idle).await, Some((200, "ok".into())));

    let slow = tokio::spawn({
        let url = format!("http://{}/slow", server.addr);
        async move { client().get(url).send().await?.text().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.cancel.cancel();

    assert_eq!(
        slow.await
            .expect("task")
            .expect("the request in flight finished"),
        "done"
    );
    assert!(
        closed(&mut idle).await.is_some(),
        "the idle connection was closed"
    );
    tokio::time::timeout(LIVENESS, server.task)
        .await
        .expect("serve returned")
        .expect("task")
        .expect("serve");
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "no longer accepting"
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files in `dir`.
fn certificate(dir: &std::path::Path, name: &str) -> (TlsFiles, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    let pem = made.cert.pem();
    std::fs::write(&files.cert, &pem).expect("write cert");
    std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("write key");
    (files, pem)
}

fn trusting(pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

#[tokio::test]
async fn tls_serves_https_reloads_in_place_and_refuses_plain_http_clearly() {
    let dir = tempfile::tempdir().expect("dir");
    let (files, first) = certificate(dir.path(), "first");
    let certificate_ = ServerCertificate::load(files.clone()).expect("load");
    let server = start(limits(2_000, 30_000, 30_000, 8), Some(certificate_.clone())).await;
    let url = format!("https://127.0.0.1:{}/ok", server.addr.port());

    let response = trusting(&first).get(&url).send().await.expect("https");
    assert_eq!(response.text().await.expect("body"), "ok");

    // Plain HTTP to the TLS listener: a clear 400, not a hang or garbage.
    let plain = client()
        .get(format!("http://{}/ok", server.addr))
        .send()
        .await
        .expect("an answer to plain HTTP");
    assert_eq!(plain.status(), 400);
    let body: serde_json::Value = plain.json().await.expect("json");
    assert_eq!(body["error"]["code"], "tls_required");

    // A new pair in the same files, then a reload: new connections see it, the listener never closed.
    let (_, second) = certificate(dir.path(), "first");
    certificate_.reload().expect("reload");
    let response = trusting(&second).get(&url).send().await.expect("new cert");
    assert_eq!(response.status(), 200);
    assert!(
        trusting(&first).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file: the reload fails and the current certificate stays.
    std::fs::write(&files.key, "not a key").expect("break the key");
    assert!(matches!(
        certificate_.reload(),
        Err(TlsError::BadKey { .. })
    ));
    let response = trusting(&second)
        .get(&url)
        .send()
        .await
        .expect("still served");
    assert_eq!(response.status(), 200);
}

#[test]
fn bad_certificate_files_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().expect("dir");
    let (good, _) = certificate(dir.path(), "good");
    let (other, _) = certificate(dir.path(), "other");

    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        key: good.key.clone(),
    };
    let error = ServerCertificate::load(missing).expect_err("missing file");
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
    assert!(error.to_string().contains("nope.crt"), "{error}");

    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "hello").expect("write");
    let error = ServerCertificate::load(TlsFiles {
        cert: garbage,
        key: good.key.clone(),
    })
    .expect_err("no certificate");
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");

    let error = ServerCertificate::load(TlsFiles {
        cert: good.cert.clone(),
        key: good.cert.clone(),
    })
    .expect_err("a certificate is not a key");
    assert!(matches!(error, TlsError::BadKey { .. }), "{error}");

    let error = ServerCertificate::load(TlsFiles {
        cert: good.cert.clone(),
        key: other.key.clone(),
    })
    .expect_err("mismatched pair");
    assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
    assert!(error.to_string().contains("does not belong"), "{error}");

    ServerCertificate::load(good).expect("a good pair loads");
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_at_the_header_timeout() {
    let dir = tempfile::tempdir().expect("dir");
    let (files, _) = certificate(dir.path(), "c");
    let server = start(
        limits(1_000, 30_000, 30_000, 8),
        Some(ServerCertificate::load(files).expect("load")),
    )
    .await;
    let start = Instant::now();
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // The first bytes of a TLS record header, and nothing more.
    stream.write_all(&[0x16, 0x03, 0x01]).await.expect("send");
    closed(&mut stream).await.expect("closed");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert_eq!(server.stats.timed_out(), 1);
}
