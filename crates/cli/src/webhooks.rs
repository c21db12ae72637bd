//! `quench webhooks`: subscribing URLs to revocations and usage alerts, over the manager API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use quench_api::webhooks::{CreateWebhookRequest, CreatedWebhook, DeliveryList, WebhookList};
use reqwest::Method;
use serde::Serialize;

use crate::{
    client::{NO_BODY, Reply, call, call_raw, emit, list, not_a_key, or_dash, urlencode},
    commands::ClientArgs,
};

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

pub async fn webhooks(command: WebhooksCommand) -> anyhow::Result<ExitCode> {
    match command {
        WebhooksCommand::Create(a) => create(a).await?,
        WebhooksCommand::List(a) => list_webhooks(a).await?,
        WebhooksCommand::Delete(a) => delete(a).await?,
        WebhooksCommand::Deliveries(a) => deliveries(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The subscription `quench webhooks create` asks for: every event unless some are named.
fn create_request(a: &CreateWebhookArgs) -> CreateWebhookRequest {
    CreateWebhookRequest {
        url: a.url.clone(),
        events: (!a.events.is_empty()).then(|| a.events.clone()),
        owner: a.owner.clone(),
    }
}

async fn create(a: CreateWebhookArgs) -> anyhow::Result<()> {
    let request = create_request(&a);
    let created: Reply<CreatedWebhook> =
        call(&a.client, Method::POST, "/v1/webhooks", Some(&request)).await?;
    emit(a.client.json, &created, |w| {
        println!(
            "webhook {} for {} ({}); its signing secret:",
            w.webhook.id,
            w.webhook.url,
            list(&w.webhook.events)
        );
        println!();
        println!("  {}", w.secret);
        println!();
        println!("This is the only time the secret is shown. Store it with the receiver.");
    });
    Ok(())
}

async fn list_webhooks(a: WebhookListArgs) -> anyhow::Result<()> {
    let hooks: Reply<WebhookList> = call(&a.client, Method::GET, "/v1/webhooks", NO_BODY).await?;
    emit(a.client.json, &hooks, |l| {
        println!("{:<20} {:<16} {:<30} URL", "ID", "OWNER", "EVENTS");
        for w in &l.webhooks {
            println!(
                "{:<20} {:<16} {:<30} {}",
                w.id,
                or_dash(w.owner.as_deref()),
                list(&w.events),
                w.url
            );
        }
    });
    Ok(())
}

/// What `quench webhooks delete --json` prints (the endpoint answers 204, with no body).
#[derive(Serialize)]
struct Deleted<'a> {
    deleted: bool,
    id: &'a str,
}

async fn delete(a: WebhookIdArgs) -> anyhow::Result<()> {
    not_a_key(&a.id, "webhook")?;
    let path = format!("/v1/webhooks/{}", urlencode(&a.id));
    call_raw(&a.client, Method::DELETE, &path, NO_BODY).await?;
    if a.client.json {
        let deleted = Deleted {
            deleted: true,
            id: &a.id,
        };
        println!("{}", serde_json::to_string(&deleted)?);
    } else {
        println!("webhook {} deleted", a.id);
    }
    Ok(())
}

async fn deliveries(a: WebhookIdArgs) -> anyhow::Result<()> {
    not_a_key(&a.id, "webhook")?;
    let path = format!("/v1/webhooks/{}/deliveries", urlencode(&a.id));
    let page: Reply<DeliveryList> = call(&a.client, Method::GET, &path, NO_BODY).await?;
    emit(a.client.json, &page, |l| {
        println!(
            "{:<8} {:<14} {:<10} {:<8} {:<26} LAST ERROR",
            "ID", "TYPE", "STATUS", "ATTEMPTS", "CREATED"
        );
        for d in &l.deliveries {
            println!(
                "{:<8} {:<14} {:<10} {:<8} {:<26} {}",
                d.id,
                d.event_type,
                d.status,
                d.attempts,
                d.created_at,
                or_dash(d.last_error.as_deref())
            );
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(events: &[&str], owner: Option<&str>) -> CreateWebhookArgs {
        CreateWebhookArgs {
            url: "https://hooks.example/quench".into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            owner: owner.map(str::to_owned),
            client: ClientArgs {
                server: "http://127.0.0.1:7600".into(),
                token: None,
                data_dir: std::path::PathBuf::new(),
                json: false,
            },
        }
    }

    #[test]
    fn no_event_named_asks_for_every_event() {
        let body = serde_json::to_value(create_request(&args(&[], None))).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"url": "https://hooks.example/quench"})
        );
        let body = serde_json::to_value(create_request(&args(&["key.revoked"], Some("team-a"))))
            .expect("json");
        assert_eq!(
            body,
            serde_json::json!({"url": "https://hooks.example/quench", "events": ["key.revoked"], "owner": "team-a"})
        );
    }
}
