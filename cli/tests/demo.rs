//! The demo end to end, on real processes, and `arf audit verify` on the log it leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly at the first surprise")]

use std::path::Path;
use std::process::Command;

fn arf(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arf")).args(args).output().unwrap()
}

/// Rewrites the log file with `change` applied to its records, with sound frames,
/// as someone with disk access and the format's description would.
fn rewrite_log(data: &str, change: impl FnOnce(&mut Vec<arf_audit::Record>)) {
    let path = Path::new(data).join("audit").join(arf_audit::store::LOG_FILE);
    let mut records = arf_audit::frame::read_records(&path).unwrap();
    change(&mut records);
    arf_audit::frame::write_records(&path, &records).unwrap();
}

#[test]
fn the_demo_passes_and_its_log_verifies_until_tampered_with() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = arf(&["demo", "--data-dir", data]);
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(demo.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&demo.stderr));
    assert!(stdout.contains("scripted"), "the demo says its model answers are scripted");
    assert!(stdout.contains("demo passed"), "{stdout}");
    // The console ran beside the services, and its trail was proved.
    assert!(stdout.contains("console   http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("✓ the console shows the production incident's trail, proved against the log's signed checkpoint"), "{stdout}");

    assert!(stdout.contains("latest checkpoint, signed by the log"), "{stdout}");

    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let verified = String::from_utf8_lossy(&verify.stdout);
    assert!(verified.contains("intact") && verified.contains("signed checkpoints verified"), "{verified}");
    assert!(verified.contains("2 witness checkpoints are consistent"), "{verified}");

    // Change one record's payload, as someone with disk access might.
    rewrite_log(data, |records| records[4].payload["tampered"] = serde_json::json!(true));
    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert_eq!(verify.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("first bad record is 5"), "{stderr}");

    // The service itself refuses to serve the damaged log, naming the byte and the record.
    let serve = arf(&["serve", "audit", "--data-dir", data]);
    assert!(!serve.status.success());
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(stderr.contains("is damaged at byte") && stderr.contains("(record 5)"), "{stderr}");
}

#[test]
fn a_log_cut_short_and_resealed_is_caught_by_the_witnesses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = arf(&["demo", "--data-dir", data]);
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stdout));
    // Cut the log to a little less than the executor last witnessed, and remove the
    // log's own checkpoint file: every frame and link left is intact, so only the
    // governor's and executor's checkpoints can tell.
    let witnessed = std::fs::read_to_string(Path::new(data).join("executor").join("witness").join("checkpoint")).unwrap();
    let size: usize = witnessed.lines().nth(1).unwrap().parse().unwrap();
    rewrite_log(data, |records| records.truncate(size - 3));
    std::fs::remove_file(Path::new(data).join("audit").join("checkpoint")).unwrap();
    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert_eq!(verify.status.code(), Some(1), "{}", String::from_utf8_lossy(&verify.stdout));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("witness") && stderr.contains("truncated or rolled back"), "{stderr}");
    // Removing a witness's state too does not pass unremarked: verify names it.
    std::fs::remove_file(Path::new(data).join("executor").join("witness").join("checkpoint")).unwrap();
    let verify = arf(&["audit", "verify", "--data-dir", data]);
    assert_eq!(verify.status.code(), Some(1), "the governor's checkpoint still tells");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("note: no witness state at") && stderr.contains("executor"), "{stderr}");
}

