//! ARF on a real PostgreSQL server, end to end with every process real (issue 16):
//! `arf db check` refuses a database without the schema and `arf db migrate`
//! applies it; two audit front-ends serve one log in it (the agent and governor
//! append through one, the executors through the other) and two executor replicas
//! share their executions in it; the governor knows both executors, the first is
//! stopped, and an alert still becomes one verified restart, through the second
//! (whose first audit address answers nothing, so it fails over to the other);
//! `arf audit verify --postgres` checks the chain, the signed checkpoints and the
//! governor's and executor's witnesses; and a record rewritten in the database
//! makes verify name it and a front-end refuse to start.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

mod support;

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arf_pg::testing::TestServer;

fn arf(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arf")).args(args).env_remove("ARF_CONFIG").output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Runs `arf serve ROLE --config CONFIG` beside the plane's own processes and waits
/// until it serves at `addr`.
async fn serve(plane: &support::Plane, role: &str, config: &std::path::Path, addr: std::net::SocketAddr) -> tokio::process::Child {
    let log = std::fs::File::create(plane.dir.path().join("logs").join(format!("{role}-{}.log", addr.port()))).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["serve", role, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !support::serving_tls(addr, &plane.dial(role)).await {
        assert!(Instant::now() < deadline, "the second {role} did not serve");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

#[tokio::test]
async fn replicas_keep_one_log_and_run_a_decision_once_in_postgres() {
    let server = TestServer::start().await.unwrap();
    let database = server.database().await.unwrap();
    let url = database.url.as_str();

    let (code, out) = arf(&["db", "check", "--url", url]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("arf db migrate"), "{out}");
    let (code, out) = arf(&["db", "migrate", "--url", url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied  0001 audit_log") && out.contains("commits durable"), "{out}");
    let (code, out) = arf(&["db", "migrate", "--url", url]);
    assert!(code == 0 && out.contains("already applied"), "{out}");

    let (target, restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&target).await;
    let mut root: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    let postgres: toml::Table = toml::from_str(&format!("url = \"{url}\"")).unwrap();
    root["audit"].as_table_mut().unwrap().insert("postgres".into(), toml::Value::Table(postgres.clone()));
    // The second front-end: the same section on another port; the executor appends through it.
    let second = support::free_port();
    let executor_b = support::free_port();
    let executor = root["executor"].as_table_mut().unwrap();
    executor.insert("audit_addr".into(), second.to_string().into());
    executor.insert("postgres".into(), toml::Value::Table(postgres.clone()));
    executor.insert("replica".into(), "executor-a".into());
    executor.insert("lease_secs".into(), 4.into());
    let both = format!("{},{executor_b}", plane.addr("executor"));
    root["governor"].as_table_mut().unwrap().insert("executor_addr".into(), both.into());
    std::fs::write(&plane.config, toml::to_string(&root).unwrap()).unwrap();
    let mut second_root = root.clone();
    second_root["audit"].as_table_mut().unwrap().insert("listen".into(), second.to_string().into());
    let second_config = plane.dir.path().join("arf-second-audit.toml");
    std::fs::write(&second_config, toml::to_string(&second_root).unwrap()).unwrap();
    let executor = root["executor"].as_table_mut().unwrap();
    executor.insert("listen".into(), executor_b.to_string().into());
    executor.insert("replica".into(), "executor-b".into());
    executor.insert("data_dir".into(), plane.dir.path().join("executor-b").display().to_string().into());
    // Its first audit address answers nothing: its calls move on to the second front-end.
    executor.insert("audit_addr".into(), format!("{},{second}", support::free_port()).into());
    let executor_b_config = plane.dir.path().join("arf-executor-b.toml");
    std::fs::write(&executor_b_config, toml::to_string(&root).unwrap()).unwrap();
    let (code, out) = arf(&["db", "check", "--config", plane.config.to_str().unwrap()]);
    assert_eq!(code, 0, "the deployment's database: {out}");

    plane.start("audit", None).await;
    let mut front_end = serve(&plane, "audit", &second_config, second).await;
    for role in ["governor", "executor", "agent"] {
        plane.start(role, None).await;
    }
    let mut replica_b = serve(&plane, "executor", &executor_b_config, executor_b).await;
    // The governor's first executor is gone: the decision goes to the second.
    plane.stop("executor").await;

    let incident = plane.fire().await;
    let trail = plane
        .trail_until(&incident, Duration::from_secs(60), "the outcome", |t| t.iter().any(|r| r.kind == arf_audit::RecordKind::Outcome))
        .await;
    assert_eq!(restarts.load(Ordering::SeqCst), 1, "{}", support::summary(&trail));
    let writers: std::collections::BTreeSet<&str> = trail.iter().map(|r| r.writer.as_str()).collect();
    assert!(writers.contains("executor") && writers.contains("agent") && writers.contains("governor"), "{writers:?}");
    let client = database.connect().await.unwrap();
    let owners: Vec<String> = client.query("SELECT owner FROM executor_executions", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(owners, ["executor-b"], "the second replica ran it");

    // Everything in one chain in the database, checkpoints and witnesses included.
    for role in ["agent", "governor", "audit"] {
        plane.stop(role).await;
    }
    front_end.kill().await.unwrap();
    replica_b.kill().await.unwrap();
    let data_dir = plane.dir.path().to_str().unwrap();
    let (code, out) = arf(&["audit", "verify", "--postgres", url, "--data-dir", data_dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit chain intact") && out.contains("signed checkpoints verified") && out.contains("witness"), "{out}");
    assert!(std::fs::metadata(plane.dir.path().join("executor-b").join("witness").join("checkpoint")).is_ok(), "the executor witnessed the log");

    // A record rewritten by whoever administers the database.
    let seq = trail.iter().find(|r| r.kind == arf_audit::RecordKind::Decision).unwrap().seq as i64;
    client
        .batch_execute(&format!(
            "ALTER TABLE audit_records DISABLE TRIGGER USER;
             UPDATE audit_records SET body = convert_to(replace(convert_from(body, 'UTF8'), 'restart_service', 'rollback_deploy'), 'UTF8') WHERE seq = {seq};
             ALTER TABLE audit_records ENABLE TRIGGER USER;"
        ))
        .await
        .unwrap();
    let (code, out) = arf(&["audit", "verify", "--postgres", url, "--data-dir", data_dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("first bad record is {seq}:")), "{out}");
    plane.spawn("audit", None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !plane.log("audit").contains("damaged at record") {
        assert!(Instant::now() < deadline, "the front-end opened a rewritten log:\n{}", plane.log("audit"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!support::serving_tls(plane.addr("audit"), &plane.dial("audit")).await);
}

/// `arf up --store URL` runs a local cluster on PostgreSQL: the database migrated,
/// two processes of every role (audit front-ends, governors, executors, agents), each
/// serving; a signal sent through the CLI lands in the log in the database, which
/// `arf audit verify --postgres` checks; Ctrl-C stops every process.
#[test]
fn up_with_a_store_runs_replicas_on_postgres() {
    use std::io::{BufRead, BufReader};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let database = runtime.block_on(server.database()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = arf(&["init", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let base = support::free_port_base();
    // What `arf up` and its processes say on stderr, for the failure message.
    let stderr_path = dir.path().join("up.stderr");
    let mut up = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["up", "--port-base", &base.to_string(), "--store", &database.url, "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let up_pid = up.id();
    let mut names = Vec::new();
    let mut said = String::new();
    for line in BufReader::new(up.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
        if let [name, addr, "pid", _] = line.split_whitespace().collect::<Vec<_>>().as_slice() {
            let dial = support::client_dial(&dir.path().join("certs"), name.split('-').next().unwrap());
            assert!(runtime.block_on(support::serving_tls(addr.parse().unwrap(), &dial)), "{name} on {addr}");
            names.push(name.to_string());
        }
    }
    let told = || {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    assert_eq!(names, ["audit-1", "audit-2", "governor-1", "governor-2", "executor-1", "executor-2", "agent-1", "agent-2"], "stdout:\n{said}\nstderr (last lines):\n{}", told());
    assert!(said.contains("database: applied migration 0001"), "{said}");

    let token = std::fs::read_to_string(dir.path().join("secrets").join("alice.token")).unwrap();
    let send = || {
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/samples/alertmanager/alertmanager-bot-firing.json");
        let sent = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
            .args(["signal", "send", sample])
            .env("ARF_CONFIG", dir.path().join("arf.toml"))
            .env("ARF_TOKEN", token.trim())
            .output()
            .unwrap();
        (sent.status.success(), format!("{}{}", String::from_utf8_lossy(&sent.stdout), String::from_utf8_lossy(&sent.stderr)))
    };
    let (sent, out) = send();
    assert!(sent, "{out}");

    // An agent replica whose lease lapsed while it believes it holds it (paused
    // past it, say) has the log refuse its append: the signal is not accepted. It
    // then finds its lease gone, exits 75, and `arf up` starts it again.
    let client = runtime.block_on(database.connect()).unwrap();
    runtime.block_on(arf_pg::testing::lapse_behind_its_back(&client, "agent_members", "agent-1")).unwrap();
    // Refused by the log, which checks its lease; or, when a peer has already ended
    // its key-lock sessions (its lease lapsed an hour ago), by the agents' database.
    let (sent, out) = send();
    assert!(
        !sent && (out.contains("this replica's lease does not hold") || out.contains("the agents' database")),
        "an agent past its lease wrote to the log: {out}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (sent, out) = send();
        if sent {
            break;
        }
        assert!(Instant::now() < deadline, "the agent never took signals again: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let joined: String = runtime.block_on(client.query_one("SELECT lease_until > now() FROM agent_members WHERE name = 'agent-1'", &[])).unwrap().get::<_, bool>(0).to_string();
    assert_eq!(joined, "true", "agent-1 was started again and rejoined");
    let (code, out) = arf(&["audit", "verify", "--postgres", &database.url, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let records: u64 = out.split("intact: ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(records >= 2, "the signal and its incident are in the database's log: {out}");

    std::process::Command::new("kill").arg("-INT").arg(up_pid.to_string()).status().unwrap();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(up.wait());
    });
    let status = exit.recv_timeout(Duration::from_secs(30)).expect("`arf up` stops within 30 s").unwrap();
    assert!(status.success(), "{status:?}");
}

/// `arf approve DECISION --governor ADDR` as alice.
fn approve_at(plane: &support::Plane, governor: &str, decision: &str) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["approve", decision, "--governor", governor])
        .env("ARF_CONFIG", &plane.config)
        .env("ARF_TOKEN", plane.token("alice"))
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Two governor replicas on one log in PostgreSQL: the one holding the leader's
/// lease decides and the other refuses every call as unavailable (so clients go on
/// to the next address); when the leader is SIGKILLed, the standby takes the lease
/// once it lapsed, rebuilds the decisions from the log, takes the approval of the
/// decision the dead leader made, and it runs once; the agent, given both
/// addresses, has its next proposal decided by the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_governor_takes_over_the_lead_and_the_pending_approvals() {
    let server = TestServer::start().await.unwrap();
    let database = server.database().await.unwrap();
    let url = database.url.as_str();
    let (code, out) = arf(&["db", "migrate", "--url", url]);
    assert_eq!(code, 0, "{out}");

    let (target, restarts) = support::counting_target("127.0.0.1").await;
    let mut plane = support::Plane::prepare(&target).await;
    plane.add_worker("worker-production", "production", &target);
    let mut root: toml::Table = toml::from_str(&std::fs::read_to_string(&plane.config).unwrap()).unwrap();
    let postgres: toml::Table = toml::from_str(&format!("url = \"{url}\"")).unwrap();
    root["audit"].as_table_mut().unwrap().insert("postgres".into(), toml::Value::Table(postgres.clone()));
    let standby = support::free_port();
    let governor = root["governor"].as_table_mut().unwrap();
    governor.insert("postgres".into(), toml::Value::Table(postgres));
    governor.insert("replica".into(), "governor-a".into());
    // Renewed every 2 s: time to send an approval between two renewals.
    governor.insert("lease_secs".into(), 6.into());
    let both = format!("{},{standby}", plane.addr("governor"));
    root["agent"].as_table_mut().unwrap().insert("governor_addr".into(), both.into());
    std::fs::write(&plane.config, toml::to_string(&root).unwrap()).unwrap();
    let governor = root["governor"].as_table_mut().unwrap();
    // The standby's own copy of the policy bundle, to reload while it stands by.
    let standby_policies = plane.dir.path().join("governor-b-policies");
    std::fs::create_dir_all(&standby_policies).unwrap();
    for file in std::fs::read_dir(governor["policies_dir"].as_str().unwrap()).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "rego")) {
        std::fs::copy(&file, standby_policies.join(file.file_name().unwrap())).unwrap();
    }
    governor.insert("policies_dir".into(), standby_policies.display().to_string().into());
    governor.insert("listen".into(), standby.to_string().into());
    governor.insert("replica".into(), "governor-b".into());
    governor.insert("data_dir".into(), plane.dir.path().join("governor-b").display().to_string().into());
    let standby_config = plane.dir.path().join("arf-governor-b.toml");
    std::fs::write(&standby_config, toml::to_string(&root).unwrap()).unwrap();

    plane.start("audit", None).await;
    plane.start("governor", None).await;
    let mut replica_b = serve(&plane, "governor", &standby_config, standby).await;
    plane.start("executor", None).await;
    plane.start("agent", None).await;

    // A production alert: the leader's decision waits for a person.
    plane.fire_about("WorkerWedged", "production").await;
    let auditor = plane.auditor();
    let deadline = Instant::now() + Duration::from_secs(60);
    let decision = loop {
        let (head, _) = auditor.head().await.unwrap();
        let records: Vec<arf_audit::Record> = futures::StreamExt::collect::<Vec<_>>(auditor.stream_range(1, head + 1).await.unwrap()).await.into_iter().map(Result::unwrap).collect();
        if let Some(pending) = records.iter().find(|r| r.kind == arf_audit::RecordKind::Decision && r.payload["state"] == "pending") {
            break pending.payload["decision_id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no decision waited for approval:\n{}", support::summary(&records));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (approved, out) = approve_at(&plane, &standby.to_string(), &decision);
    assert!(!approved && out.contains("stands by"), "the standby took a call while the leader lives: {out}");

    // The standby reloads its bundle on SIGHUP though the log takes nothing from
    // it, and logs the bundle in force once it leads.
    std::fs::write(standby_policies.join("standby_added.rego"), "package arf.extra\n\nadded_on_the_standby := true\n").unwrap();
    let standby_log = plane.dir.path().join("logs").join(format!("governor-{}.log", standby.port()));
    std::process::Command::new("kill").args(["-HUP", &replica_b.id().unwrap().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&standby_log).unwrap().contains("policies reloaded on a standby") {
        assert!(Instant::now() < deadline, "the standby did not reload its bundle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A leader whose lease lapsed while it believes it holds it (paused past it,
    // say) writes nothing more: the log refuses its append of the approval, by
    // the database's clock, and the approval is not taken.
    let client = database.connect().await.unwrap();
    arf_pg::testing::lapse_behind_its_back(&client, "governor_members", "leader").await.unwrap();
    let (approved, out) = approve_at(&plane, &plane.addr("governor").to_string(), &decision);
    assert!(!approved && out.contains("this replica's lease does not hold"), "a leader past its lease wrote to the log: {out}");

    // The leader dies; the standby leads once the lease lapsed.
    plane.stop("governor").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Given both addresses, the CLI finds the one that leads.
    let both = format!("{},{standby}", plane.addr("governor"));
    loop {
        let (approved, out) = approve_at(&plane, &both, &decision);
        if approved {
            break;
        }
        assert!(Instant::now() < deadline, "the standby never took the approval: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let leader: String = client.query_one("SELECT incarnation FROM governor_members WHERE name = 'leader'", &[]).await.unwrap().get(0);
    assert!(leader.starts_with("governor-b/"), "{leader}");
    let (head, _) = auditor.head().await.unwrap();
    let records: Vec<arf_audit::Record> = futures::StreamExt::collect::<Vec<_>>(auditor.stream_range(1, head + 1).await.unwrap()).await.into_iter().map(Result::unwrap).collect();
    let in_force = records.iter().find(|r| r.payload["event"] == "policies_reloaded" && r.payload["identity"] == "governor-b, taking the lead");
    assert!(
        in_force.is_some_and(|r| r.payload["files"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().ends_with("standby_added.rego"))),
        "the new leader did not log the bundle it reloaded while standing by: {in_force:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while restarts.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "the approved decision never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The agent's next proposal goes on to the governor that leads now.
    let incident = plane.fire().await;
    let trail = plane.trail_until(&incident, Duration::from_secs(60), "the outcome", |t| t.iter().any(|r| r.kind == arf_audit::RecordKind::Outcome)).await;
    assert!(trail.iter().any(|r| r.kind == arf_audit::RecordKind::Outcome && r.payload["outcome"] == "verified"), "{}", support::summary(&trail));
    assert_eq!(restarts.load(Ordering::SeqCst), 2, "each decision ran once");
    // Given several agent addresses, the CLI calls one that answers.
    let agents = format!("{},{}", support::free_port(), plane.addr("agent"));
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["incident", "show", &incident, "--json", "--agent", &agents])
        .env("ARF_CONFIG", &plane.config)
        .env("ARF_TOKEN", plane.token("alice"))
        .output()
        .unwrap();
    assert!(shown.status.success() && String::from_utf8_lossy(&shown.stdout).contains(&incident), "{}", String::from_utf8_lossy(&shown.stderr));
    replica_b.kill().await.unwrap();
}
