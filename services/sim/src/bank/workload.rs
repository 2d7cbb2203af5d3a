//! The clients: transfers, audits and the predicate workload, run by the
//! real coordinator, and the history they leave for the checks.
//!
//! Keys: `acct` + shard byte + account byte (an account; absent means the
//! opening balance), `flag` + shard byte + transaction id (a flag of the
//! predicate workload), `note` + shard byte + transaction id (a note:
//! a Read Committed write, through the region's outbox where its shard
//! cannot commit within the writer's region, R16), and `tags`, shard byte,
//! slot byte (a tag: a few keys every region writes, at Read Committed
//! through the outboxes and directly, and at the coordinated levels, so
//! that the last writer by origin must win, R17). A value is the balance
//! (or 1 for a flag or note, 0 for a tag) and the id of the transaction
//! that wrote it, so every read names the version it saw.
//!
//! Homed accounts and notes (R18): `acct`, [`HOMED`], locality byte,
//! account byte, and `note`, [`HOMED`], locality byte, transaction id;
//! they live at their locality key's home shard ([`HOME_SHARDS`]), homed
//! where they are first written, and move when a client rehomes the key
//! (`home` + locality byte is its directory entry, in
//! [`DIRECTORY_SHARD`]; `resi` + locality byte its residence records).

