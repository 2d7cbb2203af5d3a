//! A view of an engine restricted to one key prefix: several shards share
//! one store without seeing or overwriting each other's keys.
//!
//! Every key a [`ScopedEngine`] is given is stored under its prefix, in
//! every column family, and every key it returns has the prefix removed;
//! a scan never leaves the prefix's range. So a shard's state machine
//! written against a whole [`Engine`] runs unchanged over its slice of the
//! node's store, and a state-machine snapshot of the view
//! ([`crate::snapshot`]) exports and replaces exactly that shard's keys.
//!
//! Prefixes of two views must not be prefixes of one another (shards use
//! fixed-width ids), or one view would see the other's keys.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{ColumnFamily, Durability, Engine, ScanIter, WriteBatch, WriteOp};
use crate::Result;

/// An engine seen through a key prefix. See the module documentation.
#[derive(Clone)]
pub struct ScopedEngine {
    inner: Arc<dyn Engine>,
    prefix: Vec<u8>,
}

impl std::fmt::Debug for ScopedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedEngine").field("prefix", &self.prefix).finish()
    }
}

impl ScopedEngine {
    /// The part of `inner` under `prefix` (which must not be empty).
    pub fn new(inner: Arc<dyn Engine>, prefix: Vec<u8>) -> Self {
        assert!(!prefix.is_empty(), "a scoped engine needs a prefix");
        ScopedEngine { inner, prefix }
    }

    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The whole engine underneath.
    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }

    fn full(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(key);
        out
    }

    /// The smallest key after every key that starts with the prefix, if any
    /// (a prefix of only `FF` bytes has none).
    fn prefix_end(&self) -> Option<Vec<u8>> {
        let mut end = self.prefix.clone();
        while let Some(last) = end.pop() {
            if last < 0xFF {
                end.push(last + 1);
                return Some(end);
            }
        }
        None
    }
}

impl Engine for ScopedEngine {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, &self.full(key))
    }

    fn scan<'a>(
        &'a self,
        cf: ColumnFamily,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<ScanIter<'a>> {
        let start = match start {
            Bound::Included(key) => Bound::Included(self.full(key)),
            Bound::Excluded(key) => Bound::Excluded(self.full(key)),
            Bound::Unbounded => Bound::Included(self.prefix.clone()),
        };
        let end = match end {
            Bound::Included(key) => Bound::Included(self.full(key)),
            Bound::Excluded(key) => Bound::Excluded(self.full(key)),
            Bound::Unbounded => self.prefix_end().map_or(Bound::Unbounded, Bound::Excluded),
        };
        let prefix_len = self.prefix.len();
        let prefix = self.prefix.clone();
        let iter = self.inner.scan(cf, start.as_ref().map(Vec::as_slice), end.as_ref().map(Vec::as_slice), reverse)?;
        Ok(Box::new(iter.map(move |item| {
            let (mut key, value) = item?;
            // Checked on both sides of the boundary: the bounds above keep
            // the scan inside the prefix.
            assert!(key.starts_with(&prefix), "scoped scan escaped its prefix");
            key.drain(..prefix_len);
            Ok((key, value))
        })))
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        self.inner.write(self.scope(batch), durability)
    }

    /// Checkpoints the whole engine underneath, not only this view.
    fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.inner.checkpoint(dir)
    }

    fn as_scoped(&self) -> Option<&ScopedEngine> {
        Some(self)
    }
}

impl ScopedEngine {
    /// `batch` with every key moved under the prefix: for writing it to the
    /// engine underneath together with writes of other views.
    pub fn scope(&self, batch: WriteBatch) -> WriteBatch {
        let mut scoped = WriteBatch::new();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { cf, key, value } => scoped.put(cf, self.full(&key), value),
                WriteOp::Delete { cf, key } => scoped.delete(cf, self.full(&key)),
            }
        }
        scoped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;

    fn put(engine: &dyn Engine, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Data, key.to_vec(), value.to_vec());
        engine.write(batch, Durability::Sync).unwrap();
    }

    fn all(engine: &dyn Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
        engine
            .scan(ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, false)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn views_with_different_prefixes_do_not_see_each_other() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let a = ScopedEngine::new(inner.clone(), vec![0, 0, 0, 1]);
        let b = ScopedEngine::new(inner.clone(), vec![0, 0, 0, 2]);
        put(&a, b"k", b"a");
        put(&b, b"k", b"b");
        put(&b, b"z", b"b2");
        assert_eq!(a.get(ColumnFamily::Data, b"k").unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(all(&a), vec![(b"k".to_vec(), b"a".to_vec())]);
        assert_eq!(all(&b).len(), 2);
        let reversed: Vec<_> =
            b.scan(ColumnFamily::Data, Bound::Unbounded, Bound::Unbounded, true).unwrap().map(Result::unwrap).collect();
        assert_eq!(reversed[0].0, b"z");
        assert_eq!(all(inner.as_ref()).len(), 3);
        // Bounded scans stay inside too.
        let from_k: Vec<_> = b
            .scan(ColumnFamily::Data, Bound::Excluded(&b"k"[..]), Bound::Unbounded, false)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(from_k, vec![(b"z".to_vec(), b"b2".to_vec())]);
    }

    #[test]
    fn a_prefix_of_ff_bytes_scans_to_the_end() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let high = ScopedEngine::new(inner.clone(), vec![0xFF, 0xFF]);
        put(&high, b"x", b"1");
        put(inner.as_ref(), &[0xFE], b"other");
        assert_eq!(all(&high), vec![(b"x".to_vec(), b"1".to_vec())]);
    }

    #[test]
    fn a_snapshot_of_a_view_replaces_only_that_view() {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let a = ScopedEngine::new(inner.clone(), vec![1]);
        let b = ScopedEngine::new(inner.clone(), vec![2]);
        put(&a, b"old", b"1");
        put(&b, b"keep", b"2");
        let source: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        put(source.as_ref(), b"new", b"3");
        let mut chunks = Vec::new();
        crate::snapshot::export(source.as_ref(), &[ColumnFamily::Data], 1 << 20, |chunk| {
            chunks.push(chunk);
            Ok(())
        })
        .unwrap();
        let mut import = crate::snapshot::Import::begin(&a, &[ColumnFamily::Data]).unwrap();
        for chunk in &chunks {
            import.chunk(chunk).unwrap();
        }
        import.finish(WriteBatch::new()).unwrap();
        assert_eq!(all(&a), vec![(b"new".to_vec(), b"3".to_vec())]);
        assert_eq!(all(&b), vec![(b"keep".to_vec(), b"2".to_vec())]);
    }
}
