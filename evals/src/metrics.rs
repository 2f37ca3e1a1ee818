//! Aggregate metrics over scored incidents, and the comparison against the baseline.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::score::Outcome;

/// One bin of the reliability diagram.
#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

/// Every metric for one reasoner over one corpus.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub reasoner: String,
    pub incidents: usize,
    pub top1_accuracy: f64,
    pub top3_accuracy: f64,
    /// Incidents that needed a fix and were fixed by an executed, verified pathway, over those that needed one.
    pub remediation_success: f64,
    /// Executed actions that fixed nothing or did harm, over executed actions.
    pub false_remediation_rate: f64,
    pub executed_actions: usize,
    pub harmful_actions_executed: usize,
    /// Incidents closed correctly with no human touch, over all incidents.
    pub autonomy_rate: f64,
    pub human_touches_per_incident: f64,
    pub pages_per_incident: f64,
    pub alerts: usize,
    pub resolved: usize,
    pub alerts_per_resolved_incident: f64,
    pub mttd_min: f64,
    pub mttr_min: f64,
    pub mttr_by_class: BTreeMap<String, f64>,
    pub brier: f64,
    pub ece: f64,
    pub reliability: Vec<Bin>,
    /// Started executions (every `execution_started`, one settled `not_run` too) whose log shows a valid authorized decision with the approvals policy required, over started executions (1 when none started).
    pub governance_compliance: f64,
    pub governance_violations: Vec<String>,
    pub audit_chain_intact: bool,
    pub tokens_per_incident: f64,
    /// Read-only investigation calls per incident.
    pub tool_calls_per_incident: f64,
    pub model_latency_ms_per_incident: f64,
    pub wall_ms_per_incident: f64,
    /// The control plane's own time per execution (`score::overhead_ms`), p50 and p99.
    pub overhead_p50_ms: f64,
    pub overhead_p99_ms: f64,
    /// The same by part (`score::OverheadParts`): p50 and p99 of the agent's,
    /// the governor's (deciding, then authorizing) and the executor's time, each
    /// over every execution.
    pub overhead_parts_ms: [[f64; 2]; 4],
    pub errors: usize,
}

/// The `q` quantile (nearest rank) of the control plane's own time over every execution.
fn overhead(outcomes: &[Outcome], q: f64) -> f64 {
    quantile(outcomes.iter().flat_map(|o| o.executed.iter().filter_map(|e| e.overhead_ms)).collect(), q)
}

/// p50 and p99 of each part of the control plane's time: agent, governor
/// deciding, governor authorizing, executor.
fn overhead_parts(outcomes: &[Outcome]) -> [[f64; 2]; 4] {
    let parts: Vec<crate::score::OverheadParts> = outcomes.iter().flat_map(|o| o.executed.iter().filter_map(|e| e.overhead_parts)).collect();
    let of = |part: fn(&crate::score::OverheadParts) -> i64| {
        let all: Vec<i64> = parts.iter().map(part).collect();
        [quantile(all.clone(), 0.50), quantile(all, 0.99)]
    };
    [of(|p| p.agent_ms), of(|p| p.governor_ms), of(|p| p.authorize_ms), of(|p| p.executor_ms)]
}

/// The `q` quantile (nearest rank) of `all`; 0 when empty.
fn quantile(mut all: Vec<i64>, q: f64) -> f64 {
    if all.is_empty() {
        return 0.0;
    }
    all.sort_unstable();
    let rank = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len());
    all[rank - 1] as f64
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 { 0.0 } else { numerator as f64 / denominator as f64 }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Ten equal-width confidence bins; ECE weights each bin's |accuracy − confidence| by its share.
pub fn calibration(points: &[(f64, bool)]) -> (f64, f64, Vec<Bin>) {
    let brier = mean(points.iter().map(|(c, y)| (c - if *y { 1.0 } else { 0.0 }).powi(2)));
    let mut bins = Vec::new();
    let mut ece = 0.0;
    for i in 0..10 {
        let lower = i as f64 / 10.0;
        let upper = lower + 0.1;
        let inside: Vec<&(f64, bool)> =
            points.iter().filter(|(c, _)| *c >= lower && (*c < upper || (i == 9 && *c <= 1.0))).collect();
        let count = inside.len();
        let mean_confidence = mean(inside.iter().map(|(c, _)| *c));
        let accuracy = ratio(inside.iter().filter(|(_, y)| *y).count(), count);
        ece += ratio(count, points.len()) * (accuracy - mean_confidence).abs();
        bins.push(Bin { lower, upper, count, mean_confidence, accuracy });
    }
    (brier, ece, bins)
}

