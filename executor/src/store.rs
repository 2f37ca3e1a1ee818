//! The durable record of executions, keyed by decision id, which makes execution
//! idempotent: a decision id is claimed atomically once, and every later request
//! for it gets the stored state instead of a second run.
//!
//! On one machine the record is a sled database in the data directory ([`Local`]);
//! with `executor.postgres` it is in PostgreSQL, shared by every executor replica
//! (`crate::shared`), so a decision is claimed once whichever replica it reaches.
//! The ledger of running process groups stays local either way: it is about this
//! host's processes.

use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use arf_core::decision::DecisionBody;

use crate::execution::{ExecutionState, Phase};

/// What a restarted executor needs to settle an execution it was running: the
/// decision as it was admitted. Secrets are never stored; they are read again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDecision {
    pub body: DecisionBody,
    pub decision_seq: u64,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the execution store at `{path}`: {source}")]
    Open { path: String, source: sled::Error },
    #[error("execution store error: {0}")]
    Storage(#[from] sled::Error),
    #[error("execution store error: {0}")]
    Sync(String),
    #[error("stored execution of decision `{decision_id}` cannot be read: {message}")]
    Corrupt { decision_id: String, message: String },
    #[error("execution of decision `{decision_id}` cannot be encoded: {message}")]
    Encode { decision_id: String, message: String },
    #[error("the executors' database: {0}")]
    Database(String),
    /// This executor's lease lapsed by the database's clock, or another executor
    /// took this execution over: whatever this one does with it from now on is
    /// refused.
    #[error("decision `{decision_id}` is no longer this executor's: {reason}")]
    Fenced { decision_id: String, reason: String },
    #[error("this executor's lease on the executors' database has lapsed: {0}")]
    LeaseLost(String),
}

impl From<arf_pg::PgError> for StoreError {
    fn from(error: arf_pg::PgError) -> Self {
        match error {
            arf_pg::PgError::LeaseLost(why) => Self::LeaseLost(why),
            other => Self::Database(other.to_string()),
        }
    }
}

impl From<arf_pg::tokio_postgres::Error> for StoreError {
    fn from(error: arf_pg::tokio_postgres::Error) -> Self {
        Self::Database(error.to_string())
    }
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the decision id now and must run it (or release it).
    Claimed,
    /// Someone claimed it before; here is where that execution stands.
    Existing(ExecutionState),
}

/// The execution store: this machine's, or the replicas' shared one.
pub struct Store {
    local: Local,
    shared: Option<std::sync::Arc<crate::shared::Shared>>,
}

impl Store {
    /// The store in a sled database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { local: Local::open(path)?, shared: None })
    }

    /// Keeps executions in the replicas' shared database instead; the local
    /// database keeps only the ledger of process groups.
    pub fn with_shared(mut self, shared: std::sync::Arc<crate::shared::Shared>) -> Self {
        self.shared = Some(shared);
        self
    }

    pub fn shared(&self) -> Option<&std::sync::Arc<crate::shared::Shared>> {
        self.shared.as_ref()
    }

    /// Whether the local store stopped after a failed sync ([`crate::durable`]).
    pub fn stopped(&self) -> bool {
        self.local.db.stopped()
    }

    /// [`Store::stopped`], for a caller that outlives this handle (readiness).
    pub fn stop_watch(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let db = self.local.db.clone();
        move || db.stopped()
    }

    pub async fn claim(&self, state: &ExecutionState, decision: &StoredDecision) -> Result<Claim, StoreError> {
        match &self.shared {
            Some(shared) => shared.claim(state, decision).await,
            None => self.local.claim(state, decision).await,
        }
    }

    pub async fn save(&self, state: &ExecutionState) -> Result<(), StoreError> {
        match &self.shared {
            Some(shared) => shared.save(state).await,
            None => self.local.save(state).await,
        }
    }

    pub async fn release(&self, decision_id: &str) -> Result<(), StoreError> {
        match &self.shared {
            Some(shared) => shared.release(decision_id).await,
            None => self.local.release(decision_id).await,
        }
    }

    pub async fn decision(&self, decision_id: &str) -> Result<Option<StoredDecision>, StoreError> {
        match &self.shared {
            Some(shared) => shared.decision(decision_id).await,
            None => self.local.decision(decision_id),
        }
    }

    pub fn processes(&self) -> Result<crate::runner::processes::Ledger, StoreError> {
        self.local.processes()
    }

    pub async fn get(&self, decision_id: &str) -> Result<Option<ExecutionState>, StoreError> {
        match &self.shared {
            Some(shared) => shared.get(decision_id).await,
            None => self.local.get(decision_id),
        }
    }

    pub async fn latest_failed_rollback(&self, target: &str) -> Result<Option<ExecutionState>, StoreError> {
        match &self.shared {
            Some(shared) => shared.latest_failed_rollback(target).await,
            None => self.local.latest_failed_rollback(target),
        }
    }

    /// This executor's executions that never reached their outcome.
    pub async fn unfinished(&self) -> Result<Vec<ExecutionState>, StoreError> {
        match &self.shared {
            Some(shared) => shared.unfinished_own().await,
            None => self.local.unfinished(),
        }
    }

    /// Every executor's unfinished executions on `target`, each with whether it is
    /// this executor's own.
    pub async fn unfinished_on(&self, target: &str) -> Result<Vec<(ExecutionState, bool)>, StoreError> {
        match &self.shared {
            Some(shared) => shared.unfinished_on(target).await,
            None => Ok(self.local.unfinished()?.into_iter().filter(|s| s.target == target).map(|s| (s, true)).collect()),
        }
    }
}

