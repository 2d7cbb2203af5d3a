//! One write for the batches of several engines.
//!
//! Shards of a node are views ([`ScopedEngine`]) of the node's one engine.
//! A replication round that applies a slot of each of many shards would
//! otherwise make one engine write per shard (each a write to the
//! write-ahead log and a turn through the engine's writer queue); a
//! [`CombinedWrite`] gathers them and writes each engine underneath once.
//! Views are seen through to the engine they view; any other engine (one
//! with a hook, say) is written on its own, so what it does on a write
//! still happens.

use std::sync::Arc;

use super::{Durability, Engine, WriteBatch};
use crate::Result;

/// Batches gathered for one write per engine underneath.
#[derive(Default)]
pub struct CombinedWrite {
    targets: Vec<(Arc<dyn Engine>, WriteBatch)>,
}

impl CombinedWrite {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `batch`, in `engine`'s keys, after everything added before.
    pub fn add(&mut self, engine: &Arc<dyn Engine>, batch: WriteBatch) {
        let mut target = engine.clone();
        let mut batch = batch;
        while let Some(view) = target.as_scoped() {
            batch = view.scope(batch);
            let inner = view.inner().clone();
            target = inner;
        }
        match self.targets.iter_mut().find(|(engine, _)| std::ptr::addr_eq(Arc::as_ptr(engine), Arc::as_ptr(&target))) {
            Some((_, gathered)) => gathered.append(batch),
            None => self.targets.push((target, batch)),
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The engine writes this makes: one per engine underneath.
    pub fn writes(&self) -> usize {
        self.targets.len()
    }

    /// Writes each engine's batches as one atomic batch, engine by engine,
    /// in the order each engine was first added. An error stops at that
    /// engine: the writes before it are made, the rest are not.
    pub fn write(self, durability: Durability) -> Result<()> {
        for (engine, batch) in self.targets {
            engine.write(batch, durability)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::{ColumnFamily, HookedEngine, MemoryEngine, ScopedEngine};

    fn batch(key: &[u8], value: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Data, key.to_vec(), value.to_vec());
        batch
    }

    #[test]
    fn views_of_one_engine_are_written_once_and_each_sees_its_own_keys() {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let seen = writes.clone();
        let counted: Arc<dyn Engine> = Arc::new(HookedEngine::new(Arc::new(MemoryEngine::new()), move |batch, _| {
            seen.lock().unwrap().push(batch.len());
            Ok(())
        }));
        let a: Arc<dyn Engine> = Arc::new(ScopedEngine::new(counted.clone(), vec![0, 1]));
        let b: Arc<dyn Engine> = Arc::new(ScopedEngine::new(counted.clone(), vec![0, 2]));
        let mut combined = CombinedWrite::new();
        combined.add(&a, batch(b"k", b"a1"));
        combined.add(&b, batch(b"k", b"b1"));
        combined.add(&a, batch(b"j", b"a2"));
        assert_eq!(combined.writes(), 1);
        combined.write(Durability::Buffered).unwrap();
        assert_eq!(*writes.lock().unwrap(), vec![3], "one write of the three puts");
        assert_eq!(a.get(ColumnFamily::Data, b"k").unwrap(), Some(b"a1".to_vec()));
        assert_eq!(a.get(ColumnFamily::Data, b"j").unwrap(), Some(b"a2".to_vec()));
        assert_eq!(b.get(ColumnFamily::Data, b"k").unwrap(), Some(b"b1".to_vec()));
        assert_eq!(b.get(ColumnFamily::Data, b"j").unwrap(), None);
    }

    #[test]
    fn an_engine_that_is_not_a_view_is_written_on_its_own_and_its_hook_runs() {
        let shared: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let hooked: Arc<dyn Engine> = Arc::new(HookedEngine::failing_while(
            Arc::new(ScopedEngine::new(shared.clone(), vec![9])),
            failing,
            "disk full",
        ));
        let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(shared.clone(), vec![1]));
        let mut combined = CombinedWrite::new();
        combined.add(&view, batch(b"k", b"v"));
        combined.add(&hooked, batch(b"k", b"w"));
        assert_eq!(combined.writes(), 2, "the hooked engine is not seen through");
        assert!(combined.write(Durability::Buffered).is_err(), "the hook's refusal is the write's");
        assert_eq!(view.get(ColumnFamily::Data, b"k").unwrap(), Some(b"v".to_vec()), "the write before it was made");
    }

    #[test]
    fn a_view_of_a_view_is_written_to_the_engine_under_both() {
        let shared: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let outer: Arc<dyn Engine> = Arc::new(ScopedEngine::new(shared.clone(), vec![1]));
        let inner: Arc<dyn Engine> = Arc::new(ScopedEngine::new(outer.clone(), vec![2]));
        let mut combined = CombinedWrite::new();
        combined.add(&inner, batch(b"k", b"v"));
        combined.add(&outer, batch(b"k", b"w"));
        assert_eq!(combined.writes(), 1);
        combined.write(Durability::Buffered).unwrap();
        assert_eq!(shared.get(ColumnFamily::Data, &[1, 2, b'k']).unwrap(), Some(b"v".to_vec()));
        assert_eq!(shared.get(ColumnFamily::Data, &[1, b'k']).unwrap(), Some(b"w".to_vec()));
    }
}
