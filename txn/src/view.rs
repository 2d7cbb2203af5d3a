//! Monotonic Atomic View in the region (`docs/design/transactions.md`,
//! "Monotonic Atomic View in the region"): which version of each key a
//! MAV reader sees at this node, from this node's replicas of the shards
//! and of its region's outbox. It never sends a message out of the region;
//! like a Read Committed read, it may wait for this node's replica of a
//! shard to apply what the reader's gateway already acknowledged there.
//!
//! A version whose transaction wrote other shards names them
//! ([`Siblings`]). It is *visible* here once the rest of its transaction
//! has arrived at this node's replicas:
//!
//! - written by a commit across shards (one timestamp everywhere): every
//!   other shard's replica here has applied every commit at or below that
//!   timestamp ([`Shard::caught_up`]);
//! - shipped from an outbox (each home commits it at a timestamp of its
//!   own): the transaction's own write of each other key it wrote is
//!   *present* here — stored, still queued at this region's outbox, or kept
//!   apart at its home because a newer write superseded it (R17).
//!
//! A write still queued at this region's outbox is visible: the outbox
//! holds all of its transaction at once. A shipped write that a newer one
//! superseded at its home before it arrived (R17) is kept apart there, and
//! shown only to a reader that saw the rest of its transaction.
//!
//! A reader sees, for each key, the newest version that exists for it and
//! is visible, or was written by a transaction it already saw part of
//! (`required`): once seen, the rest of a transaction is present here (that
//! is what visible means) and stays so — replicas only apply forwards, a
//! write kept apart stays, and the outbox forgets a write only once the
//! home's replica here applied it, which the view waits for — and a required
//! transaction's writes exist for the reader whatever their origin. So a
//! reader that saw one write of a transaction sees the rest of it or newer
//! writes on later reads: no fractured read.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use geodb_storage::Timestamp;
use geodb_storage::mvcc::{Siblings, Version};

use crate::participant::{PendingRead, Shard};
use crate::protocol::{Guard, KeyRange, ReadMode, ShardId};
use crate::{Result, TxnId};

/// Where a candidate version comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// The key's history at a replica.
    Stored,
    /// This region's outbox, still holding it.
    Queued,
    /// Kept apart at the home shard: a newer write superseded it (R17).
    Superseded,
}

/// One version of a key a reader may see.
#[derive(Clone, Debug)]
struct Candidate {
    /// The shard whose key it is.
    shard: ShardId,
    origin: Timestamp,
    ts: Timestamp,
    txn: TxnId,
    value: Option<Vec<u8>>,
    siblings: Siblings,
    source: Source,
}

impl Candidate {
    fn order(&self) -> (Timestamp, TxnId) {
        (self.origin, self.txn)
    }

    /// Whether a reader that sees it must see the rest of its transaction
    /// on later reads: it wrote other shards, or is still queued (its other
    /// writes may have left the outbox's reads for a replica's).
    fn binds(&self) -> bool {
        self.source == Source::Queued || !self.siblings.is_none()
    }
}

/// What a view answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Viewed {
    /// The rows, in the order asked for.
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Transactions the reader must see the rest of on later reads.
    pub seen: Vec<TxnId>,
    /// Keys whose newest version the reader could see was held back (an
    /// older one, or none, shown instead) because the rest of its
    /// transaction had not arrived here yet.
    pub held_back: u64,
}

/// A view's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewOutcome {
    Viewed(Viewed),
    /// This node's replica of the shard has not applied what the reader's
    /// gateway acknowledged there, and the answer depends on it: ask again
    /// once it has.
    Behind(ShardId),
}

