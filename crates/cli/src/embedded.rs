//! Running a manager, optionally with an edge in the same process.
//!
//! `quench up` runs a manager and an edge over an in-process bus (or NATS, with `--nats`); `quench manager`
//! runs the manager alone on NATS; the black-box tests run the very same function on port-0 listeners.
//! An embedded edge follows the bus and reads the manager's signed snapshot and log exactly as a remote
//! edge does over HTTP, so every mode exercises the same code paths.

use std::sync::Arc;

use quench_api::listener::{self, Listeners};
use quench_bus::{Bus, InProcessBus};
use quench_edge::{EdgeConfig, Replica, follow};
use quench_manager::{Manager, ManagerConfig, api};
use quench_store::Store;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::upstream::ManagerUpstream;

#[derive(Debug)]
pub struct Running {
    pub manager: Arc<Manager>,
    /// The embedded edge, when there is one.
    pub replica: Option<Arc<Replica>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits for the servers and the follower to finish after the cancel token fired.
    pub async fn finished(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bus(#[from] quench_bus::BusError),
    #[error(transparent)]
    Manager(#[from] quench_manager::rollback::StartError),
    #[error("the embedded edge's {0}")]
    Name(#[from] quench_core::NameError),
}

/// An edge to run in the manager's process. Give its config an `ack_key` kept across restarts (as
/// `quench up` does, in the data directory): the manager accepts one key per edge id.
pub struct EmbeddedEdge {
    pub config: EdgeConfig,
    pub listener: TcpListener,
}

/// Starts the manager (and the embedded edge) on plain-HTTP listeners with the default limits.
pub async fn start(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    manager_config: ManagerConfig,
    admin: TcpListener,
    edge: Option<EmbeddedEdge>,
    cancel: CancellationToken,
) -> Result<Running, StartError> {
    let edge = edge.map(|edge| (edge.config, Listeners::plain(edge.listener, "edge")));
    start_on(
        store,
        bus,
        manager_config,
        Listeners::plain(admin, "manager"),
        edge,
        cancel,
    )
    .await
}

/// Starts the manager on `admin` and, with `edge`, an edge on its listeners; each listener carries its
/// own limits and TLS.
pub async fn start_on(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    manager_config: ManagerConfig,
    admin: Listeners,
    edge: Option<(EdgeConfig, Listeners)>,
    cancel: CancellationToken,
) -> Result<Running, StartError> {
    let expected = edge
        .as_ref()
        .map(|(config, _)| {
            Ok::<_, StartError>((
                quench_core::EdgeId::parse(&config.id)?,
                quench_core::Region::parse(&config.region)?,
            ))
        })
        .transpose()?;
    let manager = Manager::new(store, bus.clone(), manager_config);
    manager.start(cancel.clone()).await?;
    let mut tasks = vec![tokio::spawn(serve(
        admin,
        api::router(manager.clone()),
        cancel.clone(),
        "manager",
    ))];
    let mut replica = None;
    if let (Some((config, listeners)), Some((id, region))) = (edge, expected) {
        manager.propagation.track_edge(&id, &region);
        let embedded = Replica::new(config);
        tasks.push(tokio::spawn(follow(
            embedded.clone(),
            bus,
            Arc::new(ManagerUpstream(manager.clone())),
            manager.trust(),
            cancel.clone(),
        )));
        tasks.push(tokio::spawn(serve(
            listeners,
            quench_edge::http::router(embedded.clone()),
            cancel,
            "edge",
        )));
        replica = Some(embedded);
    }
    Ok(Running {
        manager,
        replica,
        tasks,
    })
}

/// An in-process bus, for everything in one process.
pub fn in_process_bus() -> Arc<dyn Bus> {
    Arc::new(InProcessBus::default())
}

async fn serve(
    listeners: Listeners,
    router: axum::Router,
    cancel: CancellationToken,
    name: &'static str,
) {
    if let Err(error) = listener::serve_listeners(listeners, router, cancel).await {
        tracing::error!(%error, server = name, "server failed");
    }
}
