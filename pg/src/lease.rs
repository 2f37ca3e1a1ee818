//! A replica's lease on its name (issue 16): the membership that executor and
//! agent replicas hold in their table of members (`executor_members`,
//! `agent_members`), and the one lease governor replicas contend for (the row
//! `leader` of `governor_members`), renewed every third of its length with the
//! database's clock.
//! What a replica owns (executions, target locks, incidents) is its own only while
//! its lease holds; once it lapses, and one more lease has passed as grace,
//! another replica takes it over.
//!
//! - A second process under a live name waits for the lease to lapse rather than
//!   share it.
//! - A lease that lapsed is never renewed: the replica learns it from the
//!   renewal task and must stop acting, since another replica may be taking its
//!   work over.
//! - By its own clock a replica counts its lease from before each renewal was
//!   sent, so it believes itself live no longer than the database does.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::{Connection, PgError, ToSql};

/// How long a replica's lease lasts by default (`lease_secs` of every role).
pub fn default_lease_secs() -> u64 {
    10
}

pub struct Lease {
    db: Arc<Connection>,
    /// The members' table, `*_members` (name, incarnation, lease_until).
    table: &'static str,
    member: String,
    incarnation: String,
    lease: Duration,
    /// Until when the lease is known to hold, by this host's clock.
    live_until: Mutex<Instant>,
    /// Set for good once the lease lapsed.
    lost: Mutex<bool>,
    /// Set once given back ([`Lease::release`]): the renewal then ends quietly.
    released: std::sync::atomic::AtomicBool,
}

impl Lease {
    /// Joins `table` as `member` (this process's `incarnation` of it), waiting for
    /// an earlier process under that name to let its lease lapse plus the grace a
    /// takeover waits; gives up, naming the clash, after four leases.
    pub async fn join(db: Arc<Connection>, table: &'static str, member: &str, incarnation: &str, lease: Duration) -> Result<Self, PgError> {
        Self::join_waiting(db, table, member, incarnation, lease, false).await
    }

    /// [`Lease::join`]; `standby` when waiting for a live holder is this replica's
    /// normal state (a governor standing by), so it is not warned about.
    async fn join_waiting(db: Arc<Connection>, table: &'static str, member: &str, incarnation: &str, lease: Duration, standby: bool) -> Result<Self, PgError> {
        let this = Self {
            db,
            table,
            member: member.to_owned(),
            incarnation: incarnation.to_owned(),
            lease,
            live_until: Mutex::new(Instant::now()),
            lost: Mutex::new(false),
            released: std::sync::atomic::AtomicBool::new(false),
        };
        let deadline = Instant::now() + lease * 4;
        let mut said = false;
        let statement = format!(
            "INSERT INTO {table} (name, incarnation, lease_until) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET incarnation = EXCLUDED.incarnation, lease_until = EXCLUDED.lease_until
             WHERE {table}.lease_until + $3 * interval '1 millisecond' <= now() OR {table}.incarnation = EXCLUDED.incarnation
             RETURNING name"
        );
        loop {
            let sent = Instant::now();
            let joined = this.db.get().await?.query_opt(&statement, &[&this.member as &(dyn ToSql + Sync), &this.incarnation, &this.lease_ms()]).await?;
            if joined.is_some() {
                *this.live_until.lock().unwrap_or_else(PoisonError::into_inner) = sent + lease;
                info!(table, member = %this.member, lease_secs = lease.as_secs_f64(), "joined as a replica");
                return Ok(this);
            }
            if Instant::now() > deadline {
                return Err(PgError::LeaseLost(format!(
                    "another replica named `{}` holds its lease in `{table}` and keeps renewing it: give each replica its own name",
                    this.member
                )));
            }
            if !said && !standby {
                warn!(table, member = %this.member, "a replica under this name held the lease until recently; waiting for it to lapse");
                said = true;
            }
            tokio::time::sleep(lease / 10).await;
        }
    }

    /// Connects to `settings`' database, checks it ([`crate::check`]) and joins
    /// ([`Lease::join`]); returns the connection too, for the replica's own queries.
    pub async fn open(settings: &crate::Settings, table: &'static str, member: &str, incarnation: &str, lease: Duration) -> Result<(Arc<Connection>, Arc<Self>), PgError> {
        Self::open_waiting(settings, table, member, incarnation, lease, false).await
    }

    /// [`Lease::open`] for a standby, which waits for a live holder quietly.
    pub async fn open_standby(settings: &crate::Settings, table: &'static str, member: &str, incarnation: &str, lease: Duration) -> Result<(Arc<Connection>, Arc<Self>), PgError> {
        Self::open_waiting(settings, table, member, incarnation, lease, true).await
    }

    async fn open_waiting(settings: &crate::Settings, table: &'static str, member: &str, incarnation: &str, lease: Duration, standby: bool) -> Result<(Arc<Connection>, Arc<Self>), PgError> {
        let db = Arc::new(Connection::open(settings).await?);
        crate::check(&*db.get().await?).await?;
        let lease = Arc::new(Self::join_waiting(Arc::clone(&db), table, member, incarnation, lease, standby).await?);
        Ok((db, lease))
    }