/// What a view reads: this node's replicas, by shard, and its region's
/// outbox.
pub struct Replicas<'a> {
    pub shard: &'a dyn Fn(ShardId) -> Option<&'a Shard>,
    pub outbox: Option<&'a Shard>,
    /// Planted bug (test-only): every version counts as visible.
    pub show_early: bool,
    /// The reader's snapshot: a stored version whose origin is above it
    /// does not exist for the reader, unless the reader already saw part of
    /// its transaction (so a reader whose replicas have caught up reads one
    /// snapshot; one whose replicas lag reads older versions). Writes still
    /// queued at this region's outbox exist whatever their origin: the
    /// outbox keeps only the newest of each key.
    pub at_most: Timestamp,
    /// Per shard, a commit timestamp there this node's replica must reach
    /// before it tells what the reader's gateway wrote (the newest commit
    /// the gateway acknowledged there, or the newest write the outbox
    /// shipped there and no longer shows): a version whose siblings there
    /// are not here yet waits for that replica instead of being held back,
    /// so a client reads its own writes.
    pub floors: BTreeMap<ShardId, Timestamp>,
}

/// Versions of a key loaded at first; a walk that needs more loads eight
/// times as many (a hot key's history is long, and a reader needs only its
/// newest versions, back to the first it may see).
const FIRST_LOAD: usize = 4;

/// One key's candidates at a replica, loaded newest first as far as walks
/// over them went: its versions, and in their places by origin the write
/// this region's outbox holds of it and the writes kept apart for it.
struct History<'s> {
    replica: &'s Shard,
    key: Vec<u8>,
    versions: Vec<Version>,
    complete: bool,
    /// Newest first.
    extras: Vec<Candidate>,
}

/// What a walk does with a candidate.
enum Step {
    Take,
    Skip,
    Stop,
}

