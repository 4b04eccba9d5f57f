//! The topic registry on disk: one small TOML file per topic under `<data-dir>/topics/`,
//! written atomically (temp file, fsync, rename, fsync dir), read at start-up.
//!
//! It stores what a topic is (name, partition count, replication factor, settings); the
//! partitions' data lives in `<data-dir>/<topic>-<partition>/`, owned by the log manager.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TopicConfig;

/// The longest topic name (as Kafka's, so that `<name>-<partition>` fits a file name).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// The most partitions one topic may have.
pub const PARTITIONS_MAX: i32 = 10_000;

/// What a topic is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Its name.
    pub name: String,
    /// Number of partitions, numbered from 0.
    pub partitions: i32,
    /// Replicas per partition (1 until replication exists).
    pub replication_factor: i16,
    /// Its log settings.
    pub config: TopicConfig,
}

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TopicStoreError {
    /// An I/O error on a registry file.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A registry file that does not parse.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TopicStoreError + '_ {
    move |source| TopicStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a topic name: 1 to 249 characters of `a-z A-Z 0-9 . _ -`, not `.` or `..`, and
/// not starting with `__`, which is reserved for the broker's own logs (such as
/// `__consumer_offsets`, whose directory must never be taken for a topic's).
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".to_string());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is {} characters long; the limit is {TOPIC_NAME_BYTES_MAX}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not a valid topic name"));
    }
    if name.starts_with("__") {
        return Err(format!(
            "topic name '{name}' starts with '__', which is reserved for internal use"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{}' contains '{}'; allowed are letters, digits, '.', '_' and '-'",
            name.escape_default(),
            bad.escape_default()
        ));
    }
    Ok(())
}

/// The registry's directory.
#[derive(Debug)]
pub struct TopicStore {
    /// `<data-dir>/topics`.
    dir: PathBuf,
}

impl TopicStore {
    /// Opens (creating if needed) the registry in `data_dir` and reads every topic.
    pub fn open(data_dir: &Path) -> Result<(TopicStore, Vec<TopicRecord>), TopicStoreError> {
        let dir = data_dir.join("topics");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut topics = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let path = entry.map_err(io_error(&dir))?.path();
            match path.extension().and_then(|ext| ext.to_str()) {
                Some("toml") => {}
                Some("tmp") => {
                    fs::remove_file(&path).map_err(io_error(&path))?;
                    continue;
                }
                _ => continue,
            }
            let text = fs::read_to_string(&path).map_err(io_error(&path))?;
            let topic: TopicRecord =
                toml::from_str(&text).map_err(|error| TopicStoreError::Parse {
                    path: path.clone(),
                    reason: error.to_string(),
                })?;
            topics.push(topic);
        }
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((TopicStore { dir }, topics))
    }

    /// Saves a topic durably, replacing any earlier version atomically.
    pub fn save(&self, topic: &TopicRecord) -> Result<(), TopicStoreError> {
        let path = self.path(&topic.name);
        let tmp = self.dir.join(format!("{}.tmp", topic.name));
        let text = toml::to_string(topic).map_err(|error| TopicStoreError::Parse {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_error(&tmp))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        self.sync_dir()
    }

    /// Removes a topic durably.
    pub fn remove(&self, name: &str) -> Result<(), TopicStoreError> {
        let path = self.path(name);
        fs::remove_file(&path).map_err(io_error(&path))?;
        self.sync_dir()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.toml"))
    }

    fn sync_dir(&self) -> Result<(), TopicStoreError> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["a", "orders", "orders.v2", "my_topic-1", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ä",
            "a\0",
            &"x".repeat(250),
            "__consumer_offsets",
            "__x",
        ] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_survive_reopen_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let (store, topics) = TopicStore::open(dir.path()).unwrap();
        assert!(topics.is_empty());
        let topic = TopicRecord {
            name: "orders".to_string(),
            partitions: 3,
            replication_factor: 1,
            config: TopicConfig::default(),
        };
        store.save(&topic).unwrap();
        fs::write(dir.path().join("topics/half.tmp"), "garbage").unwrap();
        let (store, topics) = TopicStore::open(dir.path()).unwrap();
        assert_eq!(topics, vec![topic]);
        assert!(!dir.path().join("topics/half.tmp").exists());
        store.remove("orders").unwrap();
        assert!(TopicStore::open(dir.path()).unwrap().1.is_empty());
    }
}
