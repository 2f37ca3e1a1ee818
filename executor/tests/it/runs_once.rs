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