/// The execution store on one machine: one sled database.
#[derive(Debug)]
pub struct Local {
    db: crate::durable::Durable,
    executions: sled::Tree,
    decisions: sled::Tree,
}

impl Local {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // sled releases its file lock from a background thread after the last handle
        // is dropped, so an executor restarted in the same process may briefly find
        // the lock held; wait a bounded while for it.
        let mut attempts = 0;
        let db = loop {
            match sled::open(path) {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::Other && attempts < 40 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => return Err(StoreError::Open { path: path.display().to_string(), source }),
            }
        };
        let executions = db.open_tree("executions")?;
        let decisions = db.open_tree("decisions")?;
        let db = crate::durable::Durable::new(db, path).map_err(|e| StoreError::Sync(format!("cannot sync `{}`: {e}", path.display())))?;
        Ok(Self { db, executions, decisions })
    }

    /// Claims `state.decision_id` if nobody has, durably, before anything runs,
    /// keeping `decision` beside it for recovery after a crash.
    pub async fn claim(&self, state: &ExecutionState, decision: &StoredDecision) -> Result<Claim, StoreError> {
        self.live()?;
        let bytes = encode(state)?;
        let swapped = self.executions.compare_and_swap(state.decision_id.as_bytes(), None::<&[u8]>, Some(bytes))?;
        match swapped {
            Ok(()) => {
                let decision = serde_json::to_vec(decision)
                    .map_err(|e| StoreError::Encode { decision_id: state.decision_id.clone(), message: e.to_string() })?;
                self.decisions.insert(state.decision_id.as_bytes(), decision)?;
                self.db.flush().await.map_err(StoreError::Sync)?;
                Ok(Claim::Claimed)
            }
            Err(conflict) => match conflict.current {
                Some(current) => Ok(Claim::Existing(decode(&state.decision_id, &current)?)),
                // The only writer of a key is its claimant, and only it removes the
                // key, so a conflict always shows a value; treat the impossible case
                // as a claim taken by someone else that is still starting.
                None => Ok(Claim::Existing(state.clone())),
            },
        }
    }

    /// Records where a claimed execution stands, durably.
    pub async fn save(&self, state: &ExecutionState) -> Result<(), StoreError> {
        self.live()?;
        self.executions.insert(state.decision_id.as_bytes(), encode(state)?)?;
        self.db.flush().await.map_err(StoreError::Sync)?;
        Ok(())
    }

    /// Gives a claim back when nothing ran, so that a retry can run the decision.
    pub async fn release(&self, decision_id: &str) -> Result<(), StoreError> {
        self.live()?;
        self.executions.remove(decision_id.as_bytes())?;
        self.decisions.remove(decision_id.as_bytes())?;
        self.db.flush().await.map_err(StoreError::Sync)?;
        Ok(())
    }

    /// The decision kept with a claim, if any.
    pub fn decision(&self, decision_id: &str) -> Result<Option<StoredDecision>, StoreError> {
        self.live()?;
        self.decisions
            .get(decision_id.as_bytes())?
            .map(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt { decision_id: decision_id.to_owned(), message: e.to_string() })
            })
            .transpose()
    }

    /// The record of process groups that running steps started, in the same database.
    pub fn processes(&self) -> Result<crate::runner::processes::Ledger, StoreError> {
        crate::runner::processes::Ledger::open(&self.db).map_err(StoreError::Sync)
    }

    /// An error once a sync failed: what sled holds in memory may then not be on disk.
    fn live(&self) -> Result<(), StoreError> {
        self.db.db().map(|_| ()).map_err(StoreError::Sync)
    }

    /// How many of its flushes were synced.
    pub fn syncs(&self) -> u64 {
        self.db.syncs()
    }

    pub fn get(&self, decision_id: &str) -> Result<Option<ExecutionState>, StoreError> {
        self.live()?;
        self.executions.get(decision_id.as_bytes())?.map(|bytes| decode(decision_id, &bytes)).transpose()
    }

    /// The most recent execution on `target` that ended `rollback_failed`.
    pub fn latest_failed_rollback(&self, target: &str) -> Result<Option<ExecutionState>, StoreError> {
        self.live()?;
        let mut latest: Option<ExecutionState> = None;
        for item in self.executions.iter() {
            let (key, value) = item?;
            let state = decode(&String::from_utf8_lossy(&key), &value)?;
            if state.target == target
                && state.outcome == crate::execution::Outcome::RollbackFailed
                && latest.as_ref().is_none_or(|l| state.updated_at_ms > l.updated_at_ms)
            {
                latest = Some(state);
            }
        }
        Ok(latest)
    }

    /// Executions that never reached their outcome: in flight, or cut off by a
    /// crash or an audit failure.
    pub fn unfinished(&self) -> Result<Vec<ExecutionState>, StoreError> {
        self.live()?;
        let mut out = Vec::new();
        for item in self.executions.iter() {
            let (key, value) = item?;
            let state = decode(&String::from_utf8_lossy(&key), &value)?;
            if state.phase != Phase::Finished {
                out.push(state);
            }
        }
        Ok(out)
    }
}

