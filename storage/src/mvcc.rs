//! Multi-version storage: versions at timestamps, tombstones, and locks.
//!
//! Every write of a user key is a new *version*, stored in the `Data`
//! column family under the key followed by its commit timestamp in
//! descending order, so that the newest version of a key comes first and a
//! read at timestamp `ts` is one seek:
//!
//! ```text
//!  data CF key                         value
//!  ─────────────────────────────────   ─────────────────────────────
//!  esc("acct/1") 00 01 !ts(30)         v1 txn=t9  Value("50")
//!  esc("acct/1") 00 01 !ts(20)         v1 txn=t7  Tombstone
//!  esc("acct/1") 00 01 !ts(10)         v1 txn=t3  Value("80")
//!  esc("acct/2") 00 01 !ts(25)         v1 txn=t8  Value("20")
//! ```
//!
//! A read of `acct/1` at 25 sees the tombstone (the key is absent); at 15
//! it sees "80"; at 35 it sees "50". The user key is escaped (`00` becomes
//! `00 FF`) and terminated by `00 01`, so that the versions of one key are
//! contiguous and user-key order is preserved even when one key is a
//! prefix of another.
//!
//! The newest version of every key is also kept in the `Latest` column
//! family under the plain user key, written in the same batch as the
//! version: a read at a snapshot at or above it — nearly every read, since
//! snapshots are recent — is a single `get`, and a key that was never
//! written is answered without touching the data family. Only a read whose
//! snapshot predates the newest version seeks the data family. The cost is
//! storing current values twice; see `docs/design/storage.md`.
//!
//! Prepared writes of transactions that have not decided yet (the locks,
//! or intents, of two-phase commit) live in the `Locks` column family under
//! the plain user key, apart from the data: readers of committed data never
//! step over them.
//!
//! Every record carries a format byte and is checked when decoded; a
//! record that does not decode is reported as [`Error::Corrupt`].

use std::ops::Bound;

use crate::engine::{ColumnFamily, Engine, WriteBatch};
use crate::timestamp::{Timestamp, TxnId};
use crate::{Error, Result};

/// Format bytes of version records: `[1][txn 8][kind][value]`, and
/// `[2][txn 8][origin 12][kind][value]` for a version whose origin
/// timestamp is not its commit timestamp (a highly available write
/// committed first in another shard, R17), and
/// `[3][txn 8][origin 12, zero for its commit][siblings][kind][value]` for a
/// version whose transaction also wrote other shards ([`Siblings`]).
const VERSION_FORMAT_V1: u8 = 1;
const VERSION_FORMAT_V2: u8 = 2;
const VERSION_FORMAT_V3: u8 = 3;
const SIBLINGS_SHARDS: u8 = 1;
const SIBLINGS_KEYS: u8 = 2;

/// Where else the transaction that wrote a version wrote, so a reader at
/// Monotonic Atomic View can tell whether the rest of it has arrived
/// (`docs/design/transactions.md`, "Monotonic Atomic View in the region").
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Siblings {
    /// Nothing: the transaction wrote only this shard.
    #[default]
    None,
    /// The other shards it committed at, all at this version's timestamp
    /// (a commit across shards).
    Shards(Vec<u64>),
    /// The keys it wrote at other shards, by shard, each committed there at
    /// a timestamp of that shard's own (writes shipped from an outbox).
    Keys(Vec<(u64, Vec<u8>)>),
}

impl Siblings {
    pub fn is_none(&self) -> bool {
        matches!(self, Siblings::None)
    }

