//! `--embedded`: a broker process of the run's own. Starts the `mq-broker` next to
//! mq-bench's executable on `127.0.0.1:0` in a temporary directory, learns its address from
//! its `mq-broker listening on ADDR` line, reads its peak memory at the end, and kills it by
//! PID when done: on success, on error (the value is dropped) and on Ctrl-C (the run's
//! future is dropped, and this with it).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::report::BrokerUsage;

/// How long the broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The line the broker prints on stdout once it accepts connections.
const LISTENING: &str = "mq-broker listening on ";

/// A running broker of this run's own. Killed (SIGKILL) and its data deleted on drop.
#[derive(Debug)]
pub(crate) struct EmbeddedBroker {
    /// The broker process.
    child: Child,
    /// Where it listens, as `host:port`.
    address: String,
    /// Holds the data directory and the broker's log; deleted on drop, after the child is
    /// killed (fields drop after `Drop::drop` runs).
    _dir: tempfile::TempDir,
}

impl EmbeddedBroker {
    /// Starts the broker with extra `--key value` settings and waits until it listens.
    pub(crate) async fn start(settings: &[(String, String)]) -> anyhow::Result<EmbeddedBroker> {
        let binary = broker_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("mq-bench-")
            .tempdir()
            .context("creating a temporary directory for the embedded broker")?;
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(&binary);
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        for (key, value) in settings {
            command.arg(format!("--{key}")).arg(value);
        }
        let mut child = command
            // Warnings and errors only: the log is read only when the broker fails to start.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let first_line = match child.stdout.take() {
            Some(stdout) => first_line(stdout),
            None => bail!("the embedded broker's stdout is not piped"),
        };
        // From here on, an early return kills the child (drop).
        let mut broker = EmbeddedBroker {
            child,
            address: String::new(),
            _dir: dir,
        };
        let line = match tokio::time::timeout(START_TIMEOUT, first_line).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => String::new(),
            Err(_) => bail!(
                "the embedded broker did not start within {} s{}",
                START_TIMEOUT.as_secs(),
                last_log_line(&log_path)
            ),
        };
        match line.trim().strip_prefix(LISTENING) {
            Some(address) => broker.address = address.to_string(),
            None => bail!(
                "the embedded broker did not start{}",
                last_log_line(&log_path)
            ),
        }
        Ok(broker)
    }

    /// Where it listens, as `host:port` for `--bootstrap`.
    pub(crate) fn bootstrap(&self) -> &str {
        &self.address
    }

    /// Reads its peak memory, then kills it and waits for it to exit.
    pub(crate) fn stop(mut self) -> BrokerUsage {
        let pid = self.child.id();
        let peak_rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| peak_rss(&status));
        self.kill();
        BrokerUsage {
            pid,
            peak_rss_bytes,
        }
    }

    fn kill(&mut self) {
        // Errors mean it is gone already (Ctrl-C reaches the whole process group).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `mq-broker` binary next to this executable.
fn broker_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding mq-bench's own executable")?;
    let Some(dir) = exe.parent() else {
        bail!("mq-bench's executable {} has no directory", exe.display());
    };
    let binary = dir.join(format!("mq-broker{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        bail!(
            "--embedded needs mq-broker next to mq-bench, at {} (build it: cargo build --bins)",
            binary.display()
        );
    }
    Ok(binary)
}

/// The first line of `stdout`, read on a thread; the thread then drains the rest so that
/// the broker never writes to a closed pipe.
fn first_line(
    stdout: impl std::io::Read + Send + 'static,
) -> tokio::sync::oneshot::Receiver<String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = sender.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    receiver
}

/// `: <the log's last line>`, or nothing when the log is empty.
fn last_log_line(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    match log.lines().rev().find(|line| !line.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

/// The peak resident set size (`VmHWM`) in a `/proc/<pid>/status` text, in bytes.
fn peak_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_reads_vm_hwm_in_kibibytes() {
        let status =
            "Name:\tmq-broker\nVmPeak:\t  900000 kB\nVmHWM:\t   31234 kB\nVmRSS:\t   30000 kB\n";
        assert_eq!(peak_rss(status), Some(31234 * 1024));
        assert_eq!(peak_rss("Name:\tx\n"), None);
        assert_eq!(peak_rss("VmHWM:\tlots\n"), None);
    }
}
