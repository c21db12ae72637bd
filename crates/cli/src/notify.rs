//! `quench alerts` and `quench webhooks`: usage alerts and webhook subscriptions, over the manager API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::json;

use crate::{
    client::{call, emit, given_id, not_a_key, text, urlencode},
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

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Subscribe a URL to revocations and usage alerts. Its signing secret is printed once.
    Create(CreateWebhookArgs),
    /// List webhooks.
    List(WebhookListArgs),
    /// Delete a webhook; its pending deliveries are abandoned.
    Delete(WebhookIdArgs),
    /// Show a webhook's recent deliveries.
    Deliveries(WebhookIdArgs),
}

#[derive(Debug, Args)]
pub struct CreateWebhookArgs {
    #[arg(long)]
    pub url: String,
    /// key.revoked or alert.raised (repeat for both; default both).
    #[arg(long = "event")]
    pub events: Vec<String>,
    /// Only this owner's keys.
    #[arg(long)]
    pub owner: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct WebhookListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct WebhookIdArgs {
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn alerts(a: AlertsArgs) -> anyhow::Result<ExitCode> {
    let mut query = vec![format!("limit={}", a.limit)];
    let key = a.key.as_deref().map(|k| given_id(k, "key")).transpose()?;
    for (name, value) in [("key_id", &key), ("owner", &a.owner), ("cursor", &a.cursor)] {
        if let Some(value) = value {
            query.push(format!("{name}={}", urlencode(value)));
        }
    }
    let path = format!("/v1/alerts?{}", query.join("&"));
    let page = call(&a.client, Method::GET, &path, None).await?;
    emit(a.client.json, &page, |p| {
        println!(
            "{:<26} {:<12} {:<16} {:<20} {:<7} {:<12} MEASURES",
            "RAISED", "KEY", "OWNER", "RULE", "ACTION", "EDGE"
        );
        for alert in p["alerts"].as_array().into_iter().flatten() {
            let m = &alert["details"]["measures"];
            println!(
                "{:<26} {:<12} {:<16} {:<20} {:<7} {:<12} {:.0} requests, {:.0} addresses, usual {:.1}",
                text(&alert["raised_at"]),
                text(&alert["key_id"]),
                text(&alert["owner"]),
                text(&alert["rule"]),
                text(&alert["action"]),
                text(&alert["edge"]),
                m["requests"].as_f64().unwrap_or(0.0),
                m["distinct_addresses"].as_f64().unwrap_or(0.0),
                m["usual"].as_f64().unwrap_or(0.0),
            );
        }
        if let Some(next) = p["next_cursor"].as_str() {
            println!("more: --cursor {next}");
        }
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn webhooks(command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Create(a) => {
            let mut body = json!({"url": a.url});
            if !a.events.is_empty() {
                body["events"] = json!(a.events);
            }
            if let Some(owner) = &a.owner {
                body["owner"] = json!(owner);
            }
            let created = call(&a.client, Method::POST, "/v1/webhooks", Some(body)).await?;
            emit(a.client.json, &created, |w| {
                println!(
                    "webhook {} for {} ({}); its signing secret:",
                    text(&w["id"]),
                    text(&w["url"]),
                    text(&w["events"])
                );
                println!();
                println!("  {}", text(&w["secret"]));
                println!();
                println!("This is the only time the secret is shown. Store it with the receiver.");
            });
        }
        WebhooksCommand::List(a) => {
            let list = call(&a.client, Method::GET, "/v1/webhooks", None).await?;
            emit(a.client.json, &list, |l| {
                println!("{:<20} {:<16} {:<30} URL", "ID", "OWNER", "EVENTS");
                for w in l["webhooks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<20} {:<16} {:<30} {}",
                        text(&w["id"]),
                        text(&w["owner"]),
                        text(&w["events"]),
                        text(&w["url"])
                    );
                }
            });
        }
        WebhooksCommand::Delete(a) => {
            not_a_key(&a.id, "webhook")?;
            let path = format!("/v1/webhooks/{}", urlencode(&a.id));
            call(&a.client, Method::DELETE, &path, None).await?;
            if a.client.json {
                println!("{}", json!({"id": a.id, "deleted": true}));
            } else {
                println!("webhook {} deleted", a.id);
            }
        }
        WebhooksCommand::Deliveries(a) => {
            not_a_key(&a.id, "webhook")?;
            let path = format!("/v1/webhooks/{}/deliveries", urlencode(&a.id));
            let list = call(&a.client, Method::GET, &path, None).await?;
            emit(a.client.json, &list, |l| {
                println!(
                    "{:<8} {:<14} {:<10} {:<8} {:<26} LAST ERROR",
                    "ID", "TYPE", "STATUS", "ATTEMPTS", "CREATED"
                );
                for d in l["deliveries"].as_array().into_iter().flatten() {
                    println!(
                        "{:<8} {:<14} {:<10} {:<8} {:<26} {}",
                        text(&d["id"]),
                        text(&d["type"]),
                        text(&d["status"]),
                        text(&d["attempts"]),
                        text(&d["created_at"]),
                        text(&d["last_error"])
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
