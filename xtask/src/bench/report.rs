//! What the run found: the table, the JSON document, latency percentiles.
use std::time::Duration;

use serde_json::{json, Value};

/// What the run found: table rows and the JSON document.
#[derive(Default)]
pub(super) struct Report {
    rows: Vec<(String, String, String)>,
    pub(super) json: Value,
}

impl Report {
    pub(super) fn row(
        &mut self,
        what: impl Into<String>,
        value: impl Into<String>,
        note: impl Into<String>,
    ) {
        let row = (what.into(), value.into(), note.into());
        eprintln!("xtask: bench: {}  {}  {}", row.0, row.1, row.2);
        self.rows.push(row);
    }

    pub(super) fn table(&self) -> String {
        let w0 = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = self.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let mut s = String::new();
        for (a, b, c) in &self.rows {
            s.push_str(&format!("{a:<w0$}  {b:>w1$}  {c}\n"));
        }
        s
    }
}

fn percentile(sorted_ms: &[f64], q: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((q * sorted_ms.len() as f64).ceil() as usize).clamp(1, sorted_ms.len());
    sorted_ms[rank - 1]
}

/// The median (the mean of the middle two for an even count; NaN for none).
pub(super) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(super) fn latency_stats(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "p50_ms": percentile(&ms, 0.50),
        "p90_ms": percentile(&ms, 0.90),
        "p99_ms": percentile(&ms, 0.99),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
    })
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_rounds() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
        assert!(median(std::iter::empty()).is_nan());
    }
}