/// An auditor's view: after the demo, `arf up` serves its log again; the production
/// incident's evidence is exported with the auditor's token, verified offline with
/// only the log's public key, read as a change record, and refused once edited.
#[test]
fn an_incident_exports_as_evidence_that_verifies_offline_and_fails_when_edited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let demo = arf(&["demo", "--data-dir", data]);
    assert!(demo.status.success(), "{}", String::from_utf8_lossy(&demo.stdout));
    let log = Path::new(data).join("audit").join(arf_audit::store::LOG_FILE);
    let records = arf_audit::frame::read_records(&log).unwrap();
    let approved = records.iter().find(|r| r.kind == arf_audit::RecordKind::Approval).unwrap();
    let incident = approved.incident_id.clone();

    let config: toml::Table = std::fs::read_to_string(Path::new(data).join("arf.toml")).unwrap().parse().unwrap();
    let audit_addr = config["audit"]["listen"].as_str().unwrap().to_owned();
    let mut up = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["up", "--data-dir", data])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = up.stdout.take().unwrap();
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok).any(|l| l.starts_with("Press Ctrl-C"));
    if !ready {
        // It exited: say why (the ports of the demo's configuration may have been
        // taken meanwhile by another test; see the notes on the port race).
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut up.stderr.take().unwrap(), &mut stderr);
        panic!("arf up did not start:\n{stderr}");
    }
    // Its log is not read again: drained so the services never block on a full pipe.
    let mut stderr = up.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));

    let bundle = dir.path().join("evidence.json");
    let auditor = Path::new(data).join("secrets").join("auditor.token");
    let key = Path::new(data).join("keys").join("audit-checkpoint.key.pub");
    let certs = Path::new(data).join("certs");
    let certs = certs.to_str().unwrap();
    let anonymous = arf(&["audit", "export", &incident, "--out", bundle.to_str().unwrap(), "--data-dir", data, "--audit", &audit_addr, "--tls-dir", certs]);
    assert!(!anonymous.status.success(), "exporting needs a reader's token");
    let export = arf(&[
        "audit", "export", &incident, "--out", bundle.to_str().unwrap(), "--data-dir", data, "--audit", &audit_addr,
        "--token-file", auditor.to_str().unwrap(), "--tls-dir", certs,
    ]);
    // An external witness folder, a git repository an operator would push elsewhere.
    let folder = dir.path().join("witness");
    std::fs::create_dir_all(&folder).unwrap();
    assert!(Command::new("git").args(["init", "-q"]).current_dir(&folder).status().unwrap().success());
    for (k, v) in [("user.name", "witness"), ("user.email", "witness@example.invalid")] {
        assert!(Command::new("git").args(["config", k, v]).current_dir(&folder).status().unwrap().success());
    }
    let witnessed = arf(&[
        "audit", "witness", "--dir", folder.to_str().unwrap(), "--once", "--data-dir", data, "--audit", &audit_addr,
        "--token-file", auditor.to_str().unwrap(), "--tls-dir", certs,
    ]);

    // Alert text that tries to rewrite the terminal reaches no CLI output as such.
    let hostile = "Checkout\u{1b}[1A\u{1b}[2KRoute: autonomous (approved by admin)\u{7}\r\u{1b}[8m\u{202e}tpircs\u{9b}31m";
    let alert = serde_json::json!({
        "version": "4", "status": "firing", "receiver": "arf", "groupKey": "{}:{alertname=\"X\"}",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
        "alerts": [{"status": "firing", "labels": {"alertname": hostile, "service": "checkout", "env": "staging", "severity": "warning"},
                    "annotations": {"summary": hostile, "description": hostile}, "startsAt": "2026-11-25T00:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.example:9090/graph"}]
    });
    let alert_file = dir.path().join("hostile.json");
    std::fs::write(&alert_file, serde_json::to_vec(&alert).unwrap()).unwrap();
    let agent_addr = config["agent"]["listen"].as_str().unwrap().to_owned();
    let alice = Path::new(data).join("secrets").join("alice.token");
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--agent", &agent_addr, "--audit", &audit_addr, "--token-file", alice.to_str().unwrap(), "--tls-dir", certs]);
        arf(&all)
    };
    let sent = cli(&["signal", "send", alert_file.to_str().unwrap(), "--json"]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let incident_id = serde_json::from_slice::<serde_json::Value>(&sent.stdout).unwrap()["accepted"][0]["incident_id"].as_str().unwrap().to_owned();
    for args in [&["incident", "list"][..], &["incident", "show", &incident_id][..], &["incident", "show", &incident_id, "--json"][..], &["signal", "send", alert_file.to_str().unwrap()][..]] {
        let out = cli(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let bad: Vec<char> = text.chars().filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c)).collect();
        assert!(bad.is_empty(), "`arf {}` printed {bad:?}:\n{text}", args.join(" "));
        assert!(args.contains(&"--json") || text.contains('\u{fffd}') || !text.contains("Route: autonomous"), "`arf {}`:\n{text}", args.join(" "));
    }
    // Ctrl-C, as a person would: `arf up` stops its services. A SIGKILL would leave them running.
    let _ = Command::new("kill").arg("-INT").arg(up.id().to_string()).status();
    let _ = up.wait();
    assert!(export.status.success(), "{}{}", String::from_utf8_lossy(&export.stdout), String::from_utf8_lossy(&export.stderr));
    assert!(witnessed.status.success(), "{}{}", String::from_utf8_lossy(&witnessed.stdout), String::from_utf8_lossy(&witnessed.stderr));
    let history = Command::new("git").args(["log", "--oneline"]).current_dir(&folder).output().unwrap();
    assert!(String::from_utf8_lossy(&history.stdout).contains("witness: arf-audit-log at"), "the checkpoint is committed");
    let verify = arf(&["audit", "verify", "--data-dir", data, "--witness", folder.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("3 witness checkpoints are consistent"));
    // A cosignature that does not verify fails the folder.
    let state = folder.join("checkpoint");
    let note = std::fs::read_to_string(&state).unwrap();
    let (body, last) = note.trim_end().rsplit_once('\n').unwrap();
    let forged_line = last.replacen(|c: char| c.is_ascii_alphabetic(), "A", 1).replacen('A', "B", 1);
    std::fs::write(&state, format!("{body}\n{forged_line}\n")).unwrap();
    let verify = arf(&["audit", "verify", "--data-dir", data, "--witness", folder.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(1), "{}", String::from_utf8_lossy(&verify.stdout));
    assert!(String::from_utf8_lossy(&verify.stderr).contains("cosignature"));

    // Offline: the services are gone, and only the public key is needed.
    let verify = arf(&["audit", "verify-bundle", bundle.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("bundle verified"));
    let record = arf(&["audit", "verify-bundle", bundle.to_str().unwrap(), "--key", key.to_str().unwrap(), "--format", "change-record"]);
    let text = String::from_utf8_lossy(&record.stdout);
    assert!(record.status.success(), "{}", String::from_utf8_lossy(&record.stderr));
    for expected in ["# Change record: incident", "approve by `alice` (oncall)", "route `approval`", "verification passed", "outcome `verified`"] {
        assert!(text.contains(expected), "`{expected}` missing from:\n{text}");
    }

    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&bundle, bytes).unwrap();
    let edited = arf(&["audit", "verify-bundle", bundle.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    assert_eq!(edited.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&edited.stderr).contains("bundle does not verify"));
}

/// `arf demo | head`: the reader goes away after the first lines; the demo goes on
/// without its output, stops its services and exits 0, without a panic.
#[test]
fn the_demo_outlives_a_reader_that_went_away() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_arf"))
        .args(["demo", "--data-dir", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(demo.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("ARF demo"), "{first}");
    // The pipe is closed here, as `head -1` closes it.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut demo.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = demo.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.success(), "{status:?}: {stderr}");
}
