//! The RocksDB engine: the [`Engine`] of real nodes.
//!
//! [`RocksEngine`] is one RocksDB database with one RocksDB column family
//! per [`ColumnFamily`], named by [`ColumnFamily::name`]. The mapping is
//! direct:
//!
//! - `get` is a point lookup (`get_pinned_cf`);
//! - `scan` is an iterator whose [`Bound`]s become RocksDB's iterate bounds
//!   (inclusive lower, exclusive upper), so RocksDB stops at the range's
//!   edge itself instead of reading one block past it; RocksDB pins an
//!   implicit snapshot when the iterator is created, so a scan sees one
//!   consistent state however long it is kept;
//! - `write` is one RocksDB write batch, atomic across column families
//!   through the shared write-ahead log, synced when the durability asks
//!   for it. Concurrent synced writes share one fsync (RocksDB's write
//!   group), as the [`Engine`] contract allows;
//! - `checkpoint` is RocksDB's checkpoint: a new directory of hard-linked
//!   SST files after a memtable flush, openable with [`RocksEngine::open`].
//!
//! Every RocksDB error is returned as [`Error::Engine`] with RocksDB's
//! message; nothing here unwraps an I/O result.
//!
//! Architecture Invariant: no RocksDB type appears outside this file.

use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, DBRecoveryMode, DBWithThreadMode,
    IteratorMode, Options, ReadOptions, SingleThreaded, WriteOptions,
};

use super::{ColumnFamily, Durability, Engine, ScanIter, WriteBatch, WriteOp};
use crate::{Error, Result};

/// The block cache, shared by all column families. RocksDB's default is an
/// 8 MiB cache per family, too small to hold the index and filter blocks of
/// a real data set; 256 MiB keeps the hot part of a modest node's data in
/// memory without crowding the rest of the process.
const BLOCK_CACHE_BYTES: usize = 256 << 20;
/// Bloom filter size on the data family: 10 bits per key gives about a 1%
/// false-positive rate, so a point read of an absent key almost never
/// touches a data block.
const BLOOM_FILTER_BITS_PER_KEY: f64 = 10.0;
/// Flush and compaction threads. Nodes are small (two cores in tests and
/// in the default deployment); more jobs would compete with request
/// handling, fewer would let a flush wait behind a long compaction and
/// stall writes.
const BACKGROUND_JOBS_MAX: i32 = 2;
/// Write-ahead log kept at most, in all. RocksDB deletes a log file only
/// once every family with writes in it has flushed them, and a family
/// written rarely (meta, the Paxos hard state) may not flush for a long
/// time: it pinned 649 MB of logs against 3.6 MB of tables after 900,000
/// updates of 1,000 rows. Beyond this total RocksDB flushes the families
/// that hold the oldest file. (Its default is four times the families'
/// write buffers, gigabytes here.)
const WAL_BYTES_MAX: u64 = 256 << 20;

/// The database type: single-threaded column-family mode (families are
/// only created at open), named explicitly so that another crate enabling
/// `rocksdb/multi-threaded-cf` cannot change it under us.
type Database = DBWithThreadMode<SingleThreaded>;

/// An [`Engine`] over a RocksDB database; see the module documentation.
pub struct RocksEngine {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for RocksEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksEngine").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RocksEngine {
    /// Opens the database at `path`, creating it and any missing column
    /// family. Also opens a directory written by [`Engine::checkpoint`].
    pub fn open(path: &Path) -> Result<Self> {
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);

        let mut options = Options::default();
        // A new node starts from an empty directory; a node written by an
        // older version may lack a family added since.
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_max_background_jobs(BACKGROUND_JOBS_MAX);
        options.set_max_total_wal_size(WAL_BYTES_MAX);
        // After a crash, keep the write-ahead log up to its first damaged
        // record and nothing after it: a prefix of the writes, in order.
        // Buffered writes (a learner's copy of a shard's log: `Durability`)
        // rely on it: a synced write makes every one before it durable, and
        // a crash never keeps a later write without an earlier one.
        options.set_wal_recovery_mode(DBRecoveryMode::PointInTime);

        let families = ColumnFamily::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), family_options(cf, &cache)));
        let db = Database::open_cf_descriptors(&options, path, families)
            .map_err(|e| Error::Engine(format!("opening RocksDB at {}: {e}", path.display())))?;
        Ok(RocksEngine { db, path: path.to_path_buf() })
    }

    fn handle(&self, cf: ColumnFamily) -> &rocksdb::ColumnFamily {
        // `open` created every family or failed.
        self.db.cf_handle(cf.name()).unwrap_or_else(|| panic!("column family {} was not opened", cf.name()))
    }

    fn error(&self, what: &str, e: rocksdb::Error) -> Error {
        Error::Engine(format!("RocksDB at {}: {what}: {e}", self.path.display()))
    }
}

