//! What a run measured and how it is shown: the per-connection `Tally`, the live progress line,
//! the summary table, the `--json` object (SPEC §8, keys in this order), and the generator's
//! own CPU use.
//!
//! Definitions: `events_per_sec` counts events the target accepted (the `accepted` numbers of
//! its 2xx answers) per second of the run; `mb_per_sec` counts request bodies as sent on the
//! wire (compressed when compressing), in 10^6 bytes; `requests_per_sec` counts answers of any
//! status; `events_sent` counts the events of every request sent once (a retry does not send
//! them again in this count); latencies are those of final answers of any status; `errors`
//! counts attempts that got no answer (connection refused or reset, timeout). `duration_s`
//! runs from the start to the deadline, or to the last answer when that came later.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::histogram::LatencyHistogram;

/// Clock ticks per second of `utime`/`stime` in /proc: `sysconf(_SC_CLK_TCK)`, which is 100 on
/// every Linux architecture in use (the kernel's USER_HZ); read without libc, so assumed.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// One connection's counts, or several merged.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub latency: LatencyHistogram,
    pub requests_sent: u64,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub wire_bytes_sent: u64,
    pub raw_bytes_sent: u64,
    /// Answers by status code, every attempt counted.
    pub answers: BTreeMap<u16, u64>,
    pub errors: u64,
    pub retries: u64,
    /// Answers with `Idempotent-Replayed: true`.
    pub replayed: u64,
    pub last_activity: Option<Instant>,
    /// The first failure or non-2xx answer, described, so a run that goes wrong says why.
    pub first_problem: Option<String>,
}

impl Tally {
    pub fn count_answer(&mut self, status: u16, replayed: bool) {
        *self.answers.entry(status).or_default() += 1;
        if replayed {
            self.replayed += 1;
        }
    }

    pub fn add(&mut self, other: &Tally) {
        self.latency.add(&other.latency);
        self.requests_sent += other.requests_sent;
        self.events_sent += other.events_sent;
        self.events_accepted += other.events_accepted;
        self.wire_bytes_sent += other.wire_bytes_sent;
        self.raw_bytes_sent += other.raw_bytes_sent;
        for (status, count) in &other.answers {
            *self.answers.entry(*status).or_default() += count;
        }
        self.errors += other.errors;
        self.retries += other.retries;
        self.replayed += other.replayed;
        self.last_activity = self.last_activity.max(other.last_activity);
        if self.first_problem.is_none() {
            self.first_problem.clone_from(&other.first_problem);
        }
    }

    /// Keeps `describe()` as the first problem unless one is already kept; the description
    /// is built only then, so a run full of failures formats one message, not one per failure.
    pub fn note_problem(&mut self, describe: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(describe());
        }
    }

    pub fn answered(&self) -> u64 {
        self.answers.values().sum()
    }

    /// Answers with a 2xx status.
    pub fn succeeded(&self) -> u64 {
        self.answers.iter().filter(|(status, _)| (200..300).contains(*status)).map(|(_, count)| count).sum()
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Summary {
    pub tally: Tally,
    pub duration: Duration,
    /// CPU seconds this process used while sending; `None` where /proc is not available.
    pub cpu_seconds: Option<f64>,
    /// Open loop: requests due before the deadline that were never sent because the target
    /// kept every connection busy.
    pub unsent: Option<u64>,
}

impl Summary {
    fn seconds(&self) -> f64 {
        self.duration.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    pub fn events_per_sec(&self) -> f64 {
        self.tally.events_accepted as f64 / self.seconds()
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.tally.wire_bytes_sent as f64 / 1e6 / self.seconds()
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.tally.answered() as f64 / self.seconds()
    }

    /// Generator CPU as a percentage of one core (above 100 when it used several).
    pub fn cpu_percent(&self) -> Option<f64> {
        self.cpu_seconds.map(|cpu| cpu / self.seconds() * 100.0)
    }

    /// The `--json` object of SPEC §8.
    pub fn to_json(&self) -> Value {
        let latency = &self.tally.latency;
        let status: serde_json::Map<String, Value> =
            self.tally.answers.iter().map(|(code, count)| (code.to_string(), Value::from(*count))).collect();
        json!({
            "events_per_sec": round(self.events_per_sec(), 1),
            "mb_per_sec": round(self.mb_per_sec(), 3),
            "requests_per_sec": round(self.requests_per_sec(), 2),
            "events_sent": self.tally.events_sent,
            "events_accepted": self.tally.events_accepted,
            "duration_s": round(self.seconds(), 3),
            "latency_ms": {
                "p50": round(latency.quantile_ms(0.5), 3),
                "p90": round(latency.quantile_ms(0.9), 3),
                "p99": round(latency.quantile_ms(0.99), 3),
                "p999": round(latency.quantile_ms(0.999), 3),
                "max": round(latency.max_ms(), 3),
            },
            "status": status,
            "errors": self.tally.errors,
            "generator_cpu_percent": self.cpu_percent().map(|p| round(p, 1)),
        })
    }

    /// The summary table, one `label  value` line per row.
    pub fn table(&self) -> String {
        let tally = &self.tally;
        let latency = &tally.latency;
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<16}{value}");
        };
        row("duration", format!("{:.2} s", self.seconds()));
        row(
            "events/s",
            format!(
                "{} accepted ({} events sent, {} accepted)",
                group(self.events_per_sec()),
                group(tally.events_sent as f64),
                group(tally.events_accepted as f64)
            ),
        );
        let raw_mb = tally.raw_bytes_sent as f64 / 1e6 / self.seconds();
        row("MB/s", format!("{:.1} on the wire ({raw_mb:.1} uncompressed)", self.mb_per_sec()));
        row("requests/s", format!("{:.1} answered", self.requests_per_sec()));
        row(
            "latency ms",
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                latency.quantile_ms(0.5),
                latency.quantile_ms(0.9),
                latency.quantile_ms(0.99),
                latency.quantile_ms(0.999),
                latency.max_ms()
            ),
        );
        let answers: Vec<String> =
            tally.answers.iter().map(|(code, count)| format!("{code}: {count}")).collect();
        row("answers", if answers.is_empty() { "none".to_owned() } else { answers.join(", ") });
        row("errors", format!("{} (no answer: connection failed or timed out)", tally.errors));
        if tally.retries > 0 || tally.replayed > 0 {
            row(
                "retries",
                format!("{} ({} answers replayed by Idempotency-Key)", tally.retries, tally.replayed),
            );
        }
        if let Some(problem) = &tally.first_problem {
            row("first problem", problem.clone());
        }
        if let Some(unsent) = self.unsent.filter(|n| *n > 0) {
            row("behind schedule", format!("{unsent} due requests not sent before the end"));
        }
        match self.cpu_percent() {
            Some(percent) => row("generator CPU", format!("{percent:.1} % of one core")),
            None => row("generator CPU", "unknown (no /proc/self/stat)".to_owned()),
        }
        out
    }
}

