//! The console's HTML, rendered on the server. Every value goes through [`esc`].

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use arf_core::identity::Role;
use arf_proto::v1 as pb;

use super::Person;

pub const STYLE: &str = include_str!("style.css");

/// Text made safe for HTML: control, escape and bidi characters made visible,
/// then `&`, `<`, `>`, `"` and `'` escaped.
pub fn esc(text: &str) -> String {
    let printable = arf_core::text::printable(text, true);
    let mut out = String::with_capacity(printable.len());
    for c in printable.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(ms: i64) -> String {
    esc(&arf_core::time::format_ms_column(ms))
}

fn document(title: &str, nav: &str, body: &str, refresh: bool) -> String {
    format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\">{}<title>{} · ARF</title><link rel=stylesheet href=/style.css></head><body>{nav}<main>{body}</main></body></html>",
        if refresh { "<meta http-equiv=refresh content=10>" } else { "" },
        esc(title),
    )
}

/// A page for someone logged in.
pub fn page(person: &Person, title: &str, body: &str, refresh: bool) -> Response {
    let nav = format!(
        "<nav><a href=/>Pending</a> <a href=/incidents>Incidents</a> <a href=/shadow>Shadow</a> <a href=/autonomy>Autonomy</a><span class=who>{} ({})</span><form method=post action=/logout class=inline><input type=hidden name=csrf value=\"{}\"><button>Log out</button></form></nav>",
        esc(&person.name),
        esc(person.role.as_str()),
        esc(&person.csrf)
    );
    Html(document(title, &nav, body, refresh)).into_response()
}

