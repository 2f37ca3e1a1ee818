//! The governor's decisions: how they are made from a checked proposal, and the
//! rules of oversight (who may approve or reject, when, and when enough have).
//!
//! Everything here is pure, with time passed in.

use arf_core::decision::DecisionBody;
use arf_core::records::{ApprovalRecord, AuthorizedRecord, DecidedRecord, DecisionRecordKind, DecisionStateRecord, GovernanceEvent, Malformed};
use thiserror::Error;

use crate::identity::Caller;

pub use arf_core::decision::{Decision, State, action_key, action_key_prefix};


pub use arf_core::decision::{Approval, Verdict};


/// Why an approval or rejection was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OversightError {
    #[error("only people may approve or reject; `{identity}` has role `{role}`")]
    NotHuman { identity: String, role: String },
    #[error("decision `{decision_id}` is `{state}`, not pending")]
    NotPending { decision_id: String, state: String },
    #[error("decision `{decision_id}` expired at {expired_at}; ask the agent for a fresh decision")]
    Expired { decision_id: String, expired_at: String },
    #[error("`{identity}` asked for decision `{decision_id}` and cannot approve it; someone else must")]
    SelfApproval { identity: String, decision_id: String },
    #[error(
        "`{identity}` already approved decision `{decision_id}`; a second approval by the same person does not count"
    )]
    AlreadyApproved { identity: String, decision_id: String },
    #[error("role `{role}` may not approve decision `{decision_id}`; policy asks for {allowed}")]
    RoleNotAllowed { role: String, decision_id: String, allowed: String },
    #[error("a rejection needs a reason: say why the action must not run")]
    MissingReason,
    #[error("decision `{decision_id}` was made in shadow mode: nothing runs from it, so there is nothing to approve or reject; judge it with `arf shadow judge {decision_id}`")]
    Shadow { decision_id: String },
}

/// What an approval leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More approvals are needed.
    Waiting { given: u32, required: u32 },
    /// Enough: the decision may be authorized.
    Approved,
}

/// Only people approve or reject: processes never may.
pub fn check_person(caller: &Caller) -> Result<(), OversightError> {
    if caller.role.is_human() {
        Ok(())
    } else {
        Err(OversightError::NotHuman { identity: caller.name.clone(), role: caller.role.as_str().to_owned() })
    }
}

fn check_open(decision: &Decision, caller: &Caller, now_ms: i64) -> Result<(), OversightError> {
    check_person(caller)?;
    if decision.state == State::Shadow {
        return Err(OversightError::Shadow { decision_id: decision.decision_id.clone() });
    }
    if decision.state != State::Pending {
        return Err(OversightError::NotPending {
            decision_id: decision.decision_id.clone(),
            state: decision.state.as_str().to_owned(),
        });
    }
    if decision.is_expired(now_ms) {
        return Err(OversightError::Expired {
            decision_id: decision.decision_id.clone(),
            expired_at: arf_core::time::format_ms(decision.expires_at_ms),
        });
    }
    Ok(())
}

/// Whether `caller` may approve `decision` at `now_ms`. Checked before the approval
/// is logged; it counts only once logged (see [`record_approval`]).
pub fn check_approval(decision: &Decision, caller: &Caller, now_ms: i64) -> Result<(), OversightError> {
    // Self-approval first: it is the most telling answer to whoever tries it.
    if caller.name == decision.requester {
        return Err(OversightError::SelfApproval {
            identity: caller.name.clone(),
            decision_id: decision.decision_id.clone(),
        });
    }
    check_open(decision, caller, now_ms)?;
    if decision.approvals.iter().any(|a| a.identity == caller.name && a.verdict == Verdict::Approve) {
        return Err(OversightError::AlreadyApproved {
            identity: caller.name.clone(),
            decision_id: decision.decision_id.clone(),
        });
    }
    let roles = &decision.policy.approver_roles;
    if !roles.is_empty() && !roles.iter().any(|r| r == caller.role.as_str()) {
        return Err(OversightError::RoleNotAllowed {
            role: caller.role.as_str().to_owned(),
            decision_id: decision.decision_id.clone(),
            allowed: roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(" or "),
        });
    }
    Ok(())
}

