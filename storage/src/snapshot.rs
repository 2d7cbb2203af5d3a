//! State-machine snapshots: the whole contents of some column families as
//! one byte string, to bring a lagging replica up to date.
//!
//! (Not to be confused with an MVCC snapshot, the timestamp a transaction
//! reads at: this is the Paxos sense, a replica's applied state as of a
//! slot, which lets a group truncate its log and ship the state instead.)
//!
//! [`export`] writes every pair of the given families; [`import`] makes a
//! replica's families equal to an export, atomically: it decodes and checks
//! the whole export first, then writes one batch that deletes every key the
//! export lacks and puts every pair the replica lacks or holds another
//! value for, with [`Durability::Sync`]. A corrupt export is
//! [`Error::Corrupt`] and changes nothing.
//!
//! Format (a varint is unsigned LEB128 in its shortest form; bytes are a
//! varint length, then the bytes):
//!
//! ```text
//!  export = format:u8 (1)  family_count:varint  family*
//!  family = cf:u8 (ColumnFamily::tag)  pair_count:varint  (key:bytes  value:bytes)*
//! ```
//!
//! Families appear in increasing tag order, each once, and keys in
//! strictly increasing byte order (the engine's scan order); [`import`]
//! checks both, so an export has one encoding and a reordered or spliced
//! one is caught.
//!
//! Callers keep writers of those families out while they export or import
//! (a replica's state machine applies on one thread, and snapshots are
//! taken and restored between applies): the engine offers no view across
//! families, so `export` scans one family after another, and `import` reads
//! the families before its batch replaces them. An export is one byte
//! string in memory, and an import builds one batch as large as the export
//! plus the deletions: snapshots are for families that fit in memory.

use std::cmp::Ordering;
use std::ops::Bound;

use crate::engine::{ColumnFamily, Durability, Engine, WriteBatch};
use crate::wire::{self, Reader};
use crate::{Error, Result};

/// The first byte of an export. Bumped whenever the format changes.
const SNAPSHOT_FORMAT_V1: u8 = 1;
/// The fewest bytes a family takes: its tag and a zero pair count.
const FAMILY_BYTES_MIN: usize = 2;
/// The fewest bytes a pair takes: an empty key and an empty value.
const PAIR_BYTES_MIN: usize = 2;

/// Every pair of the given families, as one byte string (versioned
/// format; see the module documentation). A family named twice is
/// exported once.
pub fn export(engine: &dyn Engine, cfs: &[ColumnFamily]) -> Result<Vec<u8>> {
    let cfs = families_in_tag_order(cfs);
    let mut out = vec![SNAPSHOT_FORMAT_V1];
    wire::put_length(&mut out, cfs.len());
    for cf in cfs {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> =
            engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false)?.collect::<Result<_>>()?;
        out.push(cf.tag());
        wire::put_length(&mut out, pairs.len());
        for (key, value) in &pairs {
            wire::put_bytes(&mut out, key);
            wire::put_bytes(&mut out, value);
        }
    }
    Ok(out)
}

/// Replaces the entire contents of the given families with the export,
/// atomically (one batch, [`Durability::Sync`]). The export must hold
/// exactly those families. Corrupt input is [`Error::Corrupt`], and then
/// nothing has changed.
pub fn import(engine: &dyn Engine, cfs: &[ColumnFamily], bytes: &[u8]) -> Result<()> {
    let families = decode(bytes)?;
    let wanted = families_in_tag_order(cfs);
    let found: Vec<ColumnFamily> = families.iter().map(|(cf, _)| *cf).collect();
    if found != wanted {
        return Err(Error::Corrupt(format!("snapshot holds the families {found:?}, not the {wanted:?} imported")));
    }

    let mut batch = WriteBatch::new();
    for (cf, pairs) in families {
        // Merge the stored pairs with the export's, both in key order.
        let mut stored = engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false)?;
        let mut next_stored = stored.next().transpose()?;
        let mut incoming = pairs.into_iter().peekable();
        loop {
            let order = match (&next_stored, incoming.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((stored_key, _)), Some((key, _))) => stored_key.as_slice().cmp(key),
            };
            match order {
                // Stored, not in the export.
                Ordering::Less => {
                    if let Some((stored_key, _)) = next_stored.take() {
                        batch.delete(cf, stored_key);
                    }
                    next_stored = stored.next().transpose()?;
                }
                // In the export, not stored.
                Ordering::Greater => {
                    if let Some((key, value)) = incoming.next() {
                        batch.put(cf, key.to_vec(), value.to_vec());
                    }
                }
                // In both: rewritten only if the value differs.
                Ordering::Equal => {
                    if let (Some((_, stored_value)), Some((key, value))) = (next_stored.take(), incoming.next())
                        && stored_value != value
                    {
                        batch.put(cf, key.to_vec(), value.to_vec());
                    }
                    next_stored = stored.next().transpose()?;
                }
            }
        }
    }
    // Written even when empty: on return the families are durably the
    // export's, whatever unsynced writes made them so.
    engine.write(batch, Durability::Sync)
}

