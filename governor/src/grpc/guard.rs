//! The service side of the guard rails and of policy reloads: admin checks, the
//! audit records they write, saving the state, and SIGHUP.
//!
//! Governor-wide events (the kill switch, resets, tripped guard rails, reloads) are
//! `decision` records of the pseudo-incident [`GOVERNANCE_INCIDENT`], each with an
//! `event` field, so that one incident read shows every change to what may run alone.

use std::sync::Arc;

use arf_core::records::{self, GovernanceEvent};
use tonic::Status;
use tracing::{error, info, warn};

use arf_audit_client::RecordKind;
use arf_proto::v1 as pb;

use crate::graduation;
use crate::guard::{self, GuardState, Trip};
use crate::identity::{Caller, Role};
use crate::policy::Policies;

use super::{Shared, status};

/// The incident id under which governor-wide events are logged.
pub const GOVERNANCE_INCIDENT: &str = "governance";

fn require_admin(caller: &Caller, what: &str) -> Result<(), Status> {
    if caller.role == Role::Admin {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "only an admin may {what}; `{}` has role `{}`",
        caller.name, caller.role
    )))
}

impl Shared {
    pub(crate) fn current_policies(&self) -> Arc<Policies> {
        Arc::clone(&self.policies.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(crate) fn guard_snapshot(&self) -> GuardState {
        self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the guard-rail state and saves it before the lock is released, so
    /// the file always holds the latest state. A failed save is reported, and the
    /// change stays in force in memory.
    fn change<R>(&self, f: impl FnOnce(&mut GuardState) -> R) -> (R, Result<(), guard::StateError>) {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = f(&mut state);
        let saved = guard::save(&self.guard_path, &state);
        if let Err(error) = &saved {
            error!(%error, "cannot save the guard-rail state; it will not survive a restart");
        }
        // With replicas, the leader's state also goes to the database, for the next leader.
        if let Some(sync) = self.guard_sync.get() {
            sync.send_replace(state.clone());
        }
        (result, saved)
    }

    /// With replicas, on taking the lead: starts from the guard-rail state the last
    /// leader saved in the database (when there is one; this replica's own file may
    /// be days old), then keeps the database's copy current after each change.
    pub(crate) async fn share_guard_state(self: &Arc<Self>, lease: Arc<arf_pg::lease::Lease>) -> Result<(), String> {
        let db = lease.db();
        let row = db.get().await.map_err(|e| e.to_string())?.query_opt("SELECT state FROM governor_guard WHERE id = 1", &[]).await.map_err(|e| e.to_string())?;
        if let Some(row) = row {
            let state: GuardState = serde_json::from_slice(row.get::<_, &[u8]>(0)).map_err(|e| format!("the guard-rail state in the database is not readable: {e}"))?;
            let _ = self.change(|held| *held = state);
            info!("guard rails: carrying on from the state the last leading governor saved in the database");
        }
        let (sync, mut changed) = tokio::sync::watch::channel(self.guard_snapshot());
        let _ = self.guard_sync.set(sync);
        tokio::spawn(async move {
            loop {
                let state = changed.borrow_and_update().clone();
                // Saved, or a failure retried until it is, or until a newer state
                // replaces it (which the next turn saves).
                let mut backoff = std::time::Duration::from_millis(200);
                let saved = loop {
                    match save_guard_state(&lease, &state).await {
                        Ok(true) => break true,
                        // No longer the leader: what it holds is not for the next one.
                        Ok(false) => return,
                        Err(error) => {
                            error!(%error, "cannot save the guard-rail state in the governors' database yet; the next leader would start from an older one");
                            match tokio::time::timeout(backoff, changed.changed()).await {
                                Ok(Ok(())) => break false,
                                Ok(Err(_)) => return,
                                Err(_) => backoff = (backoff * 2).min(std::time::Duration::from_secs(5)),
                            }
                        }
                    }
                };
                if saved && changed.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }

    /// At a clean stop, before the lease is given back: the latest guard-rail state
    /// into the database, for the next leader.
    pub(crate) async fn save_guard_state_now(&self, lease: &arf_pg::lease::Lease) {
        if self.guard_sync.get().is_none() {
            return;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), save_guard_state(lease, &self.guard_snapshot())).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => error!(%error, "cannot save the guard-rail state before giving the lead back"),
            Err(_) => error!("saving the guard-rail state before giving the lead back did not answer"),
        }
    }

    /// Takes the log's last switch of global autonomy when the guard-rail file says
    /// otherwise, and says so. Every switch is logged before it takes effect, so the
    /// file is never legitimately ahead of the log: where they differ, the file is
    /// stale (a backup, or a crash between the log and the file).
    pub(crate) fn adopt_logged_autonomy(&self, enabled: bool, by: &str, reason: &str, at_ms: i64) {
        let (adopted, _) = self.change(|state| {
            if state.autonomy.enabled != enabled || state.autonomy.changed_at_ms < at_ms {
                guard::set_autonomy(state, enabled, by, reason, at_ms);
                true
            } else {
                false
            }
        });
        if adopted {
            warn!(enabled, %by, at_ms, "the guard-rail state was behind the audit log: global autonomy is as the log's last switch left it");
        }
    }

    /// Adds the autonomous decisions of the last hour that the log holds and the
    /// guard-rail file lacks (a lost or older file, or a replica that takes over
    /// from another leader), so the rate limit counts them. Only adds: counting more
    /// is the strict direction.
    pub(crate) fn adopt_logged_runs(&self, runs: std::collections::BTreeMap<String, Vec<i64>>) {
        let since = (self.clock)().saturating_sub(guard::HOUR_MS);
        let (added, _) = self.change(|state| {
            let mut added = 0usize;
            for (service, times) in runs {
                let held = state.autonomous_runs.entry(service).or_default();
                // As many at each time as either holds: two decisions may share a millisecond.
                let mut unmatched: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
                for &at in held.iter() {
                    *unmatched.entry(at).or_default() += 1;
                }
                for at in times.into_iter().filter(|&at| at > since) {
                    match unmatched.get_mut(&at) {
                        Some(left) if *left > 0 => *left -= 1,
                        _ => {
                            held.push(at);
                            added += 1;
                        }
                    }
                }
                held.sort_unstable();
            }
            added
        });
        if added > 0 {
            warn!(added, "the guard-rail state was behind the audit log: autonomous actions of the last hour it lacked count toward the rate limit again");
        }
    }

    /// Adds the tripped guard rails the log holds and the guard-rail file lacks (a
    /// lost or older file). Only adds: a trip the file holds and the log shows reset
    /// stays until an admin resets it again, the safe direction.
    pub(crate) fn adopt_logged_trips(&self, trips: Vec<Trip>) {
        let (added, _) = self.change(|state| {
            let mut added = Vec::new();
            for trip in trips {
                let held = state.trips.iter().any(|t| t.kind == trip.kind && t.service == trip.service && t.pathway == trip.pathway);
                if !held {
                    added.push(trip.clone());
                    state.trips.push(trip);
                }
            }
            added
        });
        for trip in added {
            warn!(kind = ?trip.kind, service = %trip.service, pathway = %trip.pathway, "the guard-rail state was behind the audit log: a tripped guard rail it lacked is in force again");
        }
    }

    /// Demotes each pathway whose last graduation event in the log is a demotion
    /// but which the guard-rail file still has graduated, recording the setback at
    /// its time (so it must earn its successes again). A graduation the file lacks
    /// is not granted: it is earned again, the safe direction.
    pub(crate) fn adopt_logged_demotions(&self, graduations: &std::collections::BTreeMap<(String, String, String), (bool, i64)>) {
        let (demoted, _) = self.change(|state| {
            let mut demoted = Vec::new();
            for ((environment, service, pathway), (graduated, at_ms)) in graduations {
                if *graduated {
                    continue;
                }
                let track = state.tracks.get_mut(environment).and_then(|s| s.get_mut(service)).and_then(|p| p.get_mut(pathway));
                if let Some(track) = track.filter(|t| t.graduated) {
                    track.graduated = false;
                    if !track.failed.contains(at_ms) {
                        track.failed.push(*at_ms);
                        track.failed.sort_unstable();
                    }
                    demoted.push((environment.clone(), service.clone(), pathway.clone()));
                }
            }
            demoted
        });
        for (environment, service, pathway) in demoted {
            warn!(%environment, %service, %pathway, "the guard-rail state was behind the audit log: a pathway it had graduated was demoted, as the log says");
        }
    }

    pub(crate) fn note_autonomous(&self, service: &str, now_ms: i64) -> Option<Trip> {
        self.change(|state| guard::note_autonomous(state, &self.guard_rails, service, now_ms)).0
    }

    /// Folds the outcome of a dispatched decision into the statistics, once per
    /// decision (see [`guard::record_outcome`]), and saves it; returns what it tripped
    /// (an error budget, a quarantine after a failed rollback), for [`Self::log_trips`].
    ///
    /// A fresh outcome also goes on the pathway's track record on the service; the
    /// promotion or demotion it causes comes back for [`Self::log_graduation`].
    pub(crate) fn count_outcome(&self, decision_id: &str, (environment, service): (&str, &str), pathway: &str, model: &str, outcome: &str) -> (Vec<Trip>, Option<graduation::Change>) {
        let now = (self.clock)();
        self.change(|state| {
            let fresh = !state.unlogged_outcomes.contains_key(decision_id);
            let trips = guard::record_outcome(state, &self.guard_rails, decision_id, service, pathway, model, outcome, now);
            let change = match graduation::Event::of_outcome(outcome) {
                Some(event) if fresh => graduation::note(&mut state.tracks, &self.graduation, environment, service, pathway, event, now),
                _ => None,
            };
            (trips, change)
        })
        .0
    }

    /// Notes a person's judgement of a shadow decision on the pathway's track record.
    pub(crate) fn count_judgement(&self, environment: &str, service: &str, pathway: &str, agrees: bool) -> Option<graduation::Change> {
        let now = (self.clock)();
        let event = if agrees { graduation::Event::Agreed } else { graduation::Event::Disagreed };
        self.change(|state| graduation::note(&mut state.tracks, &self.graduation, environment, service, pathway, event, now)).0
    }

    /// Logs a promotion or demotion; best effort, since it is already in force.
    pub(crate) async fn log_graduation(&self, change: Option<graduation::Change>) {
        let Some(change) = change else { return };
        info!(service = %change.service, pathway = %change.pathway, graduated = change.graduated, reason = %change.reason, "track record changed what may run on its own");
        let event = GovernanceEvent::Graduation {
            environment: change.environment,
            service: change.service,
            pathway: change.pathway,
            graduated: change.graduated,
            reason: change.reason,
            at_ms: (self.clock)(),
        };
        if let Err(error) = self.audit.append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, records::encode(&event)).await {
            warn!(%error, "cannot log the graduation change");
        }
    }

    /// Forgets counted outcomes whose records are in the log, saving only when
    /// something was forgotten.
    pub(crate) fn forget_outcomes(&self, forget: impl FnOnce(&mut GuardState) -> bool) {
        let mut state = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if forget(&mut state) {
            if let Err(error) = guard::save(&self.guard_path, &state) {
                error!(%error, "cannot save the guard-rail state; it will not survive a restart");
            }
            if let Some(sync) = self.guard_sync.get() {
                sync.send_replace(state.clone());
            }
        }
    }

    /// Logs the guard rails an outcome tripped, after the outcome itself.
    pub(crate) async fn log_trips(&self, trips: &[Trip], incident_id: &str, decision_id: &str) {
        for trip in trips {
            if trip.kind == guard::TripKind::RollbackFailed {
                error!(service = %trip.service, %decision_id, "ROLLBACK FAILED: service quarantined; nothing runs on it without a person until an admin resets it");
            }
            self.log_trip(trip, incident_id, decision_id).await;
        }
        if !trips.is_empty() {
            self.withdraw_withheld().await;
        }
    }

    /// Logs that a guard rail switched autonomy off; best effort, since the trip is
    /// already in force (the safe direction).
    pub(crate) async fn log_trip(&self, trip: &Trip, incident_id: &str, decision_id: &str) {
        warn!(kind = trip.kind.as_str(), service = %trip.service, pathway = %trip.pathway, reason = %trip.reason, "guard rail tripped; autonomy is off until an admin resets it");
        let payload = records::encode(&GovernanceEvent::tripped(trip.clone(), incident_id, decision_id));
        if let Err(error) = self.audit.append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, payload).await {
            warn!(%error, "cannot log the tripped guard rail");
        }
    }

    pub(crate) fn autonomy_status(&self, cleared: Vec<Trip>) -> pb::AutonomyStatus {
        let now = (self.clock)();
        let state = self.guard_snapshot();
        let trip = |t: &Trip| pb::GuardTrip {
            kind: t.kind.as_str().to_owned(),
            service: t.service.clone(),
            pathway: t.pathway.clone(),
            since_ms: t.since_ms,
            reason: t.reason.clone(),
        };
        // Live statistics per (service, pathway), with no environment; then each
        // track record per (environment, service, pathway), with that service's statistics.
        let none = String::new();
        let none = &none;
        let keys: std::collections::BTreeSet<(&String, &String, &String)> = state
            .pathways
            .iter()
            .flat_map(|(service, pathways)| pathways.keys().map(move |pathway| (none, service, pathway)))
            .filter(|(_, service, pathway)| !graduation::all(&state.tracks).any(|(_, s, p, _)| s == *service && p == *pathway))
            .chain(graduation::all(&state.tracks).map(|(environment, service, pathway, _)| (environment, service, pathway)))
            .collect();
        let stats = keys
            .into_iter()
            .map(|(environment, service, pathway)| {
                let live = state.pathways.get(service).and_then(|p| p.get(pathway)).map(|r| r.stats.clone()).unwrap_or_default();
                let track = graduation::track(&state.tracks, environment, service, pathway).cloned().unwrap_or_default().input(&self.graduation, now);
                pb::PathwayOutcomeStats {
                    environment: environment.clone(),
                    service: service.clone(),
                    pathway: pathway.clone(),
                    runs: live.runs,
                    verified: live.verified,
                    rolled_back: live.rolled_back,
                    failed: live.failed,
                    shadow_agreed: track.shadow_agreed,
                    shadow_disagreed: track.shadow_disagreed,
                    verified_in_window: track.verified,
                    failed_in_window: track.failed,
                    earned: track.earned,
                    required_runs: track.required_runs,
                    graduated: track.graduated,
                }
            })
            .collect();
        pb::AutonomyStatus {
            enabled: state.autonomy.enabled,
            changed_by: state.autonomy.changed_by.clone(),
            changed_at_ms: state.autonomy.changed_at_ms,
            reason: state.autonomy.reason.clone(),
            trips: state.trips.iter().map(trip).collect(),
            stats,
            active_freezes: self
                .freezes
                .iter()
                .filter(|w| w.starts_at_ms <= now && now < w.ends_at_ms)
                .map(|w| w.name.clone())
                .collect(),
            cleared: cleared.iter().map(trip).collect(),
        }
    }

    /// The kill switch: admin only, with a reason, logged before it takes effect.
    pub(crate) async fn set_autonomy(&self, caller: &Caller, enabled: bool, reason: &str) -> Result<pb::AutonomyStatus, Status> {
        let word = if enabled { "on" } else { "off" };
        // Whoever is on call may pull the kill switch at 3 a.m. (stopping is always
        // the safe direction); only an admin hands autonomy back.
        if enabled {
            require_admin(caller, "switch autonomy on")?;
        } else if !matches!(caller.role, Role::Oncall | Role::Security | Role::Admin) {
            return Err(Status::permission_denied(format!(
                "only a person on call, on the security team or an admin may switch autonomy off; `{}` has role `{}`",
                caller.name, caller.role
            )));
        }
        if reason.trim().is_empty() {
            return Err(Status::invalid_argument(format!("`reason` must say why autonomy is switched {word}")));
        }
        // Between two decisions, as a policy reload: a decision made after the switch
        // sees it, and one made before it is held now, for the withdrawal below.
        let deciding = self.deciding.lock().await;
        let now = (self.clock)();
        let payload = records::encode(&GovernanceEvent::AutonomySwitched {
            enabled,
            identity: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
            reason: reason.trim().to_owned(),
            at_ms: now,
        });
        self.audit
            .append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, payload)
            .await
            .map_err(|e| status::audit_unavailable(&e, &format!("autonomy was not switched {word}")))?;
        let ((), saved) = self.change(|state| guard::set_autonomy(state, enabled, &caller.name, reason.trim(), now));
        drop(deciding);
        info!(identity = %caller.name, enabled, "global autonomy switched");
        // Stopping stops what was authorized to run alone and has not started.
        if !enabled {
            self.withdraw_withheld().await;
        }
        saved.map_err(|e| Status::internal(format!("autonomy is {word}, but it was not saved and will not survive a restart: {e}")))?;
        Ok(self.autonomy_status(Vec::new()))
    }

    /// Clears what is tripped for a service: everything, or with a pathway only that
    /// pathway's error budget (see [`Trip::lifted_by`]). Admin only, logged before it
    /// takes effect.
    pub(crate) async fn reset_autonomy(
        &self,
        caller: &Caller,
        service: &str,
        pathway: &str,
        reason: &str,
    ) -> Result<pb::AutonomyStatus, Status> {
        require_admin(caller, "reset a guard rail")?;
        if service.trim().is_empty() {
            return Err(Status::invalid_argument("`service` must not be empty"));
        }
        let pathway = Some(pathway.trim()).filter(|p| !p.is_empty());
        let trips = self.guard_snapshot().trips;
        let tripped: Vec<Trip> = trips.iter().filter(|t| t.lifted_by(service, pathway)).cloned().collect();
        if tripped.is_empty() {
            let service_wide: Vec<String> = trips
                .iter()
                .filter(|t| t.service == service && t.pathway.is_empty())
                .map(|t| format!("`{}`", t.kind.as_str()))
                .collect();
            let message = match pathway {
                Some(p) if !service_wide.is_empty() => format!(
                    "pathway `{p}` on service `{service}` has no guard rail of its own tripped; the service-wide {} is lifted only by a reset of the whole service (no pathway)",
                    service_wide.join(" and ")
                ),
                Some(p) => format!("no guard rail is tripped for pathway `{p}` on service `{service}`; nothing to reset"),
                None => format!("no guard rail is tripped for service `{service}`; nothing to reset"),
            };
            return Err(Status::failed_precondition(message));
        }
        let now = (self.clock)();
        let payload = records::encode(&GovernanceEvent::AutonomyReset {
            service: service.to_owned(),
            pathway: pathway.unwrap_or_default().to_owned(),
            identity: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
            reason: reason.trim().to_owned(),
            at_ms: now,
            clearing: tripped,
        });
        self.audit
            .append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, payload)
            .await
            .map_err(|e| status::audit_unavailable(&e, "nothing was reset"))?;
        let (cleared, saved) = self.change(|state| guard::reset(state, service, pathway));
        info!(identity = %caller.name, %service, cleared = cleared.len(), "guard rails reset");
        saved.map_err(|e| Status::internal(format!("reset, but not saved: {e}")))?;
        Ok(self.autonomy_status(cleared))
    }

