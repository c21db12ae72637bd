//! `quench bench scan`: scanner throughput, recall and false positives on a generated corpus, against
//! detect-secrets on the same corpus in the same run.
//!
//! The corpus is text that looks like a repository: code with snake_case identifiers, configuration,
//! base64 and hex blobs, and planted among it valid keys, keys with a broken checksum and random strings of
//! the key's shape. Only the valid keys should be found. A git repository with many commits measures
//! history scanning (quench only: detect-secrets does not read history).

use std::{
    collections::HashSet,
    io::Write,
    path::Path,
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Args;
use quench_core::{ApiKey, Prefix, base62};
use quench_scan::sources;
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct ScanBenchArgs {
    /// Corpus size in MiB.
    #[arg(long, default_value_t = 64)]
    pub size_mib: usize,
    /// Valid keys planted (as many broken and look-alike strings again).
    #[arg(long, default_value_t = 1_000)]
    pub keys: usize,
    /// Commits in the git repository scanned with --git.
    #[arg(long, default_value_t = 200)]
    pub commits: usize,
    /// Skip the detect-secrets comparison.
    #[arg(long)]
    pub no_baseline: bool,
    #[arg(long)]
    pub json: bool,
}

/// A small deterministic generator, so corpora are comparable run to run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    fn alnum(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| base62::ALPHABET[(self.next() % 62) as usize] as char)
            .collect()
    }
}

const WORDS: &[&str] = &[
    "let",
    "user_id",
    "request_handler",
    "api_base_url",
    "max_retries",
    "fn",
    "return",
    "config",
    "token",
    "secret_name",
    "HTTP_PROXY",
    "self",
    "parse_header",
    "status_code",
    "Ok",
    "None",
    "async",
    "await",
];

