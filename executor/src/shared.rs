//! The executors' shared state on PostgreSQL (`executor.postgres`, issue 16): any
//! number of executor replicas claim decisions and lock targets through one
//! database (`pg/migrations/0002_executor.sql`), so a decision runs once and a
//! target is acted on by one executor at a time, whichever replicas the governor
//! reaches.
//!
//! - **Membership.** Each replica holds a lease on its name (`executor.replica`),
//!   renewed every third of `executor.lease_secs` with the database's clock. A
//!   second process under a live name waits for the lease to lapse rather than
//!   share it. A replica that cannot renew in time stops starting actions.
//! - **Claims.** A decision is claimed by inserting its row; a second claim, by any
//!   replica, finds the row and answers with where the execution stands.
//! - **Ownership and fencing.** Each execution row names its owner and a fencing
//!   token. Every write names both, so once another replica has taken an execution
//!   over (raising the token), the earlier owner's writes match nothing and fail
//!   (`StoreError::Fenced`).
//! - **Target locks.** A row per target names the replica working on it. It is
//!   taken only when free, already this replica's, or held by a replica whose
//!   lease lapsed; it is given back when the work is done.
//! - **Takeover.** Each replica looks every lease period for unfinished executions
//!   whose owner's lease lapsed, takes each over (after its target's lock), and
//!   settles it exactly as a restarted executor settles its own (`Engine::recover`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arf_pg::lease::Lease;
use arf_pg::{Connection, Settings, ToSql};
use tracing::info;

use crate::execution::{ExecutionState, Outcome, Phase};
use crate::store::{Claim, StoreError, StoredDecision, decode, encode};

pub struct Shared {
    db: Arc<Connection>,
    /// This replica's lease on its name (`executor_members`).
    lease: Arc<Lease>,
    /// This replica's name.
    member: String,
    /// The fencing token of each execution this replica owns.
    fences: Mutex<HashMap<String, i64>>,
    /// The target locks this process took, by target, with their tokens.
    locks: Mutex<HashMap<String, i64>>,
}

/// An execution whose owner's lease lapsed, to take over.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub decision_id: String,
    pub target: String,
    pub owner: String,
    pub fence: i64,
}

