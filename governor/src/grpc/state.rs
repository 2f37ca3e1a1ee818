//! The governor's state snapshot at work: the fold a restart and a snapshot share,
//! the snapshot a restart starts from when the log vouches for it, and the task
//! that folds a new one as the log grows (`crate::snapshot`).

use std::sync::Arc;
use std::time::Duration;

use arf_audit_client::{Entry, RecordKind};
use arf_audit_client::state::Unvouched;
use arf_core::records::{self, GovernanceEvent};
use tracing::{info, warn};

use super::{RestoreError, Shared};
use crate::decision::Restored;
use crate::snapshot::{self, FoldSettings, Saved};

/// Where the governor keeps its state snapshot, and when it folds a new one.
pub(super) struct Snapshots {
    pub dir: std::path::PathBuf,
    pub every_records: u64,
    pub check_every: Duration,
    /// The record the last snapshot saved or started from folds the log up to.
    pub through: std::sync::atomic::AtomicU64,
    /// A standby's: the leader's last snapshot record it looked at, kept or not.
    pub looked_at: std::sync::atomic::AtomicU64,
    /// Held by whatever writes the snapshot's files, so that a standby's fold still
    /// running when it takes the lead and the leader's first save never meet.
    pub writing: tokio::sync::Mutex<()>,
}

impl Shared {
    /// What a fold's result depends on besides the log.
    fn fold_settings(&self) -> FoldSettings {
        FoldSettings { rules: snapshot::FOLD_RULES, retain_ms: self.retain_ms }
    }

    /// Folds the log from `from` up to `to`, not included (0: to its head), into `folded`, as it streams
    /// in; the last record folded (seq, hash) and how many were.
    pub(super) async fn fold(&self, folded: &mut Restored, (from, to): (u64, u64)) -> Result<(Option<(u64, String)>, u64), RestoreError> {
        use futures::StreamExt;
        let mut stream = std::pin::pin!(self.audit.stream_range(from, to).await?);
        let mut last = None;
        let mut count = 0u64;
        while let Some(record) = stream.next().await {
            let record = record?;
            folded.add(&record)?;
            count += 1;
            // Settled decisions long expired leave as the log is read, so a rebuild
            // holds no more than a running governor would.
            if record.seq.is_multiple_of(snapshot::EVICT_EVERY) {
                folded.evict(record.time_ms, self.retain_ms);
            }
            last = Some((record.seq, record.hash));
        }
        Ok((last, count))
    }

    /// The state a restart starts from and the record to fold on from: the saved
    /// one when the log vouches for it, else nothing and record 1, said loudly.
    pub(super) async fn starting_state(&self) -> Result<(Restored, u64), RestoreError> {
        let snapshots = &self.snapshots;
        match self.verified_snapshot(&snapshots.dir).await {
            Ok(Some(saved)) => {
                snapshots.through.store(saved.through_seq, std::sync::atomic::Ordering::SeqCst);
                Ok((saved.state, saved.through_seq + 1))
            }
            Ok(None) => Ok((Restored::default(), 1)),
            Err(Unvouched::Audit(error)) => Err(RestoreError::Audit(error)),
            Err(Unvouched::Refused(why)) => {
                tracing::error!(%why, "THE GOVERNOR'S STATE SNAPSHOT IS NOT ONE THE LOG VOUCHES FOR: rebuilding from the whole log instead");
                arf_proto::metrics::inc("arf_governor_state_snapshots_refused_total", "State snapshots a restart did not start from, because the log does not vouch for them.", &[]);
                Ok((Restored::default(), 1))
            }
        }
    }

