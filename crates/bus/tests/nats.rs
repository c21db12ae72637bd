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