pub fn login(error: Option<&str>) -> Response {
    let error = error.map(|e| format!("<p class=error>{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<h1>ARF console</h1>{error}<form method=post action=/login><label>Your token <input type=password name=token autocomplete=off required></label><button>Log in</button></form><p class=hint>Make one with <code>arf token create NAME --role oncall</code>.</p>"
    );
    let status = if error.is_empty() { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    (status, Html(document("Log in", "", &body, false))).into_response()
}

pub fn refused(status: StatusCode, message: &str) -> Response {
    (status, Html(document("Refused", "<nav><a href=/>Back</a></nav>", &format!("<p class=error>{}</p>", esc(message)), false))).into_response()
}

fn route(decision: &pb::Decision) -> &'static str {
    crate::client::route_name(decision.route)
}

/// One decision: what it would do, why it waits, the explanation, the approvals,
/// and the forms to approve or reject while it is pending.
pub fn decision_card(decision: &pb::Decision, explanation: &str, csrf: &str, notice: Option<&str>) -> String {
    let mut html = String::new();
    let id = esc(&decision.decision_id);
    let remediation = decision.remediation.clone().unwrap_or_default();
    let _ = write!(
        html,
        "<section class=decision><h2><a href=\"/decisions/{id}\">{}</a> on <code>{}</code></h2>",
        esc(&remediation.pathway),
        esc(&remediation.target)
    );
    if let Some(notice) = notice {
        let _ = write!(html, "<p class=notice>{}</p>", esc(notice));
    }
    let risk = decision.risk.clone().unwrap_or_default();
    let policy = decision.policy.clone().unwrap_or_default();
    // Approvers, each counted once, as the governor counts them.
    let given = decision.approvals.iter().filter(|a| a.verdict == "approve").map(|a| a.identity.as_str()).collect::<std::collections::BTreeSet<_>>().len();
    let _ = write!(
        html,
        "<dl><dt>State</dt><dd class=\"state {state}\">{state}</dd><dt>Route</dt><dd>{}</dd><dt>Service</dt><dd>{} in {}</dd><dt>Incident</dt><dd><a href=\"/incidents/{inc}\">{inc}</a></dd><dt>Risk</dt><dd>{:.2} ({})</dd><dt>Rules fired</dt><dd>{}</dd><dt>Approvals</dt><dd>{given} of {} needed{}</dd><dt>Expires</dt><dd>{}</dd><dt>Decision</dt><dd><code>{id}</code></dd></dl>",
        esc(route(decision)),
        esc(&decision.service),
        esc(&decision.environment),
        risk.score,
        esc(&risk.band),
        if policy.rules_fired.is_empty() { "none".to_owned() } else { policy.rules_fired.iter().map(|r| esc(r)).collect::<Vec<_>>().join(", ") },
        policy.approvals_required.max(1),
        if policy.approver_roles.is_empty() { String::new() } else { format!(" (from {})", policy.approver_roles.iter().map(|r| esc(r)).collect::<Vec<_>>().join(", ")) },
        time(decision.expires_at_ms),
        state = esc(&decision.state),
        inc = esc(&decision.incident_id),
    );
    if !risk.factors.is_empty() {
        html.push_str("<table class=factors><tr><th>Risk factor</th><th>Value</th><th>Weight</th><th>Detail</th></tr>");
        for factor in &risk.factors {
            let _ = write!(html, "<tr><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>", esc(&factor.name), factor.value, factor.weight, esc(&factor.detail));
        }
        html.push_str("</table>");
    }
    if !decision.approvals.is_empty() {
        html.push_str("<ul class=approvals>");
        for approval in &decision.approvals {
            let _ = write!(html, "<li>{} by {} ({}) at {}{}</li>", esc(&approval.verdict), esc(&approval.identity), esc(&approval.role), time(approval.at_ms), if approval.reason.is_empty() { String::new() } else { format!(": {}", esc(&approval.reason)) });
        }
        html.push_str("</ul>");
    }
    let _ = write!(html, "<pre class=explanation>{}</pre>", esc(explanation));
    if decision.state == "pending" {
        let _ = write!(
            html,
            "<div class=actions><form method=post action=\"/decisions/{id}/approve\"><input type=hidden name=csrf value=\"{csrf}\"><input name=comment placeholder=\"comment (optional)\"><button class=approve>{}</button></form><form method=post action=\"/decisions/{id}/reject\"><input type=hidden name=csrf value=\"{csrf}\"><input name=reason placeholder=\"why it must not run\" required><button class=reject>Reject</button></form></div>",
            if route(decision) == "acknowledge" { "Acknowledge" } else { "Approve" },
            csrf = esc(csrf),
        );
    }
    html.push_str("</section>");
    html
}

pub fn incident_list(incidents: &[pb::Incident], state: &str, service: &str, environment: &str, q: &str) -> String {
    let mut html = format!(
        "<h1>Incidents</h1><form method=get action=/incidents class=filters><input name=q placeholder=search value=\"{}\"><input name=state placeholder=state value=\"{}\"><input name=service placeholder=service value=\"{}\"><input name=environment placeholder=environment value=\"{}\"><button>Filter</button></form>",
        esc(q),
        esc(state),
        esc(service),
        esc(environment)
    );
    if incidents.is_empty() {
        html.push_str("<p>No incident matches.</p>");
        return html;
    }
    html.push_str("<table><tr><th>Opened</th><th>State</th><th>Service</th><th>Environment</th><th>Title</th><th>Signals</th></tr>");
    for incident in incidents {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"state {state}\">{state}</td><td>{}</td><td>{}</td><td><a href=\"/incidents/{id}\">{}</a></td><td>{}</td></tr>",
            time(incident.opened_at_ms),
            esc(&incident.service),
            esc(&incident.environment),
            esc(&incident.title),
            incident.signal_count,
            state = esc(&incident.state),
            id = esc(&incident.id),
        );
    }
    html.push_str("</table>");
    html
}

