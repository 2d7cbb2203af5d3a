//! State-machine snapshots: the contents of some column families as a
//! sequence of chunks, to bring a lagging replica up to date.
//!
//! (Not to be confused with an MVCC snapshot, the timestamp a transaction
//! reads at: this is the Paxos sense, a replica's applied state as of a
//! slot, which lets a group truncate its log and ship the state instead.)
//!
//! A snapshot is never one byte string in memory. [`export`] streams the
//! families from one engine scan each (RocksDB pins a point-in-time view
//! for as long as a scan lives) and cuts them into chunks of about
//! `chunk_bytes`, each handed to the caller as soon as it is full. The
//! caller stores them in the [`ColumnFamily::Snapshots`] family under the
//! snapshot's slot and the chunk's index ([`put_chunk`]), where a replica
//! reads them one at a time to send them ([`chunk`]), and where a receiving
//! replica stores them as they arrive. [`check`] decodes a stored snapshot
//! chunk by chunk; [`Import`] replaces the families' contents with it in
//! bounded batches.
//!
//! Format of one chunk (a varint is unsigned LEB128 in its shortest form;
//! bytes are a varint length, then the bytes):
//!
//! ```text
//!  chunk = format:u8 (2)  pair*
//!  pair  = cf:u8 (ColumnFamily::tag)  key:bytes  value:bytes
//! ```
//!
//! A chunk holds whole pairs, so each decodes on its own; one pair larger
//! than `chunk_bytes` is a chunk of its own. Across the chunks of one
//! snapshot, pairs are in strictly increasing (family tag, key) order, the
//! engine's scan order, and every family is one the snapshot is for: the
//! checks catch a reordered, spliced or foreign chunk, so a snapshot has
//! one encoding. Every snapshot has at least one chunk (an empty one holds
//! the format byte alone).
//!
//! An import is not atomic: it deletes the families' contents, then writes
//! the pairs, each in batches of about [`IMPORT_BATCH_BYTES`]. The caller
//! makes it look atomic: it checks the whole snapshot first (so corrupt
//! input changes nothing), marks the import begun in a durable record that
//! it removes in the batch that ends it (so a crash midway is seen and the
//! import redone), and keeps readers out meanwhile. Callers keep writers of
//! those families out while they export or import.
//!
//! Keys of the snapshots family: `slot:u64 BE  index:u64 BE`, so that one
//! snapshot's chunks are one range in index order, and snapshots in slot
//! order.

use std::ops::Bound;

use crate::engine::{ColumnFamily, Durability, Engine, WriteBatch};
use crate::wire::{self, Reader};
use crate::{Error, Result};

/// The first byte of every chunk. Bumped whenever the format changes
/// (format 1 was a whole snapshot as one byte string).
const CHUNK_FORMAT_V2: u8 = 2;
/// How many bytes of writes an import gathers into one batch.
pub const IMPORT_BATCH_BYTES: usize = 4 << 20;
/// Bytes of a key of the snapshots family.
const CHUNK_KEY_BYTES: usize = 16;

/// Streams the given families as chunks of about `chunk_bytes` (see the
/// module documentation), calling `emit` with each in order; returns how
/// many there were (at least one). A family named twice is exported once.
pub fn export(
    engine: &dyn Engine,
    cfs: &[ColumnFamily],
    chunk_bytes: usize,
    mut emit: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<u64> {
    let mut chunks = 0u64;
    let mut chunk = vec![CHUNK_FORMAT_V2];
    for cf in families_in_tag_order(cfs) {
        for pair in engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false)? {
            let (key, value) = pair?;
            let pair_bytes = 1 + 2 * wire::VARINT_BYTES_MAX + key.len() + value.len();
            if chunk.len() > 1 && chunk.len() + pair_bytes > chunk_bytes {
                emit(std::mem::replace(&mut chunk, vec![CHUNK_FORMAT_V2]))?;
                chunks += 1;
            }
            chunk.push(cf.tag());
            wire::put_bytes(&mut chunk, &key);
            wire::put_bytes(&mut chunk, &value);
        }
    }
    emit(chunk)?;
    Ok(chunks + 1)
}

/// Checks a snapshot chunk by chunk, without writing anything: feed it the
/// chunks in order with [`Check::chunk`].
pub struct Check {
    cfs: Vec<ColumnFamily>,
    last: Option<(u8, Vec<u8>)>,
}

