//! The audit service over real gRPC: writer identity from credentials, reads, tail, limits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;

use arf_audit::{AuditClient, AuditError, Config, Entry, RecordKind};

struct Running {
    addr: String,
    agent_token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let agent_token = arf_core::keys::load_or_generate_token(&dir.path().join("agent.token")).unwrap();
    let config = Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from([("agent".to_owned(), dir.path().join("agent.token"))]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(arf_audit::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    Running { addr, agent_token, _stop: stop, _dir: dir }
}

/// Serves `config` on a loopback port until the returned sender is dropped.
async fn serve(config: Config) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(arf_audit::serve(config, listener, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

#[tokio::test]
async fn writer_identity_comes_from_the_token() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    let record = client.append_one("inc-1", RecordKind::Signal, json!({"n": 1})).await.unwrap();
    assert_eq!((record.seq, record.writer.as_str()), (1, "agent"));

    let anonymous = AuditClient::connect(&log.addr, None).unwrap();
    let error = anonymous.append_one("inc-1", RecordKind::Signal, json!({})).await.unwrap_err();
    assert!(error.to_string().contains("needs credentials"), "{error}");

    let forged = AuditClient::connect(&log.addr, Some("f".repeat(64))).unwrap();
    let error = forged.append_one("inc-1", RecordKind::Signal, json!({})).await.unwrap_err();
    assert!(matches!(error, AuditError::Refused(_)), "{error}");
    assert_eq!(client.head().await.unwrap().0, 1, "refused appends leave no record");
}

#[tokio::test]
async fn reads_by_range_and_incident_and_tails() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    let mut tail = client.tail(1).await.unwrap();
    let entries = (0..6)
        .map(|i| Entry::new(if i % 2 == 0 { "inc-a" } else { "inc-b" }, RecordKind::Signal, json!({"i": i})))
        .collect();
    let records = client.append(entries).await.unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert!(records.windows(2).all(|w| w[1].prev_hash == w[0].hash));

    let range = client.read_range(2, 5).await.unwrap();
    assert_eq!(range.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
    let incident = client.read_incident("inc-b").await.unwrap();
    assert_eq!(incident.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 4, 6]);
    // An incident id that is a prefix of another does not see the other's records.
    assert!(client.read_incident("inc-").await.unwrap().is_empty());

    let mut seen = Vec::new();
    while seen.len() < 6 {
        let next = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap().unwrap();
        seen.push(next.seq);
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5, 6]);
    client.append_one("inc-a", RecordKind::Outcome, json!({})).await.unwrap();
    let live = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(live.seq, 7);
}

/// A follower that reads a few kinds, or a few writers, is sent only those, from
/// the backlog and live alike; a kind the log does not know is refused by name.
#[tokio::test]
async fn a_tail_carries_only_the_writers_and_kinds_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let token = |name: &str| arf_core::keys::load_or_generate_token(&dir.path().join(format!("{name}.token"))).unwrap();
    let (agent_token, executor_token) = (token("agent"), token("executor"));
    let writers = ["agent", "executor"].map(|w| (w.to_owned(), dir.path().join(format!("{w}.token"))));
    let (addr, _stop) = serve(Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from(writers))).await;
    let agent = AuditClient::connect(&addr, Some(agent_token.clone())).unwrap();
    let executor = AuditClient::connect(&addr, Some(executor_token)).unwrap();
    let append = |client: &AuditClient, kind| {
        let client = client.clone();
        async move { client.append_one("inc-1", kind, json!({})).await.unwrap().seq }
    };
    // The backlog: seqs 1..=4.
    append(&agent, RecordKind::Signal).await;
    append(&agent, RecordKind::Outcome).await;
    append(&executor, RecordKind::Outcome).await;
    append(&executor, RecordKind::ExecutionStarted).await;
    let mut by_executor = std::pin::pin!(agent.tail_of(1, &["executor"], &[]).await.unwrap());
    let mut outcomes = std::pin::pin!(agent.tail_of(1, &[], &[RecordKind::Outcome]).await.unwrap());
    let mut both = std::pin::pin!(agent.tail_of(1, &["agent"], &[RecordKind::Signal, RecordKind::Outcome]).await.unwrap());
    // Live: seqs 5..=7.
    append(&agent, RecordKind::Signal).await;
    append(&executor, RecordKind::Outcome).await;
    append(&agent, RecordKind::Outcome).await;
    async fn take(stream: &mut (impl futures::Stream<Item = Result<arf_audit::Record, AuditError>> + Unpin), n: usize) -> Vec<(u64, String)> {
        let mut seen = Vec::new();
        while seen.len() < n {
            let record = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
            seen.push((record.seq, format!("{}:{}", record.writer, record.kind.as_str())));
        }
        seen
    }
    let pairs = |list: &[(u64, &str)]| list.iter().map(|(seq, what)| (*seq, (*what).to_owned())).collect::<Vec<_>>();
    assert_eq!(take(&mut by_executor, 3).await, pairs(&[(3, "executor:outcome"), (4, "executor:execution_started"), (6, "executor:outcome")]));
    assert_eq!(take(&mut outcomes, 4).await, pairs(&[(2, "agent:outcome"), (3, "executor:outcome"), (6, "executor:outcome"), (7, "agent:outcome")]));
    assert_eq!(take(&mut both, 4).await, pairs(&[(1, "agent:signal"), (2, "agent:outcome"), (5, "agent:signal"), (7, "agent:outcome")]));

    let mut raw = arf_proto::v1::audit_log_client::AuditLogClient::connect(format!("http://{addr}")).await.unwrap();
    let request = arf_proto::v1::TailRequest { from_seq: 1, writers: vec![], kinds: vec!["signals".into()] };
    let refused = raw.tail(arf_proto::server::with_bearer(tonic::Request::new(request), &agent_token)).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("`signals`"), "{refused:?}");
}

