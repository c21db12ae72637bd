//! `quench` as a user runs it: the binary, its flags, its output, its exit codes, its signals.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

const QUENCH: &str = env!("CARGO_BIN_EXE_quench");

struct Node {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
    admin: String,
    edge: String,
    token: Option<String>,
    stdout: Vec<String>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn up(data_dir: &Path, extra: &[&str]) -> Node {
    let mut child = Command::new(QUENCH)
        .args([
            "up",
            "--admin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(extra)
        .env_remove("QUENCH_BOOTSTRAP_TOKEN")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn quench up");
    let stdout = child.stdout.take().expect("stdout");
    // Drain the log continuously so a chatty server never blocks on a full pipe.
    let mut err = child.stderr.take().expect("stderr");
    let stderr = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut log);
        log
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let (mut admin, mut edge) = (None, None);
    while admin.is_none() || edge.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("quench up printed its addresses");
        if let Some(url) = line.strip_prefix("manager listening on ") {
            admin = Some(url.to_owned());
        }
        if let Some(url) = line.strip_prefix("edge listening on ") {
            edge = Some(url.to_owned());
        }
        lines.push(line);
    }
    let token = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("qt_").map(|t| format!("qt_{t}")));
    let node = Node {
        child,
        stderr: Some(stderr),
        admin: admin.expect("admin"),
        edge: edge.expect("edge"),
        token,
        stdout: lines,
    };
    wait_ready(&node.edge);
    node
}

