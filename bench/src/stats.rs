//! Medians and ratios of repeated measurements.
//!
//! Two shapes: [`summarize`] and [`table`] for scenarios that measure throughput only;
//! [`summarize_runs`] and [`metric_table`] for scenarios that also measure named
//! quantities per run (latency percentiles, CPU seconds per GB), each reported as its
//! median over the runs, with the ratio to the baseline taken on one chosen metric.

use std::collections::BTreeMap;

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

/// One run of a subject: its throughput and other named measurements of the same run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunMetrics {
    /// Bytes and seconds of the run.
    pub sample: Option<Sample>,
    /// Named measurements, e.g. `"p99_us"`; a metric a subject cannot measure is absent.
    pub values: BTreeMap<String, f64>,
}

impl RunMetrics {
    /// A run that moved `sample.bytes` in `sample.seconds`.
    pub fn new(sample: Sample) -> Self {
        Self {
            sample: Some(sample),
            values: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a named measurement; non-finite values are left out.
    pub fn set(&mut self, key: &str, value: f64) {
        if value.is_finite() {
            self.values.insert(key.to_owned(), value);
        }
    }
}

/// The runs of one subject, each metric reduced to its median.
#[derive(Debug, Clone, Serialize)]
pub struct MetricSummary {
    /// What was measured.
    pub name: String,
    /// Median MB/s over the runs (NaN when no run moved bytes).
    pub median_mb_per_s: f64,
    /// Each run's MB/s, in run order.
    pub runs_mb_per_s: Vec<f64>,
    /// Median of each named metric over the runs that have it.
    pub medians: BTreeMap<String, f64>,
    /// Each run's named metrics, in run order.
    pub runs: Vec<BTreeMap<String, f64>>,
    /// The ratio metric's median divided by the baseline's (1.0 for the baseline itself).
    pub ratio_to_baseline: f64,
    /// Which metric the ratio is of (`"mb_per_s"` for throughput).
    pub ratio_of: String,
}

impl MetricSummary {
    /// The median of `key`, where `"mb_per_s"` is throughput.
    pub fn get(&self, key: &str) -> Option<f64> {
        if key == MB_PER_S {
            return Some(self.median_mb_per_s).filter(|v| v.is_finite());
        }
        self.medians.get(key).copied()
    }
}

/// The metric key of throughput in [`summarize_runs`] and [`metric_table`].
pub const MB_PER_S: &str = "mb_per_s";

/// Summaries of each subject's runs; the first subject is the baseline, and each ratio is
/// of the median of `ratio_of` (a metric key or [`MB_PER_S`]).
pub fn summarize_runs(
    subjects: &[(String, Vec<RunMetrics>)],
    ratio_of: &str,
) -> Vec<MetricSummary> {
    let mut summaries: Vec<MetricSummary> = subjects
        .iter()
        .map(|(name, runs)| {
            let runs_mb_per_s: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.sample.as_ref().map(Sample::mb_per_s))
                .collect();
            let mut keys: Vec<&String> = runs.iter().flat_map(|r| r.values.keys()).collect();
            keys.sort();
            keys.dedup();
            let medians = keys
                .into_iter()
                .map(|key| {
                    let values: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| r.values.get(key).copied())
                        .collect();
                    (key.clone(), median(&values))
                })
                .collect();
            MetricSummary {
                name: name.clone(),
                median_mb_per_s: median(&runs_mb_per_s),
                runs_mb_per_s,
                medians,
                runs: runs.iter().map(|r| r.values.clone()).collect(),
                ratio_to_baseline: f64::NAN,
                ratio_of: ratio_of.to_owned(),
            }
        })
        .collect();
    let baseline = summaries
        .first()
        .and_then(|s| s.get(ratio_of))
        .unwrap_or(f64::NAN);
    for s in &mut summaries {
        s.ratio_to_baseline = s.get(ratio_of).unwrap_or(f64::NAN) / baseline;
    }
    summaries
}

