//! Each receiver's message for an [`Event`], in the shape its API documents.
//! Text from outside (alert titles, the model's words, reasons people typed) is
//! stripped of control and escape characters and, where the format has markup,
//! carried only where markup is not read or escaped as the format says.

use serde_json::{Value, json};

use super::event::{Event, EventKind};

/// At most this many characters of any one value from outside.
const MAX_VALUE: usize = 1_000;

/// Text from outside, made safe to show: no control, escape or bidi characters,
/// and bounded.
fn clean(text: &str) -> String {
    let printable = arf_core::text::printable(text, false);
    match printable.char_indices().nth(MAX_VALUE) {
        Some((at, _)) => format!("{}…", &printable[..at]),
        None => printable,
    }
}

/// Slack's mrkdwn escaping (`&`, `<`, `>`), after [`clean`]: a value cannot open a
/// link, a mention or a channel reference. Bounded after escaping (which makes a
/// character up to five), never inside an entity: a section of two such values
/// stays within Slack's 3,000 characters, which a message over it breaks (Slack
/// refuses it, and the event would go undelivered).
fn mrkdwn(text: &str) -> String {
    let mut out = String::new();
    let mut length = 0;
    for c in clean(text).chars() {
        let escaped = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            _ => "",
        };
        let width = if escaped.is_empty() { 1 } else { escaped.len() };
        if length + width > MAX_VALUE {
            out.push('…');
            break;
        }
        length += width;
        if escaped.is_empty() {
            out.push(c);
        } else {
            out.push_str(escaped);
        }
    }
    out
}

/// Where an event points a person: the console's page for its decision or incident.
pub fn link(console_url: Option<&str>, event: &Event) -> Option<String> {
    let base = console_url?.trim_end_matches('/');
    if !event.decision_id.is_empty() {
        Some(format!("{base}/decisions/{}", event.decision_id))
    } else if !event.incident_id.is_empty() {
        Some(format!("{base}/incidents/{}", event.incident_id))
    } else {
        Some(base.to_owned())
    }
}

/// A Slack incoming-webhook message (Block Kit). Values from outside go only into
/// `plain_text` objects, where Slack reads no markup; the one `mrkdwn` field
/// holds ARF's own words and escaped values.
pub fn slack(event: &Event, console_url: Option<&str>) -> Value {
    let icon = match event.kind {
        EventKind::RollbackFailed | EventKind::Quarantined | EventKind::AuditUnavailable | EventKind::WitnessRefused => ":rotating_light:",
        EventKind::ActionFailed => ":x:",
        EventKind::Resolved => ":white_check_mark:",
        _ => ":warning:",
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clean(&truncate(&event.summary, 150)), "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
            "{icon} *{}* · severity *{}*{}{}",
            event.kind.as_str(),
            event.severity.as_str(),
            if event.service.is_empty() { String::new() } else { format!(" · service `{}`", mrkdwn(&event.service)) },
            if event.environment.is_empty() { String::new() } else { format!(" in `{}`", mrkdwn(&event.environment)) },
        )}}),
    ];
    let fields: Vec<Value> = event
        .details
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .take(10)
        .map(|(name, value)| json!({"type": "plain_text", "text": format!("{}: {}", clean(name), clean(&truncate(value, 1_900))), "emoji": false}))
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    let ids = [("incident", &event.incident_id), ("decision", &event.decision_id)]
        .iter()
        .filter(|(_, id)| !id.is_empty())
        .map(|(name, id)| format!("{name} {}", clean(id)))
        .collect::<Vec<_>>()
        .join(" · ");
    blocks.push(json!({"type": "context", "elements": [{"type": "plain_text", "text": format!("ARF · {} · {ids}", arf_core::time::format_ms(event.at_ms)), "emoji": false}]}));
    if let Some(url) = link(console_url, event) {
        blocks.push(json!({"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open in the ARF console"}, "url": url}]}));
    }
    json!({"text": format!("[{}] {}", event.severity.as_str(), mrkdwn(&event.summary)), "blocks": blocks})
}

/// A PagerDuty Events API v2 event: `trigger` with the incident as the dedup key,
/// and `resolve` of that key when the incident resolves or its action verified.
pub fn pagerduty(event: &Event, routing_key: &str, console_url: Option<&str>) -> Value {
    let dedup_key = if event.incident_id.is_empty() { format!("arf-{}", event.id) } else { format!("arf-{}", event.incident_id) };
    if event.kind == EventKind::Resolved {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key});
    }
    let details: serde_json::Map<String, Value> = event.details.iter().map(|(name, value)| (clean(name), Value::String(clean(value)))).collect();
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": truncate(&clean(&event.summary), 1_024),
            "source": if event.service.is_empty() { "arf".to_owned() } else { clean(&event.service) },
            "severity": event.severity.as_str(),
            "timestamp": arf_core::time::format_ms(event.at_ms),
            "component": clean(&event.service),
            "group": clean(&event.environment),
            "class": event.kind.as_str(),
            "custom_details": details,
        },
        "client": "ARF",
    });
    if let Some(url) = link(console_url, event) {
        body["links"] = json!([{"href": url, "text": "ARF console"}]);
        body["client_url"] = Value::String(url);
    }
    body
}