/// A checker of a snapshot of the families `cfs`.
pub fn check(cfs: &[ColumnFamily]) -> Check {
    Check { cfs: families_in_tag_order(cfs), last: None }
}

impl Check {
    /// The next chunk decodes and continues the order: else
    /// [`Error::Corrupt`].
    pub fn chunk(&mut self, bytes: &[u8]) -> Result<()> {
        decode_chunk(bytes, &self.cfs, &mut self.last, |_, _, _| {})
    }
}

/// Replaces the contents of some families with a snapshot, in bounded
/// batches (see the module documentation: the caller makes it atomic).
pub struct Import<'e> {
    engine: &'e dyn Engine,
    cfs: Vec<ColumnFamily>,
    last: Option<(u8, Vec<u8>)>,
    batch: WriteBatch,
    batch_bytes: usize,
}

impl<'e> Import<'e> {
    /// Deletes every pair of the families, and readies the import of a
    /// snapshot of exactly those families.
    pub fn begin(engine: &'e dyn Engine, cfs: &[ColumnFamily]) -> Result<Import<'e>> {
        let mut import =
            Import { engine, cfs: families_in_tag_order(cfs), last: None, batch: WriteBatch::new(), batch_bytes: 0 };
        for cf in import.cfs.clone() {
            for pair in engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false)? {
                let (key, _) = pair?;
                import.batch_bytes += key.len();
                import.batch.delete(cf, key);
                import.flush_if_full()?;
            }
        }
        Ok(import)
    }

    /// Writes the pairs of the next chunk (corrupt: [`Error::Corrupt`], and
    /// the import must be redone).
    pub fn chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let mut pairs: Vec<(ColumnFamily, &[u8], &[u8])> = Vec::new();
        decode_chunk(bytes, &self.cfs, &mut self.last, |cf, key, value| pairs.push((cf, key, value)))?;
        for (cf, key, value) in pairs {
            self.batch_bytes += key.len() + value.len();
            self.batch.put(cf, key.to_vec(), value.to_vec());
            self.flush_if_full()?;
        }
        Ok(())
    }

    /// Ends the import: what is left, and `last` (the caller's own records,
    /// say the end of its import marker), in one synced batch. On return
    /// the families durably hold the snapshot.
    pub fn finish(mut self, last: WriteBatch) -> Result<()> {
        self.batch.append(last);
        self.engine.write(self.batch, Durability::Sync)
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.batch_bytes >= IMPORT_BATCH_BYTES {
            // Buffered: the batch that ends the import is synced, and
            // syncing makes every earlier write durable with it.
            self.engine.write(std::mem::take(&mut self.batch), Durability::Buffered)?;
            self.batch_bytes = 0;
        }
        Ok(())
    }
}

/// Adds chunk `index` of the snapshot at `slot` to `batch`.
pub fn put_chunk(batch: &mut WriteBatch, slot: u64, index: u64, bytes: Vec<u8>) {
    batch.put(ColumnFamily::Snapshots, chunk_key(slot, index).to_vec(), bytes);
}

/// Chunk `index` of the snapshot at `slot`, if stored.
pub fn chunk(engine: &dyn Engine, slot: u64, index: u64) -> Result<Option<Vec<u8>>> {
    engine.get(ColumnFamily::Snapshots, &chunk_key(slot, index))
}

/// The slots of the snapshots stored (whole or in part), in order.
pub fn stored_slots(engine: &dyn Engine) -> Result<Vec<u64>> {
    let mut slots = Vec::new();
    let mut from = Bound::Unbounded;
    // One seek per snapshot, not one read per chunk.
    while let Some(pair) = engine.scan(ColumnFamily::Snapshots, as_ref(&from), Bound::Unbounded, false)?.next() {
        let (key, _) = pair?;
        let slot = decode_chunk_key(&key)?.0;
        slots.push(slot);
        match slot.checked_add(1) {
            Some(next) => from = Bound::Included(chunk_key(next, 0)),
            None => break,
        }
    }
    Ok(slots)
}

