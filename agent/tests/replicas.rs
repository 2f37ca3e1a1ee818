//! Agent replicas on one PostgreSQL (issue 16), every part real: a PostgreSQL
//! server, two audit front-ends serving one log in it, two agents taking signals
//! (each through its own front-end) and a scripted model server on loopback.
//!
//! - A storm spread over both replicas, from many senders at once, makes one
//!   incident and one model call; every signal is in the log, and both replicas
//!   show the whole incident.
//! - An incident whose replica died after logging its opening (its lease gone) is
//!   taken over and diagnosed by another; one whose replica is alive is left to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use arf_agent::config::ReasonerKind;
use arf_audit::RecordKind;
use arf_pg::testing::TestServer;
use arf_proto::v1 as pb;
use support::{ModelServer, Reply};

const VALID: &str = r#"{"hypotheses":[{"root_cause":"checkout's workers are wedged","evidence":["{{signal_id}}"],"confidence":0.8,"uncertainty":"","expected_impact":"errors stop","remediations":[{"pathway":"restart_service","target":"checkout-staging","parameters_json":"{\"reason\":\"storm\"}","rationale":"r"}]}]}"#;

/// Starts agent replica `name` on `log` through its front-end `front`, with the
/// OpenAI reasoner at `model`; returns its gRPC address.
async fn replica(log: &support::pg::Log, front: usize, name: &str, model: &str, lease_secs: u64) -> (String, tokio::sync::oneshot::Sender<()>) {
    let model = model.to_owned();
    let (agent, _webhook, stop) = support::pg::replica(log, front, name, lease_secs, move |config| {
        config.reasoner = ReasonerKind::Openai;
        config.openai = Some(support::openai(&model));
        config.group_wait_secs = 1;
    })
    .await;
    (agent, stop)
}

fn alert(pod: usize, sample: usize) -> pb::Signal {
    pb::Signal {
        kind: "alert".into(),
        title: "CheckoutHighErrorRate".into(),
        description: format!("5xx on {pod} (sample {sample})"),
        severity: "critical".into(),
        service: "checkout".into(),
        environment: "staging".into(),
        labels: [("alertname".to_owned(), "CheckoutHighErrorRate".to_owned()), ("pod".to_owned(), format!("checkout-{pod}"))].into(),
        ..Default::default()
    }
}

