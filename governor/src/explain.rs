//! The plain-language explanation an on-call engineer reads at 3 a.m.: what the
//! model thinks is wrong, what would change, how risky it is, what policy said,
//! how to undo it, and what happens next.
//!
//! Pure: the same decision and pathway always give the same text.

use std::fmt::Write as _;

use arf_core::catalog::{Pathway, Probe, Step};
use arf_core::decision::Route;
use arf_core::target::Target;
use arf_core::template::{self, Values};
use serde_json::Value;

use crate::decision::{Decision, State, Verdict};

/// Explains `decision`. `pathway` and `target` are the governor's definitions, for
/// the rollback plan (with the target's facts filled in); `None` if they are gone.
pub fn explain(decision: &Decision, pathway: Option<&Pathway>, target: Option<&Target>) -> String {
    let mut out = String::new();
    let values = values(decision, target);
    // Writing to a `String` cannot fail, so the results are ignored.
    let _ = write_all(&mut out, decision, pathway, &values);
    out
}

/// What the rollback's placeholders stand for, so the plan shows real URLs and commands.
fn values(decision: &Decision, target: Option<&Target>) -> Values {
    let mut values = Values::default();
    for (name, fact) in target.iter().flat_map(|t| &t.facts) {
        values.insert(format!("target.{name}"), fact.clone());
    }
    if let Value::Object(parameters) = &decision.remediation.parameters {
        for (name, value) in parameters {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            values.insert(format!("params.{name}"), text);
        }
    }
    values.insert("decision.id", decision.decision_id.clone());
    values
}

fn write_all(out: &mut String, d: &Decision, pathway: Option<&Pathway>, values: &Values) -> std::fmt::Result {
    writeln!(out, "Decision {} for incident {}", d.decision_id, d.incident_id)?;
    writeln!(
        out,
        "Proposed action: run `{}` on `{}` (service {}, environment {})",
        d.remediation.pathway,
        d.remediation.target,
        or_unknown(&d.service),
        or_unknown(&d.environment)
    )?;
    if !d.incident_services.is_empty() {
        let relation = match d.relation.as_str() {
            "incident_service" => "the alerting service itself",
            "dependency" => "a declared dependency of the alerting service",
            "out_of_scope" => "OUTSIDE the incident's scope",
            _ => "of unknown relation to the incident",
        };
        writeln!(out, "  Alerting service: {}; the target is {relation}", d.incident_services.join(", "))?;
    }
    if let Some(p) = pathway {
        writeln!(out, "  What it does: {}", p.description.trim())?;
    }
    writeln!(out, "  Parameters: {}", arf_core::canonical::to_string(&d.remediation.parameters).unwrap_or_default())?;
    if !d.remediation.rationale.trim().is_empty() {
        writeln!(out, "  Why this action: {}", untrusted(&d.remediation.rationale))?;
    }
    writeln!(out)?;

    if d.model.is_empty() {
        writeln!(out, "Root cause (confidence {:.2}, from the {} reasoner):", d.confidence, or_unknown(&d.reasoner))?;
    } else {
        writeln!(
            out,
            "Root cause (confidence {:.2} as stated, {:.2} calibrated by `{}`'s record on this pathway; from the {} reasoner):",
            d.confidence,
            d.calibrated_confidence,
            d.model,
            or_unknown(&d.reasoner)
        )?;
    }
    writeln!(out, "  {}", untrusted(or_none(&d.root_cause)))?;
    if d.evidence.is_empty() {
        writeln!(out, "  Evidence: none cited")?;
    } else {
        writeln!(out, "  Evidence: {}", d.evidence.join(", "))?;
    }
    writeln!(out, "  Snapshot: {}", or_unknown(&d.snapshot_hash))?;
    if !d.uncertainty.trim().is_empty() {
        writeln!(out, "  Uncertainty: {}", untrusted(&d.uncertainty))?;
    }
    writeln!(out, "  Expected impact: {}", untrusted(or_none(&d.expected_impact)))?;
    writeln!(out)?;

    writeln!(out, "Risk: {:.3} ({}), the sum of these factors:", d.risk.score, d.risk.band)?;
    let width = d.risk.factors.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &d.risk.factors {
        writeln!(
            out,
            "  {:<width$}  {:.2} x weight {:.2} = {:.3}  {}",
            f.name, f.value, f.weight, f.contribution, f.detail
        )?;
    }
    writeln!(out)?;

    writeln!(out, "Policy decided: {}. Rules that fired:", d.route.as_str())?;
    if d.policy.rules_fired.is_empty() && d.policy.reasons.is_empty() {
        writeln!(out, "  no rule gave a reason")?;
    }
    let n = d.policy.rules_fired.len().max(d.policy.reasons.len());
    for i in 0..n {
        match (d.policy.rules_fired.get(i), d.policy.reasons.get(i)) {
            (Some(rule), Some(reason)) => writeln!(out, "  - {rule}: {reason}")?,
            (Some(rule), None) => writeln!(out, "  - {rule}")?,
            (None, Some(reason)) => writeln!(out, "  - {reason}")?,
            (None, None) => {}
        }
    }
    for diagnostic in &d.policy.diagnostics {
        writeln!(out, "  ! policy error: {}", diagnostic.trim())?;
    }
    writeln!(out)?;

    if !d.guard_rails.is_empty() {
        writeln!(out, "Guard rails at decision time:")?;
        for line in &d.guard_rails {
            writeln!(out, "  - {line}")?;
        }
        writeln!(out)?;
    }

    write_rollback(out, &d.remediation.pathway, pathway, values)?;
    writeln!(out)?;

    if !d.approvals.is_empty() {
        writeln!(out, "Oversight so far:")?;
        for a in &d.approvals {
            let verdict = match a.verdict {
                Verdict::Approve => "approved",
                Verdict::Reject => "rejected",
            };
            let note = if a.reason.trim().is_empty() { String::new() } else { format!(": {}", untrusted(&a.reason)) };
            writeln!(
                out,
                "  - {} ({}) {} at {}{}",
                a.identity,
                a.role,
                verdict,
                arf_core::time::format_ms(a.at_ms),
                note
            )?;
        }
        writeln!(out)?;
    }

    writeln!(out, "What happens next: {}", next_step(d))?;
    Ok(())
}

