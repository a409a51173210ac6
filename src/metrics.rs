//! Prometheus metrics (SPEC §7), text format 0.0.4. Counters that already exist elsewhere
//! (stream counters, WAL size, memory budget) are read at scrape time; what only the HTTP
//! layer sees (answers by code, request durations) and the runtime-lag heartbeat live here.
//! Labels come from bounded sets: stream names, sink names, three-digit codes.

use crate::schema::registry::StatsSnapshot;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds of the request-duration histogram, in seconds.
const DURATION_BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Status codes are counted in a table indexed by code; others land in 599.
const CODES: usize = 600;
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

pub struct HttpMetrics {
    answers: Vec<AtomicU64>,
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_micros: AtomicU64,
    /// How late the async runtime last woke the heartbeat, in microseconds.
    runtime_lag_micros: AtomicU64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            answers: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            duration_count: AtomicU64::new(0),
            duration_sum_micros: AtomicU64::new(0),
            runtime_lag_micros: AtomicU64::new(0),
        }
    }
}

impl HttpMetrics {
    pub fn record(&self, code: u16, elapsed: Duration) {
        let index = usize::from(code).min(CODES - 1);
        self.answers[index].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_micros.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Sleeps in a loop and records how much later than asked the runtime woke it: a busy or
    /// blocked executor shows here first.
    pub async fn run_heartbeat(&self) {
        loop {
            let asked = Instant::now();
            tokio::time::sleep(HEARTBEAT_INTERVAL).await;
            let late = asked.elapsed().saturating_sub(HEARTBEAT_INTERVAL);
            self.runtime_lag_micros.store(late.as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn write(&self, out: &mut String) {
        family(out, "floodway_requests_total", "counter", "HTTP answers by status code");
        for (code, count) in self.answers.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(out, "floodway_requests_total{{code=\"{code}\"}} {count}");
            }
        }
        family(out, "floodway_request_duration_seconds", "histogram", "time from request to answer");
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "floodway_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "floodway_request_duration_seconds_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.duration_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "floodway_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "floodway_request_duration_seconds_count {total}");
        family(
            out,
            "floodway_runtime_lag_seconds",
            "gauge",
            "how late the async runtime woke a 100 ms heartbeat",
        );
        let lag = self.runtime_lag_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "floodway_runtime_lag_seconds {lag}");
    }
}

/// What a scrape reads from the rest of the process.
pub struct Snapshot<'a> {
    pub http: &'a HttpMetrics,
    pub streams: Vec<(String, StatsSnapshot)>,
    /// The configured sinks, by name.
    pub sinks: Vec<&'static str>,
    pub buffered_bytes: u64,
    pub wal_bytes: u64,
}

pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(4096);
    snapshot.http.write(&mut out);
    family(&mut out, "floodway_events_accepted_total", "counter", "events accepted, by stream");
    for (stream, stats) in &snapshot.streams {
        let _ = writeln!(out, "floodway_events_accepted_total{{stream=\"{stream}\"}} {}", stats.accepted);
    }
    family(
        &mut out,
        "floodway_events_rejected_total",
        "counter",
        "events not accepted, by stream and reason",
    );
    for (stream, stats) in &snapshot.streams {
        let _ = writeln!(
            out,
            "floodway_events_rejected_total{{stream=\"{stream}\",reason=\"invalid\"}} {}",
            stats.rejected
        );
        let _ = writeln!(
            out,
            "floodway_events_rejected_total{{stream=\"{stream}\",reason=\"dead_lettered\"}} {}",
            stats.dead_lettered
        );
    }
    family(&mut out, "floodway_sink_events_total", "counter", "events delivered, by sink and stream");
    for sink in &snapshot.sinks {
        for (stream, stats) in &snapshot.streams {
            let delivered = stats.delivered(sink);
            let _ = writeln!(
                out,
                "floodway_sink_events_total{{sink=\"{sink}\",stream=\"{stream}\"}} {delivered}"
            );
        }
    }
    family(
        &mut out,
        "floodway_sink_lag_events",
        "gauge",
        "events accepted but not yet delivered, by sink and stream",
    );
    for sink in &snapshot.sinks {
        for (stream, stats) in &snapshot.streams {
            let lag = stats.accepted.saturating_sub(stats.delivered(sink));
            let _ = writeln!(out, "floodway_sink_lag_events{{sink=\"{sink}\",stream=\"{stream}\"}} {lag}");
        }
    }
    family(&mut out, "floodway_buffered_bytes", "gauge", "checked batches in memory, waiting for the WAL");
    let _ = writeln!(out, "floodway_buffered_bytes {}", snapshot.buffered_bytes);
    family(&mut out, "floodway_wal_bytes", "gauge", "bytes of WAL segments on disk");
    let _ = writeln!(out, "floodway_wal_bytes {}", snapshot.wal_bytes);
    family(&mut out, "process_resident_memory_bytes", "gauge", "resident memory of the process");
    let _ = writeln!(out, "process_resident_memory_bytes {}", resident_memory_bytes());
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Resident set size from `/proc/self/statm` (pages × 4096); 0 where it cannot be read.
fn resident_memory_bytes() -> u64 {
    const PAGE_BYTES: u64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1).and_then(|pages| pages.parse::<u64>().ok()))
        .map_or(0, |pages| pages * PAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_add_up() {
        let http = HttpMetrics::default();
        http.record(200, Duration::from_micros(500));
        http.record(200, Duration::from_millis(20));
        http.record(429, Duration::from_secs(10));
        let text = render(&Snapshot {
            http: &http,
            streams: vec![],
            sinks: vec![],
            buffered_bytes: 0,
            wal_bytes: 0,
        });
        assert!(text.contains("floodway_requests_total{code=\"200\"} 2"), "{text}");
        assert!(text.contains("floodway_requests_total{code=\"429\"} 1"), "{text}");
        assert!(text.contains("floodway_request_duration_seconds_bucket{le=\"0.001\"} 1"), "{text}");
        assert!(text.contains("floodway_request_duration_seconds_bucket{le=\"0.025\"} 2"), "{text}");
        assert!(text.contains("floodway_request_duration_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }
}