    /// Loads the bundle again. A bundle that does not load is refused, naming the
    /// file, and the running one keeps serving. `caller` is `None` for SIGHUP.
    pub(crate) async fn reload_policies(&self, caller: Option<&Caller>) -> Result<Vec<String>, Status> {
        if let Some(caller) = caller {
            require_admin(caller, "reload the policies")?;
        }
        let identity = caller.map_or_else(|| "SIGHUP".to_owned(), |c| c.name.clone());
        let dir = self.policies_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || Policies::load_dir(&dir))
            .await
            .map_err(|_| Status::internal("the policy bundle could not be loaded; the running one keeps serving"))?;
        let policies = match loaded {
            Ok(policies) => policies,
            Err(error) => {
                let message = format!("the new policy bundle was refused and the running one keeps serving: {error}");
                warn!(%identity, %error, "policy reload refused");
                // The log takes nothing from a standby.
                if self.standing_by() {
                    return Err(Status::failed_precondition(message));
                }
                let payload = records::encode(&GovernanceEvent::PoliciesReloadRefused { identity: identity.clone(), error: error.to_string() });
                if let Err(error) = self.audit.append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, payload).await {
                    warn!(%error, "cannot log the refused reload");
                }
                return Err(Status::failed_precondition(message));
            }
        };
        let files: Vec<String> = policies.files().iter().map(|f| f.display().to_string()).collect();
        // Held while the reload is logged and swapped in, so it lands between two
        // decisions, and any decision after the logged reload uses the new bundle.
        let _deciding = self.deciding.lock().await;
        // A standby decides nothing, and the log takes nothing from it: it takes
        // the bundle now, and logs the bundle in force when it takes the lead
        // ([`Shared::log_policies_in_force`], under the same lock).
        if self.standing_by() {
            *self.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policies);
            info!(%identity, files = files.len(), "policies reloaded on a standby; logged when it takes the lead");
            return Ok(files);
        }
        let payload = records::encode(&GovernanceEvent::PoliciesReloaded { identity: identity.clone(), files: files.clone() });
        self.audit
            .append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, payload)
            .await
            .map_err(|e| {
                warn!(%identity, error = %e, "the policy reload cannot be logged, so the running bundle keeps serving");
                status::audit_unavailable(&e, "the new bundle was not loaded and the running one keeps serving")
            })?;
        *self.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policies);
        info!(%identity, files = files.len(), "policies reloaded");
        Ok(files)
    }
}