/// An incident and its trail as a timeline; `verified` says, per record, whether
/// it is in the log's latest signed checkpoint (`None`: not checked).
pub fn incident_page(incident: &pb::Incident, trail: Result<Vec<arf_audit::Record>, String>, verified: &dyn Fn(&arf_audit::Record) -> Option<Result<(), String>>) -> String {
    let mut html = format!(
        "<h1>{}</h1><dl><dt>State</dt><dd class=\"state {state}\">{state}</dd><dt>Service</dt><dd>{} in {}</dd><dt>Opened</dt><dd>{}</dd><dt>Updated</dt><dd>{}</dd><dt>Signals</dt><dd>{}</dd><dt>Decisions</dt><dd>{}</dd><dt>Incident</dt><dd><code>{}</code></dd></dl>",
        esc(&incident.title),
        esc(&incident.service),
        esc(&incident.environment),
        time(incident.opened_at_ms),
        time(incident.updated_at_ms),
        incident.signal_count,
        incident.decision_ids.iter().map(|d| format!("<a href=\"/decisions/{0}\">{0}</a>", esc(d))).collect::<Vec<_>>().join(", "),
        esc(&incident.id),
        state = esc(&incident.state),
    );
    match trail {
        Err(error) => {
            let _ = write!(html, "<p class=error>The trail cannot be read: {}</p>", esc(&error));
        }
        Ok(records) => {
            html.push_str("<h2>Trail</h2><table class=trail><tr><th>#</th><th>Time</th><th>Writer</th><th>Kind</th><th>What</th><th>In the signed log</th></tr>");
            for record in &records {
                let proof = match verified(record) {
                    Some(Ok(())) => "<td class=ok>proved</td>".to_owned(),
                    Some(Err(why)) => format!("<td class=error>{}</td>", esc(&why)),
                    None => "<td>not yet in a signed checkpoint</td>".to_owned(),
                };
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{proof}</tr>",
                    record.seq,
                    time(record.time_ms),
                    esc(&record.writer),
                    esc(record.kind.as_str()),
                    esc(&crate::client::detail(record)),
                );
            }
            html.push_str("</table>");
        }
    }
    html
}

pub fn autonomy(status: &pb::AutonomyStatus, role: Role, csrf: &str, notice: Option<&str>) -> String {
    let mut html = String::from("<h1>Autonomy</h1>");
    if let Some(notice) = notice {
        let _ = write!(html, "<p class=notice>{}</p>", esc(notice));
    }
    let _ = write!(
        html,
        "<dl><dt>Autonomy</dt><dd class=\"state {0}\">{0}</dd><dt>Changed by</dt><dd>{1}</dd><dt>At</dt><dd>{2}</dd><dt>Reason</dt><dd>{3}</dd><dt>Freezes now</dt><dd>{4}</dd></dl>",
        if status.enabled { "on" } else { "off" },
        esc(&status.changed_by),
        if status.changed_at_ms == 0 { "never".to_owned() } else { time(status.changed_at_ms) },
        esc(&status.reason),
        if status.active_freezes.is_empty() { "none".to_owned() } else { status.active_freezes.iter().map(|f| esc(f)).collect::<Vec<_>>().join(", ") },
    );
    if !status.trips.is_empty() {
        html.push_str("<h2>Guard rails tripped</h2><table><tr><th>Kind</th><th>Service</th><th>Pathway</th><th>Since</th><th>Reason</th></tr>");
        for trip in &status.trips {
            let _ = write!(html, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&trip.kind), esc(&trip.service), esc(&trip.pathway), time(trip.since_ms), esc(&trip.reason));
        }
        html.push_str("</table><p class=hint>An admin resets a guard rail with <code>arf autonomy reset --service S</code>.</p>");
    }
    // Whoever is on call may stop autonomy; only an admin starts it again. The
    // governor decides; the page only does not offer what the role may not do.
    let (may, enabled) = if status.enabled { (role.is_human(), "off") } else { (role == Role::Admin, "on") };
    if may {
        let _ = write!(
            html,
            "<form method=post action=/autonomy><input type=hidden name=csrf value=\"{}\"><input type=hidden name=enabled value={enabled}><input name=reason placeholder=\"why\" required><button class=reject>Switch autonomy {enabled}</button></form>",
            esc(csrf)
        );
    } else {
        let _ = write!(html, "<p class=hint>Switching autonomy {enabled} is for {}.</p>", if enabled == "on" { "an admin" } else { "a person on call, on the security team, or an admin" });
    }
    html
}

