//! [`Latencies`]: a histogram of durations, reported in milliseconds.

use std::time::Duration;

use hdrhistogram::Histogram;

pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // Microseconds from 1 µs to 10 minutes, 3 significant digits.
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"))
    }
}

impl Latencies {
    pub fn record(&mut self, took: Duration) {
        self.record_micros(took.as_micros() as u64);
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }

    pub fn add(&mut self, other: &Latencies) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `quantile` (0.5 = median) in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// `p50 X ms, p99 Y ms`, as the table shows every latency.
    pub fn p50_p99(&self) -> String {
        format!("p50 {:.2} ms, p99 {:.2} ms", self.ms(0.5), self.ms(0.99))
    }
}