fn noise_line(rng: &mut Rng) -> String {
    match rng.next() % 6 {
        0 => format!("data: \"{}\"", rng.alnum(64)),
        1 => format!("sha = {:016x}{:016x}", rng.next(), rng.next()),
        _ => (0..8)
            .map(|_| rng.pick(WORDS))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Writes the corpus; returns the planted valid keys.
fn corpus(dir: &Path, size: usize, keys: usize) -> anyhow::Result<HashSet<String>> {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let files = 64;
    let per_file = size / files;
    let mut planted = HashSet::new();
    let mut to_plant: Vec<String> = Vec::new();
    for _ in 0..keys {
        let key = ApiKey::generate(Prefix::default())?.expose();
        planted.insert(key.clone());
        // As leaks look: an environment file, quoted in code, a JSON value.
        to_plant.push(match planted.len() % 3 {
            0 => format!("API_KEY={key}"),
            1 => format!("client = Client(token=\"{key}\")"),
            _ => format!("  \"api_key\": \"{key}\","),
        });
        // A broken checksum, and a random string of the right shape.
        let mut broken = key.into_bytes();
        let last = broken.len() - 1;
        broken[last] = if broken[last] == b'a' { b'b' } else { b'a' };
        to_plant.push(format!("OLD_KEY={}", String::from_utf8(broken)?));
        to_plant.push(format!("id = qk_{}", rng.alnum(59)));
    }
    let mut plant = to_plant.into_iter();
    let every = (size / 120 / (keys * 3).max(1)).max(1);
    let mut line_no = 0usize;
    for f in 0..files {
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(dir.join(format!("file{f:03}.txt")))?);
        let mut written = 0;
        while written < per_file {
            line_no += 1;
            let line = match line_no % every {
                0 => plant.next().unwrap_or_else(|| noise_line(&mut rng)),
                _ => noise_line(&mut rng),
            };
            writeln!(out, "{line}")?;
            written += line.len() + 1;
        }
    }
    // Anything not placed yet goes into one last file.
    let rest: Vec<String> = plant.collect();
    std::fs::write(dir.join("rest.txt"), rest.join("\n") + "\n")?;
    Ok(planted)
}

fn key_shaped(text: &str) -> Option<String> {
    let at = text.find("qk_")?;
    text.get(at..at + 62).map(str::to_owned)
}

fn baseline(dir: &Path, planted: &HashSet<String>) -> anyhow::Result<Value> {
    let started = Instant::now();
    // detect-secrets reports nothing for an absolute path argument: run it inside the corpus.
    let out = Command::new("detect-secrets")
        .args(["scan", "--all-files"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .context("running detect-secrets (pip install detect-secrets, or pass --no-baseline)")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "detect-secrets failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let report: Value = serde_json::from_slice(&out.stdout)?;
    // detect-secrets reports (file, line); read the line to see what it flagged.
    let (mut true_positives, mut false_positives) = (HashSet::new(), 0usize);
    for (file, secrets) in report["results"].as_object().into_iter().flatten() {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for secret in secrets.as_array().into_iter().flatten() {
            let line = secret["line_number"].as_u64().unwrap_or(0) as usize;
            let flagged = lines.get(line.saturating_sub(1)).copied().unwrap_or("");
            match key_shaped(flagged).filter(|k| planted.contains(k)) {
                Some(key) => {
                    true_positives.insert(key);
                }
                None => false_positives += 1,
            }
        }
    }
    Ok(json!({
        "seconds": seconds,
        "found_planted": true_positives.len(),
        "false_positives": false_positives,
    }))
}

fn git_repo(dir: &Path, commits: usize) -> anyhow::Result<(u64, usize)> {
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=bench",
                "-c",
                "user.email=bench@localhost",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("git {args:?} failed");
        }
        Ok(())
    };
    git(&["init", "-q"])?;
    let mut rng = Rng(42);
    let mut bytes = 0u64;
    let mut planted = 0;
    for c in 0..commits {
        let mut text = String::new();
        for _ in 0..400 {
            text.push_str(&noise_line(&mut rng));
            text.push('\n');
        }
        if c % 10 == 0 {
            text.push_str(&format!(
                "KEY={}\n",
                ApiKey::generate(Prefix::default())?.expose()
            ));
            planted += 1;
        }
        bytes += text.len() as u64;
        std::fs::write(dir.join(format!("f{}.txt", c % 20)), text)?;
        git(&["add", "."])?;
        git(&["commit", "-q", "-m", &format!("c{c}")])?;
    }
    Ok((bytes, planted))
}

pub fn run(args: ScanBenchArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let text_dir = dir.path().join("corpus");
    std::fs::create_dir_all(&text_dir)?;
    eprintln!(
        "writing a {} MiB corpus with {} keys ...",
        args.size_mib, args.keys
    );
    let planted = corpus(&text_dir, args.size_mib << 20, args.keys)?;
    let (total, quench) = scan_corpus(&text_dir, &planted)?;
    let mib = total as f64 / (1 << 20) as f64;
    let baseline = if args.no_baseline {
        Value::Null
    } else {
        eprintln!("running detect-secrets on the same corpus ...");
        let mut b = baseline(&text_dir, &planted)?;
        b["mib_per_s"] = json!(mib / b["seconds"].as_f64().unwrap_or(f64::NAN));
        b
    };
    let git = scan_history(&dir.path().join("repo"), args.commits)?;
    let speedup = (baseline["seconds"].as_f64())
        .zip(quench["seconds"].as_f64())
        .map(|(b, q)| b / q);
    let result = json!({
        "corpus_mib": mib,
        "planted": planted.len(),
        "decoys": planted.len() * 2,
        "quench": quench,
        "detect_secrets": baseline,
        "speedup": speedup,
        "git": git,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_table(&result);
    }
    Ok(ExitCode::SUCCESS)
}

/// Scans every file under `dir` with Quench's scanner: the corpus's size in bytes, and the row of the
/// result (time, throughput, planted keys found, false positives).
fn scan_corpus(dir: &Path, planted: &HashSet<String>) -> anyhow::Result<(u64, Value)> {
    let files = sources::files_under(dir)?;
    let total: u64 = files.iter().map(|(_, len)| len).sum();
    // Read once so both scanners start from the page cache.
    for (file, _) in &files {
        std::fs::read(file)?;
    }
    let started = Instant::now();
    let mut found = Vec::new();
    for (file, _) in &files {
        found.extend(sources::scan_file(file)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let found_keys: HashSet<String> = found.iter().map(|f| f.key_text().to_owned()).collect();
    let row = json!({
        "seconds": seconds,
        "mib_per_s": total as f64 / (1 << 20) as f64 / seconds,
        "found_planted": found_keys.intersection(planted).count(),
        "false_positives": found_keys.difference(planted).count(),
    });
    Ok((total, row))
}

/// Builds a git repository of `commits` commits at `repo` and times scanning its history.
fn scan_history(repo: &Path, commits: usize) -> anyhow::Result<Value> {
    eprintln!("building a git repository with {commits} commits ...");
    std::fs::create_dir_all(repo)?;
    let (git_bytes, git_planted) = git_repo(repo, commits)?;
    let started = Instant::now();
    let history = sources::scan_git(repo, |_, _| {})?;
    let git_seconds = started.elapsed().as_secs_f64();
    let git_found: HashSet<String> = history.iter().map(|f| f.key_id.clone()).collect();
    Ok(
        json!({"commits": commits, "blob_mib": git_bytes as f64 / (1 << 20) as f64,
              "seconds": git_seconds, "planted": git_planted, "found": git_found.len()}),
    )
}

fn print_table(result: &Value) {
    println!(
        "corpus: {:.1} MiB, {} planted keys, {} decoys",
        result["corpus_mib"].as_f64().unwrap_or(0.0),
        result["planted"],
        result["decoys"]
    );
    println!(
        "{:<16} {:>12} {:>10} {:>16}",
        "scanner", "MiB/s", "found", "false positives"
    );
    for (name, row) in [
        ("quench", &result["quench"]),
        ("detect-secrets", &result["detect_secrets"]),
    ] {
        if row.is_null() {
            continue;
        }
        println!(
            "{name:<16} {:>12.2} {:>10} {:>16}",
            row["mib_per_s"].as_f64().unwrap_or(f64::NAN),
            row["found_planted"].to_string(),
            row["false_positives"].to_string()
        );
    }
    if let Some(speedup) = result["speedup"].as_f64() {
        println!("quench is {speedup:.0}x the throughput of detect-secrets");
    }
    let git = &result["git"];
    println!(
        "git history: {} commits, {:.1} MiB of blobs, {} of {} planted keys found in {:.2} s",
        git["commits"],
        git["blob_mib"].as_f64().unwrap_or(0.0),
        git["found"],
        git["planted"],
        git["seconds"].as_f64().unwrap_or(0.0)
    );
}
