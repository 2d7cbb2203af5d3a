//! Homes of locality keys (R13) and rehoming them (R18,
//! `docs/design/transactions.md`, "Homes and rehoming"), on shards of one
//! process ([`LocalShards`]): first writes create homes, a rehome moves a
//! key's rows at one timestamp, shards refuse stale routes and gateways
//! follow the key, and queued highly available writes follow it too. The
//! simulator and the real-process tests run the same code replicated.

use std::ops::Bound;
use std::sync::Arc;

use geodb_storage::{Engine, MemoryEngine, ScopedEngine, Timestamp, TxnId};
use geodb_txn::protocol::{KeyRange, ReadMode};
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{
    Error, Hlc, Isolation, LocalShards, ManagerConfig, Place, Request, Response, Router, Shard, ShardId, SystemClock,
    Transaction, TxnManager, shard_prefix,
};

fn read(txn: &mut Transaction, key: &str) -> Option<i64> {
    txn.get(key.as_bytes()).unwrap().map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap())
}

fn write(txn: &mut Transaction, key: &str, value: i64) {
    txn.put(key.as_bytes().to_vec(), value.to_string().into_bytes()).unwrap();
}

/// Keys `h<locality>/...` live at their locality key's home: the directory
/// entry `d<locality>` is in shard 1, and a home in region `r` is shard
/// `2 + r`, where the key's residence record is `r<locality>`.
#[derive(Default)]
struct Homed {
    cache: std::sync::Mutex<std::collections::HashMap<Vec<u8>, geodb_txn::Home>>,
}

impl Router for Homed {
    fn place(&self, key: &[u8]) -> Place {
        match key.strip_prefix(b"h") {
            Some(rest) => Place::Homed(rest.split(|byte| *byte == b'/').next().unwrap_or_default().to_vec()),
            None => Place::Shard(1),
        }
    }

    fn places_of_range(&self, _range: &KeyRange) -> Vec<Place> {
        vec![Place::Shard(1), Place::Shard(2), Place::Shard(3)]
    }

    fn shard_of_home(&self, home: geodb_txn::Home, _locality: &[u8]) -> ShardId {
        2 + u64::from(home.region)
    }

    fn home_key(&self, locality: &[u8]) -> Vec<u8> {
        [b"d".as_slice(), locality].concat()
    }

    fn new_home(&self) -> geodb_txn::Home {
        geodb_txn::Home { region: 0, epoch: 1 }
    }

    fn cached_home(&self, locality: &[u8]) -> Option<geodb_txn::Home> {
        self.cache.lock().unwrap().get(locality).copied()
    }

    fn learn_home(&self, locality: &[u8], home: geodb_txn::Home) {
        self.cache.lock().unwrap().insert(locality.to_vec(), home);
    }

    fn home_shards(&self) -> Vec<ShardId> {
        vec![2, 3]
    }

    fn residence_key(&self, locality: &[u8]) -> Vec<u8> {
        [b"r".as_slice(), locality].concat()
    }

    fn forget_residence(&self, residence: &[u8]) {
        if let Some(locality) = residence.strip_prefix(b"r") {
            self.cache.lock().unwrap().remove(locality);
        }
    }
}

fn homed_cluster() -> Arc<TxnManager> {
    homed_cluster_with(Arc::new(Homed::default()))
}

fn homed_cluster_with(router: Arc<Homed>) -> Arc<TxnManager> {
    Homes::new().gateway(1, router)
}

/// Shards 1 (the directory), 2 and 3 (the homes of regions 0 and 1) of one
/// process, and gateways over them, each with its own cache of homes.
struct Homes {
    engine: Arc<dyn Engine>,
    hlc: Arc<Hlc>,
    shards: Arc<LocalShards>,
}

impl Homes {
    fn new() -> Homes {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let hlc = Arc::new(Hlc::new(Box::new(SystemClock), 1_000_000));
        let shard = |id: ShardId| {
            let view: Arc<dyn Engine> = Arc::new(ScopedEngine::new(engine.clone(), shard_prefix(id)));
            Arc::new(Shard::open(id, view, hlc.clone(), false).unwrap())
        };
        let shards = Arc::new(LocalShards::new([shard(1), shard(2), shard(3)]));
        Homes { engine, hlc, shards }
    }

    /// A gateway: node `node`'s coordinator, with its own cache of homes.
    fn gateway(&self, node: u64, router: Arc<Homed>) -> Arc<TxnManager> {
        TxnManager::with_config(ManagerConfig {
            node,
            hlc: self.hlc.clone(),
            rpc: self.shards.clone(),
            router,
            ids_engine: Some(Arc::new(ScopedEngine::new(self.engine.clone(), format!("node{node}").into_bytes()))),
            first_id: 1,
            commit_wait: false,
            faults: CoordinatorFaults::default(),
        })
        .unwrap()
    }

