//! NATS JetStream: the bus for a real deployment.
//!
//! * Events go to a JetStream stream (`QUENCH_<DEPLOYMENT>`, subject `quench.<deployment>.events`): the
//!   publisher waits for the stream's acknowledgement, so a published batch survives a NATS restart, and a
//!   message id (a digest of the batch) lets JetStream drop duplicates from managers that publish the same
//!   batch twice. Edges read it through an ordered consumer, which NATS recreates after a reconnect from
//!   the last message seen, so a blip loses nothing; anything missed anyway is repaired from the manager's
//!   log (the sequence numbers inside the events say so).
//! * Heartbeats (`quench.<deployment>.heartbeat`) and acknowledgements (`quench.<deployment>.acks.<edge>`)
//!   are plain NATS messages: they matter only while fresh. [`names`] explains the layout, which lets NATS
//!   permissions confine each edge to reading and to acknowledging as itself.
//! * Every message carries its signature in the `Quench-Signature` header over the exact payload: NATS
//!   permissions are a second wall, the signatures the first.
//! * [`access`] holds the servers, credentials and TLS settings. A connection refused for its credentials
//!   or its TLS fails at once with that reason; an unreachable server is retried for a while.
//!
//! `--deployment` namespaces every stream and subject, so several deployments (and test runs) share one
//! NATS. Works with NATS 2.9 and later: only stream and ordered-consumer features 2.9 has are used.

pub mod access;
pub mod names;

use std::time::Duration;

use async_nats::{
    ConnectErrorKind, HeaderMap,
    jetstream::{self, consumer::DeliverPolicy, stream},
};
use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use quench_core::{
    hash::{hex, sha256},
    sign::{Signature, ack::AckSeal},
};

pub use access::{AccessError, Credential, NatsAccess, NatsAccessOptions, NatsAuth, NatsServers};
pub use names::Names;

use crate::{
    Ack, Bus, BusError, Delivery, EventBatch, Sealed, SignedAck, SignedHeartbeat, Unreadable,
};

pub const SIGNATURE_HEADER: &str = "Quench-Signature";
/// How long JetStream keeps events. Edges that are behind by more repair from the manager's log.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Tries at reaching JetStream at start, 250 ms apart.
const STREAM_ATTEMPTS: u32 = 40;
/// Tries at reaching an unreachable NATS at start, 250 ms apart (plus each try's own timeout).
const CONNECT_ATTEMPTS: u32 = 120;

/// Who connects, which decides what the connection does and needs to be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A manager (or `quench up`): creates the deployment's stream if missing; publishes events and
    /// heartbeats, reads every acknowledgement. The name is the NATS client name.
    Manager(String),
    /// Edge `id`: reads events and heartbeats, acknowledges as itself, never creates the stream, and takes
    /// its replies under an inbox of its own.
    Edge(String),
}

impl Role {
    fn client_name(&self) -> String {
        match self {
            Self::Manager(name) => name.clone(),
            Self::Edge(id) => format!("quench-{id}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: Names,
}

/// What the bus was doing when NATS failed it, named in [`BusError::Nats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    CreateStream,
    ReplicateStream,
    DeleteStream,
    Publish,
    ConfirmPublish,
    Heartbeat,
    Subscribe,
    OpenStream,
    CreateConsumer,
    Consume,
    Ack,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CreateStream => "creating the stream",
            Self::ReplicateStream => "changing how many servers keep the stream",
            Self::DeleteStream => "deleting the stream",
            Self::Publish => "publishing events",
            Self::ConfirmPublish => "confirming published events",
            Self::Heartbeat => "publishing a heartbeat",
            Self::Subscribe => "subscribing",
            Self::OpenStream => "opening the stream",
            Self::CreateConsumer => "creating a consumer",
            Self::Consume => "reading the stream",
            Self::Ack => "sending an acknowledgement",
        })
    }
}

/// Maps a NATS client error to [`BusError::Nats`] for `operation`.
fn failed<E>(operation: Operation) -> impl FnOnce(E) -> BusError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |source| BusError::Nats {
        operation,
        source: Box::new(source),
    }
}

fn signed_headers(signature: &Signature) -> HeaderMap {
    sealed_headers(&signature.encode())
}

fn sealed_headers(seal: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, seal);
    headers
}

/// A received payload and its signature header, not yet verified.
fn sealed<const P: u8>(
    payload: &[u8],
    headers: Option<&HeaderMap>,
) -> Result<Sealed<P>, Unreadable> {
    let header = headers.and_then(|h| h.get(SIGNATURE_HEADER));
    unseal(payload, header.map(|value| value.as_str()))
}

/// Reads a message as it came off NATS: its payload and the text of its `Quench-Signature` header (if
/// any). Pure, so the fuzz targets reach exactly what a subscriber runs on untrusted bytes.
pub fn unseal<const P: u8>(
    payload: &[u8],
    signature: Option<&str>,
) -> Result<Sealed<P>, Unreadable> {
    let header = signature.ok_or(Unreadable::NoSignature)?;
    let signature = Signature::decode(header).map_err(Unreadable::Signature)?;
    Ok(Sealed::from_parts(payload.to_vec(), signature))
}

