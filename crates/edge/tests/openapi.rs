//! The edge's OpenAPI document, served at `GET /openapi.json`, is the contract proxies and clients code
//! against: this snapshot shows every change to it in review, and `scripts/contract` holds the running edge
//! to it. Regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p quench-edge --test openapi`.

use std::collections::BTreeSet;

use quench_api::web;
use quench_edge::{EdgeConfig, Replica, http};
use serde_json::Value;

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

/// Serves a fresh edge's API on a free loopback port; the server stops with the test's runtime.
async fn spawn_edge() -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = http::router(Replica::new(EdgeConfig::default()));
    tokio::spawn(web::serve(listener, router, std::future::pending()));
    format!("http://{addr}")
}

#[tokio::test]
async fn openapi_document_matches_the_snapshot() {
    let base = spawn_edge().await;
    let response = reqwest::Client::new()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.expect("json");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    let rendered = serde_json::to_string_pretty(&served).expect("json") + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, &rendered).expect("write snapshot");
    }
    let stored =
        std::fs::read_to_string(&path).expect("snapshot exists; run with UPDATE_SNAPSHOTS=1");
    let stored: Value = serde_json::from_str(&stored).expect("snapshot is JSON");
    assert_eq!(
        served, stored,
        "the edge API contract changed; review and regenerate the snapshot"
    );
    let mut documented = BTreeSet::new();
    for (path, item) in served["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if METHODS.contains(&method.as_str()) {
                documented.insert((path.clone(), method.clone()));
            }
        }
    }
    let declared = declared_routes(include_str!("../src/http.rs"));
    assert!(declared.len() > 5, "found the routes: {declared:?}");
    assert_eq!(documented, declared, "documented routes against router()");
    for (path, method) in [
        ("/v1/verify", "post"),
        ("/auth", "get"),
        ("/auth", "post"),
        ("/auth/{path}", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            served["paths"][path][method].is_object(),
            "{method} {path} missing from the document"
        );
    }
}

/// The running router agrees with the document: each documented method reaches a handler, any other
/// is a 405.
#[tokio::test]
async fn documented_methods_are_served_and_others_refused() {
    let base = spawn_edge().await;
    let client = reqwest::Client::new();
    let document: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    for (path, item) in document["paths"].as_object().expect("paths") {
        let concrete = path.replace("{path}", "x");
        for method in ["get", "post", "put", "delete", "patch"] {
            let verb = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("verb");
            let response = client
                .request(verb, format!("{base}{concrete}"))
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            if item[method].is_object() {
                assert_ne!(status, 405, "{method} {path}: {body}");
                assert!(!body.contains("no such endpoint"), "{method} {path}");
            } else {
                assert_eq!(status, 405, "{method} {path}: {body}");
            }
        }
    }
}

/// What the document says `/auth` answers is what it answers: 401 with the reason and a challenge.
#[tokio::test]
async fn forward_auth_answers_as_documented() {
    let base = spawn_edge().await;
    let client = reqwest::Client::new();
    let document: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let refusal = &document["paths"]["/auth"]["get"]["responses"]["401"]["headers"];
    assert!(refusal["WWW-Authenticate"].is_object());
    let answer = client
        .get(format!("{base}/auth"))
        .send()
        .await
        .expect("request");
    assert_eq!(answer.status(), 401);
    assert!(answer.headers().contains_key("www-authenticate"));
    assert_eq!(answer.headers()["x-quench-reason"], "missing");
}
