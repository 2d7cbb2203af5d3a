//! Latency histograms and the tables the benchmarks print.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies of one measured operation, in microseconds.
pub struct Measurement {
    pub name: String,
    pub histogram: Histogram<u64>,
    pub elapsed: Duration,
}

impl Measurement {
    pub fn new(name: impl Into<String>) -> Self {
        Measurement {
            name: name.into(),
            // 1 µs to 100 s at 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
            elapsed: Duration::ZERO,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 100_000_000);
        self.histogram.record(micros).expect("clamped into the histogram's bounds");
    }

    pub fn merge(&mut self, other: &Measurement) {
        self.histogram.add(&other.histogram).expect("same bounds");
    }

    pub fn ops_per_s(&self) -> f64 {
        self.histogram.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn p(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64
    }
}

/// A Markdown table row: name, ops, ops/s, p50, p99 (µs).
pub fn row(m: &Measurement) -> String {
    format!("| {} | {} | {:.0} | {:.0} | {:.0} |", m.name, m.histogram.len(), m.ops_per_s(), m.p(0.50), m.p(0.99))
}

pub const HEADER: &str = "| operation | ops | ops/s | p50 µs | p99 µs |\n|---|---|---|---|---|";

/// One class of a benchmark as JSON: its name, transactions, retries and
/// p50/p99 in ms, with the fields of `extra` (an object) added.
pub fn class_json(name: &str, times: &Measurement, retries: u64, extra: serde_json::Value) -> serde_json::Value {
    let mut class = serde_json::json!({
        "class": name,
        "transactions": times.histogram.len(),
        "retries": retries,
        "p50_ms": times.p(0.50) / 1_000.0,
        "p99_ms": times.p(0.99) / 1_000.0,
    });
    if let (Some(class), serde_json::Value::Object(extra)) = (class.as_object_mut(), extra) {
        class.extend(extra);
    }
    class
}

/// Writes a benchmark's results as pretty JSON to `path`, and says so.
pub fn write_json(path: &std::path::Path, document: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(document).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
