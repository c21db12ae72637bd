//! The manager's and the edge's HTTP APIs, driven in process through their real routers (extractors,
//! authentication, handlers, a SQLite store in memory): whatever a client sends is answered, never with a
//! 5xx, and every refusal is the JSON error body `{"error": {"code", "message"}}`.
//!
//! The input picks a route (first byte), how the request is authenticated and labelled (second byte),
//! then gives the route's path parameter and query (up to the first newline: the part before a `?` is the
//! path parameter, percent-encoded whole; the part after it is the query) and the body (the rest).
//! Requests authenticate with the manager's first admin token unless the input chooses none or a wrong
//! one. Mutations run with `wait=none` (the fuzzer may not choose its own `wait`: a second `wait` is a
//! duplicate field and refused), so no request waits for edges; no edge is ever live here anyway.
//!
//! Not driven: `POST /v1/webhooks` (a webhook's URL is fetched by the dispatcher, which must not run
//! against fuzzer-chosen hosts) and the GitHub partner endpoint (the `github` target reads its body).
//! Nothing here opens a socket: requests go straight into the routers.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use quench_cli::embedded;
use quench_core::Timestamp;
use quench_edge::{EdgeConfig, Replica};
use quench_manager::{Manager, ManagerConfig, api, bootstrap};
use quench_store::{Store, sqlite::SqliteStore};
use tower::ServiceExt;

struct Nodes {
    runtime: tokio::runtime::Runtime,
    manager: Router,
    edge: Router,
    replica: Arc<Replica>,
    token: String,
    _dir: tempfile::TempDir,
}

/// One manager and one edge for the whole run: building them takes far longer than a request.
fn nodes() -> &'static Nodes {
    static NODES: OnceLock<Nodes> = OnceLock::new();
    NODES.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (manager, token) = runtime.block_on(async {
            // In memory, shared by the pool's connections: a request costs no disk write.
            let name = format!("quench-fuzz-{}", std::process::id());
            let store =
                SqliteStore::open_url(&format!("sqlite:file:{name}?mode=memory&cache=shared"))
                    .await
                    .expect("an in-memory store");
            let store: Arc<dyn Store> = Arc::new(store);
            let token = bootstrap::first_token(&*store, dir.path())
                .await
                .expect("bootstrap")
                .expect("a fresh store issues the first token");
            // Not started: no heartbeats, no acknowledgements, no webhook deliveries.
            let manager = Manager::new(store, embedded::in_process_bus(), ManagerConfig::default());
            (api::router(manager), token)
        });
        let replica = Replica::new(EdgeConfig::default());
        replica.mark_ready();
        Nodes {
            runtime,
            manager,
            edge: quench_edge::http::router(replica.clone()),
            replica,
            token,
            _dir: dir,
        }
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Node {
    Manager,
    Edge,
}

/// A route: node, method, path (`{}` is the path parameter), whether it takes `wait`.
struct Route(Node, Method, &'static str, bool);

fn routes() -> [Route; 19] {
    use Node::{Edge, Manager};
    [
        Route(Manager, Method::POST, "/v1/keys", true),
        Route(Manager, Method::GET, "/v1/keys", false),
        Route(Manager, Method::GET, "/v1/keys/{}", false),
        Route(Manager, Method::POST, "/v1/keys/{}/revoke", true),
        Route(Manager, Method::POST, "/v1/keys/{}/rotate", true),
        Route(Manager, Method::POST, "/v1/revocations", true),
        Route(Manager, Method::POST, "/v1/leaks", true),
        Route(Manager, Method::POST, "/v1/alerts", false),
        Route(Manager, Method::GET, "/v1/alerts", false),
        Route(Manager, Method::POST, "/v1/tokens", false),
        Route(Manager, Method::POST, "/v1/tokens/{}/revoke", false),
        Route(Manager, Method::GET, "/v1/events", false),
        Route(Manager, Method::POST, "/v1/edges", false),
        Route(Manager, Method::GET, "/v1/audit", false),
        Route(Manager, Method::GET, "/v1/webhooks/{}/deliveries", false),
        Route(Manager, Method::DELETE, "/v1/webhooks/{}", false),
        Route(Manager, Method::GET, "/v1/usage-policy", false),
        Route(Edge, Method::POST, "/v1/verify", false),
        Route(Edge, Method::GET, "/auth/{}", false),
    ]
}

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    answer(data);
}

