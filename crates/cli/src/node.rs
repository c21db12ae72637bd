//! What `quench up`, `quench manager` and `quench edge` share: their options, signals, and how each part
//! is built from the options (the manager's configuration is checked in `settings`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use quench_api::listener::{Endpoint, Limits, Listeners, ServerCertificate, TlsFiles};
use quench_bus::{
    Bus, BusError, NatsAccess, NatsBus, Role, StreamPlacement,
    nats::{Credential, Names, NatsAccessOptions, NatsAuth, NatsServers},
};
use quench_cli::embedded;
use quench_edge::{EdgeConfig, SlowHashConfig, StalePolicy};
use quench_manager::Fault;
use quench_store::{Store, sqlite::SqliteStore};
use tokio_util::sync::CancellationToken;

/// Options of a manager (in `up` and `manager`).
#[derive(Debug, Args)]
pub struct ManagerArgs {
    /// Where the SQLite database, the signing key and the bootstrap token live.
    #[arg(long, env = "QUENCH_DATA_DIR", default_value = "./quench-data")]
    pub data_dir: PathBuf,
    /// Manager API address.
    #[arg(long, default_value = "127.0.0.1:7600")]
    pub admin_listen: String,
    /// Serve the manager's /metrics on this separate address (the API then answers /metrics with 404).
    #[arg(long)]
    pub admin_ops_listen: Option<String>,
    /// The store: a `postgres://` or `sqlite:` URL; default `<data-dir>/quench.db`.
    #[arg(long, env = "QUENCH_DATABASE")]
    pub database: Option<String>,
    /// An issuer as PREFIX or PREFIX:HASH (sha256, argon2id, bcrypt); repeat for several, the first is
    /// the default for new keys.
    #[arg(long = "issuer", default_value = "qk:sha256")]
    pub issuers: Vec<String>,
    /// The event-signing key file (hex seed); default `<data-dir>/signing.key`, made on first start.
    /// `QUENCH_SIGNING_KEY` (the hex seed itself) takes precedence. Managers sharing a database share it.
    #[arg(long, env = "QUENCH_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
    /// A further manager public key edges should trust (hex), during a signing-key rotation.
    #[arg(long = "also-trust")]
    pub also_trust: Vec<String>,
    /// GitHub's secret-scanning public keys document (a file or an URL), to accept GitHub's leak reports
    /// at POST /v1/integrations/github/secret-scanning.
    #[arg(long, env = "QUENCH_GITHUB_PUBLIC_KEYS")]
    pub github_public_keys: Option<String>,
    /// The usage policy (JSON: window, rules, actions) every edge applies; default: alert when a key is
    /// used from more than 50 addresses in a minute or at ten times its usual rate, revoke nothing.
    #[arg(long, env = "QUENCH_USAGE_POLICY")]
    pub usage_policy: Option<PathBuf>,
    /// Seconds after which a webhook delivery that keeps failing is given up.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub webhook_give_up: u64,
    /// Seconds before the first retry of a failed webhook delivery (doubling up to an hour).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub webhook_first_retry: u64,
    /// An address range (CIDR, e.g. 10.20.0.0/16 or fd00::/8) webhooks may reach although it is not
    /// public; repeat for several. By default deliveries go to public addresses only.
    #[arg(long = "webhook-allow", value_name = "CIDR")]
    pub webhook_allow: Vec<String>,
    /// For tests only, hidden from help: a fault the manager injects on purpose.
    #[arg(long, hide = true, value_enum)]
    pub fault: Option<TestFault>,
}

/// The faults `--fault` injects (see [`Fault`]); tests of what survives a crash use them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TestFault {
    /// Abort right after a change commits, before it is published.
    CrashBeforePublish,
}

impl TestFault {
    pub fn fault(self) -> Fault {
        match self {
            Self::CrashBeforePublish => Fault::CrashBeforePublish,
        }
    }
}

