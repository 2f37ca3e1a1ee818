//! Bad proposals get InvalidArgument naming the field, and leave no trace in the log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly on anything unexpected"
)]

mod common;

use std::path::PathBuf;

use arf_proto::v1 as pb;
use common::{Harness, Setup};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[allow(dead_code, reason = "documentation for people reading the file")]
    about: String,
    base: Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    with: Value,
    message: Vec<String>,
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

fn remediation(value: &Value) -> Option<pb::Remediation> {
    if value.is_null() {
        return None;
    }
    Some(pb::Remediation {
        pathway: text(value, "pathway"),
        target: text(value, "target"),
        parameters_json: text(value, "parameters_json"),
        rationale: text(value, "rationale"),
    })
}

/// The proposal as the agent would send it; `confidence` may be spelled as a string.
fn proposal(value: &Value) -> pb::Proposal {
    let hypothesis = &value["hypothesis"];
    pb::Proposal {
        id: text(value, "id"),
        incident_id: text(value, "incident_id"),
        snapshot_hash: text(value, "snapshot_hash"),
        hypothesis: (!hypothesis.is_null()).then(|| pb::Hypothesis {
            id: text(hypothesis, "id"),
            root_cause: text(hypothesis, "root_cause"),
            evidence: serde_json::from_value(hypothesis["evidence"].clone()).unwrap_or_default(),
            confidence: match &hypothesis["confidence"] {
                Value::String(s) => s.parse().unwrap(),
                other => other.as_f64().unwrap(),
            },
            uncertainty: String::new(),
            remediations: hypothesis["remediations"].as_array().unwrap().iter().filter_map(remediation).collect(),
            expected_impact: String::new(),
        }),
        remediation: remediation(&value["remediation"]),
        service: text(value, "service"),
        environment: text(value, "environment"),
        reasoner: text(value, "reasoner"),
    }
}

#[tokio::test]
async fn malformed_proposals_are_refused_naming_the_field() {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid_proposals.json"))
            .unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    let h = Harness::start(Setup::default()).await;

    // The base proposal itself is fine.
    h.evaluate(proposal(&cases.base)).await.unwrap();
    let (head, _) = h.audit.head().await.unwrap();

    let mut failures = Vec::new();
    for case in &cases.cases {
        let mut document = cases.base.clone();
        merge(&mut document, &case.with);
        // Refused before the log is read: nothing needs to back them.
        match h.evaluate_unbacked("agent", proposal(&document)).await {
            Ok(decision) => failures.push(format!("case `{}`: accepted as `{}`", case.name, decision.state)),
            Err(status) if status.code() != tonic::Code::InvalidArgument => {
                failures.push(format!("case `{}`: {:?}: {}", case.name, status.code(), status.message()));
            }
            Err(status) => {
                if let Some(missing) = case.message.iter().find(|m| !status.message().contains(m.as_str())) {
                    failures.push(format!("case `{}`: message lacks `{missing}`: {}", case.name, status.message()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(h.audit.head().await.unwrap().0, head, "refused proposals must not reach the log");
}