fn write_rollback(out: &mut String, name: &str, pathway: Option<&Pathway>, values: &Values) -> std::fmt::Result {
    let Some(p) = pathway else {
        return writeln!(out, "Rollback plan: unknown: pathway `{name}` is no longer in the governor's catalog");
    };
    if p.irreversible {
        return writeln!(out, "Rollback plan: irreversible: no rollback");
    }
    writeln!(out, "Rollback plan (run automatically if verification fails):")?;
    for (i, step) in p.rollback.iter().enumerate() {
        writeln!(out, "  {}. {}", i + 1, describe_step(step, values))?;
    }
    if let Some(verify) = &p.rollback_verify {
        let probes: Vec<&str> = verify.probes.iter().map(Probe::name).collect();
        writeln!(out, "  then checked by: {}", probes.join(", "))?;
    }
    Ok(())
}

fn describe_step(step: &Step, values: &Values) -> String {
    // A placeholder that cannot be filled is shown as written rather than hidden.
    let fill = |text: &str| template::render(text, values, str::to_owned).unwrap_or_else(|_| text.to_owned());
    match step {
        Step::Command { argv, .. } => {
            format!("run `{}`", argv.iter().map(|a| fill(a)).collect::<Vec<_>>().join(" "))
        }
        Step::Http { method, url, expect_status, .. } => format!("{method} {} (expects {expect_status})", fill(url)),
        Step::Git { repo, edits, patch, revert, .. } => match (revert, patch, edits.as_slice()) {
            (Some(commit), _, _) => format!("revert commit {} in `{}` (git)", fill(commit), fill(repo)),
            (None, Some(patch), _) => {
                format!("commit a patch to {} in `{}` (git)", patch_files(patch).join(", "), fill(repo))
            }
            (None, None, []) => format!("revert this decision's commit in `{}` (git)", fill(repo)),
            (None, None, edits) => {
                let changes: Vec<String> =
                    edits.iter().map(|e| format!("{}:{} = {}", e.file, e.path, fill(&e.value))).collect();
                format!("commit {} in `{}` (git)", changes.join(", "), fill(repo))
            }
        },
    }
}