impl<'s> History<'s> {
    fn new(replica: &'s Shard, key: Vec<u8>, queued: Option<&PendingRead>) -> Result<History<'s>> {
        let shard = replica.id();
        let mut extras: Vec<Candidate> =
            replica.superseded(&key)?.iter().map(|version| from_store(shard, version, Source::Superseded)).collect();
        extras.extend(queued.map(from_outbox));
        extras.sort_by_key(|candidate| std::cmp::Reverse(candidate.order()));
        Ok(History { replica, key, versions: Vec::new(), complete: false, extras })
    }

    /// Adds the region's queued write of the key.
    fn add_queued(&mut self, write: &PendingRead) {
        self.extras.push(from_outbox(write));
        self.extras.sort_by_key(|candidate| std::cmp::Reverse(candidate.order()));
    }

    /// R18: the history of a key held by several shards here (a rehome
    /// moved it): every version of each, but the two a rehome wrote at one
    /// timestamp at two shards (its delete at the old home and the version
    /// it moved to the new), which are the same history twice. What stays
    /// is the key's history as its writers made it, each version judged at
    /// the shard it was written at.
    fn merged(held: &[&'s Shard], key: Vec<u8>) -> Result<History<'s>> {
        let mut versions: Vec<(ShardId, Version)> = Vec::new();
        let mut extras = Vec::new();
        for replica in held {
            let shard = replica.id();
            versions.extend(replica.versions(&key, usize::MAX)?.into_iter().map(|version| (shard, version)));
            extras
                .extend(replica.superseded(&key)?.iter().map(|version| from_store(shard, version, Source::Superseded)));
        }
        let mut at: HashMap<Timestamp, BTreeSet<ShardId>> = HashMap::new();
        for (shard, version) in &versions {
            at.entry(version.ts).or_default().insert(*shard);
        }
        extras.extend(
            versions
                .iter()
                .filter(|(_, version)| at[&version.ts].len() == 1)
                .map(|(shard, version)| from_store(*shard, version, Source::Stored)),
        );
        extras.sort_by_key(|candidate| std::cmp::Reverse(candidate.order()));
        Ok(History { replica: held[0], key, versions: Vec::new(), complete: true, extras })
    }

    /// The `index`-th version, newest first, loading more if needed. A
    /// load keeps what was loaded before and adds only older versions:
    /// garbage collection may have removed versions between two loads,
    /// which must not move the walk's place in the history (it would skip
    /// one).
    fn version(&mut self, index: usize) -> Result<Option<&Version>> {
        let mut limit = (self.versions.len() * 8).max(FIRST_LOAD).max(index + 1);
        while index >= self.versions.len() && !self.complete {
            let loaded = self.replica.versions(&self.key, limit)?;
            self.complete = loaded.len() < limit;
            let oldest = self.versions.last().map(|version| version.ts);
            self.versions.extend(loaded.into_iter().filter(|version| oldest.is_none_or(|oldest| version.ts < oldest)));
            limit = limit.saturating_mul(8);
        }
        Ok(self.versions.get(index))
    }

    /// Walks the candidates newest first (by origin) until `step` takes
    /// one or stops.
    fn walk(&mut self, mut step: impl FnMut(&Candidate) -> Result<Step>) -> Result<Option<Candidate>> {
        let (mut stored, mut extra) = (0, 0);
        let shard = self.replica.id();
        loop {
            // The stored version comes first unless the next extra is newer
            // by origin; only the one taken is copied out.
            let stored_order = self.version(stored)?.map(|version| (version.origin, version.txn));
            let candidate = match (self.extras.get(extra), stored_order) {
                (Some(other), Some(order)) if other.order() < order => None,
                (Some(other), _) => {
                    extra += 1;
                    Some(other.clone())
                }
                (None, Some(_)) => None,
                (None, None) => return Ok(None),
            };
            let candidate = match candidate {
                Some(candidate) => candidate,
                None => {
                    let version = self.versions.get(stored).expect("loaded above");
                    stored += 1;
                    from_store(shard, version, Source::Stored)
                }
            };
            match step(&candidate)? {
                Step::Take => return Ok(Some(candidate)),
                Step::Skip => {}
                Step::Stop => return Ok(None),
            }
        }
    }
}

/// Visibility found within one view, by shard, writer, commit timestamp and
/// siblings (one transaction's versions at two shards name different
/// siblings, and so do the versions a rehome moved). It depends only on
/// what this node's replicas hold, not on the reader.
type Memo = RefCell<HashMap<(ShardId, TxnId, Timestamp, Siblings), bool>>;

impl Replicas<'_> {
    /// The outbox's newest write of `key`, wherever it goes (a key a
    /// rehome moved has its queued writes requeued for its new home, R18).
    fn queued(&self, key: &[u8]) -> Result<Option<PendingRead>> {
        let Some(outbox) = self.outbox else { return Ok(None) };
        let range = (Bound::Included(key.to_vec()), Bound::Included(key.to_vec()));
        Ok(outbox.pending(&range)?.pop())
    }

    /// The shard a queued write goes to: its queue's, or (R18) the one its
    /// key moved to, as this node's replicas of the old homes know (hop by
    /// hop: a key may have moved more than once since).
    fn goes_to(&self, write: &PendingRead) -> Result<ShardId> {
        let (mut at, mut route) = (write.dest, write.route.clone());
        for _ in 0..crate::participant::MOVES_FOLLOWED_MAX {
            let Some(replica) = (self.shard)(at) else { break };
            let Some(residence) = replica.moved_from(&route)? else { break };
            (at, route.epoch) = (residence.shard, residence.home.epoch);
        }
        Ok(at)
    }

    /// Whether `candidate` exists for a reader that saw part of `required`.
    fn exists(&self, candidate: &Candidate, required: &BTreeSet<TxnId>) -> bool {
        match candidate.source {
            Source::Queued => true,
            Source::Stored => candidate.origin <= self.at_most || required.contains(&candidate.txn),
            Source::Superseded => required.contains(&candidate.txn),
        }
    }

    /// Whether this node's replica of `shard` has applied what the reader's
    /// gateway wrote there; if not, the view is behind on it.
    fn settled(&self, shard: ShardId, replica: &Shard, behind: &Cell<Option<ShardId>>) -> bool {
        let floor = self.floors.get(&shard).copied().unwrap_or_default();
        if replica.caught_up(floor) {
            return true;
        }
        behind.set(Some(shard));
        false
    }

    /// Whether the rest of `candidate`'s transaction has arrived here.
    fn visible(&self, candidate: &Candidate, cx: &Context) -> Result<bool> {
        if candidate.source == Source::Queued || self.show_early {
            return Ok(true);
        }
        // The siblings too: the versions a rehome moved of one transaction
        // share a shard and timestamp but not their siblings (R18).
        let memo_key = (candidate.shard, candidate.txn, candidate.ts, candidate.siblings.clone());
        if let Some(known) = cx.memo.borrow().get(&memo_key) {
            return Ok(*known);
        }
        let visible = match &candidate.siblings {
            Siblings::None => true,
            // A commit across shards, at its origin there: its timestamp,
            // or, for a version a rehome moved (R18), the timestamp it was
            // first committed at with those shards.
            Siblings::Shards(shards) => shards.iter().all(|shard| match (self.shard)(*shard) {
                Some(replica) if replica.caught_up(candidate.origin) => true,
                Some(replica) => {
                    // The gateway acknowledged a commit there at or above
                    // this one that the replica has not applied: wait for
                    // it rather than hide a write the client may have made.
                    if self.floors.get(shard).is_some_and(|floor| *floor >= candidate.origin) {
                        self.settled(*shard, replica, &cx.behind);
                    }
                    false
                }
                None => false,
            }),
            Siblings::Keys(keys) => {
                let mut all = true;
                for (shard, key) in keys {
                    if !self.present(*shard, key, candidate.order(), &cx.behind)? {
                        all = false;
                        break;
                    }
                }
                all
            }
        };
        cx.memo.borrow_mut().insert(memo_key, visible);
        Ok(visible)
    }

    /// Whether transaction `at.1`'s own write of `key` is here: stored,
    /// still queued at this region's outbox, or kept apart because a newer
    /// write superseded it (R17). Only its own write counts: once the
    /// reader requires the transaction, that write exists for it whatever
    /// else happens to the key, where another transaction's newer write
    /// might not (a queued one ships and leaves the outbox's reads; a
    /// stored one may lie beyond the reader's snapshot).
    fn present(
        &self,
        shard: ShardId,
        key: &[u8],
        at: (Timestamp, TxnId),
        behind: &Cell<Option<ShardId>>,
    ) -> Result<bool> {
        let Some(replica) = (self.shard)(shard) else { return Ok(false) };
        let queued = self.queued(key)?;
        let found = History::new(replica, key.to_vec(), queued.as_ref())?.walk(|candidate| {
            Ok(if candidate.txn == at.1 {
                Step::Take
            } else if candidate.order() < at {
                Step::Stop
            } else {
                Step::Skip
            })
        })?;
        replica.check_collected(self.at_most)?;
        if found.is_none() {
            // Not here yet: if the gateway wrote there, wait for it.
            self.settled(shard, replica, behind);
        }
        Ok(found.is_some())
    }

    /// The version a reader sees of a key: the newest that exists for it
    /// and is visible or of a transaction it is required to see.
    fn choose(&self, history: &mut History<'_>, required: &BTreeSet<TxnId>, cx: &Context) -> Result<Option<Candidate>> {
        history.walk(|candidate| {
            Ok(
                if self.exists(candidate, required)
                    && (required.contains(&candidate.txn) || self.visible(candidate, cx)?)
                {
                    Step::Take
                } else {
                    Step::Skip
                },
            )
        })
    }

    /// Whether each shard's schema guard holds the version the reader
    /// planned with, as this node's replica has it.
    pub fn check_guards(&self, guards: &[(ShardId, Guard)]) -> Result<()> {
        for (shard, guard) in guards {
            if let Some(replica) = (self.shard)(*shard) {
                replica.check_guard(Some(guard), &ReadMode::Latest { after: Timestamp::ZERO })?;
            }
        }
        Ok(())
    }

    /// The rows of `range` at `shards` as a reader that already saw part of
    /// the transactions in `required` sees them, in key order (descending
    /// if `reverse`), at most `limit`; and the transactions whose writes it
    /// returned and whose other writes later reads must show (those with
    /// siblings, and those still queued here). Or which replica must catch
    /// up first.
    pub fn view(
        &self,
        range: &KeyRange,
        shards: &[ShardId],
        reverse: bool,
        limit: Option<usize>,
        required: &[TxnId],
    ) -> Result<ViewOutcome> {
        let cx = Context { memo: RefCell::new(HashMap::new()), behind: Cell::new(None) };
        // Every key of the range, with its history.
        let mut keys: BTreeMap<Vec<u8>, History<'_>> = BTreeMap::new();
        let mut holders: BTreeMap<Vec<u8>, Vec<&Shard>> = BTreeMap::new();
        for &shard in shards {
            let Some(replica) = (self.shard)(shard) else { continue };
            for key in replica.keys_in_range(range)? {
                holders.entry(key).or_default().push(replica);
            }
        }
        for (key, held) in holders {
            let history = match held[..] {
                [replica] => History::new(replica, key.clone(), None)?,
                _ => History::merged(&held, key.clone())?,
            };
            keys.insert(key, history);
        }
        // The region's queued writes go with their keys' current histories
        // (a write queued for a key's old home included, R18).
        for write in self.outbox.map(|outbox| outbox.pending(range)).transpose()?.unwrap_or_default() {
            match keys.get_mut(&write.key) {
                Some(history) => history.add_queued(&write),
                None => {
                    let goes_to = self.goes_to(&write)?;
                    if let Some(replica) = (self.shard)(goes_to).filter(|_| shards.contains(&goes_to)) {
                        let key = write.key.clone();
                        keys.insert(key.clone(), History::new(replica, key, Some(&write))?);
                    }
                }
            }
        }
        // Two passes: a version chosen for one key may be of a transaction
        // whose write of another key did not count as visible on its own
        // (a commit across shards looks caught up only conservatively); the
        // second pass sees every such transaction as required. (A later
        // pass never chooses an older version: what it requires only adds
        // to what the first accepted.)
        let mut required: BTreeSet<TxnId> = required.iter().copied().collect();
        for _ in 0..2 {
            let mut seen = Vec::new();
            for history in keys.values_mut() {
                if let Some(chosen) = self.choose(history, &required, &cx)?
                    && chosen.binds()
                {
                    seen.push(chosen.txn);
                }
            }
            required.extend(seen);
        }
        let mut rows = Vec::new();
        let mut seen = BTreeSet::new();
        let mut held_back = 0;
        let ordered: Box<dyn Iterator<Item = (&Vec<u8>, &mut History<'_>)>> =
            if reverse { Box::new(keys.iter_mut().rev()) } else { Box::new(keys.iter_mut()) };
        for (key, history) in ordered {
            if limit.is_some_and(|limit| rows.len() >= limit) {
                break;
            }
            let chosen = self.choose(history, &required, &cx)?;
            let newest = history
                .walk(|candidate| Ok(if self.exists(candidate, &required) { Step::Take } else { Step::Skip }))?;
            if newest.map(|newest| newest.txn) != chosen.as_ref().map(|chosen| chosen.txn) {
                held_back += 1;
            }
            let Some(chosen) = chosen else { continue };
            if chosen.binds() {
                seen.insert(chosen.txn);
            }
            if let Some(value) = chosen.value {
                rows.push((key.clone(), value));
            }
        }
        if let Some(shard) = cx.behind.get() {
            return Ok(ViewOutcome::Behind(shard));
        }
        // Versions below a replica's collection threshold may be gone.
        for replica in shards.iter().filter_map(|&shard| (self.shard)(shard)) {
            replica.check_collected(self.at_most)?;
        }
        Ok(ViewOutcome::Viewed(Viewed { rows, seen: seen.into_iter().collect(), held_back }))
    }
}

/// What one view has found out so far.
struct Context {
    memo: Memo,
    behind: Cell<Option<ShardId>>,
}

fn from_store(shard: ShardId, version: &Version, source: Source) -> Candidate {
    Candidate {
        shard,
        origin: version.origin,
        ts: version.ts,
        txn: version.txn,
        value: version.value.clone(),
        siblings: version.siblings.clone(),
        source,
    }
}

fn from_outbox(write: &PendingRead) -> Candidate {
    Candidate {
        shard: write.dest,
        origin: write.origin,
        ts: write.origin,
        txn: write.txn,
        value: write.value.clone(),
        siblings: Siblings::None,
        source: Source::Queued,
    }
}
