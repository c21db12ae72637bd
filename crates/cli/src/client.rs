//! The client commands: talk to the manager or an edge over HTTP and print the answer.

use std::{io::Read, process::ExitCode};

use anyhow::{Context, anyhow, bail};
use quench_api::{
    ErrorResponse,
    edge::{VerifyRequest, VerifyResponse},
    keys::{
        BulkRevocation, BulkRevokeRequest, Confirmation, CreateKeyRequest, CreatedKey, KeyList,
        KeyView, ListQuery, Revocation, RevokeRequest, RotateRequest, Rotation, WaitQuery,
    },
    tokens::{CreateTokenRequest, CreatedToken, TokenRevocation},
};
use quench_core::GivenId;
use reqwest::{Method, StatusCode};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::commands::{
    ClientArgs, CreateArgs, KeysCommand, ListArgs, RevokeArgs, RevokeTokenArgs, RotateArgs,
    ShowArgs, TokenArgs, VerifyArgs,
};

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

/// A successful answer: the body as the server sent it (what `--json` prints) and read as its type.
pub(crate) struct Reply<T> {
    pub raw: Value,
    pub body: T,
}

/// Calls the manager with an optional JSON body; returns the answer of a success, or the API's error as
/// an error.
pub(crate) async fn call<T: DeserializeOwned>(
    args: &ClientArgs,
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> anyhow::Result<Reply<T>> {
    let raw = call_raw(args, method, path, body).await?;
    let body = serde_json::from_value(raw.clone())
        .with_context(|| format!("reading the manager's answer to {path}"))?;
    Ok(Reply { raw, body })
}

/// [`call`], for answers the command does not read.
pub(crate) async fn call_raw(
    args: &ClientArgs,
    method: Method,
    path: &str,
    body: Option<&impl Serialize>,
) -> anyhow::Result<Value> {
    let url = format!("{}{path}", args.server.trim_end_matches('/'));
    let mut request = http()?.request(method, &url).bearer_auth(token(args)?);
    if let Some(body) = body {
        request = request.json(body);
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
    let (message, code) = match serde_json::from_value::<ErrorResponse>(body) {
        Ok(ErrorResponse { error }) => (error.message, error.code),
        Err(_) => ("no details".to_owned(), "error".to_owned()),
    };
    bail!("{message} ({code}, HTTP {})", status.as_u16())
}

/// No request body.
pub(crate) const NO_BODY: Option<&()> = None;

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

/// An optional value as the human output shows it: `-` when absent.
pub(crate) fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// A list as the human output shows it: comma-separated, `-` when empty.
pub(crate) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(",")
    }
}

/// `path?name=value&...` for the query parameters that are present (absent ones are left out).
pub(crate) fn with_query(path: &str, query: &impl Serialize) -> anyhow::Result<String> {
    let Value::Object(fields) = serde_json::to_value(query).context("encoding the query")? else {
        bail!("a query is a set of named parameters");
    };
    let pairs: Vec<String> = fields
        .iter()
        .filter_map(|(name, value)| match value {
            Value::Null => None,
            Value::String(text) => Some(format!("{name}={}", urlencode(text))),
            other => Some(format!("{name}={}", urlencode(&other.to_string()))),
        })
        .collect();
    Ok(if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    })
}

fn print_key(key: &KeyView) {
    let fields = [
        ("id", Some(key.id.clone())),
        ("owner", Some(key.owner.clone())),
        ("name", key.name.clone()),
        ("status", Some(key.status.clone())),
        ("apis", Some(list(&key.apis))),
        ("scopes", Some(list(&key.scopes))),
        ("hashing", Some(key.hashing.clone())),
        ("created_at", Some(key.created_at.clone())),
        ("expires_at", key.expires_at.clone()),
        ("revoked_at", key.revoked_at.clone()),
        ("revoked_reason", key.revoked_reason.clone()),
        ("rotated_from", key.rotated_from.clone()),
        ("replaced_by", key.replaced_by.clone()),
    ];
    for (field, value) in fields {
        if let Some(value) = value {
            println!("{field:>15}: {value}");
        }
    }
    if !key.metadata.is_empty() {
        println!(
            "{:>15}: {}",
            "metadata",
            Value::Object(key.metadata.clone())
        );
    }
}

