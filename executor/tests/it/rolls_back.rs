//! After the action: verification passes, or the rollback runs and is checked; each
//! course leaves its records in the log, written before what they announce.

use serde_json::json;

use arf_audit::RecordKind;
use arf_core::catalog::{Pathway, Probe};

use crate::harness::{Harness, Setup, command, command_probe, path_str, pathway, target, verification};

const APPLIED: &str = "{{target.dir}}/{{decision.id}}.applied";
const ROLLED_BACK: &str = "{{target.dir}}/{{decision.id}}.rolled_back";

struct Case {
    pathway: Pathway,
    outcome: &'static str,
    kinds: &'static [&'static str],
    /// A fragment of the execution's detail.
    detail: &'static str,
}

fn applied_probe() -> Probe {
    command_probe("applied", &["test", "-e", APPLIED])
}

fn failing_probe() -> Probe {
    command_probe("healthy", &["sh", "-c", "echo unhealthy; exit 1"])
}

fn cases() -> Vec<Case> {
    let touch = |path: &str| command(&["touch", path]);
    let mut cases = vec![];

    cases.push(Case {
        pathway: pathway("works", vec![touch(APPLIED)], vec![applied_probe()], vec![touch(ROLLED_BACK)]),
        outcome: "verified",
        kinds: &["decision", "execution_started", "execution_finished", "verification", "outcome"],
        detail: "verification passed",
    });

    let mut p = pathway("verification_fails", vec![touch(APPLIED)], vec![failing_probe()], vec![touch(ROLLED_BACK)]);
    p.rollback_verify = Some(verification(vec![command_probe("rolled_back", &["test", "-e", ROLLED_BACK])]));
    cases.push(Case {
        pathway: p,
        outcome: "rolled_back",
        kinds: &[
            "decision",
            "execution_started",
            "execution_finished",
            "verification",
            "rollback",
            "execution_finished",
            "verification",
            "outcome",
        ],
        detail: "rollback verification passed",
    });

    cases.push(Case {
        pathway: pathway(
            "action_fails",
            vec![command(&["sh", "-c", "echo boom >&2; exit 2"]), touch(APPLIED)],
            vec![applied_probe()],
            vec![touch(ROLLED_BACK)],
        ),
        outcome: "rolled_back",
        kinds: &["decision", "execution_started", "execution_finished", "rollback", "execution_finished", "outcome"],
        detail: "action failed: step 0 failed: `sh` exited with status 2: boom",
    });

    cases.push(Case {
        pathway: pathway("rollback_fails", vec![touch(APPLIED)], vec![failing_probe()], vec![command(&["false"])]),
        outcome: "rollback_failed",
        kinds: &[
            "decision",
            "execution_started",
            "execution_finished",
            "verification",
            "rollback",
            "execution_finished",
            "outcome",
        ],
        detail: "rollback failed",
    });

    let mut p =
        pathway("rollback_verification_fails", vec![touch(APPLIED)], vec![failing_probe()], vec![command(&["true"])]);
    p.rollback_verify = Some(verification(vec![failing_probe()]));
    cases.push(Case {
        pathway: p,
        outcome: "rollback_failed",
        kinds: &[
            "decision",
            "execution_started",
            "execution_finished",
            "verification",
            "rollback",
            "execution_finished",
            "verification",
            "outcome",
        ],
        detail: "its verification failed",
    });

    cases.push(Case {
        pathway: pathway("irreversible_fails", vec![touch(APPLIED)], vec![failing_probe()], vec![]),
        outcome: "failed",
        kinds: &["decision", "execution_started", "execution_finished", "verification", "outcome"],
        detail: "irreversible",
    });

    // One failed sample is tolerated when the pathway allows two: the probe fails
    // the first time it runs and passes after.
    let flaky = command_probe(
        "flaky",
        &["sh", "-c", "test -e \"$1\" || { touch \"$1\"; exit 1; }", "sh", "{{target.dir}}/{{decision.id}}.probed"],
    );
    let mut p = pathway("tolerates_one_failure", vec![touch(APPLIED)], vec![flaky], vec![touch(ROLLED_BACK)]);
    p.verify.window_ms = 20;
    p.verify.interval_ms = 10;
    p.verify.max_failures = 2;
    cases.push(Case {
        pathway: p,
        outcome: "verified",
        kinds: &["decision", "execution_started", "execution_finished", "verification", "outcome"],
        detail: "3 sample(s), 1 failed",
    });
    // Under the limit, but failing at the end: the target is left unhealthy, so
    // it is rolled back. The probe passes twice, then fails.
    let fading = command_probe(
        "fading",
        &["sh", "-c", "n=$(cat \"$1\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$1\"; test $n -lt 3", "sh", "{{target.dir}}/{{decision.id}}.samples"],
    );
    let mut p = pathway("fails_at_the_end", vec![touch(APPLIED)], vec![fading], vec![touch(ROLLED_BACK)]);
    p.verify.window_ms = 20;
    p.verify.interval_ms = 10;
    p.verify.max_failures = 2;
    cases.push(Case {
        pathway: p,
        outcome: "rolled_back",
        kinds: &["decision", "execution_started", "execution_finished", "verification", "rollback", "execution_finished", "outcome"],
        detail: "but the last one failed, so the target was left unhealthy",
    });
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_course_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let targets = [("web".to_owned(), target(&[("dir", path_str(dir.path()))]))].into();
    let h = Harness::start(dir.path(), Setup::new(cases.iter().map(|c| c.pathway.clone()).collect(), targets)).await;

    for case in &cases {
        let name = &case.pathway.name;
        let body = h.body(name, "web", json!({}));
        let execution = h.execute(h.decide(&body).await).await.unwrap();
        assert_eq!(execution.outcome, case.outcome, "{name}: {}", execution.detail);
        assert!(execution.detail.contains(case.detail), "{name}: {}", execution.detail);

        let trail = h.trail(&body.incident_id).await;
        let kinds: Vec<&str> = trail.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(kinds, case.kinds, "{name}");
        for record in &trail[1..] {
            assert_eq!(record.writer, "executor", "{name}");
            assert_eq!(record.payload["decision_id"], json!(body.decision_id), "{name}: {:?}", record.kind);
        }
        let outcome = trail.last().unwrap();
        assert_eq!(outcome.payload["outcome"], json!(case.outcome), "{name}");

        let rolled_back = trail.iter().any(|r| r.kind == RecordKind::Rollback);
        let rollback_ran = h.dir.join(format!("{}.rolled_back", body.decision_id)).exists();
        assert!(!rollback_ran || rolled_back, "{name}: a rollback ran without its `rollback` record");
        if case.outcome == "verified" || case.outcome == "failed" {
            assert!(!rollback_ran, "{name}: rolled back without cause");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_reports_its_probes() {
    let dir = tempfile::tempdir().unwrap();
    let p = pathway(
        "verification_fails",
        vec![command(&["touch", APPLIED])],
        vec![applied_probe(), failing_probe()],
        vec![command(&["true"])],
    );
    let targets = [("web".to_owned(), target(&[("dir", path_str(dir.path()))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![p], targets)).await;

    let body = h.body("verification_fails", "web", json!({}));
    let execution = h.execute(h.decide(&body).await).await.unwrap();
    assert_eq!(execution.outcome, "rolled_back");
    let probes: Vec<(&str, bool, &str)> =
        execution.verification.iter().map(|p| (p.probe.as_str(), p.passed, p.detail.as_str())).collect();
    assert_eq!(probes, vec![("applied", true, "exit status 0"), ("healthy", false, "exit status 1, expected 0")]);

    let trail = h.trail(&body.incident_id).await;
    let verification = trail.iter().find(|r| r.kind == RecordKind::Verification).unwrap();
    assert_eq!(verification.payload["passed"], json!(false));
    assert_eq!(verification.payload["probes"]["healthy"]["failed"], json!(1));
    let rollback = trail.iter().find(|r| r.kind == RecordKind::Rollback).unwrap();
    assert!(rollback.payload["reason"].as_str().unwrap().contains("probe `healthy`"), "{}", rollback.payload);
}

/// A failed rollback leaves the target needing a human. A decision the governor
/// issued before that failure was made without knowing it, so the executor does not
/// run it; one issued after (the governor knew, and a person approved) runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_issued_before_a_failed_rollback_on_its_target_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let touch = |path: &str| command(&["touch", path]);
    let stuck = pathway("stuck", vec![touch(APPLIED)], vec![failing_probe()], vec![command(&["false"])]);
    let fix = pathway("fix", vec![touch(APPLIED)], vec![command_probe("ok", &["true"])], vec![touch(ROLLED_BACK)]);
    let targets = [("web".to_owned(), target(&[("dir", path_str(dir.path()))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![stuck, fix], targets)).await;

    let early = h.body("fix", "web", json!({}));
    let failed = h.body("stuck", "web", json!({}));
    let execution = h.execute(h.decide(&failed).await).await.unwrap();
    assert_eq!(execution.outcome, "rollback_failed", "{}", execution.detail);

    let refused = h.execute(h.decide(&early).await).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{}", refused.message());
    assert!(refused.message().contains("before a rollback on target `web` failed"), "{}", refused.message());
    assert!(!h.dir.join(format!("{}.applied", early.decision_id)).exists(), "the stale decision ran");
    assert_eq!(h.kinds(&early.incident_id).await, ["decision"]);

    // Issued after the failure, with it known: it runs.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let later = h.body("fix", "web", json!({}));
    let execution = h.execute(h.decide(&later).await).await.unwrap();
    assert_eq!(execution.outcome, "verified", "{}", execution.detail);
}