/// The live line: the last second's accepted events/s, p99 so far, errors so far.
pub fn progress_line(elapsed: Duration, events_per_sec: f64, total: &Tally) -> String {
    format!(
        "[{:>4.0}s] {:>11} events/s  p99 {:>8.2} ms  answers {}  errors {}",
        elapsed.as_secs_f64(),
        group(events_per_sec),
        total.latency.quantile_ms(0.99),
        total.answered(),
        total.errors
    )
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    // Field 3 (state) is the first after ")", so utime (14) and stime (15) are the 12th and 13th.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / CLOCK_TICKS_PER_SECOND)
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// `1234567.8` → `1,234,568`.
fn group(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut tally = Tally::default();
        for ms in [1, 2, 3, 4] {
            tally.latency.record(Duration::from_millis(ms));
        }
        tally.requests_sent = 4;
        tally.events_sent = 4_000;
        tally.events_accepted = 3_000;
        tally.wire_bytes_sent = 2_000_000;
        tally.raw_bytes_sent = 2_000_000;
        tally.count_answer(200, false);
        tally.count_answer(200, false);
        tally.count_answer(200, true);
        tally.count_answer(503, false);
        tally.errors = 1;
        Summary { tally, duration: Duration::from_secs(2), cpu_seconds: Some(0.5), unsent: None }
    }

    #[test]
    fn json_has_exactly_the_keys_of_the_contract_in_order() {
        let value = sample().to_json();
        let object = value.as_object().expect("an object");
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "events_per_sec",
                "mb_per_sec",
                "requests_per_sec",
                "events_sent",
                "events_accepted",
                "duration_s",
                "latency_ms",
                "status",
                "errors",
                "generator_cpu_percent"
            ]
        );
        let latency: Vec<&str> =
            value["latency_ms"].as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(latency, ["p50", "p90", "p99", "p999", "max"]);
        assert_eq!(value["events_per_sec"], 1_500.0);
        assert_eq!(value["mb_per_sec"], 1.0);
        assert_eq!(value["requests_per_sec"], 2.0);
        assert_eq!(value["status"], json!({"200": 3, "503": 1}));
        assert_eq!(value["errors"], 1);
        assert_eq!(value["generator_cpu_percent"], 25.0);
        // HDR buckets report the top of the bucket: within 0.1 % of 4 ms.
        let max = value["latency_ms"]["max"].as_f64().expect("a number");
        assert!((4.0..=4.004).contains(&max), "{max}");
    }

    #[test]
    fn tallies_merge_counts_and_statuses() {
        let mut total = Tally::default();
        total.add(&sample().tally);
        total.add(&sample().tally);
        assert_eq!(total.events_sent, 8_000);
        assert_eq!(total.answers.get(&200), Some(&6));
        assert_eq!(total.succeeded(), 6);
        assert_eq!(total.answered(), 8);
        assert_eq!(total.replayed, 2);
        assert_eq!(total.latency.count(), 8);
    }

    #[test]
    fn cpu_seconds_are_read_after_the_command_name() {
        let stat = "4242 (floodway (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200 300";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
        assert!(process_cpu_seconds().is_some_and(|s| s >= 0.0));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(999.4), "999");
        assert_eq!(group(1_000.0), "1,000");
        assert_eq!(group(1_234_567.8), "1,234,568");
    }

    #[test]
    fn table_names_every_figure() {
        let table = sample().table();
        for label in
            ["events/s", "MB/s", "requests/s", "p99.9", "200: 3", "503: 1", "errors", "generator CPU"]
        {
            assert!(table.contains(label), "{label} missing from\n{table}");
        }
    }
}
