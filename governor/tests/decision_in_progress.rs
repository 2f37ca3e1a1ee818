//! A decision is in the log a moment before the governor holds it (a guard rail's
//! trip is logged in between). An id the log already shows is never answered
//! NotFound: a look-up waits for the decision being made.
//!
//! In a file of its own: the pause it sets is taken by the next decision made in
//! this process, whichever test makes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails loudly on anything unexpected")]

mod common;

use std::time::{Duration, Instant};

use arf_audit_client::RecordKind;
use common::{Harness, Setup, proposal};

#[tokio::test]
async fn a_decision_in_the_log_is_found_by_its_id_while_it_is_being_made() {
    let h = Harness::start(Setup::default()).await;
    arf_core::crash::pause_next("governor.decision_logged", Duration::from_secs(2));
    let (decided, looked_up) = tokio::join!(h.evaluate(proposal("inc-in-progress", "restart_service", "web-prod", 0.9)), async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let decision_id = loop {
            let made = h.records("inc-in-progress", RecordKind::Decision).await;
            if let Some(id) = made.iter().find(|r| r.payload.get("policy_input").is_some()).and_then(|r| r.payload["decision_id"].as_str()) {
                break id.to_owned();
            }
            assert!(Instant::now() < deadline, "the decision never reached the log");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Inside the pause: logged, not yet held.
        (decision_id.clone(), h.get("alice", &decision_id).await)
    });
    let decided = decided.unwrap();
    let (logged_id, looked_up) = looked_up;
    assert_eq!(logged_id, decided.decision_id);
    let looked_up = looked_up.expect("a decision the log shows is found by its id, not answered NotFound");
    assert_eq!((looked_up.decision_id.as_str(), looked_up.state.as_str()), (decided.decision_id.as_str(), "pending"));
}