    /// The connection the lease is held through, for the replica's own queries.
    pub fn db(&self) -> Arc<Connection> {
        Arc::clone(&self.db)
    }

    pub fn member(&self) -> &str {
        &self.member
    }

    pub fn length(&self) -> Duration {
        self.lease
    }

    fn lease_ms(&self) -> f64 {
        self.lease.as_millis() as f64
    }

    /// How long after a member's lease lapsed (by the database's clock) its work
    /// is taken over, in milliseconds: one more lease. The member itself stops
    /// before its lease lapses by its own clock; the margin covers clocks that run
    /// at different rates and the step it was in.
    pub fn grace_ms(&self) -> f64 {
        self.lease_ms()
    }

    /// Whether the lease still holds, by this host's clock.
    pub fn is_live(&self) -> bool {
        !*self.lost.lock().unwrap_or_else(PoisonError::into_inner) && Instant::now() < *self.live_until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refuses work once the lease may have lapsed.
    pub fn check_live(&self) -> Result<(), PgError> {
        if self.is_live() {
            Ok(())
        } else {
            Err(PgError::LeaseLost(format!("`{}` has not renewed its lease in time", self.member)))
        }
    }

    /// Gives the lease back at a clean stop, so a peer takes over at once rather
    /// than after the lease and its grace: this process acts no more from now on,
    /// and the database shows the lease lapsed longer ago than the grace.
    pub async fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
        *self.live_until.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        *self.lost.lock().unwrap_or_else(PoisonError::into_inner) = true;
        let statement = format!("UPDATE {} SET lease_until = now() - 2 * $3::float8 * interval '1 millisecond' WHERE name = $1 AND incarnation = $2", self.table);
        let released = async {
            let client = self.db.get().await?;
            client.execute(&statement, &[&self.member as &(dyn ToSql + Sync), &self.incarnation, &self.lease_ms()]).await?;
            Ok::<_, PgError>(())
        };
        match tokio::time::timeout(self.lease, released).await {
            Ok(Ok(())) => info!(table = self.table, member = %self.member, "gave the lease back"),
            Ok(Err(error)) => warn!(%error, "cannot give the lease back; a peer takes over once it lapses"),
            Err(_) => warn!("giving the lease back did not answer; a peer takes over once it lapses"),
        }
    }

    /// Renews the lease ([`Lease::spawn_renewal`]) and, should it lapse, ends the
    /// process with status 75 (`EX_TEMPFAIL`), to be restarted: a replica whose
    /// work another may be taking over must stop at once, not finish it.
    pub fn renew_or_exit(self: &Arc<Self>, what: &'static str) {
        let (lost, lapsed) = tokio::sync::oneshot::channel();
        self.spawn_renewal(lost);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Ok(reason) = lapsed.await
                && !this.released.load(std::sync::atomic::Ordering::SeqCst)
            {
                error!(%reason, "exiting: this {what} lost its lease");
                std::process::exit(75);
            }
        });
    }

    /// This process's incarnation of the name, as the members' table holds it.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// Renews the lease every third of its length, each renewal bounded by the
    /// lease itself. Once the lease lapsed (by this clock, or the database no
    /// longer holds it for this process) it is never renewed: `lost` is sent,
    /// once, and the task ends.
    pub fn spawn_renewal(self: &Arc<Self>, lost: tokio::sync::oneshot::Sender<String>) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let statement = format!(
            "UPDATE {} SET lease_until = now() + $3 * interval '1 millisecond' WHERE name = $1 AND incarnation = $2 AND lease_until > now()",
            self.table
        );
        tokio::spawn(async move {
            let reason = loop {
                tokio::time::sleep(this.lease / 3).await;
                if this.released.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if !this.is_live() {
                    break format!("`{}` could not renew its lease within {:?}", this.member, this.lease);
                }
                let sent = Instant::now();
                let deadline = *this.live_until.lock().unwrap_or_else(PoisonError::into_inner);
                let renewal = async {
                    let client = this.db.get().await.map_err(|e| e.to_string())?;
                    client.execute(&statement, &[&this.member as &(dyn ToSql + Sync), &this.incarnation, &this.lease_ms()]).await.map_err(|e| e.to_string())
                };
                let renewed = match tokio::time::timeout_at(deadline, renewal).await {
                    Ok(renewed) => renewed,
                    Err(_) => break format!("`{}`'s lease renewal did not answer before the lease lapsed", this.member),
                };
                match renewed {
                    Ok(1) => *this.live_until.lock().unwrap_or_else(PoisonError::into_inner) = sent + this.lease,
                    Ok(_) => break format!("the database no longer holds `{}`'s lease for this process", this.member),
                    Err(error) => warn!(%error, live = this.is_live(), "cannot renew this replica's lease"),
                }
            };
            *this.live_until.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            *this.lost.lock().unwrap_or_else(PoisonError::into_inner) = true;
            // Given back meanwhile (a clean stop): not a loss.
            if this.released.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            error!(table = this.table, member = %this.member, %reason, "this replica lost its lease: it stops acting; restart it to rejoin");
            let _ = lost.send(reason);
        })
    }
}
