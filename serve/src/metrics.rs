//! Latency histograms in the Prometheus text exposition format (version 0.0.4), by hand:
//! cumulative `NAME_bucket{...,le="..."}` lines ending with `le="+Inf"`, then `NAME_sum` and
//! `NAME_count`, one series per set of label values.
//!
//! * `fhec_job_seconds{model}`: a completed job, from its submission to its result stored.
//! * `fhec_job_run_seconds{model}`: a completed job, from its claim by a worker to its result
//!   stored (the classification).
//! * `fhec_http_request_seconds{route,status}`: a request, from its routing to its response
//!   (headers ready), by route template (`/v1/jobs/{id}`; `unmatched` for unknown paths) and
//!   status class (`2xx` .. `5xx`).
//!
//! The workers record a job with [`Metrics::job_finished`]; the API's middleware records
//! requests with [`Metrics::observe_request`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;

use crate::Metrics;

/// Upper bounds of the job histograms' buckets, in seconds (0.5 s to 10 minutes).
pub const JOB_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Upper bounds of the request histogram's buckets, in seconds (1 ms to a minute).
pub const REQUEST_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// One histogram: a count per bucket (not cumulative: summed when rendered), the sum and the
/// count of the observations.
#[derive(Clone, Debug)]
struct Series {
    /// `counts[i]` observations in `(bounds[i-1], bounds[i]]`; the last one above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Series {
    fn new(bounds: &[f64]) -> Series {
        Series { counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// A histogram family: one name, fixed buckets, one series per set of label values.
#[derive(Debug)]
pub struct Histograms {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Series>>,
}

impl Histograms {
    /// A family named `name` (`help` its description) with the label names `labels` and the
    /// buckets' upper bounds `bounds` (increasing, finite; `+Inf` is added).
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Histograms {
        Histograms { name, help, labels, bounds, series: Mutex::new(BTreeMap::new()) }
    }

    /// Records `seconds` in the series of the label values `values` (one per label name;
    /// missing ones are empty). A negative or NaN value counts as 0.
    pub fn observe(&self, values: &[&str], seconds: f64) {
        let v = if seconds.is_nan() { 0.0 } else { seconds.max(0.0) };
        let key: Vec<String> =
            (0..self.labels.len()).map(|i| values.get(i).copied().unwrap_or("").to_owned()).collect();
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.entry(key).or_insert_with(|| Series::new(self.bounds)).observe(self.bounds, v);
    }

    /// Appends the family in the text exposition format (its `# HELP` and `# TYPE` lines even
    /// with no series yet).
    pub fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", self.help);
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (values, s) in &series {
            let labels: String =
                self.labels.iter().zip(values).map(|(l, v)| format!("{l}=\"{}\",", escape(v))).collect();
            let mut cumulative = 0;
            for (i, c) in s.counts.iter().enumerate() {
                cumulative += c;
                let le = self.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
            }
            let labels = labels.trim_end_matches(',');
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.count);
        }
    }
}

/// A label value escaped for the text format (backslash, double quote, line feed).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Milliseconds since the Unix epoch now (0 if the clock is before it).
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            jobs_done: AtomicU64::new(0),
            jobs_failed: AtomicU64::new(0),
            bootstraps_done: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            job_seconds: Histograms::new(
                "fhec_job_seconds",
                "Completed jobs, from submission to result stored, in seconds.",
                &["model"],
                JOB_BUCKETS,
            ),
            job_run_seconds: Histograms::new(
                "fhec_job_run_seconds",
                "Completed jobs, from a worker's claim to result stored (the classification), in seconds.",
                &["model"],
                JOB_BUCKETS,
            ),
            http_request_seconds: Histograms::new(
                "fhec_http_request_seconds",
                "HTTP requests, from routing to response, in seconds, by route template and status class.",
                &["route", "status"],
                REQUEST_BUCKETS,
            ),
        }
    }
}

