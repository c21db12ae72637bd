//! Where keys are looked for: byte buffers, files and directories, standard input, git history.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::Serialize;

use crate::find::find_in;

/// Files larger than this are read in full all the same, but a warning says so; nothing is skipped.
pub const LARGE_FILE: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("git: {0}")]
    Git(String),
}

/// Where a key was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// A file path, `-` for standard input, or the path a blob had in git.
    pub path: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in bytes.
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A confirmed key. Serialises and prints without its secret.
#[derive(Clone, Serialize)]
pub struct Finding {
    pub location: Location,
    pub prefix: String,
    pub key_id: String,
    /// `<prefix>_<key id>` followed by a mark where the secret was.
    pub redacted: String,
    #[serde(skip)]
    key: String,
}

impl std::fmt::Debug for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Finding({} at {}:{})",
            self.redacted, self.location.path, self.location.line
        )
    }
}

impl Finding {
    /// The full key: only for proving the leak to the manager (`quench scan --report`).
    pub fn key_text(&self) -> &str {
        &self.key
    }
}

/// Keys in one buffer, located by line and column.
pub fn scan_bytes(path: &str, data: &[u8], commit: Option<&str>) -> Vec<Finding> {
    let candidates = find_in(data);
    if candidates.is_empty() {
        return Vec::new();
    }
    let mut line = 1;
    let mut line_start = 0;
    let mut scanned = 0;
    candidates
        .into_iter()
        .map(|candidate| {
            for (i, &b) in data[scanned..candidate.offset].iter().enumerate() {
                if b == b'\n' {
                    line += 1;
                    line_start = scanned + i + 1;
                }
            }
            scanned = candidate.offset;
            let key =
                String::from_utf8_lossy(&data[candidate.offset..candidate.offset + candidate.len])
                    .into_owned();
            Finding {
                location: Location {
                    path: path.to_owned(),
                    line,
                    column: candidate.offset - line_start + 1,
                    commit: commit.map(str::to_owned),
                },
                prefix: candidate.prefix.to_string(),
                key_id: candidate.id.to_string(),
                redacted: format!("{}_{}{}", candidate.prefix, candidate.id, "*".repeat(8)),
                key,
            }
        })
        .collect()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ScanError + '_ {
    move |source| ScanError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Every file under `path` (or `path` itself), without following symbolic links or entering `.git`.
pub fn files_under(path: &Path) -> Result<Vec<(PathBuf, u64)>, ScanError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(vec![(path.to_owned(), meta.len())]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            if kind.is_dir() && entry.file_name() != ".git" {
                pending.push(entry.path());
            } else if kind.is_file() {
                let len = entry.metadata().map_err(io(&entry.path()))?.len();
                files.push((entry.path(), len));
            }
        }
    }
    files.sort();
    Ok(files)
}

pub fn scan_file(path: &Path) -> Result<Vec<Finding>, ScanError> {
    let data = std::fs::read(path).map_err(io(path))?;
    Ok(scan_bytes(&path.display().to_string(), &data, None))
}

pub fn scan_reader(mut reader: impl Read) -> Result<Vec<Finding>, ScanError> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data).map_err(io(Path::new("-")))?;
    Ok(scan_bytes("-", &data, None))
}

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo);
    command
}

/// Every blob ever committed on any ref of the repository at `repo`, each read once. `progress` is called
/// with the bytes read so far and the total blob count.
pub fn scan_git(
    repo: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Finding>, ScanError> {
    let listed = git(repo)
        .args([
            "rev-list",
            "--all",
            "--objects",
            "--filter=object:type=blob",
        ])
        .output()
        .map_err(|e| ScanError::Git(format!("cannot run git: {e}")))?;
    if !listed.status.success() {
        return Err(ScanError::Git(
            String::from_utf8_lossy(&listed.stderr).trim().to_owned(),
        ));
    }
    let mut paths: HashMap<String, String> = HashMap::new();
    let mut blobs = Vec::new();
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if let Some((sha, path)) = line.split_once(' ')
            && paths.insert(sha.to_owned(), path.to_owned()).is_none()
        {
            blobs.push(sha.to_owned());
        }
    }
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| ScanError::Git(format!("cannot run git cat-file: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ScanError::Git("no stdin".into()))?;
    let wanted = blobs.clone();
    let writer = std::thread::spawn(move || {
        for sha in wanted {
            if writeln!(stdin, "{sha}").is_err() {
                break;
            }
        }
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| ScanError::Git("no stdout".into()))?;
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut found = Vec::new();
    for (n, sha) in blobs.iter().enumerate() {
        let mut header = String::new();
        reader.read_line(&mut header).map_err(io(repo))?;
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ScanError::Git(format!("unexpected cat-file output: {header:?}")))?;
        let mut data = vec![0; size + 1];
        reader.read_exact(&mut data).map_err(io(repo))?;
        data.truncate(size);
        let mut hits = scan_bytes(paths.get(sha).map_or("", String::as_str), &data, None);
        if !hits.is_empty() {
            let commit = introducing_commit(repo, sha)?;
            for hit in &mut hits {
                hit.location.commit = commit.clone();
            }
            found.extend(hits);
        }
        progress(n + 1, blobs.len());
    }
    let _ = writer.join();
    let _ = child.wait();
    Ok(found)
}

/// The oldest commit on any ref that added this blob.
fn introducing_commit(repo: &Path, blob: &str) -> Result<Option<String>, ScanError> {
    let out = git(repo)
        .args([
            "log",
            "--all",
            "--reverse",
            "--format=%H",
            &format!("--find-object={blob}"),
        ])
        .output()
        .map_err(|e| ScanError::Git(e.to_string()))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned))
}
