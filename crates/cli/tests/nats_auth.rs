//! NATS with authorization and TLS on: every kind of credentials Quench accepts, refusals that say why,
//! secrets kept out of logs, and the subject permissions documented in docs/operations.md, run exactly as
//! written against a manager and an edge as real processes. Each test starts its own nats-server on a free
//! port, with certificates it makes.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use quench_bus::{
    Bus, BusError, Delivery, Heartbeat, NatsAccess, NatsBus, Role, SignedHeartbeat,
    nats::{Credential, NatsAccessOptions, NatsServers, names::Names},
};
use quench_core::{Seq, Timestamp, sign::Signer};
use serde_json::json;
use support::{Client, Nats, QUENCH, certs::Ca, edge_with, manager};

const SOON: Duration = Duration::from_secs(15);

const PASSWORD: &str = "quench-test-password-8c1f";
const TOKEN: &str = "quench-test-token-5d9a";
/// Seeds of the nkey users in docs/operations.md (examples: their public keys are in the docs).
const MANAGER_SEED: &str = "SUANHHAPNSM5QPFLG666L6VHQ5QFXAGKCOBALD52JUVVW2MCV4XIC3HSI4";
const EDGE_EU_1_SEED: &str = "SUAFJHJSZOGSTESBHA5ICVHSBKJDENKNRWJFRAWHZO3YRZINDK4JNXDKNA";
const EDGE_EU_1_PUBLIC: &str = "UCBFZQ5GYY2SL63UU5VEMIUUEW3E6CTM3LQ7XYO2XIZBY2KGLNCA6CWK";

/// A directory with a CA, a server certificate for 127.0.0.1 and nkey seed files.
struct Material {
    dir: tempfile::TempDir,
    ca: Ca,
    ca_file: PathBuf,
    server: support::certs::Issued,
}

impl Material {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Ca::new("Quench test NATS CA");
        let ca_file = ca.write(dir.path(), "ca");
        let server = ca.server(dir.path(), "nats-server");
        Self {
            dir,
            ca,
            ca_file,
            server,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn seed_file(&self, name: &str, seed: &str) -> PathBuf {
        let path = self.path().join(format!("{name}.nk"));
        std::fs::write(&path, format!("{seed}\n")).expect("seed file");
        path
    }

    fn tls_block(&self, verify: bool) -> String {
        format!(
            "tls {{ cert_file: \"{}\"\n key_file: \"{}\"\n {} }}\n",
            self.server.cert.display(),
            self.server.key.display(),
            if verify {
                format!("ca_file: \"{}\"\n verify: true", self.ca_file.display())
            } else {
                String::new()
            }
        )
    }
}

fn access(servers: &str, options: NatsAccessOptions) -> NatsAccess {
    NatsAccess::new(NatsServers::parse(servers).expect("servers"), options).expect("access")
}

fn tls_url(nats: &Nats) -> String {
    format!("tls://127.0.0.1:{}", nats.port)
}

async fn connect(access: &NatsAccess, deployment: &str) -> Result<NatsBus, BusError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        NatsBus::connect_as(
            access,
            deployment,
            Role::Manager("test".into()),
            &Default::default(),
        ),
    )
    .await
    .expect("connecting ends, one way or the other")
}

/// Connects and carries a signed heartbeat from a publisher to a subscriber on the same bus.
async fn round_trip(access: &NatsAccess) {
    let bus = connect(access, "auth-test").await.expect("connects");
    let mut deliveries = bus.subscribe().await.expect("subscribe");
    let signer = Signer::generate().expect("random");
    let beat = Heartbeat {
        manager: "m".into(),
        head: Seq::new(3),
        at: Timestamp::from_millis(7),
    };
    bus.heartbeat(&SignedHeartbeat::seal_heartbeat(&signer, &beat))
        .await
        .expect("publish");
    let received = tokio::time::timeout(SOON, async {
        use futures::StreamExt;
        loop {
            match deliveries.next().await {
                Some(Delivery::Heartbeat(got)) => return got,
                Some(_) => continue,
                None => panic!("the subscription ended"),
            }
        }
    })
    .await
    .expect("the heartbeat comes back");
    assert_eq!(
        received.body(),
        SignedHeartbeat::seal_heartbeat(&signer, &beat).body()
    );
}

