//! The in-memory engine: an [`Engine`] in a few ordered maps, for tests and
//! the deterministic simulator.
//!
//! [`MemoryEngine`] keeps one `BTreeMap` per [`ColumnFamily`] behind a
//! single `RwLock`. One lock for all families, rather than one per family,
//! is what makes a batch that spans families atomic to readers without a
//! lock-ordering protocol; the engine serves tests, where that contention
//! does not matter.
//!
//! Costs: a `get` clones one value. A `scan` copies every pair of its range
//! into a `Vec` under the read lock and returns that `Vec`'s iterator, so it
//! costs time and memory proportional to the whole range even if the caller
//! stops after one pair; in exchange the iterator holds no lock and sees a
//! consistent snapshot.
//!
//! Crash model. The simulator needs a node that loses what a real crash
//! would lose. [`MemoryEngine::crash`] models RocksDB's write-ahead log:
//!
//! - a [`Durability::Sync`] write syncs the log, which makes it *and every
//!   earlier write* durable;
//! - a [`Durability::Buffered`] write sits in the log buffer until the next
//!   sync, and a crash loses it.
//!
//! So the engine keeps an undo log: for every operation of a buffered batch
//! since the last sync, the key's previous value. A sync write (or a
//! checkpoint, which in RocksDB flushes the memtables to SST files) clears
//! it; `crash` applies it backwards, leaving the state as of the last sync.
//! Batches stay whole: a crash keeps or loses a batch entirely. The undo
//! log is bounded by the buffered writes between two syncs, which a caller
//! that never syncs lets grow without bound; no production path does that.
//!
//! Checkpoints are one postcard file, `memory-checkpoint.postcard`, holding
//! a format version and every family's pairs; [`MemoryEngine::open_checkpoint`]
//! loads it, so the checkpoint tests run on both engines. A family the file
//! does not name (one added since it was written) opens empty, as RocksDB
//! creates a missing family empty.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::ops::Bound;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use super::{ColumnFamily, Durability, Engine, KeyValue, ScanIter, WriteBatch, WriteOp};
use crate::{Error, Result};

/// The file a checkpoint directory holds.
const CHECKPOINT_FILE: &str = "memory-checkpoint.postcard";
/// Bumped whenever [`CheckpointFile`]'s shape changes.
const CHECKPOINT_FORMAT_V1: u32 = 1;

type Family = BTreeMap<Vec<u8>, Vec<u8>>;

/// An [`Engine`] held in memory; see the module documentation.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// One map per family, indexed by [`family_index`].
    families: [Family; ColumnFamily::ALL.len()],
    /// Buffered writes since the last sync, oldest first: what a crash
    /// undoes.
    undo: Vec<Undo>,
}

/// How to take back one buffered operation: the key's previous value.
#[derive(Debug)]
struct Undo {
    cf: ColumnFamily,
    key: Vec<u8>,
    previous: Option<Vec<u8>>,
}

#[derive(Serialize)]
struct CheckpointRef<'a> {
    format: u32,
    families: Vec<(&'static str, &'a Family)>,
}

#[derive(Deserialize)]
struct CheckpointFile {
    format: u32,
    families: Vec<(String, Family)>,
}

