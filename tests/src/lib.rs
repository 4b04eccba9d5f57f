//! Integration-test support: helpers shared by the tests under `tests/tests/`.
//!
//! The tests themselves live in one test binary (`tests/tests/it/main.rs`) so that they link
//! once. For now it holds the tidy checks that keep the code base's conventions.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}
