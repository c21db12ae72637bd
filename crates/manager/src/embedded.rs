//! Everything in one process: the manager, an edge, and an in-process bus between them.
//!
//! `quench up` runs this; the black-box tests run the very same function on port-0 listeners. The edge
//! follows the bus and repairs from the store exactly as a remote edge would from the manager's API, so
//! the embedded mode exercises the same code paths as a distributed deployment.

use std::{path::Path, sync::Arc};

use quench_bus::{Bus, InProcessBus};
use quench_edge::{EdgeConfig, Replica, follow};
use quench_store::Store;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{Manager, ManagerConfig, api, upstream::ManagerUpstream};

#[derive(Debug)]
pub struct Running {
    pub manager: Arc<Manager>,
    pub replica: Arc<Replica>,
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
}

pub async fn start(
    store: Arc<dyn Store>,
    manager_config: ManagerConfig,
    edge_config: EdgeConfig,
    admin: TcpListener,
    edge: TcpListener,
    cancel: CancellationToken,
) -> Result<Running, StartError> {
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::default());
    let manager = Manager::new(store.clone(), bus.clone(), manager_config);
    manager
        .propagation
        .expect(&edge_config.id, &edge_config.region);
    manager.start(cancel.clone()).await?;
    let replica = Replica::new(edge_config);
    let follower = tokio::spawn(follow(
        replica.clone(),
        bus,
        Arc::new(ManagerUpstream(manager.clone())),
        manager.trust(),
        cancel.clone(),
    ));
    let admin_server = tokio::spawn(serve(
        admin,
        api::router(manager.clone()),
        cancel.clone(),
        "manager",
    ));
    let edge_server = tokio::spawn(serve(
        edge,
        quench_edge::http::router(replica.clone()),
        cancel,
        "edge",
    ));
    Ok(Running {
        manager,
        replica,
        tasks: vec![follower, admin_server, edge_server],
    })
}

async fn serve(
    listener: TcpListener,
    router: axum::Router,
    cancel: CancellationToken,
    name: &'static str,
) {
    let shutdown = async move { cancel.cancelled().await };
    if let Err(error) = quench_edge::web::serve(listener, router, shutdown).await {
        tracing::error!(%error, server = name, "server failed");
    }
}

/// The bootstrap token's file in a data directory.
pub fn token_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("admin.token")
}