#[tokio::test]
async fn bad_appends_are_refused_with_the_field_named() {
    let log = start().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", log.addr)).unwrap().connect_lazy();
    let mut raw = arf_proto::v1::audit_log_client::AuditLogClient::new(channel);
    let request = |kind: &str, payload: &str| {
        let message = arf_proto::v1::AppendRequest {
            entries: vec![arf_proto::v1::AppendEntry { incident_id: "i".into(), kind: kind.into(), payload_json: payload.into() }],
            fence: None,
            quiet: None,
        };
        arf_proto::server::with_bearer(tonic::Request::new(message), &log.agent_token)
    };
    let error = raw.append(request("update", "{}")).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("`entries[0].kind`"), "{}", error.message());
    let error = raw.append(request("signal", "{not json")).await.unwrap_err();
    assert!(error.message().contains("`entries[0].payload_json`"), "{}", error.message());
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let error = raw.append(request("signal", &huge)).await.unwrap_err();
    assert!(matches!(error.code(), tonic::Code::InvalidArgument | tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{error:?}");
    let mut unnamed = request("signal", "{}");
    unnamed.get_mut().quiet = Some(arf_proto::v1::Quiet { incident_id: String::new(), writer: "governor".into(), after_seq: 0 });
    let error = raw.append_if(unnamed).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(error.message().contains("`quiet.incident_id`"), "{}", error.message());
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    assert_eq!(client.head().await.unwrap().0, 0);
}

#[tokio::test]
async fn a_restricted_writer_appends_only_its_own_kinds_and_a_refused_batch_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agent_token = arf_core::keys::load_or_generate_token(&dir.path().join("agent.token")).unwrap();
    let executor_token = arf_core::keys::load_or_generate_token(&dir.path().join("executor.token")).unwrap();
    let config = Config { writer_kinds: BTreeMap::from([("agent".to_owned(), vec!["signal".to_owned(), "incident".to_owned()])]), ..Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from([
            ("agent".to_owned(), dir.path().join("agent.token")),
            ("executor".to_owned(), dir.path().join("executor.token")),
        ])) };
    let (addr, _stop) = serve(config).await;
    let agent = AuditClient::connect(&addr, Some(agent_token)).unwrap();
    let executor = AuditClient::connect(&addr, Some(executor_token)).unwrap();

    assert_eq!(agent.who_am_i().await.unwrap(), ("agent".to_owned(), vec!["signal".to_owned(), "incident".to_owned()]));
    assert_eq!(executor.who_am_i().await.unwrap(), ("executor".to_owned(), vec![]), "no list: any kind");
    agent.append_one("inc-1", RecordKind::Signal, json!({"n": 1})).await.unwrap();
    let forged = agent.append_one("inc-1", RecordKind::ExecutionStarted, json!({"decision_id": "d-1"})).await.unwrap_err();
    assert!(matches!(forged, AuditError::Refused(_)), "{forged}");
    assert!(forged.to_string().contains("writer `agent` may not append `execution_started` records"), "{forged}");
    // A batch with one forbidden kind is refused whole.
    let batch = vec![
        Entry { incident_id: "inc-1".into(), kind: RecordKind::Signal, payload: json!({"n": 2}) },
        Entry { incident_id: "inc-1".into(), kind: RecordKind::Outcome, payload: json!({"outcome": "verified"}) },
    ];
    let refused = agent.append(batch).await.unwrap_err();
    assert!(refused.to_string().contains("`entries[1]`"), "{refused}");
    assert_eq!(agent.head().await.unwrap().0, 1, "refused appends leave no record");
    // A writer without a list appends any kind.
    executor.append_one("inc-1", RecordKind::ExecutionStarted, json!({"decision_id": "d-1"})).await.unwrap();
    assert_eq!(executor.head().await.unwrap().0, 2);
    // On a condition: refused, with its own error, once the writer it names spoke since.
    let entry = || Entry { incident_id: "inc-1".into(), kind: RecordKind::Outcome, payload: json!({"outcome": "verified"}) };
    let quiet = |after_seq| arf_audit::client::Quiet { incident_id: "inc-1".into(), writer: "agent".into(), after_seq };
    let spoken = executor.append_if_quiet(entry(), quiet(0)).await.unwrap_err();
    assert!(matches!(spoken, AuditError::Spoken(_)) && spoken.to_string().contains("`agent` appended record 1"), "{spoken}");
    assert_eq!(executor.append_if_quiet(entry(), quiet(1)).await.unwrap().seq, 3);
}

