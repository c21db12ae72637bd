//! `quench alerts`: the usage alerts the edges raised, over the manager API.

use std::process::ExitCode;

use clap::Args;
use quench_api::alerts::{AlertList, AlertQuery, AlertView};
use reqwest::Method;

use crate::{
    client::{NO_BODY, Reply, call, emit, given_id, with_query},
    commands::ClientArgs,
};

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only this key's alerts.
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The page `quench alerts` asks for.
fn alerts_path(a: &AlertsArgs) -> anyhow::Result<String> {
    let query = AlertQuery {
        key_id: a.key.as_deref().map(|k| given_id(k, "key")).transpose()?,
        owner: a.owner.clone(),
        limit: Some(a.limit),
        cursor: a.cursor.clone(),
    };
    with_query("/v1/alerts", &query)
}

pub async fn alerts(a: AlertsArgs) -> anyhow::Result<ExitCode> {
    let page: Reply<AlertList> = call(&a.client, Method::GET, &alerts_path(&a)?, NO_BODY).await?;
    emit(a.client.json, &page, |p| {
        println!(
            "{:<26} {:<12} {:<16} {:<20} {:<7} {:<12} MEASURES",
            "RAISED", "KEY", "OWNER", "RULE", "ACTION", "EDGE"
        );
        for alert in &p.alerts {
            print_alert(alert);
        }
        if let Some(next) = &p.next_cursor {
            println!("more: --cursor {next}");
        }
    });
    Ok(ExitCode::SUCCESS)
}

fn print_alert(alert: &AlertView) {
    let measure = |name: &str| alert.details["measures"][name].as_f64().unwrap_or(0.0);
    println!(
        "{:<26} {:<12} {:<16} {:<20} {:<7} {:<12} {:.0} requests, {:.0} addresses, usual {:.1}",
        alert.raised_at,
        alert.key_id,
        alert.owner.as_deref().unwrap_or("-"),
        alert.rule,
        alert.action,
        alert.edge,
        measure("requests"),
        measure("distinct_addresses"),
        measure("usual"),
    );
}