    /// `[kind][count u32]` then shard ids (`[shard 8]`) or keys
    /// (`[shard 8][length u32][key]`).
    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Siblings::None => {
                out.push(SIBLINGS_SHARDS);
                out.extend_from_slice(&0u32.to_be_bytes());
            }
            Siblings::Shards(shards) => {
                out.push(SIBLINGS_SHARDS);
                out.extend_from_slice(&(shards.len() as u32).to_be_bytes());
                for shard in shards {
                    out.extend_from_slice(&shard.to_be_bytes());
                }
            }
            Siblings::Keys(keys) => {
                out.push(SIBLINGS_KEYS);
                out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
                for (shard, key) in keys {
                    out.extend_from_slice(&shard.to_be_bytes());
                    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
                    out.extend_from_slice(key);
                }
            }
        }
    }

    fn decode_from(bytes: &mut &[u8]) -> Option<Siblings> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        let u32_at = |bytes: &mut &[u8]| Some(u32::from_be_bytes(take(bytes, 4)?.try_into().ok()?) as usize);
        let u64_at = |bytes: &mut &[u8]| Some(u64::from_be_bytes(take(bytes, 8)?.try_into().ok()?));
        let kind = take(bytes, 1)?[0];
        let count = u32_at(bytes)?;
        // Every sibling takes at least 8 bytes: a count beyond that is corrupt.
        if count > bytes.len() / 8 {
            return None;
        }
        match kind {
            SIBLINGS_SHARDS if count == 0 => Some(Siblings::None),
            SIBLINGS_SHARDS => (0..count).map(|_| u64_at(bytes)).collect::<Option<_>>().map(Siblings::Shards),
            SIBLINGS_KEYS => (0..count)
                .map(|_| {
                    let shard = u64_at(bytes)?;
                    let len = u32_at(bytes)?;
                    Some((shard, take(bytes, len)?.to_vec()))
                })
                .collect::<Option<_>>()
                .map(Siblings::Keys),
            _ => None,
        }
    }
}
/// Format byte of lock records.
const LOCK_FORMAT_V1: u8 = 1;
const KIND_TOMBSTONE: u8 = 0;
const KIND_VALUE: u8 = 1;

/// One committed version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// The commit timestamp of the writing transaction.
    pub ts: Timestamp,
    /// The writing transaction.
    pub txn: TxnId,
    /// The value, or `None` for a tombstone (a delete).
    pub value: Option<Vec<u8>>,
    /// The timestamp the write took where it first committed: `ts` for
    /// every write but a highly available one shipped from an outbox,
    /// whose origin is its commit at the outbox (last writer wins by it).
    pub origin: Timestamp,
    /// Where else its transaction wrote.
    pub siblings: Siblings,
}

/// A prepared, undecided write: a transaction's lock on a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub txn: TxnId,
    /// The prepare timestamp: the transaction will commit at or above it.
    pub prepare_ts: Timestamp,
    /// The value the transaction will write, or `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Appends the escaped form of `key`: every `00` byte becomes `00 FF`.
fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &byte in key {
        out.push(byte);
        if byte == 0 {
            out.push(0xFF);
        }
    }
}

/// The data-CF prefix shared by every version of `key`.
fn version_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2 + Timestamp::ENCODED_LEN);
    escape_into(&mut out, key);
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// The data-CF key of `key`'s version at `ts`.
pub fn version_key(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = version_prefix(key);
    out.extend_from_slice(&ts.encode_desc());
    out
}

/// The smallest data-CF key after every version of `key` (and before the
/// versions of any greater user key).
fn after_versions(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    escape_into(&mut out, key);
    out.extend_from_slice(&[0x00, 0x02]);
    out
}

/// The smallest data-CF key of any version of `key` or of a greater key.
fn before_versions(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len());
    escape_into(&mut out, key);
    out
}

/// Splits a data-CF key into (user key, timestamp).
pub fn decode_version_key(encoded: &[u8]) -> Result<(Vec<u8>, Timestamp)> {
    let corrupt = || Error::Corrupt(format!("version key {encoded:02x?}"));
    if encoded.len() < 2 + Timestamp::ENCODED_LEN {
        return Err(corrupt());
    }
    let (escaped, ts_bytes) = encoded.split_at(encoded.len() - Timestamp::ENCODED_LEN);
    let ts = Timestamp::decode_desc(ts_bytes).ok_or_else(corrupt)?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    loop {
        match bytes.next() {
            Some(0x00) => match bytes.next() {
                Some(0xFF) => key.push(0x00),
                Some(0x01) if bytes.as_slice().is_empty() => return Ok((key, ts)),
                _ => return Err(corrupt()),
            },
            Some(&byte) => key.push(byte),
            None => return Err(corrupt()),
        }
    }
}

fn encode_version_value(txn: TxnId, origin: Option<Timestamp>, siblings: &Siblings, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + Timestamp::ENCODED_LEN + value.map_or(0, <[u8]>::len));
    let format = match (origin, siblings) {
        (_, Siblings::Shards(_) | Siblings::Keys(_)) => VERSION_FORMAT_V3,
        (Some(_), Siblings::None) => VERSION_FORMAT_V2,
        (None, Siblings::None) => VERSION_FORMAT_V1,
    };
    out.push(format);
    out.extend_from_slice(&txn.0.to_be_bytes());
    if format != VERSION_FORMAT_V1 {
        out.extend_from_slice(&origin.unwrap_or(Timestamp::ZERO).encode());
    }
    if format == VERSION_FORMAT_V3 {
        siblings.encode_into(&mut out);
    }
    match value {
        Some(value) => {
            out.push(KIND_VALUE);
            out.extend_from_slice(value);
        }
        None => out.push(KIND_TOMBSTONE),
    }
    out
}

