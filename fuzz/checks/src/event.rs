//! Events as edges receive them: one event's JSON, or a whole batch body (`{"events": [...]}`) signed by
//! the trusted manager key and opened the way an edge opens a bus message or a page of the log.
//!
//! Properties: an event that parses re-serialises to JSON that parses to the same event, and that JSON is
//! a fixed point (serialising again gives the same bytes); its `type` is what `Change::kind` says; a batch
//! opens exactly when its body parses, and the events it yields survive being sealed and opened again.

use crate::common;
use quench_bus::{EventBatch, OpenError};
use quench_core::{
    Event,
    sign::{Purpose, SignError},
};

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(event) = serde_json::from_slice::<Event>(body) {
            round_trip(&event);
        }
        return;
    }
    let manager = common::manager();
    let trust = common::trust();
    let batch = EventBatch::from_parts(body.to_vec(), manager.sign(Purpose::Events, body));
    match batch.open(&trust) {
        Ok(events) => {
            events.iter().for_each(round_trip);
            let again = EventBatch::seal_events(&manager, &events);
            assert_eq!(again.open(&trust).expect("a resealed batch opens"), events);
        }
        Err(OpenError::Malformed(_)) => {}
        Err(other) => panic!("a batch signed by the trusted key failed with {other}"),
    }
    // The same bytes under another key are refused before they are read.
    let forged = EventBatch::from_parts(body.to_vec(), common::edge().sign(Purpose::Events, body));
    assert!(matches!(
        forged.open(&trust),
        Err(OpenError::Signature(SignError::UnknownSigner(_)))
    ));
}

fn round_trip(event: &Event) {
    let json = serde_json::to_vec(event).expect("an event serialises");
    let again: Event = serde_json::from_slice(&json).expect("a serialised event parses");
    assert_eq!(&again, event);
    assert_eq!(serde_json::to_vec(&again).expect("serialises"), json);
    let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
    assert_eq!(value["type"], event.change.kind());
    assert_eq!(
        value
            .get("id")
            .or_else(|| value["key"].get("id"))
            .and_then(|id| id.as_str()),
        Some(event.change.key_id().to_string().as_str())
    );
}