/// Whether `caller` may reject `decision`. Any person may stop an action: saying no
/// is always the safe direction.
pub fn check_rejection(decision: &Decision, caller: &Caller, reason: &str, now_ms: i64) -> Result<(), OversightError> {
    if reason.trim().is_empty() {
        return Err(OversightError::MissingReason);
    }
    check_open(decision, caller, now_ms)
}

/// Counts a logged approval and says whether the decision now has enough.
pub fn record_approval(decision: &mut Decision, approval: Approval) -> Progress {
    decision.approvals.push(approval);
    let given = decision.approvals_given();
    let required = decision.approvals_required();
    if given >= required {
        decision.state = State::Approved;
        Progress::Approved
    } else {
        Progress::Waiting { given, required }
    }
}

/// Records a logged rejection.
pub fn record_rejection(decision: &mut Decision, rejection: Approval) {
    decision.detail = format!("rejected by `{}`: {}", rejection.identity, rejection.reason);
    decision.approvals.push(rejection);
    decision.state = State::Rejected;
}

/// Rebuilds decisions from the governor's own audit records, in log order, after
/// a restart: each decision from the record that made it, then its approvals and
/// every later change of state. Each record is read as the type the governor wrote
/// it with; one that is not is an error, since decisions rebuilt around it would
/// be a guess.
pub fn restore(records: &[arf_audit_client::Record]) -> Result<std::collections::BTreeMap<String, Decision>, Malformed> {
    let mut restored = Restored::default();
    for record in records {
        restored.add(record)?;
    }
    Ok(restored.decisions)
}

/// Decisions rebuilt from the log one record at a time ([`restore`]), so a restart
/// can stream the log rather than hold it; with what each authorization signed.
/// Saved as it stands in the governor's state snapshot (`crate::snapshot`).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restored {
    pub decisions: std::collections::BTreeMap<String, Decision>,
    /// Per decision, the body its authorization signed and that record's sequence number.
    pub authorized: std::collections::BTreeMap<String, (DecisionBody, u64)>,
    /// The last switch of global autonomy the log holds: on or off, by whom, why, when.
    pub autonomy: Option<(bool, String, String, i64)>,
    /// The guard rails the log shows tripped and not reset since.
    pub trips: Vec<arf_core::decision::Trip>,
    /// Per (environment, service, pathway), the last graduation event: graduated or
    /// demoted, and when.
    #[serde(with = "pairs")]
    pub graduations: std::collections::BTreeMap<(String, String, String), (bool, i64)>,
    /// Per service, when its autonomous decisions were made, within an hour of the
    /// latest (what the rate limit counts).
    pub autonomous_runs: std::collections::BTreeMap<String, Vec<i64>>,
    /// The decisions that left memory as the log was folded, and their incidents.
    pub evicted: Evicted,
    /// Authorized decisions the governor withdrew and has not settled, with why.
    #[serde(default)]
    pub withdrawn: std::collections::BTreeMap<String, String>,
}

/// The incident of each decision that left memory, so it can be read back from the
/// log by its id; the oldest are forgotten past [`Evicted::CAPACITY`] (their trail
/// stays in the log, read by incident). Saved as a list, oldest first.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<(String, String)>", into = "Vec<(String, String)>")]
pub struct Evicted {
    pub incident_of: std::collections::HashMap<String, String>,
    order: std::collections::VecDeque<String>,
}

impl Evicted {
    pub const CAPACITY: usize = 100_000;

    pub fn insert(&mut self, decision_id: String, incident_id: String) {
        if self.incident_of.insert(decision_id.clone(), incident_id).is_none() {
            self.order.push_back(decision_id);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(oldest) = self.order.pop_front() {
                self.incident_of.remove(&oldest);
            }
        }
    }

    pub fn contains(&self, decision_id: &str) -> bool {
        self.incident_of.contains_key(decision_id)
    }

    /// Takes in what `other` holds, oldest first.
    pub fn absorb(&mut self, other: Self) {
        for pair in Vec::from(other) {
            self.insert(pair.0, pair.1);
        }
    }
}