/// Options of one column family.
fn family_options(cf: ColumnFamily, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if cf == ColumnFamily::Latest {
        // Whole-key filters only help point lookups (`get`), and those go
        // to the latest-version family; the data family is read by seeks,
        // which whole-key filters cannot help. Locks and meta are small and
        // mostly in memory. The Paxos log is read by range and the Paxos
        // state by a handful of point reads per group at start-up.
        table.set_bloom_filter(BLOOM_FILTER_BITS_PER_KEY, false);
    }
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    // LZ4 costs little CPU and roughly halves the size of row data.
    options.set_compression_type(DBCompressionType::Lz4);
    options
}

/// The smallest key greater than `key`: `key` followed by a zero byte.
/// It turns an excluded lower bound and an included upper bound into the
/// inclusive-lower, exclusive-upper bounds RocksDB supports, exactly.
fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut successor = Vec::with_capacity(key.len() + 1);
    successor.extend_from_slice(key);
    successor.push(0);
    successor
}

impl Engine for RocksEngine {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // The pinned read hands back RocksDB's buffer, so the value is
        // copied once, into the Vec the caller owns.
        let value = self.db.get_pinned_cf(self.handle(cf), key).map_err(|e| self.error("get", e))?;
        Ok(value.map(|value| value.to_vec()))
    }

    fn scan<'a>(
        &'a self,
        cf: ColumnFamily,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<ScanIter<'a>> {
        // Keys in [lower, upper).
        let lower = match start {
            Bound::Unbounded => None,
            Bound::Included(key) => Some(key.to_vec()),
            Bound::Excluded(key) => Some(key_successor(key)),
        };
        let upper = match end {
            Bound::Unbounded => None,
            Bound::Included(key) => Some(key_successor(key)),
            Bound::Excluded(key) => Some(key.to_vec()),
        };
        // An empty range never reaches RocksDB, which would otherwise seek
        // to a start beyond its end. No lower bound is the empty key.
        if let Some(upper) = &upper
            && lower.as_deref().unwrap_or_default() >= upper.as_slice()
        {
            return Ok(Box::new(std::iter::empty()));
        }

        let mut options = ReadOptions::default();
        if let Some(lower) = lower {
            options.set_iterate_lower_bound(lower);
        }
        if let Some(upper) = upper {
            options.set_iterate_upper_bound(upper);
        }
        // Within the bounds, `End` seeks to the last key below the upper
        // bound and `Start` to the first at or above the lower one.
        let mode = if reverse { IteratorMode::End } else { IteratorMode::Start };
        let iterator = self.db.iterator_cf_opt(self.handle(cf), options, mode);
        // The iterator yields an error at most once and then ends.
        Ok(Box::new(iterator.map(move |item| match item {
            Ok((key, value)) => Ok((key.into_vec(), value.into_vec())),
            Err(e) => Err(self.error("scan", e)),
        })))
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put { cf, key, value } => rocks_batch.put_cf(self.handle(*cf), key, value),
                WriteOp::Delete { cf, key } => rocks_batch.delete_cf(self.handle(*cf), key),
            }
        }
        let mut options = WriteOptions::default();
        // A sync write fsyncs the write-ahead log (and with it every earlier
        // buffered write) before returning; a buffered one leaves the log
        // in the OS page cache.
        options.set_sync(durability == Durability::Sync);
        self.db.write_opt(rocks_batch, &options).map_err(|e| self.error("write", e))
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| self.error("checkpoint", e))?;
        checkpoint.create_checkpoint(dir).map_err(|e| self.error(&format!("checkpoint to {}", dir.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column families of the first on-disk format, before the Paxos
    /// families existed.
    const FIRST_FORMAT_FAMILIES: [&str; 4] = ["data", "latest", "locks", "meta"];

    #[test]
    fn opens_a_directory_written_before_the_paxos_families_existed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            let old = Database::open_cf(&options, dir.path(), FIRST_FORMAT_FAMILIES).unwrap();
            let data = old.cf_handle("data").unwrap();
            old.put_cf(data, b"k", b"v").unwrap();
            old.flush_wal(true).unwrap();
        }
        let engine = RocksEngine::open(dir.path()).unwrap();
        assert_eq!(engine.get(ColumnFamily::Data, b"k").unwrap(), Some(b"v".to_vec()));
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::PaxosLog, b"log".to_vec(), b"1".to_vec());
        batch.put(ColumnFamily::PaxosState, b"state".to_vec(), b"2".to_vec());
        engine.write(batch, Durability::Sync).unwrap();
        drop(engine);

        let engine = RocksEngine::open(dir.path()).unwrap();
        assert_eq!(engine.get(ColumnFamily::PaxosLog, b"log").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(ColumnFamily::PaxosState, b"state").unwrap(), Some(b"2".to_vec()));
        assert_eq!(engine.get(ColumnFamily::Data, b"k").unwrap(), Some(b"v".to_vec()));
    }
}
