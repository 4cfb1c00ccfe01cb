//! Medians and ratios of repeated measurements.

use serde::Serialize;

/// One timed run: bytes of (uncompressed) input and seconds taken.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Bytes processed.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl Sample {
    /// Throughput in MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

/// The runs of one subject and their median throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// What was measured.
    pub name: String,
    /// Median MB/s over the runs.
    pub median_mb_per_s: f64,
    /// Each run's MB/s, in run order.
    pub runs_mb_per_s: Vec<f64>,
    /// Median divided by the baseline's median (1.0 for the baseline itself).
    pub ratio_to_baseline: f64,
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Summaries of each subject's samples; the first subject is the baseline.
pub fn summarize(subjects: &[(String, Vec<Sample>)]) -> Vec<Summary> {
    let medians: Vec<f64> = subjects
        .iter()
        .map(|(_, s)| median(&s.iter().map(Sample::mb_per_s).collect::<Vec<_>>()))
        .collect();
    let baseline = medians.first().copied().unwrap_or(f64::NAN);
    subjects
        .iter()
        .zip(&medians)
        .map(|((name, samples), m)| Summary {
            name: name.clone(),
            median_mb_per_s: *m,
            runs_mb_per_s: samples.iter().map(Sample::mb_per_s).collect(),
            ratio_to_baseline: m / baseline,
        })
        .collect()
}

/// A plain-text table of summaries.
pub fn table(title: &str, summaries: &[Summary]) -> String {
    let mut out = format!(
        "{title}\n{:<28} {:>12} {:>10}   runs (MB/s)\n",
        "subject", "median MB/s", "ratio"
    );
    for s in summaries {
        let runs: Vec<String> = s.runs_mb_per_s.iter().map(|r| format!("{r:.0}")).collect();
        out.push_str(&format!(
            "{:<28} {:>12.1} {:>10.2}   {}\n",
            s.name,
            s.median_mb_per_s,
            s.ratio_to_baseline,
            runs.join(" ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let s = |mb: f64| Sample {
            bytes: (mb * 1e6) as u64,
            seconds: 1.0,
        };
        let sums = summarize(&[
            ("base".into(), vec![s(100.0), s(200.0), s(300.0)]),
            ("x".into(), vec![s(50.0), s(100.0), s(150.0)]),
        ]);
        assert_eq!(sums[0].ratio_to_baseline, 1.0);
        assert!((sums[1].ratio_to_baseline - 0.5).abs() < 1e-9);
        assert!(table("t", &sums).contains("x"));
    }
}
