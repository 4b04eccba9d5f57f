//! Integration-test support, shared by the tests under `tests/tests/it/`:
//! [`BrokerProcess`] starts a real `mq-broker` on an ephemeral loopback port in a temporary
//! data directory, kills or stops it, and restarts it; [`TestCluster`] starts a controller
//! and brokers as such processes and waits until every broker has registered; [`raw`] speaks
//! the wire protocol by hand, for tests of what a misbehaving client can send; [`rng::Rng`]
//! is a small seeded generator for randomised tests that print their seed and take it back.
//!
//! The binaries are found next to the test executable's directory (`target/<profile>/`),
//! so `cargo build --workspace --bins` must run before the tests (CI does).

#![forbid(unsafe_code)]

pub mod raw;
pub mod rng;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mq_protocol::request::{ApiKey, Request};
use mq_protocol::response::Response;
use mq_protocol::ErrorCode;

use crate::raw::RawConnection;

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

/// The node id of a [`TestCluster`]'s controller.
pub const CONTROLLER_NODE_ID: i32 = 100;

/// Timing flags of every [`TestCluster`] member, so that a killed broker is fenced within a
/// second rather than after the default session timeout. The controller gets them too: it is
/// the one that fences.
const CLUSTER_TIMING_ARGS: [&str; 4] = [
    "--heartbeat-interval-ms",
    "100",
    "--session-timeout-ms",
    "1000",
];

/// How long [`TestCluster::start`] waits for every broker to register.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A cluster of `mq-broker` processes: one controller (`--role controller`, node id
/// [`CONTROLLER_NODE_ID`]) and brokers (`--role broker`, node ids 1..=N), each a
/// [`BrokerProcess`] with its own temporary data directory, killed by PID on drop.
///
/// Members are addressed by node id. A restarted member keeps its data directory and its
/// port (as [`BrokerProcess::restart`] does), so the brokers' `--controller` flag stays
/// right across a restart of the controller.
#[derive(Debug)]
pub struct TestCluster {
    /// The controller.
    controller: BrokerProcess,
    /// The brokers: node id `index + 1`.
    brokers: Vec<BrokerProcess>,
}

impl TestCluster {
    /// Starts a controller and `brokers` brokers, each broker with `extra_broker_args` on top
    /// of its role, node id, controller address and timing flags, and waits until every
    /// broker sees every other registered and unfenced.
    pub fn start(brokers: usize, extra_broker_args: &[&str]) -> TestCluster {
        TestCluster::start_with(brokers, &[], |_| {
            extra_broker_args
                .iter()
                .map(|arg| arg.to_string())
                .collect()
        })
    }

    /// As [`TestCluster::start`], with extra flags for the controller and per broker
    /// (`broker_args` is given each node id; for example `--rack` by node).
    pub fn start_with(
        brokers: usize,
        controller_args: &[&str],
        broker_args: impl Fn(i32) -> Vec<String>,
    ) -> TestCluster {
        let brokers = i32::try_from(brokers).expect("a test cluster has few brokers");
        assert!(
            brokers < CONTROLLER_NODE_ID,
            "broker node ids must stay below the controller's"
        );
        let controller_id = CONTROLLER_NODE_ID.to_string();
        let mut args = vec!["--role", "controller", "--node-id", &controller_id];
        args.extend(CLUSTER_TIMING_ARGS);
        args.extend(controller_args);
        let controller = BrokerProcess::start_with(&args);
        let controller_address = controller.bootstrap();
        let brokers = (1..=brokers)
            .map(|node_id| {
                let node_id_text = node_id.to_string();
                let extra = broker_args(node_id);
                let mut args = vec![
                    "--role",
                    "broker",
                    "--node-id",
                    &node_id_text,
                    "--controller",
                    &controller_address,
                ];
                args.extend(CLUSTER_TIMING_ARGS);
                args.extend(extra.iter().map(String::as_str));
                BrokerProcess::start_with(&args)
            })
            .collect();
        let mut cluster = TestCluster {
            controller,
            brokers,
        };
        cluster.wait_until_ready(CLUSTER_READY_TIMEOUT);
        cluster
    }

    /// The controller.
    pub fn controller(&self) -> &BrokerProcess {
        &self.controller
    }