impl Shared {
    /// Logs the bundle this replica decides under as it takes the lead, before it
    /// rebuilds its decisions (so before it decides anything): a standby may have
    /// reloaded it unlogged (SIGHUP), and the log says which bundle the decisions
    /// after this record use.
    /// Retried until the log takes it (the rebuild after it waits for the log
    /// anyway); a leader whose lease lapses meanwhile exits.
    pub(crate) async fn log_policies_in_force(&self, member: &str) {
        let _deciding = self.deciding.lock().await;
        let files: Vec<String> = self.current_policies().files().iter().map(|f| f.display().to_string()).collect();
        let payload = records::encode(&GovernanceEvent::PoliciesReloaded { identity: format!("{member}, taking the lead"), files });
        while let Err(error) = self.audit.append_one(GOVERNANCE_INCIDENT, RecordKind::Decision, payload.clone()).await {
            warn!(%error, "cannot log the policy bundle this leader decides under yet; retrying before deciding anything");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// Reloads the policies whenever the process receives SIGHUP.
#[cfg(unix)]
pub(crate) fn reload_on_sighup(shared: Arc<Shared>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // Every failure is logged inside; the running bundle keeps serving.
            let _ = shared.reload_policies(None).await;
        }
    });
    Ok(())
}

/// Writes `state` as the governors' guard-rail state, only while `lease` (the
/// leader's) is this process's and live by the database's clock: a leader whose
/// lease lapsed never overwrites what the next leader keeps. False when it is not.
async fn save_guard_state(lease: &arf_pg::lease::Lease, state: &GuardState) -> Result<bool, String> {
    let bytes = serde_json::to_vec(state).map_err(|e| e.to_string())?;
    let written = lease
        .db()
        .get()
        .await
        .map_err(|e| e.to_string())?
        .execute(
            "INSERT INTO governor_guard (id, state)
             SELECT 1, $1 WHERE EXISTS (SELECT 1 FROM governor_members WHERE name = 'leader' AND incarnation = $2 AND lease_until > now())
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, saved_at = now()",
            &[&bytes as &(dyn arf_pg::ToSql + Sync), &lease.incarnation()],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(written == 1)
}
