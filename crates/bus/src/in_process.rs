//! A bus inside one process: two broadcast channels.
//!
//! A subscriber that falls more than the channel's capacity behind gets [`Delivery::Lost`] and repairs
//! from the log, so a slow edge never slows the manager or other edges.

use async_trait::async_trait;
use futures::{StreamExt, stream::BoxStream};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{Bus, BusError, Delivery, EventBatch, SignedAck, SignedHeartbeat};

pub const DEFAULT_CAPACITY: usize = 65_536;

#[derive(Debug, Clone)]
pub struct InProcessBus {
    deliveries: broadcast::Sender<Delivery>,
    acks: broadcast::Sender<SignedAck>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl InProcessBus {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            deliveries: broadcast::channel(capacity).0,
            acks: broadcast::channel(capacity).0,
        }
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, batch: &EventBatch) -> Result<(), BusError> {
        // No subscriber is not an error: edges catch up from the log when they start.
        let _ = self.deliveries.send(Delivery::Events(batch.clone()));
        Ok(())
    }

    async fn heartbeat(&self, heartbeat: &SignedHeartbeat) -> Result<(), BusError> {
        let _ = self.deliveries.send(Delivery::Heartbeat(heartbeat.clone()));
        Ok(())
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, Delivery>, BusError> {
        let stream = BroadcastStream::new(self.deliveries.subscribe()).map(|item| match item {
            Ok(delivery) => delivery,
            Err(BroadcastStreamRecvError::Lagged(n)) => Delivery::Lost(n),
        });
        Ok(stream.boxed())
    }

    async fn ack(&self, ack: &SignedAck) -> Result<(), BusError> {
        let _ = self.acks.send(ack.clone());
        Ok(())
    }

    async fn acks(&self) -> Result<BoxStream<'static, SignedAck>, BusError> {
        let stream =
            BroadcastStream::new(self.acks.subscribe()).filter_map(|item| async move { item.ok() });
        Ok(stream.boxed())
    }
}
