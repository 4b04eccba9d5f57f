//! The final report of a run: throughput and latency percentiles, as text for people or as
//! one JSON object for scripts (`--json`). The JSON keys `messages`, `bytes`, `seconds`,
//! `msgs_per_sec`, `mb_per_sec` and `latency_us` (`p50`, `p90`, `p99`, `p999`, `max`) are
//! an interface: keep them. MB are 10^6 bytes.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

use super::recorder::Measurement;

/// Latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Percentiles {
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    pub(crate) p999: u64,
    /// The largest.
    pub(crate) max: u64,
}

impl Percentiles {
    /// The percentiles of `histogram`; all 0 when it is empty.
    pub(crate) fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// What was run, echoed in the report.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Workload {
    /// `produce`, `consume` or `e2e`.
    pub(crate) scenario: &'static str,
    /// The topic.
    pub(crate) topic: String,
    /// Its partitions.
    pub(crate) partitions: i32,
    /// Bytes per record value.
    pub(crate) size: usize,
    /// Producer instances (0 for `consume`).
    pub(crate) producers: u32,
    /// Consumer instances (0 for `produce`).
    pub(crate) consumers: u32,
    /// `0`, `1` or `all`.
    pub(crate) acks: String,
    /// `none` or `zstd`.
    pub(crate) compression: String,
    /// Records per second of an open loop; `None` for a closed loop.
    pub(crate) rate: Option<f64>,
    /// Seconds of load before measuring.
    pub(crate) warmup_s: f64,
    /// What the latency is the time between.
    pub(crate) latency: &'static str,
}

/// The embedded broker's footprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BrokerUsage {
    /// Its process id (gone by the time the report is printed).
    pub(crate) pid: u32,
    /// Its peak resident set size (`VmHWM`), when the system tells.
    pub(crate) peak_rss_bytes: Option<u64>,
}

/// The report of a run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Report {
    /// What was run.
    pub(crate) workload: Workload,
    /// What was measured.
    pub(crate) measured: Measurement,
    /// Records that failed (not delivered), warm-up included.
    pub(crate) errors: u64,
    /// The embedded broker, with `--embedded`.
    pub(crate) broker: Option<BrokerUsage>,
}

impl Report {
    /// Measured records per second.
    pub(crate) fn msgs_per_sec(&self) -> f64 {
        per_second(self.measured.messages as f64, self.measured.seconds)
    }

    /// Measured MB (10^6 bytes) per second.
    pub(crate) fn mb_per_sec(&self) -> f64 {
        per_second(self.measured.bytes as f64 / 1e6, self.measured.seconds)
    }

    /// The report as one JSON object.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let workload = &self.workload;
        let latency = &self.measured.latency_us;
        let mut object = json!({
            "scenario": workload.scenario,
            "messages": self.measured.messages,
            "bytes": self.measured.bytes,
            "seconds": round_to(self.measured.seconds, 1e6),
            "msgs_per_sec": round_to(self.msgs_per_sec(), 1e3),
            "mb_per_sec": round_to(self.mb_per_sec(), 1e3),
            "latency_us": {
                "p50": latency.p50,
                "p90": latency.p90,
                "p99": latency.p99,
                "p999": latency.p999,
                "max": latency.max,
            },
            "latency": workload.latency,
            "errors": self.errors,
            "topic": workload.topic,
            "partitions": workload.partitions,
            "size": workload.size,
            "producers": workload.producers,
            "consumers": workload.consumers,
            // Settings of producers: null for a run without any (`consume`).
            "acks": (workload.producers > 0).then_some(&workload.acks),
            "compression": (workload.producers > 0).then_some(&workload.compression),
            "rate": workload.rate,
            "warmup_s": workload.warmup_s,
        });
        if let Some(broker) = &self.broker {
            object["broker_pid"] = broker.pid.into();
            object["broker_peak_rss_bytes"] = broker.peak_rss_bytes.into();
        }
        object
    }

    /// The report for people, one fact per line.
    pub(crate) fn to_text(&self) -> String {
        let workload = &self.workload;
        let measured = &self.measured;
        let latency = &measured.latency_us;
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{}", describe(workload));
        let _ = writeln!(text, "messages      {}", measured.messages);
        let _ = writeln!(
            text,
            "bytes         {} ({:.1} MB)",
            measured.bytes,
            measured.bytes as f64 / 1e6
        );
        let _ = writeln!(text, "seconds       {:.3}", measured.seconds);
        let _ = writeln!(
            text,
            "throughput    {:.0} msgs/s, {:.2} MB/s (1 MB = 10^6 bytes)",
            self.msgs_per_sec(),
            self.mb_per_sec()
        );
        let _ = writeln!(
            text,
            "latency µs    p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   ({})",
            latency.p50, latency.p90, latency.p99, latency.p999, latency.max, workload.latency
        );
        if self.errors > 0 {
            let _ = writeln!(text, "errors        {} records not delivered", self.errors);
        }
        if let Some(broker) = &self.broker {
            let rss = match broker.peak_rss_bytes {
                Some(bytes) => format!("{:.1} MB ({bytes} bytes)", bytes as f64 / 1e6),
                None => "unknown".to_string(),
            };
            let _ = writeln!(text, "broker        pid {}, peak RSS {rss}", broker.pid);
        }
        text
    }
}