impl From<Vec<(String, String)>> for Evicted {
    fn from(pairs: Vec<(String, String)>) -> Self {
        let mut evicted = Self::default();
        for (decision_id, incident_id) in pairs {
            evicted.insert(decision_id, incident_id);
        }
        evicted
    }
}

impl From<Evicted> for Vec<(String, String)> {
    fn from(mut evicted: Evicted) -> Self {
        evicted.order.drain(..).filter_map(|id| evicted.incident_of.remove(&id).map(|incident| (id, incident))).collect()
    }
}

/// A map whose keys are not strings, saved as a list of pairs.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(map: &std::collections::BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<std::collections::BTreeMap<K, V>, D::Error> {
        Vec::<(K, V)>::deserialize(deserializer).map(|pairs| pairs.into_iter().collect())
    }
}

impl Restored {
    /// Lets settled decisions that expired more than `retain_ms` before `now_ms`
    /// go (the governor reads them back from the log when asked), noting each one's
    /// incident in [`Restored::evicted`]; returns how many went.
    pub fn evict(&mut self, now_ms: i64, retain_ms: i64) -> usize {
        let mut gone = Vec::new();
        self.decisions.retain(|id, decision| {
            decision.expire_if_due(now_ms);
            let keep = !decision.state.is_final() || now_ms - decision.expires_at_ms <= retain_ms;
            if !keep {
                gone.push((id.clone(), decision.incident_id.clone()));
            }
            keep
        });
        let count = gone.len();
        for (id, incident_id) in gone {
            self.authorized.remove(&id);
            self.withdrawn.remove(&id);
            self.evicted.insert(id, incident_id);
        }
        count
    }