/// Waits until the edge has its first snapshot and answers `200` on `/healthz`.
fn wait_ready(edge: &str) {
    use std::io::Write;
    let address = edge.trim_start_matches("http://").trim_end_matches('/');
    for _ in 0..400 {
        if let Ok(mut stream) = std::net::TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request =
                format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && std::io::Read::read_to_string(&mut stream, &mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("edge never became ready");
}

fn quench(node: &Node, data_dir: &Path, args: &[&str]) -> Output {
    Command::new(QUENCH)
        .args(args)
        .args(["--server", &node.admin, "--data-dir"])
        .arg(data_dir)
        .env_remove("QUENCH_TOKEN")
        .env_remove("QUENCH_SERVER")
        .output()
        .expect("run quench")
}

fn verify(node: &Node, key: &str) -> Output {
    Command::new(QUENCH)
        .args(["verify", key, "--edge", &node.edge])
        .output()
        .expect("run quench verify")
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stop(mut node: Node) -> String {
    let pid = node.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = node.child.wait().expect("wait");
    assert!(exit.success(), "quench up exits 0 on SIGTERM, got {exit:?}");
    node.stderr
        .take()
        .expect("log reader")
        .join()
        .expect("log reader")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints JSON")
}

#[test]
fn walk_through_survives_restart_and_keeps_secrets_out_of_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let node = up(&data, &["--webhook-allow", "127.0.0.1/32"]);
    let token = node
        .token
        .clone()
        .expect("first start prints the bootstrap token");
    let token_file = data.join("admin.token");
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("token file")
            .trim(),
        token
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    let created = json(&quench(
        &node,
        &data,
        &[
            "keys", "create", "--owner", "team-a", "--name", "demo", "--api", "orders", "--scope",
            "read", "--json",
        ],
    ));
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let kept = json(&quench(
        &node,
        &data,
        &["keys", "create", "--owner", "team-b", "--json"],
    ));
    let kept_key = kept["key"].as_str().expect("key").to_owned();

    let ok = verify(&node, &key);
    assert_eq!(ok.status.code(), Some(0));
    assert!(
        text(&ok).starts_with(&format!("valid: key {id} of team-a")),
        "{}",
        text(&ok)
    );

    let human = quench(&node, &data, &["keys", "create", "--owner", "team-c"]);
    assert!(human.status.success());
    assert!(text(&human).contains("This is the only time the key is shown"));

    let revoked = quench(&node, &data, &["keys", "revoke", &id, "--reason", "leaked"]);
    assert!(
        revoked.status.success(),
        "{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(
        text(&revoked).contains("enforced on 1 edge(s)"),
        "{}",
        text(&revoked)
    );
    let refused = verify(&node, &key);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(text(&refused).trim(), "invalid: revoked");

    let listed = quench(&node, &data, &["keys", "list"]);
    assert!(
        text(&listed)
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{}",
        text(&listed)
    );
    let shown = quench(&node, &data, &["keys", "show", &id]);
    assert!(
        text(&shown).contains("revoked_reason: leaked"),
        "{}",
        text(&shown)
    );

    let rotated = json(&quench(
        &node,
        &data,
        &[
            "keys",
            "rotate",
            kept["id"].as_str().expect("id"),
            "--grace",
            "3600",
            "--json",
        ],
    ));
    let rotated_key = rotated["key"].as_str().expect("key").to_owned();

    let made = json(&quench(
        &node,
        &data,
        &["tokens", "create", "--scope", "keys:read", "--json"],
    ));
    let reader = made["token"].as_str().expect("token").to_owned();
    let reader_id = made["id"].as_str().expect("id").to_owned();
    let denied = Command::new(QUENCH)
        .args([
            "keys",
            "revoke",
            rotated["id"].as_str().expect("id"),
            "--reason",
            "x",
            "--server",
            &node.admin,
            "--token",
            &reader,
        ])
        .output()
        .expect("run");
    assert_eq!(denied.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"));
    let revoked_token = quench(&node, &data, &["tokens", "revoke", &reader_id]);
    assert!(
        text(&revoked_token).contains("revoked"),
        "{}",
        text(&revoked_token)
    );
    let refused = Command::new(QUENCH)
        .args(["keys", "list", "--server", &node.admin, "--token", &reader])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unauthorized"));

    // Webhooks and alerts from the command line.
    let hook = quench(
        &node,
        &data,
        &[
            "webhooks",
            "create",
            "--url",
            "http://hookuser:pa55word@127.0.0.1:9/hook?token=s3cr3t-t0ken",
            "--event",
            "key.revoked",
            "--json",
        ],
    );
    assert!(hook.status.success(), "{}", text(&hook));
    let hook = json(&hook);
    let hook_id = hook["id"].as_str().expect("id").to_owned();
    let hook_secret = hook["secret"].as_str().expect("secret").to_owned();
    assert!(hook_secret.starts_with("whsec_"));
    assert_eq!(hook["url"], "http://***@127.0.0.1:9/hook?token=***");
    let listed = text(&quench(&node, &data, &["webhooks", "list"]));
    assert!(
        listed.contains(&hook_id) && !listed.contains(&hook_secret),
        "{listed}"
    );
    assert!(
        listed.contains("http://***@127.0.0.1:9/hook?token=***"),
        "{listed}"
    );
    // Outside the allowed range, loopback stays refused.
    let guarded = quench(
        &node,
        &data,
        &["webhooks", "create", "--url", "http://127.0.0.2:9/hook"],
    );
    assert_eq!(guarded.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&guarded.stderr).contains("refused by the address guard"),
        "{}",
        text(&guarded)
    );
    let deliveries = quench(&node, &data, &["webhooks", "deliveries", &hook_id]);
    assert!(deliveries.status.success(), "{}", text(&deliveries));
    assert!(text(&deliveries).contains("STATUS"));
    let alerts = quench(&node, &data, &["alerts", "--limit", "5"]);
    assert!(alerts.status.success(), "{}", text(&alerts));
    assert!(text(&alerts).contains("RULE"));
    let deleted = quench(&node, &data, &["webhooks", "delete", &hook_id]);
    assert!(text(&deleted).contains("deleted"), "{}", text(&deleted));
    let gone = quench(&node, &data, &["webhooks", "delete", "wh_nothing"]);
    assert_eq!(gone.status.code(), Some(2));
    let bad = quench(&node, &data, &["webhooks", "create", "--url", "ftp://x"]);
    assert_eq!(bad.status.code(), Some(2));

    let logs = stop(node);
    assert!(
        !logs.contains(&hook_secret),
        "a webhook secret reached the log"
    );
    for credential in ["pa55word", "s3cr3t-t0ken"] {
        assert!(
            !logs.contains(credential),
            "a webhook URL's credential reached the log"
        );
    }
    assert!(
        logs.contains("stopped"),
        "graceful shutdown is logged:\n{logs}"
    );
    for secret in [&key, &kept_key, &rotated_key, &token, &reader] {
        assert!(!logs.contains(secret.as_str()), "a secret reached the log");
        assert!(
            !logs.contains(&secret[13..]),
            "a secret's body reached the log"
        );
    }

    let again = up(&data, &[]);
    assert!(
        again.token.is_none(),
        "the bootstrap token is printed only once: {:?}",
        again.stdout
    );
    assert_eq!(
        verify(&again, &key).status.code(),
        Some(1),
        "still revoked after restart"
    );
    assert_eq!(
        verify(&again, &kept_key).status.code(),
        Some(0),
        "still valid within the grace"
    );
    assert_eq!(verify(&again, &rotated_key).status.code(), Some(0));
    let still = json(&quench(&again, &data, &["keys", "show", &id, "--json"]));
    assert_eq!(still["status"], "revoked");
    // The embedded edge kept its key (in the data directory), so its acknowledgements still count.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("edge-embedded.key"))
            .expect("the edge key is in the data directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let revoked_again = quench(
        &again,
        &data,
        &[
            "keys",
            "revoke",
            kept["id"].as_str().expect("id"),
            "--reason",
            "after restart",
        ],
    );
    assert!(
        text(&revoked_again).contains("enforced on 1 edge(s)"),
        "{}",
        text(&revoked_again)
    );
    stop(again);
}

#[test]
fn bad_flags_and_unreachable_servers_fail_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad_issuer = Command::new(QUENCH)
        .args([
            "up",
            "--issuer",
            "BAD!",
            "--admin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&bad_issuer.stderr);
    assert_eq!(bad_issuer.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--issuer"), "{stderr}");

    let bad_ranges = Command::new(QUENCH)
        .args([
            "up",
            "--admin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--webhook-allow",
            "10.1.2.3/8",
            "--webhook-allow",
            "fd00::/129",
            "--webhook-allow",
            "10.0.0.0/8",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&bad_ranges.stderr);
    assert_eq!(bad_ranges.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--webhook-allow")
            && stderr.contains("did you mean 10.0.0.0/8")
            && stderr.contains("fd00::/129"),
        "every bad range is named: {stderr}"
    );
    assert!(
        !dir.path().join("admin.token").exists(),
        "refused before anything was written"
    );

    let unsupported = Command::new(QUENCH)
        .args([
            "up",
            "--database",
            "mysql://localhost/x",
            "--admin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&unsupported.stderr);
    assert_eq!(unsupported.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--database"), "{stderr}");

    let policy = dir.path().join("usage.json");
    std::fs::write(&policy, r#"{"rules": [{"name": "x", "kind": "teleport"}]}"#).expect("write");
    for (file, expected) in [
        (policy.as_path(), "unknown kind"),
        (dir.path().join("missing.json").as_path(), "--usage-policy"),
    ] {
        let bad_policy = Command::new(QUENCH)
            .args([
                "up",
                "--admin-listen",
                "127.0.0.1:0",
                "--edge-listen",
                "127.0.0.1:0",
                "--usage-policy",
            ])
            .arg(file)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&bad_policy.stderr);
        assert_eq!(bad_policy.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }

    let short = Command::new(QUENCH)
        .args([
            "up",
            "--admin-listen",
            "127.0.0.1:0",
            "--edge-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("QUENCH_BOOTSTRAP_TOKEN", "short")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert_eq!(short.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("QUENCH_BOOTSTRAP_TOKEN"), "{stderr}");

    let nowhere = Command::new(QUENCH)
        .args([
            "keys",
            "list",
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "qt_x",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("calling http://127.0.0.1:1"), "{stderr}");

    let no_token = Command::new(QUENCH)
        .args(["keys", "list", "--data-dir"])
        .arg(dir.path().join("missing"))
        .env_remove("QUENCH_TOKEN")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert_eq!(no_token.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no token"), "{stderr}");

    let usage = Command::new(QUENCH)
        .args(["keys", "revoke", "abc"])
        .output()
        .expect("run");
    assert_eq!(
        usage.status.code(),
        Some(2),
        "clap reports a missing --reason: {}",
        String::from_utf8_lossy(&usage.stderr)
    );
}

/// Every process checks all of its configuration before it migrates a database or binds a port, so a
/// bad flag is reported as such even where the port is taken (say, by a `quench up` already running).
#[test]
fn a_bad_flag_is_reported_before_a_taken_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let output = Command::new(QUENCH)
        .args(["up", "--issuer", "BAD!", "--admin-listen", &address])
        .args(["--edge-listen", &address, "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--issuer"), "{stderr}");
    assert!(!stderr.contains("binding"), "{stderr}");
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "nothing was written to the data directory"
    );

    // Several bad settings at once: each is named in one run.
    let output = Command::new(QUENCH)
        .args(["up", "--issuer", "BAD!", "--also-trust", "zz"])
        .args(["--admin-listen", &address, "--edge-listen", &address])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--issuer") && stderr.contains("--also-trust"),
        "{stderr}"
    );

    let output = Command::new(QUENCH)
        .args([
            "manager",
            "--nats",
            "nats://127.0.0.1:1",
            "--issuer",
            "qk:md5",
        ])
        .args(["--admin-listen", &address, "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--issuer") && stderr.contains("md5"),
        "{stderr}"
    );

    let output = Command::new(QUENCH)
        .args(["edge", "--nats", "nats://127.0.0.1:1", "--manager"])
        .args([
            "http://127.0.0.1:1",
            "--token",
            "qt_unused",
            "--region",
            "no spaces",
        ])
        .args(["--listen", &address])
        .env_remove("QUENCH_MANAGER")
        .env_remove("QUENCH_TOKEN")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("--region"), "{stderr}");
    assert!(!stderr.contains("binding"), "{stderr}");
    drop(taken);
}

/// The servers' log carries no colour codes when it goes to a pipe or a file, and `--log-format json`
/// writes one JSON object per line for log collectors.
#[test]
fn logs_to_a_pipe_are_plain_text_or_json_lines() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = up(dir.path(), &["--log-format", format]);
        let log = stop(node);
        assert!(!log.trim().is_empty(), "the node logged nothing");
        assert!(
            !log.contains("\x1b["),
            "no colour codes in a piped log: {log}"
        );
        if format == "json" {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let parsed: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{e}: not a JSON line: {line:?}\n{log}"));
                assert!(parsed["level"].is_string(), "{line}");
            }
        }
    }
}

#[test]
fn up_runs_on_postgresql_and_keeps_revocations_across_restarts() {
    let Some(db) = support::PgDatabase::create("cli") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let url = db.url();
    let node = up(&data, &["--database", &url]);
    assert!(
        node.token.is_some(),
        "a new database gets a bootstrap token"
    );
    let created = json(&quench(
        &node,
        &data,
        &["keys", "create", "--owner", "team-a", "--json"],
    ));
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(verify(&node, &key).status.code(), Some(0));
    let revoked = quench(&node, &data, &["keys", "revoke", &id, "--reason", "leaked"]);
    assert!(
        text(&revoked).contains("enforced on 1 edge(s)"),
        "{}",
        text(&revoked)
    );
    assert_eq!(verify(&node, &key).status.code(), Some(1));
    stop(node);

    let again = up(&data, &["--database", &url]);
    assert!(again.token.is_none());
    assert_eq!(
        verify(&again, &key).status.code(),
        Some(1),
        "still revoked after restart"
    );
    stop(again);
}

#[test]
fn scan_report_revokes_the_keys_it_finds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let node = up(&data, &[]);
    let created = json(&quench(
        &node,
        &data,
        &["keys", "create", "--owner", "team-a", "--json"],
    ));
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let reporter = json(&quench(
        &node,
        &data,
        &["tokens", "create", "--scope", "leaks:report", "--json"],
    ));
    let leaked = dir.path().join("leaked");
    std::fs::create_dir_all(&leaked).expect("dir");
    std::fs::write(leaked.join("settings.py"), format!("API_KEY = \"{key}\"\n")).expect("write");

    let out = Command::new(QUENCH)
        .args(["scan", "--report", &node.admin])
        .arg(&leaked)
        .env("QUENCH_TOKEN", reporter["token"].as_str().expect("token"))
        .output()
        .expect("scan");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("reported {id}: revoked")));
    assert_eq!(verify(&node, &key).status.code(), Some(1));
    stop(node);
}

/// An edge refuses to follow a manager on another host over plain HTTP, before it sends anything there:
/// its token and every key's verifier would cross the network in the clear. `--insecure-http` allows
/// it, and then only with pinned signing keys.
#[test]
fn an_edge_refuses_plain_http_to_another_host() {
    // 192.0.2.1 is a documentation address: the refusal happens before any connection is tried.
    let edge = |extra: &[&str]| {
        Command::new(QUENCH)
            .args([
                "edge",
                "--nats",
                "nats://127.0.0.1:1",
                "--listen",
                "127.0.0.1:0",
                "--token",
                "qt_unused",
            ])
            .args(extra)
            .env_remove("QUENCH_MANAGER")
            .env_remove("QUENCH_TOKEN")
            .output()
            .expect("run quench edge")
    };
    let refused = edge(&["--manager", "http://192.0.2.1:7600"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("plain http://"), "{stderr}");
    assert!(stderr.contains("--insecure-http"), "{stderr}");
    assert!(!stderr.contains("qt_unused"), "the token is never printed");

    let unpinned = edge(&["--manager", "http://192.0.2.1:7600", "--insecure-http"]);
    assert!(!unpinned.status.success());
    let stderr = String::from_utf8_lossy(&unpinned.stderr);
    assert!(stderr.contains("--trust-key"), "{stderr}");

    for bad in [
        "ftp://127.0.0.1:1",
        "https://user:pw@127.0.0.1:1",
        "not a url",
    ] {
        let output = edge(&["--manager", bad]);
        assert!(!output.status.success(), "{bad}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("--manager"),
            "{bad}"
        );
    }
}

/// A raw HTTP/1.1 request, so the test controls exactly what goes on the wire.
fn raw_request(base: &str, request_line: &str, token: &str) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let body = r#"{"reason":"pasted"}"#;
    let request = format!(
        "{request_line} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_whole_key_given_as_an_id_is_never_printed_or_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let node = up(&data, &[]);
    let token = node.token.clone().expect("bootstrap token");
    let created = json(&quench(
        &node,
        &data,
        &["keys", "create", "--owner", "team-a", "--json"],
    ));
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = key[13..key.len() - 6].to_owned();
    let mut typo = key.clone();
    typo.pop();
    typo.push(if key.ends_with('a') { 'b' } else { 'a' });
    let printed = |out: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // `keys show` and `keys revoke` act on the id of a pasted key, and say so without repeating it.
    let shown = quench(&node, &data, &["keys", "show", &key]);
    assert!(shown.status.success(), "{}", printed(&shown));
    let revoked = quench(
        &node,
        &data,
        &["keys", "revoke", &key, "--reason", "pasted"],
    );
    assert!(revoked.status.success(), "{}", printed(&revoked));
    let stderr = String::from_utf8_lossy(&revoked.stderr);
    assert!(
        stderr.contains(&id) && stderr.contains("leaked"),
        "{stderr}"
    );
    assert_eq!(verify(&node, &key).status.code(), Some(1), "revoked");
    let alerts = quench(&node, &data, &["alerts", "--key", &key]);
    assert!(alerts.status.success(), "{}", printed(&alerts));
    // Where a pasted key cannot be used, or does not parse, it is refused without being repeated.
    let failures = [
        quench(&node, &data, &["keys", "rotate", &key]),
        quench(&node, &data, &["keys", "show", &typo]),
        quench(&node, &data, &["keys", "revoke", &typo, "--reason", "x"]),
        quench(&node, &data, &["tokens", "revoke", &typo]),
        quench(&node, &data, &["webhooks", "delete", &key]),
        quench(&node, &data, &["webhooks", "deliveries", &key]),
    ];
    for out in &failures {
        assert_eq!(out.status.code(), Some(2), "{}", printed(out));
    }
    // `tokens revoke` with the whole token revokes it by id.
    let reader = json(&quench(
        &node,
        &data,
        &["tokens", "create", "--scope", "keys:read", "--json"],
    ));
    let reader = reader["token"].as_str().expect("token").to_owned();
    let token_revoked = quench(&node, &data, &["tokens", "revoke", &reader]);
    assert!(
        token_revoked.status.success(),
        "{}",
        printed(&token_revoked)
    );
    for out in [&shown, &revoked, &alerts, &token_revoked]
        .into_iter()
        .chain(&failures)
    {
        let all = printed(out);
        assert!(!all.contains(&secret), "printed a secret: {all}");
        assert!(
            !all.contains(&reader[13..reader.len() - 6]),
            "printed a token: {all}"
        );
    }

    // The API itself, asked directly with a key in the path, refuses without echoing it.
    for line in [
        format!("GET /v1/keys/{key}"),
        format!("POST /v1/keys/{key}/revoke"),
        format!("GET /v1/keys/{typo}"),
    ] {
        let answer = raw_request(&node.admin, &line, &token);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(!answer.contains(&secret), "echoed: {answer}");
    }
    // And neither does the server's log, at debug level.
    let logs = stop(node);
    assert!(!logs.contains(&secret), "a pasted key reached the log");
    assert!(!logs.contains(&reader[13..reader.len() - 6]));
}
