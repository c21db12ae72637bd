//! `--regions`: the manager's NATS becomes a hub (JetStream in domain `hub`, with a leafnode listener)
//! and each region is a leaf node of it reached through a [`quench_netfault::Proxy`] with the region's
//! one-way latency, its edges on that leaf node. The edges reach the manager's HTTP API through a proxy
//! with the same latency: a region far from the hub is far from the manager too.

use std::{
    net::SocketAddr,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use quench_netfault::{Link, Proxy};

use super::{EdgeLink, Processes, free_port, spawn_nats, start_edge};

/// The JetStream domain of the hub; edges on leaf nodes name it to reach the stream.
const HUB_DOMAIN: &str = "hub";

/// The hub NATS: its client URL and the port leaf nodes connect to.
pub(super) struct Hub {
    pub url: String,
    leaf_port: u16,
}

/// One region as the report names it: its one-way latency and which edges (by index) are in it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Region {
    pub name: String,
    pub latency_ms: u64,
    pub edges: Range<usize>,
}

/// What starting the regions' edges needs from the deployment.
pub(super) struct Launch<'a> {
    pub dir: &'a Path,
    pub deployment: &'a str,
    pub token: &'a str,
    pub manager: SocketAddr,
}

/// The regions started: their edges' URLs, what each region is, and the proxies carrying their links
/// (which stop when dropped).
pub(super) struct Started {
    pub edges: Vec<String>,
    pub regions: Vec<Region>,
    pub proxies: Vec<Proxy>,
}

fn write_config(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Starts the hub: JetStream in domain `hub` and a leafnode listener, both on loopback.
pub(super) fn start_hub(dir: &Path, processes: &mut Processes) -> anyhow::Result<Hub> {
    let (port, leaf_port) = (free_port()?, free_port()?);
    let store = dir.join("hub");
    let config = format!(
        "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\", domain: {HUB_DOMAIN} }}\nleafnodes {{ listen: 127.0.0.1:{leaf_port} }}\n",
        store.display()
    );
    let path = write_config(dir, "hub", &config)?;
    let url = spawn_nats(&["-c".into(), path.display().to_string()], port, processes)?;
    Ok(Hub { url, leaf_port })
}

/// Starts, per latency, a region: a leaf node linked to the hub through a proxy with that latency, and
/// `per_region` edges on it.
pub(super) async fn start_regions(
    hub: &Hub,
    latencies_ms: &[u64],
    per_region: usize,
    launch: &Launch<'_>,
    processes: &mut Processes,
) -> anyhow::Result<Started> {
    let mut started = Started {
        edges: Vec::new(),
        regions: Vec::new(),
        proxies: Vec::new(),
    };
    for (r, &latency_ms) in latencies_ms.iter().enumerate() {
        let link = Link::latency(Duration::from_millis(latency_ms));
        let hub_leaf = SocketAddr::from(([127, 0, 0, 1], hub.leaf_port));
        let to_hub = Proxy::start(hub_leaf, link).await?;
        let to_manager = Proxy::start(launch.manager, link).await?;
        let port = free_port()?;
        let config = format!(
            "listen: 127.0.0.1:{port}\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://{}\" }} ] }}\n",
            to_hub.addr()
        );
        let path = write_config(launch.dir, &format!("leaf-r{r}"), &config)?;
        let nats = spawn_nats(&["-c".into(), path.display().to_string()], port, processes)?;
        let manager = format!("http://{}", to_manager.addr());
        let name = format!("r{r}");
        let edge_link = EdgeLink {
            nats: &nats,
            manager: &manager,
            region: name.clone(),
            domain: Some(HUB_DOMAIN),
            data_dir: launch.dir,
        };
        eprintln!(
            "starting region {name} ({latency_ms} ms one-way): {per_region} edge(s) on {nats} ..."
        );
        let first = started.edges.len();
        for i in 0..per_region {
            let id = format!("bench-{name}-e{i}");
            let url = start_edge(&edge_link, launch.deployment, launch.token, &id, processes)?;
            started.edges.push(url);
        }
        started.regions.push(Region {
            name,
            latency_ms,
            edges: first..started.edges.len(),
        });
        started.proxies.extend([to_hub, to_manager]);
    }
    Ok(started)
}
