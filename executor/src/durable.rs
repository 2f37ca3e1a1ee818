//! sled's flush, made durable.
//!
//! sled 0.34 flushes with `sync_file_range`, which neither records the file's
//! new size nor empties the disk's write cache, and it does not sync the blob
//! files it keeps large pages in, so a power loss can take back what a flush
//! returned from (DESIGN.md, "Durable means synced"). The execution store and the
//! ledger of process groups rely on their saves to know, after a restart, how far
//! an execution went: a lost `acting` would leave `starting`, taken for an action
//! that never ran. So each flush is followed by `fdatasync` of sled's file (through
//! a handle opened with the store, so a write error the kernel reported to anyone
//! since, sled's own background flush included, is reported to it too) and of
//! every blob file, and of the blob folder.
//!
//! A sync that fails stops the store for good, as it stops the audit log: what
//! was written is in sled's memory but maybe not on disk, and a later sync that
//! succeeds would not say which part of it reached the disk. Every use of the
//! store is then an error until the executor restarts and reads what the disk
//! holds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// A sled database whose flushes are synced.
#[derive(Debug, Clone)]
pub struct Durable {
    db: sled::Db,
    dir: PathBuf,
    file: Arc<File>,
    stopped: Arc<AtomicBool>,
    syncs: Arc<AtomicU64>,
}

impl Durable {
    /// `db`, opened at `dir`. Syncs `dir` and its parent once, so that the files
    /// sled created there, and `dir` itself, are found after a power loss.
    pub fn new(db: sled::Db, dir: &Path) -> std::io::Result<Self> {
        let file = File::open(dir.join("db"))?;
        file.sync_data()?;
        File::open(dir)?.sync_all()?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(Self { db, dir: dir.to_owned(), file: Arc::new(file), stopped: Arc::new(AtomicBool::new(false)), syncs: Arc::new(AtomicU64::new(0)) })
    }

    /// The database, unless a sync failed.
    pub fn db(&self) -> Result<&sled::Db, String> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(format!(
                "the execution store `{}` stopped after a failed sync: what it holds in memory may not be on disk; restart the executor",
                self.dir.display()
            ));
        }
        Ok(&self.db)
    }

    /// Flushes, then syncs what the flush wrote, off the async workers. A failure
    /// stops the store.
    pub async fn flush(&self) -> Result<(), String> {
        let db = self.db()?;
        let synced = match db.flush_async().await {
            Ok(_) => {
                let (file, dir) = (Arc::clone(&self.file), self.dir.clone());
                match tokio::task::spawn_blocking(move || sync_files(&file, &dir)).await {
                    Ok(synced) => synced.map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = synced {
            self.stopped.store(true, Ordering::SeqCst);
            tracing::error!(store = %self.dir.display(), %error, "EXECUTION STORE STOPPED: a sync failed, so what it holds may not be on disk; every execution is refused until the executor restarts");
            return Err(format!("cannot sync the execution store `{}`: {error}; the store stopped, restart the executor", self.dir.display()));
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a sync failed, so the store refuses everything.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// How many flushes were synced.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn stop_for_test(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

fn sync_files(file: &File, dir: &Path) -> std::io::Result<()> {
    // Tests make a sync fail here (`arf_core::crash`, test builds only).
    if arf_core::crash::pause("executor.store_sync_fails").is_some() {
        return Err(std::io::Error::other("a sync failure injected by a test"));
    }
    file.sync_data()?;
    let blobs = dir.join("blobs");
    let entries = match std::fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        // sled removes blobs it no longer needs: one gone meanwhile needs no sync.
        match File::open(entry?.path()) {
            Ok(blob) => blob.sync_data()?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    File::open(&blobs)?.sync_all()
}