/// Reads an acknowledgement as it came off NATS, like [`unseal`]: the header holds a MAC or a signature.
pub fn unseal_ack(payload: &[u8], seal: Option<&str>) -> Result<SignedAck, Unreadable> {
    let header = seal.ok_or(Unreadable::NoSignature)?;
    let seal = AckSeal::decode(header).map_err(Unreadable::Signature)?;
    Ok(SignedAck::from_parts(payload.to_vec(), seal))
}

/// Where the deployment's stream lives and how many servers keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPlacement {
    /// The JetStream domain holding the stream: how a process on a leaf node uses the stream that lives
    /// in its hub (the hub's `jetstream { domain: ... }`).
    pub domain: Option<String>,
    /// How many servers of a JetStream cluster keep a copy of the stream (1 to 5). A manager creates the
    /// stream so, and brings an existing stream to it; edges only read the stream and ignore this. With 3
    /// on a three-server cluster any one server may die without losing or stopping the stream.
    pub replicas: usize,
}

impl Default for StreamPlacement {
    fn default() -> Self {
        Self {
            domain: None,
            replicas: 1,
        }
    }
}

impl NatsBus {
    /// Connects as a manager named `client_name` to `servers` (credentials only from the URLs), and makes
    /// sure the deployment's stream exists.
    pub async fn connect(
        servers: &str,
        deployment: &str,
        client_name: &str,
    ) -> Result<Self, BusError> {
        let access = NatsAccess::plain(servers)?;
        Self::connect_as(
            &access,
            deployment,
            Role::Manager(client_name.to_owned()),
            &StreamPlacement::default(),
        )
        .await
    }

