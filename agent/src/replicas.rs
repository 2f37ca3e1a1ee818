//! Agent replicas on PostgreSQL (`agent.postgres`, issue 16): any number of agents
//! take signals into one log, and grouping stays what one agent would do, so a
//! storm spread over several replicas makes one incident and one diagnosis.
//!
//! The incidents live in the log, as ever. Each replica follows the log for what
//! its peers appended (telling its own appends from theirs,
//! [`arf_audit_client::own`]) and folds it into its state as a restart would. The
//! database only arbitrates (`pg/migrations/0004_agent.sql`):
//!
//! - **Grouping keys.** A replica places signals of a grouping key (environment,
//!   service, family) only while it holds that key's advisory lock, in a
//!   transaction of its own, and only after its state has taken in the log up to
//!   the last record the key's previous holder appended (`agent_keys.last_seq`).
//!   So two replicas do not both open an incident for one storm, and every signal
//!   joins the incident one agent would have chosen (ARCHITECTURE.md says what a
//!   crash at the worst moment can still do). Taking a key's lock draws the key a
//!   new token and marks it as appending; a holder that died before recording its
//!   last record leaves the mark, and the next holder then reads up to the log's
//!   head. Appends under the key carry the token, and the log takes them only
//!   while the key still holds it (`pg/migrations/0007_agent_key_tokens.sql`), so
//!   a holder whose lock's session was dropped behind its back appends nothing
//!   under the key once a peer has taken it.
//! - **Incidents.** The replica that opens an incident claims it
//!   (`agent_incidents`) before logging the opening, and it alone diagnoses it.
//!   Its snapshot is taken under the key's lock, after the log's signals for the
//!   key are in. Once the owner's lease lapses (plus one lease of grace), another
//!   replica takes over its unfinished incidents and resumes each as a restarted
//!   agent resumes its own.
//! - **Membership.** Each replica holds a lease on its name (`agent.replica`,
//!   [`arf_pg::lease::Lease`]); one whose lease lapsed stops (exit 75) to be
//!   restarted.

use std::sync::Arc;
use std::time::Duration;

use arf_pg::lease::Lease;
use arf_pg::{Client, Connection, PgError, Settings, ToSql};
use tracing::warn;

/// The class of the advisory locks on grouping keys (`pg_advisory_xact_lock(int, int)`),
/// "AGNT": distinct from every other lock ARF takes.
pub const KEY_LOCK_CLASS: i32 = 0x4147_4e54;
/// The `application_name` of a session in which a replica holds grouping-key
/// locks, followed by the replica's incarnation ([`Replicas::free_lapsed_holders`]).
pub const HOLDER_SESSION: &str = "arf-keys ";
/// How many transactions holding key locks may be open at once: the batches in
/// flight and the diagnoses taking their snapshots.
const HOLDERS: usize = 6;

pub struct Replicas {
    db: Arc<Connection>,
    lease: Arc<Lease>,
    settings: Settings,
    /// Connections for the transactions that hold key locks (each holds one at a time).
    holders: Vec<Arc<tokio::sync::Mutex<Option<Holder>>>>,
}

/// The connections of one holder slot: `locks` holds grouping-key locks in its
/// transaction (named for [`Replicas::free_lapsed_holders`]); `draws` draws the
/// keys' tokens once they are held.
struct Holder {
    locks: Client,
    draws: Client,
}

/// Key locks held in an open transaction; committed by [`Held::release`], rolled
/// back (releasing the locks) if dropped.
pub struct Held {
    replicas: Arc<Replicas>,
    /// The connection whose transaction holds the locks; `None` once released.
    client: Option<tokio::sync::OwnedMutexGuard<Option<Holder>>>,
    /// Each key with the token drawn for it as its lock was taken: appends under
    /// the keys carry them, and the log takes them only while every key's row
    /// still holds its token ([`arf_audit_client::AuditClient::under_keys`]).
    pub tokens: Vec<(String, i64)>,
    /// Each key's last log record, as its previous holders recorded it (0: none).
    pub last: Vec<(String, u64)>,
    /// Whether a previous holder may have appended without recording it.
    pub unrecorded: bool,
}

/// An incident whose owner's lease lapsed, to take over.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub incident_id: String,
    pub owner: String,
}

impl Replicas {
    /// Connects, checks the schema, and joins as `member` (waiting for an earlier
    /// process under that name to lapse).
    pub async fn join(settings: &Settings, member: &str, lease: Duration) -> Result<Arc<Self>, PgError> {
        let (db, lease) = Lease::open(settings, "agent_members", member, &arf_core::canonical::random_id("agt"), lease).await?;
        Ok(Arc::new(Self { db, lease, settings: settings.clone(), holders: (0..HOLDERS).map(|_| Arc::new(tokio::sync::Mutex::new(None))).collect() }))
    }