/// Options of an edge (in `up` and `edge`).
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Stop answering `valid` after this many seconds without hearing the manager.
    #[arg(long, default_value_t = 10)]
    pub max_staleness: u64,
    #[arg(long, value_enum, default_value_t = StaleMode::FailClosed)]
    pub stale_policy: StaleMode,
    #[arg(long, default_value = "local")]
    pub region: String,
    /// argon2id/bcrypt checks run at once, off the async workers [default: half the cores, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub slow_hash_workers: Option<u32>,
    /// argon2id/bcrypt checks that may wait for a worker; more are answered 503 `busy`.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub slow_hash_queue: u32,
    /// Failed argon2id/bcrypt checks of one key id per window before further ones are refused unhashed.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub slow_hash_failures: u32,
    /// That window, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub slow_hash_window: u64,
}

/// How every HTTP listener of the process serves (in `up`, `manager` and `edge`).
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded on SIGHUP and when the
    /// files change.
    #[arg(long, env = "QUENCH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "QUENCH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds between checks of the TLS files for a change (0: reload on SIGHUP only).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub tls_reload_interval: u64,
    /// Seconds a client has to send a request's headers (and to finish the TLS handshake).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// Connections open at once on each listener; further ones wait in the kernel's accept queue.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
}

impl ListenArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(self.header_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            ..Limits::default()
        }
    }

    /// The TLS certificate, loaded (and checked) now, or `None` for plain HTTP.
    pub fn certificate(&self) -> anyhow::Result<Option<Arc<ServerCertificate>>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        ServerCertificate::load(files)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))
    }
}

/// Binds an API listener and, with `ops`, its operations listener, both served as `args` say.
pub async fn listeners(
    api: &str,
    ops: Option<&str>,
    name: &'static str,
    args: &ListenArgs,
    certificate: &Option<Arc<ServerCertificate>>,
) -> anyhow::Result<Listeners> {
    let endpoint = |listener, name| Endpoint {
        limits: args.limits(),
        tls: certificate.clone(),
        ..Endpoint::new(listener, name)
    };
    let api = endpoint(bind(api, name).await?, name);
    let ops = match ops {
        Some(address) => Some(endpoint(bind(address, "operations listener").await?, "ops")),
        None => None,
    };
    Ok(Listeners { api, ops })
}

/// Prints where `listeners` serve: `<what> listening on <url>`, then the operations listener's line.
pub fn announce(what: &str, listeners: &Listeners) -> anyhow::Result<()> {
    println!("{what} listening on {}", listeners.api.url()?);
    if let Some(ops) = &listeners.ops {
        println!("{what} metrics and health on {}", ops.url()?);
    }
    Ok(())
}

