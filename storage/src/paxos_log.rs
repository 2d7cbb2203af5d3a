//! The durable state of a node's Multi-Paxos groups: each group's log,
//! hard state and latest snapshot, in the `PaxosLog` and `PaxosState`
//! column families.
//!
//! A replica's runtime must make a `Persist` durable before it sends the
//! messages that depend on it (`geo/src/paxos/ready.rs`), and after a
//! restart hands the replica back everything it made durable. [`LogStore`]
//! does both for every group of a node, in bytes: this crate knows nothing
//! of ballots or commands, so a hard state, a snapshot and an entry's value
//! are opaque byte strings, and slots are `u64`s.
//!
//! [`LogStore::write`] takes one [`GroupWrite`] per group with something to
//! persist and makes all of them durable with one [`WriteBatch`] and one
//! engine write (synced unless none of them needs it: a learner's copy of
//! the log): group commit across groups, one WAL sync however
//! many groups the node hosts. Each group's write is applied exactly as
//! `Stored::apply` applies a `Persist`, in this order:
//!
//! 1. the snapshot, which drops every stored entry at or below its slot;
//! 2. the entries, each overwriting a stored entry of the same slot, and
//!    ignored if at or below the snapshot slot (the floor, slot 0 when there
//!    is no snapshot: slot 0 is never an entry);
//! 3. the hard state.
//!
//! [`LogStore::load`] returns a group's state as a [`StoredGroup`] after a
//! restart.
//!
//! Key layout. Group ids and slots are big-endian, so a group's log is one
//! contiguous range in slot order and the groups follow each other in id
//! order:
//!
//! ```text
//!  paxos_log key          value
//!  ─────────────────────  ─────────────────────
//!  group:8 slot:8         [format 1] entry value
//!
//!  paxos_state key        value
//!  ─────────────────────  ─────────────────────
//!  01 group:8             [format 1] hard state
//!  02 group:8             [format 1] snapshot slot:8
//!  03 group:8             [format 2] snapshot data
//! ```
//!
//! The state keys lead with their kind, so that all snapshot slots are one
//! short range of small records: [`LogStore::new`] reads them into memory,
//! and `write` knows each group's floor without a read. The snapshot data
//! (the caller's description of a snapshot, whose bytes the state machine
//! keeps in chunks: see `snapshot`) lives in its own record, read only by
//! `load`. The slot and data records are always written together. Format 1
//! of the data record held a whole state machine inline; GeoDB no longer
//! reads it, and says so.
//!
//! The engine has no range delete, so a snapshot deletes the entries it
//! covers one by one, after scanning for them from the previous floor up:
//! never from slot 0, which would step over the deletion markers of every
//! earlier truncation. Every record carries a format byte and is checked
//! when read; a record that does not decode is [`Error::Corrupt`].
//!
//! Writes are serialised by a mutex (they must be: a write reads the floor
//! that an earlier one set), which is the intended use anyway: one thread
//! per node gathers the groups' `Persist`s and writes them together. The
//! in-memory floors are only ever a copy of disk: loaded by `new`, updated
//! after a write succeeds, never when it fails. Nothing but the `LogStore`
//! may write these two families.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{ColumnFamily, Durability, Engine, WriteBatch};
use crate::{Error, Result};

/// Format byte of log entry records.
const ENTRY_FORMAT_V1: u8 = 1;
/// Format byte of hard state records.
const HARD_STATE_FORMAT_V1: u8 = 1;
/// Format byte of snapshot slot records.
const SNAPSHOT_SLOT_FORMAT_V1: u8 = 1;
/// Format byte of snapshot data records (format 1 held a whole state
/// machine; see the module documentation).
const SNAPSHOT_DATA_FORMAT_V2: u8 = 2;
const SNAPSHOT_DATA_FORMAT_INLINE: u8 = 1;

/// The kinds of `PaxosState` record: the first byte of its key.
const STATE_HARD_STATE: u8 = 1;
const STATE_SNAPSHOT_SLOT: u8 = 2;
const STATE_SNAPSHOT_DATA: u8 = 3;

const GROUP_BYTES: usize = 8;
const SLOT_BYTES: usize = 8;
const LOG_KEY_BYTES: usize = GROUP_BYTES + SLOT_BYTES;
const STATE_KEY_BYTES: usize = 1 + GROUP_BYTES;