/// A column of [`metric_table`]: which metric, its heading, and decimals shown.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Metric key, or [`MB_PER_S`].
    pub key: &'static str,
    /// Heading.
    pub header: &'static str,
    /// Digits after the decimal point.
    pub decimals: usize,
}

impl Column {
    /// A column of `key` headed `header` with `decimals` digits after the point.
    pub const fn new(key: &'static str, header: &'static str, decimals: usize) -> Self {
        Self {
            key,
            header,
            decimals,
        }
    }
}

/// A plain-text table of metric summaries: subject, the columns' medians, the ratio, and
/// each run's MB/s; a metric a subject does not have prints as `-`.
pub fn metric_table(title: &str, columns: &[Column], summaries: &[MetricSummary]) -> String {
    let name_width = summaries
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let ratio_of = summaries.first().map_or(MB_PER_S, |s| s.ratio_of.as_str());
    // The ratio is named by its column's heading when the table shows that metric.
    let ratio_name = columns
        .iter()
        .find(|c| c.key == ratio_of)
        .map_or(ratio_of, |c| c.header);
    let ratio_header = format!("ratio {ratio_name}");
    let widths: Vec<usize> = columns.iter().map(|c| c.header.len().max(9)).collect();
    let mut out = format!("{title}\n{:<name_width$}", "subject");
    for (c, w) in columns.iter().zip(&widths) {
        out.push_str(&format!(" {:>w$}", c.header));
    }
    out.push_str(&format!(" {ratio_header:>12}   runs (MB/s)\n"));
    for s in summaries {
        out.push_str(&format!("{:<name_width$}", s.name));
        for (c, w) in columns.iter().zip(&widths) {
            let cell = match s.get(c.key) {
                Some(v) => format!("{v:.*}", c.decimals),
                None => "-".to_owned(),
            };
            out.push_str(&format!(" {cell:>w$}"));
        }
        let ratio = if s.ratio_to_baseline.is_finite() {
            format!("{:.2}", s.ratio_to_baseline)
        } else {
            "-".to_owned()
        };
        let runs: Vec<String> = s.runs_mb_per_s.iter().map(|r| format!("{r:.0}")).collect();
        out.push_str(&format!(
            " {ratio:>w$}   {}\n",
            runs.join(" "),
            w = ratio_header.len().max(12)
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

    #[test]
    fn metric_medians_and_ratios() {
        let run = |mb: f64, p99: Option<f64>| {
            let mut r = RunMetrics::new(Sample {
                bytes: (mb * 1e6) as u64,
                seconds: 1.0,
            });
            if let Some(p) = p99 {
                r.set("p99_us", p);
            }
            r
        };
        let subjects = vec![
            (
                "base".to_owned(),
                vec![
                    run(100.0, Some(10.0)),
                    run(300.0, Some(30.0)),
                    run(200.0, Some(20.0)),
                ],
            ),
            (
                "x".to_owned(),
                vec![
                    run(50.0, Some(40.0)),
                    run(50.0, Some(60.0)),
                    run(50.0, None),
                ],
            ),
        ];
        let by_mb = summarize_runs(&subjects, MB_PER_S);
        assert_eq!(by_mb[0].median_mb_per_s, 200.0);
        assert!((by_mb[1].ratio_to_baseline - 0.25).abs() < 1e-9);
        assert_eq!(
            by_mb[1].get("p99_us"),
            Some(50.0),
            "median of the runs that have it"
        );
        let by_p99 = summarize_runs(&subjects, "p99_us");
        assert!((by_p99[1].ratio_to_baseline - 2.5).abs() < 1e-9);
        let text = metric_table(
            "t",
            &[
                Column::new(MB_PER_S, "MB/s", 1),
                Column::new("cpu", "cpu s/GB", 2),
            ],
            &by_p99,
        );
        assert!(text.contains("ratio p99_us"), "{text}");
        assert!(
            text.lines().nth(2).is_some_and(|l| l.contains(" - ")),
            "{text}"
        );
    }
}
