//! The bus conformance suite: every backend runs these unchanged. A backend's test file provides
//! `async fn fresh() -> Option<(Arc<dyn Bus>, guard)>` (`None` only where the backend is unavailable
//! outside CI) and invokes `all_bus_tests!()`.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use quench_bus::{Ack, Bus, Delivery, EventBatch, Heartbeat, SignedAck, SignedHeartbeat};
use quench_core::{
    Change, Event, KeyId, Seq, Timestamp,
    sign::{
        Signer, Trust,
        ack::{AckKey, AckSeal},
    },
};

/// The manager's key for these tests, and a trust holding it.
pub fn manager() -> (Signer, Trust) {
    let signer = Signer::generate().expect("random");
    let trust = Trust::new(vec![signer.public()]);
    (signer, trust)
}

pub fn batch(signer: &Signer, seq: u64) -> EventBatch {
    EventBatch::seal_events(signer, &[event(seq)])
}

pub fn event(seq: u64) -> Event {
    Event {
        seq: Seq::new(seq),
        at: Timestamp::from_millis(1_700_000_000_000),
        change: Change::KeyRevoked {
            id: KeyId::from_u64(seq).expect("small id"),
            reason: format!("r{seq}"),
        },
    }
}

async fn next<T>(stream: &mut BoxStream<'static, T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a delivery within 5 s")
        .expect("stream open")
}

async fn next_batch(stream: &mut BoxStream<'static, Delivery>) -> EventBatch {
    loop {
        match next(stream).await {
            Delivery::Events(batch) => return batch,
            Delivery::Heartbeat(_) => continue,
            Delivery::Lost(n) => panic!("lost {n} deliveries"),
            Delivery::Invalid(why) => panic!("unreadable delivery: {why}"),
        }
    }
}

pub async fn delivers_events_in_order_to_every_subscriber(bus: Arc<dyn Bus>) {
    let (signer, trust) = manager();
    let mut first = bus.subscribe().await.expect("subscribe");
    let mut second = bus.subscribe().await.expect("subscribe");
    for seq in 1..=100 {
        bus.publish(&batch(&signer, seq)).await.expect("publish");
    }
    for stream in [&mut first, &mut second] {
        for seq in 1..=100 {
            let received = next_batch(stream).await;
            assert_eq!(
                received.open(&trust).expect("signature survives the bus"),
                vec![event(seq)]
            );
        }
    }
}

pub async fn delivers_heartbeats(bus: Arc<dyn Bus>) {
    let (signer, trust) = manager();
    let mut stream = bus.subscribe().await.expect("subscribe");
    let beat = Heartbeat {
        manager: "m1".into(),
        head: Seq::new(42),
        at: Timestamp::from_millis(5),
    };
    bus.heartbeat(&SignedHeartbeat::seal_heartbeat(&signer, &beat))
        .await
        .expect("heartbeat");
    loop {
        if let Delivery::Heartbeat(got) = next(&mut stream).await {
            assert_eq!(got.open(&trust).expect("signed"), beat);
            break;
        }
    }
}

pub async fn carries_acks_back(bus: Arc<dyn Bus>) {
    let edge = Signer::generate().expect("random");
    let mut acks = bus.acks().await.expect("acks");
    let ack = Ack {
        edge: "edge-1".into(),
        region: "eu".into(),
        applied: Seq::new(7),
        at: Timestamp::from_millis(9),
    };
    // Both forms travel: an HMAC under the edge's acknowledgement key, and an Ed25519 signature.
    let mac_key = AckKey::of(&edge);
    bus.ack(&SignedAck::mac_ack(edge.id(), &mac_key, &ack))
        .await
        .expect("ack");
    bus.ack(&SignedAck::seal_ack(&edge, &ack))
        .await
        .expect("ack");
    let maced = next(&mut acks).await;
    assert!(matches!(maced.seal(), AckSeal::Mac(_)));
    assert_eq!(
        maced.open(&edge.public(), Some(&mac_key)).expect("MAC'd"),
        ack
    );
    let signed = next(&mut acks).await;
    assert!(matches!(signed.seal(), AckSeal::Signature(_)));
    assert_eq!(signed.open(&edge.public(), None).expect("signed"), ack);
}

#[macro_export]
macro_rules! all_bus_tests {
    () => {
        bus_tests!(
            delivers_events_in_order_to_every_subscriber,
            delivers_heartbeats,
            carries_acks_back,
        );
    };
}

#[macro_export]
macro_rules! bus_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((bus, _guard)) = fresh().await else { return };
                conformance::$name(bus).await;
            }
        )*
    };
}