/// The slot below every entry when a group has no snapshot: slot 0 is
/// "nothing" (`geo`'s `Slot::ZERO`), so an entry at slot 0 is ignored.
const FLOOR_NONE: u64 = 0;

/// What to make durable for one group, applied in field order (see the
/// module documentation): the byte-level form of a `Persist`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupWrite {
    /// The group's id (any `u64`; the caller's numbering).
    pub group: u64,
    /// A snapshot's slot and data: drops every entry at or below the slot.
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// `(slot, value)` entries, each replacing the entry of its slot.
    pub entries: Vec<(u64, Vec<u8>)>,
    pub hard_state: Option<Vec<u8>>,
}

/// What a group has stored: the byte-level form of a `Stored`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredGroup {
    pub hard_state: Option<Vec<u8>>,
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Entries in slot order, all above the snapshot slot.
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// The durable Multi-Paxos state of one node's groups; see the module
/// documentation.
pub struct LogStore {
    engine: Arc<dyn Engine>,
    /// The snapshot slot of each group that has a snapshot (a copy of
    /// disk). Its lock serialises writes. One `u64` per group the node
    /// hosts, so it is bounded by the node's groups, like their replicas.
    floors: Mutex<HashMap<u64, u64>>,
}

/// One group's progress through a `write` call, which may hold several
/// [`GroupWrite`]s of the same group.
struct Pending {
    /// The floor after the writes so far.
    floor: u64,
    /// Whether a snapshot in this call set `floor`.
    snapshot_written: bool,
    /// Slots this call has put so far: not on disk yet, so a later
    /// snapshot in the same call must delete them itself.
    put_slots: BTreeSet<u64>,
}

impl LogStore {
    /// A store over `engine`, reading every group's snapshot slot.
    pub fn new(engine: Arc<dyn Engine>) -> Result<Self> {
        let mut floors = HashMap::new();
        for (group, record) in scan_state_kind(engine.as_ref(), STATE_SNAPSHOT_SLOT)? {
            floors.insert(group, decode_snapshot_slot(group, &record)?);
        }
        Ok(LogStore { engine, floors: Mutex::new(floors) })
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    fn lock(&self) -> Result<MutexGuard<'_, HashMap<u64, u64>>> {
        // A thread panicked inside a write, perhaps inside the engine: the
        // floors may no longer match disk. A new store reads them again.
        self.floors.lock().map_err(|_| Error::Engine("log store is poisoned: a thread panicked while writing".into()))
    }

    /// Stores every group's write with one [`WriteBatch`] and one engine
    /// write of `durability` (group commit across groups): synced when any
    /// of them holds a promise or a vote, buffered when all are only copies
    /// of chosen entries or a learner's log (which a crash may lose: the
    /// replica learns them again). A synced write makes every buffered one
    /// before it durable too: the engine has one write-ahead log. The
    /// writes are applied in order, so a group may appear more than once.
    ///
    /// On `Err` nothing of the call is visible (it is one engine batch).
    /// A call with nothing to store (no writes, or only entries at or below
    /// their group's snapshot) writes nothing.
    pub fn write(&self, writes: &[GroupWrite], durability: Durability) -> Result<()> {
        let mut floors = self.lock()?;
        let mut batch = WriteBatch::new();
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        for write in writes {
            let group = write.group;
            let state = pending.entry(group).or_insert_with(|| Pending {
                floor: floors.get(&group).copied().unwrap_or(FLOOR_NONE),
                snapshot_written: false,
                put_slots: BTreeSet::new(),
            });

            if let Some((slot, data)) = &write.snapshot {
                let slot = *slot;
                // Drop the entries at or below the snapshot. Those on disk
                // lie above the floor (any below it were dropped by the
                // snapshot that set it, on disk or earlier in this batch),
                // so scan from there; those this call put are not on disk
                // yet, so delete them by name.
                let mut dropped = BTreeSet::new();
                if let Some(first) = state.floor.checked_add(1)
                    && first <= slot
                {
                    for (stored_slot, _) in scan_log(self.engine.as_ref(), group, first, slot)? {
                        dropped.insert(stored_slot);
                    }
                }
                let kept = match slot.checked_add(1) {
                    Some(above) => state.put_slots.split_off(&above),
                    None => BTreeSet::new(),
                };
                dropped.append(&mut state.put_slots);
                state.put_slots = kept;
                for dropped_slot in dropped {
                    batch.delete(ColumnFamily::PaxosLog, log_key(group, dropped_slot));
                }
                batch.put(ColumnFamily::PaxosState, state_key(STATE_SNAPSHOT_SLOT, group), encode_snapshot_slot(slot));
                batch.put(
                    ColumnFamily::PaxosState,
                    state_key(STATE_SNAPSHOT_DATA, group),
                    record(SNAPSHOT_DATA_FORMAT_V2, data),
                );
                state.floor = slot;
                state.snapshot_written = true;
            }

            for (slot, value) in &write.entries {
                // Stored::apply: an entry at or below the snapshot is
                // already part of it.
                if *slot <= state.floor {
                    continue;
                }
                batch.put(ColumnFamily::PaxosLog, log_key(group, *slot), record(ENTRY_FORMAT_V1, value));
                state.put_slots.insert(*slot);
            }

            if let Some(hard_state) = &write.hard_state {
                batch.put(
                    ColumnFamily::PaxosState,
                    state_key(STATE_HARD_STATE, group),
                    record(HARD_STATE_FORMAT_V1, hard_state),
                );
            }
        }

        if batch.is_empty() {
            return Ok(());
        }
        self.engine.write(batch, durability)?;
        for (group, state) in pending {
            if state.snapshot_written {
                floors.insert(group, state.floor);
            }
        }
        Ok(())
    }

