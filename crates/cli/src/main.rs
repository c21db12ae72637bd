//! `quench`: run Quench, manage keys and tokens, verify keys.

mod alerts;
mod bench;
mod bench_scan;
mod client;
mod commands;
mod edge;
mod logging;
mod manager;
mod node;
mod remote;
mod scan;
mod settings;
mod stored_snapshot;
mod up;
mod webhooks;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
