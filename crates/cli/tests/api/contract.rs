//! The OpenAPI document is a contract: what it bounds, the server refuses, and what it allows, the server
//! accepts. `scripts/contract` checks this with generated requests; these tests pin the cases that were
//! once wrong (query parameters documented as path parameters, `limit` maxima documented but never applied,
//! trailing control characters in a reason, `5.0` refused where the schema says `integer`).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// The methods an OpenAPI path item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `(path, method)` for every route `router()` in `source` declares: `.route("/p", get(a).post(b))`.
/// Axum's `{*rest}` is written `{rest}` as in the document; `any(..)` stands for every method.
fn declared_routes(source: &str) -> BTreeSet<(String, String)> {
    let router = source.split("pub fn router(").nth(1).expect("router()");
    let router = router.split("web::finish(").next().expect("its end");
    let mut routes = BTreeSet::new();
    for declaration in router.split(".route(").skip(1) {
        let mut quoted = declaration.splitn(3, '"');
        let path = quoted.nth(1).expect("a path literal").replace("{*", "{");
        let handlers = quoted.next().unwrap_or("");
        let called = |name: &str| {
            handlers.match_indices(&format!("{name}(")).any(|(at, _)| {
                let before = handlers[..at].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            })
        };
        for method in METHODS {
            if called(method) || called("any") {
                routes.insert((path.clone(), method.to_owned()));
            }
        }
    }
    routes
}

fn documented_routes(document: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if METHODS.contains(&method.as_str()) {
                routes.insert((path.clone(), method.clone()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_the_router_serves() {
    let app = spawn_app().await;
    let document = app
        .send(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    let documented = documented_routes(&document);
    let declared = declared_routes(include_str!("../../../manager/src/api/mod.rs"));
    assert!(declared.len() > 20, "found the routes: {declared:?}");
    assert_eq!(documented, declared, "documented routes against router()");
    // And the running router agrees: each documented method reaches a handler, any other is a 405.
    let paths: BTreeSet<&String> = documented.iter().map(|(path, _)| path).collect();
    for path in paths {
        let concrete = path.replace("{id}", "0000000000");
        for method in ["get", "post", "put", "delete", "patch"] {
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let reply = app.send(verb, &concrete, Some(&app.token), None).await;
            if documented.contains(&(path.clone(), method.to_owned())) {
                assert_ne!(reply.status, 405, "{method} {path}: {}", reply.body);
                assert_ne!(
                    reply.body["error"]["message"], "no such endpoint",
                    "{method} {path}"
                );
            } else {
                assert_eq!(reply.status, 405, "{method} {path}: {}", reply.body);
            }
        }
    }
}

fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

fn references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                out.push(target.clone());
            }
            map.values().for_each(|v| references(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_parameter_is_documented_where_the_server_reads_it() {
    let app = spawn_app().await;
    let document = app
        .send(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("name");
                match parameter["in"].as_str().expect("in") {
                    "path" => assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: `{name}` is documented in the path but is not in it"
                    ),
                    "query" => assert_eq!(
                        parameter["required"], false,
                        "{method} {path}: query parameter `{name}` is optional"
                    ),
                    "header" => assert!(
                        name.starts_with("Github-Public-Key-"),
                        "{method} {path}: header `{name}`: the API reads no other"
                    ),
                    other => panic!("{method} {path}: `{name}` in {other}"),
                }
            }
        }
    }
    let mut targets = Vec::new();
    references(&document, &mut targets);
    assert!(!targets.is_empty());
    for target in targets {
        assert!(
            resolve(&document, &target).is_some(),
            "{target} does not resolve"
        );
    }
}

#[tokio::test]
async fn query_parameters_outside_their_documented_range_are_refused() {
    let app = spawn_app().await;
    for query in [
        "/v1/keys?limit=0",
        "/v1/keys?limit=1001",
        "/v1/alerts?limit=1001",
        "/v1/audit?limit=1001",
        "/v1/events?limit=1001",
        "/v1/events?after=9223372036854775808",
        "/v1/keys?cursor=abc",
        "/v1/keys?cursor=%2B5",
        "/v1/keys?cursor=12345678901234567890",
        "/v1/keys?status=lost",
        "/v1/keys?owner=has%20space",
    ] {
        let reply = app.get(query).await;
        assert_eq!(reply.code(), "invalid_request", "{query}");
        reply.expect(422);
    }
    for query in [
        "/v1/keys?limit=1000",
        "/v1/keys?cursor=1234567890123456789",
        "/v1/events?after=9223372036854775807",
    ] {
        app.get(query).await.expect(200);
    }
    let (id, _) = app.new_key("team-a").await;
    for query in ["wait=sometimes", "timeout_ms=60001"] {
        app.post(
            &format!("/v1/keys/{id}/revoke?{query}"),
            json!({"reason": "x"}),
        )
        .await
        .expect(422);
    }
}

#[tokio::test]
async fn bodies_are_held_to_their_schemas() {
    let app = spawn_app().await;
    let (id, _) = app.new_key("team-a").await;
    // A reason is checked as sent: a trailing newline or an overlong padded reason is refused.
    for reason in [
        "compromised\n".to_owned(),
        format!(" {} ", "r".repeat(499)),
        "   ".to_owned(),
    ] {
        app.post(
            &format!("/v1/keys/{id}/revoke"),
            json!({ "reason": reason }),
        )
        .await
        .expect(422);
    }
    // Exactly one selector: `null` is not "absent" there.
    app.post(
        "/v1/revocations",
        json!({"owner": "team-a", "api": null, "reason": "x"}),
    )
    .await
    .expect(422);
    // `integer` in the schema: 3600.0 is 3600, 1.5 is refused.
    app.create_key(json!({"owner": "team-a", "expires_in": 3600.0}))
        .await;
    app.post("/v1/keys", json!({"owner": "team-a", "expires_in": 1.5}))
        .await
        .expect(422);
    app.post(
        &format!("/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 0.5}),
    )
    .await
    .expect(422);
    app.post(
        &format!("/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 60.0}),
    )
    .await
    .expect(201);
    // Webhook URLs the document's pattern excludes are refused (none is contacted).
    for url in [
        "https://hooks.example.com/a#fragment",
        "https://hooks.example.t*",
        "http://[::1]:9/hook",
        "https://hooks.example.com:65536/",
        "ftp://hooks.example.com/",
        " https://hooks.example.com/",
    ] {
        let reply = app.post("/v1/webhooks", json!({ "url": url })).await;
        assert_eq!(reply.code(), "invalid_request", "{url}");
        reply.expect(422);
    }
    let hooks = app.get("/v1/webhooks").await.expect(200);
    assert_eq!(hooks["webhooks"], json!([]));
}