/// The generic webhook's body: the event as ARF knows it, values cleaned.
pub fn webhook(event: &Event, console_url: Option<&str>) -> Value {
    json!({
        "id": event.id,
        "kind": event.kind.as_str(),
        "severity": event.severity.as_str(),
        "at": arf_core::time::format_ms(event.at_ms),
        "audit_seq": event.seq,
        "incident_id": event.incident_id,
        "decision_id": event.decision_id,
        "service": clean(&event.service),
        "environment": clean(&event.environment),
        "summary": clean(&event.summary),
        "details": event.details.iter().map(|(name, value)| json!({"name": clean(name), "value": clean(value)})).collect::<Vec<_>>(),
        "link": link(console_url, event),
    })
}

/// The signature headers of a generic webhook: `X-ARF-Timestamp` and
/// `X-ARF-Signature-256: sha256=<hex HMAC-SHA256 over "TIMESTAMP.BODY">`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("sha256={}", hex::encode(arf_core::keys::hmac_sha256(secret, &message)))
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > max => format!("{}…", &text[..at]),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::{Event, EventKind};

    fn hostile() -> Event {
        Event {
            id: "000000000007-escalated".into(),
            kind: EventKind::Escalated,
            severity: EventKind::Escalated.severity(),
            at_ms: 0,
            seq: 7,
            incident_id: "inc-1".into(),
            decision_id: String::new(),
            service: "web<!channel>".into(),
            environment: "prod".into(),
            summary: "Escalated: <https://evil.example|click> *urgent* \u{1b}[2K\u{202e}".into(),
            details: vec![("reason".into(), "<@U123> & more\u{7}".into())],
        }
    }

    #[test]
    fn slack_carries_text_from_outside_where_no_markup_is_read() {
        let message = slack(&hostile(), Some("https://arf.example/console/"));
        let text = message.to_string();
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}') && !text.contains('\u{7}'), "{text}");
        // The mrkdwn parts escape `<`, `>` and `&`: no link, mention or channel ping.
        assert_eq!(message["text"], "[warning] Escalated: &lt;https://evil.example|click&gt; *urgent* \u{FFFD}[2K\u{FFFD}");
        assert!(message["blocks"][1]["text"]["text"].as_str().unwrap().contains("`web&lt;!channel&gt;`"));
        // The rest is plain text, which Slack shows as typed.
        assert_eq!(message["blocks"][0]["text"]["type"], "plain_text");
        assert_eq!(message["blocks"][2]["fields"][0]["type"], "plain_text");
        assert_eq!(message["blocks"].as_array().unwrap().last().unwrap()["elements"][0]["url"], "https://arf.example/console/incidents/inc-1");
    }

    /// A service or environment of hostile length (a label of 1,024 `<` or `&`,
    /// which escaping makes four or five times longer) keeps every Slack text within
    /// its limit (3,000 characters a section, 150 a header), so the message is taken.
    #[test]
    fn slack_texts_stay_within_slacks_limits_whatever_the_values() {
        let event = Event { service: "<".repeat(1_024), environment: "&".repeat(1_024), summary: ">".repeat(5_000), ..hostile() };
        let message = slack(&event, None);
        for block in message["blocks"].as_array().unwrap() {
            let texts: Vec<&Value> = match block.get("fields") {
                Some(fields) => fields.as_array().unwrap().iter().collect(),
                None => block.get("text").into_iter().chain(block.get("elements").and_then(Value::as_array).into_iter().flatten()).collect(),
            };
            for text in texts {
                let Some(text) = text.get("text").and_then(Value::as_str) else { continue };
                let limit = if block["type"] == "header" { 150 } else { 3_000 };
                assert!(text.chars().count() <= limit, "{} characters in a {} block", text.chars().count(), block["type"]);
                assert!(!text.ends_with("&am") && !text.contains("&l…"), "cut inside an entity: {text}");
            }
        }
    }

    #[test]
    fn pagerduty_triggers_and_resolves_one_dedup_key_per_incident() {
        let trigger = pagerduty(&hostile(), "R0UT1NGKEY", None);
        assert_eq!((trigger["event_action"].as_str(), trigger["dedup_key"].as_str()), (Some("trigger"), Some("arf-inc-1")));
        assert_eq!(trigger["payload"]["severity"], "warning");
        assert!(trigger["payload"]["summary"].as_str().unwrap().chars().count() <= 1_024);
        let resolved = Event { kind: EventKind::Resolved, ..hostile() };
        let resolve = pagerduty(&resolved, "R0UT1NGKEY", None);
        assert_eq!(resolve, json!({"routing_key": "R0UT1NGKEY", "event_action": "resolve", "dedup_key": "arf-inc-1"}));
    }

    #[test]
    fn a_signature_is_over_the_timestamp_and_the_body() {
        let one = signature(b"secret", 1, b"{}");
        assert!(one.starts_with("sha256=") && one.len() == 7 + 64);
        assert_ne!(one, signature(b"secret", 2, b"{}"));
        assert_ne!(one, signature(b"secret", 1, b"{ }"));
        assert_ne!(one, signature(b"other", 1, b"{}"));
    }
}