fn family_index(cf: ColumnFamily) -> usize {
    match cf {
        ColumnFamily::Data => 0,
        ColumnFamily::Latest => 1,
        ColumnFamily::Locks => 2,
        ColumnFamily::Meta => 3,
        ColumnFamily::PaxosLog => 4,
        ColumnFamily::PaxosState => 5,
        ColumnFamily::Snapshots => 6,
    }
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a checkpoint written by [`Engine::checkpoint`] into a new
    /// engine. Writes to the new engine do not touch the checkpoint.
    pub fn open_checkpoint(dir: &Path) -> Result<Self> {
        let path = dir.join(CHECKPOINT_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::Engine(format!("reading {}: {e}", path.display())))?;
        let file: CheckpointFile =
            postcard::from_bytes(&bytes).map_err(|e| Error::Corrupt(format!("checkpoint {}: {e}", path.display())))?;
        if file.format != CHECKPOINT_FORMAT_V1 {
            return Err(Error::Corrupt(format!("checkpoint {}: format {} is unknown", path.display(), file.format)));
        }
        let mut state = State::default();
        for (name, family) in file.families {
            let cf = ColumnFamily::ALL.into_iter().find(|cf| cf.name() == name).ok_or_else(|| {
                Error::Corrupt(format!("checkpoint {}: unknown column family {name:?}", path.display()))
            })?;
            state.families[family_index(cf)] = family;
        }
        Ok(MemoryEngine { state: RwLock::new(state) })
    }

    /// Simulates a crash of the process and machine: discards every write
    /// made with [`Durability::Buffered`] since the last [`Durability::Sync`]
    /// write (or checkpoint). The engine stays usable, as a restarted node's
    /// would be.
    ///
    /// Panics if a thread panicked while writing: the simulator's run is
    /// already a failure then, and there is no torn state worth crashing.
    pub fn crash(&self) {
        let mut state = self.state.write().unwrap_or_else(|_| panic!("{}", poisoned()));
        let undo = std::mem::take(&mut state.undo);
        for Undo { cf, key, previous } in undo.into_iter().rev() {
            let family = &mut state.families[family_index(cf)];
            match previous {
                Some(value) => family.insert(key, value),
                None => family.remove(&key),
            };
        }
    }

    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| poisoned())
    }

    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| poisoned())
    }
}

/// A thread panicked while holding the write lock, perhaps halfway through
/// a batch: the state may be torn, so refuse to serve it.
fn poisoned() -> Error {
    Error::Engine("memory engine is poisoned: a thread panicked while writing".into())
}

/// Whether no key can lie within the bounds. `BTreeMap::range` panics on
/// such bounds (a start above the end, or equal and both excluded), so
/// scans check first.
fn is_empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) | (Bound::Excluded(s), Bound::Included(e)) => {
            s >= e
        }
        (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
    }
}

