//! `quench scan` on planted keys: exactly the right ones found, never a secret printed.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use quench_core::{ApiKey, Prefix};

const QUENCH: &str = env!("CARGO_BIN_EXE_quench");

fn key() -> String {
    ApiKey::generate(Prefix::default())
        .expect("random")
        .expose()
}

fn scan(args: &[&str]) -> Output {
    Command::new(QUENCH)
        .arg("scan")
        .args(args)
        .output()
        .expect("run quench scan")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
    std::fs::write(path, content).expect("write");
}

#[test]
fn finds_exactly_the_planted_keys_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().expect("dir");
    let (env, json, yaml) = (key(), key(), key());
    let bad = {
        let mut k = key().into_bytes();
        let last = k.len() - 1;
        k[last] = if k[last] == b'a' { b'b' } else { b'a' };
        String::from_utf8(k).expect("ascii")
    };
    let split = key();
    write(dir.path(), ".env", &format!("DEBUG=1\nQUENCH_KEY={env}\n"));
    write(
        dir.path(),
        "config/app.json",
        &format!("{{\n  \"name\": \"x\",\n  \"api_key\": \"{json}\"\n}}\n"),
    );
    write(
        dir.path(),
        "deploy/values.yaml",
        &format!("service:\n  token: '{yaml}'\n"),
    );
    write(dir.path(), "notes/bad.txt", &format!("typo: {bad}\n"));
    write(
        dir.path(),
        "notes/split.txt",
        &format!("{}\n{}\n", &split[..30], &split[30..]),
    );
    write(dir.path(), ".git/ignored", &key());

    let out = scan(&[dir.path().to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "keys found means exit 1");
    let report = text(&out);
    assert_eq!(report.lines().count(), 3, "{report}");
    assert!(report.contains(".env:2:12: Quench key"), "{report}");
    assert!(report.contains("app.json:3:15: Quench key"), "{report}");
    assert!(report.contains("values.yaml:2:11: Quench key"), "{report}");
    for secret in [&env, &json, &yaml] {
        assert!(!report.contains(&secret[13..]), "a secret was printed");
        assert!(report.contains(&secret[..13]), "the key id is shown");
    }

    let json_out = scan(&["--format", "json", dir.path().to_str().expect("utf8")]);
    let parsed: serde_json::Value = serde_json::from_slice(&json_out.stdout).expect("json");
    assert_eq!(parsed["findings"].as_array().expect("findings").len(), 3);
    assert!(!text(&json_out).contains(&env[13..]));

    let sarif = scan(&["--format", "sarif", dir.path().to_str().expect("utf8")]);
    let parsed: serde_json::Value = serde_json::from_slice(&sarif.stdout).expect("sarif");
    assert_eq!(parsed["version"], "2.1.0");
    assert_eq!(
        parsed["runs"][0]["results"]
            .as_array()
            .expect("results")
            .len(),
        3
    );
    assert_eq!(parsed["runs"][0]["results"][0]["ruleId"], "quench-api-key");
    assert!(
        parsed["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"]
            .is_number()
    );
}

#[test]
fn standard_input_and_exit_codes() {
    let run = |input: &str| {
        let mut child = Command::new(QUENCH)
            .args(["scan", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    let found = run(&format!("curl -H 'X-API-Key: {}'\n", key()));
    assert_eq!(found.status.code(), Some(1));
    assert!(text(&found).starts_with("-:1:21: Quench key qk_"));
    assert_eq!(run("nothing to see here_at all\n").status.code(), Some(0));
    assert_eq!(scan(&["/no/such/path"]).status.code(), Some(2));
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

#[test]
fn git_history_on_every_ref_is_scanned() {
    let dir = tempfile::tempdir().expect("dir");
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let (removed, kept, on_branch) = (key(), key(), key());
    write(repo, "config.env", &format!("KEY={removed}\n"));
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "add config"]);
    write(repo, "config.env", "KEY=from-the-vault\n");
    write(repo, "src/main.txt", &format!("token = \"{kept}\"\n"));
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "rotate"]);
    git(repo, &["checkout", "-q", "-b", "feature"]);
    write(repo, "feature.txt", &format!("{on_branch}\n"));
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "feature"]);
    git(repo, &["checkout", "-q", "main"]);

    let history = scan(&["--git", "--format", "json", repo.to_str().expect("utf8")]);
    assert_eq!(history.status.code(), Some(1));
    let parsed: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let findings = parsed["findings"].as_array().expect("findings");
    let mut ids: Vec<String> = findings
        .iter()
        .map(|f| f["key_id"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = [&removed, &kept, &on_branch]
        .iter()
        .map(|k| k[3..13].to_owned())
        .collect();
    expected.sort();
    assert_eq!(
        ids, expected,
        "a key removed later and one on another branch are still found"
    );
    assert!(findings.iter().all(|f| {
        f["location"]["commit"]
            .as_str()
            .is_some_and(|c| c.len() == 40)
    }));
    let removed_at = findings
        .iter()
        .find(|f| f["key_id"] == removed[3..13])
        .expect("found");
    assert_eq!(removed_at["location"]["path"], "config.env");

    // The working tree alone has only the kept key.
    let tree = scan(&[repo.to_str().expect("utf8")]);
    assert_eq!(text(&tree).lines().count(), 1, "{}", text(&tree));
}

#[test]
fn rules_for_other_scanners_carry_the_key_pattern() {
    for tool in ["gitleaks", "trufflehog"] {
        let out = Command::new(QUENCH)
            .args(["rules", tool])
            .output()
            .expect("run");
        assert!(out.status.success());
        assert!(
            text(&out).contains("[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{59}"),
            "{tool}"
        );
    }
}

#[test]
fn the_scan_benchmark_runs_and_finds_every_planted_key() {
    let out = Command::new(QUENCH)
        .args([
            "bench",
            "scan",
            "--size-mib",
            "1",
            "--keys",
            "30",
            "--commits",
            "12",
            "--no-baseline",
            "--json",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(result["quench"]["found_planted"], 30);
    assert_eq!(result["quench"]["false_positives"], 0);
    assert_eq!(result["git"]["found"], result["git"]["planted"]);
}
