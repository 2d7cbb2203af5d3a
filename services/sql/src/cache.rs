//! The statement cache: planned statements by SQL text.
//!
//! A repeated statement (every TPC-C transaction is a handful of fixed
//! texts with parameters) is neither parsed nor planned again: its
//! [`Prepared`] plan is found by its exact text and run with new
//! parameters. A plan is only valid for the catalog generation it was made
//! with; an entry of an older generation counts as a miss and is replaced.
//! The cache is a bounded LRU ([`STATEMENT_CACHE_ENTRIES`]).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::limits::STATEMENT_CACHE_ENTRIES;
use crate::plan::Prepared;

/// Hit and miss counts, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
}

#[derive(Debug)]
pub struct StatementCache {
    entries: Mutex<LruCache<String, Arc<Prepared>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for StatementCache {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(STATEMENT_CACHE_ENTRIES).expect("the cache holds at least one statement");
        StatementCache {
            entries: Mutex::new(LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

impl StatementCache {
    /// The plan of `sql` for catalog `generation`, if cached (counted as a
    /// hit or a miss).
    pub fn get(&self, sql: &str, generation: u64) -> Option<Arc<Prepared>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(sql) {
            Some(prepared) if prepared.generation == generation => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(prepared.clone())
            }
            _ => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    pub fn insert(&self, sql: &str, prepared: Arc<Prepared>) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).put(sql.to_string(), prepared);
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: self.entries.lock().unwrap_or_else(|e| e.into_inner()).len(),
        }
    }
}
