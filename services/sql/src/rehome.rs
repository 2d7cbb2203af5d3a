//! Rehoming a locality key from SQL's side (R18,
//! `docs/design/transactions.md`, "Homes and rehoming"): which keys move
//! (every row and colocated index entry of the key in every `home` table,
//! by the catalog), and running the transaction layer's rehome again when
//! it loses to a concurrent writer, a concurrent rehome or a DDL.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use geodb_storage::{Value, keycode};
use geodb_txn::protocol::KeyRange;
use geodb_txn::{Isolation, Rehomed, TxnManager};

use crate::catalog::{Catalog, CatalogCache, Locality};
use crate::error::Result;
use crate::keys;

/// Attempts at a rehome that lost to a concurrent transaction.
const REHOME_ATTEMPTS_MAX: u32 = 20;
const PAUSE_FIRST: Duration = Duration::from_millis(2);
const PAUSE_MAX: Duration = Duration::from_millis(200);

/// The locality key a residence record (R18) names, if it is one.
pub fn locality_of_residence(residence: &[u8]) -> Option<Value> {
    let mut locality = residence.strip_prefix(&[keys::RESIDENCE_SPACE])?;
    let value = keycode::decode_value(&mut locality).ok()?;
    locality.is_empty().then_some(value)
}

/// The locality keys the directory gives a home, from `first` to `last`
/// (both included, in key order), at most `limit` of them: the keys of a
/// bulk rehome by range.
pub fn homed_between(txns: &Arc<TxnManager>, first: &Value, last: &Value, limit: usize) -> Result<Vec<Value>> {
    let encode = |value: &Value| {
        let mut locality = Vec::new();
        keycode::encode_value(&mut locality, value);
        keys::home_key(&locality)
    };
    let mut txn = txns.begin(Isolation::Snapshot)?;
    let entries = txn.scan(Bound::Included(encode(first)), Bound::Included(encode(last)), false, Some(limit));
    txn.rollback();
    let mut found = Vec::new();
    for (key, _) in entries? {
        let mut locality = &key[keys::CATALOG_HOMES_PREFIX.len()..];
        let value = keycode::decode_value(&mut locality)
            .map_err(|e| crate::Error::Internal(format!("a directory entry with a corrupt locality key: {e}")))?;
        found.push(value);
    }
    Ok(found)
}

/// The ranges of the locality key `locality` (encoded) in every `home`
/// table of `catalog`: its rows and its colocated index entries.
pub fn ranges_of(catalog: &Catalog, locality: &[u8]) -> Vec<KeyRange> {
    let mut ranges = Vec::new();
    for table in catalog.tables().filter(|table| table.locality == Locality::Home) {
        let indexes = std::iter::once(None).chain(table.indexes.iter().map(Some));
        for index in indexes.filter(|index| keys::space_of(table, *index) == keys::TABLE_SPACE) {
            let mut prefix = keys::index_prefix(table, index);
            prefix.extend_from_slice(locality);
            let end = keycode::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
            ranges.push((Bound::Included(prefix), end));
        }
    }
    ranges
}

/// Rehomes the locality key `key` to the region with index `region`:
/// blocking, run again (with the ranges computed again from the catalog)
/// while it loses to a concurrent transaction.
pub fn rehome(txns: &Arc<TxnManager>, catalog: &CatalogCache, key: &Value, region: u32) -> Result<Rehomed> {
    let mut locality = Vec::new();
    keycode::encode_value(&mut locality, key);
    let mut pause = PAUSE_FIRST;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut probe = txns.begin(Isolation::Serializable)?;
        let schema = catalog.for_transaction(&mut probe);
        probe.rollback();
        let schema = schema?;
        let ranges = ranges_of(&schema, &locality);
        let version = (!schema.token.is_empty()).then(|| schema.token.clone());
        match geodb_txn::rehome::rehome(txns, &locality, region, &ranges, version) {
            Err(error) if error.is_retryable() && attempt < REHOME_ATTEMPTS_MAX => {
                if matches!(error, geodb_txn::Error::SchemaChanged { .. }) {
                    catalog.refresh(txns)?;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(PAUSE_MAX);
            }
            outcome => return Ok(outcome?),
        }
    }
}