/// One line saying what ran: `produce: 1024-byte records to 'mq-bench' (1 partition), ...`.
fn describe(workload: &Workload) -> String {
    let plural =
        |count: u64, what: &str| format!("{count} {what}{}", if count == 1 { "" } else { "s" });
    let mut parts = vec![format!(
        "{}: {}-byte records, topic '{}' ({})",
        workload.scenario,
        workload.size,
        workload.topic,
        plural(workload.partitions.max(0) as u64, "partition")
    )];
    if workload.producers > 0 {
        parts.push(plural(u64::from(workload.producers), "producer"));
        parts.push(format!("acks={}", workload.acks));
        parts.push(format!("compression={}", workload.compression));
        parts.push(match workload.rate {
            Some(rate) => format!("open loop at {rate} msgs/s"),
            None => "closed loop".to_string(),
        });
    }
    if workload.consumers > 0 {
        parts.push(plural(u64::from(workload.consumers), "consumer"));
    }
    if workload.warmup_s > 0.0 {
        parts.push(format!("{} s warm-up", workload.warmup_s));
    }
    parts.join(", ")
}

fn per_second(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

/// `value` rounded to a multiple of `1 / scale` (seconds to microseconds, rates to
/// thousandths): enough digits, no float noise.
fn round_to(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            workload: Workload {
                scenario: "produce",
                topic: "mq-bench".to_string(),
                partitions: 1,
                size: 100,
                producers: 1,
                consumers: 0,
                acks: "all".to_string(),
                compression: "none".to_string(),
                rate: None,
                warmup_s: 0.0,
                latency: "send to acknowledgement",
            },
            measured: Measurement {
                messages: 2000,
                bytes: 200_000,
                seconds: 0.5,
                latency_us: Percentiles {
                    p50: 100,
                    p90: 200,
                    p99: 300,
                    p999: 400,
                    max: 500,
                },
            },
            errors: 0,
            broker: None,
        }
    }

    #[test]
    fn json_has_the_fixed_keys() {
        let json = report().to_json();
        for key in [
            "messages",
            "bytes",
            "seconds",
            "msgs_per_sec",
            "mb_per_sec",
            "latency_us",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["messages"], 2000);
        assert_eq!(json["bytes"], 200_000);
        assert_eq!(json["msgs_per_sec"], 4000.0);
        assert_eq!(json["mb_per_sec"], 0.4);
        assert_eq!(
            json["latency_us"],
            json!({"p50": 100, "p90": 200, "p99": 300, "p999": 400, "max": 500})
        );
        assert!(json.get("broker_pid").is_none());
    }

    #[test]
    fn json_reports_the_embedded_broker() {
        let mut report = report();
        report.broker = Some(BrokerUsage {
            pid: 42,
            peak_rss_bytes: Some(30_000_000),
        });
        let json = report.to_json();
        assert_eq!(json["broker_pid"], 42);
        assert_eq!(json["broker_peak_rss_bytes"], 30_000_000);
    }

    #[test]
    fn text_says_what_ran_and_what_it_measured() {
        let mut report = report();
        report.broker = Some(BrokerUsage {
            pid: 42,
            peak_rss_bytes: Some(31_400_000),
        });
        let text = report.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "produce: 100-byte records, topic 'mq-bench' (1 partition), 1 producer, acks=all, compression=none, closed loop"
        );
        assert!(text.contains("messages      2000\n"));
        assert!(text.contains("throughput    4000 msgs/s, 0.40 MB/s"));
        assert!(text.contains("p50 100  p90 200  p99 300  p99.9 400  max 500"));
        assert!(text.contains("broker        pid 42, peak RSS 31.4 MB (31400000 bytes)"));
        assert!(!text.contains("errors"));
    }

    #[test]
    fn nothing_measured_gives_zero_rates() {
        let mut report = report();
        report.measured.seconds = 0.0;
        assert_eq!(report.msgs_per_sec(), 0.0);
        assert_eq!(report.mb_per_sec(), 0.0);
    }

    #[test]
    fn percentiles_of_an_empty_histogram_are_zero() {
        let histogram = Histogram::<u64>::new(3).unwrap();
        assert_eq!(Percentiles::of(&histogram), Percentiles::default());
    }
}
