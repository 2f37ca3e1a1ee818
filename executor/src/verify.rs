//! Verification: every probe sampled at a fixed interval over a window, like
//! canary analysis, failing early once too many samples have failed. Failures
//! under the limit are tolerated on the way, but not at the end: the last sample
//! is the state the target is left in, so it must pass.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::execution::ProbeResult;
use crate::plan::RenderedVerification;
use crate::probe;

/// One round of every probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When the sample was due, counted from the end of the delay.
    pub offset_ms: u64,
    pub passed: bool,
    pub results: Vec<ProbeResult>,
}

/// How one probe fared over the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProbeTally {
    pub passed: u32,
    pub failed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerificationReport {
    pub passed: bool,
    pub samples: u32,
    pub failed_samples: Vec<Sample>,
    pub last_sample: Option<Sample>,
    pub probes: BTreeMap<String, ProbeTally>,
    pub detail: String,
}

impl VerificationReport {
    /// The probe results to show a caller: the last sample's.
    pub fn last_results(&self) -> Vec<ProbeResult> {
        self.last_sample.as_ref().map(|s| s.results.clone()).unwrap_or_default()
    }
}

/// When samples are due, from the end of the delay: `0, interval, 2 * interval, ...`
/// up to and including `window`, so there is always at least one.
pub fn sample_offsets(window_ms: u64, interval_ms: u64) -> impl Iterator<Item = u64> {
    let interval = interval_ms.max(1);
    (0..=window_ms / interval).map(move |k| k * interval)
}

/// Whether to stop sampling: once `failures` reach `max_failures` the verdict is known.
pub fn failed_early(failures: u32, max_failures: u32) -> bool {
    failures >= max_failures.max(1)
}

/// The verdict: fewer failures than the limit, and a last sample that passed.
pub fn verdict(failures: u32, max_failures: u32, ended_failing: bool) -> bool {
    !failed_early(failures, max_failures) && !ended_failing
}

/// Runs the verification and returns its verdict.
pub async fn run(verification: &RenderedVerification, client: &reqwest::Client) -> VerificationReport {
    tokio::time::sleep(Duration::from_millis(verification.delay_ms)).await;
    let start = Instant::now();
    let mut samples: u32 = 0;
    let mut failed_samples = Vec::new();
    let mut last_sample = None;
    let mut probes: BTreeMap<String, ProbeTally> = BTreeMap::new();
    for offset_ms in sample_offsets(verification.window_ms, verification.interval_ms) {
        tokio::time::sleep_until(start + Duration::from_millis(offset_ms)).await;
        let results = futures::future::join_all(verification.probes.iter().map(|p| probe::run(p, client))).await;
        for result in &results {
            let tally = probes.entry(result.probe.clone()).or_default();
            if result.passed {
                tally.passed += 1;
            } else {
                tally.failed += 1;
            }
        }
        let sample = Sample { offset_ms, passed: results.iter().all(|r| r.passed), results };
        samples += 1;
        if !sample.passed {
            failed_samples.push(sample.clone());
        }
        last_sample = Some(sample);
        if failed_early(failed_samples.len() as u32, verification.max_failures) {
            break;
        }
    }
    let ended_failing = last_sample.as_ref().is_some_and(|s| !s.passed);
    let passed = verdict(failed_samples.len() as u32, verification.max_failures, ended_failing);
    let detail = describe(passed, samples, &failed_samples, verification.max_failures, ended_failing);
    VerificationReport { passed, samples, failed_samples, last_sample, probes, detail }
}

fn describe(passed: bool, samples: u32, failed_samples: &[Sample], max_failures: u32, ended_failing: bool) -> String {
    if ended_failing && !failed_early(failed_samples.len() as u32, max_failures) {
        let last = failed_samples
            .last()
            .and_then(|s| s.results.iter().find(|r| !r.passed))
            .map_or_else(|| "no detail".to_owned(), |r| format!("probe `{}`: {}", r.probe, r.detail));
        return format!(
            "{} of {samples} sample(s) failed, under the limit of {max_failures}, but the last one failed, so the target was left unhealthy: {last}",
            failed_samples.len()
        );
    }
    let first_failure = failed_samples
        .first()
        .and_then(|s| s.results.iter().find(|r| !r.passed))
        .map(|r| format!("probe `{}`: {}", r.probe, r.detail));
    match (passed, first_failure) {
        (true, None) => format!("{samples} sample(s), all passed"),
        (true, Some(failure)) => {
            format!(
                "{samples} sample(s), {} failed (under the limit of {max_failures}); first: {failure}",
                failed_samples.len()
            )
        }
        (false, failure) => format!(
            "{} of {samples} sample(s) failed; first: {}",
            failed_samples.len(),
            failure.unwrap_or_else(|| "no detail".to_owned())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        let cases: [((u64, u64), &[u64]); 5] = [
            ((1000, 500), &[0, 500, 1000]),
            ((1000, 300), &[0, 300, 600, 900]),
            ((100, 500), &[0]),
            ((1, 1), &[0, 1]),
            ((0, 0), &[0]),
        ];
        for ((window, interval), expected) in cases {
            assert_eq!(sample_offsets(window, interval).collect::<Vec<_>>(), expected, "{window} {interval}");
        }
    }

    #[test]
    fn early_failure() {
        assert!(!failed_early(0, 1));
        assert!(failed_early(1, 1));
        assert!(!failed_early(1, 2));
        assert!(failed_early(2, 2));
        // A limit of zero would pass everything; it means one.
        assert!(failed_early(1, 0));
    }

    #[test]
    fn the_last_sample_decides_under_the_limit() {
        assert!(verdict(0, 2, false));
        assert!(verdict(1, 2, false), "an early failure under the limit is tolerated");
        assert!(!verdict(1, 2, true), "but not one the target is left in");
        assert!(!verdict(2, 2, false));
    }
}