impl Shared {
    /// Connects, checks the schema, and joins as `member` ([`Lease::join`]), then
    /// re-tokens what the name owns.
    pub async fn join(settings: &Settings, member: &str, lease: Duration) -> Result<Arc<Self>, StoreError> {
        let (db, lease) = Lease::open(settings, "executor_members", member, &arf_core::canonical::random_id("exe"), lease).await?;
        // An earlier process under this name may still be running somewhere (cut
        // off, not dead): raising the tokens of everything this name owns makes its
        // writes and unlocks match nothing from now on.
        let client = db.get().await?;
        let fenced = client
            .execute(
                "UPDATE executor_executions SET fence = nextval('executor_fences') WHERE owner = $1 AND phase <> $2",
                &[&member as &(dyn ToSql + Sync), &Phase::Finished.as_str()],
            )
            .await?;
        client.execute("UPDATE executor_target_locks SET fence = nextval('executor_fences') WHERE owner = $1", &[&member]).await?;
        info!(%member, fenced, "joined the executors' database");
        Ok(Arc::new(Self { db, lease, member: member.to_owned(), fences: Mutex::new(HashMap::new()), locks: Mutex::new(HashMap::new()) }))
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    /// This process's incarnation of its name, which its appends are fenced by.
    pub fn incarnation(&self) -> &str {
        self.lease.incarnation()
    }

    /// Whether this replica's lease still holds, by this host's clock.
    pub fn is_live(&self) -> bool {
        self.lease.is_live()
    }

    /// Refuses work once the lease may have lapsed: another replica may be taking
    /// this one's executions over.
    pub fn check_live(&self) -> Result<(), StoreError> {
        Ok(self.lease.check_live()?)
    }

    /// Renews the lease ([`Lease::spawn_renewal`]); `lost` is sent once it lapsed.
    pub fn spawn_renewal(&self, lost: tokio::sync::oneshot::Sender<String>) -> tokio::task::JoinHandle<()> {
        self.lease.spawn_renewal(lost)
    }

    fn grace_ms(&self) -> f64 {
        self.lease.grace_ms()
    }

    /// The target locks this process took and has not given back, with their tokens.
    pub fn own_target_locks(&self) -> Vec<(String, i64)> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(t, f)| (t.clone(), *f)).collect()
    }

    fn fence_of(&self, decision_id: &str) -> Option<i64> {
        self.fences.lock().unwrap_or_else(PoisonError::into_inner).get(decision_id).copied()
    }

    /// This replica's fencing token for an execution it owns (after a restart, read
    /// back from the row it owns under its name).
    async fn own_fence(&self, decision_id: &str) -> Result<i64, StoreError> {
        // A replica whose lease lapsed writes nothing: a later process under its
        // name, or another replica, may own what it held.
        self.check_live()?;
        if let Some(fence) = self.fence_of(decision_id) {
            return Ok(fence);
        }
        let row = self
            .db
            .get()
            .await?
            .query_opt("SELECT fence FROM executor_executions WHERE decision_id = $1 AND owner = $2", &[&decision_id, &self.member])
            .await?;
        let fence: i64 = row.map(|r| r.get(0)).ok_or_else(|| fenced(decision_id, "another executor owns it"))?;
        self.fences.lock().unwrap_or_else(PoisonError::into_inner).insert(decision_id.to_owned(), fence);
        Ok(fence)
    }

    pub async fn claim(&self, state: &ExecutionState, decision: &StoredDecision) -> Result<Claim, StoreError> {
        self.check_live()?;
        let bytes = encode(state)?;
        let stored = serde_json::to_vec(decision)
            .map_err(|e| StoreError::Encode { decision_id: state.decision_id.clone(), message: e.to_string() })?;
        let client = self.db.get().await?;
        let inserted = client
            .query_opt(
                "INSERT INTO executor_executions (decision_id, target, phase, outcome, owner, fence, updated_at_ms, state, decision)
                 VALUES ($1, $2, $3, $4, $5, nextval('executor_fences'), $6, $7, $8) ON CONFLICT (decision_id) DO NOTHING RETURNING fence",
                &[
                    &state.decision_id as &(dyn ToSql + Sync),
                    &state.target,
                    &state.phase.as_str(),
                    &state.outcome.as_str(),
                    &self.member,
                    &state.updated_at_ms,
                    &bytes,
                    &stored,
                ],
            )
            .await?;
        if let Some(row) = inserted {
            self.fences.lock().unwrap_or_else(PoisonError::into_inner).insert(state.decision_id.clone(), row.get(0));
            return Ok(Claim::Claimed);
        }
        let row = client.query_opt("SELECT state FROM executor_executions WHERE decision_id = $1", &[&state.decision_id]).await?;
        match row {
            Some(row) => Ok(Claim::Existing(decode(&state.decision_id, row.get(0))?)),
            // Released between the insert and the read: someone's claim is still
            // settling; answer as if it were still there, as the local store does.
            None => Ok(Claim::Existing(state.clone())),
        }
    }

    pub async fn save(&self, state: &ExecutionState) -> Result<(), StoreError> {
        let fence = self.own_fence(&state.decision_id).await?;
        let updated = self
            .db
            .get()
            .await?
            .execute(
                "UPDATE executor_executions SET state = $3, phase = $4, outcome = $5, updated_at_ms = $6
                 WHERE decision_id = $1 AND owner = $2 AND fence = $7 AND EXISTS (
                     SELECT 1 FROM executor_members WHERE name = $2 AND incarnation = $8 AND lease_until > clock_timestamp())",
                &[
                    &state.decision_id as &(dyn ToSql + Sync),
                    &self.member,
                    &encode(state)?,
                    &state.phase.as_str(),
                    &state.outcome.as_str(),
                    &state.updated_at_ms,
                    &fence,
                    &self.lease.incarnation(),
                ],
            )
            .await?;
        if updated == 1 { Ok(()) } else { Err(fenced(&state.decision_id, LAPSED)) }
    }

    /// Confirms, on the database's word and by its clock, that `decision_id` is
    /// still this process's execution under its lease: between the steps of an
    /// action, so a replica resumed after its lease lapsed (a pause, a suspended
    /// host, whose own clock may still count the lease live) runs no further step.
    pub async fn confirm(&self, decision_id: &str) -> Result<(), StoreError> {
        let fence = self.own_fence(decision_id).await?;
        let row = self
            .db
            .get()
            .await?
            .query_opt(
                "SELECT 1 FROM executor_executions e JOIN executor_members m ON m.name = e.owner
                 WHERE e.decision_id = $1 AND e.owner = $2 AND e.fence = $3 AND m.incarnation = $4 AND m.lease_until > clock_timestamp()",
                &[&decision_id as &(dyn ToSql + Sync), &self.member, &fence, &self.lease.incarnation()],
            )
            .await?;
        row.map(|_| ()).ok_or_else(|| fenced(decision_id, LAPSED))
    }

    pub async fn release(&self, decision_id: &str) -> Result<(), StoreError> {
        let fence = self.own_fence(decision_id).await?;
        self.delete_owned("DELETE FROM executor_executions WHERE decision_id = $1 AND owner = $2 AND fence = $3", decision_id, fence).await?;
        self.fences.lock().unwrap_or_else(PoisonError::into_inner).remove(decision_id);
        Ok(())
    }

    pub async fn decision(&self, decision_id: &str) -> Result<Option<StoredDecision>, StoreError> {
        let row = self.db.get().await?.query_opt("SELECT decision FROM executor_executions WHERE decision_id = $1", &[&decision_id]).await?;
        let Some(bytes) = row.and_then(|r| r.get::<_, Option<Vec<u8>>>(0)) else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt { decision_id: decision_id.to_owned(), message: e.to_string() })
    }

    pub async fn get(&self, decision_id: &str) -> Result<Option<ExecutionState>, StoreError> {
        let row = self.db.get().await?.query_opt("SELECT state FROM executor_executions WHERE decision_id = $1", &[&decision_id]).await?;
        row.map(|r| decode(decision_id, r.get(0))).transpose()
    }

    pub async fn latest_failed_rollback(&self, target: &str) -> Result<Option<ExecutionState>, StoreError> {
        let row = self
            .db
            .get()
            .await?
            .query_opt(
                "SELECT decision_id, state FROM executor_executions WHERE target = $1 AND outcome = $2 ORDER BY updated_at_ms DESC LIMIT 1",
                &[&target as &(dyn ToSql + Sync), &Outcome::RollbackFailed.as_str()],
            )
            .await?;
        row.map(|r| decode(r.get(0), r.get(1))).transpose()
    }

    /// This replica's executions that never reached their outcome.
    pub async fn unfinished_own(&self) -> Result<Vec<ExecutionState>, StoreError> {
        let rows = self
            .db
            .get()
            .await?
            .query(
                "SELECT decision_id, state FROM executor_executions WHERE phase <> $1 AND owner = $2 ORDER BY updated_at_ms",
                &[&Phase::Finished.as_str() as &(dyn ToSql + Sync), &self.member],
            )
            .await?;
        rows.iter().map(|r| decode(r.get(0), r.get(1))).collect()
    }

    /// Every replica's unfinished executions on `target`, each with whether it is
    /// this one's; of other replicas' merely claimed executions, only those whose
    /// owner's lease lapsed (a precaution: `starting` is saved before the start is
    /// sent), where a live replica's claim waits for the target.
    pub async fn unfinished_on(&self, target: &str) -> Result<Vec<(ExecutionState, bool)>, StoreError> {
        let rows = self
            .db
            .get()
            .await?
            .query(
                "SELECT e.decision_id, e.state, e.owner FROM executor_executions e
                 WHERE e.phase <> $1 AND e.target = $2
                   AND (e.phase <> $3 OR e.owner = $4
                        OR NOT EXISTS (SELECT 1 FROM executor_members m WHERE m.name = e.owner AND m.lease_until > now()))
                 ORDER BY e.updated_at_ms",
                &[&Phase::Finished.as_str() as &(dyn ToSql + Sync), &target, &Phase::Claimed.as_str(), &self.member],
            )
            .await?;
        rows.iter().map(|r| Ok((decode(r.get(0), r.get(1))?, r.get::<_, &str>(2) == self.member))).collect()
    }

    /// Unfinished executions of other replicas whose lease lapsed.
    pub async fn orphans(&self) -> Result<Vec<Orphan>, StoreError> {
        let rows = self
            .db
            .get()
            .await?
            .query(
                "SELECT e.decision_id, e.target, e.owner, e.fence FROM executor_executions e
                 WHERE e.phase <> $1 AND e.owner <> $2
                   AND NOT EXISTS (SELECT 1 FROM executor_members m WHERE m.name = e.owner AND m.lease_until + $3 * interval '1 millisecond' > now())
                 ORDER BY e.updated_at_ms",
                &[&Phase::Finished.as_str() as &(dyn ToSql + Sync), &self.member, &self.grace_ms()],
            )
            .await?;
        Ok(rows.iter().map(|r| Orphan { decision_id: r.get(0), target: r.get(1), owner: r.get(2), fence: r.get(3) }).collect())
    }

    /// Takes `orphan` over if it is still as it was seen (nobody else took it
    /// first): this replica owns it under a new fencing token, and gets its state.
    /// The owner's member row is locked while its lapse is judged: an append the
    /// owner has in flight under its lease holds that row (`arf_audit::pg`), so
    /// it is in the log before the takeover, or refused.
    pub async fn take_over(&self, orphan: &Orphan) -> Result<Option<ExecutionState>, StoreError> {
        self.check_live()?;
        let row = self
            .db
            .get()
            .await?
            .query_opt(
                "UPDATE executor_executions SET owner = $2, fence = nextval('executor_fences')
                 WHERE decision_id = $1 AND owner = $3 AND fence = $4
                   AND COALESCE((SELECT lease_until FROM executor_members WHERE name = $3 FOR UPDATE) + $5 * interval '1 millisecond' <= now(), true)
                 RETURNING fence, state",
                &[&orphan.decision_id as &(dyn ToSql + Sync), &self.member, &orphan.owner, &orphan.fence, &self.grace_ms()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        self.fences.lock().unwrap_or_else(PoisonError::into_inner).insert(orphan.decision_id.clone(), row.get(0));
        Ok(Some(decode(&orphan.decision_id, row.get(1))?))
    }

    /// Takes the lock on `target` if it is free, already this replica's, or held by
    /// a replica whose lease lapsed (its member row locked while that is judged, as
    /// in [`Shared::take_over`]); returns its fencing token.
    pub async fn try_lock_target(&self, target: &str) -> Result<Option<i64>, StoreError> {
        self.check_live()?;
        let row = self
            .db
            .get()
            .await?
            .query_opt(
                "INSERT INTO executor_target_locks (target, owner, fence) VALUES ($1, $2, nextval('executor_fences'))
                 ON CONFLICT (target) DO UPDATE SET owner = EXCLUDED.owner, fence = EXCLUDED.fence
                 WHERE executor_target_locks.owner = EXCLUDED.owner
                    OR COALESCE((SELECT lease_until FROM executor_members WHERE name = executor_target_locks.owner FOR UPDATE) + $3 * interval '1 millisecond' <= now(), true)
                 RETURNING fence",
                &[&target as &(dyn ToSql + Sync), &self.member, &self.grace_ms()],
            )
            .await?;
        let fence = row.map(|r| r.get::<_, i64>(0));
        if let Some(fence) = fence {
            self.locks.lock().unwrap_or_else(PoisonError::into_inner).insert(target.to_owned(), fence);
        }
        Ok(fence)
    }

    /// Waits for the lock on `target`.
    pub async fn lock_target(&self, target: &str) -> Result<i64, StoreError> {
        let mut wait = Duration::from_millis(20);
        loop {
            if let Some(fence) = self.try_lock_target(target).await? {
                return Ok(fence);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }

    pub async fn unlock_target(&self, target: &str, fence: i64) -> Result<(), StoreError> {
        self.check_live()?;
        self.delete_owned("DELETE FROM executor_target_locks WHERE target = $1 AND owner = $2 AND fence = $3", target, fence).await?;
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if locks.get(target) == Some(&fence) {
            locks.remove(target);
        }
        Ok(())
    }

    /// Runs `delete` (keyed `$1`, owner `$2`, fencing token `$3`) for a row this
    /// replica owns under `fence`; a row owned by another, or under another token,
    /// is left alone.
    async fn delete_owned(&self, delete: &str, key: &str, fence: i64) -> Result<(), StoreError> {
        self.db.get().await?.execute(delete, &[&key as &(dyn ToSql + Sync), &self.member, &fence]).await?;
        Ok(())
    }
}

/// Why a write or a confirmation under this replica's lease matched nothing.
const LAPSED: &str = "this executor's lease lapsed by the database's clock, or another executor took the execution over";

fn fenced(decision_id: &str, reason: &str) -> StoreError {
    StoreError::Fenced { decision_id: decision_id.to_owned(), reason: reason.to_owned() }
}
