//! Transaction API vs raw RocksDB, side by side in one run.
//!
//! Both sides open their own RocksDB in the same directory tree with the
//! same data: `rows` keys of 8 bytes and values of `value_bytes`. Then:
//!
//! - point read: raw `DB::get` against a whole read-only transaction
//!   (`begin` at serializable, `get`, `commit`) — the MVCC seek, the
//!   snapshot and the bookkeeping included;
//! - single-row update: raw `put` with a synced WAL against a serializable
//!   read-modify-write transaction (`get`, `put`, `commit`), durable before
//!   it returns — validation, timestamping and group commit included;
//! - the same update from `threads` threads at once, where concurrent
//!   commits share syncs (raw RocksDB groups concurrent synced writes too).
//!
//! Reported as ops/s, p50 and p99, and the ratio raw/transactional.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use geodb_storage::{Engine, RocksEngine};
use geodb_txn::{Isolation, TxnManager};
use rand::Rng;

use crate::report::{self, Measurement};

#[derive(clap::Args)]
pub struct Args {
    /// Rows loaded before measuring.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Point reads measured per side.
    #[arg(long, default_value_t = 200_000)]
    reads: u64,
    /// Durable single-row updates measured per side (each one syncs).
    #[arg(long, default_value_t = 2_000)]
    updates: u64,
    /// Threads for the concurrent update measurement.
    #[arg(long, default_value_t = 8)]
    threads: u64,
    /// Directory for the two databases (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

fn key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

pub fn run(args: Args) -> Result<(), String> {
    let temporary = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = args.dir.clone().unwrap_or_else(|| temporary.path().to_path_buf());
    let value = vec![0x5a_u8; args.value_bytes];

    let raw = open_raw(&dir.join("raw"))?;
    let engine: Arc<dyn Engine> = Arc::new(RocksEngine::open(&dir.join("geodb")).map_err(|e| e.to_string())?);
    let (txns, shard) = TxnManager::single_node(
        engine,
        Box::new(geodb_txn::SystemClock),
        geodb_txn::transaction::MAX_CLOCK_OFFSET_NS_DEFAULT,
    )
    .map_err(|e| e.to_string())?;

    eprintln!("loading {} rows on each side", args.rows);
    let mut batch = rocksdb::WriteBatch::default();
    for id in 0..args.rows {
        batch.put(key(id), &value);
    }
    raw.write(batch).map_err(|e| e.to_string())?;
    for chunk in (0..args.rows).collect::<Vec<_>>().chunks(10_000) {
        let mut txn = txns.begin(Isolation::Serializable).map_err(|e| e.to_string())?;
        for id in chunk {
            txn.put(key(*id), value.clone()).map_err(|e| e.to_string())?;
        }
        txn.commit().map_err(|e| e.to_string())?;
    }

    let mut results = Vec::new();
    let rows = args.rows;

    let mut m = Measurement::new("point read, raw RocksDB get");
    let started = Instant::now();
    let mut rng = rand::rng();
    for _ in 0..args.reads {
        let t = Instant::now();
        let found = raw.get(key(rng.random_range(0..rows))).map_err(|e| e.to_string())?;
        assert!(found.is_some());
        m.record(t.elapsed());
    }
    m.elapsed = started.elapsed();
    results.push(m);

    let mut m = Measurement::new("point read, transaction (begin, get, commit)");
    let started = Instant::now();
    for _ in 0..args.reads {
        let t = Instant::now();
        let mut txn = txns.begin(Isolation::Serializable).map_err(|e| e.to_string())?;
        let found = txn.get(&key(rng.random_range(0..rows))).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        assert!(found.is_some());
        m.record(t.elapsed());
    }
    m.elapsed = started.elapsed();
    results.push(m);

    // The MVCC read alone, without begin/commit: one long snapshot
    // transaction (snapshot isolation records no reads).
    let mut m = Measurement::new("point read, MVCC get in one open transaction");
    let mut txn = txns.begin(Isolation::Snapshot).map_err(|e| e.to_string())?;
    let started = Instant::now();
    for _ in 0..args.reads {
        let t = Instant::now();
        let found = txn.get(&key(rng.random_range(0..rows))).map_err(|e| e.to_string())?;
        assert!(found.is_some());
        m.record(t.elapsed());
    }
    m.elapsed = started.elapsed();
    txn.rollback();
    results.push(m);

    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    let mut m = Measurement::new("single-row update, raw RocksDB put (sync)");
    let started = Instant::now();
    for _ in 0..args.updates {
        let t = Instant::now();
        raw.put_opt(key(rng.random_range(0..rows)), &value, &sync).map_err(|e| e.to_string())?;
        m.record(t.elapsed());
    }
    m.elapsed = started.elapsed();
    results.push(m);

    let mut m = Measurement::new("single-row update, transaction (get, put, commit)");
    let started = Instant::now();
    for _ in 0..args.updates {
        let t = Instant::now();
        update(&txns, rows, &value)?;
        m.record(t.elapsed());
    }
    m.elapsed = started.elapsed();
    results.push(m);

    let threads = args.threads.max(1);
    let per_thread = args.updates / threads;
    let raw = Arc::new(raw);
    let m = concurrent(
        &format!("single-row update, raw put (sync), {threads} threads"),
        threads,
        {
            let raw = raw.clone();
            let value = value.clone();
            move || {
                let mut sync = rocksdb::WriteOptions::default();
                sync.set_sync(true);
                let id = rand::rng().random_range(0..rows);
                raw.put_opt(key(id), &value, &sync).map_err(|e| e.to_string())
            }
        },
        per_thread,
    )?;
    results.push(m);
    let syncs_before = shard.syncs();
    let m = concurrent(
        &format!("single-row update, transaction, {threads} threads"),
        threads,
        {
            let txns = txns.clone();
            let value = value.clone();
            move || update(&txns, rows, &value)
        },
        per_thread,
    )?;
    let commits = m.histogram.len();
    let syncs = shard.syncs() - syncs_before;
    results.push(m);

    println!("{}", report::HEADER);
    for m in &results {
        println!("{}", report::row(m));
    }
    println!();
    let ratio = |raw: &Measurement, txn: &Measurement| raw.ops_per_s() / txn.ops_per_s();
    println!("transaction-API overhead (raw ops/s ÷ transactional ops/s):");
    println!("- point read: {:.2}×", ratio(&results[0], &results[1]));
    println!("- point read, MVCC get only: {:.2}×", ratio(&results[0], &results[2]));
    println!("- single-row update: {:.2}×", ratio(&results[3], &results[4]));
    println!("- single-row update, {threads} threads: {:.2}×", ratio(&results[5], &results[6]));
    println!(
        "- group commit: {commits} concurrent commits shared {syncs} syncs ({:.1} commits per sync)",
        commits as f64 / syncs.max(1) as f64
    );
    Ok(())
}

fn open_raw(path: &Path) -> Result<rocksdb::DB, String> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    rocksdb::DB::open(&options, path).map_err(|e| e.to_string())
}

