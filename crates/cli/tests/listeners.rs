//! The `quench` binary's listeners under attack: half-sent headers against `quench up`'s two APIs, TLS
//! with certificates the test makes (served, replaced on SIGHUP and on file change, refused when bad),
//! a remote edge reading its manager over HTTPS (and serving HTTPS, with its own operations listener), and
//! the operations listeners that keep `/metrics` and the
//! detailed `/healthz` off the public ones.

mod support;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{BOOTSTRAP, Client, Nats, Proc, SIGNING_SEED, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOON: Duration = Duration::from_secs(30);

/// `quench up` on free ports with `extra` flags; the URLs it printed, in order, for each marker.
fn up(dir: &Path, extra: &[&str], markers: &[&str]) -> (Proc, Vec<String>) {
    let mut args: Vec<String> = [
        "up",
        "--admin-listen",
        "127.0.0.1:0",
        "--edge-listen",
        "127.0.0.1:0",
        "--data-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.join("data").display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let proc = Proc::spawn(
        &args,
        &[("QUENCH_BOOTSTRAP_TOKEN".into(), BOOTSTRAP.into())],
    );
    let urls = markers.iter().map(|m| proc.url_after(m)).collect();
    (proc, urls)
}

/// A self-signed certificate for 127.0.0.1 written to `<name>.crt`/`<name>.key` in `dir`; its PEM.
fn make_certificate(dir: &Path, name: &str) -> String {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    let pem = made.cert.pem();
    // Write to a temporary name and rename, as a certificate manager would.
    let (cert, key) = paths(dir, name);
    write_atomically(&cert, &pem);
    write_atomically(&key, &made.signing_key.serialize_pem());
    pem
}

fn paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

fn hangup(proc: &Proc) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proc.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

/// Whether a client trusting only `pem` gets an answer from `url`'s `/healthz` on a new connection.
async fn trusted_by(pem: &str, url: &str) -> bool {
    Client::trusting(pem).get(&format!("{url}/healthz")).await.0 != 0
}

async fn until_trusted_by(pem: &str, urls: &[&str], proc: &Proc) {
    let end = Instant::now() + SOON;
    for url in urls {
        while !trusted_by(pem, url).await {
            assert!(
                Instant::now() < end,
                "{url} never served the new certificate; log:\n{}",
                proc.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Half a request head, trickled; `true` once the server closed the connection.
async fn slowloris(address: String) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await else {
        return false;
    };
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: quench\r\nX-Slow: ")
        .await;
    let mut buf = [0u8; 64];
    let end = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => return matches!(read, Ok(0) | Err(_)),
            _ = tick.tick() => {
                if stream.write_all(b"a").await.is_err() {
                    return true;
                }
            }
            () = tokio::time::sleep_until(end) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_cuts_half_sent_headers_on_both_listeners_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("dir");
    let (_proc, urls) = up(
        dir.path(),
        &["--header-timeout", "1", "--max-connections", "10"],
        &["manager listening on", "edge listening on"],
    );
    let mut attackers = Vec::new();
    for url in &urls {
        let address = url.trim_start_matches("http://").to_owned();
        for _ in 0..60 {
            attackers.push(tokio::spawn(slowloris(address.clone())));
        }
    }
    let client = Client::default();
    for url in &urls {
        let (status, _) = client.get(&format!("{url}/healthz")).await;
        assert!(
            status == 200 || status == 503,
            "{url} serves a normal client while under attack: {status}"
        );
    }
    for attacker in attackers {
        assert!(
            attacker.await.expect("task"),
            "the server closed a half-sent request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_listeners_take_metrics_and_detailed_health_off_the_public_ones() {
    let dir = tempfile::tempdir().expect("dir");
    let (_proc, urls) = up(
        dir.path(),
        &[
            "--admin-ops-listen",
            "127.0.0.1:0",
            "--edge-ops-listen",
            "127.0.0.1:0",
        ],
        &[
            "manager listening on",
            "manager metrics and health on",
            "edge listening on",
            "edge metrics and health on",
        ],
    );
    let [admin, admin_ops, edge, edge_ops] = &urls[..] else {
        panic!("four URLs: {urls:?}")
    };
    let client = Client::default();
    for public in [admin, edge] {
        let (status, body) = client.get(&format!("{public}/metrics")).await;
        assert_eq!(status, 404, "{public}/metrics is refused: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let end = Instant::now() + SOON;
    let minimal = loop {
        let (status, body) = client.get(&format!("{edge}/healthz")).await;
        if status == 200 || Instant::now() > end {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        minimal,
        json!({"status": "ok"}),
        "only the status in public"
    );
    let (_, minimal) = client.get(&format!("{admin}/healthz")).await;
    assert_eq!(minimal, json!({"status": "ok"}));

    let (status, detail) = client.get(&format!("{edge_ops}/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["edge"], "embedded", "{detail}");
    assert!(detail["staleness_ms"].is_u64(), "{detail}");
    assert!(
        client
            .text(&format!("{edge_ops}/metrics"))
            .await
            .contains("quench_edge_applied_seq")
    );
    assert!(
        client
            .text(&format!("{admin_ops}/metrics"))
            .await
            .contains("# TYPE")
    );
    let (status, _) = client
        .post(&format!("{edge_ops}/v1/verify"), json!({"key": "qk_x"}))
        .await;
    assert_eq!(status, 404, "the ops listener serves nothing else");
    let (status, _) = client.get(&format!("{admin_ops}/v1/keys")).await;
    assert_eq!(status, 404);
}

/// `quench up` with TLS from `dir`'s `tls.crt`/`tls.key` and `extra` flags; the process, its two URLs and
/// the certificate path.
fn up_tls(dir: &Path, extra: &[&str]) -> (Proc, Vec<String>, PathBuf) {
    let (cert, key) = paths(dir, "tls");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let mut flags = vec!["--tls-cert", &cert_arg, "--tls-key", &key_arg];
    flags.extend(extra);
    let (proc, urls) = up(dir, &flags, &["manager listening on", "edge listening on"]);
    for url in &urls {
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    }
    (proc, urls, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_tls_and_replaces_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().expect("dir");
    let first = make_certificate(dir.path(), "tls");
    // No polling of the files: only the signal reloads.
    let (proc, urls, cert) = up_tls(dir.path(), &["--tls-reload-interval", "0"]);
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    until_trusted_by(&first, &urls, &proc).await;

    // Keys are made and checked over HTTPS.
    let client = Client::trusting(&first);
    let (_, key_text) = client.create(urls[0], "team-a").await;
    let end = Instant::now() + SOON;
    while client.verify(urls[1], &key_text).await["valid"] != true {
        assert!(Instant::now() < end, "the key never became valid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Plain HTTP to a TLS listener fails cleanly.
    for url in &urls {
        let plain = url.replacen("https://", "http://", 1);
        let (status, body) = Client::default().get(&format!("{plain}/healthz")).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "tls_required");
    }

    // A new certificate in the same files: served once SIGHUP says so, never before.
    let second = make_certificate(dir.path(), "tls");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        trusted_by(&first, urls[0]).await,
        "no reload without the signal"
    );
    hangup(&proc);
    until_trusted_by(&second, &urls, &proc).await;
    for url in &urls {
        assert!(
            !trusted_by(&first, url).await,
            "{url} no longer serves the old certificate"
        );
    }

    // A broken certificate file: the reload fails, is logged, and the current certificate stays.
    write_atomically(&cert, "not a certificate");
    hangup(&proc);
    let end = Instant::now() + SOON;
    while !proc
        .log_tail()
        .contains("reloading the TLS certificate failed")
    {
        assert!(
            Instant::now() < end,
            "no error logged:\n{}",
            proc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for url in &urls {
        assert!(trusted_by(&second, url).await, "{url} kept the certificate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_replaces_its_certificate_when_the_files_change() {
    let dir = tempfile::tempdir().expect("dir");
    let first = make_certificate(dir.path(), "tls");
    let (proc, urls, _) = up_tls(dir.path(), &[]);
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    until_trusted_by(&first, &urls, &proc).await;

    let second = make_certificate(dir.path(), "tls");
    until_trusted_by(&second, &urls, &proc).await;
    for url in &urls {
        assert!(!trusted_by(&first, url).await, "{url} serves the new one");
    }
}

#[test]
fn startup_with_a_bad_certificate_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    make_certificate(dir.path(), "good");
    make_certificate(dir.path(), "other");
    let (cert, _) = paths(dir.path(), "good");
    let (_, other_key) = paths(dir.path(), "other");
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "hello").expect("write");
    let cases = [
        (garbage.clone(), other_key.clone(), "no PEM certificate"),
        (cert.clone(), other_key.clone(), "does not belong"),
        (cert.clone(), dir.path().join("missing.key"), "missing.key"),
    ];
    for (cert, key, expected) in cases {
        let output = std::process::Command::new(support::QUENCH)
            .args(["up", "--admin-listen", "127.0.0.1:0", "--edge-listen"])
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("QUENCH_BOOTSTRAP_TOKEN", BOOTSTRAP)
            .output()
            .expect("run quench up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "started with a bad pair");
        assert!(stderr.contains("--tls-cert/--tls-key"), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // One of the two without the other is refused by the flags themselves.
    let output = std::process::Command::new(support::QUENCH)
        .args(["up", "--tls-cert"])
        .arg(&cert)
        .output()
        .expect("run quench up");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_edge_reads_its_manager_over_https_and_serves_https() {
    let Some(nats) = Nats::start() else { return };
    let dir = tempfile::tempdir().expect("dir");
    let pem = make_certificate(dir.path(), "tls");
    let (cert, key) = paths(dir.path(), "tls");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let tls = ["--tls-cert", &cert, "--tls-key", &key];

    let mut args: Vec<String> = ["manager", "--nats", &nats.url(), "--admin-listen"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(format!("127.0.0.1:{}", free_port()));
    args.push("--data-dir".into());
    args.push(dir.path().join("manager").display().to_string());
    args.extend(tls.iter().map(|s| s.to_string()));
    let manager = Proc::spawn(
        &args,
        &[
            ("QUENCH_BOOTSTRAP_TOKEN".into(), BOOTSTRAP.into()),
            ("QUENCH_SIGNING_KEY".into(), SIGNING_SEED.into()),
        ],
    );
    let admin = manager.url_after("manager listening on");
    assert!(admin.starts_with("https://"), "{admin}");
    let client = Client::trusting(&pem);
    let token = client.edge_token(&admin).await;

    let mut args: Vec<String> = [
        "edge",
        "--nats",
        &nats.url(),
        "--manager",
        &admin,
        "--listen",
        "127.0.0.1:0",
        "--id",
        "tls-edge",
        "--ops-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The edge's key goes with the test's files, not into the working directory.
    let keys = tempfile::tempdir().expect("dir");
    args.extend(["--data-dir".to_owned(), keys.path().display().to_string()]);
    args.extend(tls.iter().map(|s| s.to_string()));
    // The edge trusts the manager's private certificate the standard way, through SSL_CERT_FILE.
    let edge = Proc::spawn(
        &args,
        &[
            ("QUENCH_TOKEN".into(), token),
            ("SSL_CERT_FILE".into(), cert.clone()),
        ],
    );
    let edge_url = edge.url_after("listening on");
    assert!(edge_url.starts_with("https://"), "{edge_url}");
    let edge_ops = edge.url_after("metrics and health on");
    assert_eq!(client.get(&format!("{edge_url}/metrics")).await.0, 404);
    assert!(
        client
            .text(&format!("{edge_ops}/metrics"))
            .await
            .contains("quench_edge_keys")
    );

    let (_, key_text) = client.create(&admin, "team-a").await;
    let end = Instant::now() + SOON;
    let mut answer = Value::Null;
    while answer["valid"] != true {
        assert!(
            Instant::now() < end,
            "never valid at the edge: {answer}; edge log:\n{}",
            edge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = client.verify(&edge_url, &key_text).await;
    }
}
