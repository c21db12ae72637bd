//! Webhooks as a port scanner, tried through the API: targets on loopback, link-local and private
//! addresses, by literal, by name and by a name rebound to 127.0.0.1; what a confined token learns from
//! deliveries; credentials in URLs.
//!
//! Only loopback is ever connected to. Loopback targets get a listener that counts connections, so
//! "refused" is proved by zero connections; other targets (169.254.169.254, 10.0.0.1, ...) come from a
//! literal or from the test's own resolver, and the guard refuses them before any socket exists.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use quench_core::Timestamp;
use quench_manager::{
    ManagerConfig,
    webhooks::{
        connect::WebhookResolver,
        guard::{AddressGuard, Cidr},
    },
};
use quench_store::{Store, WebhookRecord};
use reqwest::{
    Method,
    dns::{Addrs, Name, Resolve, Resolving},
};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, spawn_seeded, spawn_with},
    webhooks::{Receiver, quick, revoke},
};

const REFUSED: &str = "refused by the address guard";

/// A loopback listener that only counts the connections it gets.
struct Tally {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Tally {
    async fn start(address: &str) -> Option<Self> {
        let listener = tokio::net::TcpListener::bind(address).await.ok()?;
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((_stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        Some(Self { port, connections })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A resolver that answers from a fixed table, as an attacker's DNS server would: public-looking names
/// with whatever address the attacker likes.
struct Table(HashMap<&'static str, IpAddr>);

impl Resolve for Table {
    fn resolve(&self, name: Name) -> Resolving {
        let found = self.0.get(name.as_str()).copied();
        Box::pin(async move {
            let ip = found.ok_or("no such name")?;
            let addrs: Addrs = Box::new(std::iter::once(SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

fn with_resolver(mut config: ManagerConfig, names: &[(&'static str, &str)]) -> ManagerConfig {
    let table = names
        .iter()
        .map(|(name, ip)| (*name, ip.parse().expect("address")))
        .collect();
    config.webhooks.resolver = WebhookResolver(Arc::new(Table(table)));
    config
}

/// [`quick`] without the loopback allowance: the default guard.
fn guarded() -> ManagerConfig {
    let mut config = quick();
    config.webhooks.guard = AddressGuard::default();
    config
}

async fn create(app: &TestApp, token: &str, url: &str) -> Value {
    app.send(
        Method::POST,
        "/v1/webhooks",
        Some(token),
        Some(json!({"url": url, "events": ["key.revoked"]})),
    )
    .await
    .expect(201)
}

/// The newest delivery of `hook` as `token` sees it, once its first attempt has been recorded.
async fn first_outcome(app: &TestApp, token: &str, hook: &str) -> Value {
    for _ in 0..1500 {
        let list = app
            .send(
                Method::GET,
                &format!("/v1/webhooks/{hook}/deliveries"),
                Some(token),
                None,
            )
            .await
            .expect(200);
        let newest = &list["deliveries"][0];
        if newest["last_error"].is_string() || newest["status"] == "delivered" {
            return newest.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no attempt of {hook} was recorded");
}

#[tokio::test]
async fn ip_literal_targets_are_refused_at_creation_and_nothing_is_sent() {
    let app = spawn_with(guarded()).await;
    let v4 = Tally::start("127.0.0.1:0").await.expect("loopback");
    let v6 = Tally::start("[::1]:0").await;
    let v6_port = v6.as_ref().map_or(9, |t| t.port);
    let confined = app
        .token_with(&["keys:write", "keys:read"], Some("team-a"))
        .await;
    let p = v4.port;
    let literals = [
        format!("http://127.0.0.1:{p}/hook"),
        format!("http://127.1.2.3:{p}/hook"),
        format!("http://2130706433:{p}/hook"),
        format!("http://0x7f.1:{p}/hook"),
        format!("http://[::ffff:127.0.0.1]:{p}/hook"),
        format!("http://0.0.0.0:{p}/hook"),
        format!("http://[::1]:{v6_port}/hook"),
        format!("https://[::1]:{v6_port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::ffff:169.254.169.254]/latest/meta-data/".to_owned(),
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://192.168.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://224.0.0.1/".to_owned(),
        "http://255.255.255.255/".to_owned(),
    ];
    for token in [&confined, &app.token] {
        for url in &literals {
            let refused = app
                .send(
                    Method::POST,
                    "/v1/webhooks",
                    Some(token),
                    Some(json!({"url": url})),
                )
                .await
                .expect(422);
            let message = refused["error"]["message"].as_str().expect("message");
            assert!(message.contains(REFUSED), "{url}: {message}");
            assert!(message.contains("--webhook-allow"), "{message}");
        }
        for url in [
            format!("ftp://127.0.0.1:{p}/x"),
            format!("gopher://127.0.0.1:{p}/x"),
            "file:///etc/passwd".to_owned(),
            format!("ws://localhost:{p}/x"),
        ] {
            app.send(
                Method::POST,
                "/v1/webhooks",
                Some(token),
                Some(json!({"url": url})),
            )
            .await
            .expect(422);
        }
    }
    let listed = app.get("/v1/webhooks").await.expect(200);
    assert_eq!(listed["webhooks"], json!([]), "nothing was subscribed");
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(v4.connections(), 0);
    assert_eq!(v6.map_or(0, |t| t.connections()), 0);
}

#[tokio::test]
async fn names_resolving_to_loopback_are_refused_at_connect() {
    let app = spawn_with(guarded()).await;
    let tally = Tally::start("127.0.0.1:0").await.expect("loopback");
    let confined = app
        .token_with(&["keys:write", "keys:read"], Some("team-a"))
        .await;
    // `localhost` is a name: accepted when created, judged on what it resolves to (the system resolver,
    // from /etc/hosts) each time a delivery connects.
    let url = format!("http://localhost:{}/hook", tally.port);
    let mine = create(&app, &confined, &url).await;
    let mine = mine["id"].as_str().expect("id");
    let admins = create(&app, &app.token, &url).await;
    let admins = admins["id"].as_str().expect("id");
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;

    let seen = first_outcome(&app, &app.token, admins).await;
    let error = seen["last_error"].as_str().expect("error");
    assert!(error.starts_with(REFUSED), "{error}");
    assert!(error.contains("is loopback"), "{error}");
    assert_eq!(seen["status"], "pending", "retried: DNS may change");
    let seen = first_outcome(&app, &confined, mine).await;
    assert_eq!(seen["last_error"], REFUSED);
    let admin_view = first_outcome(&app, &app.token, mine).await;
    assert!(
        admin_view["last_error"]
            .as_str()
            .expect("error")
            .contains("is loopback")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tally.connections(), 0, "the guard opened no connection");
}

#[tokio::test]
async fn dns_rebinding_to_loopback_is_refused_and_the_allowlist_lifts_it() {
    let tally = Tally::start("127.0.0.1:0").await.expect("loopback");
    let names = [("hooks.example.com", "127.0.0.1")];
    let app = spawn_with(with_resolver(guarded(), &names)).await;
    let hook = create(
        &app,
        &app.token,
        &format!("http://hooks.example.com:{}/hook", tally.port),
    )
    .await;
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    let seen = first_outcome(&app, &app.token, hook["id"].as_str().expect("id")).await;
    assert_eq!(
        seen["last_error"],
        format!("{REFUSED}: 127.0.0.1 is loopback")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(tally.connections(), 0);

    // `--webhook-allow 127.0.0.0/8`: the same name now reaches the loopback receiver.
    let mut allowed = with_resolver(guarded(), &names);
    allowed.webhooks.guard = AddressGuard::new(vec![Cidr::parse("127.0.0.0/8").expect("cidr")]);
    let app = spawn_with(allowed).await;
    let receiver = Receiver::default();
    let url = receiver
        .start()
        .await
        .replace("127.0.0.1", "hooks.example.com");
    let hook = create(&app, &app.token, &url).await;
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].1["data"]["revocations"][0]["key_id"], id.as_str());
    let seen = first_outcome(&app, &app.token, hook["id"].as_str().expect("id")).await;
    assert_eq!(seen["status"], "delivered");
}

#[tokio::test]
async fn non_loopback_targets_are_refused_before_any_socket() {
    // Names an attacker's DNS points inside the network, and literals stored while an allowlist (since
    // removed) allowed them: every one is judged before a connection is attempted.
    let names = [
        ("metadata.example.com", "169.254.169.254"),
        ("intranet.example.com", "10.0.0.1"),
        ("cgnat.example.com", "100.64.0.1"),
        ("ula.example.com", "fd00::1"),
        ("mapped.example.com", "::ffff:192.168.1.1"),
        ("nat64.example.com", "64:ff9b::a9fe:a9fe"),
    ];
    let stored = [
        (
            "wh_stored_metadata",
            "http://169.254.169.254/latest/meta-data/",
        ),
        ("wh_stored_private", "http://10.0.0.1:8080/"),
    ];
    let app = spawn_seeded(
        with_resolver(guarded(), &names),
        async |store: &dyn Store| {
            for (id, url) in stored {
                let hook = WebhookRecord {
                    id: id.into(),
                    url: url.into(),
                    secret: "whsec_stored".into(),
                    events: vec!["key.revoked".into()],
                    owner: None,
                    created_at: Timestamp::now(),
                    created_by: "test".into(),
                    from_seq: store.head().await.expect("head"),
                    from_alert: 0,
                };
                store.create_webhook(&hook).await.expect("stored");
            }
        },
    )
    .await;
    let mut expected = Vec::new();
    for (name, ip) in names {
        let hook = create(&app, &app.token, &format!("https://{name}/hook")).await;
        expected.push((hook["id"].as_str().expect("id").to_owned(), ip));
    }
    expected.extend([
        ("wh_stored_metadata".to_owned(), "169.254.169.254"),
        ("wh_stored_private".to_owned(), "10.0.0.1"),
    ]);
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    for (hook, ip) in expected {
        let seen = first_outcome(&app, &app.token, &hook).await;
        let error = seen["last_error"].as_str().expect("error");
        let shown: IpAddr = ip.parse::<IpAddr>().expect("ip").to_canonical();
        assert!(
            error.starts_with(&format!("{REFUSED}: {shown} is ")),
            "{hook}: {error}"
        );
    }
    let metrics = app.get("/metrics").await.body;
    assert!(
        metrics
            .as_str()
            .expect("text")
            .contains("quench_webhook_deliveries_total 0")
    );
}

#[tokio::test]
async fn confined_tokens_learn_no_status_codes_or_transport_errors() {
    let app = spawn_with(quick()).await;
    let failing = Receiver::default();
    failing.fail.store(usize::MAX, Ordering::SeqCst);
    let failing_url = failing.start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}/gone", listener.local_addr().expect("addr"))
    };
    let confined = app
        .token_with(&["keys:write", "keys:read"], Some("team-a"))
        .await;
    let answering = create(&app, &confined, &failing_url).await;
    let answering = answering["id"].as_str().expect("id").to_owned();
    let silent = create(&app, &confined, &closed).await;
    let silent = silent["id"].as_str().expect("id").to_owned();
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    failing.wait_for(1).await;

    let admin = first_outcome(&app, &app.token, &answering).await;
    assert_eq!(admin["last_error"], "HTTP 500");
    let admin = first_outcome(&app, &app.token, &silent).await;
    let detail = admin["last_error"].as_str().expect("error");
    assert!(detail.to_lowercase().contains("connect"), "{detail}");
    for hook in [&answering, &silent] {
        let seen = first_outcome(&app, &confined, hook).await;
        assert_eq!(seen["last_error"], "failed", "{seen}");
    }
}

#[tokio::test]
async fn credentials_in_webhook_urls_are_masked_in_every_listing() {
    let app = spawn_with(quick()).await;
    let receiver = Receiver::default();
    let plain = receiver.start().await;
    let with_secrets =
        plain.replace("http://", "http://hookuser:pa55word@") + "?token=s3cr3t-t0ken&channel=ops";
    let masked = plain.replace("http://", "http://***@") + "?token=***&channel=***";
    let confined = app
        .token_with(&["keys:write", "keys:read"], Some("team-a"))
        .await;
    let created = create(&app, &confined, &with_secrets).await;
    assert_eq!(created["url"], masked.as_str());
    let hook = created["id"].as_str().expect("id").to_owned();
    let (id, _) = app.new_key("team-a").await;
    revoke(&app, &id).await;
    let got = receiver.wait_for(1).await;
    // The real URL is what is called: the receiver gets its credential.
    assert_eq!(
        got[0].0["authorization"], "Basic aG9va3VzZXI6cGE1NXdvcmQ=",
        "hookuser:pa55word"
    );
    for token in [&confined, &app.token] {
        let listed = app
            .send(Method::GET, "/v1/webhooks", Some(token), None)
            .await
            .expect(200);
        assert_eq!(listed["webhooks"][0]["url"], masked.as_str());
        let deliveries = app
            .send(
                Method::GET,
                &format!("/v1/webhooks/{hook}/deliveries"),
                Some(token),
                None,
            )
            .await
            .expect(200);
        for shown in [
            created.to_string(),
            listed.to_string(),
            deliveries.to_string(),
        ] {
            for secret in ["hookuser", "pa55word", "s3cr3t-t0ken", "frag"] {
                assert!(!shown.contains(secret), "{secret} shown in {shown}");
            }
        }
    }
}