/// A version record: its writer, its origin if it has one of its own, its
/// siblings, and its value.
pub(crate) struct VersionRecord {
    txn: TxnId,
    origin: Option<Timestamp>,
    siblings: Siblings,
    value: Option<Vec<u8>>,
}

impl VersionRecord {
    pub(crate) fn at(self, ts: Timestamp) -> Version {
        Version { ts, txn: self.txn, value: self.value, origin: self.origin.unwrap_or(ts), siblings: self.siblings }
    }
}

pub(crate) fn decode_version_value(bytes: &[u8]) -> Result<VersionRecord> {
    let corrupt = || Error::Corrupt(format!("version record of {} bytes", bytes.len()));
    let format = *bytes.first().ok_or_else(corrupt)?;
    if !matches!(format, VERSION_FORMAT_V1 | VERSION_FORMAT_V2 | VERSION_FORMAT_V3) || bytes.len() < 9 {
        return Err(corrupt());
    }
    let txn = TxnId(u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| corrupt())?));
    let mut rest = &bytes[9..];
    let mut origin = None;
    if format != VERSION_FORMAT_V1 {
        let (encoded, after) = rest.split_at_checked(Timestamp::ENCODED_LEN).ok_or_else(corrupt)?;
        let ts = Timestamp::decode(encoded).ok_or_else(corrupt)?;
        // Format 3 always has the field; zero there means "its commit".
        origin = (format == VERSION_FORMAT_V2 || ts != Timestamp::ZERO).then_some(ts);
        rest = after;
    }
    let siblings = match format {
        VERSION_FORMAT_V3 => Siblings::decode_from(&mut rest).ok_or_else(corrupt)?,
        _ => Siblings::None,
    };
    let value = match rest.split_first() {
        Some((&KIND_VALUE, value)) => Some(value.to_vec()),
        Some((&KIND_TOMBSTONE, [])) => None,
        _ => return Err(corrupt()),
    };
    Ok(VersionRecord { txn, origin, siblings, value })
}

/// Format byte of latest-version records.
const LATEST_FORMAT_V1: u8 = 1;

/// A latest-version record: `[format][ts 12][version record]`.
fn encode_latest(ts: Timestamp, version: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + Timestamp::ENCODED_LEN + version.len());
    out.push(LATEST_FORMAT_V1);
    out.extend_from_slice(&ts.encode());
    out.extend_from_slice(version);
    out
}

fn decode_latest(bytes: &[u8]) -> Result<Version> {
    const HEADER: usize = 1 + Timestamp::ENCODED_LEN;
    if bytes.len() < HEADER || bytes[0] != LATEST_FORMAT_V1 {
        return Err(Error::Corrupt(format!("latest-version record of {} bytes", bytes.len())));
    }
    let ts = Timestamp::decode(&bytes[1..HEADER]).ok_or_else(|| Error::Corrupt("latest-version timestamp".into()))?;
    Ok(decode_version_value(&bytes[HEADER..])?.at(ts))
}

/// Adds to `batch` the version of `key` written by `txn` at `ts` (`None`
/// writes a tombstone), and makes it the key's latest version.
///
/// Callers write versions of a key in increasing timestamp order (a shard
/// assigns commit timestamps in order), so the latest record always names
/// the newest version.
pub fn put_version(batch: &mut WriteBatch, key: &[u8], ts: Timestamp, txn: TxnId, value: Option<&[u8]>) {
    let record = encode_version_value(txn, None, &Siblings::None, value);
    batch.put(ColumnFamily::Latest, key.to_vec(), encode_latest(ts, &record));
    batch.put(ColumnFamily::Data, version_key(key, ts), record);
}

/// [`put_version`] that keeps the latest-version record on the newest
/// version when the engine already holds a newer one (a version applied
/// out of timestamp order: never the case for a correct transaction layer,
/// whose locks order writers of a key, but a store must not answer a
/// read at the newest timestamp with an older version if it happens).
pub fn put_version_ordered(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    key: &[u8],
    ts: Timestamp,
    txn: TxnId,
    value: Option<&[u8]>,
) -> Result<()> {
    put_version_with(engine, batch, key, ts, ts, txn, &Siblings::None, value)
}

