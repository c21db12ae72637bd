//! PostgreSQL over TLS: a PostgreSQL server this test starts itself (`initdb` and `pg_ctl`, on a free
//! loopback port, with `ssl = on` and a certificate the test makes), reached by the store and by
//! `quench up --database` with `sslmode=verify-full`; a wrong CA and a server without TLS are refused.
//!
//! The server binaries come from `QUENCH_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
//! `PATH`. Where they are missing the tests fail under CI (`CI=true`) and are skipped, loudly, elsewhere.
//! Run as root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sqlx::Connection;
use support::{Client, certs::Ca};

fn binaries() -> Option<PathBuf> {
    let has_them = |dir: &Path| dir.join("initdb").exists() && dir.join("pg_ctl").exists();
    if let Ok(dir) = std::env::var("QUENCH_TEST_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_them(d));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|d| has_them(d))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().or_else(|| {
        std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).find(|d| has_them(d)))
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL server of this test's own, stopped (immediately) and removed when dropped.
struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres: bool,
    port: u16,
}

impl PgServer {
    /// `tls`: the server certificate and key to serve with `ssl = on`; `None` for `ssl = off`.
    fn start(tls: Option<&support::certs::Issued>) -> Option<Self> {
        let Some(bin) = binaries() else {
            assert!(
                !support::in_ci(),
                "PostgreSQL server binaries (initdb, pg_ctl) are required in CI; set QUENCH_TEST_PG_BIN"
            );
            eprintln!("SKIPPED: no initdb/pg_ctl on this machine (set QUENCH_TEST_PG_BIN)");
            return None;
        };
        let server = Self {
            bin,
            dir: tempfile::tempdir().expect("dir"),
            as_postgres: running_as_root(),
            port: support::free_port(),
        };
        let data = server.data();
        if let Some(issued) = tls {
            std::fs::create_dir_all(server.dir.path().join("tls")).expect("tls dir");
            std::fs::copy(&issued.cert, server.dir.path().join("tls/server.crt")).expect("cert");
            std::fs::copy(&issued.key, server.dir.path().join("tls/server.key")).expect("key");
        }
        if server.as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path()));
        }
        #[cfg(unix)]
        if tls.is_some() {
            use std::os::unix::fs::PermissionsExt;
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(
                server.dir.path().join("tls/server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("key mode");
        }
        run(server
            .command("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data));
        let tls_settings = match tls {
            Some(_) => format!(
                "ssl = on\nssl_cert_file = '{0}/tls/server.crt'\nssl_key_file = '{0}/tls/server.key'\n",
                server.dir.path().display()
            ),
            None => "ssl = off\n".to_owned(),
        };
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 30\n{tls_settings}",
            server.port,
            server.dir.path().display()
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("postgresql.conf");
        run(server
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-l"])
            .arg(server.dir.path().join("server.log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Some(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{query}",
            self.port
        )
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn open(url: &str) -> Result<(), quench_store::StoreError> {
    let store = tokio::time::timeout(Duration::from_secs(60), quench_store::open_url(url))
        .await
        .expect("connecting ends")?;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_servers_ca_connects_and_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new("Quench test PostgreSQL CA");
    let ca_file = ca.write(dir.path(), "ca");
    let server_cert = ca.server(dir.path(), "postgres");
    let Some(server) = PgServer::start(Some(&server_cert)) else {
        return;
    };
    let verified = server.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));

    // The store connects and migrates, and the session is encrypted.
    open(&verified)
        .await
        .expect("verify-full with the right CA");
    let mut conn = sqlx::PgConnection::connect(&verified)
        .await
        .expect("connect");
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .expect("pg_stat_ssl");
    assert!(encrypted, "the session uses TLS");
    conn.close().await.expect("close");

    // A CA that did not sign the server's certificate: refused, with verify-ca too.
    let stranger = Ca::new("Someone else").write(dir.path(), "stranger-ca");
    for mode in ["verify-full", "verify-ca"] {
        let error = open(&server.url(&format!(
            "sslmode={mode}&sslrootcert={}",
            stranger.display()
        )))
        .await
        .expect_err("an untrusted certificate");
        let text = error.to_string();
        assert!(
            text.contains("TLS") || text.contains("certificate"),
            "{mode}: {text}"
        );
    }

    // `quench up --database` with verify-full: runs and serves.
    let data = tempfile::tempdir().expect("data dir");
    let args: Vec<String> = [
        "up",
        "--database",
        &verified,
        "--admin-listen",
        "127.0.0.1:0",
        "--edge-listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let env = [(
        "QUENCH_BOOTSTRAP_TOKEN".to_owned(),
        support::BOOTSTRAP.to_owned(),
    )];
    let up = support::Proc::spawn(&args, &env);
    let admin = up.url_after("manager listening on");
    let edge = up.url_after("edge listening on");
    let client = Client::default();
    let (_, key) = client.create(&admin, "team-a").await;
    assert_eq!(
        client
            .until_verdict(&edge, &key, None, Duration::from_secs(15))
            .await["valid"],
        true
    );
    drop(up);

    // And refuses to start against a CA it cannot trust, saying why.
    let wrong = server.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        stranger.display()
    ));
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == verified {
                wrong.clone()
            } else {
                a.clone()
            }
        })
        .collect();
    let mut up = support::Proc::spawn(&args, &env);
    let end = Instant::now() + Duration::from_secs(90);
    while !up.exited() {
        assert!(Instant::now() < end, "still running: {}", up.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = up.log_tail();
    assert!(log.contains("--database"), "{log}");
    assert!(log.contains("certificate"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls() {
    let Some(server) = PgServer::start(None) else {
        return;
    };
    // The server works in plain text...
    open(&server.url("sslmode=disable"))
        .await
        .expect("plain text");
    // ...but a client that requires TLS does not fall back to it.
    for mode in ["require", "verify-full"] {
        let error = open(&server.url(&format!("sslmode={mode}")))
            .await
            .expect_err("no TLS");
        assert!(
            error.to_string().contains("does not support TLS"),
            "{mode}: {error}"
        );
    }
}
