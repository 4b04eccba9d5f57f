//! `mq-bench` as a user runs it: `produce` and `e2e` against a broker it starts itself
//! (`--embedded`), reports checked as JSON, the broker gone afterwards; and the one-line
//! error when no broker answers.

use std::path::Path;
use std::process::{Command, Output};

use mq_tests::binary;
use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(binary("mq-bench"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `mq-bench` expecting success and one JSON object on stdout.
fn bench_json(args: &[&str]) -> Value {
    let output = bench(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "mq-bench {args:?} failed: {stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("mq-bench {args:?} printed no JSON ({error}): {stdout}"))
}

/// Checks the keys every report has and that their values make sense.
fn check_report(report: &Value, messages: u64, bytes: u64) {
    assert_eq!(report["messages"], messages, "{report}");
    assert_eq!(report["bytes"], bytes, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let seconds = report["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0, "{report}");
    let msgs_per_sec = report["msgs_per_sec"].as_f64().unwrap();
    assert!(
        (msgs_per_sec - messages as f64 / seconds).abs() <= msgs_per_sec * 0.01 + 1.0,
        "{report}"
    );
    assert!(report["mb_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    let latency = &report["latency_us"];
    let percentiles: Vec<u64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|key| {
            latency[key]
                .as_u64()
                .unwrap_or_else(|| panic!("no {key}: {report}"))
        })
        .collect();
    assert!(
        percentiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "percentiles out of order: {report}"
    );
    assert!(percentiles[4] > 0, "{report}");
}

/// Checks that the embedded broker the report names has exited.
fn check_broker_gone(report: &Value) {
    let pid = report["broker_pid"].as_u64().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the embedded broker (pid {pid}) still runs"
    );
    let rss = report["broker_peak_rss_bytes"].as_u64().unwrap();
    assert!(rss > 1_000_000, "{report}");
}

#[test]
fn bench_produce_embedded_reports_json() {
    let report = bench_json(&[
        "produce",
        "--embedded",
        "--messages",
        "2000",
        "--size",
        "100",
        "--json",
    ]);
    assert_eq!(report["scenario"], "produce");
    check_report(&report, 2000, 2000 * 100);
    check_broker_gone(&report);
}

#[test]
fn bench_e2e_embedded_open_loop_reports_json() {
    // 2000 records at 2000/s: about one second of load.
    let report = bench_json(&[
        "e2e",
        "--embedded",
        "--messages",
        "2000",
        "--rate",
        "2000",
        "--json",
    ]);
    assert_eq!(report["scenario"], "e2e");
    assert_eq!(report["rate"], 2000.0);
    check_report(&report, 2000, 2000 * 1024);
    // An open loop of 2000 records at 2000/s cannot finish in much less than a second.
    assert!(report["seconds"].as_f64().unwrap() >= 0.9, "{report}");
    check_broker_gone(&report);
}

#[test]
fn bench_errors_are_one_line() {
    let output = bench(&["produce", "-b", "127.0.0.1:1", "--messages", "10"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: cannot connect to 127.0.0.1:1"),
        "{stderr}"
    );
    let output = bench(&["consume", "--consumers", "3", "--partitions", "2"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "error: --consumers 3 is more than --partitions 2: each consumer needs a partition"
    );
}