/// Reloads the certificate on SIGHUP and on file change until `cancel` fires. Listens for SIGHUP from
/// the moment it returns.
pub fn watch_certificate(
    args: &ListenArgs,
    certificate: &Option<Arc<ServerCertificate>>,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    if let Some(certificate) = certificate {
        let poll =
            (args.tls_reload_interval > 0).then(|| Duration::from_secs(args.tls_reload_interval));
        let watcher = certificate
            .watcher(poll, cancel.clone())
            .context("listening for SIGHUP")?;
        tokio::spawn(watcher);
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (cheap, and what a server holding many connections
/// needs), and warns when even that is too low for the connection caps.
pub fn raise_open_file_limit(connections: u64) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let mut soft = limit.current;
        if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
            && current < maximum
        {
            let raised = rustix::process::Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => soft = Some(maximum),
                Err(error) => tracing::debug!(%error, "cannot raise the open-file limit"),
            }
        }
        // Besides connections: the store, NATS, log and data files, the runtime.
        let needed = connections.saturating_add(128);
        if let Some(soft) = soft
            && soft < needed
        {
            tracing::warn!(
                limit = soft,
                needed,
                "the open-file limit is below what the connection caps need; raise it (ulimit -n) \
                 or lower --max-connections"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = connections;
}

/// Where the bus is (in `up`, `manager` and `edge`), and how to log in to it.
#[derive(Debug, Args)]
pub struct BusArgs {
    /// NATS server URL(s), comma-separated: `nats://` or `tls://`, optionally `user:password@` (better: the
    /// options below); without it `up` uses an in-process bus.
    #[arg(long, env = "QUENCH_NATS", hide_env_values = true, value_parser = NatsServersParser)]
    pub nats: Option<NatsServers>,
    /// Namespaces every NATS stream and subject, so several deployments share one NATS.
    #[arg(long, env = "QUENCH_DEPLOYMENT", default_value = "quench")]
    pub deployment: String,
    /// The JetStream domain holding the deployment's stream, for a process connected to a leaf node
    /// of the hub that runs JetStream (the hub's `jetstream { domain: ... }`).
    #[arg(long, env = "QUENCH_JETSTREAM_DOMAIN")]
    pub jetstream_domain: Option<String>,
    /// How many servers of a NATS JetStream cluster keep the deployment's stream, 1 to 5 (3 on a
    /// three-server cluster lets any one server die). A manager creates the stream so and brings an
    /// existing one to it; an edge ignores it.
    #[arg(long, env = "QUENCH_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// A NATS credentials file (user JWT and nkey seed), for servers in operator mode.
    #[arg(long, env = "QUENCH_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS nkey user seed (`SU...`).
    #[arg(long, env = "QUENCH_NATS_NKEY", value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
    /// NATS user name; its password from QUENCH_NATS_PASSWORD.
    #[arg(long, env = "QUENCH_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password: prefer the environment variable, as a command line is visible to other users.
    #[arg(long, env = "QUENCH_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Credential>,
    /// NATS token: prefer the environment variable, as a command line is visible to other users.
    #[arg(long, env = "QUENCH_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<Credential>,
    /// CA certificate(s) (PEM) to trust for NATS instead of the system's; implies TLS.
    #[arg(long, env = "QUENCH_NATS_CA", value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients (mutual TLS); with --nats-key.
    #[arg(long, env = "QUENCH_NATS_CERT", value_name = "FILE")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "QUENCH_NATS_KEY", value_name = "FILE")]
    pub nats_key: Option<PathBuf>,
}

impl BusArgs {
    fn access(&self, servers: NatsServers) -> anyhow::Result<NatsAccess> {
        let options = NatsAccessOptions {
            credentials_file: self.nats_creds.clone(),
            nkey_file: self.nats_nkey.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            ca: self.nats_ca.clone(),
            client_cert: self.nats_cert.clone(),
            client_key: self.nats_key.clone(),
        };
        NatsAccess::new(servers, options).map_err(|e| anyhow::anyhow!("--nats: {e}"))
    }
}

/// Parses `--nats` without ever repeating the text in an error: it may hold a password.
#[derive(Debug, Clone, Copy)]
struct NatsServersParser;

impl clap::builder::TypedValueParser for NatsServersParser {
    type Value = NatsServers;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<NatsServers, clap::Error> {
        let invalid = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid --nats: {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid("not UTF-8".into()))?;
        NatsServers::parse(text).map_err(|e| invalid(e.to_string()))
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StaleMode {
    FailClosed,
    FailOpen,
}

pub fn create_data_dir(path: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(())
}

pub async fn open_store(args: &ManagerArgs) -> anyhow::Result<Arc<dyn Store>> {
    match &args.database {
        None => {
            let store = SqliteStore::open(&args.data_dir.join("quench.db"))
                .await
                .context("opening the SQLite store")?;
            Ok(Arc::new(store))
        }
        Some(url) => quench_store::open_url(url)
            .await
            .context("--database: opening the store"),
    }
}

/// The NATS settings checked before anything connects: `None` without `--nats` (an in-process bus).
pub fn bus_access(args: &BusArgs) -> anyhow::Result<Option<NatsAccess>> {
    let Some(servers) = &args.nats else {
        return Ok(None);
    };
    Names::for_deployment(&args.deployment).map_err(|e| anyhow::anyhow!("--deployment: {e}"))?;
    args.access(servers.clone()).map(Some)
}

/// The deployment's bus: NATS with `access` (as `role`), else in-process.
pub async fn connect_bus(
    args: &BusArgs,
    access: Option<NatsAccess>,
    role: Role,
) -> anyhow::Result<Arc<dyn Bus>> {
    let Some(access) = access else {
        return Ok(embedded::in_process_bus());
    };
    let bus = nats_bus(args, &access, role)
        .await
        .map_err(|error| nats_failure(&error, &access))?;
    Ok(Arc::new(bus))
}

/// [`connect_bus`] for an edge, which must outlast a bus that is down or cut off when it starts (a
/// restart during a partition): a server that cannot be reached, or a stream no manager has made yet,
/// is retried with backoff for as long as it takes, while the edge answers `stale`. What retrying
/// cannot fix (credentials, TLS, not a NATS server) still ends the start.
pub async fn connect_bus_patiently(
    args: &BusArgs,
    access: Option<NatsAccess>,
    role: Role,
) -> anyhow::Result<Arc<dyn Bus>> {
    let Some(access) = access else {
        return Ok(embedded::in_process_bus());
    };
    let mut wait = Duration::from_millis(250);
    loop {
        match nats_bus(args, &access, role.clone()).await {
            Ok(bus) => return Ok(Arc::new(bus)),
            Err(
                error @ (BusError::Unreachable { .. }
                | BusError::Nats { .. }
                | BusError::StreamMissing { .. }
                | BusError::Closed),
            ) => {
                tracing::warn!(%error, retry_in = ?wait, "NATS cannot be used yet; answering `stale` until it can");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PATIENCE);
            }
            Err(error) => return Err(nats_failure(&error, &access)),
        }
    }
}

/// The longest wait between attempts of a process that retries at start.
pub const PATIENCE: Duration = Duration::from_secs(5);

async fn nats_bus(args: &BusArgs, access: &NatsAccess, role: Role) -> Result<NatsBus, BusError> {
    let placement = StreamPlacement {
        domain: args.jetstream_domain.clone(),
        replicas: usize::from(args.stream_replicas),
    };
    let bus = NatsBus::connect_as(access, &args.deployment, role, &placement).await?;
    tracing::info!(
        servers = %access.servers(),
        credentials = access.auth().kind(),
        tls = access.tls().required,
        deployment = %args.deployment,
        "connected to NATS"
    );
    Ok(bus)
}

/// What went wrong connecting to NATS, with the options that fix it. Names the servers without credentials.
fn nats_failure(error: &BusError, access: &NatsAccess) -> anyhow::Error {
    let hint = match error {
        BusError::Unauthorized(_) => match access.auth() {
            NatsAuth::None => {
                "; this server wants credentials: --nats-creds, --nats-nkey, --nats-user with \
                 QUENCH_NATS_PASSWORD, or --nats-token"
            }
            _ => "; check the credentials given",
        },
        BusError::Tls(_) => {
            "; check --nats-ca (the CA that signed the server's certificate, which must name the host \
             in --nats) and, for a server that verifies clients, --nats-cert and --nats-key"
        }
        _ => "",
    };
    anyhow::anyhow!("--nats: connecting to {}: {error}{hint}", access.servers())
}

pub fn edge_config(args: &EdgeArgs, id: String) -> anyhow::Result<EdgeConfig> {
    if args.max_staleness == 0 {
        bail!("--max-staleness: at least 1 second");
    }
    quench_core::Label::parse(&args.region).map_err(|e| anyhow::anyhow!("--region: {e}"))?;
    quench_core::Label::parse(&id).map_err(|e| anyhow::anyhow!("--id: {e}"))?;
    Ok(EdgeConfig {
        id,
        region: args.region.clone(),
        max_staleness: Duration::from_secs(args.max_staleness),
        stale_policy: match args.stale_policy {
            StaleMode::FailClosed => StalePolicy::FailClosed,
            StaleMode::FailOpen => StalePolicy::FailOpen,
        },
        ack_key: None,
        slow_hash: SlowHashConfig {
            workers: args
                .slow_hash_workers
                .map_or_else(SlowHashConfig::default_workers, |n| n as usize),
            queue: args.slow_hash_queue as usize,
            failures: args.slow_hash_failures,
            window: Duration::from_secs(args.slow_hash_window),
        },
    })
}

/// An edge's acknowledgement key from `path`, made there on first start (see `quench_api::key_file`).
pub fn edge_key(path: &std::path::Path) -> anyhow::Result<Arc<quench_core::sign::Signer>> {
    use quench_api::key_file::{Origin, load_or_create};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        create_data_dir(&dir.to_path_buf())?;
    }
    let (key, origin) =
        load_or_create(path).with_context(|| format!("the edge key {}", path.display()))?;
    if origin == Origin::Created {
        tracing::info!(path = %path.display(), key = %key.id(), "made a new edge key");
    }
    Ok(Arc::new(key))
}

pub async fn bind(address: &str, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the {what} to {address}"))
}

/// Completes on SIGTERM or Ctrl-C, then cancels `cancel`.
pub async fn shutdown_signal(cancel: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
    cancel.cancel();
}