#[test]
fn writer_kinds_must_name_known_writers_and_kinds() {
    let dir = tempfile::tempdir().unwrap();
    arf_core::keys::load_or_generate_token(&dir.path().join("agent.token")).unwrap();
    let config = |kinds: BTreeMap<String, Vec<String>>| Config { writer_kinds: kinds, ..Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), BTreeMap::from([("agent".to_owned(), dir.path().join("agent.token"))])) };
    let unknown_writer = config(BTreeMap::from([("agnet".to_owned(), vec!["signal".to_owned()])])).validate().unwrap_err();
    assert!(unknown_writer.contains("`audit.writer_kinds.agnet` names a writer"), "{unknown_writer}");
    let unknown_kind = config(BTreeMap::from([("agent".to_owned(), vec!["signals".to_owned()])])).validate().unwrap_err();
    assert!(unknown_kind.contains("unknown record kind `signals`"), "{unknown_kind}");
}

/// Every read needs the token of a reader or a writer; a reader reads and appends nothing.
#[tokio::test]
async fn reading_the_log_needs_a_known_reader_and_a_reader_cannot_write() {
    use arf_proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let agent_token = arf_core::keys::load_or_generate_token(&dir.path().join("agent.token")).unwrap();
    let auditor_token = arf_core::keys::load_or_generate_token(&dir.path().join("auditor.token")).unwrap();
    let writers = BTreeMap::from([("agent".to_owned(), dir.path().join("agent.token"))]);
    let config = Config {
        readers: BTreeMap::from([("auditor".to_owned(), dir.path().join("auditor.token"))]),
        ..Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("audit"), writers)
    };
    let (addr, _stop) = serve(config).await;
    let agent = AuditClient::connect(&addr, Some(agent_token)).unwrap();
    agent.append_one("inc-1", RecordKind::Signal, json!({"n": 1})).await.unwrap();
    agent.append_one("inc-1", RecordKind::Signal, json!({"n": 2})).await.unwrap();
    agent.sign_checkpoint().await.unwrap().unwrap();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    let raw = arf_proto::v1::audit_log_client::AuditLogClient::new(channel);
    // Each read RPC, called with the given token (or none); the code it answered.
    async fn reads(raw: &arf_proto::v1::audit_log_client::AuditLogClient<tonic::transport::Channel>, token: Option<&str>) -> Vec<(&'static str, tonic::Code)> {
        fn req<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
            let request = tonic::Request::new(message);
            match token {
                Some(token) => arf_proto::server::with_bearer(request, token),
                None => request,
            }
        }
        fn code<T>(result: Result<T, tonic::Status>) -> tonic::Code {
            result.err().map_or(tonic::Code::Ok, |s| s.code())
        }
        let mut c = raw.clone();
        vec![
            ("Get", code(c.get(req(pb::GetRecordRequest { seq: 1 }, token)).await)),
            ("ReadRange", code(c.read_range(req(pb::ReadRangeRequest { from_seq: 1, to_seq: 0 }, token)).await)),
            ("ReadIncident", code(c.read_incident(req(pb::ReadIncidentRequest { incident_id: "inc-1".into() }, token)).await)),
            ("Tail", code(c.tail(req(pb::TailRequest { from_seq: 1, ..Default::default() }, token)).await)),
            ("Head", code(c.head(req(pb::HeadRequest {}, token)).await)),
            ("GetCheckpoint", code(c.get_checkpoint(req(pb::GetCheckpointRequest {}, token)).await)),
            ("InclusionProof", code(c.inclusion_proof(req(pb::InclusionProofRequest { seq: 1, tree_size: 2 }, token)).await)),
            ("ConsistencyProof", code(c.consistency_proof(req(pb::ConsistencyProofRequest { old_size: 1, new_size: 2 }, token)).await)),
        ]
    }
    for (method, code) in reads(&raw, None).await {
        assert_eq!(code, tonic::Code::Unauthenticated, "{method} without a token");
    }
    for (method, code) in reads(&raw, Some(&"f".repeat(64))).await {
        assert_eq!(code, tonic::Code::Unauthenticated, "{method} with an unknown token");
    }
    for (method, code) in reads(&raw, Some(&auditor_token)).await {
        assert_eq!(code, tonic::Code::Ok, "{method} as the auditor");
    }
    let auditor = AuditClient::connect(&addr, Some(auditor_token)).unwrap();
    assert!(matches!(auditor.append_one("inc-1", RecordKind::Signal, json!({})).await, Err(AuditError::Refused(_))));
    assert!(matches!(auditor.sign_checkpoint().await, Err(AuditError::Refused(_))));
    assert_eq!(auditor.read_incident("inc-1").await.unwrap().len(), 2);
}