use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use geodb_geo::NodeId;
use geodb_txn::protocol::{KeyRange, ShardId};
use geodb_txn::transaction::CoordinatorFaults;
use geodb_txn::{
    Error, Hlc, Isolation, ManagerConfig, Place, Router, ShardRpc, Timestamp, Transaction, TxnId, TxnManager,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rpc::NodeRpc;
use super::*;

/// Shards holding accounts and flags.
pub const SHARDS: [ShardId; 4] = [1, 2, 3, 4];
/// Accounts per shard.
pub const ACCOUNTS_PER_SHARD: u8 = 4;
/// Every account opens with this balance (it is not stored until written).
pub const OPENING_BALANCE: i64 = 100;
/// The predicate workload's pairs of shards, and the most flags a pair
/// may hold together.
pub const FLAG_PAIRS: [(ShardId, ShardId); 2] = [(1, 2), (3, 4)];
pub const FLAGS_PER_PAIR_MAX: usize = 3;
/// Writer id of the opening balances.
pub const GENESIS: u64 = 0;
/// Share of a client's transactions the fault phase may use (percent): the
/// rest shows progress once faults stop.
const FAULT_PHASE_BUDGET_PERCENT: usize = 70;

pub fn account_key(shard: ShardId, account: u8) -> Vec<u8> {
    let mut key = b"acct".to_vec();
    key.extend_from_slice(&[shard as u8, account]);
    key
}

/// The fifth byte of a homed account's key (no shard has this id).
pub const HOMED: u8 = 0x10;
/// Locality keys of homed accounts, and accounts per locality key.
pub const LOCALITIES: u8 = 3;
pub const ACCOUNTS_PER_LOCALITY: u8 = 2;
/// Prefixes of the directory entries and the residence records.
pub const DIRECTORY_PREFIX: &[u8] = b"home";
pub const RESIDENCE_PREFIX: &[u8] = b"resi";

pub fn homed_account_key(locality: u8, account: u8) -> Vec<u8> {
    let mut key = b"acct".to_vec();
    key.extend_from_slice(&[HOMED, locality, account]);
    key
}

/// The keys of a locality key: its homed accounts and its notes.
pub fn locality_ranges(locality: u8) -> Vec<KeyRange> {
    [b"acct", b"note", b"tags"]
        .into_iter()
        .map(|prefix| {
            let start = [prefix.as_slice(), &[HOMED, locality]].concat();
            let end = [prefix.as_slice(), &[HOMED, locality + 1]].concat();
            (Bound::Included(start), Bound::Excluded(end))
        })
        .collect()
}

/// Whether `key` is a homed account's or note's (R18).
pub fn is_homed(key: &[u8]) -> bool {
    (key.starts_with(b"acct") || key.starts_with(b"note") || key.starts_with(b"tags")) && key.get(4) == Some(&HOMED)
}

pub fn accounts() -> impl Iterator<Item = Vec<u8>> {
    let sharded =
        SHARDS.into_iter().flat_map(|shard| (0..ACCOUNTS_PER_SHARD).map(move |account| account_key(shard, account)));
    let homed = (0..LOCALITIES)
        .flat_map(|locality| (0..ACCOUNTS_PER_LOCALITY).map(move |account| homed_account_key(locality, account)));
    sharded.chain(homed)
}

/// An account at random: of a shard, or homed (one in three).
fn random_account(rng: &mut StdRng) -> Vec<u8> {
    if rng.random_ratio(1, 3) {
        return homed_account_key(rng.random_range(0..LOCALITIES), rng.random_range(0..ACCOUNTS_PER_LOCALITY));
    }
    account_key(SHARDS[rng.random_range(0..SHARDS.len())], rng.random_range(0..ACCOUNTS_PER_SHARD))
}

fn flag_range(shard: ShardId) -> KeyRange {
    let mut start = b"flag".to_vec();
    start.push(shard as u8);
    let mut end = b"flag".to_vec();
    end.push(shard as u8 + 1);
    (Bound::Included(start), Bound::Excluded(end))
}

pub fn flag_ranges() -> impl Iterator<Item = (ShardId, KeyRange)> {
    SHARDS.into_iter().map(|shard| (shard, flag_range(shard)))
}

pub fn encode_value(amount: i64, writer: TxnId) -> Vec<u8> {
    let mut value = amount.to_be_bytes().to_vec();
    value.extend_from_slice(&writer.0.to_be_bytes());
    value
}

/// (amount, writer) of a stored value.
pub fn decode_value(bytes: &[u8]) -> (i64, u64) {
    assert_eq!(bytes.len(), 16, "a bank value is 16 bytes");
    let amount = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let writer = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    (amount, writer)
}

/// Shards notes are written to: the zone-survival ones.
pub const NOTE_SHARDS: [ShardId; 3] = [1, 2, 3];

/// Tags per note shard: few, so that writers from every region collide.
pub const TAG_SLOTS: u8 = 2;

pub fn tag_key(shard: ShardId, slot: u8) -> Vec<u8> {
    let mut key = b"tags".to_vec();
    key.extend_from_slice(&[shard as u8, slot]);
    key
}

/// A tag of a locality key (R18: it moves with the key).
pub fn homed_tag_key(locality: u8, slot: u8) -> Vec<u8> {
    let mut key = b"tags".to_vec();
    key.extend_from_slice(&[HOMED, locality, slot]);
    key
}

/// Every tag: of the note shards, and of the locality keys.
pub fn tag_keys() -> Vec<Vec<u8>> {
    let sharded = NOTE_SHARDS.iter().flat_map(|shard| (0..TAG_SLOTS).map(move |slot| tag_key(*shard, slot)));
    let homed = (0..LOCALITIES).flat_map(|locality| (0..TAG_SLOTS).map(move |slot| homed_tag_key(locality, slot)));
    sharded.chain(homed).collect()
}

/// Keys name their shard in their fifth byte; `region` is the
/// coordinator's, whose outbox takes its highly available writes to
/// shards homed elsewhere.
/// Homed accounts live at their locality key's home (cached here once
/// learned).
pub struct BankRouter {
    pub region: usize,
    pub homes: Mutex<std::collections::HashMap<Vec<u8>, geodb_txn::Home>>,
}

impl BankRouter {
    pub fn new(region: usize) -> BankRouter {
        BankRouter { region, homes: Mutex::default() }
    }

    pub fn shard_of(key: &[u8]) -> ShardId {
        key.get(4).map_or(SHARDS[0], |shard| *shard as ShardId)
    }

    fn homes(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Vec<u8>, geodb_txn::Home>> {
        self.homes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Router for BankRouter {
    fn place(&self, key: &[u8]) -> Place {
        if key.starts_with(DIRECTORY_PREFIX) || key.starts_with(RESIDENCE_PREFIX) {
            return Place::Shard(DIRECTORY_SHARD);
        }
        match key {
            [_, _, _, _, HOMED, locality, ..] if is_homed(key) => Place::Homed(vec![*locality]),
            _ => Place::Shard(Self::shard_of(key)),
        }
    }

    fn shard_of_home(&self, home: geodb_txn::Home, _locality: &[u8]) -> ShardId {
        HOME_SHARDS[home.region as usize % HOME_SHARDS.len()]
    }

    fn home_key(&self, locality: &[u8]) -> Vec<u8> {
        [DIRECTORY_PREFIX, locality].concat()
    }

    fn new_home(&self) -> geodb_txn::Home {
        geodb_txn::Home { region: self.region as u32, epoch: geodb_txn::FIRST_EPOCH }
    }

    fn cached_home(&self, locality: &[u8]) -> Option<geodb_txn::Home> {
        self.homes().get(locality).copied()
    }

    fn learn_home(&self, locality: &[u8], home: geodb_txn::Home) {
        let mut homes = self.homes();
        if homes.get(locality).is_none_or(|known| known.epoch <= home.epoch) {
            homes.insert(locality.to_vec(), home);
        }
    }

    fn home_shards(&self) -> Vec<ShardId> {
        HOME_SHARDS.to_vec()
    }

    fn residence_key(&self, locality: &[u8]) -> Vec<u8> {
        [RESIDENCE_PREFIX, locality].concat()
    }

    fn forget_residence(&self, residence: &[u8]) {
        if let Some(locality) = residence.strip_prefix(RESIDENCE_PREFIX) {
            self.homes().remove(locality);
        }
    }

    fn places_of_range(&self, range: &KeyRange) -> Vec<Place> {
        self.shards_of_range(range).into_iter().map(Place::Shard).collect()
    }

    fn reads_settled(&self, shard: ShardId) -> bool {
        shard == super::CLOSING_SHARD
    }

    fn outbox(&self) -> Option<ShardId> {
        super::OUTBOXES.get(self.region).copied()
    }

    fn queued_through_outbox(&self, shard: ShardId) -> bool {
        NOTE_SHARDS.contains(&shard)
    }

    fn commits_in_region(&self, shard: ShardId) -> bool {
        super::home_region(shard) == Some(self.region)
    }
}

impl BankRouter {
    fn shards_of_range(&self, range: &KeyRange) -> Vec<ShardId> {
        let shard_of_bound = |bound: &Bound<Vec<u8>>| match bound {
            Bound::Included(key) | Bound::Excluded(key) if key.len() > 4 => Some(key[4]),
            _ => None,
        };
        match (shard_of_bound(&range.0), &range.1) {
            // One shard's flag range: [flag s, flag s+1).
            (Some(start), Bound::Excluded(end)) if end.len() == 5 && end[4] == start + 1 => vec![start as ShardId],
            _ => SHARDS.to_vec(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Transfer,
    Audit,
    Predicate,
    /// A read of a transfer's accounts through another gateway, begun as
    /// soon as the transfer was acknowledged: it must see the transfer
    /// (real-time order across gateways, R6).
    Check,
    /// A short read-only transaction of one or two accounts: many of them,
    /// through gateways whose clocks differ, are what real-time order
    /// violations of readers show up in.
    Peek,
    /// A Read Committed transaction writing one or two notes (through the
    /// region's outbox when a note's shard is homed elsewhere), then read
    /// back through the same gateway: it must see them.
    Note,
    /// A blind write of one or two tags, at Read Committed (three times in
    /// four) or a coordinated level, then read back at Read Committed
    /// through the same gateway: it must see its own write or one newer by
    /// origin (R17).
    Tag,
    /// A Monotonic Atomic View transaction reading every tag, one at a time
    /// or in one scan, through its gateway's replicas: once it saw one
    /// write of a transaction, it must see the rest of it or newer writes.
    Watch,
    /// A rehome of a locality key to a region (R18): not in the history
    /// (it changes no balance), checked by where each homed account ends.
    Rehome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still running, or its commit was sent and no answer came back
    /// before its node crashed.
    Pending,
    Committed(Timestamp),
    Aborted(String),
    /// The commit may or may not have happened.
    Unknown(String),
}

/// One transaction as its client saw it.
#[derive(Clone, Debug)]
pub struct TxnRecord {
    pub txn: TxnId,
    pub node: NodeId,
    pub isolation: Isolation,
    pub kind: Kind,
    pub begin_us: u64,
    pub end_us: Option<u64>,
    pub read_ts: Timestamp,
    /// Point reads: the key and the writer of the version read.
    pub reads: Vec<(Vec<u8>, u64)>,
    /// Scans: the range and the keys found, with their writers.
    pub scans: Vec<(KeyRange, Vec<(Vec<u8>, u64)>)>,
    pub writes: Vec<Vec<u8>>,
    /// A tag's read back after its commit: key and writer seen.
    pub readback: Vec<(Vec<u8>, u64)>,
    /// Where it committed, once its client was told: at its region's outbox
    /// (R16), or at its home shards.
    pub at_outbox: Option<bool>,
    /// A watch's statements in order, each the keys it saw with their
    /// writers (absent keys: [`GENESIS`]).
    pub views: Vec<Vec<(Vec<u8>, u64)>>,
    pub outcome: Outcome,
}

pub type History = Arc<Mutex<Vec<TxnRecord>>>;

/// A node's coordinator endpoint, while it is up.
#[derive(Clone)]
pub struct Gateway {
    pub hlc: Arc<Hlc>,
    pub rpc: NodeRpc,
    pub region: usize,
}

pub type Gateways = Arc<Mutex<std::collections::BTreeMap<NodeId, Gateway>>>;

/// Transaction id counters of clients hopping to another gateway start
/// here, above any a node's own clients reach.
const HOP_IDS: u64 = 1 << 43;

/// What a client task holds.
pub struct ClientContext {
    pub node: NodeId,
    pub manager: Arc<TxnManager>,
    pub rpc: NodeRpc,
    pub hlc: Arc<Hlc>,
    pub history: History,
    pub now_us: Arc<AtomicU64>,
    pub begun: Arc<AtomicUsize>,
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    pub gateways: Gateways,
    pub hops: Arc<AtomicU64>,
    pub rehomes: Arc<[AtomicU64; 2]>,
    pub prepared_early: Arc<AtomicU64>,
    pub coordinator_faults: CoordinatorFaults,
    pub budget: usize,
    pub fault_phase_us: u64,
    pub rng: StdRng,
}

impl World {
    pub(super) fn start_client(&mut self, client: usize) {
        let node = self.clients[client].node;
        if !self.nodes[&node].up || self.clients[client].task.is_some_and(|task| self.executor.is_alive(task)) {
            return;
        }
        let sim_node = &self.nodes[&node];
        let manager = TxnManager::with_config(ManagerConfig {
            node: node.0,
            hlc: sim_node.hlc.clone(),
            rpc: Arc::new(sim_node.rpc.clone()),
            router: Arc::new(BankRouter::new(sim_node.region)),
            ids_engine: None,
            first_id: sim_node.incarnation << 24,
            commit_wait: true,
            faults: self.options.faults.coordinator(),
        })
        .expect("a manager without durable ids opens");
        let context = ClientContext {
            node,
            manager,
            rpc: sim_node.rpc.clone(),
            hlc: sim_node.hlc.clone(),
            history: self.history.clone(),
            now_us: self.now_us.clone(),
            begun: self.clients[client].begun.clone(),
            stopping: self.stopping.clone(),
            gateways: self.gateways.clone(),
            hops: self.hops.clone(),
            rehomes: self.rehomes.clone(),
            prepared_early: self.prepared_early.clone(),
            coordinator_faults: self.options.faults.coordinator(),
            budget: self.options.transactions_per_client,
            fault_phase_us: self.options.fault_phase_us,
            rng: StdRng::seed_from_u64(rand::Rng::random(self.scheduler.rng())),
        };
        self.clients[client].task = Some(self.executor.spawn(run_client(context)));
    }
}

async fn run_client(mut context: ClientContext) {
    loop {
        let begun = context.begun.load(Ordering::Relaxed);
        if begun >= context.budget || context.stopping.load(Ordering::Relaxed) {
            return;
        }
        let now = context.now_us.load(Ordering::Relaxed);
        if now < context.fault_phase_us && begun >= context.budget * FAULT_PHASE_BUDGET_PERCENT / 100 {
            // Budget spent for the fault phase: wait for the quiet one.
            let wait_ns = (context.fault_phase_us - now + 1) * 1_000;
            context.rpc.sleep_until(context.hlc.physical_now_ns() + wait_ns).await;
            continue;
        }
        context.begun.fetch_add(1, Ordering::Relaxed);
        let kind = match context.rng.random_range(0..100) {
            0..40 => Kind::Transfer,
            40..52 => Kind::Audit,
            52..64 => Kind::Predicate,
            64..74 => Kind::Note,
            74..86 => Kind::Tag,
            86..93 => Kind::Watch,
            93..96 => Kind::Rehome,
            _ => Kind::Peek,
        };
        let mut checked = None;
        match kind {
            Kind::Transfer => {
                let written = transfer(&mut context).await;
                if context.rng.random_bool(0.5) {
                    checked = written;
                }
            }
            Kind::Audit => audit(&mut context).await,
            Kind::Note => note(&mut context).await,
            Kind::Tag => tag(&mut context).await,
            Kind::Watch => watch(&mut context).await,
            Kind::Predicate => predicate(&mut context).await,
            Kind::Rehome => rehome(&mut context).await,
            Kind::Peek => {
                // What a reader saw, another gateway must see too once
                // the reader is done (real-time order of readers).
                let read = peek(&mut context).await;
                if context.rng.random_bool(0.5) {
                    checked = read;
                }
            }
            Kind::Check => unreachable!("checks follow transfers"),
        }
        if let Some(written) = checked.take() {
            check(&mut context, written).await;
        }
        let think_ns = context.rng.random_range(0..5_000_000);
        context.rpc.sleep_until(context.hlc.physical_now_ns() + think_ns).await;
    }
}

/// A record for `txn`, added to the history at once so that a crash of
/// its node leaves it there (pending: its outcome unknown).
fn record(context: &ClientContext, txn: &Transaction, kind: Kind) -> usize {
    let mut history = context.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    history.push(TxnRecord {
        txn: txn.id(),
        node: context.node,
        isolation: txn.isolation(),
        kind,
        begin_us: context.now_us.load(Ordering::Relaxed),
        end_us: None,
        read_ts: txn.read_ts(),
        reads: Vec::new(),
        scans: Vec::new(),
        writes: Vec::new(),
        readback: Vec::new(),
        at_outbox: None,
        views: Vec::new(),
        outcome: Outcome::Pending,
    });
    history.len() - 1
}

fn update(context: &ClientContext, index: usize, change: impl FnOnce(&mut TxnRecord)) {
    let mut history = context.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    change(&mut history[index]);
}

fn finish(context: &ClientContext, index: usize, outcome: Result<Timestamp, Error>) {
    let now = context.now_us.load(Ordering::Relaxed);
    update(context, index, |record| {
        record.end_us = Some(now);
        record.outcome = match outcome {
            Ok(ts) => Outcome::Committed(ts),
            Err(error @ Error::OutcomeUnknown(_)) => Outcome::Unknown(error.to_string()),
            Err(error) => Outcome::Aborted(error.to_string()),
        };
    });
}

fn coordinated(rng: &mut StdRng) -> Isolation {
    if rng.random_bool(0.5) { Isolation::Snapshot } else { Isolation::Serializable }
}

async fn read(txn: &mut Transaction, key: &[u8]) -> Result<(i64, u64), Error> {
    Ok(txn.get_async(key).await?.map_or((OPENING_BALANCE, GENESIS), |bytes| decode_value(&bytes)))
}

/// [`read`], or the read of a row the transaction writes next
/// ([`Transaction::get_for_write_async`]).
async fn read_for(txn: &mut Transaction, key: &[u8], for_write: bool) -> Result<(i64, u64), Error> {
    if !for_write {
        return read(txn, key).await;
    }
    Ok(txn.get_for_write_async(key).await?.map_or((OPENING_BALANCE, GENESIS), |bytes| decode_value(&bytes)))
}

/// Reads `keys` in order, recording each writer seen, and commits.
async fn read_all_and_commit(
    context: &ClientContext,
    index: usize,
    mut txn: Transaction,
    keys: &[Vec<u8>],
) -> Result<Timestamp, Error> {
    for key in keys {
        let (_, writer) = read(&mut txn, key).await?;
        update(context, index, |record| record.reads.push((key.clone(), writer)));
    }
    txn.commit_async().await
}

/// Moves money between two accounts, usually of different shards; returns
/// the accounts if it committed.
async fn transfer(context: &mut ClientContext) -> Option<Vec<Vec<u8>>> {
    let isolation = coordinated(&mut context.rng);
    let Ok(mut txn) = context.manager.begin(isolation) else { return None };
    let index = record(context, &txn, Kind::Transfer);
    let mut pick = || random_account(&mut context.rng);
    let from = pick();
    let mut to = pick();
    while to == from {
        to = pick();
    }
    let amount = context.rng.random_range(1..=20);
    // Half the transfers read both accounts for writing, as an UPDATE
    // does: a far shard is then prepared at the read (R20). A few of those
    // are abandoned after their reads, their prepared parts left to the
    // transaction's end (or recovery) to release.
    // Some of those read the second account plainly: a part prepared at
    // the first read then no longer covers what the commit writes there,
    // and is prepared again with its values.
    let for_write = context.rng.random_bool(0.5);
    let to_for_write = for_write && context.rng.random_bool(0.7);
    let abandon = for_write && context.rng.random_bool(0.05);
    let outcome = async {
        let (from_balance, from_writer) = read_for(&mut txn, &from, for_write).await?;
        let (to_balance, to_writer) = read_for(&mut txn, &to, to_for_write).await?;
        context.prepared_early.fetch_add(txn.prepared_early() as u64, Ordering::Relaxed);
        if abandon {
            drop(txn);
            return Err(Error::Invalid("abandoned by its client after its reads".into()));
        }
        update(context, index, |record| {
            record.reads.push((from.clone(), from_writer));
            record.reads.push((to.clone(), to_writer));
        });
        let amount = amount.min(from_balance.max(0));
        txn.put(from.clone(), encode_value(from_balance - amount, txn.id()))?;
        txn.put(to.clone(), encode_value(to_balance + amount, txn.id()))?;
        update(context, index, |record| record.writes = vec![from.clone(), to.clone()]);
        txn.commit_async().await
    }
    .await;
    let committed = outcome.is_ok();
    finish(context, index, outcome);
    committed.then(|| vec![from, to])
}

/// Reads `keys` at once through another gateway (another region's when it
/// is up), at Snapshot Isolation, right after a transaction that wrote or
/// read them ended.
async fn check(context: &mut ClientContext, keys: Vec<Vec<u8>>) {
    let (node, gateway) = {
        let gateways = context.gateways.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let here = gateways.get(&context.node).map(|gateway| gateway.region);
        let others: Vec<(NodeId, Gateway)> = gateways
            .iter()
            .filter(|(node, gateway)| **node != context.node && Some(gateway.region) != here)
            .map(|(node, gateway)| (*node, gateway.clone()))
            .collect();
        if others.is_empty() {
            return;
        }
        others[context.rng.random_range(0..others.len())].clone()
    };
    let hop = context.hops.fetch_add(1, Ordering::Relaxed);
    let Ok(manager) = TxnManager::with_config(ManagerConfig {
        node: node.0,
        hlc: gateway.hlc.clone(),
        rpc: Arc::new(gateway.rpc.clone()),
        router: Arc::new(BankRouter::new(gateway.region)),
        ids_engine: None,
        first_id: HOP_IDS + hop,
        commit_wait: true,
        faults: context.coordinator_faults,
    }) else {
        return;
    };
    let Ok(txn) = manager.begin(Isolation::Snapshot) else { return };
    let index = record(context, &txn, Kind::Check);
    update(context, index, |record| record.node = node);
    let outcome = read_all_and_commit(context, index, txn, &keys).await;
    finish(context, index, outcome);
}

/// Reads one or two accounts and ends; returns them if it committed.
async fn peek(context: &mut ClientContext) -> Option<Vec<Vec<u8>>> {
    let isolation = coordinated(&mut context.rng);
    let Ok(txn) = context.manager.begin(isolation) else { return None };
    let index = record(context, &txn, Kind::Peek);
    let count = context.rng.random_range(1..=2);
    let keys: Vec<Vec<u8>> = (0..count).map(|_| random_account(&mut context.rng)).collect();
    let outcome = read_all_and_commit(context, index, txn, &keys).await;
    let committed = outcome.is_ok();
    finish(context, index, outcome);
    committed.then_some(keys)
}

/// Rehomes a locality key of homed accounts to a region at random.
async fn rehome(context: &mut ClientContext) {
    let locality = context.rng.random_range(0..LOCALITIES);
    let region = context.rng.random_range(0..HOME_SHARDS.len()) as u32;
    let outcome = context.manager.rehome_async(&[locality], region, &locality_ranges(locality), None).await;
    let counter = match outcome {
        Ok(rehomed) if rehomed.rows > 0 => 0,
        Ok(_) => return,
        Err(_) => 1,
    };
    context.rehomes[counter].fetch_add(1, Ordering::Relaxed);
}

/// Reads every account in one scan across all shards.
async fn audit(context: &mut ClientContext) {
    let isolation = coordinated(&mut context.rng);
    let Ok(mut txn) = context.manager.begin(isolation) else { return };
    let index = record(context, &txn, Kind::Audit);
    let range: KeyRange = (Bound::Included(b"acct".to_vec()), Bound::Excluded(b"acct\xff".to_vec()));
    let outcome = async {
        let rows = txn.scan_async(range.0.clone(), range.1.clone(), false, None).await?;
        let found: Vec<(Vec<u8>, u64)> = rows.iter().map(|(key, value)| (key.clone(), decode_value(value).1)).collect();
        update(context, index, |record| record.scans.push((range.clone(), found)));
        let stored: i64 = rows.iter().map(|(_, value)| decode_value(value).0).sum();
        let absent = accounts().count() - rows.len();
        let total = stored + absent as i64 * OPENING_BALANCE;
        let expected = accounts().count() as i64 * OPENING_BALANCE;
        if total != expected {
            // Recorded; the checks fail the run with the details.
            update(context, index, |record| {
                record.outcome = Outcome::Aborted(format!("AUDIT TOTAL {total} != {expected}"));
            });
        }
        txn.commit_async().await
    }
    .await;
    let audit_failed = {
        let history = context.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        matches!(&history[index].outcome, Outcome::Aborted(reason) if reason.starts_with("AUDIT"))
    };
    if !audit_failed {
        finish(context, index, outcome);
    }
}

/// Inserts a flag into one of a pair of shards' ranges only while fewer
/// than the limit exist in both together: serializable only (at SI two of
/// them may both see room — write skew on a predicate — which SI allows).
async fn predicate(context: &mut ClientContext) {
    let Ok(mut txn) = context.manager.begin(Isolation::Serializable) else { return };
    let index = record(context, &txn, Kind::Predicate);
    let (left, right) = FLAG_PAIRS[context.rng.random_range(0..FLAG_PAIRS.len())];
    let target = if context.rng.random_bool(0.5) { left } else { right };
    let outcome = async {
        let mut count = 0;
        for shard in [left, right] {
            let range = flag_range(shard);
            let rows = txn.scan_async(range.0.clone(), range.1.clone(), false, None).await?;
            count += rows.len();
            let found = rows.iter().map(|(key, value)| (key.clone(), decode_value(value).1)).collect();
            update(context, index, |record| record.scans.push((range, found)));
        }
        if count < FLAGS_PER_PAIR_MAX {
            let mut key = b"flag".to_vec();
            key.push(target as u8);
            key.extend_from_slice(&txn.id().0.to_be_bytes());
            txn.put(key.clone(), encode_value(1, txn.id()))?;
            update(context, index, |record| record.writes = vec![key]);
        }
        txn.commit_async().await
    }
    .await;
    finish(context, index, outcome);
}

/// Writes `amount` (and the writer) to each of `keys` (once each) and
/// commits, recording the writes and the outcome; answers the keys written
/// if it committed.
async fn commit_blind_writes(
    context: &ClientContext,
    mut txn: Transaction,
    index: usize,
    mut keys: Vec<Vec<u8>>,
    amount: i64,
) -> Option<Vec<Vec<u8>>> {
    keys.sort();
    keys.dedup();
    let outcome = async {
        for key in &keys {
            txn.put(key.clone(), encode_value(amount, txn.id()))?;
        }
        update(context, index, |record| record.writes = keys.clone());
        let commit = txn.commit_reporting_async().await?;
        let at_outbox = commit.at == geodb_txn::CommittedAt::Outbox;
        update(context, index, |record| record.at_outbox = Some(at_outbox));
        Ok(commit.ts)
    }
    .await;
    let committed = outcome.is_ok();
    finish(context, index, outcome);
    committed.then_some(keys)
}

/// Writes one or two notes at Read Committed, then reads them back through
/// the same gateway at Read Committed: a client reads its own region's
/// acknowledged writes, queued or shipped (R16).
async fn note(context: &mut ClientContext) {
    let Ok(txn) = context.manager.begin(Isolation::ReadCommitted) else { return };
    let index = record(context, &txn, Kind::Note);
    let count = context.rng.random_range(1..=2);
    let keys: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let mut key = b"note".to_vec();
            if context.rng.random_ratio(1, 3) {
                key.extend_from_slice(&[HOMED, context.rng.random_range(0..LOCALITIES)]);
            } else {
                key.push(NOTE_SHARDS[context.rng.random_range(0..NOTE_SHARDS.len())] as u8);
            }
            key.extend_from_slice(&txn.id().0.to_be_bytes());
            key
        })
        .collect();
    let Some(keys) = commit_blind_writes(context, txn, index, keys, 1).await else { return };
    let Ok(mut reader) = context.manager.begin(Isolation::ReadCommitted) else { return };
    for key in &keys {
        match reader.get_async(key).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // Recorded; the checks fail the run with the details.
                let key = key.clone();
                update(context, index, |record| {
                    record.outcome = Outcome::Aborted(format!("NOTE UNREAD {key:?} after its commit was acknowledged"));
                });
                return;
            }
            // Unreachable replicas (faults): nothing to judge.
            Err(_) => return,
        }
    }
}

/// Writes one or two tags (keys every client writes) blindly, then reads
/// them back at Read Committed through the same gateway; the checks judge
/// what it saw against the origins of the writes (R17).
async fn tag(context: &mut ClientContext) {
    let isolation = match context.rng.random_range(0..4) {
        0 | 1 => Isolation::ReadCommitted,
        2 => Isolation::MonotonicAtomicView,
        _ => coordinated(&mut context.rng),
    };
    let Ok(txn) = context.manager.begin(isolation) else { return };
    let index = record(context, &txn, Kind::Tag);
    let count = context.rng.random_range(1..=3);
    let keys: Vec<Vec<u8>> = (0..count)
        .map(|_| {
            let shard = NOTE_SHARDS[context.rng.random_range(0..NOTE_SHARDS.len())];
            let slot = context.rng.random_range(0..TAG_SLOTS);
            if context.rng.random_ratio(1, 3) {
                return homed_tag_key(context.rng.random_range(0..LOCALITIES), slot);
            }
            tag_key(shard, slot)
        })
        .collect();
    let Some(keys) = commit_blind_writes(context, txn, index, keys, 0).await else { return };
    let Ok(mut reader) = context.manager.begin(Isolation::ReadCommitted) else { return };
    for key in &keys {
        match reader.get_async(key).await {
            Ok(value) => {
                let writer = value.map_or(GENESIS, |bytes| decode_value(&bytes).1);
                let key = key.clone();
                update(context, index, |record| record.readback.push((key, writer)));
            }
            // Unreachable replicas (faults): nothing to judge.
            Err(_) => return,
        }
    }
}

/// Reads every tag at Monotonic Atomic View: one at a time in a random
/// order (twice over, so later reads follow earlier ones both ways), or in
/// one scan then one at a time; the checks look for fractured reads.
async fn watch(context: &mut ClientContext) {
    let Ok(mut txn) = context.manager.begin(Isolation::MonotonicAtomicView) else { return };
    let index = record(context, &txn, Kind::Watch);
    let mut keys = tag_keys();
    let writer = |value: Option<Vec<u8>>| value.map_or(GENESIS, |bytes| decode_value(&bytes).1);
    let outcome = async {
        if context.rng.random_bool(0.3) {
            let rows = txn
                .scan_async(Bound::Included(b"tags".to_vec()), Bound::Excluded(b"tagt".to_vec()), false, None)
                .await?;
            let mut seen: Vec<(Vec<u8>, u64)> = keys.iter().map(|key| (key.clone(), GENESIS)).collect();
            for (key, value) in rows {
                if let Some(entry) = seen.iter_mut().find(|(known, _)| *known == key) {
                    entry.1 = writer(Some(value));
                }
            }
            update(context, index, |record| record.views.push(seen));
        }
        for _ in 0..2 {
            for i in (1..keys.len()).rev() {
                keys.swap(i, context.rng.random_range(0..=i));
            }
            for key in &keys {
                let seen = writer(txn.get_async(key).await?);
                let key = key.clone();
                update(context, index, |record| record.views.push(vec![(key, seen)]));
            }
        }
        txn.commit_async().await
    }
    .await;
    finish(context, index, outcome);
}