    pub fn member(&self) -> &str {
        self.lease.member()
    }

    /// This process's incarnation of its name, which its appends are fenced by.
    pub fn incarnation(&self) -> &str {
        self.lease.incarnation()
    }

    pub fn is_live(&self) -> bool {
        self.lease.is_live()
    }

    pub fn check_live(&self) -> Result<(), PgError> {
        self.lease.check_live()
    }

    pub fn lease(&self) -> Duration {
        self.lease.length()
    }

    /// Renews this replica's lease; should it lapse, the process exits (75).
    pub fn renew_or_exit(&self) {
        self.lease.renew_or_exit("agent replica");
    }

    /// Takes the locks of `keys` (waiting for their holders), in a transaction of
    /// its own, and reads where their previous holders left the log.
    pub async fn hold(self: &Arc<Self>, keys: &[String]) -> Result<Held, PgError> {
        self.check_live()?;
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let mut client = self.holder().await;
        if client.as_ref().is_none_or(|h| h.locks.is_closed() || h.draws.is_closed()) {
            let fresh = self.settings.connect().await?;
            arf_pg::check(&fresh).await?;
            // No idle timeout: the server must never free a live holder's locks behind
            // its back. A holder that dies frees them as its connection closes; one
            // frozen, or on a host gone silent, keeps them until its peers end the
            // session once its lease lapsed (named by its incarnation, for that:
            // `free_lapsed_holders`). A waiter gives up after 30 s and its batch is
            // refused, to be retried.
            let name = format!("{HOLDER_SESSION}{}", self.incarnation()).replace('\'', "''");
            fresh.batch_execute(&format!("SET lock_timeout = '30s'; SET application_name = '{name}'")).await?;
            // Tokens are drawn, and keys' last records recorded, on a connection of
            // their own: a draw may wait for an append in flight, and must not hold up
            // the lease's renewals meanwhile. Its commits need not wait for the disk:
            // an append under a drawn token commits durably, which makes every earlier
            // change durable with it, the draw included; a draw lost in a crash had
            // nothing logged under it (its holder's placements were never taken), and
            // a lost record of a key's last record leaves the key marked as appending,
            // so the next holder reads the log to its head.
            let draws = self.settings.connect().await?;
            draws.batch_execute("SET lock_timeout = '30s'; SET synchronous_commit = off").await?;
            *client = Some(Holder { locks: fresh, draws });
        }
        let Some(Holder { locks: db, draws }) = client.as_ref() else { return Err(PgError::Schema("no connection".to_owned())) };
        // Begun here and ended by `release`, or rolled back when the holder is
        // dropped (and here, should an earlier `hold` have failed halfway).
        db.batch_execute("ROLLBACK; BEGIN").await?;
        // In one order, so two holders of overlapping keys never wait on each other.
        db.execute(
            "SELECT pg_advisory_xact_lock($1, h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($2::text[]) AS k ORDER BY 1) AS ordered",
            &[&KEY_LOCK_CLASS as &(dyn ToSql + Sync), &keys],
        )
        .await?;
        // Each key gets a new token, and is marked as appending (a holder that dies
        // before recording its last record leaves the mark, and the next holder
        // reads the log to its head). The draw waits for any append in flight under
        // a key's old token (the log holds its row for share until it commits), so
        // what an earlier holder appended is in the log before this one reads it,
        // and nothing it appends after is taken. What the previous holder recorded
        // is read as it was before this statement.
        let rows = draws
            .query(
                "WITH before AS (SELECT key, last_seq, appending FROM agent_keys WHERE key = ANY($1)),
                      drawn AS (
                          INSERT INTO agent_keys (key, appending, token)
                          SELECT k, true, nextval('agent_key_tokens') FROM unnest($1::text[]) AS k ORDER BY k
                          ON CONFLICT (key) DO UPDATE SET appending = true, token = EXCLUDED.token
                          RETURNING key, token
                      )
                 SELECT d.key, d.token, COALESCE(b.last_seq, 0), COALESCE(b.appending, false) FROM drawn d LEFT JOIN before b USING (key)",
                &[&keys],
            )
            .await?;
        let drawn: std::collections::HashMap<&str, (i64, u64)> =
            rows.iter().map(|r| (r.get::<_, &str>(0), (r.get::<_, i64>(1), u64::try_from(r.get::<_, i64>(2)).unwrap_or(0)))).collect();
        let mut tokens = Vec::with_capacity(keys.len());
        let mut last = Vec::with_capacity(keys.len());
        for key in &keys {
            let Some((token, seq)) = drawn.get(key.as_str()) else { return Err(PgError::Schema(format!("no token was drawn for grouping key `{key}`"))) };
            tokens.push((key.clone(), *token));
            last.push((key.clone(), *seq));
        }
        let unrecorded = rows.iter().any(|r| r.get::<_, bool>(3));
        Ok(Held { replicas: Arc::clone(self), client: Some(client), tokens, last, unrecorded })
    }