    /// The controller, to kill or restart.
    pub fn controller_mut(&mut self) -> &mut BrokerProcess {
        &mut self.controller
    }

    /// Broker `node_id` (1..=N).
    pub fn broker(&self, node_id: i32) -> &BrokerProcess {
        &self.brokers[self.broker_index(node_id)]
    }

    /// Broker `node_id` (1..=N), to kill or restart.
    pub fn broker_mut(&mut self, node_id: i32) -> &mut BrokerProcess {
        let index = self.broker_index(node_id);
        &mut self.brokers[index]
    }

    /// Every broker, by node id.
    pub fn brokers(&self) -> &[BrokerProcess] {
        &self.brokers
    }

    /// The member with `node_id`: the controller for [`CONTROLLER_NODE_ID`], else a broker.
    pub fn member_mut(&mut self, node_id: i32) -> &mut BrokerProcess {
        if node_id == CONTROLLER_NODE_ID {
            &mut self.controller
        } else {
            self.broker_mut(node_id)
        }
    }

    /// Every broker's `host:port`, comma-separated (stopped ones included: a restart keeps
    /// the port), for clients and tools.
    pub fn bootstrap(&self) -> String {
        let addresses: Vec<String> = self.brokers.iter().map(BrokerProcess::bootstrap).collect();
        addresses.join(",")
    }

    /// Kills member `node_id` (controller or broker) with SIGKILL.
    pub fn kill9(&mut self, node_id: i32) {
        self.member_mut(node_id).kill9();
    }

    /// Starts member `node_id` again, on its port and data directory.
    pub fn restart(&mut self, node_id: i32) {
        self.member_mut(node_id).restart();
    }

    /// Waits until every running broker answers DescribeCluster with every running broker
    /// registered and unfenced (after a start, or a broker's restart); panics with the
    /// members' logs after `timeout`. Only the brokers' views are checked: a restarted
    /// controller is ready once it answers, which [`BrokerProcess::restart`] waits for.
    pub fn wait_until_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        loop {
            let running: BTreeSet<i32> = (1..)
                .zip(self.brokers.iter_mut())
                .filter_map(|(node_id, broker)| broker.is_running().then_some(node_id))
                .collect();
            let views: Vec<String> = running
                .iter()
                .filter_map(|node_id| {
                    let alive = self.alive_brokers(*node_id);
                    let ready = matches!(&alive, Ok(alive) if running.is_subset(alive));
                    (!ready).then(|| format!("broker {node_id} sees {alive:?}"))
                })
                .collect();
            if views.is_empty() {
                return;
            }
            if started.elapsed() > timeout {
                panic!(
                    "the cluster was not ready within {timeout:?}: running brokers {running:?}, \
                     {}\n{}",
                    views.join("; "),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node ids broker `node_id` reports registered and unfenced, or the error code it
    /// answers DescribeCluster with.
    pub fn alive_brokers(&self, node_id: i32) -> Result<BTreeSet<i32>, ErrorCode> {
        let mut connection = RawConnection::connect(self.broker(node_id).address);
        connection.send(1, &Request::DescribeCluster);
        match connection.read_response(ApiKey::DESCRIBE_CLUSTER) {
            Some((_, Some(Response::DescribeCluster(response)))) => {
                if !response.error_code.is_ok() {
                    return Err(response.error_code);
                }
                Ok(response
                    .brokers
                    .iter()
                    .filter(|broker| !broker.fenced)
                    .map(|broker| broker.node_id)
                    .collect())
            }
            Some((header, _)) => Err(header.error_code),
            None => Err(ErrorCode::BROKER_NOT_AVAILABLE),
        }
    }

    /// Every member's log, each under a heading, for failure messages.
    pub fn logs(&self) -> String {
        let controller = (CONTROLLER_NODE_ID, &self.controller);
        std::iter::once(controller)
            .chain((1..).zip(&self.brokers))
            .map(|(node_id, member)| format!("--- node {node_id} ---\n{}", member.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn broker_index(&self, node_id: i32) -> usize {
        let index = usize::try_from(node_id - 1).ok();
        match index.filter(|index| *index < self.brokers.len()) {
            Some(index) => index,
            None => panic!(
                "no broker {node_id}: the cluster's brokers are 1..={}",
                self.brokers.len()
            ),
        }
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