/// A serializable read-modify-write of one random row.
fn update(txns: &Arc<TxnManager>, rows: u64, value: &[u8]) -> Result<(), String> {
    loop {
        let id = rand::rng().random_range(0..rows);
        let mut txn = txns.begin(Isolation::Serializable).map_err(|e| e.to_string())?;
        let mut current = txn.get(&key(id)).map_err(|e| e.to_string())?.unwrap_or_else(|| value.to_vec());
        current[0] = current[0].wrapping_add(1);
        txn.put(key(id), current).map_err(|e| e.to_string())?;
        match txn.commit() {
            Ok(_) => return Ok(()),
            Err(error) if error.is_retryable() => continue,
            Err(error) => return Err(error.to_string()),
        }
    }
}

fn concurrent<F>(name: &str, threads: u64, op: F, per_thread: u64) -> Result<Measurement, String>
where
    F: Fn() -> Result<(), String> + Clone + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            std::thread::spawn(move || -> Result<Measurement, String> {
                let mut m = Measurement::new("");
                for _ in 0..per_thread {
                    let t = Instant::now();
                    op()?;
                    m.record(t.elapsed());
                }
                Ok(m)
            })
        })
        .collect();
    let mut total = Measurement::new(name);
    for handle in handles {
        let m = handle.join().map_err(|_| "benchmark thread panicked".to_string())??;
        total.merge(&m);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}