/// [`put_version_ordered`] of a write whose origin timestamp (normally
/// below `ts`) is its own — where it first committed, if not here (R17) —
/// and whose transaction also wrote `siblings` elsewhere (Monotonic Atomic
/// View shows it only once they are there too).
#[allow(clippy::too_many_arguments)]
pub fn put_version_with(
    engine: &dyn Engine,
    batch: &mut WriteBatch,
    key: &[u8],
    ts: Timestamp,
    origin: Timestamp,
    txn: TxnId,
    siblings: &Siblings,
    value: Option<&[u8]>,
) -> Result<()> {
    let newer = match engine.get(ColumnFamily::Latest, key)? {
        Some(latest) => decode_latest(&latest)?.ts > ts,
        None => false,
    };
    let record = encode_version_value(txn, (origin != ts).then_some(origin), siblings, value);
    if !newer {
        batch.put(ColumnFamily::Latest, key.to_vec(), encode_latest(ts, &record));
    }
    batch.put(ColumnFamily::Data, version_key(key, ts), record);
    Ok(())
}

/// Adds to `batch` the removal of one version (garbage collection).
pub fn delete_version(batch: &mut WriteBatch, key: &[u8], ts: Timestamp) {
    batch.delete(ColumnFamily::Data, version_key(key, ts));
}

/// The newest version of `key` with a timestamp at or below `ts`
/// (tombstones included: a `Some` with `value: None` means deleted).
pub fn get_version(engine: &dyn Engine, key: &[u8], ts: Timestamp) -> Result<Option<Version>> {
    let Some(latest) = engine.get(ColumnFamily::Latest, key)? else {
        // Never written (or every version was collected).
        return Ok(None);
    };
    let latest = decode_latest(&latest)?;
    if latest.ts <= ts {
        return Ok(Some(latest));
    }
    get_older_version(engine, key, ts)
}

/// [`get_version`] by a seek in the data family: for snapshots older than
/// the key's newest version.
fn get_older_version(engine: &dyn Engine, key: &[u8], ts: Timestamp) -> Result<Option<Version>> {
    let start = version_key(key, ts);
    let end = after_versions(key);
    let mut iter = engine.scan(ColumnFamily::Data, Bound::Included(&start), Bound::Excluded(&end), false)?;
    match iter.next() {
        None => Ok(None),
        Some(entry) => {
            let (encoded, record) = entry?;
            let (found_key, version_ts) = decode_version_key(&encoded)?;
            // Checked on both sides of the boundary: the engine honoured the
            // bounds, so this must be a version of `key` at or below `ts`.
            assert!(found_key == key && version_ts <= ts, "engine scan escaped its bounds");
            Ok(Some(decode_version_value(&record)?.at(version_ts)))
        }
    }
}

/// The newest version of `key`, if any (tombstones included).
pub fn latest_version(engine: &dyn Engine, key: &[u8]) -> Result<Option<Version>> {
    engine.get(ColumnFamily::Latest, key)?.map(|latest| decode_latest(&latest)).transpose()
}

/// The value of `key` visible at `ts`, if any.
pub fn get(engine: &dyn Engine, key: &[u8], ts: Timestamp) -> Result<Option<Vec<u8>>> {
    Ok(get_version(engine, key, ts)?.and_then(|version| version.value))
}

/// The timestamp of the newest version of `key`, whatever its timestamp.
pub fn latest_version_ts(engine: &dyn Engine, key: &[u8]) -> Result<Option<Timestamp>> {
    engine.get(ColumnFamily::Latest, key)?.map(|bytes| Ok(decode_latest(&bytes)?.ts)).transpose()
}

/// The visible (key, value) pairs at `ts` whose user keys lie within the
/// bounds, in key order (descending if `reverse`), at most `limit` of them.
/// Deleted keys are skipped.
pub fn scan(
    engine: &dyn Engine,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    ts: Timestamp,
    reverse: bool,
    limit: Option<usize>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    Ok(scan_with_newest(engine, start, end, ts, reverse, limit)?.0)
}

