mod conformance;

use std::sync::Arc;

use futures::StreamExt;
use quench_bus::{Bus, Delivery, InProcessBus};

async fn fresh() -> Option<(Arc<dyn Bus>, ())> {
    Some((Arc::new(InProcessBus::default()), ()))
}

all_bus_tests!();

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_what_it_lost() {
    let (signer, _) = conformance::manager();
    let bus = InProcessBus::with_capacity(4);
    let mut slow = bus.subscribe().await.expect("subscribe");
    for seq in 1..=10 {
        bus.publish(&conformance::batch(&signer, seq))
            .await
            .expect("publish");
    }
    assert_eq!(slow.next().await, Some(Delivery::Lost(6)));
    assert_eq!(
        slow.next().await,
        Some(Delivery::Events(conformance::batch(&signer, 7)))
    );
}
