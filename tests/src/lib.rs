//! Integration-test support, shared by the tests under `tests/tests/it/`:
//! [`BrokerProcess`] starts a real `mq-broker` on an ephemeral loopback port in a temporary
//! data directory, kills or stops it, and restarts it; [`raw`] speaks the wire protocol by
//! hand, for tests of what a misbehaving client can send; [`rng::Rng`] is a small seeded
//! generator for randomised tests that print their seed and take it back.
//!
//! The binaries are found next to the test executable's directory (`target/<profile>/`),
//! so `cargo build --workspace --bins` must run before the tests (CI does).

#![forbid(unsafe_code)]

pub mod raw;
pub mod rng;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_path_buf()
}

/// The path of one of the workspace's binaries, built by `cargo build --workspace --bins`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A running `mq-broker` child process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct BrokerProcess {
    /// The child, while running.
    child: Option<Child>,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Extra flags it was started with (kept for restarts).
    args: Vec<String>,
    /// Where its log (stderr) goes.
    log_path: PathBuf,
    /// Owns the temporary directory holding data and log, if the harness made it.
    _temp: Option<tempfile::TempDir>,
}

impl BrokerProcess {
    /// Starts a broker with default settings in a fresh temporary directory.
    pub fn start() -> BrokerProcess {
        BrokerProcess::start_with(&[])
    }

    /// Starts a broker with extra flags in a fresh temporary directory.
    pub fn start_with(args: &[&str]) -> BrokerProcess {
        let temp = tempfile::tempdir().expect("creating a temp dir");
        let data_dir = temp.path().join("data");
        let log_path = temp.path().join("broker.log");
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let (child, address) = spawn(&data_dir, "127.0.0.1:0", &args, &log_path);
        BrokerProcess {
            child: Some(child),
            address,
            data_dir,
            args,
            log_path,
            _temp: Some(temp),
        }
    }

    /// Starts a broker with extra flags whose data directory is `data_dir` (for example on a
    /// file system the test mounted); its log goes to a fresh temporary directory.
    pub fn start_in(data_dir: &Path, args: &[&str]) -> BrokerProcess {
        let temp = tempfile::tempdir().expect("creating a temp dir");
        let log_path = temp.path().join("broker.log");
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let (child, address) = spawn(data_dir, "127.0.0.1:0", &args, &log_path);
        BrokerProcess {
            child: Some(child),
            address,
            data_dir: data_dir.to_path_buf(),
            args,
            log_path,
            _temp: Some(temp),
        }
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        self.address.to_string()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running: `false` once it exited (or was killed), which
    /// a test of hostile input asserts never happens by itself.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How the process ended, once it has (`None` while it runs): for failure messages,
    /// where `signal: 7 (SIGBUS)` tells a different story from an exit code.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The broker's resident set size (`VmRSS` of `/proc/PID/status`), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The directory of a partition's segments.
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{partition}"))
    }

    /// Kills the broker with SIGKILL and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with SIGTERM and waits (at most 30 s) for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the broker is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the broker") {
                return status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("the broker did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the broker again on the same address and data directory (after `kill9` or
    /// `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        let (child, address) = spawn(
            &self.data_dir,
            &self.address.to_string(),
            &self.args,
            &self.log_path,
        );
        assert_eq!(address, self.address);
        self.child = Some(child);
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(data_dir: &Path, listen: &str, args: &[String], log_path: &Path) -> (Child, SocketAddr) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("opening the broker log");
    let mut child = Command::new(binary("mq-broker"))
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("starting mq-broker");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = match receiver.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "mq-broker did not start within 20 s; log:\n{}",
                read(log_path)
            );
        }
    };
    let Some(address) = line
        .trim()
        .strip_prefix("mq-broker listening on ")
        .and_then(|address| address.parse().ok())
    else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "mq-broker did not start (said {line:?}); log:\n{}",
            read(log_path)
        );
    };
    (child, address)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