/// The files a unified diff changes: each `--- old` line directly followed by
/// `+++ new` is a file header (a removed line `-- x` reads `--- x` but is not
/// followed by `+++`); a deletion, `+++ /dev/null`, is named by its old name.
fn patch_files(patch: &str) -> Vec<String> {
    let strip = |name: &str| {
        let name = name.split('\t').next().unwrap_or("").trim();
        name.strip_prefix("a/").or_else(|| name.strip_prefix("b/")).unwrap_or(name).to_owned()
    };
    let lines: Vec<&str> = patch.lines().collect();
    let mut files = Vec::new();
    for pair in lines.windows(2) {
        let (Some(old), Some(new)) = (pair[0].strip_prefix("--- "), pair[1].strip_prefix("+++ ")) else { continue };
        let (old, new) = (strip(old), strip(new));
        let file = if new == "/dev/null" { old } else { new };
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files.into_iter().map(|f| format!("`{f}`")).collect()
}

fn next_step(d: &Decision) -> String {
    let expiry = arf_core::time::format_ms(d.expires_at_ms);
    match d.state {
        State::Pending => {
            let required = d.approvals_required();
            let missing = required.saturating_sub(d.approvals_given());
            let roles = if d.policy.approver_roles.is_empty() {
                "any on-call engineer, security engineer or admin".to_owned()
            } else {
                format!("role {}", d.policy.approver_roles.join(" or "))
            };
            let what = match d.route {
                Route::Acknowledge => "acknowledgment",
                Route::Autonomous | Route::Approval | Route::Deny => {
                    if missing == 1 {
                        "approval"
                    } else {
                        "approvals"
                    }
                }
            };
            let distinct = if required > 1 { format!(" ({required} distinct people in all)") } else { String::new() };
            format!(
                "waits for {missing} more {what}{distinct} from {roles} before it expires at {expiry}; the proposer cannot approve it. Nothing runs until then."
            )
        }
        State::Approved => "approved; it runs as soon as the authorization is logged and signed".to_owned(),
        State::Authorized if d.detail.trim().is_empty() => {
            format!("runs now: the signed decision is on its way to the executor (valid until {expiry})")
        }
        State::Authorized => format!("authorized; the executor has not reported an outcome yet: {}.", d.detail.trim()),
        State::Denied => "denied: nothing will run. Escalate to a person if action is still needed.".to_owned(),
        State::Rejected => "rejected: nothing will run.".to_owned(),
        State::Expired => format!("expired at {expiry} without enough approvals: nothing will run."),
        State::AuthorizationFailed => {
            format!("not run: the authorization could not be logged ({}). Nothing ran.", or_none(&d.detail))
        }
        State::DispatchFailed => format!("not run: the executor did not take it ({}).", or_none(&d.detail)),
        State::Verified => "done: the executor ran it and verification passed.".to_owned(),
        State::RolledBack => {
            "done: verification failed and the executor rolled the change back. Look again.".to_owned()
        }
        State::RollbackFailed => "needs a person now: verification failed and the rollback failed too.".to_owned(),
        State::Failed => format!("needs a person: the action failed ({}).", or_none(&d.detail)),
        State::Refused => format!("not run: the pathway's precheck refused it ({}). Nothing changed; the agent tries another action or diagnoses again with the refusal in view, else escalates.", or_none(&d.detail)),
        State::NotRun => format!(
            "not run: the log holds its start, but the executor never ran it ({}). Nothing changed, and it does not count as a run; the incident goes to a person.",
            or_none(&d.detail)
        ),
        State::Shadow => {
            let would = match d.route {
                Route::Autonomous => "would have run on its own",
                Route::Acknowledge => "would have waited for an acknowledgment",
                Route::Approval | Route::Deny => "would have waited for approval",
            };
            let judged = match &d.judgement {
                Some(j) => format!(" `{}` judged it {}: {}", j.identity, if j.agrees { "right" } else { "wrong" }, or_none(&j.reason)),
                None => " Judge it with `arf shadow judge` (agree or disagree): judgements build the pathway's record toward autonomy.".to_owned(),
            };
            format!("shadow mode: it {would}, but nothing was sent to the executor; people handle the incident.{judged}")
        }
    }
}

fn or_unknown(text: &str) -> &str {
    if text.trim().is_empty() { "unknown" } else { text.trim() }
}

/// How many characters of one field of outside text an explanation shows.
const UNTRUSTED_CHARS: usize = 2_000;

/// Text from outside the governor (the model's root cause, rationale, uncertainty
/// and expected impact, a person's comment), which may hold line breaks: every line
/// after the first is indented under a `|`, so no line of it can pass for one of
/// the explanation's own (a forged `Risk:` or `Oversight so far:` section, a
/// made-up approval), and it is cut at [`UNTRUSTED_CHARS`].
fn untrusted(text: &str) -> String {
    let text = text.trim();
    let mut cut: String = text.chars().take(UNTRUSTED_CHARS).collect();
    if cut.len() < text.len() {
        cut.push_str(" [cut]");
    }
    let breaks = |c: char| matches!(c, '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}');
    let mut lines = cut.split(breaks).filter(|line| !line.trim().is_empty());
    let mut out = lines.next().unwrap_or_default().trim_end().to_owned();
    for line in lines {
        out.push_str("\n      | ");
        out.push_str(line.trim_end());
    }
    out
}

fn or_none(text: &str) -> &str {
    if text.trim().is_empty() { "none given" } else { text.trim() }
}

#[cfg(test)]
mod tests {
    use super::patch_files;

    #[test]
    fn a_patch_is_described_by_the_files_it_changes() {
        let patch = "--- a/deploy/app.yaml\n+++ b/deploy/app.yaml\n@@ -1,2 +1,1 @@\n--- a removed comment\n-image: web:1.2.0\n+image: web:{{params.version}}\n--- a/old.conf\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n--- /dev/null\n+++ b/new.conf\n@@ -0,0 +1 @@\n+y\n";
        assert_eq!(patch_files(patch), ["`deploy/app.yaml`", "`old.conf`", "`new.conf`"]);
    }
}
