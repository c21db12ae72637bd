//! The client commands: talk to the manager or an edge over HTTP and print the answer.

use std::{io::Read, process::ExitCode};

use anyhow::{Context, anyhow, bail};
use quench_core::GivenId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::commands::{ClientArgs, KeysCommand, RevokeTokenArgs, TokenArgs, VerifyArgs};

fn http() -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("quench/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

fn token(args: &ClientArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let path = args.data_dir.join("admin.token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .map_err(|_| anyhow!("no token: pass --token or set QUENCH_TOKEN (or run from where `quench up` keeps {})", path.display()))
}

/// Calls the manager; returns the JSON body of a success, or the API's error as an error.
pub(crate) async fn call(
    args: &ClientArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", args.server.trim_end_matches('/'));
    let mut request = http()?.request(method, &url).bearer_auth(token(args)?);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let message = body["error"]["message"].as_str().unwrap_or("no details");
    let code = body["error"]["code"].as_str().unwrap_or("error");
    bail!("{message} ({code}, HTTP {})", status.as_u16())
}

/// The id to send for a key or token given on the command line. A whole key (or token) pasted in its
/// place is reduced to its id, which the format makes exact, with a note on stderr that never repeats
/// it; anything else that is not an id is refused without repeating it either, since it may be a key
/// with a typo. What is printed can end up in CI logs; the secret never does.
pub(crate) fn given_id(text: &str, what: &str) -> anyhow::Result<String> {
    match GivenId::parse(text.trim()) {
        Ok(GivenId::Id(id)) => Ok(id.to_string()),
        Ok(GivenId::WholeKey { id, .. }) => {
            eprintln!(
                "note: a whole {what} was given, not its id; using its id {id}. The {what} itself has \
                 now been exposed (shell history, CI logs): treat it as leaked and revoke it."
            );
            Ok(id.to_string())
        }
        Err(_) => bail!("not a {what} id: a {what} id is the 10 characters after `<prefix>_`"),
    }
}

/// Refuses a whole key given where another kind of id belongs, without repeating it.
pub(crate) fn not_a_key(text: &str, what: &str) -> anyhow::Result<()> {
    match GivenId::parse(text.trim()) {
        Ok(GivenId::WholeKey { id, .. }) => bail!(
            "that is a whole key (id {id}), not a {what} id. The key has now been exposed (shell \
             history, CI logs): treat it as leaked and revoke it."
        ),
        _ => Ok(()),
    }
}

pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn print_key(key: &Value) {
    for field in [
        "id",
        "owner",
        "name",
        "status",
        "apis",
        "scopes",
        "hashing",
        "created_at",
        "expires_at",
        "revoked_at",
        "revoked_reason",
        "rotated_from",
        "replaced_by",
    ] {
        if !key[field].is_null() {
            println!("{field:>15}: {}", text(&key[field]));
        }
    }
    if key["metadata"].as_object().is_some_and(|m| !m.is_empty()) {
        println!("{:>15}: {}", "metadata", key["metadata"]);
    }
}

fn print_propagation(body: &Value) {
    let Some(p) = body.get("propagation").filter(|p| !p.is_null()) else {
        return;
    };
    let edges = p["edges"].as_array().cloned().unwrap_or_default();
    if p["complete"].as_bool() == Some(true) {
        println!("enforced on {} edge(s):", edges.len());
    } else {
        println!("NOT confirmed by every edge before the timeout:");
    }
    for edge in edges {
        let when = edge["latency_ms"]
            .as_f64()
            .map_or("pending".to_owned(), |ms| format!("{ms:.3} ms"));
        println!(
            "  {} ({}): {when}",
            text(&edge["edge"]),
            text(&edge["region"])
        );
    }
}

pub(crate) fn emit(json_output: bool, body: &Value, human: impl FnOnce(&Value)) {
    if json_output {
        println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
    } else {
        human(body);
    }
}

fn wait_query(no_wait: bool, timeout_ms: u64) -> String {
    if no_wait {
        "?wait=none".into()
    } else {
        format!("?wait=all&timeout_ms={timeout_ms}")
    }
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(a) => {
            let metadata = a
                .metadata
                .as_deref()
                .map(serde_json::from_str::<Value>)
                .transpose()
                .context("--metadata is not JSON")?;
            let mut body = json!({"apis": a.apis, "scopes": a.scopes});
            for (field, value) in [
                ("owner", a.owner.map(Value::from)),
                ("name", a.name.map(Value::from)),
                ("expires_in", a.expires_in.map(Value::from)),
                ("expires_at", a.expires_at.map(Value::from)),
                ("issuer", a.issuer.map(Value::from)),
                ("metadata", metadata),
            ] {
                if let Some(value) = value {
                    body[field] = value;
                }
            }
            let created = call(&a.client, Method::POST, "/v1/keys", Some(body)).await?;
            emit(a.client.json, &created, |k| {
                println!("key created: {}", text(&k["id"]));
                println!();
                println!("  {}", text(&k["key"]));
                println!();
                println!("This is the only time the key is shown. Store it now.");
            });
        }
        KeysCommand::List(a) => {
            let mut query = vec![format!("limit={}", a.limit)];
            for (name, value) in [
                ("owner", &a.owner),
                ("status", &a.status),
                ("api", &a.api),
                ("cursor", &a.cursor),
            ] {
                if let Some(value) = value {
                    query.push(format!("{name}={}", urlencode(value)));
                }
            }
            let page = call(
                &a.client,
                Method::GET,
                &format!("/v1/keys?{}", query.join("&")),
                None,
            )
            .await?;
            emit(a.client.json, &page, |p| {
                println!(
                    "{:<12} {:<8} {:<20} {:<24} NAME",
                    "ID", "STATUS", "OWNER", "CREATED"
                );
                for k in p["keys"].as_array().into_iter().flatten() {
                    println!(
                        "{:<12} {:<8} {:<20} {:<24} {}",
                        text(&k["id"]),
                        text(&k["status"]),
                        text(&k["owner"]),
                        text(&k["created_at"]),
                        text(&k["name"])
                    );
                }
                if let Some(next) = p["next_cursor"].as_str() {
                    println!("more: --cursor {next}");
                }
            });
        }
        KeysCommand::Show(a) => {
            let id = given_id(&a.id, "key")?;
            let key = call(&a.client, Method::GET, &format!("/v1/keys/{id}"), None).await?;
            emit(a.client.json, &key, print_key);
        }
        KeysCommand::Revoke(a) => {
            let query = wait_query(a.no_wait, a.timeout_ms);
            let body = match (&a.id, &a.owner, &a.api) {
                (Some(id), _, _) => {
                    let path = format!("/v1/keys/{}/revoke{query}", given_id(id, "key")?);
                    call(
                        &a.client,
                        Method::POST,
                        &path,
                        Some(json!({"reason": a.reason})),
                    )
                    .await?
                }
                (None, owner, api) => {
                    let mut body = json!({"reason": a.reason});
                    if let Some(owner) = owner {
                        body["owner"] = json!(owner);
                    }
                    if let Some(api) = api {
                        body["api"] = json!(api);
                    }
                    call(
                        &a.client,
                        Method::POST,
                        &format!("/v1/revocations{query}"),
                        Some(body),
                    )
                    .await?
                }
            };
            emit(a.client.json, &body, |b| {
                if let Some(key) = b.get("key") {
                    let verb = if b["already_revoked"].as_bool() == Some(true) {
                        "was already revoked"
                    } else {
                        "revoked"
                    };
                    println!(
                        "key {} {verb} at {}",
                        text(&key["id"]),
                        text(&key["revoked_at"])
                    );
                } else {
                    let count = b["revoked"].as_array().map_or(0, Vec::len);
                    println!(
                        "revoked {count} key(s); {} already revoked",
                        text(&b["already_revoked"])
                    );
                }
                print_propagation(b);
            });
        }
        KeysCommand::Rotate(a) => {
            let mut body = json!({"grace_seconds": a.grace});
            if let Some(secs) = a.expires_in {
                body["expires_in"] = json!(secs);
            }
            let path = format!("/v1/keys/{}/rotate", given_id(&a.id, "key")?);
            let rotated = call(&a.client, Method::POST, &path, Some(body)).await?;
            emit(a.client.json, &rotated, |r| {
                println!(
                    "new key {} replaces {}:",
                    text(&r["id"]),
                    text(&r["previous"]["id"])
                );
                println!();
                println!("  {}", text(&r["key"]));
                println!();
                println!(
                    "The old key stops working at {}.",
                    text(&r["previous"]["expires_at"])
                );
                println!("This is the only time the new key is shown. Store it now.");
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn create_token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({"scopes": args.scopes});
    if let Some(owner) = &args.owner {
        body["owner"] = json!(owner);
    }
    let created = call(&args.client, Method::POST, "/v1/tokens", Some(body)).await?;
    emit(args.client.json, &created, |t| {
        println!(
            "token {} with scopes {}:",
            text(&t["id"]),
            text(&t["scopes"])
        );
        println!();
        println!("  {}", text(&t["token"]));
        println!();
        println!("This is the only time the token is shown. Store it now.");
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke_token(args: RevokeTokenArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/tokens/{}/revoke", given_id(&args.id, "token")?);
    let body = call(&args.client, Method::POST, &path, Some(json!({}))).await?;
    emit(args.client.json, &body, |b| {
        if b["already_revoked"].as_bool() == Some(true) {
            println!("token {} was already revoked", text(&b["id"]));
        } else {
            println!("token {} revoked", text(&b["id"]));
        }
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let key = if args.key == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading the key from standard input")?;
        input.trim().to_owned()
    } else {
        args.key.clone()
    };
    let url = format!("{}/v1/verify", args.edge.trim_end_matches('/'));
    let response = http()?
        .post(&url)
        .json(&json!({"key": key, "api": args.api, "scope": args.scope}))
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    if response.status() != StatusCode::OK {
        bail!("the edge answered HTTP {}", response.status().as_u16());
    }
    let body: Value = response.json().await.context("reading the edge's answer")?;
    let valid = body["valid"].as_bool() == Some(true);
    emit(args.json, &body, |b| {
        if valid {
            println!(
                "valid: key {} of {} (scopes: {})",
                text(&b["key_id"]),
                text(&b["owner"]),
                text(&b["scopes"])
            );
        } else {
            println!("invalid: {}", text(&b["reason"]));
        }
    });
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