fn users_config(material: &Material, nkey_public: &str) -> String {
    format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\" }}\n{}\
         authorization {{ users: [ {{ user: quench, password: \"{PASSWORD}\" }}, {{ nkey: {nkey_public} }} ] }}\n",
        material.tls_block(false)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_nkeys_log_in_over_tls_and_nothing_else_does() {
    let material = Material::new();
    let Some(nats) = Nats::start_config(&users_config(&material, EDGE_EU_1_PUBLIC)) else {
        return;
    };
    let url = tls_url(&nats);
    let with_ca = |options: NatsAccessOptions| NatsAccessOptions {
        ca: Some(material.ca_file.clone()),
        ..options
    };

    // Without credentials, or with wrong ones: refused at once, saying so.
    for options in [
        NatsAccessOptions::default(),
        NatsAccessOptions {
            user: Some("quench".into()),
            password: Some(Credential::new("wrong-password")),
            ..Default::default()
        },
    ] {
        let error = connect(&access(&url, with_ca(options)), "auth-test")
            .await
            .expect_err("refused");
        assert!(matches!(error, BusError::Unauthorized(_)), "{error}");
        assert!(
            error.to_string().contains("authorization violation"),
            "{error}"
        );
    }

    // User and password, as options and in the URL (percent-encoded where needed).
    round_trip(&access(
        &url,
        with_ca(NatsAccessOptions {
            user: Some("quench".into()),
            password: Some(Credential::new(PASSWORD)),
            ..Default::default()
        }),
    ))
    .await;
    let in_url = format!("tls://quench:{PASSWORD}@127.0.0.1:{}", nats.port);
    round_trip(&access(&in_url, with_ca(NatsAccessOptions::default()))).await;

    // An nkey seed file.
    let seed = material.seed_file("edge", EDGE_EU_1_SEED);
    round_trip(&access(
        &url,
        with_ca(NatsAccessOptions {
            nkey_file: Some(seed.clone()),
            ..Default::default()
        }),
    ))
    .await;
    let other_seed = material.seed_file("stranger", MANAGER_SEED);
    let error = connect(
        &access(
            &url,
            with_ca(NatsAccessOptions {
                nkey_file: Some(other_seed),
                ..Default::default()
            }),
        ),
        "auth-test",
    )
    .await
    .expect_err("an unknown nkey");
    assert!(matches!(error, BusError::Unauthorized(_)), "{error}");
    let not_a_seed = material.seed_file("garbage", "hello world");
    let error = connect(
        &access(
            &url,
            with_ca(NatsAccessOptions {
                nkey_file: Some(not_a_seed),
                ..Default::default()
            }),
        ),
        "auth-test",
    )
    .await
    .expect_err("not a seed");
    assert!(matches!(error, BusError::Settings(_)), "{error}");
    assert!(!error.to_string().contains("hello"), "{error}");

    // The right password but a CA that did not sign the server's certificate, or no CA at all (the
    // system's roots): a TLS failure, at once.
    let stranger_ca = Ca::new("Someone else").write(material.path(), "stranger-ca");
    for ca in [Some(stranger_ca), None] {
        let options = NatsAccessOptions {
            user: Some("quench".into()),
            password: Some(Credential::new(PASSWORD)),
            ca,
            ..Default::default()
        };
        let error = connect(&access(&url, options), "auth-test")
            .await
            .expect_err("untrusted certificate");
        assert!(matches!(error, BusError::Tls(_)), "{error}");
        assert!(!error.to_string().contains(PASSWORD), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_logs_in_and_a_wrong_one_does_not() {
    let config = format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\" }}\n\
         authorization {{ token: \"{TOKEN}\" }}\n"
    );
    let Some(nats) = Nats::start_config(&config) else {
        return;
    };
    round_trip(&access(
        &nats.url(),
        NatsAccessOptions {
            token: Some(Credential::new(TOKEN)),
            ..Default::default()
        },
    ))
    .await;
    round_trip(&access(
        &format!("nats://{TOKEN}@127.0.0.1:{}", nats.port),
        NatsAccessOptions::default(),
    ))
    .await;
    for options in [
        NatsAccessOptions::default(),
        NatsAccessOptions {
            token: Some(Credential::new("not-the-token")),
            ..Default::default()
        },
    ] {
        let error = connect(&access(&nats.url(), options), "auth-test")
            .await
            .expect_err("refused");
        assert!(matches!(error, BusError::Unauthorized(_)), "{error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_wants_the_client_certificate() {
    let material = Material::new();
    let config = format!(
        "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\" }}\n{}",
        material.tls_block(true)
    );
    let Some(nats) = Nats::start_config(&config) else {
        return;
    };
    let client = material.ca.client(material.path(), "quench-edge");
    round_trip(&access(
        &nats.url(),
        NatsAccessOptions {
            ca: Some(material.ca_file.clone()),
            client_cert: Some(client.cert.clone()),
            client_key: Some(client.key.clone()),
            ..Default::default()
        },
    ))
    .await;
    // A certificate from another CA, and none at all: refused.
    let stranger = Ca::new("Someone else").client(material.path(), "stranger");
    for client_cert in [Some((stranger.cert, stranger.key)), None] {
        let (client_cert, client_key) = client_cert.unzip();
        let options = NatsAccessOptions {
            ca: Some(material.ca_file.clone()),
            client_cert,
            client_key,
            ..Default::default()
        };
        let error = connect(&access(&nats.url(), options), "auth-test")
            .await
            .expect_err("refused");
        assert!(
            matches!(error, BusError::Tls(_) | BusError::Unauthorized(_)),
            "{error}"
        );
    }
}

/// Waits for a `quench` process to exit; returns what it wrote to stderr.
fn exit_log(proc: &mut support::Proc) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    while !proc.exited() {
        assert!(Instant::now() < end, "still running: {}", proc.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    proc.log_tail()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_says_why_nats_refused_it_and_never_prints_the_password() {
    let material = Material::new();
    let Some(nats) = Nats::start_config(&users_config(&material, EDGE_EU_1_PUBLIC)) else {
        return;
    };
    let ca = material.ca_file.display().to_string();
    let run = |nats_url: String, env: &[(&str, &str)]| {
        let dir = tempfile::tempdir().expect("dir");
        let args: Vec<String> = [
            "up",
            "--nats",
            &nats_url,
            "--nats-ca",
            &ca,
            "--admin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--data-dir",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (support::Proc::spawn(&args, &env), dir)
    };

    // No credentials: exits, naming the options that would help.
    let (mut proc, _dir) = run(tls_url(&nats), &[]);
    let log = exit_log(&mut proc);
    assert!(log.contains("NATS refused the credentials"), "{log}");
    assert!(log.contains("--nats-nkey"), "{log}");

    // A wrong password, in the URL or in the environment: refused, and the password appears nowhere.
    let wrong = "wrong-pass-7731";
    let (mut proc, _dir) = run(format!("tls://quench:{wrong}@127.0.0.1:{}", nats.port), &[]);
    let log = exit_log(&mut proc);
    assert!(log.contains("NATS refused the credentials"), "{log}");
    assert!(!log.contains(wrong), "{log}");
    let (mut proc, _dir) = run(
        tls_url(&nats),
        &[
            ("QUENCH_NATS_USER", "quench"),
            ("QUENCH_NATS_PASSWORD", wrong),
        ],
    );
    let log = exit_log(&mut proc);
    assert!(log.contains("check the credentials"), "{log}");
    assert!(!log.contains(wrong), "{log}");

    // The right password in the URL: runs, and logs where it connected without it.
    let (proc, _dir) = run(
        format!("tls://quench:{PASSWORD}@127.0.0.1:{}", nats.port),
        &[("QUENCH_BOOTSTRAP_TOKEN", support::BOOTSTRAP)],
    );
    let admin = proc.url_after("manager listening on");
    let edge = proc.url_after("edge listening on");
    let client = Client::default();
    let (_, key) = client.create(&admin, "team-a").await;
    assert_eq!(
        client.until_verdict(&edge, &key, None, SOON).await["valid"],
        true
    );
    let log = proc.log_tail();
    assert!(log.contains("connected to NATS"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
}

/// The nats-server configuration in docs/operations.md, exactly, with its port, store directory and
/// certificate paths pointed at this test's.
fn documented_config(material: &Material) -> String {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .expect("docs/operations.md");
    let after = docs
        .split("<!-- nats-permissions-example")
        .nth(1)
        .expect("the marked example in docs/operations.md");
    let block = after
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    let replacements = [
        (
            "listen: 0.0.0.0:4222",
            "listen: 127.0.0.1:{port}".to_owned(),
        ),
        ("\"/var/lib/nats\"", "\"{dir}\"".to_owned()),
        (
            "\"/etc/nats/server.pem\"",
            format!("\"{}\"", material.server.cert.display()),
        ),
        (
            "\"/etc/nats/server-key.pem\"",
            format!("\"{}\"", material.server.key.display()),
        ),
    ];
    let mut config = block.to_owned();
    for (from, to) in replacements {
        assert!(config.contains(from), "the documented config has {from}");
        config = config.replace(from, &to);
    }
    config
}

/// A raw client logged in with `access`, whose server errors (permission violations) come out of the
/// returned receiver.
async fn watched_client(
    access: &NatsAccess,
    inbox: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = access
        .connect_options()
        .await
        .expect("options")
        .custom_inbox_prefix(inbox)
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        })
        .connect(access.servers().addrs())
        .await
        .expect("connects");
    (client, rx)
}

async fn refused(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, subject: &str) {
    let error = tokio::time::timeout(SOON, errors.recv())
        .await
        .expect("the server answers with an error")
        .expect("an error");
    assert!(
        error.contains("Permissions Violation") && error.contains(subject),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_nats_permissions_confine_each_edge() {
    let material = Material::new();
    let Some(nats) = Nats::start_config(&documented_config(&material)) else {
        return;
    };
    let url = tls_url(&nats);
    let ca = material.ca_file.display().to_string();
    let manager_seed = material.seed_file("manager", MANAGER_SEED);
    let edge_seed = material.seed_file("edge-eu-1", EDGE_EU_1_SEED);

    // A manager and edge edge-eu-1 as processes, over TLS, each with its own nkey.
    let dir = tempfile::tempdir().expect("dir");
    let (_m, admin) = manager(
        &url,
        dir.path(),
        None,
        &[
            ("QUENCH_NATS_CA", &ca),
            ("QUENCH_NATS_NKEY", &manager_seed.display().to_string()),
            ("QUENCH_DEPLOYMENT", "prod"),
        ],
    );
    let client = Client::default();
    let token = client.edge_token(&admin).await;
    let edge_seed_arg = edge_seed.display().to_string();
    let (_e, edge) = edge_with(
        &url,
        &admin,
        &token,
        "edge-eu-1",
        "eu",
        10,
        &[
            "--nats-ca",
            &ca,
            "--nats-nkey",
            &edge_seed_arg,
            "--deployment",
            "prod",
        ],
    );
    client.until_edges_live(&admin, 1, SOON).await;
    let (id, key) = client.create(&admin, "team-a").await;
    assert_eq!(
        client.until_verdict(&edge, &key, None, SOON).await["valid"],
        true
    );
    let (status, body) = client
        .post(
            &format!("{admin}/v1/keys/{id}/revoke?wait=all&timeout_ms=10000"),
            json!({"reason": "leaked"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["propagation"]["complete"], true, "{body}");
    assert_eq!(client.verify(&edge, &key).await["reason"], "revoked");
    // The manager and the edge needed nothing the configuration does not allow.
    let log = nats.log();
    assert!(!log.contains("Violation"), "{log}");

    // Logged in as edge-eu-1: publishing an event, another edge's acknowledgement, or reading other
    // edges' acknowledgements is refused by the server.
    let names = Names::for_deployment("prod").expect("names");
    let edge_access = access(
        &url,
        NatsAccessOptions {
            ca: Some(material.ca_file.clone()),
            nkey_file: Some(edge_seed),
            ..Default::default()
        },
    );
    let (attacker, mut errors) = watched_client(&edge_access, &names.inbox_of("edge-eu-1")).await;
    attacker
        .publish(names.events.clone(), "forged".into())
        .await
        .expect("sent");
    attacker.flush().await.expect("flush");
    refused(&mut errors, "quench.prod.events").await;
    attacker
        .publish(names.acks_of("edge-eu-2"), "forged".into())
        .await
        .expect("sent");
    attacker.flush().await.expect("flush");
    refused(&mut errors, "quench.prod.acks.edge-eu-2").await;
    let _sub = attacker.subscribe(names.acks.clone()).await.expect("sent");
    attacker.flush().await.expect("flush");
    refused(&mut errors, "quench.prod.acks.*").await;
    let _sub = attacker
        .subscribe("_INBOX.prod.edge-eu-2.>")
        .await
        .expect("sent");
    attacker.flush().await.expect("flush");
    refused(&mut errors, "_INBOX.prod.edge-eu-2.>").await;
    let log = nats.log();
    assert!(
        log.contains("Publish Violation"),
        "the server logs it too:\n{log}"
    );
    // Its own acknowledgement subject is allowed: nothing more comes back.
    attacker
        .publish(names.acks_of("edge-eu-1"), "{}".into())
        .await
        .expect("sent");
    attacker.flush().await.expect("flush");
    assert!(
        errors.try_recv().is_err(),
        "its own acknowledgements are allowed"
    );

    // Without credentials the documented server lets nobody in.
    let error = connect(
        &access(
            &url,
            NatsAccessOptions {
                ca: Some(material.ca_file.clone()),
                ..Default::default()
            },
        ),
        "prod",
    )
    .await
    .expect_err("refused");
    assert!(matches!(error, BusError::Unauthorized(_)), "{error}");
}

/// Operator-mode material: an operator, a system account and an account with JetStream, and a user of
/// that account, as JWTs signed the way nats-server checks them.
mod operator {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use nkeys::KeyPair;
    use serde_json::{Value, json};

    fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
        let claims = json!({
            "jti": format!("{name}-{subject}"),
            "iat": 1_700_000_000,
            "iss": issuer.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature = issuer.sign(signed.as_bytes()).expect("sign");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn account(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            limits["mem_storage"] = json!(-1);
            limits["disk_storage"] = json!(-1);
            limits["streams"] = json!(-1);
            limits["consumer"] = json!(-1);
        }
        jwt(
            operator,
            &account.public_key(),
            name,
            json!({"limits": limits, "type": "account", "version": 2}),
        )
    }

    /// A server configuration (with `{port}` and `{dir}`) and the user's `.creds` file text.
    pub fn material() -> (String, String) {
        let operator = KeyPair::new_operator();
        let system = KeyPair::new_account();
        let quench = KeyPair::new_account();
        let user = KeyPair::new_user();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "test-operator",
            json!({"type": "operator", "version": 2}),
        );
        let user_jwt = jwt(
            &quench,
            &user.public_key(),
            "quench-edge",
            json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                   "type": "user", "version": 2}),
        );
        let config = format!(
            "listen: 127.0.0.1:{{port}}\njetstream {{ store_dir: \"{{dir}}\" }}\n\
             operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
             resolver_preload: {{\n {system}: {system_jwt}\n {quench}: {quench_jwt}\n}}\n",
            system = system.public_key(),
            system_jwt = account(&operator, &system, "SYS", false),
            quench = quench.public_key(),
            quench_jwt = account(&operator, &quench, "QUENCH", true),
        );
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        );
        (config, creds)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file_logs_in_to_a_server_in_operator_mode() {
    let (config, creds) = operator::material();
    let Some(nats) = Nats::start_config(&config) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let creds_file = dir.path().join("edge.creds");
    std::fs::write(&creds_file, creds).expect("creds");
    round_trip(&access(
        &nats.url(),
        NatsAccessOptions {
            credentials_file: Some(creds_file),
            ..Default::default()
        },
    ))
    .await;
    // A credentials file of a user the operator never signed: refused.
    let (_, strangers) = operator::material();
    let stranger_file = dir.path().join("stranger.creds");
    std::fs::write(&stranger_file, strangers).expect("creds");
    let error = connect(
        &access(
            &nats.url(),
            NatsAccessOptions {
                credentials_file: Some(stranger_file),
                ..Default::default()
            },
        ),
        "auth-test",
    )
    .await
    .expect_err("refused");
    assert!(matches!(error, BusError::Unauthorized(_)), "{error}");
    let error = connect(
        &access(&nats.url(), NatsAccessOptions::default()),
        "auth-test",
    )
    .await
    .expect_err("refused");
    assert!(matches!(error, BusError::Unauthorized(_)), "{error}");
}

#[test]
fn the_help_names_every_nats_option() {
    let help = Command::new(QUENCH)
        .args(["edge", "--help"])
        .stderr(Stdio::null())
        .output()
        .expect("help");
    let text = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--nats-creds",
        "--nats-nkey",
        "--nats-user",
        "--nats-password",
        "--nats-token",
        "--nats-ca",
        "--nats-cert",
        "--nats-key",
    ] {
        assert!(text.contains(option), "{option} missing from:\n{text}");
    }
}