    /// Connects with `access` in `role`, to the stream `placement` says. A manager creates the stream if
    /// it is missing (and gives it the replica count asked for); an edge waits for it.
    pub async fn connect_as(
        access: &NatsAccess,
        deployment: &str,
        role: Role,
        placement: &StreamPlacement,
    ) -> Result<Self, BusError> {
        let names = Names::for_deployment(deployment)?;
        let inbox = match &role {
            Role::Edge(id) => Some(names.inbox_of(id)),
            Role::Manager(_) => None,
        };
        let client = connect_client(access, &role.client_name(), inbox).await?;
        let jetstream = match placement.domain.as_deref() {
            Some(domain) => jetstream::with_domain(client.clone(), domain),
            None => jetstream::new(client.clone()),
        };
        let bus = Self {
            client,
            jetstream,
            names,
        };
        // Right after a server (or its leaf connection) starts, JetStream may not answer yet; an edge may
        // also start a moment before the first manager has made the stream.
        let mut attempt = 0;
        loop {
            let ready = match role {
                Role::Manager(_) => bus.ensure_stream(placement.replicas).await,
                Role::Edge(_) => bus.find_stream().await,
            };
            match ready {
                Ok(()) => return Ok(bus),
                // A cluster forming may refuse a stream for a while (no peers to place it on yet); a
                // single server asked for copies on others never stops refusing.
                Err(error)
                    if attempt < STREAM_ATTEMPTS
                        && !matches!(error, BusError::NotClustered { .. }) =>
                {
                    attempt += 1;
                    tracing::warn!(%error, attempt, "JetStream is not answering yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn ensure_stream(&self, replicas: usize) -> Result<(), BusError> {
        let config = stream::Config {
            name: self.names.stream.clone(),
            subjects: vec![self.names.events.clone()],
            max_age: RETENTION,
            duplicate_window: DUPLICATE_WINDOW,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        };
        let stream = self
            .jetstream
            .get_or_create_stream(config)
            .await
            .map_err(|source| match source.kind() {
                jetstream::context::CreateStreamErrorKind::JetStream(error)
                    if error.error_code()
                        == jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED =>
                {
                    BusError::NotClustered { replicas, source }
                }
                _ => failed(Operation::CreateStream)(source),
            })?;
        // A stream made before (by an older manager, or with another count) keeps its replica count until
        // asked: JetStream copies it to more servers, or fewer, while it keeps serving.
        let mut current = stream.cached_info().config.clone();
        if current.num_replicas != replicas {
            let from = current.num_replicas;
            current.num_replicas = replicas;
            self.jetstream
                .update_stream(&current)
                .await
                .map_err(failed(Operation::ReplicateStream))?;
            tracing::info!(
                from,
                to = replicas,
                "changed how many NATS servers keep the stream"
            );
        }
        Ok(())
    }

    async fn find_stream(&self) -> Result<(), BusError> {
        self.jetstream
            .get_stream(&self.names.stream)
            .await
            .map_err(|source| BusError::StreamMissing {
                stream: self.names.stream.clone(),
                source,
            })?;
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
            .map_err(failed(Operation::DeleteStream))?;
        Ok(())
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn last_events(&self) -> Result<Option<EventBatch>, BusError> {
        let stream = self
            .jetstream
            .get_stream(&self.names.stream)
            .await
            .map_err(failed(Operation::OpenStream))?;
        match stream
            .get_last_raw_message_by_subject(&self.names.events)
            .await
        {
            Ok(message) => Ok(sealed(&message.payload, Some(&message.headers)).ok()),
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(failed(Operation::OpenStream)(error)),
        }
    }

    async fn publish(&self, batch: &EventBatch) -> Result<(), BusError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(batch.body().to_vec().into())
            .headers(signed_headers(batch.signature()))
            .message_id(hex(&sha256(batch.body())[..16]));
        let ack = self
            .jetstream
            .send_publish(self.names.events.clone(), publish)
            .await
            .map_err(failed(Operation::Publish))?;
        ack.await.map_err(failed(Operation::ConfirmPublish))?;
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
            .map_err(failed(Operation::Heartbeat))
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Delivery>, BusError> {
        // Heartbeats first: subscribing is immediate, and a consumer created after it misses no event.
        let heartbeats = self
            .client
            .subscribe(self.names.heartbeats.clone())
            .await
            .map_err(failed(Operation::Subscribe))?
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
            .map_err(failed(Operation::OpenStream))?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: self.names.events.clone(),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(failed(Operation::CreateConsumer))?;
        let events = consumer
            .messages()
            .await
            .map_err(failed(Operation::Consume))?
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
        let edge = claimed_edge(ack.body()).ok_or(BusError::AckWithoutEdge)?;
        self.client
            .publish_with_headers(
                self.names.acks_of(&edge),
                sealed_headers(&ack.seal().encode()),
                ack.body().to_vec().into(),
            )
            .await
            .map_err(failed(Operation::Ack))
    }

    async fn acks(&self) -> Result<BoxStream<'static, SignedAck>, BusError> {
        let names = self.names.clone();
        let acks = self
            .client
            .subscribe(self.names.acks.clone())
            .await
            .map_err(failed(Operation::Subscribe))?
            .filter_map(move |message| {
                let names = names.clone();
                async move {
                    let edge = claimed_edge(&message.payload)?;
                    if !names.ack_subject_matches(message.subject.as_str(), &edge) {
                        tracing::warn!(
                            subject = %message.subject,
                            edge = %edge,
                            "dropped an acknowledgement sent on another edge's subject"
                        );
                        return None;
                    }
                    let header = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(SIGNATURE_HEADER));
                    unseal_ack(&message.payload, header.map(|value| value.as_str())).ok()
                }
            });
        Ok(acks.boxed())
    }
}

/// The edge an acknowledgement says it comes from, read before its signature is checked: only to match it
/// against the subject it arrived on.
fn claimed_edge(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Ack>(body).ok().map(|ack| ack.edge)
}

/// Connects a NATS client with `access`. Refused credentials and failed TLS end it at once with the
/// reason; an unreachable server is retried for a while (it may be starting too).
pub async fn connect_client(
    access: &NatsAccess,
    client_name: &str,
    inbox: Option<String>,
) -> Result<async_nats::Client, BusError> {
    let mut attempt = 0;
    loop {
        let mut options = access
            .connect_options()
            .await?
            .name(client_name)
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                // A server error is most often a permission this process lacks: worth an operator's eye.
                match &event {
                    async_nats::Event::ServerError(_) => tracing::warn!(%event, "nats"),
                    _ => tracing::info!(%event, "nats"),
                }
            });
        if let Some(prefix) = &inbox {
            options = options.custom_inbox_prefix(prefix);
        }
        let error = match options.connect(access.servers().addrs()).await {
            Ok(client) => return Ok(client),
            Err(error) => error,
        };
        let servers = access.servers();
        match classify(error) {
            Ok(permanent) => return Err(permanent),
            Err(error) if attempt < CONNECT_ATTEMPTS => {
                attempt += 1;
                tracing::warn!(%servers, %error, attempt, "NATS is not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(source) => {
                return Err(BusError::Unreachable {
                    servers: servers.to_string(),
                    source,
                });
            }
        }
    }
}

/// A connection error that retrying will not fix, as the error to stop with; the error itself back for one
/// that may pass (a server not up yet). A TLS handshake failure arrives as an I/O error wrapping the TLS
/// error.
fn classify(error: async_nats::ConnectError) -> Result<BusError, async_nats::ConnectError> {
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            Ok(BusError::Unauthorized(error))
        }
        ConnectErrorKind::Tls => Ok(BusError::Tls(error)),
        ConnectErrorKind::ServerParse => Ok(BusError::Protocol(error)),
        _ if is_tls_failure(&error) => Ok(BusError::Tls(error)),
        _ => Err(error),
    }
}

fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = error.source();
    while let Some(current) = cause {
        if current.is::<async_nats::rustls::Error>() {
            return true;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<async_nats::rustls::Error>())
        {
            return true;
        }
        cause = current.source();
    }
    false
}