    /// The state snapshot in `dir`, if there is one and the log vouches for it.
    async fn verified_snapshot(&self, dir: &std::path::Path) -> Result<Option<Saved>, Unvouched> {
        arf_audit_client::state::verified::<Saved>(&self.audit, dir, &self.fold_settings(), "governor", |r, hash, through| {
            r.writer == "governor"
                && r.kind == RecordKind::Decision
                && r.incident_id == records::GOVERNOR_STATE_SNAPSHOT
                && matches!(r.parse::<GovernanceEvent>(), Ok(GovernanceEvent::StateSnapshot { hash: logged, through_seq }) if logged == hash && through_seq == through)
        })
        .await
    }

    /// Saves a new snapshot if the log has grown enough since the last one: folded
    /// from the last verified snapshot (or the start) with the fold a restart uses,
    /// never copied from the live state. Only a governor that decides saves one (a
    /// standby's appends are not the log's to take).
    pub(super) async fn snapshot_if_due(&self) -> Result<bool, String> {
        let snapshots = &self.snapshots;
        if self.check_leading().is_err() || !self.restored.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        let _writing = snapshots.writing.lock().await;
        let (head, _) = self.audit.head().await.map_err(|e| e.to_string())?;
        if head.saturating_sub(snapshots.through.load(std::sync::atomic::Ordering::SeqCst)) < snapshots.every_records {
            return Ok(false);
        }
        let (mut state, from) = match self.verified_snapshot(&snapshots.dir).await {
            Ok(Some(saved)) => (saved.state, saved.through_seq + 1),
            Ok(None) => (Restored::default(), 1),
            Err(Unvouched::Audit(error)) => return Err(format!("cannot read the log: {error}")),
            // A file the log does not vouch for is replaced by one folded from the start.
            Err(Unvouched::Refused(why)) => {
                warn!(%why, "the saved state snapshot is not one the log vouches for; folding a new one from the start");
                (Restored::default(), 1)
            }
        };
        let (Some((through_seq, through_hash)), _) = self.fold(&mut state, (from, 0)).await.map_err(|e| e.to_string())? else { return Ok(false) };
        let saved = Saved { format: snapshot::FORMAT, fold: self.fold_settings(), through_seq, through_hash, state };
        // Written (synced, not yet in place) before the log vouches for it, put in place after:
        // a file that cannot be written never costs a record, and a file in place always has one.
        arf_audit_client::state::save(&self.audit, &snapshots.dir, saved, |hash| {
            Entry::new(records::GOVERNOR_STATE_SNAPSHOT, RecordKind::Decision, records::encode(&GovernanceEvent::StateSnapshot { hash: hash.to_owned(), through_seq }))
        })
        .await?;
        snapshots.through.store(through_seq, std::sync::atomic::Ordering::SeqCst);
        arf_proto::metrics::set("arf_governor_state_snapshot_seq", "The record the governor's latest state snapshot folds the log up to.", &[], through_seq as f64);
        info!(through_seq, "state snapshot saved");
        Ok(true)
    }
}