/// [`scan`], and the timestamp of the newest version it saw (a deleted
/// key's tombstone included; [`Timestamp::ZERO`] for none).
pub fn scan_with_newest(
    engine: &dyn Engine,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    ts: Timestamp,
    reverse: bool,
    limit: Option<usize>,
) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Timestamp)> {
    let (start, end) = data_bounds(start, end);
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut newest = Timestamp::ZERO;
    if limit == 0 {
        return Ok((out, newest));
    }
    let iter = engine.scan(ColumnFamily::Data, bound_as_slice(&start), bound_as_slice(&end), reverse)?;
    // The newest visible version of the key being walked: forwards it is the
    // first one at or below `ts`; backwards (oldest first) the last one.
    let mut current: Option<(Vec<u8>, Option<Vec<u8>>)> = None;
    let mut settled = false;
    for entry in iter {
        let (encoded, record) = entry?;
        let (key, version_ts) = decode_version_key(&encoded)?;
        if current.as_ref().is_none_or(|(current_key, _)| *current_key != key) {
            if let Some((done_key, Some(value))) = current.take() {
                out.push((done_key, value));
                if out.len() >= limit {
                    return Ok((out, newest));
                }
            }
            current = Some((key, None));
            settled = false;
        }
        if version_ts > ts || settled {
            continue;
        }
        let value = decode_version_value(&record)?.value;
        if let Some(current) = current.as_mut() {
            current.1 = value;
        }
        newest = newest.max(version_ts);
        // Forwards, the first visible version is the newest: the rest of
        // this key's versions are older and hidden by it.
        settled = !reverse;
    }
    if let Some((key, Some(value))) = current {
        out.push((key, value));
    }
    Ok((out, newest))
}

