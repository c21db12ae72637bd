//! The deployment under test, all on loopback: a fresh PostgreSQL database, a three-server NATS
//! JetStream cluster as the hub (the stream on all three), managers on the database, and regions, each a
//! leaf node of the hub with its edges. Every link a fault can break runs through a
//! [`quench_netfault::Proxy`]: manager to each hub server and to PostgreSQL, region (leaf node) to each
//! hub server and to each manager, edge to its leaf node and to its region's manager links.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicU16},
    time::Duration,
};

use anyhow::{Context, bail};
use quench_netfault::{Link, Proxy};
use reqwest::Url;
use serde_json::json;

use crate::{
    process::{Service, free_port},
    settings::Settings,
};

pub const BOOTSTRAP: &str = "chaos-bootstrap-token-0123456789-abcdefghij";
const SIGNING_SEED: &str = "c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a05c4a0";
pub const DEPLOYMENT: &str = "chaos";
/// The stream the managers create for [`DEPLOYMENT`].
pub const STREAM: &str = "QUENCH_CHAOS";
const DOMAIN: &str = "hub";

#[derive(Debug)]
pub struct HubServer {
    pub service: Service,
    port: u16,
}

#[derive(Debug)]
pub struct Manager {
    pub service: Service,
    pub url: String,
    port: u16,
    /// To each hub server, then to PostgreSQL.
    pub links: Vec<Proxy>,
}

#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub leaf: Service,
    leaf_url: String,
    pub latency: Duration,
    /// To each hub server's leaf node port, then to each manager.
    pub links: Vec<Proxy>,
    managers: Vec<String>,
}

#[derive(Debug)]
pub struct Edge {
    pub region: usize,
    pub slot: usize,
    pub generation: u32,
    pub id: String,
    pub url: String,
    port: u16,
    pub service: Service,
    /// To its leaf node, then to each of its region's manager links.
    pub links: Vec<Proxy>,
    data_dir: PathBuf,
    /// The index of its current id in the history's edge table, which verifiers read.
    pub named: Arc<AtomicU16>,
}

#[derive(Debug)]
pub struct Deployment {
    pub dir: PathBuf,
    logs: PathBuf,
    settings: Settings,
    pub hub: Vec<HubServer>,
    pub managers: Vec<Manager>,
    pub regions: Vec<Region>,
    pub edges: Vec<Edge>,
    pub edge_token: String,
    pub database: Database,
    http: reqwest::Client,
}

/// A database of its own for one campaign, dropped at the end.
#[derive(Debug)]
pub struct Database {
    admin: String,
    pub name: String,
    pub url: Url,
}

impl Database {
    pub async fn create(admin: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let name = format!("quench_chaos_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("PostgreSQL at {admin} is unreachable (set --postgres)"))?;
        for statement in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await?;
        }
        let mut url = Url::parse(admin).context("--postgres is not a URL")?;
        url.set_path(&name);
        Ok(Self {
            admin: admin.to_owned(),
            name,
            url,
        })
    }

    pub async fn drop_database(&self) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await;
        }
    }
}