impl Shared {
    /// A standby keeps a state snapshot too, so that taking the lead folds only the
    /// log after it rather than the whole log: it folds the log through the leader's
    /// latest snapshot (from its own last one), with the fold a restart uses, and
    /// keeps the file only if it hashes to what the leader logged. The log then
    /// vouches for it as for the leader's own: it is the same state. One that hashes
    /// otherwise is not kept, loudly: the two replicas fold the log differently
    /// (other settings, another version), and a restart would be refused it anyway.
    pub(super) async fn follow_leaders_snapshot(&self) -> Result<bool, String> {
        let snapshots = &self.snapshots;
        let logged = self.audit.read_incident(records::GOVERNOR_STATE_SNAPSHOT).await.map_err(|e| format!("cannot read the log: {e}"))?;
        let latest = logged.iter().rev().filter(|r| r.writer == "governor" && r.kind == RecordKind::Decision).find_map(|r| match r.parse::<GovernanceEvent>() {
            Ok(GovernanceEvent::StateSnapshot { hash, through_seq }) => Some((r.seq, hash, through_seq)),
            _ => None,
        });
        let Some((recorded_seq, hash, through_seq)) = latest else { return Ok(false) };
        if through_seq <= snapshots.through.load(std::sync::atomic::Ordering::SeqCst) || recorded_seq <= snapshots.looked_at.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        let _writing = snapshots.writing.lock().await;
        // Took the lead meanwhile: its own snapshots are saved from now on.
        if !self.standing_by() {
            return Ok(false);
        }
        let (mut state, from) = match self.verified_snapshot(&snapshots.dir).await {
            Ok(Some(saved)) if saved.through_seq >= through_seq => {
                snapshots.through.store(saved.through_seq, std::sync::atomic::Ordering::SeqCst);
                return Ok(false);
            }
            Ok(Some(saved)) => (saved.state, saved.through_seq + 1),
            Ok(None) | Err(Unvouched::Refused(_)) => (Restored::default(), 1),
            Err(Unvouched::Audit(error)) => return Err(format!("cannot read the log: {error}")),
        };
        let (folded, _) = self.fold(&mut state, (from, through_seq + 1)).await.map_err(|e| e.to_string())?;
        let Some((last_seq, through_hash)) = folded.filter(|(seq, _)| *seq == through_seq) else {
            return Err(format!("the log did not stream records {from} to {through_seq}"));
        };
        let saved = Saved { format: snapshot::FORMAT, fold: self.fold_settings(), through_seq: last_seq, through_hash, state };
        let kept = arf_audit_client::state::keep_if_logged(&snapshots.dir, saved, &hash, recorded_seq).await?;
        // Kept or not, not folded again until the leader saves another.
        snapshots.looked_at.store(recorded_seq, std::sync::atomic::Ordering::SeqCst);
        if !kept {
            tracing::error!(recorded_seq, through_seq, "the leader's state snapshot is not the state this standby folds from the same records: not kept (are the replicas' settings or versions the same?); taking the lead will fold the whole log");
            return Ok(false);
        }
        snapshots.through.store(through_seq, std::sync::atomic::Ordering::SeqCst);
        arf_proto::metrics::set("arf_governor_state_snapshot_seq", "The record the governor's latest state snapshot folds the log up to.", &[], through_seq as f64);
        info!(through_seq, recorded_seq, "standby: the leader's state snapshot folded and kept");
        Ok(true)
    }
}

/// While this replica stands by, keeps a state snapshot as the leader saves one
/// ([`Shared::follow_leaders_snapshot`]); ends once it leads (then it saves its own).
pub(super) fn follow_snapshots_while_standing_by(shared: &Arc<Shared>) {
    every_check(shared, Shared::standing_by, "cannot keep a state snapshot while standing by; taking the lead will fold more of the log", |shared| async move {
        shared.follow_leaders_snapshot().await
    });
}

/// Folds a new state snapshot in the background whenever the log has grown
/// `governor.snapshot_every_records` past the last one, for as long as the governor lives.
pub(super) fn snapshot_periodically(shared: &Arc<Shared>) {
    every_check(shared, |_| true, "cannot save the governor's state snapshot; restarts fold more of the log until one is saved", |shared| async move {
        shared.snapshot_if_due().await
    });
}

/// Runs `step` every `governor.snapshot_check_secs` while the governor lives and
/// `go_on` holds. After a failure (said with `failed`), waits nine times as long: a
/// full disk or a log outage is not fixed in a minute.
fn every_check<F, Fut>(shared: &Arc<Shared>, go_on: fn(&Shared) -> bool, failed: &'static str, step: F)
where
    F: Fn(Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<bool, String>> + Send,
{
    let every = shared.snapshots.check_every;
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(shared) = shared.upgrade() else { return };
            if !go_on(&shared) {
                return;
            }
            if let Err(error) = step(shared).await {
                warn!(%error, "{failed}");
                tokio::time::sleep(every.saturating_mul(9)).await;
            }
        }
    });
}
