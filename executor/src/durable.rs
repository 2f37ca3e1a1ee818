//! sled's flush, made durable.
//!
//! sled 0.34 flushes with `sync_file_range`, which neither records the file's
//! new size nor empties the disk's write cache, and it does not sync the blob
//! files it keeps large pages in, so a power loss can take back what a flush
//! returned from (DESIGN.md, "Durable means synced"). The execution store and the
//! ledger of process groups rely on their saves to know, after a restart, how far
//! an execution went: a lost `acting` would leave `starting`, taken for an action
//! that never ran. So each flush is followed by `fdatasync` of sled's file and of
//! every blob file, and of the blob folder.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A sled database whose flushes are synced.
#[derive(Debug, Clone)]
pub struct Durable {
    db: sled::Db,
    dir: PathBuf,
    syncs: Arc<AtomicU64>,
}

impl Durable {
    /// `db`, opened at `dir`. Syncs `dir` once, so that the files sled created
    /// there are found after a power loss.
    pub fn new(db: sled::Db, dir: &Path) -> std::io::Result<Self> {
        File::open(dir)?.sync_all()?;
        Ok(Self { db, dir: dir.to_owned(), syncs: Arc::new(AtomicU64::new(0)) })
    }

    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Flushes, then syncs what the flush wrote. Runs the syncs off the async workers.
    pub async fn flush(&self) -> Result<(), String> {
        self.db.flush_async().await.map_err(|e| e.to_string())?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || sync_files(&dir)).await.map_err(|e| e.to_string())?.map_err(|e| format!("cannot sync the execution store `{}`: {e}", self.dir.display()))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many flushes were synced.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

fn sync_files(dir: &Path) -> std::io::Result<()> {
    File::open(dir.join("db"))?.sync_data()?;
    let blobs = dir.join("blobs");
    match std::fs::read_dir(&blobs) {
        Ok(entries) => {
            for entry in entries {
                File::open(entry?.path())?.sync_data()?;
            }
            File::open(&blobs)?.sync_all()
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