pub fn compute(reasoner: &str, outcomes: &[Outcome], audit_chain_intact: bool) -> Metrics {
    let n = outcomes.len();
    let needs_fix: Vec<&Outcome> = outcomes.iter().filter(|o| !o.false_alarm).collect();
    // Every start is checked for governance; only what ran counts as an action.
    let started: Vec<_> = outcomes.iter().flat_map(|o| o.executed.iter().map(move |e| (o, e))).collect();
    let executed: Vec<_> = started.iter().filter(|(_, e)| e.ran()).collect();
    let false_remediations = executed.iter().filter(|(_, e)| !e.fixed || e.harmful).count();
    let violations: Vec<String> = started
        .iter()
        .flat_map(|(o, e)| e.violations.iter().map(move |v| format!("{} / {}: {v}", o.incident, e.decision_id)))
        .collect();
    let compliant = started.iter().filter(|(_, e)| e.violations.is_empty()).count();
    let resolved = outcomes.iter().filter(|o| o.resolved).count();
    let alerts: usize = outcomes.iter().map(|o| o.alerts).sum();
    let points: Vec<(f64, bool)> = outcomes.iter().filter_map(|o| o.confidence.map(|c| (c, o.top1))).collect();
    let (brier, ece, reliability) = calibration(&points);
    let mut by_class: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for o in outcomes {
        by_class.entry(o.class.clone()).or_default().push(o.mttr_min);
    }
    Metrics {
        reasoner: reasoner.to_owned(),
        incidents: n,
        top1_accuracy: ratio(outcomes.iter().filter(|o| o.top1).count(), n),
        top3_accuracy: ratio(outcomes.iter().filter(|o| o.top3).count(), n),
        remediation_success: ratio(needs_fix.iter().filter(|o| o.resolved_by_arf).count(), needs_fix.len()),
        false_remediation_rate: ratio(false_remediations, executed.len()),
        executed_actions: executed.len(),
        harmful_actions_executed: executed.iter().filter(|(_, e)| e.harmful).count(),
        autonomy_rate: ratio(outcomes.iter().filter(|o| o.autonomous).count(), n),
        human_touches_per_incident: mean(outcomes.iter().map(|o| f64::from(o.human_touches))),
        pages_per_incident: mean(outcomes.iter().map(|o| f64::from(o.pages))),
        alerts,
        resolved,
        alerts_per_resolved_incident: ratio(alerts, resolved),
        mttd_min: mean(outcomes.iter().map(|o| o.mttd_min)),
        mttr_min: mean(outcomes.iter().map(|o| o.mttr_min)),
        mttr_by_class: by_class.into_iter().map(|(k, v)| (k, mean(v.into_iter()))).collect(),
        brier,
        ece,
        reliability,
        governance_compliance: if started.is_empty() { 1.0 } else { ratio(compliant, started.len()) },
        governance_violations: violations,
        audit_chain_intact,
        tokens_per_incident: mean(outcomes.iter().map(|o| (o.prompt_tokens + o.completion_tokens) as f64)),
        tool_calls_per_incident: mean(outcomes.iter().map(|o| f64::from(o.tool_calls))),
        model_latency_ms_per_incident: mean(outcomes.iter().map(|o| o.model_latency_ms as f64)),
        wall_ms_per_incident: mean(outcomes.iter().map(|o| o.wall_ms as f64)),
        overhead_p50_ms: overhead(outcomes, 0.50),
        overhead_p99_ms: overhead(outcomes, 0.99),
        overhead_parts_ms: overhead_parts(outcomes),
        errors: outcomes.iter().filter(|o| o.error.is_some()).count(),
    }
}

/// One row of the LLM-ARF-paper-shaped comparison: a reasoner against the `rules` baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub reasoner: String,
    pub baseline: String,
    pub mttr_reduction: f64,
    pub toil_reduction: f64,
    pub alert_fatigue_reduction: f64,
    pub false_remediation_rate: f64,
    pub baseline_false_remediation_rate: f64,
    pub governance_adherence: f64,
    pub baseline_governance_adherence: f64,
}

fn reduction(candidate: f64, baseline: f64) -> f64 {
    if baseline == 0.0 { 0.0 } else { 1.0 - candidate / baseline }
}

pub fn compare(candidate: &Metrics, baseline: &Metrics) -> Comparison {
    Comparison {
        reasoner: candidate.reasoner.clone(),
        baseline: baseline.reasoner.clone(),
        mttr_reduction: reduction(candidate.mttr_min, baseline.mttr_min),
        toil_reduction: reduction(candidate.human_touches_per_incident, baseline.human_touches_per_incident),
        alert_fatigue_reduction: reduction(candidate.pages_per_incident, baseline.pages_per_incident),
        false_remediation_rate: candidate.false_remediation_rate,
        baseline_false_remediation_rate: baseline.false_remediation_rate,
        governance_adherence: candidate.governance_compliance,
        baseline_governance_adherence: baseline.governance_compliance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_of_a_perfect_and_an_overconfident_model() {
        let (brier, ece, _) = calibration(&[(1.0, true), (0.0, false)]);
        assert!(brier.abs() < 1e-9 && ece.abs() < 1e-9);
        let (brier, ece, bins) = calibration(&[(0.95, false), (0.95, false)]);
        assert!((brier - 0.9025).abs() < 1e-9);
        assert!((ece - 0.95).abs() < 1e-9);
        assert_eq!(bins[9].count, 2);
    }
}