    /// Everything `group` has stored (all empty for a group never written).
    pub fn load(&self, group: u64) -> Result<StoredGroup> {
        // Hold the write lock: the three records and the log are one state.
        let _floors = self.lock()?;
        let engine = self.engine.as_ref();
        let hard_state = engine
            .get(ColumnFamily::PaxosState, &state_key(STATE_HARD_STATE, group))?
            .map(|bytes| decode_record(HARD_STATE_FORMAT_V1, &bytes, "hard state", group))
            .transpose()?;
        let slot = engine
            .get(ColumnFamily::PaxosState, &state_key(STATE_SNAPSHOT_SLOT, group))?
            .map(|bytes| decode_snapshot_slot(group, &bytes))
            .transpose()?;
        let data = engine
            .get(ColumnFamily::PaxosState, &state_key(STATE_SNAPSHOT_DATA, group))?
            .map(|bytes| {
                if bytes.first() == Some(&SNAPSHOT_DATA_FORMAT_INLINE) {
                    return Err(Error::Corrupt(format!(
                        "group {group}: its snapshot was written by an older GeoDB, which kept snapshots inline; \
                         this version keeps them in chunks and cannot read it (start from an empty data directory, \
                         or load the data again)"
                    )));
                }
                decode_record(SNAPSHOT_DATA_FORMAT_V2, &bytes, "snapshot data", group)
            })
            .transpose()?;
        let snapshot = match (slot, data) {
            (Some(slot), Some(data)) => Some((slot, data)),
            (None, None) => None,
            // The two records are always written together.
            (Some(_), None) => return Err(Error::Corrupt(format!("group {group}: snapshot slot without its data"))),
            (None, Some(_)) => return Err(Error::Corrupt(format!("group {group}: snapshot data without its slot"))),
        };
        let floor = snapshot.as_ref().map_or(FLOOR_NONE, |(slot, _)| *slot);
        let entries = match floor.checked_add(1) {
            Some(first) => scan_log(engine, group, first, u64::MAX)?,
            None => Vec::new(),
        };
        Ok(StoredGroup { hard_state, snapshot, entries })
    }

    /// The groups with anything stored, in id order. Costs a scan of the
    /// hard states and snapshot slots, and one log seek per group with
    /// entries (on the memory engine, whose scans copy their range, a copy
    /// of the rest of the log per group): a start-up operation.
    pub fn groups(&self) -> Result<Vec<u64>> {
        let _floors = self.lock()?;
        let engine = self.engine.as_ref();
        let mut groups = BTreeSet::new();
        for kind in [STATE_HARD_STATE, STATE_SNAPSHOT_SLOT] {
            groups.extend(scan_state_kind(engine, kind)?.into_iter().map(|(group, _)| group));
        }
        // Skip from group to group: the first log key at or above the
        // start of the next possible group's range.
        let mut next = Some(0u64);
        while let Some(from) = next {
            let start = log_key(from, 0);
            let mut scan = engine.scan(ColumnFamily::PaxosLog, Bound::Included(&start), Bound::Unbounded, false)?;
            let Some(pair) = scan.next() else { break };
            let (key, _) = pair?;
            let (group, _) = decode_log_key(&key)?;
            groups.insert(group);
            next = group.checked_add(1);
        }
        Ok(groups.into_iter().collect())
    }
}

