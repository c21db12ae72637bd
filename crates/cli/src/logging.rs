//! The log of `up`, `manager` and `edge`, on standard error.
//!
//! Colour only when standard error is a terminal: a log written to a file or read through a pipe (a
//! service manager, a container runtime) carries no escape codes. `--log-format json` writes one JSON
//! object per line for log collectors; `RUST_LOG` chooses what is logged either way.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people to read.
    #[default]
    Text,
    /// One JSON object per line: time, level, target, message and fields.
    Json,
}

/// The log options every command takes (only the servers log).
#[derive(Debug, Clone, Copy, Args)]
pub struct LogArgs {
    /// How `up`, `manager` and `edge` write their log to standard error.
    #[arg(
        long,
        env = "QUENCH_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
}

/// Installs the process's logger (once; later calls change nothing).
pub fn init(args: LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match args.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
