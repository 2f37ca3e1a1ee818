//! Execution is idempotent per decision id: a repeated decision, sent again, sent
//! twice at once, or sent after a restart, runs once and answers `replayed`.

use serde_json::json;

use crate::harness::{Harness, Setup, append_line_pathway, path_str, target};

fn lines(h: &Harness) -> Vec<String> {
    std::fs::read_to_string(h.dir.join("ran")).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let append_line = append_line_pathway();
    let targets = [("web".to_owned(), target(&[("file", path_str(&ran))]))].into();
    let mut h = Harness::start(dir.path(), Setup::new(vec![append_line], targets)).await;

    // Sent twice, one after the other.
    let first_body = h.body("append_line", "web", json!({}));
    let first_signed = h.decide(&first_body).await;
    let first = h.execute(first_signed.clone()).await.unwrap();
    assert_eq!((first.outcome.as_str(), first.replayed), ("verified", false), "{}", first.detail);
    let again = h.execute(first_signed.clone()).await.unwrap();
    assert_eq!((again.outcome.as_str(), again.replayed), ("verified", true));
    assert_eq!(again.detail, first.detail);
    assert_eq!(again.verification, first.verification);
    assert_eq!(lines(&h), vec![first_body.decision_id.clone()]);

    // Sent twice at once: exactly one of them runs it.
    let second_body = h.body("append_line", "web", json!({}));
    let second_signed = h.decide(&second_body).await;
    let (a, b) = tokio::join!(h.execute(second_signed.clone()), h.execute(second_signed.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!([a.replayed, b.replayed].iter().filter(|r| !**r).count(), 1, "{a:?} {b:?}");
    let replayed = if a.replayed { &a } else { &b };
    assert!(matches!(replayed.outcome.as_str(), "running" | "verified"), "{replayed:?}");
    assert_eq!(lines(&h), vec![first_body.decision_id.clone(), second_body.decision_id.clone()]);

    // The state outlives the process: after a restart, a retry still does not run it.
    h.restart_executor().await;
    for signed in [first_signed, second_signed] {
        let execution = h.execute(signed).await.unwrap();
        assert_eq!((execution.outcome.as_str(), execution.replayed), ("verified", true));
    }
    assert_eq!(lines(&h).len(), 2);
    let stored = h.get_execution(&first_body.decision_id).await.unwrap();
    assert_eq!((stored.outcome.as_str(), stored.replayed, stored.pathway.as_str()), ("verified", false, "append_line"));

    // And the log holds one start per decision.
    for body in [&first_body, &second_body] {
        let kinds = h.kinds(&body.incident_id).await;
        assert_eq!(kinds.iter().filter(|k| **k == "execution_started").count(), 1, "{kinds:?}");
    }
}

/// One action of one incident runs once, whatever decision asks for it: a second
/// decision for the same pathway, target and parameters is refused while the first
/// has not failed, even sent at the same time; once it rolled back, a new one may run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_action_under_a_new_decision_id_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let targets = [("web".to_owned(), target(&[("file", path_str(&ran))]))].into();
    let h = Harness::start(dir.path(), Setup::new(vec![append_line_pathway()], targets)).await;

    let first = h.body("append_line", "web", json!({}));
    let again = |body: &arf_core::decision::DecisionBody| {
        let mut copy = body.clone();
        copy.decision_id = arf_core::canonical::random_id("dec");
        copy
    };
    let (second, third) = (again(&first), again(&first));
    let (a, b) = (h.decide(&first).await, h.decide(&second).await);
    let (a, b) = tokio::join!(h.execute(a), h.execute(b));
    let results = [a, b];
    let ran_ok = results.iter().filter(|r| r.as_ref().is_ok_and(|e| e.outcome == "verified")).count();
    let refused: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!((ran_ok, refused.len()), (1, 1), "{results:?}");
    assert_eq!(refused[0].code(), tonic::Code::FailedPrecondition);
    assert!(refused[0].message().contains("already started under decision"), "{}", refused[0].message());
    // After it verified, a third decision for it is refused too.
    let third = h.decide(&third).await;
    assert!(h.execute(third).await.unwrap_err().message().contains("already started"));
    assert_eq!(lines(&h).len(), 1, "the action ran once");
    let started = h.kinds(&first.incident_id).await.iter().filter(|k| **k == "execution_started").count();
    assert_eq!(started, 1);
}