/// The log's checkpoint verifier, from the key the running log made (once it has
/// taken an append, so the key is there).
fn verifier(log: &Running) -> arf_audit::checkpoint::NoteVerifier {
    let key = arf_core::keys::load_trusted(&log._dir.path().join("audit").join("checkpoint.key.pub")).unwrap().key;
    arf_audit::checkpoint::NoteVerifier::new("arf-audit-log", key)
}

/// A witness accepts a checkpoint only if it covers what the caller relies on: the
/// records the log acknowledged to it, and any sequence number it names.
#[tokio::test]
async fn a_witness_refuses_a_checkpoint_that_does_not_cover_what_it_relies_on() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    client.append_one("inc-1", RecordKind::Signal, json!({"n": 1})).await.unwrap();
    client.append_one("inc-1", RecordKind::Signal, json!({"n": 2})).await.unwrap();
    assert_eq!(client.acknowledged_seq(), 2);
    let verifier = verifier(&log);
    let state = log._dir.path().join("witness").join("checkpoint");
    let witness = arf_audit::witness::Witness::open(&state, verifier).unwrap();
    let seen = witness.check_fresh(&client, 0).await.unwrap();
    assert!(seen.checkpoint.size >= 2, "covers both acknowledged records");
    let short = witness.check_fresh(&client, 100).await.unwrap_err();
    assert!(matches!(short, arf_audit::witness::WitnessError::Uncovered { needed: 100, .. }), "{short}");
}