/// The `PaxosLog` key of `group`'s entry at `slot`.
fn log_key(group: u64, slot: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(LOG_KEY_BYTES);
    key.extend_from_slice(&group.to_be_bytes());
    key.extend_from_slice(&slot.to_be_bytes());
    key
}

/// Splits a `PaxosLog` key into (group, slot).
fn decode_log_key(key: &[u8]) -> Result<(u64, u64)> {
    let corrupt = || Error::Corrupt(format!("paxos log key {key:02x?}"));
    let (group, slot) = key.split_at_checked(GROUP_BYTES).ok_or_else(corrupt)?;
    let group: [u8; GROUP_BYTES] = group.try_into().map_err(|_| corrupt())?;
    let slot: [u8; SLOT_BYTES] = slot.try_into().map_err(|_| corrupt())?;
    Ok((u64::from_be_bytes(group), u64::from_be_bytes(slot)))
}

/// The `PaxosState` key of `group`'s record of `kind`.
fn state_key(kind: u8, group: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(STATE_KEY_BYTES);
    key.push(kind);
    key.extend_from_slice(&group.to_be_bytes());
    key
}

/// Every `PaxosState` record of `kind`, as (group, record) in group order.
fn scan_state_kind(engine: &dyn Engine, kind: u8) -> Result<Vec<(u64, Vec<u8>)>> {
    let (start, end) = (state_key(kind, 0), state_key(kind, u64::MAX));
    let scan = engine.scan(ColumnFamily::PaxosState, Bound::Included(&start), Bound::Included(&end), false)?;
    scan.map(|pair| {
        let (key, record) = pair?;
        match key.split_first() {
            Some((&found, group)) if found == kind => match <[u8; GROUP_BYTES]>::try_from(group) {
                Ok(group) => Ok((u64::from_be_bytes(group), record)),
                Err(_) => Err(Error::Corrupt(format!("paxos state key {key:02x?}"))),
            },
            _ => Err(Error::Corrupt(format!("paxos state key {key:02x?}"))),
        }
    })
    .collect()
}

/// `group`'s entries from slot `first` to `last` inclusive, in slot order.
fn scan_log(engine: &dyn Engine, group: u64, first: u64, last: u64) -> Result<Vec<(u64, Vec<u8>)>> {
    let (start, end) = (log_key(group, first), log_key(group, last));
    let scan = engine.scan(ColumnFamily::PaxosLog, Bound::Included(&start), Bound::Included(&end), false)?;
    scan.map(|pair| {
        let (key, bytes) = pair?;
        let (found, slot) = decode_log_key(&key)?;
        if found != group || slot < first || slot > last {
            return Err(Error::Corrupt(format!("paxos log key {key:02x?} in the scan of group {group}")));
        }
        Ok((slot, decode_record(ENTRY_FORMAT_V1, &bytes, "log entry", group)?))
    })
    .collect()
}

/// A record: its format byte, then `payload`.
fn record(format: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(format);
    out.extend_from_slice(payload);
    out
}

/// The payload of a record written by [`record`] with `format`.
fn decode_record(format: u8, bytes: &[u8], what: &str, group: u64) -> Result<Vec<u8>> {
    match bytes.split_first() {
        Some((&found, payload)) if found == format => Ok(payload.to_vec()),
        Some((found, _)) => Err(Error::Corrupt(format!("group {group}: {what} format {found} is unknown"))),
        None => Err(Error::Corrupt(format!("group {group}: empty {what} record"))),
    }
}

fn encode_snapshot_slot(slot: u64) -> Vec<u8> {
    record(SNAPSHOT_SLOT_FORMAT_V1, &slot.to_be_bytes())
}

