//! `quench scan` and `quench rules`: find leaked keys, and teach other scanners to.

use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::Context;
use clap::{Args, ValueEnum};
use quench_scan::{Finding, output, sources};
use serde_json::json;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or directories to scan, or `-` for standard input.
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Scan every blob in the history of the git repositories given (all refs), not the working tree.
    #[arg(long)]
    pub git: bool,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Send the keys found to this manager, which revokes them (token from QUENCH_TOKEN, scope
    /// leaks:report).
    #[arg(long)]
    pub report: Option<String>,
    #[arg(long, env = "QUENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Progress on standard error, only when it is a terminal.
struct Progress {
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            shown: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, done: u64, total: u64, unit: &str) {
        if !self.shown || total == 0 {
            return;
        }
        let width = 30;
        let filled = (done.min(total) * width / total) as usize;
        eprint!(
            "\r[{}{}] {done}/{total} {unit}",
            "#".repeat(filled),
            "-".repeat(width as usize - filled)
        );
        let _ = std::io::stderr().flush();
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

fn scan_all(args: &ScanArgs) -> anyhow::Result<Vec<Finding>> {
    let progress = Progress::new();
    let mut findings = Vec::new();
    for path in &args.paths {
        if path == "-" {
            findings.extend(sources::scan_reader(std::io::stdin().lock())?);
            continue;
        }
        let path = PathBuf::from(path);
        if args.git {
            findings.extend(sources::scan_git(&path, |done, total| {
                progress.update(done as u64, total as u64, "blobs");
            })?);
            progress.done();
            continue;
        }
        let files = sources::files_under(&path)?;
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        let mut done = 0;
        for (file, len) in files {
            findings.extend(sources::scan_file(&file)?);
            done += len;
            progress.update(done / 1024, total / 1024, "KiB");
        }
        progress.done();
    }
    Ok(findings)
}

pub async fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let findings = match scan_all(&args) {
        Ok(findings) => findings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Ok(ExitCode::from(2));
        }
    };
    match args.format {
        Format::Text => print!("{}", output::text(&findings)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&output::json(&findings))?
        ),
        Format::Sarif => println!(
            "{}",
            serde_json::to_string_pretty(&output::sarif(&findings))?
        ),
    }
    if let Some(server) = &args.report
        && !findings.is_empty()
        && let Err(error) = report(server, args.token.as_deref(), &findings).await
    {
        eprintln!("error: reporting to {server}: {error:#}");
        return Ok(ExitCode::from(2));
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Sends the keys to the manager's leak intake; prints what became of each.
async fn report(server: &str, token: Option<&str>, findings: &[Finding]) -> anyhow::Result<()> {
    let token =
        token.context("--report needs a token with the leaks:report scope (QUENCH_TOKEN)")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys: Vec<_> = findings
        .iter()
        .map(|f| {
            let mut source = f.location.path.clone();
            if let Some(commit) = &f.location.commit {
                source = format!("{source}@{commit}");
            }
            json!({"key": f.key_text(), "source": "quench scan", "url": format!("{source}:{}", f.location.line)})
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/leaks", server.trim_end_matches('/')))
        .bearer_auth(token)
        .json(&json!({ "keys": keys }))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("HTTP {}: {}", status.as_u16(), body["error"]["message"]);
    }
    for result in body["results"].as_array().into_iter().flatten() {
        eprintln!(
            "reported {}: {}",
            result["key_id"].as_str().unwrap_or("?"),
            result["outcome"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuleFormat {
    Gitleaks,
    Trufflehog,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    pub tool: RuleFormat,
}

/// The pattern of a Quench key; a match is a candidate, the checksum (`quench scan`) confirms it.
pub const KEY_REGEX: &str = r"\b[a-z][a-z0-9]{1,15}_[0-9A-Za-z]{59}\b";

pub fn rules(args: &RulesArgs) -> ExitCode {
    match args.tool {
        RuleFormat::Gitleaks => print!(
            r#"# Quench API keys, for gitleaks (add to .gitleaks.toml). A match has the shape of a key;
# `quench scan` confirms it by its checksum.
[[rules]]
id = "quench-api-key"
description = "Quench API key"
regex = '''{KEY_REGEX}'''
entropy = 3.5
keywords = ["_"]
tags = ["key", "quench"]
"#
        ),
        RuleFormat::Trufflehog => print!(
            r#"# Quench API keys, for trufflehog (--config). A match has the shape of a key; `quench scan`
# confirms it by its checksum.
detectors:
  - name: QuenchAPIKey
    keywords:
      - "_"
    regex:
      key: '{KEY_REGEX}'
"#
        ),
    }
    ExitCode::SUCCESS
}
