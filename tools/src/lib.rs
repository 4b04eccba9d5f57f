//! Shared code of the command-line tools: the bootstrap flag, the runtime and error
//! reporting (one line on stderr, non-zero exit, no backtraces), stdout that treats a closed
//! pipe as a normal end (`mq-consume | head`), and JSON encoding of record data; and
//! [`bench`](mod@bench), the load-test harness behind `mq-bench`.

#![forbid(unsafe_code)]

pub mod bench;

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;

use mq_client::{Bytes, Client, ClientConfig};

/// The `-b/--bootstrap` flag every tool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Brokers to connect to first, as HOST:PORT[,HOST:PORT...].
    #[arg(
        short = 'b',
        long = "bootstrap",
        env = "MQ_BOOTSTRAP",
        default_value = "127.0.0.1:9700",
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub bootstrap: String,
}

impl BootstrapArgs {
    /// Connects to the cluster.
    pub async fn connect(&self, client_id: &str) -> anyhow::Result<Client> {
        let config = ClientConfig {
            client_id: client_id.to_string(),
            ..ClientConfig::default()
        };
        Ok(Client::connect(&self.bootstrap, config).await?)
    }
}

/// Runs a tool's async main on a runtime and turns its outcome into an exit code. An error
/// prints as one line, `error: ...`, with its causes joined by `: `.
pub fn run(main: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::Error::from(error)),
    };
    match runtime.block_on(main) {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {error:#}");
    ExitCode::FAILURE
}

/// Completes when the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            return;
        }
    }
    // Without a SIGTERM handler, Ctrl-C still works; if even that cannot be installed, the
    // default disposition (terminate) applies and this never completes.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether the error is stdout's reader going away: a normal way for output to end.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Bytes as JSON: a string when they are UTF-8; otherwise a base64 string, with
/// `encoding` set to `"base64"` so that a reader can tell.
pub fn json_bytes(bytes: Option<&Bytes>) -> (serde_json::Value, Option<&'static str>) {
    match bytes {
        None => (serde_json::Value::Null, None),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (serde_json::Value::String(text.to_string()), None),
            Err(_) => (serde_json::Value::String(base64(bytes)), Some("base64")),
        },
    }
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let triple = chunk
            .iter()
            .enumerate()
            .fold(0u32, |triple, (index, byte)| {
                triple | u32::from(*byte) << (16 - 8 * index)
            });
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(ALPHABET[(triple >> (18 - 6 * index) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A size in bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(base64(&[0xFF, 0x00, 0xFE]), "/wD+");
    }

    #[test]
    fn json_bytes_marks_non_utf8() {
        assert_eq!(json_bytes(None), (serde_json::Value::Null, None));
        let text = Bytes::from_static(b"h\xC3\xA9\"");
        assert_eq!(json_bytes(Some(&text)).0, serde_json::json!("hé\""));
        let binary = Bytes::from_static(&[0xFF, 0x00]);
        assert_eq!(
            json_bytes(Some(&binary)),
            (serde_json::json!("/wA="), Some("base64"))
        );
    }

    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