/// A checkpoint signed for a witness carries the consistency proof from the size
/// the witness holds, so its check is one round trip; the proof verifies like one
/// asked for alone, none comes from beyond the checkpoint, and the witness accepts
/// growth checked this way.
#[tokio::test]
async fn a_checkpoint_signed_for_a_witness_carries_its_consistency_proof() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    for n in 0..3 {
        client.append_one("inc-1", RecordKind::Signal, json!({"n": n})).await.unwrap();
    }
    let verifier = verifier(&log);
    let (first, proof) = client.sign_checkpoint_from(0).await.unwrap().unwrap();
    assert!(proof.is_none(), "none asked for");
    let old = verifier.verify(&first).unwrap();
    for n in 3..8 {
        client.append_one("inc-1", RecordKind::Signal, json!({"n": n})).await.unwrap();
    }
    let (second, proof) = client.sign_checkpoint_from(old.size).await.unwrap().unwrap();
    let new = verifier.verify(&second).unwrap();
    let (from, proof) = proof.expect("a proof from the size asked");
    assert_eq!(from, old.size);
    assert!(new.size > old.size);
    arf_audit::merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof).unwrap();
    assert_eq!(proof, client.consistency_proof(old.size, new.size).await.unwrap(), "the same proof as asked for alone");
    let (_, beyond) = client.sign_checkpoint_from(new.size + 100).await.unwrap().unwrap();
    assert!(beyond.is_none(), "no proof from beyond the checkpoint");

    let witness = arf_audit::witness::Witness::open(&log._dir.path().join("witness").join("checkpoint"), verifier).unwrap();
    let seen = witness.check_fresh(&client, 0).await.unwrap();
    client.append_one("inc-1", RecordKind::Signal, json!({"n": 8})).await.unwrap();
    let grown = witness.check_fresh(&client, 0).await.unwrap();
    assert!(grown.checkpoint.size > seen.checkpoint.size);
}

/// Witness checks at once share signings: twelve calls that wait on one another
/// are answered by two requests (the first, then one for every call that waited on
/// it), each covering what its callers rely on; and a checkpoint asked for before a
/// call began is never taken for fresh, so the next call asks again.
#[tokio::test]
async fn witness_checks_at_once_share_signings() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    for n in 0..12 {
        client.append_one("inc-1", RecordKind::Signal, json!({"n": n})).await.unwrap();
    }
    let verifier = verifier(&log);
    let witness = arf_audit::witness::Witness::open(&log._dir.path().join("witness").join("checkpoint"), verifier).unwrap();
    let answers = futures::future::join_all((0..12).map(|_| witness.check_fresh(&client, 0))).await;
    for answer in answers {
        assert!(answer.unwrap().checkpoint.size >= 12, "covers every acknowledged record");
    }
    assert_eq!(witness.signings_asked(), 2);
    witness.check_fresh(&client, 0).await.unwrap();
    assert_eq!(witness.signings_asked(), 3, "what it holds covers the call, but was signed before the call began");
}

/// Every server sets `TCP_NODELAY` on the connections it accepts: a response of a
/// few kilobytes does not wait for the client's delayed ACK (about 40 ms). Measured
/// as a ratio to a trivial call on the same connection, not as a wall-clock limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_larger_response_is_not_held_back_by_nagle() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    let record = client.append_one("inc-1", RecordKind::Signal, json!({"text": "x".repeat(4000)})).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", log.addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let mut trivial = Vec::new();
    let mut larger = Vec::new();
    for _ in 0..25 {
        let started = std::time::Instant::now();
        health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        trivial.push(started.elapsed());
        let started = std::time::Instant::now();
        assert_eq!(client.get(record.seq).await.unwrap().unwrap().seq, record.seq);
        larger.push(started.elapsed());
    }
    let (trivial, larger) = (median(trivial), median(larger));
    let ratio = larger.as_secs_f64() / trivial.as_secs_f64().max(1e-6);
    assert!(ratio < 20.0, "a 4 kB read took {larger:?} against {trivial:?} for a health check ({ratio:.0}x): Nagle is back");
}

