//! Processes for the multi-process tests: NATS servers on free ports, managers and edges as the real
//! `quench` binary, and a small HTTP client to talk to them.

#![allow(dead_code)]

pub mod certs;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

pub const QUENCH: &str = env!("CARGO_BIN_EXE_quench");
pub const BOOTSTRAP: &str = "test-bootstrap-token-0123456789-abcdefghij";
pub const SIGNING_SEED: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `QUENCH_TEST_NATS_SERVER` (scripts/test points it at a current NATS), else the installed one.
pub fn nats_server_binary() -> Option<PathBuf> {
    let chosen = std::env::var_os("QUENCH_TEST_NATS_SERVER").map(PathBuf::from);
    let candidates = [
        "nats-server",
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
    ];
    chosen
        .into_iter()
        .chain(candidates.iter().map(PathBuf::from))
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A NATS server with JetStream, on a free port, with its own store directory; it can be killed and
/// started again on the same port and store.
pub struct Nats {
    binary: PathBuf,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// A configuration file's text (`{port}` and `{dir}` filled in) instead of the JetStream defaults.
    config: Option<String>,
    child: Option<Child>,
}

impl Nats {
    /// `None` (skipping loudly) when no nats-server is installed, outside CI.
    pub fn start() -> Option<Self> {
        Self::start_with(Vec::new())
    }

    pub fn start_with(extra: Vec<String>) -> Option<Self> {
        Self::launch(extra, None)
    }

    /// A server from a configuration file; `{port}` and `{dir}` in it are filled in.
    pub fn start_config(config: &str) -> Option<Self> {
        Self::launch(Vec::new(), Some(config.to_owned()))
    }

    fn launch(extra: Vec<String>, config: Option<String>) -> Option<Self> {
        let Some(binary) = nats_server_binary() else {
            assert!(
                !in_ci(),
                "nats-server is required in CI (scripts/services installs it)"
            );
            eprintln!("SKIPPED: no nats-server on this machine (run scripts/services)");
            return None;
        };
        let mut nats = Self {
            binary,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            extra,
            config,
            child: None,
        };
        nats.restart();
        Some(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the server logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        let mut command = Command::new(&self.binary);
        match &self.config {
            None => {
                command
                    .args([
                        "-a",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-js",
                        "-sd",
                    ])
                    .arg(self.dir.path().join("js"));
            }
            Some(text) => {
                let path = self.dir.path().join("nats.conf");
                let text = text
                    .replace("{port}", &self.port.to_string())
                    .replace("{dir}", &self.dir.path().join("js").display().to_string());
                std::fs::write(&path, text).expect("write nats.conf");
                command.arg("-c").arg(path);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("nats log");
        let child = command
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "nats-server did not start:\n{}",
            self.log()
        );
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of NATS servers on loopback (server names `n0`, `n1`, ...), each on free client and
/// cluster ports with its own store; any one can be killed and started again on the same ports and store.
pub struct NatsCluster {
    pub servers: Vec<Nats>,
}

impl NatsCluster {
    /// `None` (skipping loudly) when no nats-server is installed, outside CI.
    pub fn start(size: usize) -> Option<Self> {
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let listed: Vec<String> = routes
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect();
        let mut servers = Vec::with_capacity(size);
        for (i, port) in routes.iter().enumerate() {
            let config = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\" }}\n\
                 cluster {{\n  name: quench-test\n  listen: 127.0.0.1:{port}\n  routes: [{}]\n}}\n",
                listed.join(", ")
            );
            servers.push(Nats::start_config(&config)?);
        }
        Some(Self { servers })
    }

    /// Every server's URL, comma-separated, starting with server `first`: how a process is told of the
    /// whole cluster but starts on one server of it.
    pub fn urls_from(&self, first: usize) -> String {
        let n = self.servers.len();
        (0..n)
            .map(|i| self.servers[(first + i) % n].url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server leading the deployment's stream (server `n<i>`).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        let info = self.stream_info(stream).await?;
        let leader = info.cluster?.leader?;
        leader.strip_prefix('n')?.parse().ok()
    }

    /// The stream's information, asked of any live server.
    pub async fn stream_info(&self, stream: &str) -> Option<async_nats::jetstream::stream::Info> {
        for server in &self.servers {
            let Ok(client) = async_nats::connect(server.url()).await else {
                continue;
            };
            let jetstream = async_nats::jetstream::new(client);
            if let Ok(mut found) = jetstream.get_stream(stream).await
                && let Ok(info) = found.info().await
            {
                return Some(info.clone());
            }
        }
        None
    }
}

/// A `quench` process whose stdout lines are collected and whose log is drained.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Proc {
    pub fn spawn(args: &[String], env: &[(String, String)]) -> Self {
        let mut child = Command::new(QUENCH)
            .args(args)
            .env_remove("QUENCH_TOKEN")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn quench");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(&mut stderr).lines().map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        Self {
            child,
            lines: rx,
            log,
            args: args.to_vec(),
            env: env.to_vec(),
        }
    }

    /// Waits for a stdout line containing `marker` and returns the `http://` or `https://` URL on it.
    pub fn url_after(&self, marker: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200))
                && line.contains(marker)
            {
                let at = line
                    .find("https://")
                    .or_else(|| line.find("http://"))
                    .expect("a URL on the line");
                return line[at..].trim().to_owned();
            }
        }
        panic!(
            "{:?} never printed {marker:?}; its log:\n{}",
            self.args,
            self.log_tail()
        );
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The last lines the process logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn manager(
    nats: &str,
    data_dir: &Path,
    database: Option<&str>,
    extra_env: &[(&str, &str)],
) -> (Proc, String) {
    manager_at("127.0.0.1:0", nats, data_dir, database, extra_env)
}

/// A manager on a given address (a restarted manager keeps its URL, as behind a load balancer).
pub fn manager_at(
    listen: &str,
    nats: &str,
    data_dir: &Path,
    database: Option<&str>,
    extra_env: &[(&str, &str)],
) -> (Proc, String) {
    manager_with(listen, nats, data_dir, database, extra_env, &[])
}

/// [`manager_at`] with further command-line arguments.
pub fn manager_with(
    listen: &str,
    nats: &str,
    data_dir: &Path,
    database: Option<&str>,
    extra_env: &[(&str, &str)],
    extra_args: &[&str],
) -> (Proc, String) {
    let mut args: Vec<String> = [
        "manager",
        "--nats",
        nats,
        "--admin-listen",
        listen,
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(data_dir.display().to_string());
    if let Some(db) = database {
        args.extend(["--database".to_owned(), db.to_owned()]);
    }
    args.extend(extra_args.iter().map(|a| a.to_string()));
    let mut env = vec![
        ("QUENCH_BOOTSTRAP_TOKEN".to_owned(), BOOTSTRAP.to_owned()),
        ("QUENCH_SIGNING_KEY".to_owned(), SIGNING_SEED.to_owned()),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let proc = Proc::spawn(&args, &env);
    let url = proc.url_after("manager listening on");
    (proc, url)
}

pub fn edge(
    nats: &str,
    manager: &str,
    token: &str,
    id: &str,
    max_staleness: u64,
) -> (Proc, String) {
    edge_in(nats, manager, token, id, "local", max_staleness)
}

pub fn edge_in(
    nats: &str,
    manager: &str,
    token: &str,
    id: &str,
    region: &str,
    max_staleness: u64,
) -> (Proc, String) {
    edge_with(nats, manager, token, id, region, max_staleness, &[])
}

pub fn edge_with(
    nats: &str,
    manager: &str,
    token: &str,
    id: &str,
    region: &str,
    max_staleness: u64,
    extra: &[&str],
) -> (Proc, String) {
    let mut args: Vec<String> = [
        "edge",
        "--nats",
        nats,
        "--manager",
        manager,
        "--listen",
        "127.0.0.1:0",
        "--id",
        id,
        "--region",
        region,
        "--max-staleness",
        &max_staleness.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Edge keys live outside the source tree; an edge restarted under its id finds its key again.
    let keys = Path::new(env!("CARGO_TARGET_TMPDIR")).join("edge-keys");
    args.extend(["--data-dir".to_owned(), keys.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(&args, &[("QUENCH_TOKEN".to_owned(), token.to_owned())]);
    let url = proc.url_after("listening on");
    (proc, url)
}

pub struct Client {
    http: reqwest::Client,
    pub token: String,
}

impl Default for Client {
    fn default() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            token: BOOTSTRAP.to_owned(),
        }
    }
}

impl Client {
    /// A client that trusts only the certificate (PEM) `root`, opening a new connection per request.
    pub fn trusting(root: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = reqwest::Certificate::from_pem(root.as_bytes()).expect("a PEM certificate");
        Self {
            http: reqwest::Client::builder()
                .tls_certs_only([root])
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
            token: BOOTSTRAP.to_owned(),
        }
    }

    pub async fn post(&self, url: &str, body: Value) -> (u16, Value) {
        match self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn get(&self, url: &str) -> (u16, Value) {
        match self.http.get(url).bearer_auth(&self.token).send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    pub async fn text(&self, url: &str) -> String {
        match self.http.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn edge_token(&self, manager: &str) -> String {
        let (status, body) = self
            .post(&format!("{manager}/v1/tokens"), json!({"scopes": ["edge"]}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Creates a key; returns (id, key).
    pub async fn create(&self, manager: &str, owner: &str) -> (String, String) {
        let (status, body) = self
            .post(&format!("{manager}/v1/keys"), json!({"owner": owner}))
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["key"].as_str().expect("key").to_owned(),
        )
    }

    pub async fn verify(&self, edge: &str, key: &str) -> Value {
        match self
            .http
            .post(format!("{edge}/v1/verify"))
            .json(&json!({"key": key}))
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Polls until `verify` on `edge` answers `reason` (`None` = valid).
    pub async fn until_verdict(
        &self,
        edge: &str,
        key: &str,
        reason: Option<&str>,
        within: Duration,
    ) -> Value {
        let end = Instant::now() + within;
        loop {
            let verdict = self.verify(edge, key).await;
            let matches = match reason {
                None => verdict["valid"] == true,
                Some(r) => verdict["reason"] == r,
            };
            if matches || Instant::now() > end {
                return verdict;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the manager sees `count` live edges caught up with its log.
    pub async fn until_edges_live(&self, manager: &str, count: usize, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let (_, body) = self.get(&format!("{manager}/v1/edges")).await;
            let live = body["edges"].as_array().map_or(0, |edges| {
                edges
                    .iter()
                    .filter(|e| e["live"] == true && e["lag"] == 0)
                    .count()
            });
            if live >= count {
                return;
            }
            assert!(
                Instant::now() < end,
                "only {live} of {count} edges live: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A fresh PostgreSQL database for one test, dropped afterwards; `None` (skipping loudly) only outside CI.
pub struct PgDatabase {
    admin: String,
    name: String,
}

fn block_on<F: std::future::Future + Send + 'static>(future: F) -> F::Output
where
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(future)
    })
    .join()
    .expect("thread")
}

impl PgDatabase {
    pub fn create(tag: &str) -> Option<Self> {
        use sqlx::Connection;
        let admin = std::env::var("QUENCH_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("quench_{tag}_{}", std::process::id());
        let url = admin.clone();
        let connected =
            block_on(async move { sqlx::PgConnection::connect(&url).await.map(|_| ()) });
        if let Err(error) = connected {
            assert!(
                !in_ci(),
                "PostgreSQL is required in CI but {admin} is unreachable: {error}"
            );
            eprintln!("SKIPPED: PostgreSQL at {admin} is unreachable ({error})");
            return None;
        }
        let (url, db) = (admin.clone(), name.clone());
        block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            // Separate statements: PostgreSQL runs a multi-statement string in one transaction, and
            // DROP/CREATE DATABASE refuse to run inside one.
            let drop = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await?;
            let create = format!("CREATE DATABASE \"{db}\"");
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut conn)
                .await
        })
        .expect("creating the test database");
        Some(Self { admin, name })
    }

    /// A copy of this database as it stands (`CREATE DATABASE ... TEMPLATE`): a backup. Nothing may be
    /// connected to it, so a process that just died gets a few seconds to be noticed.
    pub fn copy(&self, tag: &str) -> Self {
        use sqlx::Connection;
        let name = format!("quench_{tag}_{}", std::process::id());
        let (url, copy, source) = (self.admin.clone(), name.clone(), self.name.clone());
        let copied = block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&url).await?;
            let drop = format!("DROP DATABASE IF EXISTS \"{copy}\" WITH (FORCE)");
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await?;
            let mut tries = 0;
            loop {
                let create = format!("CREATE DATABASE \"{copy}\" TEMPLATE \"{source}\"");
                match sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await
                {
                    Err(_) if tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    done => return done,
                }
            }
        });
        copied.expect("copying the test database");
        Self {
            admin: self.admin.clone(),
            name,
        }
    }

    pub fn url(&self) -> String {
        let base = self
            .admin
            .rsplit_once('/')
            .map_or(self.admin.as_str(), |(base, _)| base);
        format!("{base}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        use sqlx::Connection;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let admin = self.admin.clone();
        let _ = block_on(async move {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
        });
    }
}