    async fn holder(&self) -> tokio::sync::OwnedMutexGuard<Option<Holder>> {
        for slot in &self.holders {
            if let Ok(guard) = Arc::clone(slot).try_lock_owned() {
                return guard;
            }
        }
        let i = usize::try_from(arf_core::time::now_ms()).unwrap_or(0) % self.holders.len();
        Arc::clone(&self.holders[i]).lock_owned().await
    }

    /// Ends the database sessions in which replicas whose lease lapsed one lease ago
    /// (the grace a takeover waits) still hold grouping-key locks, so their keys go
    /// to the live replicas. A replica frozen (a stop signal, a frozen VM) keeps its
    /// sessions, and their locks, for as long as the server keeps them, which for a
    /// stopped process on a live host is for ever; whatever it appends once it
    /// resumes is refused by the log, which checks its lease. The lapsed replicas'
    /// member rows are locked while they are judged, as in a takeover, so an
    /// append of theirs still committing comes first. A session of a live replica
    /// (by its incarnation) is never ended. Returns how many were ended.
    pub async fn free_lapsed_holders(&self) -> Result<usize, PgError> {
        let rows = self
            .db
            .get()
            .await?
            .query(
                "WITH lapsed AS (
                     SELECT $1 || incarnation AS session FROM agent_members WHERE lease_until + $2 * interval '1 millisecond' <= now() FOR UPDATE
                 )
                 SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
                 WHERE a.datname = current_database() AND starts_with(a.application_name, $1)
                   AND (a.application_name IN (SELECT session FROM lapsed)
                        OR NOT EXISTS (SELECT 1 FROM agent_members m WHERE $1 || m.incarnation = a.application_name))",
                &[&HOLDER_SESSION as &(dyn ToSql + Sync), &self.lease.grace_ms()],
            )
            .await?;
        Ok(rows.iter().filter(|r| r.get::<_, bool>(0)).count())
    }

    /// Claims `incident_ids` as this replica's, before their opening is logged.
    pub async fn claim(&self, incident_ids: &[String]) -> Result<(), PgError> {
        if incident_ids.is_empty() {
            return Ok(());
        }
        self.check_live()?;
        self.db
            .get()
            .await?
            .execute(
                "INSERT INTO agent_incidents (incident_id, owner) SELECT unnest($1::text[]), $2 ON CONFLICT (incident_id) DO NOTHING",
                &[&incident_ids as &(dyn ToSql + Sync), &self.member()],
            )
            .await?;
        Ok(())
    }

    /// Whether this replica diagnoses `incident_id`.
    pub async fn owns(&self, incident_id: &str) -> Result<bool, PgError> {
        let row = self.db.get().await?.query_opt("SELECT owner FROM agent_incidents WHERE incident_id = $1", &[&incident_id]).await?;
        Ok(row.is_some_and(|r| r.get::<_, &str>(0) == self.member()))
    }

    /// Marks `incident_id` as needing no more work from its owner, only while this
    /// process holds its lease by the database's clock: a replica whose lease
    /// lapsed leaves the incident to whoever takes it over.
    pub async fn finished(&self, incident_id: &str) {
        let done = async {
            self.db
                .get()
                .await?
                .execute(
                    "UPDATE agent_incidents SET done = true WHERE incident_id = $1 AND owner = $2
                       AND EXISTS (SELECT 1 FROM agent_members WHERE name = $2 AND incarnation = $3 AND lease_until > clock_timestamp())",
                    &[&incident_id as &(dyn ToSql + Sync), &self.member(), &self.incarnation()],
                )
                .await?;
            Ok::<_, PgError>(())
        };
        if let Err(error) = done.await {
            warn!(%incident_id, %error, "cannot mark the incident finished in the agents' database; a takeover would find it done in the log");
        }
    }

    /// The incidents this replica owns and has not marked done, claimed at least
    /// `settled` ago (an opening still on its way into the log is left alone).
    pub async fn own_open(&self, settled: Duration) -> Result<Vec<String>, PgError> {
        let rows = self
            .db
            .get()
            .await?
            .query(
                "SELECT incident_id FROM agent_incidents WHERE owner = $1 AND NOT done AND claimed_at < now() - $2 * interval '1 millisecond' ORDER BY claimed_at LIMIT 500",
                &[&self.member() as &(dyn ToSql + Sync), &(settled.as_millis() as f64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Unfinished incidents whose owner's lease lapsed one lease ago, or whose
    /// owner is gone from the members.
    pub async fn orphans(&self) -> Result<Vec<Orphan>, PgError> {
        let rows = self
            .db
            .get()
            .await?
            .query(
                "SELECT i.incident_id, i.owner FROM agent_incidents i LEFT JOIN agent_members m ON m.name = i.owner
                 WHERE NOT i.done AND i.owner <> $1
                   AND (m.name IS NULL OR m.lease_until + $2 * interval '1 millisecond' < now())
                 ORDER BY i.claimed_at LIMIT 100",
                &[&self.member() as &(dyn ToSql + Sync), &self.lease.grace_ms()],
            )
            .await?;
        Ok(rows.iter().map(|r| Orphan { incident_id: r.get(0), owner: r.get(1) }).collect())
    }

    /// Takes `orphan` over; false when another replica took it first, or its owner
    /// is back. The owner's member row is locked while its lapse is judged, so a
    /// process rejoining under the owner's name either finds the incident taken
    /// (and leaves it) or keeps it (and this takes nothing).
    pub async fn take_over(&self, orphan: &Orphan) -> Result<bool, PgError> {
        self.check_live()?;
        let taken = self
            .db
            .get()
            .await?
            .execute(
                "WITH lapsed AS (
                     SELECT name FROM agent_members WHERE name = $3 AND lease_until + $4 * interval '1 millisecond' < now() FOR UPDATE
                 )
                 UPDATE agent_incidents SET owner = $2
                 WHERE incident_id = $1 AND owner = $3 AND NOT done
                   AND (EXISTS (SELECT 1 FROM lapsed) OR NOT EXISTS (SELECT 1 FROM agent_members WHERE name = $3))",
                &[&orphan.incident_id as &(dyn ToSql + Sync), &self.member(), &orphan.owner, &self.lease.grace_ms()],
            )
            .await?;
        Ok(taken == 1)
    }
}

impl Held {
    /// Right before appending: checks that this replica's lease is live and that the
    /// locks are still held (their connection and transaction answer). The keys
    /// were marked as appending when they were taken; the log checks their tokens.
    pub async fn appending(&self) -> Result<(), PgError> {
        self.replicas.check_live()?;
        match self.client.as_deref() {
            Some(Some(holder)) => holder.locks.batch_execute("SELECT 1").await?,
            _ => return Err(PgError::LeaseLost("the grouping-key locks are no longer held".to_owned())),
        }
        Ok(())
    }

    /// Records the last record appended for these keys, and gives the locks back.
    /// Only keys that still hold this holder's token are written: a holder whose
    /// lock's session was dropped behind its back changes nothing a later holder
    /// relies on.
    pub async fn release(mut self, appended: u64) -> Result<(), PgError> {
        let seq = i64::try_from(appended).unwrap_or(i64::MAX);
        let Some(Some(holder)) = self.client.as_deref() else { return Err(PgError::LeaseLost("the grouping-key locks are no longer held".to_owned())) };
        let (keys, tokens): (Vec<&str>, Vec<i64>) = self.tokens.iter().map(|(key, token)| (key.as_str(), *token)).unzip();
        holder.draws.execute(
            "UPDATE agent_keys SET last_seq = GREATEST(last_seq, $3), appending = false WHERE (key, token) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))",
            &[&keys as &(dyn ToSql + Sync), &tokens, &seq],
        )
        .await?;
        if let Some(guard) = self.client.take()
            && let Some(holder) = guard.as_ref()
        {
            holder.locks.batch_execute("COMMIT").await?;
        }
        Ok(())
    }
}

impl Drop for Held {
    /// A holder dropped unreleased (an error, a cancelled request) gives its locks
    /// back at once, not when the server times its transaction out.
    fn drop(&mut self) {
        if let Some(guard) = self.client.take() {
            tokio::spawn(async move {
                if let Some(holder) = guard.as_ref()
                    && let Err(error) = holder.locks.batch_execute("ROLLBACK").await
                {
                    warn!(%error, "cannot give grouping-key locks back; they are freed when this connection is next used or closes");
                }
            });
        }
    }
}