/// Deletes every chunk of the snapshot at `slot` (Buffered: the caller
/// syncs, or does not need to).
pub fn drop_snapshot(engine: &dyn Engine, slot: u64) -> Result<()> {
    let (start, end) = (chunk_key(slot, 0), chunk_key(slot, u64::MAX));
    let mut batch = WriteBatch::new();
    for pair in engine.scan(ColumnFamily::Snapshots, Bound::Included(&start), Bound::Included(&end), false)? {
        let (key, _) = pair?;
        batch.delete(ColumnFamily::Snapshots, key);
    }
    engine.write(batch, Durability::Buffered)
}

fn as_ref(bound: &Bound<[u8; CHUNK_KEY_BYTES]>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn chunk_key(slot: u64, index: u64) -> [u8; CHUNK_KEY_BYTES] {
    let mut key = [0; CHUNK_KEY_BYTES];
    key[..8].copy_from_slice(&slot.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn decode_chunk_key(key: &[u8]) -> Result<(u64, u64)> {
    let key: [u8; CHUNK_KEY_BYTES] =
        key.try_into().map_err(|_| Error::Corrupt(format!("snapshot chunk key of {} bytes", key.len())))?;
    let (slot, index) = key.split_at(8);
    Ok((
        u64::from_be_bytes(slot.try_into().expect("eight bytes")),
        u64::from_be_bytes(index.try_into().expect("eight bytes")),
    ))
}

/// The families in tag order, each once: the order a snapshot holds them.
fn families_in_tag_order(cfs: &[ColumnFamily]) -> Vec<ColumnFamily> {
    let mut cfs = cfs.to_vec();
    cfs.sort_by_key(|cf| cf.tag());
    cfs.dedup();
    cfs
}

/// Decodes one chunk, checking it against the families and the last pair
/// before it (updated), and hands each pair to `pair`.
fn decode_chunk<'a>(
    bytes: &'a [u8],
    cfs: &[ColumnFamily],
    last: &mut Option<(u8, Vec<u8>)>,
    mut pair: impl FnMut(ColumnFamily, &'a [u8], &'a [u8]),
) -> Result<()> {
    let mut reader = Reader::new(bytes, "snapshot chunk");
    let format = reader.u8()?;
    if format != CHUNK_FORMAT_V2 {
        return Err(Error::Corrupt(format!("snapshot chunk: format {format} is unknown")));
    }
    while !reader.is_empty() {
        let tag = reader.u8()?;
        let cf = ColumnFamily::from_tag(tag)
            .filter(|cf| cfs.contains(cf))
            .ok_or_else(|| reader.corrupt(format_args!("family {tag} is not one the snapshot is for")))?;
        let key = reader.bytes()?;
        let value = reader.bytes()?;
        if let Some((last_tag, last_key)) = last.as_ref()
            && (*last_tag, last_key.as_slice()) >= (tag, key)
        {
            return Err(reader.corrupt(format_args!("pairs out of order in family {}", cf.name())));
        }
        *last = Some((tag, key.to_vec()));
        pair(cf, key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::MemoryEngine;

    type Contents = BTreeMap<ColumnFamily, Vec<(Vec<u8>, Vec<u8>)>>;

    /// Every family's pairs.
    fn contents(engine: &dyn Engine) -> Contents {
        ColumnFamily::ALL
            .into_iter()
            .map(|cf| {
                let pairs = engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false).unwrap();
                (cf, pairs.collect::<Result<_>>().unwrap())
            })
            .collect()
    }

    fn engine_with(pairs: &[(ColumnFamily, &[u8], &[u8])]) -> MemoryEngine {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        for (cf, key, value) in pairs {
            batch.put(*cf, key.to_vec(), value.to_vec());
        }
        engine.write(batch, Durability::Sync).unwrap();
        engine
    }

    const STATE: [ColumnFamily; 3] = [ColumnFamily::Data, ColumnFamily::Latest, ColumnFamily::Locks];

    fn source() -> MemoryEngine {
        engine_with(&[
            (ColumnFamily::Data, b"a", b"1"),
            (ColumnFamily::Data, b"", b""),
            (ColumnFamily::Data, b"b\xff", b"2"),
            (ColumnFamily::Latest, b"a", b"1"),
            (ColumnFamily::Meta, b"node", b"source"),
            (ColumnFamily::PaxosLog, b"log", b"source"),
        ])
    }

    fn chunks_of(engine: &dyn Engine, cfs: &[ColumnFamily], chunk_bytes: usize) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let count = export(engine, cfs, chunk_bytes, |chunk| {
            chunks.push(chunk);
            Ok(())
        })
        .unwrap();
        assert_eq!(count, chunks.len() as u64);
        chunks
    }

    fn import(engine: &dyn Engine, cfs: &[ColumnFamily], chunks: &[Vec<u8>]) -> Result<()> {
        let mut checker = check(cfs);
        for chunk in chunks {
            checker.chunk(chunk)?;
        }
        let mut import = Import::begin(engine, cfs)?;
        for chunk in chunks {
            import.chunk(chunk)?;
        }
        import.finish(WriteBatch::new())
    }

    #[test]
    fn export_import_round_trip_between_two_engines_in_chunks_of_any_size() {
        for chunk_bytes in [1, 8, 30, 1 << 20] {
            let source = source();
            let chunks = chunks_of(&source, &STATE, chunk_bytes);
            if chunk_bytes == 1 {
                assert_eq!(chunks.len(), 4, "one pair per chunk when pairs exceed the chunk size");
            }
            if chunk_bytes == 1 << 20 {
                assert_eq!(chunks.len(), 1);
            }
            let target = engine_with(&[(ColumnFamily::Meta, b"node", b"target")]);
            import(&target, &STATE, &chunks).unwrap();
            let (source, target) = (contents(&source), contents(&target));
            for cf in STATE {
                assert_eq!(target[&cf], source[&cf], "{cf:?}");
            }
            // Families outside the snapshot are the target's own.
            assert_eq!(target[&ColumnFamily::Meta], vec![(b"node".to_vec(), b"target".to_vec())]);
            assert_eq!(target[&ColumnFamily::PaxosLog], vec![]);
        }
        // The family order and repeats in the argument do not matter.
        let reordered = [ColumnFamily::Locks, ColumnFamily::Data, ColumnFamily::Latest, ColumnFamily::Data];
        assert_eq!(chunks_of(&source(), &reordered, 30), chunks_of(&source(), &STATE, 30));
    }

    #[test]
    fn import_replaces_the_families_contents() {
        let chunks = chunks_of(&source(), &STATE, 16);
        let target = engine_with(&[
            (ColumnFamily::Data, b"a", b"old"),
            (ColumnFamily::Data, b"stale", b"x"),
            (ColumnFamily::Locks, b"lock", b"x"),
            (ColumnFamily::Latest, b"a", b"1"),
        ]);
        import(&target, &STATE, &chunks).unwrap();
        let target = contents(&target);
        assert_eq!(
            target[&ColumnFamily::Data],
            vec![(b"".to_vec(), b"".to_vec()), (b"a".to_vec(), b"1".to_vec()), (b"b\xff".to_vec(), b"2".to_vec())]
        );
        assert_eq!(target[&ColumnFamily::Latest], vec![(b"a".to_vec(), b"1".to_vec())]);
        assert_eq!(target[&ColumnFamily::Locks], vec![]);

        // A snapshot of empty families is one chunk, and empties them.
        let empty = chunks_of(&MemoryEngine::new(), &STATE, 16);
        assert_eq!(empty, vec![vec![CHUNK_FORMAT_V2]]);
        let engine = source();
        import(&engine, &STATE, &empty).unwrap();
        let after = contents(&engine);
        assert!(STATE.iter().all(|cf| after[cf].is_empty()));
        assert_eq!(after[&ColumnFamily::Meta].len(), 1);
    }

    #[test]
    fn import_is_durable() {
        let chunks = chunks_of(&source(), &STATE, 8);
        let target = MemoryEngine::new();
        import(&target, &STATE, &chunks).unwrap();
        target.crash();
        assert_eq!(contents(&target)[&ColumnFamily::Data].len(), 3);
    }

    #[test]
    fn a_large_import_writes_in_several_batches() {
        // Two families of 3 MiB each: more than one import batch.
        let source = MemoryEngine::new();
        for (cf, fill) in [(ColumnFamily::Data, 1u8), (ColumnFamily::Latest, 2)] {
            let mut batch = WriteBatch::new();
            for i in 0u32..48 {
                batch.put(cf, i.to_be_bytes().to_vec(), vec![fill; 64 << 10]);
            }
            source.write(batch, Durability::Sync).unwrap();
        }
        let chunks = chunks_of(&source, &STATE, 1 << 20);
        assert!(chunks.len() >= 6, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|chunk| chunk.len() <= 1 << 20));
        let target = engine_with(&[(ColumnFamily::Data, b"old", b"x")]);
        import(&target, &STATE, &chunks).unwrap();
        assert_eq!(contents(&target), contents(&source));
    }

    #[test]
    fn corrupt_chunks_are_caught_by_the_check() {
        let good = chunks_of(&source(), &STATE, 12);
        assert!(good.len() >= 3);
        let mut cases: Vec<Vec<Vec<u8>>> = Vec::new();
        // Truncated, extended, another format.
        let mut truncated = good.clone();
        truncated[0].pop();
        cases.push(truncated);
        let mut trailing = good.clone();
        trailing[1].push(1);
        cases.push(trailing);
        let mut format = good.clone();
        format[2][0] = 1;
        cases.push(format);
        // Two chunks swapped: out of order.
        let mut swapped = good.clone();
        swapped.swap(0, 1);
        cases.push(swapped);
        // A chunk twice.
        let mut repeated = good.clone();
        repeated.insert(1, good[1].clone());
        cases.push(repeated);
        // A chunk with a family the snapshot is not for.
        cases.push(chunks_of(&source(), &ColumnFamily::ALL, 12));
        // A chunk without its format byte.
        cases.push(vec![Vec::new()]);

        for case in cases {
            let mut checker = check(&STATE);
            let result = case.iter().try_for_each(|chunk| checker.chunk(chunk));
            assert!(matches!(result, Err(Error::Corrupt(_))), "{case:02x?}: {result:?}");
        }
    }

    #[test]
    fn chunks_are_stored_by_slot_and_index() {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        for (slot, count) in [(7u64, 3u64), (12, 2), (u64::MAX, 1)] {
            for index in 0..count {
                put_chunk(&mut batch, slot, index, format!("{slot}/{index}").into_bytes());
            }
        }
        engine.write(batch, Durability::Sync).unwrap();
        assert_eq!(stored_slots(&engine).unwrap(), vec![7, 12, u64::MAX]);
        assert_eq!(chunk(&engine, 7, 2).unwrap(), Some(b"7/2".to_vec()));
        assert_eq!(chunk(&engine, 7, 3).unwrap(), None);
        drop_snapshot(&engine, 7).unwrap();
        assert_eq!(stored_slots(&engine).unwrap(), vec![12, u64::MAX]);
        assert_eq!(chunk(&engine, 12, 1).unwrap(), Some(b"12/1".to_vec()));
    }

    proptest! {
        /// Whatever the bytes: corrupt, or a chunk that imports exactly.
        #[test]
        fn a_chunk_of_random_bytes_is_corrupt_or_exact(
            formatted in any::<bool>(),
            mut bytes in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            if formatted {
                bytes.insert(0, CHUNK_FORMAT_V2);
            }
            let cfs = [ColumnFamily::Data];
            match check(&cfs).chunk(&bytes) {
                Ok(()) => {
                    let target = engine_with(&[(ColumnFamily::Data, b"mine", b"1")]);
                    import(&target, &cfs, std::slice::from_ref(&bytes)).unwrap();
                    prop_assert_eq!(chunks_of(&target, &cfs, usize::MAX), vec![bytes]);
                }
                Err(error) => prop_assert!(matches!(error, Error::Corrupt(_))),
            }
        }

        /// Random families round-trip through export and import onto an
        /// engine holding other random data, whatever the chunk size.
        #[test]
        fn export_import_round_trips(
            source_pairs in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..3), any::<u8>()), 0..20),
            target_pairs in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..3), any::<u8>()), 0..20),
            chunk_bytes in 1usize..64,
        ) {
            let fill = |pairs: &[(u8, Vec<u8>, u8)]| {
                let engine = MemoryEngine::new();
                let mut batch = WriteBatch::new();
                for (family, key, value) in pairs {
                    batch.put(STATE[usize::from(*family)], key.clone(), vec![*value]);
                }
                engine.write(batch, Durability::Sync).unwrap();
                engine
            };
            let (source, target) = (fill(&source_pairs), fill(&target_pairs));
            import(&target, &STATE, &chunks_of(&source, &STATE, chunk_bytes)).unwrap();
            prop_assert_eq!(contents(&target), contents(&source));
        }
    }
}
