//! The bus conformance suite on NATS JetStream, each test in a deployment (stream and subjects) of its own.
//!
//! The server comes from `QUENCH_TEST_NATS` (default `nats://127.0.0.1:4222`). Where it cannot be reached,
//! the tests fail under CI (`CI=true`) and are skipped, loudly, elsewhere.

mod conformance;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use quench_bus::{Bus, NatsBus};

fn nats_url() -> String {
    std::env::var("QUENCH_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Deletes the test deployment's stream afterwards.
struct Cleanup(NatsBus);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let bus = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(bus.delete_stream()).ok()
        })
        .join();
    }
}

async fn fresh() -> Option<(Arc<dyn Bus>, Cleanup)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let deployment = format!(
        "test-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        quench_core::KeyId::generate().expect("random").as_u64() % 100_000
    );
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        NatsBus::connect(&nats_url(), &deployment, "quench-test"),
    )
    .await;
    match connected {
        Ok(Ok(bus)) => Some((Arc::new(bus.clone()), Cleanup(bus))),
        Ok(Err(e)) => unavailable(e),
        Err(_) => unavailable("no answer within 10 s"),
    }
}

fn unavailable(error: impl std::fmt::Display) -> Option<(Arc<dyn Bus>, Cleanup)> {
    let url = nats_url();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("NATS is required in CI but {url} is unreachable: {error}");
    }
    eprintln!("SKIPPED: NATS at {url} is unreachable ({error}); set QUENCH_TEST_NATS");
    None
}

all_bus_tests!();

#[test]
fn deployment_names_are_checked() {
    use quench_bus::nats::Names;
    let names = Names::for_deployment("prod-eu").expect("valid");
    assert_eq!(names.stream, "QUENCH_PROD_EU");
    assert_eq!(names.events, "quench.prod-eu.events");
    for bad in ["", "Prod", "a.b", "a b", "-x", &"x".repeat(33)] {
        assert!(Names::for_deployment(bad).is_err(), "{bad:?}");
    }
}

/// An acknowledgement that claims to come from one edge but travels on another edge's subject (where NATS
/// permissions would let the other edge publish) is dropped; the genuine one after it arrives.
#[tokio::test]
async fn an_ack_on_another_edges_subject_is_dropped() {
    use futures::StreamExt;
    use quench_bus::{Ack, SignedAck, nats::SIGNATURE_HEADER};
    use quench_core::{Seq, Timestamp, sign::Signer};

    let Some((bus, cleanup)) = fresh().await else {
        return;
    };
    let names = cleanup.0.names().clone();
    let mut acks = bus.acks().await.expect("acks");
    let key = Signer::generate().expect("random");
    let ack = |edge: &str| {
        SignedAck::seal_ack(
            &key,
            &Ack {
                edge: edge.into(),
                region: "eu".into(),
                applied: Seq::new(1),
                at: Timestamp::from_millis(1),
            },
        )
    };
    let raw = async_nats::connect(nats_url()).await.expect("connect");
    let publish = |subject: String, sealed: SignedAck| {
        let raw = raw.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(SIGNATURE_HEADER, sealed.seal().encode().as_str());
            raw.publish_with_headers(subject, headers, sealed.body().to_vec().into())
                .await
                .expect("publish");
            raw.flush().await.expect("flush");
        }
    };
    publish(names.acks_of("edge-1"), ack("edge-2")).await;
    publish(names.acks_of("edge-1"), ack("edge-1")).await;
    let first = tokio::time::timeout(Duration::from_secs(10), acks.next())
        .await
        .expect("an ack arrives")
        .expect("open stream");
    assert_eq!(
        first.open(&key.public(), None).expect("signed").edge,
        "edge-1"
    );
}
