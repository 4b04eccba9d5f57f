//! Tidy checks: conventions of the code base that the compiler cannot see, checked on every
//! test run (after rust-analyzer's `tidy.rs`).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::fs;
use std::path::{Path, PathBuf};

use mq_tests::workspace_root;

/// Every `.rs` file of the workspace's crates, with its path relative to the root.
fn rust_files() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for krate in ["protocol", "broker", "client", "tools", "tests"] {
        collect(&root.join(krate), &mut files);
    }
    assert!(
        files.len() > 10,
        "found only {} files: wrong root?",
        files.len()
    );
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            (path.strip_prefix(&root).unwrap().to_path_buf(), text)
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && name != "fuzz" && !name.starts_with('.') {
                collect(&path, files);
            }
        } else if name.ends_with(".rs") {
            files.push(path);
        }
    }
}

/// Lines that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim_start)
        .filter(|line| !line.starts_with("//"))
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let missing: Vec<_> = rust_files()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading `//!` doc: {missing:?}"
    );
}

#[test]
fn the_storage_engine_knows_nothing_about_the_network() {
    let forbidden = [
        "tokio::net",
        "crate::server",
        "std::net",
        "mq_protocol::request",
    ];
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|(path, _)| {
            path.starts_with("broker/src/log") || path.starts_with("broker/src/offsets")
        })
        .filter(|(_, text)| {
            code_lines(text).any(|line| forbidden.iter().any(|word| line.contains(word)))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "network code in broker::log or broker::offsets: {offenders:?}"
    );
}

/// The only files allowed `unsafe`, and why.
const UNSAFE_ALLOWED: [&str; 2] = [
    // Memory-mapped index files.
    "broker/src/log/index.rs",
    // One libc::mallopt call at start-up, before any other thread exists.
    "broker/src/bin/mq-broker.rs",
];

#[test]
fn unsafe_code_lives_only_where_allowed() {
    // Built from pieces so that this file does not match itself.
    let (block, function) = (["unsafe", " {"].concat(), ["unsafe", " fn"].concat());
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|(path, _)| {
            !UNSAFE_ALLOWED
                .iter()
                .any(|allowed| path == Path::new(allowed))
        })
        .filter(|(_, text)| {
            code_lines(text).any(|line| line.contains(&block) || line.contains(&function))
        })
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "unsafe outside {UNSAFE_ALLOWED:?}: {offenders:?}"
    );
}

#[test]
fn libraries_do_not_print() {
    let offenders: Vec<_> = rust_files()
        .into_iter()
        .filter(|(path, _)| {
            ["protocol/src", "broker/src", "client/src"]
                .iter()
                .any(|library| path.starts_with(library))
                && !path.components().any(|part| part.as_os_str() == "bin")
        })
        .filter(|(_, text)| code_lines(text).any(|line| line.contains("println!")))
        .map(|(path, _)| path)
        .collect();
    assert!(
        offenders.is_empty(),
        "libraries print instead of logging: {offenders:?}"
    );
}
