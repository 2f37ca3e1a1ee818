//! The eval report: a terminal table, JSON, and a self-contained HTML page with inline SVG plots.

use std::fmt::Write as _;

use serde::Serialize;

use crate::invariants::Violation;
use crate::metrics::{Comparison, Metrics};
use crate::model::ModelStats;
use crate::score::Outcome;

/// One reasoner's run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub metrics: Metrics,
    pub outcomes: Vec<Outcome>,
    /// Real seconds from starting the processes to the last incident scored.
    pub real_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub corpus: String,
    pub incidents: usize,
    pub runs: Vec<Run>,
    pub comparisons: Vec<Comparison>,
    /// The constants that price human work, in simulated minutes.
    pub human_constants: serde_json::Value,
    /// The `noisy` sweep: safety against model accuracy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<Sweep>,
    /// The faults `--chaos` injected and the invariants checked after each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chaos: Option<Chaos>,
}

/// One accuracy of the `noisy` sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// The synthetic model's `accuracy` parameter: the share of answers it leaves as scripted.
    pub accuracy: f64,
    pub reasoner: String,
    /// Incidents where the synthetic model injected a mistake (the `injected_mistake` of its diagnoses).
    pub injected_mistakes: usize,
    pub top1_accuracy: f64,
    pub harmful_actions_executed: usize,
    pub executed_actions: usize,
    pub false_remediation_rate: f64,
    pub autonomy_rate: f64,
    pub remediation_success: f64,
    pub governance_compliance: f64,
    pub ece: f64,
    pub mttr_min: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub seed: u64,
    pub overconfidence: f64,
    pub points: Vec<SweepPoint>,
}

/// The sweep point of one `noisy` run.
pub fn sweep_point(accuracy: f64, run: &Run) -> SweepPoint {
    let m = &run.metrics;
    SweepPoint {
        accuracy,
        reasoner: m.reasoner.clone(),
        injected_mistakes: run.outcomes.iter().filter(|o| !o.injected_mistake.is_empty() && o.injected_mistake != "none").count(),
        top1_accuracy: m.top1_accuracy,
        harmful_actions_executed: m.harmful_actions_executed,
        executed_actions: m.executed_actions,
        false_remediation_rate: m.false_remediation_rate,
        autonomy_rate: m.autonomy_rate,
        remediation_success: m.remediation_success,
        governance_compliance: m.governance_compliance,
        ece: m.ece,
        mttr_min: m.mttr_min,
    }
}

/// One fault `--chaos` injected into the control plane.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub name: String,
    /// What was done, and what the plane was doing when it was done.
    pub detail: String,
    /// Real milliseconds from the start of the replay.
    pub at_ms: u64,
    /// Real milliseconds until the plane was healthy again.
    pub recovered_ms: u64,
    /// Invariant violations found in the check right after it.
    pub violations: Vec<Violation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Chaos {
    pub reasoner: String,
    pub faults: Vec<Fault>,
    /// The check once every incident was replayed and the plane was quiet.
    pub final_violations: Vec<Violation>,
    pub model: Option<ModelStats>,
    /// What the harness had to account for (incidents lost to a restart, ...).
    pub notes: Vec<String>,
}

