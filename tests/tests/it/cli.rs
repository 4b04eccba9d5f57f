//! The command-line tools as a user runs them, against a real broker: the quickstart
//! round trip, the error lines scripts see, and `mq-consume | head`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use mq_tests::{binary, BrokerProcess};

fn tool(broker: &BrokerProcess, name: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(binary(name))
        .args(["-b", &broker.bootstrap()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn create_produce_consume_round_trip() {
    let broker = BrokerProcess::start();
    let created = tool(
        &broker,
        "mq-admin",
        &["topic", "create", "greetings", "--partitions", "2"],
        "",
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let produced = tool(
        &broker,
        "mq-produce",
        &["--topic", "greetings"],
        "hello\nworld\n",
    );
    assert!(produced.status.success());
    assert_eq!(text(&produced.stderr).trim(), "acknowledged 2 of 2 records");
    let consumed = tool(
        &broker,
        "mq-consume",
        &["--topic", "greetings", "--from-beginning", "-e"],
        "",
    );
    assert!(consumed.status.success(), "{}", text(&consumed.stderr));
    let mut lines: Vec<String> = text(&consumed.stdout).lines().map(str::to_string).collect();
    lines.sort();
    assert_eq!(lines, vec!["hello", "world"]);
    let json = tool(
        &broker,
        "mq-consume",
        &[
            "--topic",
            "greetings",
            "--from-beginning",
            "-c",
            "1",
            "--format",
            "json",
        ],
        "",
    );
    let line = text(&json.stdout);
    for key in [
        "\"topic\":\"greetings\"",
        "\"partition\":",
        "\"offset\":0",
        "\"timestamp\":",
        "\"key\":null",
        "\"value\":",
    ] {
        assert!(line.contains(key), "{key} missing in {line}");
    }
    let described = tool(
        &broker,
        "mq-admin",
        &["topic", "describe", "greetings", "--format", "json"],
        "",
    );
    let described = text(&described.stdout);
    assert!(described.contains("\"log_end_offset\":"), "{described}");
}

#[test]
fn keyed_lines_and_partial_failures_are_reported() {
    let broker = BrokerProcess::start();
    assert!(tool(&broker, "mq-admin", &["topic", "create", "kv"], "")
        .status
        .success());
    let produced = tool(
        &broker,
        "mq-produce",
        &["--topic", "kv", "--key-separator", ":"],
        "a:1\nno separator\nb:2\n",
    );
    assert!(!produced.status.success(), "one line could not be sent");
    let stderr = text(&produced.stderr);
    assert!(stderr.contains("line 2 has no key separator"), "{stderr}");
    assert!(stderr.contains("acknowledged 2 of 3 records"), "{stderr}");
    let consumed = tool(
        &broker,
        "mq-consume",
        &[
            "--topic",
            "kv",
            "--from-beginning",
            "-e",
            "--format",
            "json",
        ],
        "",
    );
    let out = text(&consumed.stdout);
    assert!(
        out.contains("\"key\":\"a\"") && out.contains("\"key\":\"b\""),
        "{out}"
    );
}

#[test]
fn errors_are_one_clear_line_and_a_failure_exit() {
    let broker = BrokerProcess::start();
    assert!(tool(&broker, "mq-admin", &["topic", "create", "t"], "")
        .status
        .success());
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "mq-admin",
            vec!["topic", "create", "t"],
            "error: topic 't' already exists",
        ),
        (
            "mq-produce",
            vec!["--topic", "absent"],
            "error: topic 'absent' does not exist",
        ),
        (
            "mq-consume",
            vec!["--topic", "absent", "-e"],
            "error: topic 'absent' does not exist",
        ),
        (
            "mq-admin",
            vec!["topic", "describe", "absent"],
            "error: topic 'absent' does not exist",
        ),
        (
            "mq-admin",
            vec!["topic", "delete", "t"],
            "error: deleting topic 't' removes all its data; add --yes to confirm",
        ),
        ("mq-admin", vec!["topic", "create", "bad name"], "error: "),
    ];
    for (name, args, expected) in cases {
        let output = tool(&broker, name, &args, "x\n");
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{name} {args:?} succeeded");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            stderr.lines().any(|line| line.starts_with(expected)),
            "{name} {args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        assert!(!last.is_empty());
    }
    let unreachable = Command::new(binary("mq-admin"))
        .args(["-b", "127.0.0.1:1", "topic", "list"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(
        text(&unreachable.stderr).starts_with("error: cannot connect to 127.0.0.1:1"),
        "{}",
        text(&unreachable.stderr)
    );
}

#[test]
fn consume_into_a_closed_pipe_exits_cleanly() {
    let broker = BrokerProcess::start();
    assert!(tool(&broker, "mq-admin", &["topic", "create", "many"], "")
        .status
        .success());
    let lines: String = (0..5000).map(|index| format!("{index}\n")).collect();
    assert!(tool(&broker, "mq-produce", &["--topic", "many"], &lines)
        .status
        .success());
    // Like `mq-consume ... | head -1`: read one line, then close the pipe.
    let mut child = Command::new(binary("mq-consume"))
        .args([
            "-b",
            &broker.bootstrap(),
            "--topic",
            "many",
            "--from-beginning",
            "-e",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert_eq!(first, "0\n");
    drop(reader);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        text(&output.stderr)
    );
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The committed offsets `mq-admin group describe --format json` shows, by partition.
fn committed_offsets(broker: &BrokerProcess, group: &str) -> Vec<serde_json::Value> {
    let described = json(&tool(
        broker,
        "mq-admin",
        &["group", "describe", group, "--format", "json"],
        "",
    ));
    described["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["committed_offset"].clone())
        .collect()
}

#[test]
fn groups_are_listed_described_reset_and_deleted() {
    let broker = BrokerProcess::start();
    let admin = |args: &[&str]| tool(&broker, "mq-admin", args, "");
    assert!(admin(&["topic", "create", "orders", "--partitions", "2"])
        .status
        .success());
    let lines: String = (0..10).map(|index| format!("order {index}\n")).collect();
    assert!(tool(&broker, "mq-produce", &["--topic", "orders"], &lines)
        .status
        .success());
    let group_consume = || {
        tool(
            &broker,
            "mq-consume",
            &["--topic", "orders", "--group", "billing", "-e"],
            "",
        )
    };
    // A new group starts at the earliest offset, and commits what it printed on exit.
    let first = group_consume();
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout).lines().count(), 10);
    let again = group_consume();
    assert_eq!(
        text(&again.stdout),
        "",
        "resumes after the committed offsets"
    );

    let listed = text(&admin(&["group", "list"]).stdout);
    assert_eq!(listed.trim(), "billing");
    let described = json(&admin(&[
        "group", "describe", "billing", "--format", "json",
    ]));
    assert_eq!(described["state"], "Empty");
    let rows = described["offsets"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["committed_offset"], row["log_end_offset"], "{row}");
        assert_eq!(row["lag"], 0);
    }
    let text_description = text(&admin(&["group", "describe", "billing"]).stdout);
    assert!(
        text_description.contains("state Empty") && text_description.contains("lag"),
        "{text_description}"
    );

    // Resetting needs --yes, and no live members.
    let unconfirmed = admin(&[
        "group",
        "reset-offsets",
        "billing",
        "--topic",
        "orders",
        "--to-earliest",
    ]);
    assert!(!unconfirmed.status.success());
    assert!(
        text(&unconfirmed.stderr).starts_with("error: resetting the offsets of group 'billing'")
    );
    let mut member = Command::new(binary("mq-consume"))
        .args([
            "-b",
            &broker.bootstrap(),
            "--topic",
            "orders",
            "--group",
            "billing",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let described = json(&admin(&[
            "group", "describe", "billing", "--format", "json",
        ]));
        if described["members"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the member never joined"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = admin(&[
        "group",
        "reset-offsets",
        "billing",
        "--topic",
        "orders",
        "--to-earliest",
        "--yes",
    ]);
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("active member"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    member.kill().unwrap();
    member.wait().unwrap();
    // The killed member stays until its session times out (10 s); then the reset works.
    let started = std::time::Instant::now();
    loop {
        let reset = admin(&[
            "group",
            "reset-offsets",
            "billing",
            "--topic",
            "orders",
            "--to-earliest",
            "--yes",
        ]);
        if reset.status.success() {
            assert!(text(&reset.stdout).contains("new offset"));
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{}",
            text(&reset.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        committed_offsets(&broker, "billing"),
        vec![serde_json::json!(0), serde_json::json!(0)]
    );
    let replayed = group_consume();
    assert_eq!(
        text(&replayed.stdout).lines().count(),
        10,
        "reprocessed from the start"
    );
    // --to-offset is kept within each partition's log.
    assert!(admin(&[
        "group",
        "reset-offsets",
        "billing",
        "--topic",
        "orders",
        "--to-offset",
        "1000000",
        "--yes"
    ])
    .status
    .success());
    let ends = json(&admin(&[
        "group", "describe", "billing", "--format", "json",
    ]));
    for row in ends["offsets"].as_array().unwrap() {
        assert_eq!(row["committed_offset"], row["log_end_offset"], "{row}");
    }

    let unconfirmed = admin(&["group", "delete", "billing"]);
    assert!(text(&unconfirmed.stderr)
        .starts_with("error: deleting group 'billing' removes its committed offsets; add --yes"));
    let deleted = admin(&["group", "delete", "billing", "--yes"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    let gone = admin(&["group", "describe", "billing"]);
    assert!(!gone.status.success());
    assert_eq!(
        text(&gone.stderr).trim(),
        "error: group 'billing' does not exist"
    );
    assert_eq!(text(&admin(&["group", "list"]).stdout), "");
}