fn loopback(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Deployment {
    pub async fn start(settings: &Settings, dir: &Path) -> anyhow::Result<Self> {
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let database = Database::create(&settings.postgres).await?;
        let mut deployment = Self {
            dir: dir.to_owned(),
            logs,
            settings: settings.clone(),
            hub: Vec::new(),
            managers: Vec::new(),
            regions: Vec::new(),
            edges: Vec::new(),
            edge_token: String::new(),
            database,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        eprintln!("quench-chaos: starting 3 NATS servers (JetStream cluster, domain {DOMAIN}) ...");
        let leaf_ports = deployment.start_hub()?;
        eprintln!(
            "quench-chaos: starting {} managers on PostgreSQL database {} ...",
            settings.managers, deployment.database.name
        );
        deployment.start_managers().await?;
        deployment.edge_token = deployment.create_edge_token().await?;
        for r in 0..settings.regions {
            deployment.start_region(r, &leaf_ports).await?;
        }
        deployment
            .until_edges_ready(Duration::from_secs(90))
            .await?;
        Ok(deployment)
    }

    /// Starts the hub cluster; returns each server's leaf node port.
    fn start_hub(&mut self) -> anyhow::Result<Vec<u16>> {
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        for (i, (port, route, leaf)) in ports.iter().enumerate() {
            let store = self.dir.join(format!("hub{i}"));
            let config = format!(
                "server_name: hub{i}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\", domain: {DOMAIN} }}\n\
                 cluster {{ name: chaos-hub, listen: 127.0.0.1:{route}, routes: [{}] }}\n\
                 leafnodes {{ listen: 127.0.0.1:{leaf} }}\n",
                store.display(),
                routes.join(", ")
            );
            let path = self.dir.join(format!("hub{i}.conf"));
            std::fs::write(&path, config)?;
            let args = vec!["-c".to_owned(), path.display().to_string()];
            let mut service = Service::new(
                &format!("hub{i}"),
                &self.settings.nats_server,
                args,
                Vec::new(),
                &self.logs,
            );
            service.start()?;
            self.hub.push(HubServer {
                service,
                port: *port,
            });
        }
        for server in &self.hub {
            until_port(server.port, Duration::from_secs(15))
                .with_context(|| format!("NATS hub server on {} did not start", server.port))?;
        }
        Ok(ports.iter().map(|(_, _, leaf)| *leaf).collect())
    }

    async fn start_managers(&mut self) -> anyhow::Result<()> {
        let pg = self.database.url.clone();
        let pg_port = pg.port().unwrap_or(5432);
        for i in 0..self.settings.managers {
            let mut links = Vec::new();
            for server in &self.hub {
                links.push(Proxy::start(loopback(server.port), Link::default()).await?);
            }
            links.push(Proxy::start(loopback(pg_port), Link::default()).await?);
            let nats: Vec<String> = links[..self.hub.len()]
                .iter()
                .map(|p| format!("nats://{}", p.addr()))
                .collect();
            let mut database = pg.clone();
            let pg_link = links[self.hub.len()].addr();
            database
                .set_port(Some(pg_link.port()))
                .map_err(|()| anyhow::anyhow!("the database URL takes no port"))?;
            let port = free_port()?;
            let mut args = strings(&[
                "manager",
                "--deployment",
                DEPLOYMENT,
                "--stream-replicas",
                "3",
            ]);
            args.extend(["--nats".into(), nats.join(",")]);
            args.extend(["--database".into(), database.to_string()]);
            args.extend(["--admin-listen".into(), format!("127.0.0.1:{port}")]);
            args.extend([
                "--data-dir".into(),
                self.dir.join(format!("m{i}")).display().to_string(),
            ]);
            let env = vec![
                ("QUENCH_BOOTSTRAP_TOKEN".to_owned(), BOOTSTRAP.to_owned()),
                ("QUENCH_SIGNING_KEY".to_owned(), SIGNING_SEED.to_owned()),
                ("RUST_LOG".to_owned(), "info".to_owned()),
            ];
            let mut service = Service::new(
                &format!("m{i}"),
                &self.settings.quench,
                args,
                env,
                &self.logs,
            );
            service.start()?;
            let url = format!("http://127.0.0.1:{port}");
            if let Err(error) = self.until_healthy(&url, Duration::from_secs(60)).await {
                bail!(
                    "manager m{i} did not start ({error}); its log:\n{}",
                    service.log_tail()
                );
            }
            self.managers.push(Manager {
                service,
                url,
                port,
                links,
            });
        }
        Ok(())
    }

    async fn create_edge_token(&self) -> anyhow::Result<String> {
        let answer = self
            .http
            .post(format!("{}/v1/tokens", self.managers[0].url))
            .bearer_auth(BOOTSTRAP)
            .json(&json!({"scopes": ["edge"]}))
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await?;
        answer["token"]
            .as_str()
            .map(str::to_owned)
            .context("no token in the manager's answer")
    }

    async fn start_region(&mut self, r: usize, leaf_ports: &[u16]) -> anyhow::Result<()> {
        let latency = Duration::from_millis(
            self.settings.region_latency_ms[r % self.settings.region_latency_ms.len()],
        );
        let link = Link::latency(latency);
        let mut links = Vec::new();
        for port in leaf_ports {
            links.push(Proxy::start(loopback(*port), link).await?);
        }
        for manager in &self.managers {
            links.push(Proxy::start(loopback(manager.port), link).await?);
        }
        let remotes: Vec<String> = links[..leaf_ports.len()]
            .iter()
            .map(|p| format!("\"nats-leaf://{}\"", p.addr()))
            .collect();
        let port = free_port()?;
        let name = format!("r{r}");
        let config = format!(
            "server_name: leaf-{name}\nlisten: 127.0.0.1:{port}\nleafnodes {{ remotes: [ {{ urls: [{}] }} ] }}\n",
            remotes.join(", ")
        );
        let path = self.dir.join(format!("leaf-{name}.conf"));
        std::fs::write(&path, config)?;
        let args = vec!["-c".to_owned(), path.display().to_string()];
        let mut leaf = Service::new(
            &format!("leaf-{name}"),
            &self.settings.nats_server,
            args,
            Vec::new(),
            &self.logs,
        );
        leaf.start()?;
        until_port(port, Duration::from_secs(15)).context("a leaf node did not start")?;
        let managers = links[leaf_ports.len()..]
            .iter()
            .map(|p| p.addr().to_string())
            .collect();
        self.regions.push(Region {
            name: name.clone(),
            leaf,
            leaf_url: format!("127.0.0.1:{port}"),
            latency,
            links,
            managers,
        });
        eprintln!(
            "quench-chaos: region {name} ({} ms one-way): {} edges ...",
            latency.as_millis(),
            self.settings.edges_per_region
        );
        for _ in 0..self.settings.edges_per_region {
            self.add_edge(r).await?;
        }
        Ok(())
    }

    async fn add_edge(&mut self, region: usize) -> anyhow::Result<()> {
        let slot = self.edges.iter().filter(|e| e.region == region).count();
        let leaf: std::net::SocketAddr = self.regions[region].leaf_url.parse()?;
        let mut links = vec![Proxy::start(leaf, Link::default()).await?];
        for manager in &self.regions[region].managers {
            links.push(Proxy::start(manager.parse()?, Link::default()).await?);
        }
        let id = format!("{}-e{slot}", self.regions[region].name);
        let data_dir = self.dir.join(&id);
        let port = free_port()?;
        let service = Service::new(
            &id,
            &self.settings.quench,
            Vec::new(),
            Vec::new(),
            &self.logs,
        );
        let mut edge = Edge {
            region,
            slot,
            generation: 0,
            id,
            url: format!("http://127.0.0.1:{port}"),
            port,
            service,
            links,
            data_dir,
            named: Arc::new(AtomicU16::new(0)),
        };
        self.configure(&mut edge);
        edge.service.start()?;
        self.edges.push(edge);
        Ok(())
    }

    /// Sets the edge's command line for its current id and data directory.
    fn configure(&self, edge: &mut Edge) {
        let managers: Vec<String> = edge.links[1..]
            .iter()
            .map(|p| format!("http://{}", p.addr()))
            .collect();
        let mut args = strings(&[
            "edge",
            "--deployment",
            DEPLOYMENT,
            "--jetstream-domain",
            DOMAIN,
        ]);
        args.extend(["--nats".into(), format!("nats://{}", edge.links[0].addr())]);
        args.extend(["--manager".into(), managers.join(",")]);
        args.extend(["--listen".into(), format!("127.0.0.1:{}", edge.port)]);
        args.extend(["--id".into(), edge.id.clone()]);
        args.extend(["--region".into(), self.regions[edge.region].name.clone()]);
        args.extend([
            "--max-staleness".into(),
            self.settings.max_staleness.to_string(),
        ]);
        args.extend(["--data-dir".into(), edge.data_dir.display().to_string()]);
        let env = vec![
            ("QUENCH_TOKEN".to_owned(), self.edge_token.clone()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ];
        edge.service = Service::new(&edge.id, &self.settings.quench, args, env, &self.logs);
    }

    /// Kills an edge, forgets everything it kept on disk and starts it as a new edge (a new id: an
    /// edge's acknowledgement key is its identity). Returns the new id.
    pub fn restart_empty(&mut self, index: usize) -> anyhow::Result<String> {
        let mut edge = std::mem::replace(&mut self.edges[index], placeholder());
        edge.service.kill();
        let _ = std::fs::remove_dir_all(&edge.data_dir);
        edge.generation += 1;
        edge.id = format!(
            "{}-e{}-g{}",
            self.regions[edge.region].name, edge.slot, edge.generation
        );
        edge.data_dir = self.dir.join(&edge.id);
        self.configure(&mut edge);
        let started = edge.service.start();
        let id = edge.id.clone();
        self.edges[index] = edge;
        started.map(|()| id)
    }

    /// Waits until every edge answers its health check `ok`.
    pub async fn until_edges_ready(&self, within: Duration) -> anyhow::Result<()> {
        for edge in &self.edges {
            let end = tokio::time::Instant::now() + within;
            loop {
                if let Ok(health) = self.health(&edge.url).await
                    && health["status"] == "ok"
                {
                    break;
                }
                if tokio::time::Instant::now() > end {
                    bail!(
                        "edge {} is not ready; its log:\n{}",
                        edge.id,
                        edge.service.log_tail()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    pub async fn health(&self, url: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{url}/healthz"))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn until_healthy(&self, url: &str, within: Duration) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + within;
        loop {
            match self.http.get(format!("{url}/healthz")).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ if tokio::time::Instant::now() > end => bail!("{url} never answered /healthz"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub fn manager_urls(&self) -> Vec<String> {
        self.managers.iter().map(|m| m.url.clone()).collect()
    }

    /// The index of the hub server leading the stream, asked of any live server.
    pub async fn stream_leader(&self) -> Option<usize> {
        for server in &self.hub {
            let url = format!("nats://127.0.0.1:{}", server.port);
            let found = tokio::time::timeout(Duration::from_secs(3), async {
                let client = async_nats::connect(url).await.ok()?;
                let jetstream = async_nats::jetstream::new(client);
                let mut stream = jetstream.get_stream(STREAM).await.ok()?;
                let info = stream.info().await.ok()?;
                info.cluster.as_ref()?.leader.clone()
            })
            .await;
            if let Ok(Some(leader)) = found {
                return leader.strip_prefix("hub")?.parse().ok();
            }
        }
        None
    }

    /// Stops every process, and drops the database unless `keep_database` (a failed run keeps it for a
    /// person to read beside the history).
    pub async fn tear_down(mut self, keep_database: bool) {
        for edge in &mut self.edges {
            edge.service.kill();
        }
        for manager in &mut self.managers {
            manager.service.kill();
        }
        for region in &mut self.regions {
            region.leaf.kill();
        }
        for server in &mut self.hub {
            server.service.kill();
        }
        if keep_database {
            println!(
                "  database kept: {} (on the --postgres server)",
                self.database.name
            );
        } else {
            self.database.drop_database().await;
        }
    }
}

fn placeholder() -> Edge {
    Edge {
        region: 0,
        slot: 0,
        generation: 0,
        id: String::new(),
        url: String::new(),
        port: 0,
        service: Service::new(
            "gone",
            Path::new("/"),
            Vec::new(),
            Vec::new(),
            Path::new("/"),
        ),
        links: Vec::new(),
        data_dir: PathBuf::new(),
        named: Arc::new(AtomicU16::new(0)),
    }
}

fn until_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let end = std::time::Instant::now() + within;
    while std::net::TcpStream::connect(loopback(port)).is_err() {
        if std::time::Instant::now() > end {
            bail!("nothing listens on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