    /// The newest value of `key` at `shard`, read there without a route.
    fn stored(&self, shard: ShardId, key: &str) -> Option<i64> {
        let request = Request::Get {
            txn: TxnId(0),
            key: key.as_bytes().to_vec(),
            mode: ReadMode::Latest { after: Timestamp::ZERO },
            guard: None,
            route: None,
        };
        match self.shards.handle(shard, request) {
            Response::Value(value) => value.map(|bytes| String::from_utf8(bytes).unwrap().parse().unwrap()),
            other => panic!("{other:?}"),
        }
    }
}

/// The ranges of locality key `locality`'s keys (`h<locality>/...`).
fn ranges_of(locality: &str) -> Vec<KeyRange> {
    let prefix = format!("h{locality}/").into_bytes();
    let end = format!("h{locality}0").into_bytes();
    vec![(Bound::Included(prefix), Bound::Excluded(end))]
}

fn rehome(manager: &Arc<TxnManager>, locality: &str, region: u32) -> geodb_txn::Rehomed {
    geodb_txn::rehome::rehome(manager, locality.as_bytes(), region, &ranges_of(locality), None).unwrap()
}

/// A home read by Read Committed (which does not wait for the clock to pass
/// the home's creation) serves that transaction only; one read at a
/// timestamp is cached for the node (R13: nothing may be routed to a new
/// home before every clock has passed its creation).
#[test]
fn only_homes_read_at_a_timestamp_are_cached() {
    let router = Arc::new(Homed::default());
    let manager = homed_cluster_with(router.clone());
    let mut first = manager.begin(Isolation::Serializable).unwrap();
    write(&mut first, "h9/a", 1);
    first.commit().unwrap();
    assert!(router.cached_home(b"9").is_some(), "the creator caches the home it made");
    router.cache.lock().unwrap().clear();

    let mut rc = manager.begin(Isolation::ReadCommitted).unwrap();
    assert_eq!(read(&mut rc, "h9/a"), Some(1));
    rc.commit().unwrap();
    assert!(router.cached_home(b"9").is_none(), "a Read Committed directory read is not cached");

    let mut serializable = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut serializable, "h9/a"), Some(1));
    serializable.commit().unwrap();
    assert!(router.cached_home(b"9").is_some(), "a directory read at a timestamp is cached");
}

/// A serializable transaction that finds a locality key without a home
/// and writes it commits at once (its read of the missing home is checked
/// at the home its commit creates, not failed by that creation); two that
/// both found it missing and wrote disjoint rows cannot both commit (write
/// skew on a phantom).
#[test]
fn a_first_write_to_a_new_locality_key_commits_and_phantoms_still_conflict() {
    let manager = homed_cluster();
    let mut first = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut first, "h7/a"), None);
    write(&mut first, "h7/a", 1);
    first.commit().expect("the first write of a new locality key commits at once");
    let mut check = manager.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut check, "h7/a"), Some(1));
    check.commit().unwrap();

    let mut a = manager.begin(Isolation::Serializable).unwrap();
    let mut b = manager.begin(Isolation::Serializable).unwrap();
    for txn in [&mut a, &mut b] {
        assert_eq!(read(txn, "h8/a"), None);
        assert_eq!(read(txn, "h8/b"), None);
    }
    write(&mut a, "h8/a", 1);
    write(&mut b, "h8/b", 1);
    a.commit().unwrap();
    let error = b.commit().expect_err("both saw no rows and both inserted one");
    assert!(error.is_retryable(), "{error}");
}

fn commit_writes(manager: &Arc<TxnManager>, isolation: Isolation, pairs: &[(&str, i64)]) {
    let mut txn = manager.begin(isolation).unwrap();
    for (key, value) in pairs {
        write(&mut txn, key, *value);
    }
    txn.commit().unwrap();
}

