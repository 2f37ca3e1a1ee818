//! Durable appends side by side with their anchor, in one run on one disk:
//! a loop of one 300-byte write + fdatasync per record (what an append costs without
//! group commit), then the store's appends at 1, 8 and 64 concurrent callers, each
//! record synced before it is answered. Then the tree at 1M records: roots, proofs
//! and checkpoint signing. Then the same appends on PostgreSQL (`pg.rs`), through
//! one audit front-end and through two sharing the database, on a server of its
//! own on the same disk (or the one `ARF_TEST_POSTGRES` names).
//!
//! `cargo bench -p arf-audit --bench append` (set `ARF_BENCH_DIR` to measure another disk).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark stops at the first surprise")]

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::json;

use arf_audit::checkpoint::Checkpoint;
use arf_audit::merkle::{self, Tree};
use arf_audit::store::Store;
use arf_audit::{Entry, RecordKind};

/// Each timed run lasts at least this long.
const RUN: Duration = Duration::from_secs(3);

fn bench_dir() -> PathBuf {
    std::env::var_os("ARF_BENCH_DIR").map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from)
}

/// One write and one fdatasync per 300-byte record, for `RUN`.
fn fsync_loop(dir: &std::path::Path) -> f64 {
    let path = dir.join("fsync-loop.bin");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    let record = [b'x'; 300];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).unwrap();
    rate
}

/// The `n`th record of `caller`: about 300 bytes once sealed (seq, time, writer,
/// hashes and this payload).
fn entry(caller: usize, n: u64) -> Entry {
    let payload = json!({"caller": caller, "n": n, "alert": "HighErrorRate", "service": "checkout"});
    Entry::new(format!("inc-{caller}"), RecordKind::Signal, payload)
}

/// `callers` tasks, each calling `append(caller, n)` for its `n`th record until
/// `RUN` is over; how many records they appended in all.
async fn run_callers<F, Fut>(callers: usize, append: F) -> u64
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), arf_audit::store::StoreError>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let append = append.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    append(caller, n).await.unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

/// `callers` tasks appending one ~300-byte record at a time for `RUN`; records/s.
async fn store_appends(dir: &std::path::Path, callers: usize) -> (f64, f64, f64) {
    let log = tempfile::tempdir_in(dir).unwrap();
    let store = Arc::new(Store::open(log.path(), None).unwrap());
    let start = Instant::now();
    let appended = Arc::clone(&store);
    let total = run_callers(callers, move |caller, n| {
        let store = Arc::clone(&appended);
        async move { store.append("agent", vec![entry(caller, n)], 0).await.map(drop) }
    })
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(log.path().join(arf_audit::store::LOG_FILE)).unwrap().len();
    (total as f64 / elapsed, total as f64 / store.syncs() as f64, bytes as f64 / total as f64)
}

/// `callers` tasks appending as in `store_appends`, through `front_ends` front-ends
/// of one log in a fresh PostgreSQL database; records/s.
async fn pg_appends(server: &arf_pg::testing::TestServer, callers: usize, front_ends: usize) -> f64 {
    let settings = server.database().await.unwrap();
    arf_pg::migrate(&mut settings.connect().await.unwrap()).await.unwrap();
    let mut stores = Vec::new();
    for _ in 0..front_ends {
        stores.push(Arc::new(arf_audit::pg::PgStore::open(&settings, None).await.unwrap()));
    }
    let start = Instant::now();
    let stores = Arc::new(stores);
    let total = run_callers(callers, move |caller, n| {
        let store = Arc::clone(&stores[caller % front_ends]);
        async move { store.append("agent", vec![entry(caller, n)], 0).await.map(drop) }
    })
    .await;
    total as f64 / start.elapsed().as_secs_f64()
}

fn time<T>(what: &str, runs: u32, mut f: impl FnMut() -> T) {
    let start = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(f());
    }
    let each = start.elapsed() / runs;
    println!("  {what:<44} {each:>12.2?}");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).unwrap();
    println!("durable appends on `{}`, {} s per run", dir.display(), RUN.as_secs());
    let anchor = fsync_loop(&dir);
    println!("  {:<44} {:>10.0} records/s", "anchor: write 300 B + fdatasync, in a loop", anchor);
    for callers in [1, 8, 64] {
        let (rate, per_sync, frame) = store_appends(&dir, callers).await;
        println!(
            "  {:<44} {:>10.0} records/s  {:>5.2}x anchor  {:>5.1} records/sync  {:>4.0} B/record",
            format!("store, {callers} concurrent callers"),
            rate,
            rate / anchor,
            per_sync,
            frame
        );
    }
    let server = arf_pg::testing::TestServer::start_in(Some(&dir)).await.unwrap();
    for (callers, front_ends) in [(1, 1), (8, 1), (64, 1), (8, 2), (64, 2)] {
        let rate = pg_appends(&server, callers, front_ends).await;
        println!(
            "  {:<44} {:>10.0} records/s  {:>5.2}x anchor",
            format!("PostgreSQL, {callers} callers, {front_ends} front-end{}", if front_ends > 1 { "s" } else { "" }),
            rate,
            rate / anchor
        );
    }
    drop(server);

    let n = 1_000_000u64;
    let build = Instant::now();
    let mut tree = Tree::new();
    for i in 0..n {
        tree.push(merkle::leaf_hash(&i.to_be_bytes()));
    }
    println!("\nthe tree at {n} records (built in {:.2?}, in memory)", build.elapsed());
    time("root of all records", 1000, || tree.root(n).unwrap());
    time("inclusion proof (record 123457 of all)", 1000, || tree.inclusion_proof(123_456, n).unwrap());
    let proof = tree.inclusion_proof(123_456, n).unwrap();
    let root = tree.root(n).unwrap();
    let leaf = merkle::leaf_hash(&123_456u64.to_be_bytes());
    time("verify that inclusion proof", 1000, || merkle::verify_inclusion(123_456, n, &leaf, &proof, &root).unwrap());
    time("consistency proof (654321 → all)", 1000, || tree.consistency_proof(654_321, n).unwrap());
    let key = SigningKey::from_bytes(&[7; 32]);
    let checkpoint = Checkpoint { origin: "arf-audit-log".to_owned(), size: n, root };
    time("sign a checkpoint", 1000, || checkpoint.sign(&key));
}
