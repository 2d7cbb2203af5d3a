//! An engine that runs a hook before every write.
//!
//! For failure paths and measurements that must not touch the engines
//! themselves: tests make writes fail (a full disk) or block (to queue work
//! behind a write), benchmarks count synced writes. Reads and checkpoints
//! go straight to the inner engine.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{ColumnFamily, Durability, Engine, ScanIter, WriteBatch};
use crate::{Error, Result};

/// What runs before each write; an `Err` fails the write, which then never
/// reaches the inner engine.
pub type WriteHook = Box<dyn Fn(&WriteBatch, Durability) -> Result<()> + Send + Sync>;

/// `inner`, with `hook` run before each write.
pub struct HookedEngine {
    inner: Arc<dyn Engine>,
    hook: WriteHook,
}

impl HookedEngine {
    pub fn new(
        inner: Arc<dyn Engine>,
        hook: impl Fn(&WriteBatch, Durability) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        HookedEngine { inner, hook: Box::new(hook) }
    }

    /// `inner`, whose writes fail with `message` while `failing` is set
    /// (a full or broken disk, switched on and off by a test).
    pub fn failing_while(inner: Arc<dyn Engine>, failing: Arc<AtomicBool>, message: &'static str) -> Self {
        Self::new(inner, move |_, _| {
            if failing.load(Ordering::SeqCst) {
                return Err(Error::Engine(message.into()));
            }
            Ok(())
        })
    }

    pub fn inner(&self) -> &Arc<dyn Engine> {
        &self.inner
    }
}

impl Engine for HookedEngine {
    fn get(&self, cf: ColumnFamily, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(cf, key)
    }

    fn scan<'a>(
        &'a self,
        cf: ColumnFamily,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        reverse: bool,
    ) -> Result<ScanIter<'a>> {
        self.inner.scan(cf, start, end, reverse)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        (self.hook)(&batch, durability)?;
        self.inner.write(batch, durability)
    }

    fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.inner.checkpoint(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryEngine;

    #[test]
    fn a_failing_hook_keeps_the_write_from_the_engine() {
        let full = Arc::new(AtomicBool::new(true));
        let engine = HookedEngine::failing_while(Arc::new(MemoryEngine::new()), full.clone(), "full");
        let mut batch = WriteBatch::new();
        batch.put(ColumnFamily::Data, b"k".to_vec(), b"v".to_vec());
        assert!(engine.write(batch.clone(), Durability::Sync).is_err());
        assert_eq!(engine.get(ColumnFamily::Data, b"k").unwrap(), None);
        full.store(false, Ordering::SeqCst);
        engine.write(batch, Durability::Sync).unwrap();
        assert_eq!(engine.get(ColumnFamily::Data, b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}
