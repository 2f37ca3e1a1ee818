//! The notifications waiting to go, on disk: one file per event and receiver,
//! written and synced before the log is read further, removed only once the
//! receiver took it; and per receiver a log of what was sent, so an event is
//! sent once however often the audit log is read again.
//!
//! ```text
//! DATA_DIR/notify/cursor                      the last audit record read
//! DATA_DIR/notify/outbox/RECEIVER/EVENT.json  waiting to go
//! DATA_DIR/notify/sent/RECEIVER.log           sent: one JSON line per event
//! DATA_DIR/notify/dead/RECEIVER/EVENT.json    refused by the receiver for good
//! ```

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::event::Event;

/// How many sent event ids per receiver are remembered to refuse a repeat.
const REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    sent: std::sync::Mutex<HashMap<String, HashSet<String>>>,
    /// Held while the outbox is open: one sender per queue, or it could send an
    /// event twice.
    _lock: std::fs::File,
}

/// Why the outbox did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("another process holds the notification queue `{0}`")]
    Locked(PathBuf),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("a file with no directory"))?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

impl Outbox {
    /// Opens (making it if needed) the outbox under `dir` for `receivers`.
    pub fn open(dir: &Path, receivers: &[&str]) -> Result<Self, OpenError> {
        std::fs::create_dir_all(dir)?;
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_owned())),
            Err(std::fs::TryLockError::Error(error)) => return Err(error.into()),
        }
        let mut sent = HashMap::new();
        for name in receivers {
            std::fs::create_dir_all(dir.join("outbox").join(name))?;
            std::fs::create_dir_all(dir.join("dead").join(name))?;
            std::fs::create_dir_all(dir.join("sent"))?;
            let log = dir.join("sent").join(format!("{name}.log"));
            let text = match std::fs::read_to_string(&log) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(error) => return Err(error.into()),
            };
            let lines: Vec<&str> = text.lines().collect();
            let ids: HashSet<String> = lines[lines.len().saturating_sub(REMEMBERED)..]
                .iter()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter_map(|entry| entry["id"].as_str().map(str::to_owned))
                .collect();
            sent.insert((*name).to_owned(), ids);
        }
        Ok(Self { dir: dir.to_owned(), sent: std::sync::Mutex::new(sent), _lock: lock })
    }

    fn queue(&self, receiver: &str) -> PathBuf {
        self.dir.join("outbox").join(receiver)
    }

    /// The last audit record read, if any.
    pub fn cursor(&self) -> std::io::Result<Option<u64>> {
        match std::fs::read_to_string(self.dir.join("cursor")) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| std::io::Error::other(format!("`{}` is not a sequence number", self.dir.join("cursor").display()))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub fn set_cursor(&self, seq: u64) -> std::io::Result<()> {
        write_atomically(&self.dir.join("cursor"), seq.to_string().as_bytes())
    }

    /// Queues `event` for `receiver`, durably; false when it is already queued or
    /// was sent.
    pub fn enqueue(&self, receiver: &str, event: &Event) -> std::io::Result<bool> {
        let sent = self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(receiver).is_some_and(|ids| ids.contains(&event.id));
        let path = self.queue(receiver).join(format!("{}.json", event.id));
        if sent || path.exists() {
            return Ok(false);
        }
        write_atomically(&path, &serde_json::to_vec(event).map_err(std::io::Error::other)?)?;
        Ok(true)
    }

    /// What waits for `receiver`, oldest first (event ids sort in log order).
    pub fn pending(&self, receiver: &str) -> std::io::Result<Vec<(PathBuf, Event)>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.queue(receiver))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut pending = Vec::with_capacity(paths.len());
        for path in paths {
            let bytes = std::fs::read(&path)?;
            match serde_json::from_slice::<Event>(&bytes) {
                Ok(event) => pending.push((path, event)),
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "a queued notification does not parse; set aside as dead");
                    self.dead(receiver, &path)?;
                }
            }
        }
        Ok(pending)
    }

    /// Records `event` as sent to `receiver` (synced), then removes it from the queue.
    pub fn mark_sent(&self, receiver: &str, path: &Path, event: &Event, status: u16) -> std::io::Result<()> {
        let line = serde_json::json!({"id": event.id, "kind": event.kind.as_str(), "sent_at": arf_core::time::format_ms(arf_core::time::now_ms()), "status": status});
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("sent").join(format!("{receiver}.log")))?;
        writeln!(log, "{line}")?;
        log.sync_all()?;
        self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(receiver.to_owned()).or_default().insert(event.id.clone());
        std::fs::remove_file(path)?;
        sync_dir(&self.queue(receiver))
    }

    /// Moves a notification the receiver refused for good out of the queue.
    pub fn dead(&self, receiver: &str, path: &Path) -> std::io::Result<()> {
        let name = path.file_name().ok_or_else(|| std::io::Error::other("a queued file with no name"))?;
        std::fs::rename(path, self.dir.join("dead").join(receiver).join(name))?;
        sync_dir(&self.queue(receiver))
    }
}