/// Shadow decisions: what ARF would have done, with what became of each incident,
/// a form to judge the ones not judged yet, and each pathway's record toward
/// graduation.
pub fn shadow(decisions: &[pb::Decision], incidents: &[pb::Incident], records: &[pb::PathwayOutcomeStats], may_judge: bool, csrf: &str, notice: Option<&str>) -> String {
    let mut html = String::from("<h1>Shadow mode</h1><p class=hint>What ARF would have done where a service runs in shadow mode: nothing was sent to the executor. Judging a decision teaches the governor what may run on its own: agreeing judgements and verified runs in a row graduate a pathway on a service; one disagreement demotes it.</p>");
    if let Some(notice) = notice {
        let _ = write!(html, "<p class=notice>{}</p>", esc(notice));
    }
    if decisions.is_empty() {
        html.push_str("<p>No shadow decisions.</p>");
    } else {
        html.push_str("<table><tr><th>Decided</th><th>Decision</th><th>Incident</th><th>Would have run</th><th>Route</th><th>Incident now</th><th>Judgement</th></tr>");
        for d in decisions {
            let (pathway, target) = d.remediation.as_ref().map(|r| (r.pathway.as_str(), r.target.as_str())).unwrap_or_default();
            let route = pb::Route::try_from(d.route).map(|r| r.as_str_name().to_ascii_lowercase()).unwrap_or_default();
            let now = incidents.iter().find(|i| i.id == d.incident_id).map_or("unknown", |i| i.state.as_str());
            let judgement = match (&d.judgement, may_judge) {
                (Some(j), _) => format!("{} by {}{}", if j.agrees { "right" } else { "wrong" }, esc(&j.identity), if j.reason.is_empty() { String::new() } else { format!(": {}", esc(&j.reason)) }),
                (None, true) => format!(
                    "<form method=post action=\"/shadow/{id}/judge\" class=inline><input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=agrees value=yes><button class=approve>Right</button></form> <form method=post action=\"/shadow/{id}/judge\" class=inline><input type=hidden name=csrf value=\"{csrf}\"><input type=hidden name=agrees value=no><input name=reason placeholder=\"what should have been done\" required><button class=reject>Wrong</button></form>",
                    id = esc(&d.decision_id),
                    csrf = esc(csrf)
                ),
                (None, false) => "not judged".to_owned(),
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td><a href=\"/decisions/{id}\">{id}</a></td><td><a href=\"/incidents/{inc}\">{inc}</a></td><td>{} on {}</td><td>{}</td><td class=\"state {now}\">{now}</td><td>{judgement}</td></tr>",
                time(d.issued_at_ms),
                esc(pathway),
                esc(target),
                esc(&route),
                id = esc(&d.decision_id),
                inc = esc(&d.incident_id),
                now = esc(now),
            );
        }
        html.push_str("</table>");
    }
    let tracked: Vec<&pb::PathwayOutcomeStats> = records.iter().filter(|r| r.required_runs > 0).collect();
    if !tracked.is_empty() {
        html.push_str("<h2>Track records</h2><table><tr><th>Environment</th><th>Service</th><th>Pathway</th><th>Agreed / disagreed</th><th>Verified / failed</th><th>In a row</th><th>In review mode</th></tr>");
        for r in tracked {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{} / {}</td><td>{} of {}</td><td>{}</td></tr>",
                esc(&r.environment),
                esc(&r.service),
                esc(&r.pathway),
                r.shadow_agreed,
                r.shadow_disagreed,
                r.verified_in_window,
                r.failed_in_window,
                r.earned,
                r.required_runs,
                if r.graduated { "runs on its own where policy allows" } else { "a person approves" }
            );
        }
        html.push_str("</table>");
    }
    html
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn markup_and_escape_bytes_from_outside_are_text() {
        let shown = esc("<script>alert(\"x\")</script>\u{1b}[2K & 'q' \u{202e}");
        assert_eq!(shown, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;\u{FFFD}[2K &amp; &#39;q&#39; \u{FFFD}");
    }
}
