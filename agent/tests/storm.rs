//! An alert storm: 10,000 alerts about one failure make one incident and one
//! diagnosis, within the bound on model calls, and every signal is in the log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use arf_agent::config::ReasonerKind;
use arf_audit::RecordKind;
use arf_proto::v1 as pb;
use support::{ModelServer, Reply};

const VALID: &str = r#"{"hypotheses":[{"root_cause":"checkout's workers are wedged","evidence":["{{signal_id}}"],"confidence":0.8,"uncertainty":"","expected_impact":"errors stop","remediations":[{"pathway":"restart_service","target":"checkout-staging","parameters_json":"{\"reason\":\"storm\"}","rationale":"r"}]}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_alerts_make_one_incident_and_lose_none() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&server.base_url));
        config.max_model_calls_per_incident = 3;
    })
    .await;
    let mut agent = support::agent_client(&running.agent).await;

    // Ten replicas, each alerting a thousand times: ten fingerprints, one failure.
    let mut incident_ids = std::collections::BTreeSet::new();
    let mut accepted = 0usize;
    let mut duplicates = 0usize;
    for batch in 0..10 {
        let signals: Vec<pb::Signal> = (0..1000)
            .map(|i| pb::Signal {
                kind: "alert".into(),
                title: "CheckoutHighErrorRate".into(),
                description: format!("5xx on replica {batch} (sample {i})"),
                severity: "critical".into(),
                service: "checkout".into(),
                environment: "staging".into(),
                labels: [("alertname".to_owned(), "CheckoutHighErrorRate".to_owned()), ("pod".to_owned(), format!("checkout-{batch}"))].into(),
                ..Default::default()
            })
            .collect();
        let response = agent.submit_signals(pb::SubmitSignalsRequest { signals }).await.unwrap().into_inner();
        accepted += response.accepted.len();
        duplicates += response.accepted.iter().filter(|a| a.duplicate).count();
        incident_ids.extend(response.accepted.iter().map(|a| a.incident_id.clone()));
    }
    assert_eq!(accepted, 10_000);
    assert_eq!(incident_ids.len(), 1, "one incident");
    assert_eq!(duplicates, 10_000 - 10, "each replica's first alert is new; the rest repeat it");
    let incident_id = incident_ids.into_iter().next().unwrap();

    let trail = support::wait_for_state(&running.audit, &incident_id, &["escalated", "proposed"]).await;
    let signals = trail.iter().filter(|r| r.kind == RecordKind::Signal).count();
    assert_eq!(signals, 10_000, "every signal is in the log");
    let diagnoses = trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).count();
    assert_eq!(diagnoses, 1, "one diagnosis");
    assert!(server.received().len() <= 3, "model calls stay within the bound");
    assert_eq!(server.received().len(), 1);

    let incident = agent
        .get_incident(pb::GetIncidentRequest { incident_id: incident_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(incident.signal_count, 10_000);
    assert_eq!(incident.fingerprints.len(), 10);
}

/// The storm from many connections at once: 64 concurrent senders, 40 alerts each,
/// about four services. Concurrent requests share appends, and still every answer
/// is exact: each signal is in the log at the sequence number it was told, each
/// service's alerts make one incident, and repeats are duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_share_appends_and_every_answer_is_exact() {
    let server = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let running = support::start(|config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&server.base_url));
    })
    .await;
    let agent = support::agent_client(&running.agent).await;
    let services = ["checkout", "payments", "search", "cart"];
    let senders: Vec<_> = (0..64)
        .map(|sender| {
            let mut agent = agent.clone();
            let service = services[sender % services.len()];
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for i in 0..40 {
                    let signal = pb::Signal {
                        kind: "alert".into(),
                        title: format!("{service}HighErrorRate"),
                        description: format!("sample {i}"),
                        severity: "critical".into(),
                        service: service.into(),
                        environment: "staging".into(),
                        labels: [("alertname".to_owned(), format!("{service}HighErrorRate")), ("pod".to_owned(), format!("{service}-{sender}"))].into(),
                        ..Default::default()
                    };
                    let response = agent.submit_signals(pb::SubmitSignalsRequest { signals: vec![signal] }).await.unwrap().into_inner();
                    answers.push((service, response.accepted.into_iter().next().unwrap()));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await.unwrap());
    }
    assert_eq!(answers.len(), 64 * 40);
    let log = running.audit.read_range(1, 0).await.unwrap();
    let by_seq: std::collections::BTreeMap<u64, &arf_audit::Record> = log.iter().map(|r| (r.seq, r)).collect();
    let mut incident_of: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> = Default::default();
    for (service, accepted) in &answers {
        let record = by_seq[&accepted.audit_seq];
        assert_eq!(record.kind, RecordKind::Signal);
        assert_eq!(record.payload["signal"]["id"], accepted.signal_id.as_str(), "the answer's sequence number holds that very signal");
        assert_eq!(record.incident_id, accepted.incident_id);
        incident_of.entry(service).or_default().insert(accepted.incident_id.clone());
    }
    for (service, incidents) in &incident_of {
        assert_eq!(incidents.len(), 1, "{service}'s alerts make one incident: {incidents:?}");
    }
    let distinct: std::collections::BTreeSet<_> = incident_of.values().flatten().collect();
    assert_eq!(distinct.len(), services.len(), "one incident per service");
    // 16 senders per service, each its own pod: the first of each is new, its other 39 repeat it.
    let duplicates = answers.iter().filter(|(_, a)| a.duplicate).count();
    assert_eq!(duplicates, 64 * 39);
    let opened = log.iter().filter(|r| r.kind == RecordKind::Incident && r.payload["event"] == "opened").count();
    assert_eq!(opened, services.len(), "each incident opened once");
}