    /// Folds one record, in log order.
    pub fn add(&mut self, record: &arf_audit_client::Record) -> Result<(), Malformed> {
        use arf_audit_client::RecordKind;
        if record.writer != "governor" {
            return Ok(());
        }
        let decisions = &mut self.decisions;
        match record.kind {
            RecordKind::Decision => match DecisionRecordKind::of(&record.payload) {
                DecisionRecordKind::Decided => {
                    let DecidedRecord { decision, .. } = record.parse()?;
                    // Counted as the governor counts it when it decides (`note_autonomous`).
                    if decision.state == State::Approved {
                        let runs = self.autonomous_runs.entry(decision.service.clone()).or_default();
                        runs.retain(|&at| at > decision.issued_at_ms.saturating_sub(crate::guard::HOUR_MS));
                        runs.push(decision.issued_at_ms);
                    }
                    decisions.insert(decision.decision_id.clone(), decision);
                }
                DecisionRecordKind::Authorized => {
                    let logged: AuthorizedRecord = record.parse()?;
                    if let Some(decision) = decisions.get_mut(&logged.decision_id) {
                        decision.state = State::Authorized;
                    }
                    self.authorized.insert(logged.decision_id, (logged.body, record.seq));
                }
                DecisionRecordKind::State => {
                    let logged: DecisionStateRecord = record.parse()?;
                    if let Some(decision) = decisions.get_mut(&logged.decision_id) {
                        if let Some(state) = State::parse(&logged.state) {
                            decision.state = state;
                        }
                        decision.detail = logged.detail;
                        if decision.state.is_final() {
                            self.withdrawn.remove(&logged.decision_id);
                        }
                    }
                }
                DecisionRecordKind::Event => match record.parse()? {
                    // What the governor learned while a decision waited (an overdue
                    // outcome) changes what it says, not where the decision stands.
                    GovernanceEvent::OutcomeOverdue { decision_id, detail } => {
                        if let Some(decision) = decisions.get_mut(&decision_id) {
                            decision.detail = detail;
                        }
                    }
                    // A withdrawal leaves the decision authorized until it is settled;
                    // a restart must neither send it again nor forget why it stopped.
                    GovernanceEvent::Withdrawn { decision_id, reason, .. } if decisions.get(&decision_id).is_some_and(|d| !d.state.is_final()) => {
                        self.withdrawn.insert(decision_id, reason);
                    }
                    GovernanceEvent::ShadowJudged { decision_id, judgement, .. } => {
                        if let Some(decision) = decisions.get_mut(&decision_id) {
                            decision.judgement = Some(judgement);
                        }
                    }
                    GovernanceEvent::AutonomySwitched { enabled, identity, reason, at_ms, .. } => {
                        self.autonomy = Some((enabled, identity, reason, at_ms));
                    }
                    GovernanceEvent::RateLimitTripped { trip, .. }
                    | GovernanceEvent::ErrorBudgetTripped { trip, .. }
                    | GovernanceEvent::RollbackFailedTripped { trip, .. }
                        if !self.trips.contains(&trip) =>
                    {
                        self.trips.push(trip);
                    }
                    GovernanceEvent::AutonomyReset { clearing, .. } => {
                        self.trips.retain(|t| !clearing.contains(t));
                    }
                    GovernanceEvent::Graduation { environment, service, pathway, graduated, at_ms, .. } => {
                        self.graduations.insert((environment, service, pathway), (graduated, at_ms));
                    }
                    _ => {}
                },
            },
            RecordKind::Approval => {
                let logged: ApprovalRecord = record.parse()?;
                let Some(decision) = decisions.get_mut(&logged.decision_id) else { return Ok(()) };
                let reason = match logged.verdict {
                    Verdict::Reject => logged.reason.unwrap_or_default(),
                    Verdict::Approve => logged.comment.unwrap_or_default(),
                };
                decision.approvals.push(Approval {
                    identity: logged.identity,
                    role: logged.role,
                    at_ms: logged.at_ms,
                    verdict: logged.verdict,
                    reason,
                });
                if let Some(state) = logged.state.as_deref().and_then(State::parse) {
                    decision.state = state;
                } else if logged.verdict == Verdict::Reject && decision.state == State::Pending {
                    decision.state = State::Rejected;
                } else if decision.state == State::Pending && decision.approvals_given() >= decision.approvals_required() {
                    // The last approval it needed is logged; a crash came before the
                    // authorization. It comes back approved, and is resumed.
                    decision.state = State::Approved;
                }
            }
            _ => {}
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly at the first surprise")]

    use super::*;

    #[test]
    fn a_folded_state_comes_back_whole_from_its_json() {
        let mut restored = Restored::default();
        restored.graduations.insert(("production".to_owned(), "web".to_owned(), "restart_service".to_owned()), (true, 5));
        restored.graduations.insert(("staging".to_owned(), "web".to_owned(), "restart_service".to_owned()), (false, 9));
        restored.autonomous_runs.insert("web".to_owned(), vec![1, 2]);
        restored.autonomy = Some((false, "alice".to_owned(), "a bad night".to_owned(), 7));
        for i in [3, 1, 2] {
            restored.evicted.insert(format!("dec-{i}"), format!("inc-{i}"));
        }
        let back: Restored = serde_json::from_slice(&serde_json::to_vec(&restored).unwrap()).unwrap();
        assert_eq!(back, restored);
        let order: Vec<String> = Vec::from(back.evicted).into_iter().map(|(id, _)| id).collect();
        assert_eq!(order, ["dec-3", "dec-1", "dec-2"], "oldest first, as they left");
    }

    #[test]
    fn the_oldest_evicted_decisions_are_forgotten_past_capacity() {
        let mut evicted = Evicted::default();
        for i in 0..Evicted::CAPACITY + 2 {
            evicted.insert(format!("dec-{i}"), "inc".to_owned());
        }
        assert!(!evicted.contains("dec-0") && !evicted.contains("dec-1"));
        assert!(evicted.contains("dec-2") && evicted.contains(&format!("dec-{}", Evicted::CAPACITY + 1)));
        let mut other = Evicted::default();
        other.insert("dec-new".to_owned(), "inc".to_owned());
        evicted.absorb(other);
        assert!(evicted.contains("dec-new") && !evicted.contains("dec-2"), "taken in as the newest");
        assert_eq!(Evicted::from(Vec::from(evicted.clone())), evicted);
    }
}