/// The data-family bounds of the versions of user keys within the bounds.
fn data_bounds(start: Bound<&[u8]>, end: Bound<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match start {
        Bound::Included(key) => Bound::Included(before_versions(key)),
        Bound::Excluded(key) => Bound::Included(after_versions(key)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let end = match end {
        Bound::Included(key) => Bound::Excluded(after_versions(key)),
        Bound::Excluded(key) => Bound::Excluded(before_versions(key)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (start, end)
}

/// A version kept apart from the key's history, for a reader that must
/// see exactly it (a write that a newer one superseded before it arrived):
/// `[ts 12][version record]`.
pub fn encode_detached(version: &Version) -> Vec<u8> {
    let origin = (version.origin != version.ts).then_some(version.origin);
    let mut out = version.ts.encode().to_vec();
    out.extend(encode_version_value(version.txn, origin, &version.siblings, version.value.as_deref()));
    out
}

/// Decodes [`encode_detached`].
pub fn decode_detached(bytes: &[u8]) -> Result<Version> {
    let (ts, record) = bytes
        .split_at_checked(Timestamp::ENCODED_LEN)
        .ok_or_else(|| Error::Corrupt(format!("detached version of {} bytes", bytes.len())))?;
    let ts = Timestamp::decode(ts).ok_or_else(|| Error::Corrupt("detached version timestamp".into()))?;
    Ok(decode_version_value(record)?.at(ts))
}

/// The newest versions of `key`, newest first, at most `limit` of them.
pub fn versions_of(engine: &dyn Engine, key: &[u8], limit: usize) -> Result<Vec<Version>> {
    let (start, end) = (before_versions(key), after_versions(key));
    let mut out = Vec::new();
    for entry in engine.scan(ColumnFamily::Data, Bound::Included(&start), Bound::Excluded(&end), false)? {
        if out.len() >= limit {
            break;
        }
        let (encoded, record) = entry?;
        let (found, ts) = decode_version_key(&encoded)?;
        if found == key {
            out.push(decode_version_value(&record)?.at(ts));
        }
    }
    Ok(out)
}

/// The keys within the bounds that have a version (a delete's tombstone
/// included), in key order.
pub fn keys_in_range(engine: &dyn Engine, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<Vec<Vec<u8>>> {
    engine.scan(ColumnFamily::Latest, start, end, false)?.map(|entry| Ok(entry?.0)).collect()
}

/// A data-family pair as the user key and its version.
pub fn decode_version(encoded: &[u8], record: &[u8]) -> Result<(Vec<u8>, Version)> {
    let (key, ts) = decode_version_key(encoded)?;
    Ok((key, decode_version_value(record)?.at(ts)))
}

/// Every version of every key, in key order and, per key, newest first:
/// for checkers and tools that audit a whole history (the simulator).
pub fn all_versions(engine: &dyn Engine) -> Result<Vec<(Vec<u8>, Version)>> {
    let mut out = Vec::new();
    for entry in engine.scan(ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, false)? {
        let (encoded, record) = entry?;
        out.push(decode_version(&encoded, &record)?);
    }
    Ok(out)
}

/// Borrows an owned key bound as a slice bound.
pub fn bound_as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn encode_lock(lock: &Lock) -> Vec<u8> {
    let mut out = vec![LOCK_FORMAT_V1];
    out.extend_from_slice(&lock.txn.0.to_be_bytes());
    out.extend_from_slice(&lock.prepare_ts.encode());
    match &lock.value {
        Some(value) => {
            out.push(KIND_VALUE);
            out.extend_from_slice(value);
        }
        None => out.push(KIND_TOMBSTONE),
    }
    out
}

fn decode_lock(bytes: &[u8]) -> Result<Lock> {
    const HEADER: usize = 1 + 8 + Timestamp::ENCODED_LEN + 1;
    let corrupt = || Error::Corrupt(format!("lock record of {} bytes", bytes.len()));
    if bytes.len() < HEADER || bytes[0] != LOCK_FORMAT_V1 {
        return Err(corrupt());
    }
    let txn = TxnId(u64::from_be_bytes(bytes[1..9].try_into().map_err(|_| corrupt())?));
    let prepare_ts = Timestamp::decode(&bytes[9..21]).ok_or_else(corrupt)?;
    let value = match bytes[21] {
        KIND_VALUE => Some(bytes[HEADER..].to_vec()),
        KIND_TOMBSTONE if bytes.len() == HEADER => None,
        _ => return Err(corrupt()),
    };
    Ok(Lock { txn, prepare_ts, value })
}

/// Adds to `batch` a lock on `key`.
pub fn put_lock(batch: &mut WriteBatch, key: &[u8], lock: &Lock) {
    batch.put(ColumnFamily::Locks, key.to_vec(), encode_lock(lock));
}

/// Adds to `batch` the release of the lock on `key`.
pub fn delete_lock(batch: &mut WriteBatch, key: &[u8]) {
    batch.delete(ColumnFamily::Locks, key.to_vec());
}

/// The lock on `key`, if any.
pub fn get_lock(engine: &dyn Engine, key: &[u8]) -> Result<Option<Lock>> {
    engine.get(ColumnFamily::Locks, key)?.map(|bytes| decode_lock(&bytes)).transpose()
}

/// Every lock, in key order: what a restarting participant must resolve.
pub fn scan_locks(engine: &dyn Engine) -> Result<Vec<(Vec<u8>, Lock)>> {
    let iter = engine.scan(ColumnFamily::Locks, Bound::Unbounded, Bound::Unbounded, false)?;
    iter.map(|entry| {
        let (key, bytes) = entry?;
        Ok((key, decode_lock(&bytes)?))
    })
    .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::{Durability, MemoryEngine};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    pub(crate) fn ts(physical: u64) -> Timestamp {
        Timestamp::new(physical, 0)
    }

    /// Writes `key`'s version at `at` (by transaction `at`) in a batch of its own.
    pub(crate) fn write(engine: &MemoryEngine, key: &[u8], at: u64, value: Option<&[u8]>) {
        let mut batch = WriteBatch::new();
        put_version(&mut batch, key, ts(at), TxnId(at), value);
        engine.write(batch, Durability::Sync).unwrap();
    }

    #[test]
    fn reads_see_the_newest_version_at_or_below_their_timestamp() {
        let engine = MemoryEngine::new();
        write(&engine, b"acct/1", 10, Some(b"80"));
        write(&engine, b"acct/1", 20, None);
        write(&engine, b"acct/1", 30, Some(b"50"));
        assert_eq!(get(&engine, b"acct/1", ts(5)).unwrap(), None);
        assert_eq!(get(&engine, b"acct/1", ts(15)).unwrap(), Some(b"80".to_vec()));
        assert_eq!(get(&engine, b"acct/1", ts(25)).unwrap(), None);
        assert_eq!(get(&engine, b"acct/1", ts(35)).unwrap(), Some(b"50".to_vec()));
        let version = get_version(&engine, b"acct/1", ts(25)).unwrap().unwrap();
        assert_eq!((version.ts, version.txn, version.value), (ts(20), TxnId(20), None));
        assert_eq!(latest_version_ts(&engine, b"acct/1").unwrap(), Some(ts(30)));
        assert_eq!(latest_version_ts(&engine, b"acct/2").unwrap(), None);
    }

    #[test]
    fn a_version_keeps_an_origin_below_its_timestamp() {
        let engine = MemoryEngine::new();
        write(&engine, b"k", 10, Some(b"direct"));
        let mut batch = WriteBatch::new();
        put_version_with(&engine, &mut batch, b"k", ts(30), ts(20), TxnId(7), &Siblings::None, Some(b"shipped"))
            .unwrap();
        engine.write(batch, Durability::Sync).unwrap();
        let mut batch = WriteBatch::new();
        put_version_with(&engine, &mut batch, b"k", ts(40), ts(40), TxnId(8), &Siblings::None, None).unwrap();
        engine.write(batch, Durability::Sync).unwrap();
        let shipped = get_version(&engine, b"k", ts(35)).unwrap().unwrap();
        assert_eq!((shipped.ts, shipped.origin, shipped.txn), (ts(30), ts(20), TxnId(7)));
        assert_eq!(shipped.value, Some(b"shipped".to_vec()));
        let direct = get_version(&engine, b"k", ts(15)).unwrap().unwrap();
        assert_eq!((direct.ts, direct.origin), (ts(10), ts(10)));
        let latest = latest_version(&engine, b"k").unwrap().unwrap();
        assert_eq!((latest.ts, latest.origin, latest.value), (ts(40), ts(40), None));
        let all = all_versions(&engine).unwrap();
        let origins: Vec<Timestamp> = all.iter().map(|(_, version)| version.origin).collect();
        assert_eq!(origins, vec![ts(40), ts(20), ts(10)]);
        assert_eq!(scan(&engine, Bound::Unbounded, Bound::Unbounded, ts(35), false, None).unwrap().len(), 1);
    }

    #[test]
    fn a_version_keeps_its_siblings() {
        let engine = MemoryEngine::new();
        let keys = Siblings::Keys(vec![(3, b"y".to_vec()), (4, Vec::new()), (3, vec![0, 0xff, 1])]);
        let cases = [
            (b"a".as_slice(), ts(10), ts(10), Siblings::Shards(vec![2, 9]), Some(b"v".as_slice())),
            (b"a", ts(20), ts(15), keys.clone(), None),
            (b"b", ts(5), ts(5), keys, Some(b"")),
            (b"b", ts(6), ts(2), Siblings::None, Some(b"w")),
        ];
        for (key, at, origin, siblings, value) in &cases {
            let mut batch = WriteBatch::new();
            put_version_with(&engine, &mut batch, key, *at, *origin, TxnId(at.physical), siblings, *value).unwrap();
            engine.write(batch, Durability::Sync).unwrap();
        }
        let a = versions_of(&engine, b"a", usize::MAX).unwrap();
        let b = versions_of(&engine, b"b", usize::MAX).unwrap();
        assert_eq!(versions_of(&engine, b"b", 1).unwrap(), b[..1]);
        let read: Vec<&Version> = [&a[1], &a[0], &b[1], &b[0]].into_iter().collect();
        for ((_, at, origin, siblings, value), version) in cases.iter().zip(read) {
            assert_eq!((version.ts, version.origin, &version.siblings), (*at, *origin, siblings));
            assert_eq!(version.value.as_deref(), *value);
        }
        assert_eq!(latest_version(&engine, b"a").unwrap().unwrap().siblings, cases[1].3);
        assert_eq!(keys_in_range(&engine, Bound::Excluded(b"a"), Bound::Unbounded).unwrap(), [b"b".to_vec()]);
        assert_eq!(keys_in_range(&engine, Bound::Unbounded, Bound::Included(b"b")).unwrap().len(), 2);
        let detached = Version { ts: ts(9), txn: TxnId(3), value: None, origin: ts(4), siblings: cases[1].3.clone() };
        assert_eq!(decode_detached(&encode_detached(&detached)).unwrap(), detached);
        assert!(decode_detached(&[1, 2]).is_err());
        // Cut anywhere, a format 3 record is corrupt, never misread.
        let record = encode_version_value(TxnId(1), None, &cases[1].3, Some(b"x"));
        for len in 0..record.len() - 1 {
            let decoded = decode_version_value(&record[..len]);
            assert!(decoded.is_err() || len == record.len() - 1, "cut at {len}");
        }
    }

    #[test]
    fn keys_that_prefix_each_other_stay_apart() {
        let engine = MemoryEngine::new();
        write(&engine, b"a", 10, Some(b"1"));
        write(&engine, b"a\x00", 10, Some(b"2"));
        write(&engine, b"a\x00\x01", 10, Some(b"3"));
        write(&engine, b"ab", 10, Some(b"4"));
        let all = scan(&engine, Bound::Unbounded, Bound::Unbounded, ts(10), false, None).unwrap();
        let keys: Vec<&[u8]> = all.iter().map(|(key, _)| key.as_slice()).collect();
        assert_eq!(keys, vec![&b"a"[..], b"a\x00", b"a\x00\x01", b"ab"]);
        assert_eq!(get(&engine, b"a\x00", ts(10)).unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn locks_round_trip_apart_from_data() {
        let engine = MemoryEngine::new();
        let lock = Lock { txn: TxnId(4), prepare_ts: ts(7), value: Some(b"x".to_vec()) };
        let mut batch = WriteBatch::new();
        put_lock(&mut batch, b"k", &lock);
        engine.write(batch, Durability::Sync).unwrap();
        assert_eq!(get_lock(&engine, b"k").unwrap(), Some(lock.clone()));
        assert_eq!(get(&engine, b"k", Timestamp::MAX).unwrap(), None);
        assert_eq!(scan_locks(&engine).unwrap(), vec![(b"k".to_vec(), lock)]);
        let mut batch = WriteBatch::new();
        delete_lock(&mut batch, b"k");
        engine.write(batch, Durability::Sync).unwrap();
        assert_eq!(get_lock(&engine, b"k").unwrap(), None);
    }

    #[test]
    fn corrupt_records_are_reported() {
        assert!(decode_latest(&[1, 2]).is_err());
        assert!(decode_latest(&[7; 30]).is_err());
        assert!(decode_version_key(b"short").is_err());
        assert!(decode_version_value(&[9; 12]).is_err());
        assert!(decode_version_value(&[2; 12]).is_err());
        assert!(decode_lock(&[1, 2, 3]).is_err());
    }

    /// A model of the versioned store: key -> (timestamp -> value).
    type Model = BTreeMap<Vec<u8>, BTreeMap<u64, Option<Vec<u8>>>>;

    fn model_scan(model: &Model, lo: &[u8], hi: &[u8], at: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        model
            .range(lo.to_vec()..hi.to_vec())
            .filter_map(|(key, versions)| {
                let (_, value) = versions.range(..=at).next_back()?;
                Some((key.clone(), value.clone()?))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn scans_match_a_model(
            writes in proptest::collection::vec(
                (proptest::collection::vec(0u8..3, 0..4), 1u64..20, proptest::option::of(any::<u8>())), 0..60),
            lo in proptest::collection::vec(0u8..3, 0..3),
            hi in proptest::collection::vec(0u8..3, 0..4),
            at in 0u64..22,
            limit in 0usize..6,
        ) {
            let engine = MemoryEngine::new();
            let mut model = Model::new();
            // Versions are written in timestamp order, as shards commit them.
            let mut writes = writes;
            writes.sort_by_key(|(_, at, _)| *at);
            for (key, at, value) in &writes {
                let value = value.map(|byte| vec![byte]);
                write(&engine, key, *at, value.as_deref());
                model.entry(key.clone()).or_default().insert(*at, value);
            }
            let expected = if lo <= hi { model_scan(&model, &lo, &hi, at) } else { Vec::new() };
            let forward = scan(&engine, Bound::Included(&lo), Bound::Excluded(&hi), ts(at), false, None).unwrap();
            prop_assert_eq!(&forward, &expected);
            let backward = scan(&engine, Bound::Included(&lo), Bound::Excluded(&hi), ts(at), true, None).unwrap();
            let mut reversed = expected.clone();
            reversed.reverse();
            prop_assert_eq!(&backward, &reversed);
            let limited = scan(&engine, Bound::Included(&lo), Bound::Excluded(&hi), ts(at), true, Some(limit)).unwrap();
            prop_assert_eq!(&limited[..], &reversed[..limit.min(reversed.len())]);
            for (key, versions) in &model {
                let expected = versions.range(..=at).next_back().and_then(|(_, value)| value.clone());
                prop_assert_eq!(get(&engine, key, ts(at)).unwrap(), expected.clone());
                // The seek path agrees with the latest-version shortcut.
                let sought = get_older_version(&engine, key, ts(at)).unwrap().and_then(|version| version.value);
                prop_assert_eq!(sought, expected);
                prop_assert_eq!(latest_version_ts(&engine, key).unwrap(), versions.keys().next_back().map(|at| ts(*at)));
            }
        }
    }
}
