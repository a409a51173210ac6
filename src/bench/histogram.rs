//! Request latencies in an HDR histogram: microseconds, 3 significant digits, from 1 µs to
//! one hour. Each connection keeps its own and the reports merge them, so recording never
//! contends with another connection.
//!
//! Promises: recording never fails and never allocates (a value above the highest trackable
//! one is recorded as that value); a percentile of an empty histogram is 0.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency tracked exactly: one hour in microseconds. Open-loop latencies count from
/// the intended send time, so a target that falls far behind produces large values; anything
/// longer than this is recorded as this.
const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Three significant digits: a reported p99 of 12.3 ms is within 0.1 % of the true value.
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        let inner = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
            .expect("constant bounds: 1 <= low, high >= 2 * low, 3 significant digits");
        LatencyHistogram { inner }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Below 1 µs is below what the clock and the network can tell apart; count it as 1 µs.
        self.inner.saturating_record(micros.clamp(1, LATENCY_US_MAX));
    }

    pub fn add(&mut self, other: &LatencyHistogram) {
        // Both histograms have the same bounds, so adding cannot fail.
        let added = self.inner.add(&other.inner);
        debug_assert!(added.is_ok());
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// The latency at `quantile` (0.0–1.0), in milliseconds; 0 when nothing was recorded.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        assert!((0.0..=1.0).contains(&quantile));
        if self.inner.is_empty() {
            return 0.0;
        }
        micros_to_ms(self.inner.value_at_quantile(quantile))
    }

    pub fn max_ms(&self) -> f64 {
        if self.inner.is_empty() {
            return 0.0;
        }
        micros_to_ms(self.inner.max())
    }
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(value: f64, expected: f64, relative: f64) -> bool {
        (value - expected).abs() <= expected * relative
    }

    #[test]
    fn percentiles_of_a_uniform_spread_are_where_expected() {
        let mut histogram = LatencyHistogram::new();
        // 1 ms, 2 ms, ..., 10_000 ms: p50 is 5 s, p99 9.9 s, p99.9 9.99 s.
        for ms in 1..=10_000u64 {
            histogram.record(Duration::from_millis(ms));
        }
        assert_eq!(histogram.count(), 10_000);
        assert!(within(histogram.quantile_ms(0.5), 5_000.0, 0.001));
        assert!(within(histogram.quantile_ms(0.9), 9_000.0, 0.001));
        assert!(within(histogram.quantile_ms(0.99), 9_900.0, 0.001));
        assert!(within(histogram.quantile_ms(0.999), 9_990.0, 0.001));
        assert!(within(histogram.max_ms(), 10_000.0, 0.001));
    }

    #[test]
    fn a_few_slow_requests_show_in_the_tail_only() {
        let mut histogram = LatencyHistogram::new();
        for _ in 0..990 {
            histogram.record(Duration::from_micros(2_000));
        }
        for _ in 0..10 {
            histogram.record(Duration::from_millis(500));
        }
        assert!(within(histogram.quantile_ms(0.5), 2.0, 0.001));
        assert!(within(histogram.quantile_ms(0.99), 2.0, 0.001));
        assert!(within(histogram.quantile_ms(0.999), 500.0, 0.001));
        assert!(within(histogram.max_ms(), 500.0, 0.001));
    }

    #[test]
    fn merged_histograms_hold_both_counts() {
        let mut fast = LatencyHistogram::new();
        let mut slow = LatencyHistogram::new();
        for _ in 0..50 {
            fast.record(Duration::from_millis(1));
            slow.record(Duration::from_millis(100));
        }
        fast.add(&slow);
        assert_eq!(fast.count(), 100);
        assert!(within(fast.quantile_ms(0.25), 1.0, 0.001));
        assert!(within(fast.quantile_ms(0.75), 100.0, 0.001));
    }

    #[test]
    fn empty_histogram_reports_zero_and_extremes_are_clamped() {
        let mut histogram = LatencyHistogram::new();
        assert_eq!(histogram.quantile_ms(0.99), 0.0);
        assert_eq!(histogram.max_ms(), 0.0);
        histogram.record(Duration::ZERO);
        histogram.record(Duration::from_secs(10 * 3_600));
        assert_eq!(histogram.count(), 2);
        assert!(within(histogram.quantile_ms(0.0), 0.001, 0.001));
        assert!(within(histogram.max_ms(), 3_600_000.0, 0.001));
    }
}