impl Metrics {
    /// Records a completed job of `model`: `submitted_ms` is its submission time in
    /// milliseconds since the Unix epoch (the `created` column of its row), `claimed` the
    /// instant its worker claimed it. Call it once its result is stored.
    pub fn job_finished(&self, model: &str, submitted_ms: i64, claimed: Instant) {
        let run = claimed.elapsed();
        let since_submission = Duration::from_millis(now_ms().saturating_sub(submitted_ms).max(0) as u64);
        // The wall clock may have been set back meanwhile: a job never took less than its run.
        self.observe_job(model, since_submission.max(run), run);
    }

    /// Records a completed job of `model` that took `total` from submission to result and
    /// `run` of it from claim to result.
    pub fn observe_job(&self, model: &str, total: Duration, run: Duration) {
        self.job_seconds.observe(&[model], total.as_secs_f64());
        self.job_run_seconds.observe(&[model], run.as_secs_f64());
    }

    /// Records a request routed to `route` (its template, such as `/v1/jobs/{id}`) answered
    /// with `status` after `elapsed`.
    pub fn observe_request(&self, route: &str, status: StatusCode, elapsed: Duration) {
        let class = format!("{}xx", status.as_u16() / 100);
        self.http_request_seconds.observe(&[route, &class], elapsed.as_secs_f64());
    }

    /// Appends the histograms in the text exposition format.
    pub fn render_histograms(&self, out: &mut String) {
        self.job_seconds.render(out);
        self.job_run_seconds.render(out);
        self.http_request_seconds.render(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_sum_and_count() {
        let h = Histograms::new("t_seconds", "A test.", &["model"], &[1.0, 2.5]);
        let mut out = String::new();
        h.render(&mut out);
        assert_eq!(out, "# HELP t_seconds A test.\n# TYPE t_seconds histogram\n");
        for v in [0.5, 1.0, 2.0, 7.0, -3.0, f64::NAN] {
            h.observe(&["a\"b"], v);
        }
        h.observe(&["c"], 2.5);
        let mut out = String::new();
        h.render(&mut out);
        let expected = "# HELP t_seconds A test.\n# TYPE t_seconds histogram\n\
            t_seconds_bucket{model=\"a\\\"b\",le=\"1\"} 4\n\
            t_seconds_bucket{model=\"a\\\"b\",le=\"2.5\"} 5\n\
            t_seconds_bucket{model=\"a\\\"b\",le=\"+Inf\"} 6\n\
            t_seconds_sum{model=\"a\\\"b\"} 10.5\n\
            t_seconds_count{model=\"a\\\"b\"} 6\n\
            t_seconds_bucket{model=\"c\",le=\"1\"} 0\n\
            t_seconds_bucket{model=\"c\",le=\"2.5\"} 1\n\
            t_seconds_bucket{model=\"c\",le=\"+Inf\"} 1\n\
            t_seconds_sum{model=\"c\"} 2.5\n\
            t_seconds_count{model=\"c\"} 1\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn a_job_and_a_request() {
        let m = Metrics::default();
        m.observe_job("mnist", Duration::from_secs(3), Duration::from_millis(1500));
        m.job_finished("mnist", now_ms() - 700, Instant::now());
        m.observe_request("/v1/jobs/{id}", StatusCode::NOT_FOUND, Duration::from_millis(3));
        let mut out = String::new();
        m.render_histograms(&mut out);
        assert!(out.contains("fhec_job_seconds_bucket{model=\"mnist\",le=\"0.5\"} 0\n"), "{out}");
        assert!(out.contains("fhec_job_seconds_bucket{model=\"mnist\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("fhec_job_seconds_count{model=\"mnist\"} 2\n"), "{out}");
        assert!(out.contains("fhec_job_run_seconds_bucket{model=\"mnist\",le=\"0.5\"} 1\n"), "{out}");
        assert!(out.contains("fhec_job_run_seconds_bucket{model=\"mnist\",le=\"2.5\"} 2\n"), "{out}");
        assert!(
            out.contains("fhec_http_request_seconds_bucket{route=\"/v1/jobs/{id}\",status=\"4xx\",le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("fhec_http_request_seconds_count{route=\"/v1/jobs/{id}\",status=\"4xx\"} 1\n"), "{out}");
    }
}