/// The families in tag order, each once: the order an export holds them.
fn families_in_tag_order(cfs: &[ColumnFamily]) -> Vec<ColumnFamily> {
    let mut cfs = cfs.to_vec();
    cfs.sort_by_key(|cf| cf.tag());
    cfs.dedup();
    cfs
}

/// A family's pairs, borrowed from the export.
type FamilyPairs<'a> = (ColumnFamily, Vec<(&'a [u8], &'a [u8])>);

/// Decodes and checks a whole export (see the module documentation).
fn decode(bytes: &[u8]) -> Result<Vec<FamilyPairs<'_>>> {
    let mut reader = Reader::new(bytes, "snapshot");
    let format = reader.u8()?;
    if format != SNAPSHOT_FORMAT_V1 {
        return Err(Error::Corrupt(format!("snapshot: format {format} is unknown")));
    }
    let family_count = reader.count(FAMILY_BYTES_MIN)?;
    let mut families: Vec<FamilyPairs<'_>> = Vec::with_capacity(family_count);
    for _ in 0..family_count {
        let tag = reader.u8()?;
        let cf = ColumnFamily::from_tag(tag).ok_or_else(|| reader.corrupt(format_args!("unknown family {tag}")))?;
        if let Some((previous, _)) = families.last()
            && previous.tag() >= tag
        {
            return Err(reader.corrupt(format_args!("family {} after {}", cf.name(), previous.name())));
        }
        let pair_count = reader.count(PAIR_BYTES_MIN)?;
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(pair_count);
        for _ in 0..pair_count {
            let key = reader.bytes()?;
            let value = reader.bytes()?;
            if let Some((previous, _)) = pairs.last()
                && *previous >= key
            {
                return Err(reader.corrupt(format_args!("keys out of order in family {}", cf.name())));
            }
            pairs.push((key, value));
        }
        families.push((cf, pairs));
    }
    reader.finish()?;
    Ok(families)
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

    #[test]
    fn export_import_round_trip_between_two_engines() {
        let source = source();
        let bytes = export(&source, &STATE).unwrap();
        let target = engine_with(&[(ColumnFamily::Meta, b"node", b"target")]);
        import(&target, &STATE, &bytes).unwrap();
        let (source, target) = (contents(&source), contents(&target));
        for cf in STATE {
            assert_eq!(target[&cf], source[&cf], "{cf:?}");
        }
        // Families outside the snapshot are the target's own.
        assert_eq!(target[&ColumnFamily::Meta], vec![(b"node".to_vec(), b"target".to_vec())]);
        assert_eq!(target[&ColumnFamily::PaxosLog], vec![]);
        // The family order and repeats in the argument do not matter.
        let reordered = [ColumnFamily::Locks, ColumnFamily::Data, ColumnFamily::Latest, ColumnFamily::Data];
        assert_eq!(export(&self::source(), &reordered).unwrap(), bytes);
    }

    #[test]
    fn import_replaces_the_families_contents() {
        let bytes = export(&source(), &STATE).unwrap();
        let target = engine_with(&[
            (ColumnFamily::Data, b"a", b"old"),
            (ColumnFamily::Data, b"stale", b"x"),
            (ColumnFamily::Locks, b"lock", b"x"),
            (ColumnFamily::Latest, b"a", b"1"),
        ]);
        import(&target, &STATE, &bytes).unwrap();
        let target = contents(&target);
        assert_eq!(
            target[&ColumnFamily::Data],
            vec![(b"".to_vec(), b"".to_vec()), (b"a".to_vec(), b"1".to_vec()), (b"b\xff".to_vec(), b"2".to_vec())]
        );
        assert_eq!(target[&ColumnFamily::Latest], vec![(b"a".to_vec(), b"1".to_vec())]);
        assert_eq!(target[&ColumnFamily::Locks], vec![]);

        // An export of empty families empties them.
        let empty = export(&MemoryEngine::new(), &STATE).unwrap();
        let engine = source();
        import(&engine, &STATE, &empty).unwrap();
        let after = contents(&engine);
        assert!(STATE.iter().all(|cf| after[cf].is_empty()));
        assert_eq!(after[&ColumnFamily::Meta].len(), 1);
    }

    #[test]
    fn import_is_durable() {
        let bytes = export(&source(), &STATE).unwrap();
        let target = MemoryEngine::new();
        import(&target, &STATE, &bytes).unwrap();
        target.crash();
        assert_eq!(contents(&target)[&ColumnFamily::Data].len(), 3);
    }

    #[test]
    fn corrupt_input_leaves_the_target_unchanged() {
        let good = export(&source(), &STATE).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![Vec::new(), good[..good.len() - 1].to_vec()];
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push(trailing);
        let mut format = good.clone();
        format[0] = 2;
        cases.push(format);
        // The data family's keys ("", "a", "b\xff") with "a" renamed to
        // "c": out of order.
        let position = good.windows(4).position(|w| w == [1, b'a', 1, b'1']).unwrap();
        let mut unordered = good.clone();
        unordered[position + 1] = b'c';
        cases.push(unordered);
        // The data family retagged as locks, ahead of latest: out of order.
        let mut retagged = good.clone();
        retagged[2] = ColumnFamily::Locks.tag();
        cases.push(retagged);
        // A valid export of other families.
        cases.push(export(&source(), &[ColumnFamily::Data]).unwrap());
        cases.push(export(&source(), &ColumnFamily::ALL).unwrap());

        let target = engine_with(&[(ColumnFamily::Data, b"mine", b"1"), (ColumnFamily::Locks, b"lock", b"1")]);
        let before = contents(&target);
        for case in cases {
            let result = import(&target, &STATE, &case);
            assert!(matches!(result, Err(Error::Corrupt(_))), "{case:02x?}: {result:?}");
            assert_eq!(contents(&target), before);
        }
    }

    proptest! {
        /// Whatever the bytes: corrupt and nothing changed, or imported.
        #[test]
        fn import_of_random_bytes_is_corrupt_or_exact(
            formatted in any::<bool>(),
            mut bytes in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            if formatted {
                bytes.insert(0, SNAPSHOT_FORMAT_V1);
            }
            let cfs = [ColumnFamily::Data];
            let target = engine_with(&[(ColumnFamily::Data, b"mine", b"1")]);
            let before = contents(&target);
            match import(&target, &cfs, &bytes) {
                Ok(()) => prop_assert_eq!(export(&target, &cfs).unwrap(), bytes),
                Err(error) => {
                    prop_assert!(matches!(error, Error::Corrupt(_)));
                    prop_assert_eq!(contents(&target), before);
                }
            }
        }

        /// Random families round-trip through export and import onto an
        /// engine holding other random data.
        #[test]
        fn export_import_round_trips(
            source_pairs in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..3), any::<u8>()), 0..20),
            target_pairs in proptest::collection::vec((0u8..3, proptest::collection::vec(any::<u8>(), 0..3), any::<u8>()), 0..20),
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
            import(&target, &STATE, &export(&source, &STATE).unwrap()).unwrap();
            prop_assert_eq!(contents(&target), contents(&source));
        }
    }
}
