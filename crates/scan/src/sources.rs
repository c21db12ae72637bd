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
#[non_exhaustive]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// `git` could not be started.
    #[error("git: cannot run git {command}: {source}")]
    GitMissing {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `git` ran and failed (not a repository, say): what it printed.
    #[error("git: {0}")]
    GitFailed(String),
    /// `git cat-file` answered something other than a blob header.
    #[error("git: unexpected cat-file output: {0:?}")]
    CatFile(String),
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
    let (blobs, paths) = list_blobs(repo)?;
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|source| ScanError::GitMissing {
            command: "cat-file",
            source,
        })?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ScanError::GitFailed("cat-file without pipes".into()));
    };
    let wanted = blobs.clone();
    let writer = std::thread::spawn(move || {
        for sha in wanted {
            if writeln!(stdin, "{sha}").is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::with_capacity(1 << 20, stdout);
    let mut found = Vec::new();
    for (n, sha) in blobs.iter().enumerate() {
        let data = read_blob(&mut reader, repo)?;
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

/// Every blob of the repository (`git rev-list --all --objects`), with the path each was first seen at.
fn list_blobs(repo: &Path) -> Result<(Vec<String>, HashMap<String, String>), ScanError> {
    let listed = git(repo)
        .args([
            "rev-list",
            "--all",
            "--objects",
            "--filter=object:type=blob",
        ])
        .output()
        .map_err(|source| ScanError::GitMissing {
            command: "rev-list",
            source,
        })?;
    if !listed.status.success() {
        return Err(ScanError::GitFailed(
            String::from_utf8_lossy(&listed.stderr).trim().to_owned(),
        ));
    }
    Ok(blob_list(&String::from_utf8_lossy(&listed.stdout)))
}

/// `<sha> <path>` lines as blob ids in first-seen order (each once), and the first path of each. Lines
/// without a path (commits and trees, were any listed) are not blobs.
fn blob_list(listing: &str) -> (Vec<String>, HashMap<String, String>) {
    let mut paths: HashMap<String, String> = HashMap::new();
    let mut blobs = Vec::new();
    for line in listing.lines() {
        if let Some((sha, path)) = line.split_once(' ')
            && !paths.contains_key(sha)
        {
            paths.insert(sha.to_owned(), path.to_owned());
            blobs.push(sha.to_owned());
        }
    }
    (blobs, paths)
}

/// The next blob from `git cat-file --batch`: its header line, its bytes and the newline after them.
fn read_blob(reader: &mut impl BufRead, repo: &Path) -> Result<Vec<u8>, ScanError> {
    let mut header = String::new();
    reader.read_line(&mut header).map_err(io(repo))?;
    let size = blob_size(&header).ok_or(ScanError::CatFile(header))?;
    let mut data = vec![0; size + 1];
    reader.read_exact(&mut data).map_err(io(repo))?;
    data.truncate(size);
    Ok(data)
}

/// The size in a `<sha> blob <size>` header.
fn blob_size(header: &str) -> Option<usize> {
    header.split_whitespace().nth(2)?.parse().ok()
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
        .map_err(|source| ScanError::GitMissing {
            command: "log",
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_listing_keeps_each_blob_once_with_its_first_path() {
        let listing = "aaa src/a.txt\nccc\nbbb b.txt\naaa renamed/a.txt\nddd dir/with space.txt\n";
        let (blobs, paths) = blob_list(listing);
        assert_eq!(blobs, ["aaa", "bbb", "ddd"]);
        assert_eq!(paths["aaa"], "src/a.txt");
        assert_eq!(paths["ddd"], "dir/with space.txt");
        assert_eq!(blob_list(""), (Vec::new(), HashMap::new()));
    }

    #[test]
    fn a_cat_file_header_gives_the_blob_size() {
        assert_eq!(blob_size("0123abcd blob 42\n"), Some(42));
        assert_eq!(blob_size("0123abcd missing\n"), None);
        assert_eq!(blob_size("0123abcd blob many\n"), None);
        let mut batch: &[u8] = b"0123 blob 5\nhello\n0123 blob 0\n\n";
        assert_eq!(
            read_blob(&mut batch, Path::new(".")).expect("blob"),
            b"hello"
        );
        assert_eq!(read_blob(&mut batch, Path::new(".")).expect("blob"), b"");
        assert!(matches!(
            read_blob(&mut batch, Path::new(".")),
            Err(ScanError::CatFile(_))
        ));
    }
}
