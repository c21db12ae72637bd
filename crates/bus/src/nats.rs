//! NATS JetStream: the bus for a real deployment.
//!
//! * Events go to a JetStream stream (`QUENCH_<DEPLOYMENT>`, subject `quench.<deployment>.events`): the
//!   publisher waits for the stream's acknowledgement, so a published batch survives a NATS restart, and a
//!   message id (a digest of the batch) lets JetStream drop duplicates from managers that publish the same
//!   batch twice. Edges read it through an ordered consumer, which NATS recreates after a reconnect from
//!   the last message seen, so a blip loses nothing; anything missed anyway is repaired from the manager's
//!   log (the sequence numbers inside the events say so).
//! * Heartbeats (`quench.<deployment>.heartbeat`) and acknowledgements (`quench.<deployment>.acks`) are plain
//!   NATS messages: they matter only while fresh.
//! * Every message carries its signature in the `Quench-Signature` header over the exact payload.
//!
//! `--deployment` namespaces every stream and subject, so several deployments (and test runs) share one
//! NATS. Works with NATS 2.9 and later: only stream and ordered-consumer features 2.9 has are used.

use std::time::Duration;

use async_nats::{
    HeaderMap,
    jetstream::{self, consumer::DeliverPolicy, stream},
};
use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use quench_core::{hash::hex, hash::sha256, sign::Signature};

use crate::{Bus, BusError, Delivery, EventBatch, Sealed, SignedAck, SignedHeartbeat};

pub const SIGNATURE_HEADER: &str = "Quench-Signature";
/// How long JetStream keeps events. Edges that are behind by more repair from the manager's log.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Tries at reaching JetStream at start, 250 ms apart.
const STREAM_ATTEMPTS: u32 = 40;

/// Stream and subject names for one deployment.
#[derive(Debug, Clone)]
pub struct Names {
    pub stream: String,
    pub events: String,
    pub heartbeats: String,
    pub acks: String,
}