fn decode_snapshot_slot(group: u64, bytes: &[u8]) -> Result<u64> {
    let payload = decode_record(SNAPSHOT_SLOT_FORMAT_V1, bytes, "snapshot slot", group)?;
    let slot: [u8; SLOT_BYTES] = payload
        .try_into()
        .map_err(|_| Error::Corrupt(format!("group {group}: snapshot slot record of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(slot))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use proptest::prelude::*;

    use super::*;
    use crate::engine::{HookedEngine, MemoryEngine};

    /// A memory engine that records each write's size and durability, and
    /// fails the next write when told to.
    #[derive(Clone, Default)]
    struct Recorder {
        fail_next: Arc<AtomicBool>,
        writes: Arc<Mutex<Vec<(usize, Durability)>>>,
    }

    impl Recorder {
        fn engine(&self) -> Arc<HookedEngine> {
            let recorder = self.clone();
            Arc::new(HookedEngine::new(Arc::new(MemoryEngine::new()), move |batch, durability| {
                recorder.writes.lock().unwrap().push((batch.len(), durability));
                if recorder.fail_next.swap(false, Ordering::SeqCst) {
                    return Err(Error::Engine("No space left on device".into()));
                }
                Ok(())
            }))
        }
    }

    /// An engine whose writes always fail.
    fn broken_engine() -> Arc<HookedEngine> {
        Arc::new(HookedEngine::new(Arc::new(MemoryEngine::new()), |_, _| {
            Err(Error::Engine("No space left on device".into()))
        }))
    }

    fn entries(slots: impl IntoIterator<Item = u64>, tag: u8) -> Vec<(u64, Vec<u8>)> {
        slots.into_iter().map(|slot| (slot, vec![tag, slot as u8])).collect()
    }

    fn entries_only(group: u64, entries: Vec<(u64, Vec<u8>)>) -> GroupWrite {
        GroupWrite { group, entries, ..GroupWrite::default() }
    }

    fn memory_store() -> LogStore {
        LogStore::new(Arc::new(MemoryEngine::new())).unwrap()
    }

    #[test]
    fn write_then_load_round_trips_several_groups() {
        let store = memory_store();
        assert_eq!(store.load(1).unwrap(), StoredGroup::default());
        assert_eq!(store.groups().unwrap(), Vec::<u64>::new());
        store
            .write(
                &[
                    GroupWrite {
                        group: 1,
                        snapshot: None,
                        entries: entries([1, 2, 3], 1),
                        hard_state: Some(b"h1".to_vec()),
                    },
                    GroupWrite {
                        group: 2,
                        snapshot: Some((4, b"s2".to_vec())),
                        entries: entries([5], 2),
                        hard_state: None,
                    },
                    entries_only(u64::MAX, entries([u64::MAX], 3)),
                    GroupWrite { group: 3, hard_state: Some(b"h3".to_vec()), ..GroupWrite::default() },
                    // Nothing to store: not a group with anything stored.
                    GroupWrite { group: 4, ..GroupWrite::default() },
                ],
                Durability::Sync,
            )
            .unwrap();
        assert_eq!(
            store.load(1).unwrap(),
            StoredGroup { hard_state: Some(b"h1".to_vec()), snapshot: None, entries: entries([1, 2, 3], 1) }
        );
        assert_eq!(
            store.load(2).unwrap(),
            StoredGroup { hard_state: None, snapshot: Some((4, b"s2".to_vec())), entries: entries([5], 2) }
        );
        assert_eq!(store.load(u64::MAX).unwrap().entries, entries([u64::MAX], 3));
        assert_eq!(store.load(3).unwrap().hard_state, Some(b"h3".to_vec()));
        assert_eq!(store.load(4).unwrap(), StoredGroup::default());
        assert_eq!(store.groups().unwrap(), vec![1, 2, 3, u64::MAX]);

        // Overwrite a slot, extend the log, replace the hard state.
        store
            .write(
                &[GroupWrite {
                    group: 1,
                    snapshot: None,
                    entries: entries([2, 4], 9),
                    hard_state: Some(b"h1'".to_vec()),
                }],
                Durability::Sync,
            )
            .unwrap();
        let group = store.load(1).unwrap();
        assert_eq!(group.hard_state, Some(b"h1'".to_vec()));
        assert_eq!(group.entries, vec![(1, vec![1, 1]), (2, vec![9, 2]), (3, vec![1, 3]), (4, vec![9, 4])]);
    }

    #[test]
    fn snapshot_drops_entries_at_or_below_its_slot() {
        let store = memory_store();
        store
            .write(&[entries_only(7, entries(1..=6, 1)), entries_only(8, entries(1..=6, 1))], Durability::Sync)
            .unwrap();
        store
            .write(
                &[GroupWrite { group: 7, snapshot: Some((3, b"s3".to_vec())), ..GroupWrite::default() }],
                Durability::Sync,
            )
            .unwrap();
        let group = store.load(7).unwrap();
        assert_eq!(group.snapshot, Some((3, b"s3".to_vec())));
        assert_eq!(group.entries, entries(4..=6, 1));
        // The neighbouring group is untouched.
        assert_eq!(store.load(8).unwrap().entries, entries(1..=6, 1));

        // Entries at or below the snapshot (and slot 0) are ignored, in
        // the snapshot's own write and in later ones.
        store
            .write(
                &[GroupWrite {
                    group: 7,
                    snapshot: Some((5, b"s5".to_vec())),
                    entries: entries([0, 2, 5, 7], 2),
                    hard_state: None,
                }],
                Durability::Sync,
            )
            .unwrap();
        store.write(&[entries_only(7, entries([0, 4, 5, 8], 3))], Durability::Sync).unwrap();
        let group = store.load(7).unwrap();
        assert_eq!(group.snapshot, Some((5, b"s5".to_vec())));
        assert_eq!(group.entries, vec![(6, vec![1, 6]), (7, vec![2, 7]), (8, vec![3, 8])]);

        // Entries put earlier in the same call are dropped by a later
        // snapshot of that call too.
        store
            .write(
                &[
                    entries_only(9, entries(1..=4, 1)),
                    GroupWrite { group: 9, snapshot: Some((2, b"s".to_vec())), ..GroupWrite::default() },
                ],
                Durability::Sync,
            )
            .unwrap();
        assert_eq!(store.load(9).unwrap().entries, entries(3..=4, 1));
        // On disk too, not only above the floor that `load` reads from.
        for group in [7, 8, 9] {
            let on_disk = scan_log(store.engine().as_ref(), group, 0, u64::MAX).unwrap();
            assert_eq!(on_disk, store.load(group).unwrap().entries, "group {group}");
        }

        // A snapshot at the last slot leaves no room for entries.
        store
            .write(
                &[GroupWrite {
                    group: 7,
                    snapshot: Some((u64::MAX, Vec::new())),
                    entries: entries([u64::MAX], 4),
                    hard_state: None,
                }],
                Durability::Sync,
            )
            .unwrap();
        assert_eq!(store.load(7).unwrap().entries, Vec::new());
    }

    #[test]
    fn reopen_after_drop_reads_everything_back_and_keeps_the_floor() {
        let engine = Arc::new(MemoryEngine::new());
        let store = LogStore::new(engine.clone()).unwrap();
        store
            .write(
                &[
                    GroupWrite {
                        group: 1,
                        snapshot: Some((10, b"snap".to_vec())),
                        entries: entries(11..=12, 1),
                        hard_state: Some(b"hard".to_vec()),
                    },
                    entries_only(2, entries(1..=2, 2)),
                ],
                Durability::Sync,
            )
            .unwrap();
        let before: Vec<StoredGroup> = [1, 2].map(|group| store.load(group).unwrap()).into();
        drop(store);
        // Every write was synced: a crash loses none of it.
        engine.crash();

        let store = LogStore::new(engine).unwrap();
        let after: Vec<StoredGroup> = [1, 2].map(|group| store.load(group).unwrap()).into();
        assert_eq!(after, before);
        assert_eq!(store.groups().unwrap(), vec![1, 2]);
        // The floor came back from disk: entries below it stay ignored.
        store.write(&[entries_only(1, entries([5, 13], 3))], Durability::Sync).unwrap();
        assert_eq!(store.load(1).unwrap().entries, vec![(11, vec![1, 11]), (12, vec![1, 12]), (13, vec![3, 13])]);
    }

    #[test]
    fn one_write_is_one_synced_batch_across_groups() {
        let recorder = Recorder::default();
        let store = LogStore::new(recorder.engine()).unwrap();
        let writes: Vec<GroupWrite> = (0..5)
            .map(|group| GroupWrite {
                group,
                snapshot: None,
                entries: entries(1..=3, 1),
                hard_state: Some(vec![group as u8]),
            })
            .collect();
        store.write(&writes, Durability::Sync).unwrap();
        assert_eq!(*recorder.writes.lock().unwrap(), vec![(20, Durability::Sync)]);
        // Nothing to store, nothing written.
        store.write(&[], Durability::Sync).unwrap();
        store.write(&[entries_only(0, Vec::new())], Durability::Sync).unwrap();
        assert_eq!(recorder.writes.lock().unwrap().len(), 1);
        // A learner's copy goes to the engine without a sync, in order.
        store.write(&[entries_only(1, entries(4..=5, 1))], Durability::Buffered).unwrap();
        assert_eq!(recorder.writes.lock().unwrap()[1], (2, Durability::Buffered));
        assert_eq!(store.load(1).unwrap().entries, entries(1..=5, 1));
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_the_store_goes_on() {
        let recorder = Recorder::default();
        let store = LogStore::new(recorder.engine()).unwrap();
        store.write(&[entries_only(1, entries(1..=5, 1))], Durability::Sync).unwrap();
        let before = store.load(1).unwrap();

        recorder.fail_next.store(true, Ordering::SeqCst);
        let failed = store.write(
            &[
                GroupWrite {
                    group: 1,
                    snapshot: Some((3, b"s".to_vec())),
                    entries: entries([6], 2),
                    hard_state: Some(b"h".to_vec()),
                },
                entries_only(2, entries([1], 2)),
            ],
            Durability::Sync,
        );
        assert!(matches!(failed, Err(Error::Engine(m)) if m.contains("No space")));
        assert_eq!(store.load(1).unwrap(), before);
        assert_eq!(store.load(2).unwrap(), StoredGroup::default());

        // The failed snapshot did not raise the floor: slot 2 is still
        // writable.
        store.write(&[entries_only(1, entries([2], 3))], Durability::Sync).unwrap();
        assert_eq!(store.load(1).unwrap().entries[1], (2, vec![3, 2]));
    }

    #[test]
    fn write_on_a_broken_engine_returns_err() {
        let store = LogStore::new(broken_engine()).unwrap();
        let result = store.write(
            &[GroupWrite { group: 1, hard_state: Some(b"h".to_vec()), ..GroupWrite::default() }],
            Durability::Sync,
        );
        assert!(matches!(result, Err(Error::Engine(_))));
    }

    #[test]
    fn corrupt_records_are_reported() {
        let cases: [(ColumnFamily, Vec<u8>, Vec<u8>); 5] = [
            (ColumnFamily::PaxosLog, log_key(1, 1), vec![9]),
            (ColumnFamily::PaxosLog, log_key(1, 1), Vec::new()),
            (ColumnFamily::PaxosState, state_key(STATE_HARD_STATE, 1), vec![9, 1]),
            (ColumnFamily::PaxosState, state_key(STATE_SNAPSHOT_SLOT, 1), vec![SNAPSHOT_SLOT_FORMAT_V1, 1]),
            // A slot without its data.
            (ColumnFamily::PaxosState, state_key(STATE_SNAPSHOT_SLOT, 1), encode_snapshot_slot(0)),
        ];
        for (cf, key, value) in cases {
            let engine = Arc::new(MemoryEngine::new());
            let mut batch = WriteBatch::new();
            batch.put(cf, key.clone(), value.clone());
            engine.write(batch, Durability::Sync).unwrap();
            let loaded = LogStore::new(engine.clone()).and_then(|store| store.load(1));
            assert!(matches!(loaded, Err(Error::Corrupt(_))), "{cf:?} {key:02x?} = {value:02x?}: {loaded:?}");
        }
        // A log key of the wrong length.
        let engine = Arc::new(MemoryEngine::new());
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::PaxosLog, vec![1; 9], record(ENTRY_FORMAT_V1, b""));
        engine.write(batch, Durability::Sync).unwrap();
        assert!(matches!(LogStore::new(engine).unwrap().groups(), Err(Error::Corrupt(_))));
    }

    #[cfg(feature = "rocksdb")]
    #[test]
    fn rocks_write_reopen_and_load() {
        use crate::engine::rocks::RocksEngine;

        let dir = tempfile::tempdir().unwrap();
        let writes = [
            GroupWrite {
                group: 1,
                snapshot: Some((2, b"s1".to_vec())),
                entries: entries(1..=4, 1),
                hard_state: Some(b"h1".to_vec()),
            },
            entries_only(2, entries(1..=3, 2)),
            GroupWrite { group: 2, snapshot: Some((1, b"s2".to_vec())), ..GroupWrite::default() },
        ];
        let before: Vec<StoredGroup> = {
            let store = LogStore::new(Arc::new(RocksEngine::open(dir.path()).unwrap())).unwrap();
            store.write(&writes, Durability::Sync).unwrap();
            [1, 2].map(|group| store.load(group).unwrap()).into()
        };
        assert_eq!(before[0].entries, entries(3..=4, 1));
        assert_eq!(before[1].entries, entries(2..=3, 2));

        let store = LogStore::new(Arc::new(RocksEngine::open(dir.path()).unwrap())).unwrap();
        let after: Vec<StoredGroup> = [1, 2].map(|group| store.load(group).unwrap()).into();
        assert_eq!(after, before);
        assert_eq!(store.groups().unwrap(), vec![1, 2]);
        store.write(&[entries_only(1, entries([1, 5], 3))], Durability::Sync).unwrap();
        assert_eq!(store.load(1).unwrap().entries, vec![(3, vec![1, 3]), (4, vec![1, 4]), (5, vec![3, 5])]);
    }

    /// A group as `Stored::apply` (`geo/src/paxos/ready.rs`) keeps it, with
    /// bytes for values: the reference the store must agree with.
    #[derive(Clone, Debug, Default)]
    struct ModelGroup {
        hard_state: Option<Vec<u8>>,
        snapshot: Option<(u64, Vec<u8>)>,
        entries: BTreeMap<u64, Vec<u8>>,
    }

    impl ModelGroup {
        fn apply(&mut self, write: &GroupWrite) {
            if let Some((slot, data)) = &write.snapshot {
                self.entries.retain(|stored, _| stored > slot);
                self.snapshot = Some((*slot, data.clone()));
            }
            let floor = self.snapshot.as_ref().map_or(0, |(slot, _)| *slot);
            for (slot, value) in &write.entries {
                if *slot <= floor {
                    continue;
                }
                self.entries.insert(*slot, value.clone());
            }
            if let Some(hard_state) = &write.hard_state {
                self.hard_state = Some(hard_state.clone());
            }
        }

        fn stored(&self) -> StoredGroup {
            StoredGroup {
                hard_state: self.hard_state.clone(),
                snapshot: self.snapshot.clone(),
                entries: self.entries.iter().map(|(slot, value)| (*slot, value.clone())).collect(),
            }
        }

        fn is_empty(&self) -> bool {
            self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
        }
    }

    /// Group ids, including both ends of the id space.
    const MODEL_GROUPS: [u64; 4] = [0, 1, 7, u64::MAX];

    /// Slots collide often, and sometimes sit at the edges (0 is never an
    /// entry; `u64::MAX` leaves no room above).
    fn arb_slot() -> impl Strategy<Value = u64> {
        prop_oneof![10 => 0u64..12, 1 => Just(u64::MAX)]
    }

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..3)
    }

    fn arb_group_write() -> impl Strategy<Value = GroupWrite> {
        (
            proptest::sample::select(MODEL_GROUPS.to_vec()),
            proptest::option::weighted(0.2, (arb_slot(), arb_bytes())),
            proptest::collection::vec((arb_slot(), arb_bytes()), 0..5),
            proptest::option::weighted(0.3, arb_bytes()),
        )
            .prop_map(|(group, snapshot, entries, hard_state)| GroupWrite {
                group,
                snapshot,
                entries,
                hard_state,
            })
    }

    proptest! {
        /// Random calls (several groups each, the same group sometimes
        /// twice), with the store sometimes reopened in between: `load` and
        /// `groups` always agree with the model.
        #[test]
        fn matches_the_stored_apply_model(
            calls in proptest::collection::vec(
                (proptest::collection::vec(arb_group_write(), 0..4), any::<bool>()),
                1..12,
            ),
        ) {
            let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
            let mut store = LogStore::new(engine.clone()).unwrap();
            let mut model: BTreeMap<u64, ModelGroup> = BTreeMap::new();
            for (writes, reopen) in calls {
                store.write(&writes, Durability::Sync).unwrap();
                for write in &writes {
                    model.entry(write.group).or_default().apply(write);
                }
                if reopen {
                    store = LogStore::new(engine.clone()).unwrap();
                }
                for group in MODEL_GROUPS {
                    let expected = model.get(&group).map(ModelGroup::stored).unwrap_or_default();
                    // The whole of the group's log on disk, not only what
                    // `load` reads above the floor: nothing is left below.
                    prop_assert_eq!(
                        &scan_log(engine.as_ref(), group, 0, u64::MAX).unwrap(),
                        &expected.entries,
                        "log of group {}",
                        group
                    );
                    prop_assert_eq!(store.load(group).unwrap(), expected, "group {}", group);
                }
                let expected: Vec<u64> =
                    model.iter().filter(|(_, group)| !group.is_empty()).map(|(id, _)| *id).collect();
                prop_assert_eq!(store.groups().unwrap(), expected);
            }
        }
    }
}
