//! Each behaviour of the proxy against a loopback echo server: latency, order, partition, heal, cut.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use quench_netfault::{Link, LinkState, Proxy, ProxyError, RETRANSMIT};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

/// Bounds every wait that is expected to end.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long silence is watched for, where silence is the behaviour.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server on a free loopback port, answering until the test ends.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = socket.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn proxy(latency_ms: u64) -> Proxy {
    let link = Link::latency(Duration::from_millis(latency_ms));
    Proxy::start(echo_server().await, link)
        .await
        .expect("proxy")
}

async fn round_trip(socket: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    socket.write_all(message).await.expect("write");
    let mut answer = vec![0; message.len()];
    timeout(DEADLINE, socket.read_exact(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    answer
}

#[tokio::test]
async fn a_round_trip_takes_at_least_the_latency_each_way() {
    let proxy = proxy(60).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(round_trip(&mut socket, b"ping").await, b"ping");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(120), "{took:?}");
    }
}

/// Order is kept, and the link carries many chunks per latency: one chunk per latency would need
/// 256 x 50 ms = 12.8 s each way for these 4 MiB.
#[tokio::test]
async fn bytes_arrive_in_order_without_one_chunk_per_latency() {
    let proxy = proxy(50).await;
    let socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    let (mut read, mut write) = socket.into_split();
    let sent: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let expected = sent.clone();
    let started = Instant::now();
    let writer = tokio::spawn(async move { write.write_all(&sent).await });
    let mut received = vec![0; expected.len()];
    timeout(DEADLINE, read.read_exact(&mut received))
        .await
        .expect("all of it within the deadline")
        .expect("read");
    writer.await.expect("join").expect("write");
    assert!(received == expected, "bytes reordered or altered");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "{took:?}");
}

/// A running proxy takes a new latency: the next round trip pays it, without a new connection.
#[tokio::test]
async fn a_link_slows_down_and_recovers_while_connections_stay_open() {
    let proxy = proxy(0).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut socket, b"fast").await, b"fast");
    proxy.set_link(Link::latency(Duration::from_millis(80)));
    let started = Instant::now();
    assert_eq!(round_trip(&mut socket, b"slow").await, b"slow");
    assert!(
        started.elapsed() >= Duration::from_millis(160),
        "{:?}",
        started.elapsed()
    );
    proxy.set_link(Link::default());
    let started = Instant::now();
    assert_eq!(round_trip(&mut socket, b"fast again").await, b"fast again");
    assert!(
        started.elapsed() < Duration::from_millis(160),
        "{:?}",
        started.elapsed()
    );
}

/// Total loss: every chunk is retransmitted once, so each direction of a round trip stalls for
/// [`RETRANSMIT`]; the bytes still arrive, in order.
#[tokio::test]
async fn a_lossy_link_stalls_like_retransmission_but_loses_nothing() {
    let proxy = proxy(0).await;
    proxy.set_link(Link {
        latency: Duration::ZERO,
        loss_per_mille: 1000,
    });
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    for message in [&b"first"[..], b"second", b"third"] {
        let started = Instant::now();
        assert_eq!(round_trip(&mut socket, message).await, message);
        assert!(
            started.elapsed() >= 2 * RETRANSMIT,
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_partition_silences_and_healing_resumes() {
    let proxy = proxy(0).await;
    let mut before = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut before, b"one").await, b"one");

    proxy.set(LinkState::Partitioned);
    assert_eq!(proxy.state(), LinkState::Partitioned);
    before.write_all(b"two").await.expect("write");
    let mut answer = [0; 3];
    let silent = timeout(QUIET, before.read_exact(&mut answer)).await;
    assert!(silent.is_err(), "nothing crosses a partition");
    // New connections are accepted, but nothing crosses on them either.
    let mut during = timeout(DEADLINE, TcpStream::connect(proxy.addr()))
        .await
        .expect("accepted in time")
        .expect("connect");
    during.write_all(b"new").await.expect("write");
    let mut fresh = [0; 3];
    let silent = timeout(QUIET, during.read_exact(&mut fresh)).await;
    assert!(
        silent.is_err(),
        "nothing crosses on a new connection either"
    );

    proxy.set(LinkState::Open);
    timeout(DEADLINE, before.read_exact(&mut answer))
        .await
        .expect("held data delivered after healing")
        .expect("read");
    assert_eq!(&answer, b"two");
    timeout(DEADLINE, during.read_exact(&mut fresh))
        .await
        .expect("the new connection forwarded after healing")
        .expect("read");
    assert_eq!(&fresh, b"new");
}

/// Reads until the connection ends: true when it ended (closed or reset) within the deadline.
async fn ends(socket: &mut TcpStream) -> bool {
    let mut buffer = [0; 64];
    let until_end = async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(DEADLINE, until_end).await.is_ok()
}

#[tokio::test]
async fn a_cut_closes_connections_and_refuses_new_ones_until_healed() {
    let proxy = proxy(0).await;
    let mut before = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut before, b"one").await, b"one");

    proxy.set(LinkState::Cut);
    assert!(ends(&mut before).await, "an existing connection is closed");
    // The listener still accepts (a refused connect is as good), but closes at once.
    if let Ok(mut during) = TcpStream::connect(proxy.addr()).await {
        let _ = during.write_all(b"x").await;
        assert!(ends(&mut during).await, "a new connection is closed");
    }

    proxy.set(LinkState::Open);
    let mut after = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut after, b"back").await, b"back");
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() {
    let proxy = proxy(0).await;
    let mut socket = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut socket, b"one").await, b"one");
    drop(proxy);
    assert!(ends(&mut socket).await);
}

#[tokio::test]
async fn only_loopback_upstreams_are_accepted() {
    let elsewhere: SocketAddr = "192.0.2.1:80".parse().expect("addr");
    let refused = Proxy::start(elsewhere, Link::default()).await;
    assert!(matches!(refused, Err(ProxyError::NotLoopback(a)) if a == elsewhere));
}