/// Runs one input and returns the status it was answered with (`None` if the input makes no request);
/// panics if a property fails.
pub fn answer(data: &[u8]) -> Option<u16> {
    let [route, flags, rest @ ..] = data else {
        return None;
    };
    let routes = routes();
    let Route(node, method, template, waits) = &routes[usize::from(*route) % routes.len()];
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let (param, query) = match head.iter().position(|&b| b == b'?') {
        Some(at) => (&head[..at], &head[at + 1..]),
        None => (head, &[][..]),
    };
    let mut uri = template.replace("{}", &encode(param, false));
    let mut query = encode(query, true);
    if *waits {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("wait=none");
    }
    if !query.is_empty() {
        uri = format!("{uri}?{query}");
    }

    let nodes = nodes();
    let mut request = Request::builder().method(method.clone()).uri(&uri);
    let auth = match flags & 3 {
        0 | 1 => Some(format!("Bearer {}", nodes.token)),
        2 => None,
        _ => Some("Bearer qm_not-a-token".to_owned()),
    };
    if *node == Node::Edge {
        // The edge's forward-auth reads the key from a header: the body's first line, if it is one.
        if let Some(key) = std::str::from_utf8(body)
            .ok()
            .and_then(|text| text.lines().next())
            .filter(|_| flags & 16 == 0)
        {
            request = request.header("x-api-key", key);
        }
    } else if let Some(auth) = &auth {
        request = request.header(header::AUTHORIZATION, auth);
    }
    request = match (flags >> 2) & 3 {
        0 | 1 => request.header(header::CONTENT_TYPE, "application/json"),
        2 => request,
        _ => request.header(header::CONTENT_TYPE, "text/plain; charset=utf-8"),
    };
    let Ok(mut request) = request.body(Body::from(body.to_vec())) else {
        // A header value the HTTP library refuses (a control character): no client can send it.
        return None;
    };
    let peer: SocketAddr = ([127, 0, 0, 1], 40_000).into();
    request.extensions_mut().insert(ConnectInfo(peer));

    let router = match node {
        Node::Manager => nodes.manager.clone(),
        Node::Edge => {
            nodes.replica.heard_manager(Timestamp::now());
            nodes.edge.clone()
        }
    };
    let (status, content_type, bytes) = nodes.runtime.block_on(async {
        let response = router
            .oneshot(request)
            .await
            .expect("routers are infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("a response body is read");
        (status, content_type, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !status.is_server_error(),
        "{method} {uri} answered {status}: {text}"
    );
    if *node == Node::Edge && template.starts_with("/auth") {
        // Forward-auth answers with a status and headers only.
        return Some(status.as_u16());
    }
    if status == StatusCode::NO_CONTENT {
        assert!(bytes.is_empty(), "{method} {uri}: 204 with a body");
        return Some(status.as_u16());
    }
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{method} {uri} answered {status} without JSON: {text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("{method} {uri} answered {status} with invalid JSON ({e}): {text}")
    });
    if status.is_client_error() {
        assert!(
            json["error"]["code"].is_string() && json["error"]["message"].is_string(),
            "{method} {uri} answered {status} without the error body: {text}"
        );
    } else {
        assert!(status.is_success(), "{method} {uri} answered {status}");
    }
    Some(status.as_u16())
}

/// Percent-encodes what may not appear as is: everything but unreserved characters, and in a query also
/// `=` and `&` (so the input can shape it) and `+`.
fn encode(bytes: &[u8], query: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (query && matches!(b, b'=' | b'&' | b'+' | b','));
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