/// A rehome moves every row of the key to the new home at one timestamp
/// (deleted at the old), switches the directory to the next epoch, and
/// keeps nothing else of the key where it was.
#[test]
fn a_rehome_moves_every_row_to_the_new_home_at_the_next_epoch() {
    let homes = Homes::new();
    let gateway = homes.gateway(1, Arc::new(Homed::default()));
    commit_writes(&gateway, Isolation::Serializable, &[("h7/a", 1), ("h7/b", 2), ("h8/a", 3)]);
    assert_eq!((homes.stored(2, "h7/a"), homes.stored(3, "h7/a")), (Some(1), None));

    let rehomed = rehome(&gateway, "7", 1);
    assert_eq!(rehomed.from, Some(geodb_txn::Home { region: 0, epoch: 1 }));
    assert_eq!(rehomed.to, geodb_txn::Home { region: 1, epoch: 2 });
    assert_eq!(rehomed.rows, 2);
    for (key, value) in [("h7/a", 1), ("h7/b", 2)] {
        assert_eq!(homes.stored(2, key), None, "{key} left the old home");
        assert_eq!(homes.stored(3, key), Some(value), "{key} is at the new home");
    }
    assert_eq!(homes.stored(2, "h8/a"), Some(3), "another key stays");
    // A snapshot from before the rehome still reads the old home, and one
    // after it the new: a scan of both homes finds each row once.
    let mut scan = gateway.begin(Isolation::Snapshot).unwrap();
    let rows = scan.scan(Bound::Included(b"h7/".to_vec()), Bound::Excluded(b"h70".to_vec()), false, None).unwrap();
    assert_eq!(rows.len(), 2);
    // Rehoming to where it lives changes nothing; back, at the next epoch.
    assert_eq!(rehome(&gateway, "7", 1).rows, 0);
    let back = rehome(&gateway, "7", 0);
    assert_eq!((back.to, back.rows), (geodb_txn::Home { region: 0, epoch: 3 }, 2));
    assert_eq!((homes.stored(2, "h7/a"), homes.stored(3, "h7/a")), (Some(1), None));
    // A key with no home yet gets the region asked for.
    let first = rehome(&gateway, "9", 1);
    assert_eq!((first.from, first.to, first.rows), (None, geodb_txn::Home { region: 1, epoch: 1 }, 0));
    commit_writes(&gateway, Isolation::ReadCommitted, &[("h9/a", 5)]);
    assert_eq!(homes.stored(3, "h9/a"), Some(5));
}

/// A gateway that cached the old home is refused by it once the key has
/// moved (naming the new home), forgets it, and its next attempt goes to
/// the new home; a highly available commit is routed again at once.
#[test]
fn a_stale_route_is_refused_and_the_gateway_follows_the_key() {
    let homes = Homes::new();
    let (mover, stale_router) = (homes.gateway(1, Arc::new(Homed::default())), Arc::new(Homed::default()));
    let stale = homes.gateway(2, stale_router.clone());
    commit_writes(&mover, Isolation::Serializable, &[("h7/a", 1)]);
    let mut warm = stale.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut warm, "h7/a"), Some(1));
    warm.commit().unwrap();
    assert_eq!(stale_router.cached_home(b"7").map(|home| home.epoch), Some(1));

    rehome(&mover, "7", 1);
    // A serializable read routed by epoch 1: refused, retryable.
    let mut txn = stale.begin(Isolation::Serializable).unwrap();
    let error = txn.get(b"h7/a").expect_err("the old home refuses a stale route");
    assert!(matches!(error, Error::Moved { .. }) && error.is_retryable(), "{error}");
    assert!(stale_router.cached_home(b"7").is_none(), "the stale home is forgotten");
    let mut again = stale.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut again, "h7/a"), Some(1));
    again.commit().unwrap();
    assert_eq!(stale_router.cached_home(b"7").map(|home| home.epoch), Some(2));

    // A Read Committed write through a stale cache commits at the new
    // home without an error.
    rehome(&mover, "7", 0);
    commit_writes(&stale, Isolation::ReadCommitted, &[("h7/b", 4)]);
    assert_eq!((homes.stored(2, "h7/b"), homes.stored(3, "h7/b")), (Some(4), None));
    assert_eq!(stale_router.cached_home(b"7").map(|home| home.epoch), Some(3));
}

