//! The command line: what each command takes, and dispatch.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{alerts, bench, client, edge, manager, scan, up, webhooks};

#[derive(Debug, Parser)]
#[command(
    name = "quench",
    version,
    about = "Revoke leaked API keys everywhere within milliseconds."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the manager and an edge in one process (SQLite + in-process bus by default).
    Up(up::UpArgs),
    /// Run a manager alone (with --nats; several may share one PostgreSQL).
    Manager(manager::ManagerCommand),
    /// Run one edge, following a deployment's NATS and reading its manager over HTTP.
    Edge(edge::EdgeCommand),
    /// Issue, list, show, revoke and rotate keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Issue manager tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// List usage alerts the edges raised, newest first.
    Alerts(alerts::AlertsArgs),
    /// Subscribe URLs to signed notifications of revocations and alerts.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Ask an edge whether a key is valid. Exit 0 if valid, 1 if not, 2 on error.
    Verify(VerifyArgs),
    /// Find Quench keys in files, standard input or git history. Exit 1 when keys are found, 0 when
    /// none, 2 on error.
    Scan(scan::ScanArgs),
    /// Print a rule that teaches another secret scanner the key format.
    Rules(scan::RulesArgs),
    /// Benchmarks that need the whole system (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Where the manager is and how to authenticate.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Manager URL.
    #[arg(
        long,
        env = "QUENCH_SERVER",
        default_value = "http://127.0.0.1:7600",
        global = true
    )]
    pub server: String,
    /// Manager token; defaults to the bootstrap token in `<data-dir>/admin.token`.
    #[arg(long, env = "QUENCH_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Where `quench up` keeps its data (for the default token).
    #[arg(long, default_value = "./quench-data", global = true)]
    pub data_dir: PathBuf,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key. Its plaintext is printed once.
    Create(CreateArgs),
    /// List keys, newest first.
    List(ListArgs),
    /// Show one key.
    Show(ShowArgs),
    /// Revoke one key, or every key of an owner or API.
    Revoke(RevokeArgs),
    /// Issue a successor key; the old one keeps working for the grace period.
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long)]
    pub owner: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    /// An API the key may call (repeat for several; none = any).
    #[arg(long = "api")]
    pub apis: Vec<String>,
    /// A scope the key carries (repeat for several).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, conflicts_with = "expires_at")]
    pub expires_in: Option<u64>,
    /// Expiry as RFC 3339.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Metadata as a JSON object.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Issuer prefix, when the manager has several.
    #[arg(long)]
    pub issuer: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub owner: Option<String>,
    /// active, revoked or expired.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub api: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key id (or use --owner / --api for many).
    #[arg(required_unless_present_any = ["owner", "api"], conflicts_with_all = ["owner", "api"])]
    pub id: Option<String>,
    /// Revoke every key of this owner.
    #[arg(long, conflicts_with = "api")]
    pub owner: Option<String>,
    /// Revoke every key for this API.
    #[arg(long)]
    pub api: Option<String>,
    #[arg(long)]
    pub reason: String,
    /// Return at commit instead of waiting for every edge to confirm.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the edges, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    pub id: String,
    /// Seconds the old key keeps working.
    #[arg(long, default_value_t = 0)]
    pub grace: u64,
    /// Lifetime of the new key in seconds.
    #[arg(long)]
    pub expires_in: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Issue a manager token. Its plaintext is printed once.
    Create(TokenArgs),
    /// Revoke a manager token: it stops authenticating at once.
    Revoke(RevokeTokenArgs),
}

#[derive(Debug, Args)]
pub struct RevokeTokenArgs {
    /// The token id (the 10 characters after `qt_`).
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// admin, keys:read, keys:write, keys:revoke, leaks:report or edge (repeat for several).
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// Confine the token to one owner's keys.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The key to check. Use `-` to read it from standard input (keeps it out of shell history).
    pub key: String,
    #[arg(long)]
    pub api: Option<String>,
    #[arg(long)]
    pub scope: Option<String>,
    /// Edge URL.
    #[arg(long, env = "QUENCH_EDGE", default_value = "http://127.0.0.1:7601")]
    pub edge: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up::run(args, cli.log).await,
        Command::Manager(args) => manager::run(args, cli.log).await,
        Command::Edge(args) => edge::run(args, cli.log).await,
        Command::Keys(command) => client::keys(command).await,
        Command::Tokens(TokensCommand::Create(args)) => client::create_token(args).await,
        Command::Tokens(TokensCommand::Revoke(args)) => client::revoke_token(args).await,
        Command::Verify(args) => client::verify(args).await,
        Command::Alerts(args) => alerts::alerts(args).await,
        Command::Webhooks(command) => webhooks::webhooks(command).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Scan(args) => scan::run(args).await,
        Command::Rules(args) => Ok(scan::rules(&args)),
    }
}