fn print_propagation(propagation: Option<&Confirmation>) {
    let Some(p) = propagation else {
        return;
    };
    if p.complete {
        println!("enforced on {} edge(s):", p.edges.len());
    } else {
        println!("NOT confirmed by every edge before the timeout:");
    }
    for edge in &p.edges {
        let when = edge
            .latency_ms
            .map_or("pending".to_owned(), |ms| format!("{ms:.3} ms"));
        println!("  {} ({}): {when}", edge.edge, edge.region);
    }
}

/// Prints the answer: as the server sent it with `--json`, else for people.
pub(crate) fn emit<T>(json_output: bool, reply: &Reply<T>, human: impl FnOnce(&T)) {
    if json_output {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply.raw).unwrap_or_default()
        );
    } else {
        human(&reply.body);
    }
}

fn wait_query(no_wait: bool, timeout_ms: u64) -> WaitQuery {
    if no_wait {
        WaitQuery {
            wait: Some("none".into()),
            timeout_ms: None,
        }
    } else {
        WaitQuery {
            wait: Some("all".into()),
            timeout_ms: Some(timeout_ms),
        }
    }
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(a) => create_key(a).await?,
        KeysCommand::List(a) => list_keys(a).await?,
        KeysCommand::Show(a) => show_key(a).await?,
        KeysCommand::Revoke(a) => revoke_keys(a).await?,
        KeysCommand::Rotate(a) => rotate_key(a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The create request `quench keys create` sends.
fn create_request(a: &CreateArgs) -> anyhow::Result<CreateKeyRequest> {
    let metadata = a
        .metadata
        .as_deref()
        .map(serde_json::from_str::<serde_json::Map<String, Value>>)
        .transpose()
        .context("--metadata is not a JSON object")?;
    Ok(CreateKeyRequest {
        owner: a.owner.clone(),
        name: a.name.clone(),
        apis: a.apis.clone(),
        scopes: a.scopes.clone(),
        expires_at: a.expires_at.clone(),
        expires_in: a.expires_in,
        metadata,
        issuer: a.issuer.clone(),
    })
}

async fn create_key(a: CreateArgs) -> anyhow::Result<()> {
    let request = create_request(&a)?;
    let created: Reply<CreatedKey> =
        call(&a.client, Method::POST, "/v1/keys", Some(&request)).await?;
    emit(a.client.json, &created, |k| {
        println!("key created: {}", k.view.id);
        println!();
        println!("  {}", k.key);
        println!();
        println!("This is the only time the key is shown. Store it now.");
    });
    Ok(())
}

/// The page `quench keys list` asks for.
fn list_path(a: &ListArgs) -> anyhow::Result<String> {
    let query = ListQuery {
        owner: a.owner.clone(),
        status: a.status.clone(),
        api: a.api.clone(),
        limit: Some(a.limit),
        cursor: a.cursor.clone(),
    };
    with_query("/v1/keys", &query)
}

async fn list_keys(a: ListArgs) -> anyhow::Result<()> {
    let page: Reply<KeyList> = call(&a.client, Method::GET, &list_path(&a)?, NO_BODY).await?;
    emit(a.client.json, &page, |p| {
        println!(
            "{:<12} {:<8} {:<20} {:<24} NAME",
            "ID", "STATUS", "OWNER", "CREATED"
        );
        for k in &p.keys {
            println!(
                "{:<12} {:<8} {:<20} {:<24} {}",
                k.id,
                k.status,
                k.owner,
                k.created_at,
                or_dash(k.name.as_deref())
            );
        }
        if let Some(next) = &p.next_cursor {
            println!("more: --cursor {next}");
        }
    });
    Ok(())
}

async fn show_key(a: ShowArgs) -> anyhow::Result<()> {
    let id = given_id(&a.id, "key")?;
    let key: Reply<KeyView> =
        call(&a.client, Method::GET, &format!("/v1/keys/{id}"), NO_BODY).await?;
    emit(a.client.json, &key, print_key);
    Ok(())
}

/// What `quench keys revoke` sends: one key's revocation, or a bulk one by owner or API.
#[derive(Debug)]
enum RevokeCall {
    One {
        path: String,
        body: RevokeRequest,
    },
    Bulk {
        path: String,
        body: BulkRevokeRequest,
    },
}

fn revoke_call(a: &RevokeArgs) -> anyhow::Result<RevokeCall> {
    let wait = wait_query(a.no_wait, a.timeout_ms);
    Ok(match &a.id {
        Some(id) => RevokeCall::One {
            path: with_query(&format!("/v1/keys/{}/revoke", given_id(id, "key")?), &wait)?,
            body: RevokeRequest {
                reason: a.reason.clone(),
            },
        },
        None => RevokeCall::Bulk {
            path: with_query("/v1/revocations", &wait)?,
            body: BulkRevokeRequest {
                owner: a.owner.clone(),
                api: a.api.clone(),
                ids: None,
                reason: a.reason.clone(),
            },
        },
    })
}

async fn revoke_keys(a: RevokeArgs) -> anyhow::Result<()> {
    match revoke_call(&a)? {
        RevokeCall::One { path, body } => {
            let revoked: Reply<Revocation> =
                call(&a.client, Method::POST, &path, Some(&body)).await?;
            emit(a.client.json, &revoked, |r| {
                let verb = if r.already_revoked {
                    "was already revoked"
                } else {
                    "revoked"
                };
                let at = or_dash(r.key.revoked_at.as_deref());
                println!("key {} {verb} at {at}", r.key.id);
                print_propagation(r.propagation.as_ref());
            });
        }
        RevokeCall::Bulk { path, body } => {
            let revoked: Reply<BulkRevocation> =
                call(&a.client, Method::POST, &path, Some(&body)).await?;
            emit(a.client.json, &revoked, |b| {
                println!(
                    "revoked {} key(s); {} already revoked",
                    b.revoked.len(),
                    b.already_revoked
                );
                print_propagation(b.propagation.as_ref());
            });
        }
    }
    Ok(())
}

async fn rotate_key(a: RotateArgs) -> anyhow::Result<()> {
    let body = RotateRequest {
        grace_seconds: a.grace,
        expires_at: None,
        expires_in: a.expires_in,
    };
    let path = format!("/v1/keys/{}/rotate", given_id(&a.id, "key")?);
    let rotated: Reply<Rotation> = call(&a.client, Method::POST, &path, Some(&body)).await?;
    emit(a.client.json, &rotated, |r| {
        println!("new key {} replaces {}:", r.new.view.id, r.previous.id);
        println!();
        println!("  {}", r.new.key);
        println!();
        println!(
            "The old key stops working at {}.",
            or_dash(r.previous.expires_at.as_deref())
        );
        println!("This is the only time the new key is shown. Store it now.");
    });
    Ok(())
}

pub async fn create_token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let body = CreateTokenRequest {
        scopes: args.scopes.clone(),
        owner: args.owner.clone(),
    };
    let created: Reply<CreatedToken> =
        call(&args.client, Method::POST, "/v1/tokens", Some(&body)).await?;
    emit(args.client.json, &created, |t| {
        println!("token {} with scopes {}:", t.id, list(&t.scopes));
        println!();
        println!("  {}", t.token);
        println!();
        println!("This is the only time the token is shown. Store it now.");
    });
    Ok(ExitCode::SUCCESS)
}

pub async fn revoke_token(args: RevokeTokenArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/tokens/{}/revoke", given_id(&args.id, "token")?);
    // The endpoint takes an empty object.
    let empty = serde_json::Map::new();
    let revoked: Reply<TokenRevocation> =
        call(&args.client, Method::POST, &path, Some(&empty)).await?;
    emit(args.client.json, &revoked, |t| {
        if t.already_revoked {
            println!("token {} was already revoked", t.id);
        } else {
            println!("token {} revoked", t.id);
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
    let request = VerifyRequest {
        key,
        api: args.api.clone(),
        scope: args.scope.clone(),
        client_ip: None,
    };
    let url = format!("{}/v1/verify", args.edge.trim_end_matches('/'));
    let response = http()?
        .post(&url)
        .json(&request)
        .send()
        .await
        .with_context(|| format!("calling {url}"))?;
    if response.status() != StatusCode::OK {
        bail!("the edge answered HTTP {}", response.status().as_u16());
    }
    let raw: Value = response.json().await.context("reading the edge's answer")?;
    let body: VerifyResponse =
        serde_json::from_value(raw.clone()).context("reading the edge's answer")?;
    let valid = body.valid;
    emit(args.json, &Reply { raw, body }, |b| {
        if b.valid {
            println!(
                "valid: key {} of {} (scopes: {})",
                b.key_id.map_or("-".to_owned(), |id| id.to_string()),
                or_dash(b.owner.as_deref()),
                list(b.scopes.as_deref().unwrap_or_default())
            );
        } else {
            println!("invalid: {}", b.reason.map_or("-", |r| r.as_str()));
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    fn client() -> ClientArgs {
        ClientArgs {
            server: "http://127.0.0.1:7600".into(),
            token: None,
            data_dir: PathBuf::new(),
            json: false,
        }
    }

    #[test]
    fn create_sends_only_what_was_given() {
        let args = CreateArgs {
            owner: Some("team-a".into()),
            name: None,
            apis: vec!["billing".into()],
            scopes: vec![],
            expires_in: Some(60),
            expires_at: None,
            metadata: Some(r#"{"ticket": 7}"#.into()),
            issuer: None,
            client: client(),
        };
        let body = serde_json::to_value(create_request(&args).expect("request")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"owner": "team-a", "apis": ["billing"], "scopes": [],
                "expires_in": 60, "metadata": {"ticket": 7}})
        );
        let bad = CreateArgs {
            metadata: Some("[1]".into()),
            ..args
        };
        assert!(create_request(&bad).is_err());
    }

    #[test]
    fn revoking_one_key_or_many_picks_the_endpoint() {
        let args = RevokeArgs {
            id: None,
            owner: Some("team a".into()),
            api: None,
            reason: "leaked".into(),
            no_wait: true,
            timeout_ms: 2000,
            client: client(),
        };
        let RevokeCall::Bulk { path, body } = revoke_call(&args).expect("call") else {
            panic!("a bulk revocation");
        };
        assert_eq!(path, "/v1/revocations?wait=none");
        assert_eq!(
            serde_json::to_value(body).expect("json"),
            serde_json::json!({"owner": "team a", "reason": "leaked"})
        );
        let one = RevokeArgs {
            id: Some("0123456789".into()),
            no_wait: false,
            ..args
        };
        let RevokeCall::One { path, body } = revoke_call(&one).expect("call") else {
            panic!("one key's revocation");
        };
        let (base, query) = path.split_once('?').expect("a query");
        assert_eq!(base, "/v1/keys/0123456789/revoke");
        let mut params: Vec<&str> = query.split('&').collect();
        params.sort_unstable();
        assert_eq!(params, ["timeout_ms=2000", "wait=all"]);
        assert_eq!(body.reason, "leaked");
    }

    proptest! {
        /// Every present parameter is sent once, encoded so that it reads back as given.
        #[test]
        fn queries_carry_every_present_parameter(
            owner in proptest::option::of(".{0,12}"),
            cursor in proptest::option::of("[0-9]{1,19}"),
            limit in 1u32..1000,
        ) {
            let args = ListArgs { owner: owner.clone(), status: None, api: None, limit, cursor: cursor.clone(), client: client() };
            let path = list_path(&args).expect("path");
            let (base, query) = path.split_once('?').expect("a query");
            prop_assert_eq!(base, "/v1/keys");
            let pairs: Vec<(String, String)> = query
                .split('&')
                .map(|pair| {
                    let (name, value) = pair.split_once('=').expect("name=value");
                    (name.to_owned(), percent_decode(value))
                })
                .collect();
            let expected = [("limit", Some(limit.to_string())), ("owner", owner), ("cursor", cursor)];
            for (name, value) in expected {
                let sent: Vec<&String> = pairs.iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect();
                prop_assert_eq!(sent, value.as_ref().into_iter().collect::<Vec<_>>());
            }
            prop_assert_eq!(pairs.len(), 1 + usize::from(args.owner.is_some()) + usize::from(args.cursor.is_some()));
        }
    }

    fn percent_decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }
}
