//! Every input in the committed fuzz corpus (`fuzz/corpus/<target>/`), run through the same checks the
//! fuzz targets run (`fuzz/checks`): the seeds, and every input a fuzzing run found worth keeping, stay
//! regression tests on stable Rust without a nightly build. See docs/fuzzing.md.

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, check) = quench_fuzz_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let files = corpus(target);
    assert!(!files.is_empty(), "the {target} corpus is empty");
    let failed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data = fs::read(path).expect("a corpus file reads");
            catch_unwind(AssertUnwindSafe(|| check(&data)))
                .err()
                .map(|_| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs fail their checks: {failed:?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut on_disk: Vec<String> = fs::read_dir(dir)
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut targets: Vec<String> = quench_fuzz_checks::TARGETS
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect();
    targets.sort();
    assert_eq!(on_disk, targets);
    let tests = include_str!("fuzz_corpus.rs");
    for target in targets {
        assert!(
            tests.contains(&format!("fn {target}() {{")),
            "no replay test for {target}"
        );
    }
}

#[test]
fn api() {
    replay("api");
}

#[test]
fn event() {
    replay("event");
}

#[test]
fn github() {
    replay("github");
}

#[test]
fn key() {
    replay("key");
}

#[test]
fn scan() {
    replay("scan");
}

#[test]
fn snapshot() {
    replay("snapshot");
}

#[test]
fn usage_policy() {
    replay("usage_policy");
}

#[test]
fn wire() {
    replay("wire");
}

/// The `api` seeds reach the handlers (authenticated, well-formed), so the fuzzer starts from requests
/// that succeed rather than from ones refused at the door.
#[test]
fn api_seeds_reach_the_handlers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/api");
    for (seed, expected) in [
        ("create", 201),
        ("create-at", 201),
        ("list", 200),
        ("show", 404),
        ("bulk-ids", 200),
        ("leaks", 200),
        ("token", 201),
        ("events", 200),
        ("edge", 204),
        ("audit", 200),
        ("usage-policy", 200),
        ("verify", 200),
        ("forward-auth", 401),
    ] {
        let data = fs::read(dir.join(seed)).expect("a seed");
        assert_eq!(
            quench_fuzz_checks::api::answer(&data),
            Some(expected),
            "{seed}"
        );
    }
}
