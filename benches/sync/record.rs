//! The results: a benchmark's rows (metric, target, measured, verdict) and notes, the
//! verdicts (`at_most`, `below`, ratios judged as shown), the table printed at the end of a
//! run, and the file the recorded results are kept in (`benches/sync-results.json`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) metric: String,
    pub(crate) target: String,
    pub(crate) measured: String,
    /// "pass", "miss (...)", "info" or "skipped".
    pub(crate) verdict: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BenchResult {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) date: String,
    pub(crate) command: String,
    pub(crate) machine: String,
    pub(crate) params: String,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ResultsFile {
    pub(crate) results: BTreeMap<String, BenchResult>,
}

pub(crate) fn row(metric: &str, target: &str, measured: String, verdict: String) -> Row {
    Row {
        metric: metric.into(),
        target: target.into(),
        measured,
        verdict,
    }
}

pub(crate) fn info(metric: &str, measured: String) -> Row {
    row(metric, "—", measured, "info".into())
}

/// A ratio against its ceiling, shown and judged to three decimals (so a shown 1.050 passes
/// ≤ 1.05).
pub(crate) fn ratio_row(metric: &str, ratio: f64, limit: f64) -> Row {
    row(
        metric,
        &format!("≤ {limit}"),
        format!("{ratio:.3}"),
        at_most_shown(ratio, limit),
    )
}

/// [`at_most`] on the value rounded as shown, to three decimals.
pub(crate) fn at_most_shown(value: f64, limit: f64) -> String {
    at_most((value * 1000.0).round() / 1000.0, limit)
}

/// "pass" when `value <= limit`, else "miss (+x% over)".
pub(crate) fn at_most(value: f64, limit: f64) -> String {
    if value <= limit {
        "pass".into()
    } else if limit == 0.0 {
        format!("miss (+{value} over)")
    } else {
        format!("miss (+{:.1}% over)", (value / limit - 1.0) * 100.0)
    }
}

pub(crate) fn below(value: f64, limit: f64) -> String {
    if value < limit {
        "pass".into()
    } else {
        format!("miss (+{:.1}% over)", (value / limit - 1.0) * 100.0)
    }
}

pub(crate) fn print_table(results: &[BenchResult]) {
    let mut lines = vec![[
        "bench".to_string(),
        "metric".to_string(),
        "target".to_string(),
        "measured".to_string(),
        "result".to_string(),
    ]];
    for r in results {
        for (i, row) in r.rows.iter().enumerate() {
            lines.push([
                if i == 0 { r.id.clone() } else { String::new() },
                row.metric.clone(),
                row.target.clone(),
                row.measured.clone(),
                row.verdict.clone(),
            ]);
        }
    }
    let mut width = [0usize; 5];
    for l in &lines {
        for (w, c) in width.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!();
    for (n, l) in lines.iter().enumerate() {
        let cells: Vec<String> = l
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
        if n == 0 {
            println!("{}", "-".repeat(width.iter().sum::<usize>() + 8));
        }
    }
    for r in results {
        for note in &r.notes {
            println!("{}: {note}", r.id);
        }
    }
}