/// A transaction that began before the rehome reads the old home at its
/// snapshot (correctly: the rows were there), but cannot commit a write
/// there afterwards: its write is refused and it runs again at the new
/// home. One whose snapshot predates the move cannot read the new home.
#[test]
fn work_in_flight_on_the_key_finishes_at_the_old_home_or_runs_again_at_the_new() {
    let homes = Homes::new();
    let mover = homes.gateway(1, Arc::new(Homed::default()));
    let other = homes.gateway(2, Arc::new(Homed::default()));
    commit_writes(&mover, Isolation::Serializable, &[("h7/a", 1)]);
    let mut early = other.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut early, "h7/a"), Some(1));
    let mut insert = other.begin(Isolation::Snapshot).unwrap();
    // A third gateway that knows the old home, with a snapshot from
    // before the move.
    let reader = homes.gateway(3, Arc::new(Homed::default()));
    let mut warm = reader.begin(Isolation::Snapshot).unwrap();
    assert_eq!(read(&mut warm, "h7/a"), Some(1));
    let mut late_reader = reader.begin(Isolation::Snapshot).unwrap();

    rehome(&mover, "7", 1);
    // Read and written before: its commit at the old home is refused.
    write(&mut early, "h7/a", 10);
    let error = early.commit().expect_err("the key left the home its write was routed to");
    assert!(error.is_retryable(), "{error}");
    // A blind insert of a new row, begun before the move: routed by the
    // directory as it commits (the refusal above made this gateway forget
    // the old home), so it lands at the new home, never at the old.
    write(&mut insert, "h7/new", 5);
    insert.commit().unwrap();
    assert_eq!((homes.stored(2, "h7/new"), homes.stored(3, "h7/new")), (None, Some(5)));
    // Its snapshot predates the move: the old home's rows, as they were.
    assert_eq!(read(&mut late_reader, "h7/a"), Some(1));
    late_reader.commit().unwrap();
    // A gateway that knows the new home, reading at a snapshot taken
    // before the move: refused (retryable), not an empty answer.
    let mut before = mover.begin(Isolation::Snapshot).unwrap();
    rehome(&mover, "7", 0);
    let error = before.get(b"h7/a").expect_err("the new home has nothing of the key below the move");
    assert!(error.is_retryable(), "{error}");
    assert_eq!(homes.stored(2, "h7/a"), Some(1));
}

/// Writers of a key and rehomes of it back and forth, concurrently: every
/// increment that committed is counted once, and the key's row lives at
/// exactly one home, the one the directory names.
#[test]
fn rehomes_racing_writers_lose_no_write_and_leave_one_copy() {
    let homes = Arc::new(Homes::new());
    let mover = homes.gateway(1, Arc::new(Homed::default()));
    let writer = homes.gateway(2, Arc::new(Homed::default()));
    commit_writes(&mover, Isolation::Serializable, &[("h7/n", 0)]);
    let increments = std::thread::spawn(move || {
        let mut committed = 0;
        for _ in 0..200 {
            let mut txn = writer.begin(Isolation::Serializable).unwrap();
            let outcome = txn.get(b"h7/n").and_then(|value| {
                let n: i64 = String::from_utf8(value.unwrap()).unwrap().parse().unwrap();
                txn.put(b"h7/n".to_vec(), (n + 1).to_string().into_bytes())?;
                txn.commit()
            });
            match outcome {
                Ok(_) => committed += 1,
                Err(error) => assert!(error.is_retryable(), "{error}"),
            }
        }
        committed
    });
    let mut moves = 0;
    for round in 0..20 {
        match geodb_txn::rehome::rehome(&mover, b"7", (round + 1) % 2, &ranges_of("7"), None) {
            Ok(rehomed) => moves += usize::from(rehomed.rows == 1),
            Err(error) => assert!(error.is_retryable(), "{error}"),
        }
    }
    let committed = increments.join().unwrap();
    assert!(moves > 0 && committed > 0, "{moves} moves, {committed} increments");
    let mut check = mover.begin(Isolation::Serializable).unwrap();
    assert_eq!(read(&mut check, "h7/n"), Some(committed));
    check.commit().unwrap();
    let copies: Vec<ShardId> = [2, 3].into_iter().filter(|shard| homes.stored(*shard, "h7/n").is_some()).collect();
    assert_eq!(copies.len(), 1, "the row lives at one home: {copies:?}");
}

mod queued {
    //! Highly available writes queued at an outbox for a key's old home
    //! follow the key (R18 with R16): the state machines alone.

    use std::sync::Arc;

    use geodb_storage::MemoryEngine;
    use geodb_txn::participant::{Applied, DeliveryProposal, Proposal};
    use geodb_txn::protocol::{Changes, Enqueued, ReadMode, Reads, Residence, Route, Write};
    use geodb_txn::{Entry, Hlc, Home, Isolation, ManualClock, Shard, Timestamp, TxnId};

    const OUTBOX: u64 = 9;
    const OLD: u64 = 3;
    const NEW: u64 = 4;

    fn leader(id: u64) -> Shard {
        let hlc = Arc::new(Hlc::new(Box::new(ManualClock::new(1_000_000_000)), 1_000_000));
        let shard = Shard::open(id, Arc::new(MemoryEngine::new()), hlc, true).unwrap();
        shard.set_serving(true);
        shard
    }