pub(crate) fn encode(state: &ExecutionState) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(state)
        .map_err(|e| StoreError::Encode { decision_id: state.decision_id.clone(), message: e.to_string() })
}

pub(crate) fn decode(decision_id: &str, bytes: &[u8]) -> Result<ExecutionState, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Corrupt { decision_id: decision_id.to_owned(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::Outcome;

    fn decision(id: &str) -> StoredDecision {
        StoredDecision {
            body: DecisionBody {
                version: 1,
                decision_id: id.into(),
                incident_id: "inc-1".into(),
                proposal_id: "p".into(),
                snapshot_hash: "s".into(),
                pathway: "restart".into(),
                pathway_digest: "d".into(),
                target: "web".into(),
                parameters: serde_json::json!({}),
                route: arf_core::decision::Route::Autonomous,
                approvals: vec![],
                risk_score: 0.1,
                issued_at_ms: 0,
                expires_at_ms: 1,
            },
            decision_seq: 7,
        }
    }

    fn state(id: &str) -> ExecutionState {
        ExecutionState {
            decision_id: id.into(),
            incident_id: "inc-1".into(),
            pathway: "restart".into(),
            target: "web".into(),
            outcome: Outcome::Running,
            phase: Phase::Claimed,
            detail: String::new(),
            verification: vec![],
            claimed_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    /// sled's own flush is not durable (`sync_file_range`): each write of an
    /// execution is synced after it, and after a sync fails the store refuses
    /// everything until a restart.
    #[tokio::test]
    async fn every_write_is_synced_and_a_failed_sync_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("executions.sled");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.claim(&state("dec-1"), &decision("dec-1")).await.unwrap(), Claim::Claimed);
        assert_eq!(store.local.syncs(), 1);
        let mut acting = state("dec-1");
        acting.phase = Phase::Acting;
        store.save(&acting).await.unwrap();
        assert_eq!(store.local.syncs(), 2);
        // A claim already taken writes nothing.
        assert!(matches!(store.claim(&state("dec-1"), &decision("dec-1")).await.unwrap(), Claim::Existing(_)));
        assert_eq!(store.local.syncs(), 2);
        store.release("dec-1").await.unwrap();
        assert_eq!(store.local.syncs(), 3);
        // After a failed sync the store stops: every use is an error, reads too,
        // since memory may hold what the disk does not.
        store.local.db.stop_for_test();
        let error = store.save(&acting).await.unwrap_err();
        assert!(matches!(error, StoreError::Sync(_)) && error.to_string().contains("restart the executor"), "{error}");
        assert!(store.get("dec-1").await.is_err());
        assert!(store.claim(&state("dec-2"), &decision("dec-2")).await.is_err());
        assert!(store.unfinished().await.is_err());
        assert_eq!(store.local.syncs(), 3);
    }

    #[tokio::test]
    async fn claims_once_survives_reopening_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("executions.sled");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.claim(&state("dec-1"), &decision("dec-1")).await.unwrap(), Claim::Claimed);
            let mut finished = state("dec-1");
            finished.outcome = Outcome::Verified;
            finished.phase = Phase::Finished;
            store.save(&finished).await.unwrap();
            assert_eq!(store.claim(&state("dec-1"), &decision("dec-1")).await.unwrap(), Claim::Existing(finished));
            assert_eq!(store.claim(&state("dec-2"), &decision("dec-2")).await.unwrap(), Claim::Claimed);
        }
        let store = Store::open(&path).unwrap();
        assert!(
            matches!(store.claim(&state("dec-1"), &decision("dec-1")).await.unwrap(), Claim::Existing(s) if s.outcome == Outcome::Verified)
        );
        assert_eq!(store.unfinished().await.unwrap(), vec![state("dec-2")]);
        assert_eq!(store.decision("dec-2").await.unwrap(), Some(decision("dec-2")));
        store.release("dec-2").await.unwrap();
        assert_eq!(store.get("dec-2").await.unwrap(), None);
        assert_eq!(store.claim(&state("dec-2"), &decision("dec-2")).await.unwrap(), Claim::Claimed);
    }
}