/// Asks `agent` for `incident_id` until `done` holds of it.
async fn incident_until(agent: &str, incident_id: &str, what: &str, done: impl Fn(&pb::Incident) -> bool) -> pb::Incident {
    let mut client = support::agent_client(agent).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(incident) = client.get_incident(pb::GetIncidentRequest { incident_id: incident_id.to_owned() }).await {
            let incident = incident.into_inner();
            if done(&incident) {
                return incident;
            }
            assert!(Instant::now() < deadline, "{what}: {incident:?}");
        }
        assert!(Instant::now() < deadline, "{what}: the agent at {agent} does not know `{incident_id}`");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_spread_over_two_agent_replicas_makes_one_incident_and_one_model_call() {
    let server = TestServer::start().await.unwrap();
    let log = support::pg::Log::start(&server).await;
    let model = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let (a, _stop_a) = replica(&log, 0, "agent-a", &model.base_url, 10).await;
    let (b, _stop_b) = replica(&log, 1, "agent-b", &model.base_url, 10).await;

    // Sixteen senders at once, alternating between the replicas: forty pods of one
    // failing service, each alerting again and again.
    let senders: Vec<_> = (0..16)
        .map(|sender| {
            let agent = if sender % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let mut client = support::agent_client(&agent).await;
                let mut answers = Vec::new();
                for round in 0..10 {
                    let signals: Vec<pb::Signal> = (0..20).map(|i| alert((sender * 20 + i + round) % 40, round)).collect();
                    loop {
                        match client.submit_signals(pb::SubmitSignalsRequest { signals: signals.clone() }).await {
                            Ok(response) => {
                                answers.extend(response.into_inner().accepted);
                                break;
                            }
                            // Refused as a whole, nothing accepted: the sender retries, as Alertmanager does.
                            Err(status) if status.code() == tonic::Code::Unavailable => tokio::time::sleep(Duration::from_millis(50)).await,
                            Err(status) => panic!("{status:?}"),
                        }
                    }
                }
                answers
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for sender in senders {
        accepted.extend(sender.await.unwrap());
    }
    assert_eq!(accepted.len(), 16 * 10 * 20);
    let incidents: std::collections::BTreeSet<&str> = accepted.iter().map(|a| a.incident_id.as_str()).collect();
    assert_eq!(incidents.len(), 1, "one incident for the storm, whichever replica took each alert: {incidents:?}");
    let incident_id = incidents.into_iter().next().unwrap().to_owned();
    let fresh = accepted.iter().filter(|a| !a.duplicate).count();
    assert_eq!(fresh, 40, "each pod's first alert is new and every later one repeats it, across replicas");

    let trail = support::wait_for_state(&log.audit, &incident_id, &["escalated", "proposed"]).await;
    let count = |kind: RecordKind| trail.iter().filter(|r| r.kind == kind).count();
    assert_eq!(count(RecordKind::Signal), accepted.len(), "every accepted signal is in the log");
    let seqs: std::collections::BTreeSet<u64> = accepted.iter().map(|a| a.audit_seq).collect();
    assert_eq!(seqs.len(), accepted.len(), "each answer names its own record");
    assert_eq!(count(RecordKind::Snapshot), 1, "one snapshot");
    assert_eq!(count(RecordKind::Diagnosis), 1, "one diagnosis");
    assert_eq!(model.received().len(), 1, "one model call");
    let opened = trail.iter().filter(|r| r.kind == RecordKind::Incident && r.payload["event"] == "opened").count();
    assert_eq!(opened, 1, "opened once");

    // Both replicas hold the whole incident: each took in what the other logged.
    for agent in [&a, &b] {
        incident_until(agent, &incident_id, "every signal, at each replica", |i| i.signal_count as usize == accepted.len() && i.fingerprints.len() == 40).await;
    }
    let client = log.settings.connect().await.unwrap();
    let owners: Vec<String> = client.query("SELECT owner FROM agent_incidents", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
}

/// The records a replica logs when it opens an incident with its first alert.
fn opened(incident_id: &str, service: &str) -> Vec<arf_audit::Entry> {
    let mut signal = arf_core::signal::Signal {
        id: format!("sig-{incident_id}"),
        source: "alertmanager".into(),
        kind: arf_core::signal::SignalKind::Alert,
        status: arf_core::signal::SignalStatus::Firing,
        title: "CheckoutHighErrorRate".into(),
        description: "5xx".into(),
        severity: "critical".into(),
        service: service.into(),
        environment: "staging".into(),
        labels: [("alertname".to_owned(), "CheckoutHighErrorRate".to_owned())].into(),
        annotations: BTreeMap::new(),
        observed_at_ms: arf_core::time::now_ms(),
        fingerprint: String::new(),
    };
    signal.fingerprint = signal.compute_fingerprint();
    let opened = arf_core::records::IncidentRecord::Opened {
        title: signal.title.clone(),
        service: service.into(),
        family: "alert".into(),
        environment: "staging".into(),
        state: "open".into(),
        first_signal: signal.id.clone(),
    };
    let record = arf_core::records::SignalRecord { signal, duplicate: false, sender: Some("tests".into()) };
    vec![
        arf_audit::Entry::new(incident_id, RecordKind::Incident, arf_core::records::encode(&opened)),
        arf_audit::Entry::new(incident_id, RecordKind::Signal, arf_core::records::encode(&record)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_whose_replica_died_is_taken_over_and_one_whose_replica_lives_is_not() {
    let server = TestServer::start().await.unwrap();
    let log = support::pg::Log::start(&server).await;
    let model = ModelServer::start(vec![], Some(Reply::Cite(VALID.to_owned()))).await;
    let db = log.settings.connect().await.unwrap();
    // Replica `agent-a` claimed and opened an incident, then died: its lease lapsed
    // an hour ago. Replica `agent-c` opened another and is alive.
    db.batch_execute(
        "INSERT INTO agent_members (name, incarnation, lease_until) VALUES ('agent-a', 'gone', now() - interval '1 hour'), ('agent-c', 'alive', now() + interval '1 hour');
         INSERT INTO agent_incidents (incident_id, owner) VALUES ('inc-orphan', 'agent-a'), ('inc-alive', 'agent-c');",
    )
    .await
    .unwrap();
    log.audit.append(opened("inc-orphan", "checkout")).await.unwrap();
    log.audit.append(opened("inc-alive", "payments")).await.unwrap();

    let (b, _stop_b) = replica(&log, 1, "agent-b", &model.base_url, 1).await;
    let trail = support::wait_for_state(&log.audit, "inc-orphan", &["escalated", "proposed"]).await;
    assert_eq!(trail.iter().filter(|r| r.kind == RecordKind::Diagnosis).count(), 1, "diagnosed once, by the replica that took it over");
    let owner: String = db.query_one("SELECT owner FROM agent_incidents WHERE incident_id = 'inc-orphan'", &[]).await.unwrap().get(0);
    assert_eq!(owner, "agent-b");
    incident_until(&b, "inc-orphan", "the taken-over incident, at its new owner", |i| i.state == "escalated" || i.state == "proposed").await;

    // Three more leases: the live replica's incident is still its own, undiagnosed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let alive = log.audit.read_incident("inc-alive").await.unwrap();
    assert!(alive.iter().all(|r| r.kind != RecordKind::Snapshot && r.kind != RecordKind::Diagnosis), "{alive:?}");
    let owner: String = db.query_one("SELECT owner FROM agent_incidents WHERE incident_id = 'inc-alive'", &[]).await.unwrap().get(0);
    assert_eq!(owner, "agent-c");
    assert_eq!(model.received().len(), 1, "one model call, for the orphan");
}

/// Sends `signals` to `agent`; the incident of each.
async fn submit(agent: &str, signals: Vec<pb::Signal>) -> Vec<String> {
    let mut client = support::agent_client(agent).await;
    let answer = client.submit_signals(pb::SubmitSignalsRequest { signals }).await.unwrap().into_inner();
    answer.accepted.into_iter().map(|a| a.incident_id).collect()
}

/// A replica places each signal where one agent would have, from what its peer
/// logged: once the peer has taken its incident's snapshot, another alert of the
/// service opens a new incident (the incident's own alert still joins it); and an
/// incident opened by an alert that had already resolved takes no later alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_places_signals_after_a_peers_snapshot_as_one_agent_would() {
    let server = TestServer::start().await.unwrap();
    let log = support::pg::Log::start(&server).await;
    // The model never answers: the diagnosis stays after its snapshot.
    let model = ModelServer::start(vec![], Some(Reply::Hang)).await;
    let (a, _stop_a) = replica(&log, 0, "agent-a", &model.base_url, 10).await;
    let (b, _stop_b) = replica(&log, 1, "agent-b", &model.base_url, 10).await;

    let first = submit(&a, vec![alert(1, 0)]).await.remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.audit.read_incident(&first).await.unwrap().iter().any(|r| r.kind == RecordKind::Snapshot) {
        assert!(Instant::now() < deadline, "no snapshot was taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut other = alert(2, 1);
    other.title = "CheckoutLatencyHigh".into();
    other.labels.insert("alertname".into(), "CheckoutLatencyHigh".into());
    let later = submit(&b, vec![other, alert(2, 1)]).await;
    assert_ne!(later[0], first, "another alert after the snapshot opens a new incident at the peer too");
    assert_eq!(later[1], first, "the incident's own alert, from another pod, joins it");

    let mut resolved = alert(3, 0);
    resolved.service = "payments".into();
    resolved.status = "resolved".into();
    let opened_resolved = submit(&a, vec![resolved.clone()]).await.remove(0);
    resolved.status = "firing".into();
    let firing = submit(&b, vec![resolved]).await.remove(0);
    assert_ne!(firing, opened_resolved, "an incident opened resolved takes no later alert, at the peer either");
}

/// A replica frozen while it holds a grouping key's lock (a stop signal, a frozen
/// VM) keeps its database session, and the lock, for as long as the server keeps
/// it: for a stopped process on a live host, for ever. Once its lease lapsed, and
/// the grace a takeover waits, a live replica ends that session, and the key's
/// signals are placed again instead of being refused after 30 s of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grouping_keys_of_a_frozen_replica_are_freed_once_its_lease_lapsed() {
    let server = TestServer::start().await.unwrap();
    let log = support::pg::Log::start(&server).await;
    let model = ModelServer::start(vec![], Some(Reply::Hang)).await;
    let (b, _stop_b) = replica(&log, 1, "agent-b", &model.base_url, 1).await;
    submit(&b, vec![alert(1, 0)]).await;
    let db = log.settings.connect().await.unwrap();
    let key: String = db.query_one("SELECT key FROM agent_keys", &[]).await.unwrap().get(0);

    // The frozen replica: its lease lapsed, and its session still holds the key.
    db.batch_execute("INSERT INTO agent_members (name, incarnation, lease_until) VALUES ('agent-f', 'agt-frozen', now() - interval '1 hour')").await.unwrap();
    let frozen = log.settings.connect().await.unwrap();
    frozen.batch_execute(&format!("SET application_name = '{}agt-frozen'; BEGIN", arf_agent::replicas::HOLDER_SESSION)).await.unwrap();
    frozen.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&arf_agent::replicas::KEY_LOCK_CLASS, &key]).await.unwrap();
    // And a live one's session, which is left alone.
    db.batch_execute("INSERT INTO agent_members (name, incarnation, lease_until) VALUES ('agent-l', 'agt-live', now() + interval '1 hour')").await.unwrap();
    let live = log.settings.connect().await.unwrap();
    live.batch_execute(&format!("SET application_name = '{}agt-live'", arf_agent::replicas::HOLDER_SESSION)).await.unwrap();

    let sent = Instant::now();
    let placed = submit(&b, vec![alert(2, 0)]).await;
    assert_eq!(placed.len(), 1);
    assert!(sent.elapsed() < Duration::from_secs(20), "the key waited {:?} for the frozen replica", sent.elapsed());
    assert!(frozen.batch_execute("SELECT 1").await.is_err(), "the frozen replica's session was ended");
    live.batch_execute("SELECT 1").await.unwrap();
}

/// The server drops a holder's key-lock session after the holder's last check
/// (a network blip, an administrator): a peer then takes the key, and what the
/// earlier holder appends under it is refused by the log, which checks the token
/// each holder drew; its late release changes nothing the peer relies on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_key_lock_was_dropped_appends_nothing_once_a_peer_took_the_key() {
    use arf_agent::replicas::{HOLDER_SESSION, Replicas};
    let server = TestServer::start().await.unwrap();
    let log = support::pg::Log::start(&server).await;
    let a = Replicas::join(&log.settings, "agent-a", Duration::from_secs(60)).await.unwrap();
    let b = Replicas::join(&log.settings, "agent-b", Duration::from_secs(60)).await.unwrap();
    let key = "staging/checkout/alerts".to_owned();
    let held_a = a.hold(std::slice::from_ref(&key)).await.unwrap();
    held_a.appending().await.unwrap();

    let db = log.settings.connect().await.unwrap();
    let ended = db
        .query_one("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) AS t", &[&format!("{HOLDER_SESSION}{}", a.incarnation())])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(ended, 1, "agent-a's key-lock session");
    let held_b = tokio::time::timeout(Duration::from_secs(10), b.hold(std::slice::from_ref(&key))).await.expect("the key is free once the session ended").unwrap();
    assert!(held_b.unrecorded, "agent-a had marked the key as appending, so agent-b reads the log to its head");

    let late = log.audit.clone().fenced("agent-a", a.incarnation()).under_keys(&held_a.tokens);
    let refused = late.append(opened("inc-a", "checkout")).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains(&key)), "{refused}");
    let taken = log.audit.clone().fenced("agent-b", b.incarnation()).under_keys(&held_b.tokens).append(opened("inc-b", "checkout")).await.unwrap();
    assert!(held_a.release(u64::MAX >> 1).await.is_err(), "agent-a's lock transaction is gone");
    let (last, appending): (i64, bool) = db.query_one("SELECT last_seq, appending FROM agent_keys WHERE key = $1", &[&key]).await.map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!((last, appending), (0, true), "agent-a's release recorded nothing under agent-b's token");
    held_b.release(taken.last().unwrap().seq).await.unwrap();
    let incidents: Vec<String> = log.audit.read_range(1, 0).await.unwrap().into_iter().map(|r| r.incident_id).collect();
    assert!(incidents.contains(&"inc-b".to_owned()) && !incidents.contains(&"inc-a".to_owned()), "{incidents:?}");

    // The session is dropped while the holder's append is committing (made slow by
    // a deferred trigger): the peer's hold waits for that commit, so the append is
    // in the log before the peer reads it.
    let key = "staging/search/alerts".to_owned();
    let held_a = a.hold(std::slice::from_ref(&key)).await.unwrap();
    held_a.appending().await.unwrap();
    db.batch_execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON audit_records DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )
    .await
    .unwrap();
    let appending = tokio::spawn({
        let audit = log.audit.clone().fenced("agent-a", a.incarnation()).under_keys(&held_a.tokens);
        async move { audit.append(opened("inc-a2", "search")).await }
    });
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()";
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.query_one(sleeping, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        assert!(Instant::now() < deadline, "the append never reached its commit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&format!("{HOLDER_SESSION}{}", a.incarnation())]).await.unwrap();
    let held_b = tokio::time::timeout(Duration::from_secs(10), b.hold(std::slice::from_ref(&key))).await.expect("the key is free once the commit is done").unwrap();
    // Read from the table itself: a front-end's read would wait for its own append.
    let committed: i64 = db.query_one("SELECT count(*) FROM audit_records WHERE incident_id = 'inc-a2'", &[]).await.unwrap().get(0);
    db.batch_execute("DROP TRIGGER slow_commit ON audit_records").await.unwrap();
    assert!(held_b.unrecorded);
    assert_eq!(committed, 2, "the peer's hold came after the append in flight committed");
    appending.await.unwrap().unwrap();
    drop(held_b);
}