impl Engine for MemoryEngine {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read_state()?.families[family_index(cf)].get(key).cloned())
    }

    fn scan<'a>(
        &'a self,
        cf: ColumnFamily,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<ScanIter<'a>> {
        if is_empty_range(start, end) {
            return Ok(Box::new(std::iter::empty()));
        }
        let state = self.read_state()?;
        let range = state.families[family_index(cf)].range::<[u8], _>((start, end));
        let clone = |(key, value): (&Vec<u8>, &Vec<u8>)| (key.clone(), value.clone());
        let pairs: Vec<KeyValue> = if reverse { range.rev().map(clone).collect() } else { range.map(clone).collect() };
        Ok(Box::new(pairs.into_iter().map(Ok)))
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let mut state = self.write_state()?;
        let State { families, undo } = &mut *state;
        for op in batch.into_ops() {
            let (cf, key, previous) = match op {
                WriteOp::Put { cf, key, value } => {
                    let previous = families[family_index(cf)].insert(key.clone(), value);
                    (cf, key, previous)
                }
                WriteOp::Delete { cf, key } => {
                    let previous = families[family_index(cf)].remove(&key);
                    (cf, key, previous)
                }
            };
            if durability == Durability::Buffered {
                undo.push(Undo { cf, key, previous });
            }
        }
        if durability == Durability::Sync {
            // Syncing the log makes every earlier buffered write durable too.
            undo.clear();
        }
        Ok(())
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        let io_error =
            |what: &str, e: std::io::Error| Error::Engine(format!("checkpoint {}: {what}: {e}", dir.display()));
        // Hold the write lock: the checkpoint is one consistent state, and
        // it clears the undo log (RocksDB's checkpoint flushes memtables,
        // which makes every write so far durable).
        let mut state = self.write_state()?;
        let checkpoint = CheckpointRef {
            format: CHECKPOINT_FORMAT_V1,
            families: ColumnFamily::ALL.into_iter().map(|cf| (cf.name(), &state.families[family_index(cf)])).collect(),
        };
        let bytes = postcard::to_stdvec(&checkpoint)
            .map_err(|e| Error::Engine(format!("checkpoint {}: encoding: {e}", dir.display())))?;
        // Like RocksDB's, the directory must not exist yet, and its parent
        // must: `create_dir` fails otherwise.
        fs::create_dir(dir).map_err(|e| io_error("creating directory", e))?;
        let mut file = fs::File::create_new(dir.join(CHECKPOINT_FILE)).map_err(|e| io_error("creating file", e))?;
        file.write_all(&bytes).map_err(|e| io_error("writing", e))?;
        file.sync_all().map_err(|e| io_error("syncing", e))?;
        state.undo.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn put(key: &[u8], value: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Data, key.to_vec(), value.to_vec());
        batch
    }

    #[test]
    fn crash_loses_buffered_writes_after_the_last_sync() {
        let engine = MemoryEngine::new();
        engine.write(put(b"a", b"1"), Durability::Buffered).unwrap();
        engine.write(put(b"b", b"1"), Durability::Sync).unwrap();
        engine.write(put(b"a", b"2"), Durability::Buffered).unwrap();
        let mut delete = WriteBatch::new();
        delete.delete(ColumnFamily::Data, b"b".to_vec());
        delete.put(ColumnFamily::Meta, b"c".to_vec(), b"1".to_vec());
        engine.write(delete, Durability::Buffered).unwrap();

        engine.crash();
        // "a"=1 was buffered but made durable by the sync of "b".
        assert_eq!(engine.get(ColumnFamily::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(ColumnFamily::Data, b"b").unwrap(), Some(b"1".to_vec()));
        assert_eq!(engine.get(ColumnFamily::Meta, b"c").unwrap(), None);
        // A second crash loses nothing more.
        engine.crash();
        assert_eq!(engine.get(ColumnFamily::Data, b"a").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn checkpoint_makes_buffered_writes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let engine = MemoryEngine::new();
        engine.write(put(b"a", b"1"), Durability::Buffered).unwrap();
        engine.checkpoint(&dir.path().join("checkpoint")).unwrap();
        engine.crash();
        assert_eq!(engine.get(ColumnFamily::Data, b"a").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn corrupt_checkpoint_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CHECKPOINT_FILE), [9, 9, 9]).unwrap();
        assert!(matches!(MemoryEngine::open_checkpoint(dir.path()), Err(Error::Corrupt(_))));
        assert!(matches!(MemoryEngine::open_checkpoint(&dir.path().join("missing")), Err(Error::Engine(_))));
    }

    #[test]
    fn checkpoint_written_before_a_family_existed_opens_with_it_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Family::new();
        data.insert(b"k".to_vec(), b"v".to_vec());
        // The four families of the first format, without the Paxos ones.
        let empty = Family::new();
        let old = CheckpointRef {
            format: CHECKPOINT_FORMAT_V1,
            families: vec![("data", &data), ("latest", &empty), ("locks", &empty), ("meta", &empty)],
        };
        fs::write(dir.path().join(CHECKPOINT_FILE), postcard::to_stdvec(&old).unwrap()).unwrap();
        let engine = MemoryEngine::open_checkpoint(dir.path()).unwrap();
        assert_eq!(engine.get(ColumnFamily::Data, b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(engine.scan(ColumnFamily::PaxosLog, Bound::Unbounded, Bound::Unbounded, false).unwrap().count(), 0);
        engine.write(put(b"k", b"w"), Durability::Sync).unwrap();
    }

    proptest! {
        /// After a crash the engine holds exactly the state as of its last
        /// sync write: a model that applies only synced prefixes agrees.
        #[test]
        fn crash_restores_the_last_synced_state(
            batches in proptest::collection::vec(
                (proptest::collection::vec((any::<bool>(), 0u8..4, any::<u8>()), 0..4), any::<bool>()),
                0..12,
            ),
        ) {
            let engine = MemoryEngine::new();
            let mut current = BTreeMap::new();
            let mut durable = BTreeMap::new();
            for (ops, sync) in batches {
                let mut batch = WriteBatch::new();
                for (is_put, key, value) in ops {
                    if is_put {
                        batch.put(ColumnFamily::Data, vec![key], vec![value]);
                        current.insert(vec![key], vec![value]);
                    } else {
                        batch.delete(ColumnFamily::Data, vec![key]);
                        current.remove(&vec![key]);
                    }
                }
                engine.write(batch, if sync { Durability::Sync } else { Durability::Buffered }).unwrap();
                if sync {
                    durable = current.clone();
                }
            }
            engine.crash();
            let after: BTreeMap<_, _> = engine
                .scan(ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, false)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            prop_assert_eq!(after, durable);
        }
    }
}