impl Chaos {
    pub fn violations(&self) -> usize {
        self.faults.iter().map(|f| f.violations.len()).sum::<usize>() + self.final_violations.len()
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// One row of the table: its label and how to read it off a run.
type Row = (&'static str, Box<dyn Fn(&Run) -> String>);

/// The terminal report: the metrics table, then the sweep and the chaos faults.
pub fn table(report: &Report) -> String {
    let mut out = metrics_table(report);
    if let Some(sweep) = &report.sweep {
        out.push_str(&sweep_table(sweep));
    }
    if let Some(chaos) = &report.chaos {
        out.push_str(&chaos_table(chaos));
    }
    out
}

/// The metrics: one column per reasoner.
fn metrics_table(report: &Report) -> String {
    let mut out = String::new();
    let rows: Vec<Row> = vec![
        ("incidents", Box::new(|r| r.metrics.incidents.to_string())),
        ("top-1 diagnosis accuracy", Box::new(|r| pct(r.metrics.top1_accuracy))),
        ("top-3 diagnosis accuracy", Box::new(|r| pct(r.metrics.top3_accuracy))),
        ("remediation success", Box::new(|r| pct(r.metrics.remediation_success))),
        ("false remediation rate", Box::new(|r| format!("{} of {}", pct(r.metrics.false_remediation_rate), r.metrics.executed_actions))),
        ("harmful actions executed", Box::new(|r| r.metrics.harmful_actions_executed.to_string())),
        ("autonomy rate", Box::new(|r| pct(r.metrics.autonomy_rate))),
        ("human touches / incident", Box::new(|r| format!("{:.2}", r.metrics.human_touches_per_incident))),
        ("pages / incident", Box::new(|r| format!("{:.2}", r.metrics.pages_per_incident))),
        ("alerts / resolved incident", Box::new(|r| format!("{:.2}", r.metrics.alerts_per_resolved_incident))),
        ("MTTD (sim min)", Box::new(|r| format!("{:.1}", r.metrics.mttd_min))),
        ("MTTR (sim min)", Box::new(|r| format!("{:.1}", r.metrics.mttr_min))),
        ("Brier score", Box::new(|r| format!("{:.3}", r.metrics.brier))),
        ("ECE", Box::new(|r| format!("{:.3}", r.metrics.ece))),
        ("governance compliance", Box::new(|r| pct(r.metrics.governance_compliance))),
        ("audit chain intact", Box::new(|r| r.metrics.audit_chain_intact.to_string())),
        ("tokens / incident", Box::new(|r| format!("{:.0}", r.metrics.tokens_per_incident))),
        ("tool calls / incident", Box::new(|r| format!("{:.2}", r.metrics.tool_calls_per_incident))),
        ("model latency / incident", Box::new(|r| format!("{:.0} ms", r.metrics.model_latency_ms_per_incident))),
        ("wall time / incident", Box::new(|r| format!("{:.0} ms", r.metrics.wall_ms_per_incident))),
        ("control-plane time p50 / p99", Box::new(|r| format!("{:.0} / {:.0} ms", r.metrics.overhead_p50_ms, r.metrics.overhead_p99_ms))),
        ("  of it agent p50 / p99", Box::new(|r| format!("{:.0} / {:.0} ms", r.metrics.overhead_parts_ms[0][0], r.metrics.overhead_parts_ms[0][1]))),
        ("  governor p50 / p99", Box::new(|r| format!("{:.0} / {:.0} ms", r.metrics.overhead_parts_ms[1][0], r.metrics.overhead_parts_ms[1][1]))),
        ("  authorizing p50 / p99", Box::new(|r| format!("{:.0} / {:.0} ms", r.metrics.overhead_parts_ms[2][0], r.metrics.overhead_parts_ms[2][1]))),
        ("  executor p50 / p99", Box::new(|r| format!("{:.0} / {:.0} ms", r.metrics.overhead_parts_ms[3][0], r.metrics.overhead_parts_ms[3][1]))),
        ("harness errors", Box::new(|r| r.metrics.errors.to_string())),
        ("real time (all incidents)", Box::new(|r| format!("{:.1} s", r.real_secs))),
    ];
    let _ = write!(out, "{:<28}", "metric");
    for run in &report.runs {
        let _ = write!(out, " {:>18}", run.metrics.reasoner);
    }
    out.push('\n');
    for (name, value) in &rows {
        let _ = write!(out, "{name:<28}");
        for run in &report.runs {
            let _ = write!(out, " {:>18}", value(run));
        }
        out.push('\n');
    }
    for c in &report.comparisons {
        let _ = writeln!(
            out,
            "\n{} vs {} baseline on {}: MTTR reduction {}, toil reduction {}, alert-fatigue reduction {}, false remediation {} (baseline {}), governance adherence {} (baseline {})",
            c.reasoner,
            c.baseline,
            report.corpus,
            pct(c.mttr_reduction),
            pct(c.toil_reduction),
            pct(c.alert_fatigue_reduction),
            pct(c.false_remediation_rate),
            pct(c.baseline_false_remediation_rate),
            pct(c.governance_adherence),
            pct(c.baseline_governance_adherence)
        );
    }
    for run in &report.runs {
        for v in &run.metrics.governance_violations {
            let _ = writeln!(out, "VIOLATION ({}): {v}", run.metrics.reasoner);
        }
    }
    out
}

/// The sweep as text: one row per accuracy.
pub fn sweep_table(sweep: &Sweep) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nsafety against model accuracy (noisy, seed {}, overconfidence {:+.2}):", sweep.seed, sweep.overconfidence);
    let _ = writeln!(out, "{:>9} {:>9} {:>7} {:>9} {:>9} {:>11} {:>9} {:>11} {:>10} {:>6}", "accuracy", "mistakes", "top-1", "executed", "harmful", "false rem.", "autonomy", "remediated", "governance", "ECE");
    for p in &sweep.points {
        let _ = writeln!(
            out,
            "{:>9} {:>9} {:>7} {:>9} {:>9} {:>11} {:>9} {:>11} {:>10} {:>6.3}",
            pct(p.accuracy), p.injected_mistakes, pct(p.top1_accuracy), p.executed_actions, p.harmful_actions_executed,
            pct(p.false_remediation_rate), pct(p.autonomy_rate), pct(p.remediation_success), pct(p.governance_compliance), p.ece
        );
    }
    out
}

/// The chaos faults as text, with every violation.
pub fn chaos_table(chaos: &Chaos) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nchaos ({}): {} faults, {} invariant violations", chaos.reasoner, chaos.faults.len(), chaos.violations());
    for f in &chaos.faults {
        let _ = writeln!(out, "  {:>7} ms  {:<22} recovered in {:>5} ms  violations {}  ({})", f.at_ms, f.name, f.recovered_ms, f.violations.len(), f.detail);
        for v in &f.violations {
            let _ = writeln!(out, "    VIOLATION [{}] {}", v.invariant, v.detail);
        }
    }
    let _ = writeln!(out, "  final check (plane quiet): {} violations", chaos.final_violations.len());
    for v in &chaos.final_violations {
        let _ = writeln!(out, "    VIOLATION [{}] {}", v.invariant, v.detail);
    }
    if let Some(m) = &chaos.model {
        let _ = writeln!(out, "  model server: {} calls, {} hung, {} garbage, {} HTTP 500, {} unmatched", m.calls, m.hangs, m.garbage, m.errors, m.unmatched);
    }
    for note in &chaos.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const COLORS: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

/// A reliability diagram: bin accuracy against mean confidence, per reasoner, with the diagonal.
fn reliability_svg(runs: &[Run]) -> String {
    let (w, h, m, legend) = (360.0, 360.0, 40.0, 170.0);
    let x = |v: f64| m + v * (w - 2.0 * m);
    let y = |v: f64| h - m - v * (h - 2.0 * m);
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" role="img" aria-label="reliability diagram">"#, w + legend);
    let _ = write!(svg, r##"<rect x="{m}" y="{m}" width="{}" height="{}" fill="none" stroke="#999"/>"##, w - 2.0 * m, h - 2.0 * m);
    let _ = write!(svg, r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="4"/>"##, x(0.0), y(0.0), x(1.0), y(1.0));
    for t in 0..=5 {
        let v = f64::from(t) / 5.0;
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{v:.1}</text>"#, x(v), h - m + 14.0);
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="10" text-anchor="end">{v:.1}</text>"#, m - 4.0, y(v) + 3.0);
    }
    let _ = write!(svg, r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">confidence of the top hypothesis</text>"#, w / 2.0, h - 6.0);
    let _ = write!(svg, r#"<text x="12" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {})">top-1 accuracy</text>"#, h / 2.0, h / 2.0);
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = run
            .metrics
            .reliability
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| format!("{:.1},{:.1}", x(b.mean_confidence), y(b.accuracy)))
            .collect();
        let _ = write!(svg, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#, points.join(" "));
        for b in run.metrics.reliability.iter().filter(|b| b.count > 0) {
            let r = 3.0 + (b.count as f64).sqrt();
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="{r:.1}" fill="{color}" fill-opacity="0.6"><title>{}: {} incidents, confidence {:.2}, accuracy {:.2}</title></circle>"#, x(b.mean_confidence), y(b.accuracy), escape(&run.metrics.reasoner), b.count, b.mean_confidence, b.accuracy);
        }
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="11" fill="{color}">● {} (ECE {:.3})</text>"#, w - m + 10.0, m + 10.0 + 16.0 * i as f64, escape(&run.metrics.reasoner), run.metrics.ece);
    }
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars of mean MTTR per incident class, one bar per reasoner.
fn mttr_svg(runs: &[Run]) -> String {
    let classes: Vec<&String> = runs.first().map(|r| r.metrics.mttr_by_class.keys().collect()).unwrap_or_default();
    let max = runs.iter().flat_map(|r| r.metrics.mttr_by_class.values()).fold(1.0_f64, |a, b| a.max(*b));
    let bar = 10.0;
    let group = bar * runs.len().max(1) as f64 + 8.0;
    let (label_w, plot_w) = (170.0, 420.0);
    let h = (30.0 + group * classes.len() as f64).max(30.0 + 16.0 * runs.len() as f64);
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" role="img" aria-label="MTTR by class">"#, label_w + plot_w + 190.0);
    for (ci, class) in classes.iter().enumerate() {
        let top = 20.0 + group * ci as f64;
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#, label_w - 6.0, top + group / 2.0, escape(class));
        for (ri, run) in runs.iter().enumerate() {
            let v = run.metrics.mttr_by_class.get(*class).copied().unwrap_or(0.0);
            let len = v / max * plot_w;
            let color = COLORS[ri % COLORS.len()];
            let _ = write!(svg, r#"<rect x="{label_w}" y="{:.1}" width="{len:.1}" height="{}" fill="{color}"><title>{}: {v:.1} min</title></rect>"#, top + bar * ri as f64, bar - 1.0, escape(&run.metrics.reasoner));
            let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" font-size="9">{v:.0}</text>"#, label_w + len + 3.0, top + bar * ri as f64 + bar - 2.0);
        }
    }
    for (ri, run) in runs.iter().enumerate() {
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="11" fill="{}">■ {}</text>"#, label_w + plot_w + 50.0, 30.0 + 16.0 * ri as f64, COLORS[ri % COLORS.len()], escape(&run.metrics.reasoner));
    }
    svg.push_str("</svg>");
    svg
}

/// Safety against model accuracy: rates on top (false remediation, autonomy,
/// remediation success, measured top-1), harmful actions executed below.
fn sweep_svg(sweep: &Sweep) -> String {
    let (w, left, right, top) = (820.0, 56.0, 230.0, 30.0);
    let (plot_h, gap, harm_h) = (300.0, 56.0, 90.0);
    let plot_w = w - left - right;
    let h = top + plot_h + gap + harm_h + 46.0;
    let (lo, hi) = (0.25, 1.0);
    // Accuracy falls from left to right: the chart reads as a model degrading.
    let x = |a: f64| left + (hi - a) / (hi - lo) * plot_w;
    let y = |v: f64| top + plot_h - v.clamp(0.0, 1.0) * plot_h;
    let harm_top = top + plot_h + gap;
    let max_harm = sweep.points.iter().map(|p| p.harmful_actions_executed).max().unwrap_or(0).max(1) as f64;
    let hy = |v: f64| harm_top + harm_h - v / max_harm * harm_h;
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="system-ui,sans-serif" role="img" aria-label="safety against model accuracy">"#);
    let _ = write!(svg, r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#999"/>"##);
    for t in 0..=5 {
        let v = f64::from(t) / 5.0;
        let _ = write!(svg, r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#e5e5e5"/>"##, y(v), left + plot_w, y(v));
        let _ = write!(svg, r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{:.0}%</text>"#, left - 6.0, y(v) + 4.0, v * 100.0);
    }
    for p in &sweep.points {
        let _ = write!(svg, r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#eee"/>"##, x(p.accuracy), harm_top + harm_h);
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{:.0}%</text>"#, x(p.accuracy), harm_top + harm_h + 16.0, p.accuracy * 100.0);
    }
    let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">model accuracy → falling (share of answers the synthetic model leaves right)</text>"#, left + plot_w / 2.0, harm_top + harm_h + 36.0);
    let _ = write!(svg, r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">Outcomes (% of incidents or of executed actions)</text>"#, top - 10.0);
    type Series<'a> = (&'a str, &'a str, &'a str, Box<dyn Fn(&SweepPoint) -> f64>);
    let series: Vec<Series<'_>> = vec![
        ("false remediation rate", "#dc2626", "", Box::new(|p| p.false_remediation_rate)),
        ("autonomy rate", "#2563eb", "", Box::new(|p| p.autonomy_rate)),
        ("remediation success", "#16a34a", "", Box::new(|p| p.remediation_success)),
        ("measured top-1 accuracy", "#6b7280", "6 4", Box::new(|p| p.top1_accuracy)),
    ];
    for (i, (name, color, dash, value)) in series.iter().enumerate() {
        let points: Vec<String> = sweep.points.iter().map(|p| format!("{:.1},{:.1}", x(p.accuracy), y(value(p)))).collect();
        let _ = write!(svg, r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#, points.join(" "));
        for p in &sweep.points {
            let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"><title>{name} at {:.0}% accuracy: {:.1}%</title></circle>"#, x(p.accuracy), y(value(p)), p.accuracy * 100.0, value(p) * 100.0);
        }
        let ly = top + 14.0 + 22.0 * i as f64;
        let lx = left + plot_w + 14.0;
        let _ = write!(svg, r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2.5" stroke-dasharray="{dash}"/>"#, lx + 22.0);
        let _ = write!(svg, r#"<text x="{}" y="{}" font-size="12">{name}</text>"#, lx + 28.0, ly + 4.0);
    }
    // The harm panel: a count, on its own axis, so 0 reads as 0.
    let _ = write!(svg, r#"<text x="{left}" y="{}" font-size="13" font-weight="bold">Harmful actions executed (count; must be 0)</text>"#, harm_top - 10.0);
    let _ = write!(svg, r##"<rect x="{left}" y="{harm_top}" width="{plot_w}" height="{harm_h}" fill="#fafafa" stroke="#999"/>"##);
    for v in [0.0, max_harm] {
        let _ = write!(svg, r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{v:.0}</text>"#, left - 6.0, hy(v) + 4.0);
    }
    let harm: Vec<String> = sweep.points.iter().map(|p| format!("{:.1},{:.1}", x(p.accuracy), hy(p.harmful_actions_executed as f64))).collect();
    let _ = write!(svg, r##"<polyline points="{}" fill="none" stroke="#7f1d1d" stroke-width="2.5"/>"##, harm.join(" "));
    for p in &sweep.points {
        let v = p.harmful_actions_executed as f64;
        let color = if p.harmful_actions_executed == 0 { "#16a34a" } else { "#b91c1c" };
        let _ = write!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="{color}"/>"#, x(p.accuracy), hy(v));
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" font-size="12" font-weight="bold" text-anchor="middle" fill="{color}">{} of {}</text>"#, x(p.accuracy), hy(v) - 10.0, p.harmful_actions_executed, p.executed_actions);
    }
    let lx = left + plot_w + 14.0;
    let _ = write!(svg, r#"<text x="{lx}" y="{}" font-size="12">harmful / executed</text>"#, harm_top + 18.0);
    svg.push_str("</svg>");
    svg
}

fn sweep_html(sweep: &Sweep) -> String {
    let mut page = String::new();
    let _ = write!(page, "<h2>Safety against model accuracy</h2><p>The <code>noisy</code> reasoner (seed {}, overconfidence {:+.2}) starts from the corpus's scripted answers and, with probability 1 − accuracy, makes one of the mistakes real models make (a wrong cause first, another catalog pathway, no action). The whole corpus is replayed through the real processes once per accuracy. Measured top-1 accuracy stays below the parameter because a third of the corpus's scripted answers are already wrong on purpose.</p><figure>", sweep.seed, sweep.overconfidence);
    page.push_str(&sweep_svg(sweep));
    page.push_str("<figcaption>Safety against model accuracy: the governor and executor keep harmful actions at the count shown below as the model degrades.</figcaption></figure>");
    page.push_str("<table><tr><th>accuracy</th><th>injected mistakes</th><th>top-1</th><th>executed</th><th>harmful executed</th><th>false remediation</th><th>autonomy</th><th>remediation success</th><th>governance</th><th>ECE</th><th>MTTR (sim min)</th></tr>");
    for p in &sweep.points {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.1}</td></tr>",
            pct(p.accuracy), p.injected_mistakes, pct(p.top1_accuracy), p.executed_actions,
            if p.harmful_actions_executed > 0 { " class=\"bad\"" } else { "" }, p.harmful_actions_executed,
            pct(p.false_remediation_rate), pct(p.autonomy_rate), pct(p.remediation_success), pct(p.governance_compliance), p.ece, p.mttr_min
        );
    }
    page.push_str("</table>");
    page
}

fn chaos_html(chaos: &Chaos) -> String {
    let mut page = String::new();
    let _ = write!(page, "<h2>Chaos: faults in the control plane</h2><p>Reasoner <code>{}</code>. After each fault the invariants that can be checked from outside are checked over the whole audit log, the world's own record of what ran, and the signals the agent accepted: nothing executed without an authorized decision and its approvals; no decision executed twice; no action the log did not announce first; at most one outcome per execution (exactly one once the plane is quiet); the chain verifies; every accepted signal is logged. <b{}>{} violation(s).</b></p>", escape(&chaos.reasoner), if chaos.violations() > 0 { " class=\"bad\"" } else { "" }, chaos.violations());
    page.push_str("<table><tr><th>at (ms)</th><th>fault</th><th>detail</th><th>recovered in (ms)</th><th>violations</th></tr>");
    for f in &chaos.faults {
        let list: Vec<String> = f.violations.iter().map(|v| format!("[{}] {}", v.invariant, v.detail)).collect();
        let _ = write!(page, "<tr><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td><td>{}</td><td{}>{}</td></tr>", f.at_ms, escape(&f.name), escape(&f.detail), f.recovered_ms, if list.is_empty() { "" } else { " class=\"bad\"" }, if list.is_empty() { "0".to_owned() } else { escape(&list.join("; ")) });
    }
    let list: Vec<String> = chaos.final_violations.iter().map(|v| format!("[{}] {}", v.invariant, v.detail)).collect();
    let _ = write!(page, "<tr><td></td><td>final check</td><td style=\"text-align:left\">every incident replayed, plane quiet</td><td></td><td>{}</td></tr></table>", if list.is_empty() { "0".to_owned() } else { escape(&list.join("; ")) });
    if let Some(m) = &chaos.model {
        let _ = write!(page, "<p>Model server: {} calls, {} hung past the timeout, {} garbage answers, {} HTTP 500, {} unmatched.</p>", m.calls, m.hangs, m.garbage, m.errors, m.unmatched);
    }
    if !chaos.notes.is_empty() {
        page.push_str("<ul>");
        for note in &chaos.notes {
            let _ = write!(page, "<li>{}</li>", escape(note));
        }
        page.push_str("</ul>");
    }
    page
}

/// The self-contained HTML report.
pub fn html(report: &Report) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ARF evaluation</title><style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}.bad{color:#b91c1c;font-weight:bold}.figs{display:flex;gap:2em;flex-wrap:wrap}</style></head><body>",
    );
    let _ = write!(page, "<h1>ARF evaluation</h1><p>Corpus <code>{}</code>, {} incidents, replayed through the real agent, governor and executor processes. Reasoners: {}.</p>", escape(&report.corpus), report.incidents, report.runs.iter().map(|r| escape(&r.metrics.reasoner)).collect::<Vec<_>>().join(", "));
    page.push_str("<h2>Metrics</h2><pre>");
    page.push_str(&escape(&metrics_table(report)));
    page.push_str("</pre>");
    if !report.comparisons.is_empty() {
        page.push_str("<h2>Against the runbook baseline (the shape of the LLM-ARF paper's evaluation)</h2><table><tr><th>reasoner vs baseline</th><th>MTTR reduction</th><th>toil reduction</th><th>alert-fatigue reduction</th><th>false remediation</th><th>baseline false remediation</th><th>governance adherence</th></tr>");
        for c in &report.comparisons {
            let _ = write!(page, "<tr><td>{} vs {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", escape(&c.reasoner), escape(&c.baseline), pct(c.mttr_reduction), pct(c.toil_reduction), pct(c.alert_fatigue_reduction), pct(c.false_remediation_rate), pct(c.baseline_false_remediation_rate), pct(c.governance_adherence));
        }
        page.push_str("</table><p>Every figure is computed from this run; reductions are 1 − candidate/baseline of mean simulated MTTR, mean human touches and mean pages per incident.</p>");
    }
    page.push_str("<h2>Plots</h2><div class=\"figs\"><figure>");
    page.push_str(&reliability_svg(&report.runs));
    page.push_str("<figcaption>Reliability diagram (10 bins; dot area ∝ incidents)</figcaption></figure><figure>");
    page.push_str(&mttr_svg(&report.runs));
    page.push_str("<figcaption>Mean simulated MTTR by incident class (minutes)</figcaption></figure></div>");
    if let Some(sweep) = &report.sweep {
        page.push_str(&sweep_html(sweep));
    }
    if let Some(chaos) = &report.chaos {
        page.push_str(&chaos_html(chaos));
    }
    for run in &report.runs {
        let _ = write!(page, "<details><summary><b>Incidents: {}</b></summary><table><tr><th>incident</th><th>class</th><th>mistake</th><th>top-1</th><th>conf.</th><th>routes</th><th>executed</th><th>resolved</th><th>touches</th><th>MTTR</th><th>harm</th></tr>", escape(&run.metrics.reasoner));
        for o in &run.outcomes {
            let executed: Vec<String> = o.executed.iter().map(|e| format!("{} → {}", e.pathway, e.outcome)).collect();
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td{}>{}</td></tr>",
                escape(&o.incident),
                escape(&o.class),
                escape(&o.mistake),
                if o.top1 { "✓" } else { "✗" },
                o.confidence.map_or_else(|| "–".to_owned(), |c| format!("{c:.2}")),
                escape(&o.routes.join(", ")),
                escape(&executed.join("; ")),
                if o.resolved { "yes" } else { "no" },
                o.human_touches,
                o.mttr_min,
                if o.harm { " class=\"bad\"" } else { "" },
                if o.harm { "HARM" } else { "" }
            );
        }
        page.push_str("</table></details>");
    }
    let _ = write!(page, "<h2>Human constants (simulated minutes)</h2><pre>{}</pre></body></html>", escape(&serde_json::to_string_pretty(&report.human_constants).unwrap_or_default()));
    page
}

/// The human constants as JSON, for the report.
pub fn human_constants() -> serde_json::Value {
    use crate::world::human::*;
    serde_json::json!({
        "approval_response_min": APPROVAL_RESPONSE_MIN,
        "extra_approver_min": EXTRA_APPROVER_MIN,
        "escalation_response_min": ESCALATION_RESPONSE_MIN,
        "false_alarm_triage_min": FALSE_ALARM_TRIAGE_MIN,
        "harm_recovery_min": HARM_RECOVERY_MIN,
        "diagnosis_min": DIAGNOSIS_MIN,
        "verify_window_min": VERIFY_WINDOW_MIN,
    })
}
