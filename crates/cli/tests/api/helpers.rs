//! Spawns the whole embedded node on port-0 listeners with a fresh SQLite file, and talks to it over
//! HTTP like a user would.

use std::{sync::Arc, time::Duration};

use quench_cli::embedded;
use quench_edge::EdgeConfig;
use quench_manager::{ManagerConfig, bootstrap};
use quench_store::{Store, sqlite::SqliteStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub admin: String,
    pub edge: String,
    pub token: String,
    pub http: reqwest::Client,
    pub cancel: CancellationToken,
    pub _running: embedded::Running,
    pub _dir: tempfile::TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(ManagerConfig::default()).await
}

pub async fn spawn_with(config: ManagerConfig) -> TestApp {
    spawn_seeded(config, async |_: &dyn Store| {}).await
}

/// [`spawn_with`], with `seed` writing to the fresh store before the manager starts.
pub async fn spawn_seeded(config: ManagerConfig, seed: impl AsyncFnOnce(&dyn Store)) -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("quench.db"))
        .await
        .expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let token = bootstrap::first_token(&*store, dir.path())
        .await
        .expect("bootstrap")
        .expect("first start issues a token");
    seed(&*store).await;
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let edge = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_url = format!("http://{}", admin.local_addr().expect("addr"));
    let edge_url = format!("http://{}", edge.local_addr().expect("addr"));
    let cancel = CancellationToken::new();
    let running = embedded::start(
        store,
        embedded::in_process_bus(),
        config,
        admin,
        Some(embedded::EmbeddedEdge {
            config: EdgeConfig {
                id: "embedded".into(),
                ..EdgeConfig::default()
            },
            listener: edge,
        }),
        cancel.clone(),
    )
    .await
    .expect("start");
    let app = TestApp {
        admin: admin_url,
        edge: edge_url,
        token,
        http: reqwest::Client::new(),
        cancel,
        _running: running,
        _dir: dir,
    };
    app.wait_until_edge_ready().await;
    app
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// Asserts the status and, for errors, the JSON error shape.
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        if status >= 400 {
            assert!(
                self.body["error"]["code"].is_string(),
                "error body: {}",
                self.body
            );
            assert!(
                self.body["error"]["message"].is_string(),
                "error body: {}",
                self.body
            );
        }
        self.body
    }

    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(&self.token), None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(&self.token), Some(body))
            .await
    }

    /// A raw body with a content type, for malformed-input tests.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let response = self
            .http
            .post(format!("{}{path}", self.admin))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let text = response.text().await.expect("body");
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    pub async fn create_key(&self, body: Value) -> Value {
        self.post("/v1/keys", body).await.expect(201)
    }

    pub async fn new_key(&self, owner: &str) -> (String, String) {
        let created = self
            .create_key(json!({"owner": owner, "apis": ["orders"], "scopes": ["read"]}))
            .await;
        (
            created["id"].as_str().expect("id").to_owned(),
            created["key"].as_str().expect("key").to_owned(),
        )
    }

    pub async fn token_with(&self, scopes: &[&str], owner: Option<&str>) -> String {
        let mut body = json!({"scopes": scopes});
        if let Some(owner) = owner {
            body["owner"] = json!(owner);
        }
        let created = self.post("/v1/tokens", body).await.expect(201);
        created["token"].as_str().expect("token").to_owned()
    }

    pub async fn verify(&self, key: &str, api: Option<&str>, scope: Option<&str>) -> Value {
        let response = self
            .http
            .post(format!("{}/v1/verify", self.edge))
            .json(&json!({"key": key, "api": api, "scope": scope}))
            .send()
            .await
            .expect("verify");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    }

    async fn wait_until_edge_ready(&self) {
        for _ in 0..200 {
            let ok = self
                .http
                .get(format!("{}/healthz", self.edge))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the embedded edge did not become ready");
    }
}