    fn write(key: &str, value: &str) -> Write {
        (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
    }

    fn route(epoch: u64) -> Route {
        Route { residence: b"r7".to_vec(), epoch }
    }

    fn apply(shard: &Shard, slot: u64, entry: Entry) -> Vec<Applied> {
        shard.apply(Some(slot), std::slice::from_ref(&entry), 0).unwrap()
    }

    /// What a rehome of locality key 7 from OLD to NEW writes at `shard`:
    /// its residence record (the rows are not needed here).
    fn move_residence(shard: &Shard, slot: u64, txn: u64) {
        let residence = Residence { home: Home { region: 1, epoch: 2 }, shard: NEW };
        let changes = Changes {
            txn: TxnId(txn),
            isolation: Isolation::Serializable,
            read_ts: Timestamp::ZERO,
            writes: vec![(b"r7".to_vec(), Some(residence.encode()))],
            locked: Vec::new(),
            reads: Reads::default(),
            guards: Vec::new(),
            routes: Vec::new(),
            moves: Vec::new(),
        };
        let Proposal::Entry(entry) = shard.propose_commit(&changes).unwrap() else { panic!("not proposed") };
        apply(shard, slot, entry);
    }

    fn latest(shard: &Shard, key: &str) -> Option<String> {
        let value = shard.get(key.as_bytes(), &ReadMode::Latest { after: Timestamp::ZERO }).unwrap();
        value.map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn a_queued_write_of_a_moved_key_is_refused_by_its_old_home_and_requeued_for_the_new() {
        let (outbox, old, new) = (leader(OUTBOX), leader(OLD), leader(NEW));
        // Transaction 20 writes key 7's row and another key's, both homed at OLD.
        let enqueued = Enqueued {
            txn: TxnId(20),
            guards: Vec::new(),
            parts: vec![(OLD, vec![write("h7/a", "q"), write("h8/a", "q")])],
            routes: vec![vec![route(1), Route { residence: b"r8".to_vec(), epoch: 1 }]],
        };
        let Proposal::Entry(entry) = outbox.propose_enqueue(&enqueued).unwrap() else { panic!("not proposed") };
        apply(&outbox, 1, entry);
        let queued = outbox.queued(OLD, 0).unwrap().remove(0);
        let origin = queued.ts;
        // A delivery proposed before the move and chosen after it: skipped.
        let DeliveryProposal::Entry(early) = old.propose_delivery(OUTBOX, &queued, &[]).unwrap() else {
            panic!("proposed")
        };
        old.abandon(TxnId(20));
        move_residence(&old, 1, 30);
        move_residence(&new, 1, 30);
        assert_eq!(apply(&old, 2, early), vec![Applied::Delivered { through: 0, applied: false }]);
        assert_eq!(latest(&old, "h8/a"), None, "nothing of the entry was applied");
        // Proposed now: refused, naming where key 7 lives.
        let DeliveryProposal::Moved(moved_route, residence) = old.propose_delivery(OUTBOX, &queued, &[]).unwrap()
        else {
            panic!("expected the entry refused")
        };
        assert_eq!((moved_route, residence.shard, residence.home.epoch), (route(1), NEW, 2));
        // The outbox requeues key 7's write for NEW (twice: the second
        // changes nothing); key 8's stays queued for OLD.
        for slot in [2, 3] {
            let reroute = Entry::Reroute { dest: OLD, seq: 1, route: route(1), residence };
            apply(&outbox, slot, reroute);
        }
        let for_old = outbox.queued(OLD, 0).unwrap();
        assert_eq!(for_old.len(), 1);
        assert_eq!(for_old[0].writes, vec![write("h8/a", "q")]);
        let for_new = outbox.queued(NEW, 0).unwrap();
        assert_eq!(for_new.len(), 1, "{for_new:?}");
        assert_eq!((for_new[0].writes.clone(), for_new[0].ts), (vec![write("h7/a", "q")], origin));
        assert_eq!(for_new[0].routes, vec![route(2)]);
        // Each home applies its part once; the moved write keeps its origin.
        for (home, rest) in [(&old, &for_old[0]), (&new, &for_new[0])] {
            let DeliveryProposal::Entry(entry) = home.propose_delivery(OUTBOX, rest, &[]).unwrap() else {
                panic!("proposed")
            };
            assert_eq!(apply(home, 3, entry), vec![Applied::Delivered { through: 1, applied: true }]);
        }
        assert_eq!((latest(&old, "h8/a"), latest(&old, "h7/a")), (Some("q".into()), None));
        assert_eq!(latest(&new, "h7/a"), Some("q".into()));
        assert_eq!(new.versions(b"h7/a", 1).unwrap()[0].origin, origin);
    }
}