/// A log kept in files cannot check a replica's lease: a fenced append is refused,
/// naming the setting that fixes it, and nothing of it is logged.
#[tokio::test]
async fn a_log_in_files_refuses_an_append_under_a_lease_it_cannot_check() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    let refused = client.clone().fenced("agent-1", "agt-1").append_one("inc-1", RecordKind::Signal, json!({"n": 1})).await.unwrap_err();
    assert!(matches!(&refused, arf_audit::AuditError::Fenced(m) if m.contains("audit.postgres")), "{refused}");
    assert_eq!(client.head().await.unwrap().0, 0);
}

/// An audit service as built before appends on a condition: it has no AppendIf
/// (tonic answers UNIMPLEMENTED for a method it does not know), and its Append
/// ignores a `quiet` field it does not know. It counts the appends it took.
#[derive(Default)]
struct OlderLog {
    appended: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

type Records = std::pin::Pin<Box<dyn futures::Stream<Item = Result<arf_proto::v1::AuditRecord, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl arf_proto::v1::audit_log_server::AuditLog for OlderLog {
    async fn append(&self, request: tonic::Request<arf_proto::v1::AppendRequest>) -> Result<tonic::Response<arf_proto::v1::AppendResponse>, tonic::Status> {
        let n = self.appended.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u64 + 1;
        let records = request
            .into_inner()
            .entries
            .into_iter()
            .map(|e| arf_proto::v1::AuditRecord { seq: n, incident_id: e.incident_id, kind: e.kind, payload_json: e.payload_json, writer: "executor".into(), ..Default::default() })
            .collect();
        Ok(tonic::Response::new(arf_proto::v1::AppendResponse { records }))
    }
    async fn append_if(&self, _: tonic::Request<arf_proto::v1::AppendRequest>) -> Result<tonic::Response<arf_proto::v1::AppendResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn get(&self, _: tonic::Request<arf_proto::v1::GetRecordRequest>) -> Result<tonic::Response<arf_proto::v1::AuditRecord>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    type ReadRangeStream = Records;
    async fn read_range(&self, _: tonic::Request<arf_proto::v1::ReadRangeRequest>) -> Result<tonic::Response<Records>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    type ReadIncidentStream = Records;
    async fn read_incident(&self, _: tonic::Request<arf_proto::v1::ReadIncidentRequest>) -> Result<tonic::Response<Records>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    type TailStream = Records;
    async fn tail(&self, _: tonic::Request<arf_proto::v1::TailRequest>) -> Result<tonic::Response<Records>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn head(&self, _: tonic::Request<arf_proto::v1::HeadRequest>) -> Result<tonic::Response<arf_proto::v1::HeadResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn who_am_i(&self, _: tonic::Request<arf_proto::v1::WhoAmIRequest>) -> Result<tonic::Response<arf_proto::v1::WhoAmIResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn get_checkpoint(&self, _: tonic::Request<arf_proto::v1::GetCheckpointRequest>) -> Result<tonic::Response<arf_proto::v1::CheckpointResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn sign_checkpoint(&self, _: tonic::Request<arf_proto::v1::SignCheckpointRequest>) -> Result<tonic::Response<arf_proto::v1::CheckpointResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn inclusion_proof(&self, _: tonic::Request<arf_proto::v1::InclusionProofRequest>) -> Result<tonic::Response<arf_proto::v1::ProofResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
    async fn consistency_proof(&self, _: tonic::Request<arf_proto::v1::ConsistencyProofRequest>) -> Result<tonic::Response<arf_proto::v1::ProofResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(""))
    }
}