impl Names {
    /// `deployment`: 1 to 32 of `a-z 0-9 _ -`, starting with a letter or digit.
    pub fn for_deployment(deployment: &str) -> Result<Self, BusError> {
        let valid = (1..=32).contains(&deployment.len())
            && deployment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && deployment.as_bytes()[0].is_ascii_alphanumeric();
        if !valid {
            return Err(BusError::Transport(format!(
                "deployment {deployment:?}: use 1 to 32 of a-z, 0-9, _ and -"
            )));
        }
        Ok(Self {
            stream: format!(
                "QUENCH_{}",
                deployment.to_ascii_uppercase().replace('-', "_")
            ),
            events: format!("quench.{deployment}.events"),
            heartbeats: format!("quench.{deployment}.heartbeat"),
            acks: format!("quench.{deployment}.acks"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: Names,
}

fn transport(error: impl std::fmt::Display) -> BusError {
    BusError::Transport(error.to_string())
}

fn signed_headers(signature: &Signature) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, signature.encode().as_str());
    headers
}

/// A received payload and its signature header, not yet verified.
fn sealed<const P: u8>(payload: &[u8], headers: Option<&HeaderMap>) -> Result<Sealed<P>, String> {
    let header = headers.and_then(|h| h.get(SIGNATURE_HEADER));
    unseal(payload, header.map(|value| value.as_str()))
}

/// Reads a message as it came off NATS: its payload and the text of its `Quench-Signature` header (if
/// any). Pure, so the fuzz targets reach exactly what a subscriber runs on untrusted bytes.
pub fn unseal<const P: u8>(payload: &[u8], signature: Option<&str>) -> Result<Sealed<P>, String> {
    let header = signature.ok_or_else(|| "a message without a signature".to_owned())?;
    let signature = Signature::decode(header).map_err(|e| e.to_string())?;
    Ok(Sealed::from_parts(payload.to_vec(), signature))
}

impl NatsBus {
    /// Connects (retrying until NATS answers) and makes sure the deployment's stream exists.
    pub async fn connect(url: &str, deployment: &str, client_name: &str) -> Result<Self, BusError> {
        Self::connect_in(url, deployment, client_name, None).await
    }

    /// As [`NatsBus::connect`], reaching JetStream in `domain`: how an edge on a leaf node uses the
    /// stream that lives in its hub (the hub's `jetstream { domain: ... }`).
    pub async fn connect_in(
        url: &str,
        deployment: &str,
        client_name: &str,
        domain: Option<&str>,
    ) -> Result<Self, BusError> {
        let names = Names::for_deployment(deployment)?;
        let client = async_nats::ConnectOptions::new()
            .name(client_name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                tracing::info!(%event, "nats");
            })
            .connect(url)
            .await
            .map_err(transport)?;
        let jetstream = match domain {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        let bus = Self {
            client,
            jetstream,
            names,
        };
        // Right after a server (or its leaf connection) starts, JetStream may not answer yet.
        let mut attempt = 0;
        loop {
            match bus.ensure_stream().await {
                Ok(()) => return Ok(bus),
                Err(error) if attempt < STREAM_ATTEMPTS => {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "JetStream is not answering yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn ensure_stream(&self) -> Result<(), BusError> {
        let config = stream::Config {
            name: self.names.stream.clone(),
            subjects: vec![self.names.events.clone()],
            max_age: RETENTION,
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map_err(transport)?;
        Ok(())
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Deletes the deployment's stream (for tests and decommissioning).
    pub async fn delete_stream(&self) -> Result<(), BusError> {
        self.jetstream
            .delete_stream(&self.names.stream)
            .await
            .map_err(transport)?;
        Ok(())
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, batch: &EventBatch) -> Result<(), BusError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(batch.body().to_vec().into())
            .headers(signed_headers(batch.signature()))
            .message_id(hex(&sha256(batch.body())[..16]));
        let ack = self
            .jetstream
            .send_publish(self.names.events.clone(), publish)
            .await
            .map_err(transport)?;
        ack.await.map_err(transport)?;
        Ok(())
    }

    async fn heartbeat(&self, heartbeat: &SignedHeartbeat) -> Result<(), BusError> {
        self.client
            .publish_with_headers(
                self.names.heartbeats.clone(),
                signed_headers(heartbeat.signature()),
                heartbeat.body().to_vec().into(),
            )
            .await
            .map_err(transport)
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Delivery>, BusError> {
        // Heartbeats first: subscribing is immediate, and a consumer created after it misses no event.
        let heartbeats = self
            .client
            .subscribe(self.names.heartbeats.clone())
            .await
            .map_err(transport)?
            .map(
                |message| match sealed(&message.payload, message.headers.as_ref()) {
                    Ok(beat) => Delivery::Heartbeat(beat),
                    Err(why) => Delivery::Invalid(why),
                },
            );
        let stream = self
            .jetstream
            .get_stream(&self.names.stream)
            .await
            .map_err(transport)?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: self.names.events.clone(),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(transport)?;
        let events = consumer
            .messages()
            .await
            .map_err(transport)?
            .map(|message| match message {
                Ok(message) => match sealed(&message.payload, message.headers.as_ref()) {
                    Ok(batch) => Delivery::Events(batch),
                    Err(why) => Delivery::Invalid(why),
                },
                Err(error) => {
                    tracing::warn!(%error, "the event consumer was interrupted; repairing from the log");
                    Delivery::Lost(0)
                }
            });
        Ok(futures::stream::select(events, heartbeats).boxed())
    }

    async fn ack(&self, ack: &SignedAck) -> Result<(), BusError> {
        self.client
            .publish_with_headers(
                self.names.acks.clone(),
                signed_headers(ack.signature()),
                ack.body().to_vec().into(),
            )
            .await
            .map_err(transport)
    }

    async fn acks(&self) -> Result<BoxStream<'static, SignedAck>, BusError> {
        let acks = self
            .client
            .subscribe(self.names.acks.clone())
            .await
            .map_err(transport)?
            .filter_map(|message| async move {
                sealed(&message.payload, message.headers.as_ref()).ok()
            });
        Ok(acks.boxed())
    }
}