/// The upgrade order made safe: a client never sends a condition (silence, a
/// lease) where an older audit service would ignore it and append unconditionally.
#[tokio::test]
async fn an_audit_service_older_than_conditions_logs_nothing_of_an_append_on_conditions() {
    let older = OlderLog::default();
    let appended = std::sync::Arc::clone(&older.appended);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(arf_proto::v1::audit_log_server::AuditLogServer::new(older))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = AuditClient::connect(&addr, Some("t".repeat(64))).unwrap();
    let quiet = arf_audit_client::Quiet { incident_id: "inc-1".into(), writer: "governor".into(), after_seq: 0 };
    let error = client.append_if_quiet(Entry::new("inc-1", RecordKind::ExecutionStarted, json!({})), quiet).await.unwrap_err();
    assert!(matches!(&error, AuditError::Refused(why) if why.contains("older than this client")), "{error}");
    assert_eq!(appended.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was appended without its condition");
    let fenced = client.clone().fenced("agent-1", "i");
    let error = fenced.append_one("inc-1", RecordKind::Signal, json!({})).await.unwrap_err();
    assert!(matches!(&error, AuditError::Refused(why) if why.contains("older than this client")), "{error}");
    assert_eq!(appended.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was appended without its lease checked");
    client.append_one("inc-1", RecordKind::Signal, json!({})).await.unwrap();
    assert_eq!(appended.load(std::sync::atomic::Ordering::SeqCst), 1, "a plain append still goes through");
}

/// AppendIf needs a condition; a condition sent with Append, as clients older
/// than AppendIf send it, is honoured, never ignored.
#[tokio::test]
async fn append_if_needs_a_condition_and_append_honours_one() {
    let log = start().await;
    let mut raw = arf_proto::v1::audit_log_client::AuditLogClient::connect(format!("http://{}", log.addr)).await.unwrap();
    let entry = || arf_proto::v1::AppendEntry { incident_id: "inc-1".into(), kind: "signal".into(), payload_json: "{}".into() };
    let request = |quiet| arf_proto::server::with_bearer(tonic::Request::new(arf_proto::v1::AppendRequest { entries: vec![entry()], fence: None, quiet }), &log.agent_token);
    let status = raw.append_if(request(None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message());
    // The agent is silent in the incident since record 0, so this is taken...
    let silent = Some(arf_proto::v1::Quiet { incident_id: "inc-1".into(), writer: "agent".into(), after_seq: 0 });
    assert_eq!(raw.append_if(request(silent.clone())).await.unwrap().into_inner().records.len(), 1);
    // ...and no longer holds, by AppendIf or by Append.
    assert_eq!(raw.append_if(request(silent.clone())).await.unwrap_err().code(), tonic::Code::Aborted);
    assert_eq!(raw.append(request(silent)).await.unwrap_err().code(), tonic::Code::Aborted);
    let mut fenced = request(None);
    fenced.get_mut().fence = Some(arf_proto::v1::Fence { member: "agent-1".into(), incarnation: "i".into(), keys: Vec::new() });
    let status = raw.append(fenced).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "a lease this log cannot check is refused, not ignored: {}", status.message());
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    assert_eq!(client.head().await.unwrap().0, 1, "only the append whose condition held is in the log");
}

/// A byte flipped in the log's file while it runs is found by the next read of
/// its record; from then on the log takes nothing more, and its health says
/// NOT_SERVING (for the service and the process), so probes and `arf status` see it.
#[tokio::test]
async fn damage_found_while_serving_stops_the_log_and_its_health_says_so() {
    let log = start().await;
    let client = AuditClient::connect(&log.addr, Some(log.agent_token.clone())).unwrap();
    for word in ["alpha", "bravo", "charlie"] {
        client.append_one("inc-1", RecordKind::Signal, json!({"word": word})).await.unwrap();
    }
    let file = log._dir.path().join("audit").join(arf_audit::store::LOG_FILE);
    let bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(5).position(|w| w == b"bravo").unwrap();
    let mut damaged = bytes.clone();
    damaged[at] = b'B';
    std::fs::write(&file, &damaged).unwrap();

    let error = client.get(2).await.unwrap_err();
    assert!(error.to_string().contains("record 2"), "{error}");
    let refused = client.append_one("inc-1", RecordKind::Signal, json!({"word": "delta"})).await.unwrap_err();
    assert!(refused.to_string().contains("no longer reads as it was verified"), "{refused}");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", log.addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |service: &str| tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let process = health.check(status("")).await.unwrap().into_inner().status;
        let service = health.check(status("arf.v1.AuditLog")).await.unwrap().into_inner().status;
        if process == not_serving && service == not_serving {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still {process}, {service}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.head().await.unwrap().0, 3, "nothing was taken after the damage was found");
}
