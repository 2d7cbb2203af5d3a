//! The checks at the end of a bank run.
//!
//! The final state comes from the replicas themselves: every version of
//! every key, with its commit timestamp and writer, from the most advanced
//! replica of each shard. Against it:
//!
//! 1. **Audits** saw the exact total (checked as they ran; failures kept).
//! 2. **Outcomes**: every acknowledged commit wrote every key it wrote, at
//!    its commit timestamp; nothing aborted wrote anything; a transaction
//!    whose outcome is unknown wrote all of its keys or none; every version
//!    has a writer the clients know.
//! 3. **Snapshots** (R1–R4): every read and scan at a coordinated level saw,
//!    for each key, exactly the newest version at or below its read
//!    timestamp.
//! 4. **Dependency cycles** (Adya): over committed transactions, edges
//!    ww (consecutive versions), wr (version read), rw (the read version's
//!    successor), rt (one ended before the other began). Forbidden: any
//!    cycle without rw edges (G0, G1c, or a real-time violation); any cycle
//!    with exactly one rw edge (G-single: forbidden at SI and up); any cycle
//!    whose rw edges all come from serializable readers.
//! 5. **Locks**: no replica holds a lock once recovery had time to run.
//! 6. **Convergence**: replicas of a shard at the same applied slot hold
//!    the same state.
//! 7. **The predicate limit** held for every pair of flag ranges.
//! 8. **Liveness**: commits were acknowledged once the faults stopped.
//! 9. **Last writer wins** (R17): along every key's history the origins
//!    never go back; an acknowledged tag write is in its keys' histories
//!    unless a write with a newer origin is; a tag read back through its
//!    writer's gateway shows that write or one newer by origin, never an
//!    aborted one. A write committed at an outbox is acknowledged before
//!    it reaches its home, so it has no real-time edges out of it in 4.
//! 10. **No fractured read** (Monotonic Atomic View): once a watch saw a
//!    tag written by a transaction, every later read (or the same scan) of
//!    another tag that transaction wrote shows its write or one newer by
//!    origin; and a watch never reads an aborted write.
//! 11. **Homes** (R18): every homed account, note and tag lives at exactly
//!     one home shard, the one its locality key's directory entry names,
//!     with its last write; no other home shard shows it. The versions a
//!     rehome moved are left out of the histories above (the same history
//!     twice), so every other check sees through the moves.

use std::collections::{BTreeMap, HashMap};

use geodb_storage::{ColumnFamily, Engine, mvcc};
use geodb_txn::{Isolation, Timestamp};

use super::workload::{FLAG_PAIRS, FLAGS_PER_PAIR_MAX, GENESIS, Kind, Outcome, TxnRecord, flag_ranges};
use super::*;

/// One version in a key's history.
#[derive(Clone, Copy, Debug)]
struct Version {
    ts: Timestamp,
    writer: u64,
    /// Where the write first committed (R17): its outbox entry's
    /// timestamp for a write shipped from an outbox, else `ts`.
    origin: Timestamp,
}

/// MAV: a watch that saw one tag of a transaction sees its other tags, or
/// writes newer by origin, on later reads and within the same scan.
fn check_atomic_views(
    records: &[TxnRecord],
    chains: &BTreeMap<Vec<u8>, Vec<Version>>,
    superseded: &HashMap<(u64, Vec<u8>), Timestamp>,
) -> Result<(), String> {
    let writes: HashMap<u64, &Vec<Vec<u8>>> =
        records.iter().filter(|record| record.kind == Kind::Tag).map(|record| (record.txn.0, &record.writes)).collect();
    // Each writer's origin at each key it is stored at, and at any of them
    // (a write a newer one replaced before it reached its home is stored
    // nowhere: its origin is the commit its client was told of).
    let mut origin_at: HashMap<(u64, &[u8]), Timestamp> = HashMap::new();
    let mut origin_of: HashMap<u64, Timestamp> = records
        .iter()
        .filter_map(|record| match record.outcome {
            Outcome::Committed(ts) if record.kind == Kind::Tag => Some((record.txn.0, ts)),
            _ => None,
        })
        .collect();
    for (key, chain) in chains {
        for version in chain {
            origin_at.insert((version.writer, key.as_slice()), version.origin);
            origin_of.insert(version.writer, version.origin);
        }
    }
    // A shipped write a newer one superseded at its home is kept apart
    // there, with its origin: the only record of it when its client never
    // heard whether it committed (MAV readers may have seen it queued).
    for ((writer, key), origin) in superseded {
        origin_at.entry((*writer, key.as_slice())).or_insert(*origin);
        origin_of.entry(*writer).or_insert(*origin);
    }
    let outcomes: HashMap<u64, &Outcome> = records.iter().map(|record| (record.txn.0, &record.outcome)).collect();
    for record in records.iter().filter(|record| record.kind == Kind::Watch) {
        let mut seen: Vec<u64> = Vec::new();
        for statement in &record.views {
            for (key, writer) in statement {
                let wrong = match outcomes.get(writer) {
                    _ if *writer == GENESIS => None,
                    None => Some("a write no client ran".to_string()),
                    Some(Outcome::Aborted(reason)) => Some(format!("an aborted write (\"{reason}\")")),
                    Some(_) => None,
                };
                if let Some(wrong) = wrong {
                    return Err(format!(
                        "MAV watch {} through {} read {key:?} as written by {writer}: {wrong}",
                        record.txn, record.node
                    ));
                }
            }
            seen.extend(statement.iter().map(|(_, writer)| *writer).filter(|writer| *writer != GENESIS));
            seen.sort_unstable();
            seen.dedup();
            for (key, writer) in statement {
                for required in &seen {
                    if required == writer || !writes.get(required).is_some_and(|keys| keys.contains(key)) {
                        continue;
                    }
                    let Some(&wanted) = origin_at.get(&(*required, key.as_slice())).or(origin_of.get(required)) else {
                        continue;
                    };
                    let found = origin_at.get(&(*writer, key.as_slice())).or(origin_of.get(writer)).copied();
                    if found.is_none_or(|found| (found, *writer) < (wanted, *required)) {
                        return Err(format!(
                            "fractured read: MAV watch {} through {} saw a write of transaction {required} (origin {wanted}), then read {key:?}, which it also wrote, as written by {writer} (origin {found:?}); its reads: {:?}",
                            record.txn, record.node, record.views
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edge {
    WriteWrite,
    WriteRead,
    ReadWrite,
    RealTime,
}

impl World {
    pub(super) fn check(&mut self) -> Result<(), String> {
        let records: Vec<TxnRecord> = self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for record in &records {
            if let Outcome::Aborted(reason) = &record.outcome
                && (reason.starts_with("AUDIT") || reason.starts_with("NOTE"))
            {
                return Err(format!(
                    "{:?} {} at {:?} read {reason}: {record:?}",
                    record.kind, record.txn, record.isolation
                ));
            }
        }
        self.check_convergence()?;
        self.check_locks()?;
        self.check_outboxes()?;
        let chains = self.final_versions()?;
        self.check_homes(&chains)?;
        check_last_writer_wins(&chains)?;
        let committed = self.check_outcomes(&records, &chains)?;
        self.check_readbacks(&records)?;
        let superseded = self.superseded_origins(&records)?;
        check_atomic_views(&records, &chains, &superseded)?;
        check_flags(&chains)?;
        let quiet_commits = records
            .iter()
            .filter(|record| {
                matches!(record.outcome, Outcome::Committed(_)) && record.end_us > Some(self.options.fault_phase_us)
            })
            .count();
        if quiet_commits == 0 {
            return Err("no transaction committed once the faults stopped (liveness)".into());
        }
        check_snapshots(&records, &committed, &chains)?;
        let queued: std::collections::HashSet<u64> =
            records.iter().filter(|record| self.went_through_outbox(record)).map(|record| record.txn.0).collect();
        self.report.edges = check_cycles(&records, &committed, &chains, &queued)?;
        for record in &records {
            match record.outcome {
                Outcome::Committed(_) => self.report.committed += 1,
                Outcome::Aborted(_) => self.report.aborted += 1,
                Outcome::Pending | Outcome::Unknown(_) => self.report.unknown += 1,
            }
            if record.kind == Kind::Audit && matches!(record.outcome, Outcome::Committed(_)) {
                self.report.audits += 1;
            }
        }
        Ok(())
    }

    /// The replica of each shard that applied the most slots.
    fn most_advanced(&self, shard: ShardId) -> Option<Arc<Shard>> {
        self.nodes
            .values()
            .filter(|node| node.up)
            .filter_map(|node| node.host.shard(shard).cloned())
            .max_by_key(|replica| replica.applied_slot())
    }

    /// The origin of every tag write kept apart at a home shard (R17: a
    /// newer write of its key arrived first), by writer and key.
    fn superseded_origins(&self, records: &[TxnRecord]) -> Result<HashMap<(u64, Vec<u8>), Timestamp>, String> {
        let keys: std::collections::BTreeSet<&Vec<u8>> =
            records.iter().filter(|record| record.kind == Kind::Tag).flat_map(|record| &record.writes).collect();
        let mut origins = HashMap::new();
        for spec in &self.shards {
            let Some(replica) = self.most_advanced(spec.id) else { continue };
            for key in &keys {
                for version in replica.superseded(key).map_err(|e| e.to_string())? {
                    origins.insert((version.txn.0, (*key).clone()), version.origin);
                }
            }
        }
        Ok(origins)
    }

    /// Replicas of a shard that applied the same slots hold the same state,
    /// as reads at or above both their collection thresholds see it; and
    /// every replica's newest version of each key is the one its `latest`
    /// family names (collection never takes it).
    fn check_convergence(&self) -> Result<(), String> {
        for spec in &self.shards {
            let mut by_slot: BTreeMap<u64, Vec<(NodeId, Arc<Shard>)>> = BTreeMap::new();
            for (node, sim_node) in self.nodes.iter().filter(|(_, node)| node.up) {
                let Some(replica) = sim_node.host.shard(spec.id) else { continue };
                check_newest_is_latest(replica.engine().as_ref())
                    .map_err(|message| format!("shard {}: replica {node}: {message}", spec.id))?;
                by_slot.entry(replica.applied_slot()).or_default().push((*node, replica.clone()));
            }
            for (slot, replicas) in by_slot {
                for (i, (node, replica)) in replicas.iter().enumerate() {
                    for (other, other_replica) in &replicas[i + 1..] {
                        let horizon = replica.gc_threshold().max(other_replica.gc_threshold());
                        if dump(replica.engine().as_ref(), horizon)? != dump(other_replica.engine().as_ref(), horizon)?
                        {
                            return Err(format!(
                                "shard {}: replicas {node} and {other} differ at applied slot {slot} (compared above {horizon})",
                                spec.id
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_locks(&self) -> Result<(), String> {
        for (node, sim_node) in self.nodes.iter().filter(|(_, node)| node.up) {
            for replica in sim_node.host.shards() {
                if replica.holds_locks() {
                    let stats = replica.stats();
                    let replicas: Vec<String> = self
                        .nodes
                        .iter()
                        .filter_map(|(id, other)| {
                            let shard = other.host.shard(replica.id())?;
                            let status = other.host.status().remove(&GroupId(replica.id()))?;
                            Some(format!(
                                "{id}: up {} applied {} chosen {} locks {} {:?} leader {:?}",
                                other.up,
                                shard.applied_slot(),
                                status.chosen,
                                shard.holds_locks(),
                                status.role,
                                status.leader
                            ))
                        })
                        .collect();
                    return Err(format!(
                        "{node}: shard {} still holds locks after recovery ({} prepared; stale: {:?}; holders: {:?}); replicas: {}",
                        replica.id(),
                        stats.prepared,
                        replica.stale_prepared(u64::MAX),
                        replica.lock_holders(),
                        replicas.join("; ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every key's versions, oldest first, as the clients wrote them: the
    /// directory of homes and the residence records are left out (written
    /// by homes' creations and rehomes, which no client records), and so
    /// are the versions a rehome moved (a delete at the old home and the
    /// moved version, with its writer, at the new one, at the rehome's
    /// timestamp there: the same history, which `check_homes` checks).
    fn final_versions(&self) -> Result<BTreeMap<Vec<u8>, Vec<Version>>, String> {
        let mut chains: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
        for spec in &self.shards {
            let replica = self.most_advanced(spec.id).ok_or(format!("shard {}: no replica is up", spec.id))?;
            let mut versions = mvcc::all_versions(replica.engine().as_ref()).map_err(|e| e.to_string())?;
            // And what collection removed, at any replica of the shard.
            let held: std::collections::HashSet<(Vec<u8>, Timestamp)> =
                versions.iter().map(|(key, version)| (key.clone(), version.ts)).collect();
            let collected = self.collected.borrow();
            for ((_, key, ts), version) in collected
                .range((spec.id, Vec::new(), Timestamp::ZERO)..)
                .take_while(|((shard, _, _), _)| *shard == spec.id)
            {
                if !held.contains(&(key.clone(), *ts)) {
                    versions.push((key.clone(), version.clone()));
                }
            }
            // A rehome writes the residence record of its locality key at
            // both shards, at its commit timestamp.
            let rehomes: std::collections::HashSet<(u8, Timestamp)> = versions
                .iter()
                .filter_map(|(key, version)| {
                    let locality = key.strip_prefix(workload::RESIDENCE_PREFIX)?.first()?;
                    Some((*locality, version.ts))
                })
                .collect();
            for (key, version) in versions {
                let moved = workload::is_homed(&key) && rehomes.contains(&(key[5], version.ts));
                if moved || key.starts_with(workload::RESIDENCE_PREFIX) || key.starts_with(workload::DIRECTORY_PREFIX) {
                    continue;
                }
                chains.entry(key).or_default().push(Version {
                    ts: version.ts,
                    writer: version.txn.0,
                    origin: version.origin,
                });
            }
        }
        for chain in chains.values_mut() {
            chain.sort_by_key(|version| version.ts);
        }
        Ok(chains)
    }

    /// R18: each homed account and note lives at exactly one home shard,
    /// the one its locality key's directory entry names, holding its last
    /// write there, and no other home shard shows it; an account never
    /// written has no row.
    fn check_homes(&self, chains: &BTreeMap<Vec<u8>, Vec<Version>>) -> Result<(), String> {
        let latest = |shard: ShardId, key: &[u8]| -> Result<Option<geodb_storage::mvcc::Version>, String> {
            let replica = self.most_advanced(shard).ok_or(format!("shard {shard}: no replica is up"))?;
            mvcc::latest_version(replica.engine().as_ref(), key).map_err(|e| e.to_string())
        };
        let mut homes = BTreeMap::new();
        for locality in 0..workload::LOCALITIES {
            let directory = latest(DIRECTORY_SHARD, &[workload::DIRECTORY_PREFIX, &[locality]].concat())?;
            let home = directory
                .and_then(|version| version.value)
                .map(|bytes| geodb_txn::Home::decode(&bytes).ok_or("a directory entry that does not decode"))
                .transpose()?;
            homes.insert(locality, home);
        }
        let mut keys: std::collections::BTreeSet<Vec<u8>> =
            chains.keys().filter(|key| workload::is_homed(key)).cloned().collect();
        keys.extend(workload::accounts().filter(|key| workload::is_homed(key)));
        for key in keys {
            let locality = key[5];
            let home = homes[&locality];
            let home_shard = home.map(|home| HOME_SHARDS[home.region as usize]);
            let last = chains.get(&key).and_then(|chain| chain.last()).map(|version| version.writer);
            for shard in HOME_SHARDS {
                let stored = latest(shard, &key)?.and_then(|version| version.value);
                let writer = stored.as_deref().map(|bytes| workload::decode_value(bytes).1);
                let expected = if Some(shard) == home_shard { last } else { None };
                if writer != expected {
                    return Err(format!(
                        "homed key {key:?} (locality key {locality} homed at {home:?}, shard {home_shard:?}): shard {shard} holds the write of {writer:?}, expected {expected:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks what each client was told against the final state; returns
    /// the transactions that committed (by id) with their commit times.
    fn check_outcomes(
        &mut self,
        records: &[TxnRecord],
        chains: &BTreeMap<Vec<u8>, Vec<Version>>,
    ) -> Result<HashMap<u64, Option<Timestamp>>, String> {
        let mut written: HashMap<u64, Vec<(&Vec<u8>, Timestamp)>> = HashMap::new();
        for (key, chain) in chains {
            for version in chain {
                written.entry(version.writer).or_default().push((key, version.ts));
            }
        }
        let by_id: HashMap<u64, &TxnRecord> = records.iter().map(|record| (record.txn.0, record)).collect();
        for writer in written.keys() {
            if !by_id.contains_key(writer) {
                return Err(format!("a version written by {writer}, which no client ran"));
            }
        }
        let mut committed = HashMap::new();
        for record in records {
            let id = record.txn.0;
            let versions = written.get(&id).map(Vec::as_slice).unwrap_or_default();
            let describe =
                || format!("{} ({:?}, {:?}, writes {:?})", record.txn, record.kind, record.isolation, record.writes);
            match &record.outcome {
                // R16: a note that went through an outbox has a version at
                // each home shard, at that shard's timestamp, once each.
                Outcome::Committed(_) if record.kind == Kind::Note => {
                    for key in &record.writes {
                        if !versions.iter().any(|(written, _)| *written == key) {
                            return Err(format!("acknowledged note {} is missing its write to {key:?}", describe()));
                        }
                    }
                    if versions.len() != record.writes.len() {
                        return Err(format!("{} wrote {versions:?}", describe()));
                    }
                    self.report.notes += 1;
                }
                // R17: a highly available tag write is at each key at its
                // origin, unless a write with a newer origin is there.
                Outcome::Committed(ts) if self.went_through_outbox(record) => {
                    let superseded = check_tag_writes(record, *ts, versions, chains, &describe())?;
                    self.report.tags += 1;
                    self.report.superseded += superseded;
                    committed.insert(id, Some(*ts));
                }
                Outcome::Committed(ts) => {
                    for key in &record.writes {
                        if !versions.iter().any(|(written, at)| *written == key && at == ts) {
                            return Err(format!(
                                "acknowledged commit {} at {ts} is missing its write to {key:?}",
                                describe()
                            ));
                        }
                    }
                    if versions.len() != record.writes.len() {
                        return Err(format!("{} wrote {versions:?}", describe()));
                    }
                    if record.writes.len() > 1
                        && record
                            .writes
                            .iter()
                            .map(|key| self.shard_of(key))
                            .collect::<std::collections::BTreeSet<_>>()
                            .len()
                            > 1
                    {
                        self.report.distributed_commits += 1;
                    }
                    committed.insert(id, Some(*ts));
                }
                Outcome::Aborted(reason) => {
                    if !versions.is_empty() {
                        return Err(format!("{} was answered \"{reason}\" but wrote {versions:?}", describe()));
                    }
                }
                Outcome::Pending | Outcome::Unknown(_) => {
                    if versions.is_empty() {
                        continue;
                    }
                    if self.went_through_outbox(record) {
                        let origin =
                            chains[versions[0].0].iter().find(|version| version.writer == id).map(|v| v.origin);
                        let origin = origin.expect("a version this transaction wrote");
                        check_tag_writes(record, origin, versions, chains, &describe())?;
                        committed.insert(id, None);
                        continue;
                    }
                    let ts = versions[0].1;
                    let complete = record.writes.iter().all(|key| {
                        versions.iter().any(|(k, at)| *k == key && (*at == ts || record.kind == Kind::Note))
                    });
                    if !complete || versions.len() != record.writes.len() {
                        return Err(format!("{} is half applied: {versions:?}", describe()));
                    }
                    committed.insert(id, None);
                }
            }
        }
        Ok(committed)
    }

    /// Whether `record` is a tag write that committed at its gateway's
    /// region's outbox (R16) rather than at its home shards: the router's
    /// choice, from the writer's region and the shards it wrote.
    ///
    /// A write of a homed tag (R18) goes to wherever its key lived then:
    /// the coordinator said where it committed; one whose client never
    /// heard is judged as queued (by origin, which also holds for one
    /// committed at its homes).
    fn went_through_outbox(&self, record: &TxnRecord) -> bool {
        if record.kind != Kind::Tag || !record.isolation.is_highly_available() {
            return false;
        }
        if let Some(at_outbox) = record.at_outbox {
            return at_outbox;
        }
        let router = workload::BankRouter::new(self.nodes[&record.node].region);
        record
            .writes
            .iter()
            .any(|key| workload::is_homed(key) || !geodb_txn::Router::commits_in_region(&router, self.shard_of(key)))
    }

    /// R17: what a tag's writer read back through its own gateway at Read
    /// Committed: its own write or one with a newer origin (the origin of
    /// a committed write is its commit timestamp as acknowledged), never
    /// nothing and never an aborted write. A gateway with no replica of
    /// the key's home shard (none in a real cluster) cannot tell that a
    /// queued write is older than the home's, so only the first two are
    /// judged there.
    fn check_readbacks(&self, records: &[TxnRecord]) -> Result<(), String> {
        let by_id: HashMap<u64, &TxnRecord> = records.iter().map(|record| (record.txn.0, record)).collect();
        for record in records.iter().filter(|record| record.kind == Kind::Tag) {
            let Outcome::Committed(own) = record.outcome else { continue };
            for (key, writer) in &record.readback {
                let seen = by_id.get(writer).map(|writer| &writer.outcome);
                // Every node holds every home shard (a homed tag's too).
                let home_here =
                    workload::is_homed(key) || self.configs.contains_key(&(record.node, GroupId(self.shard_of(key))));
                let wrong = match seen {
                    _ if *writer == record.txn.0 => None,
                    None => Some("nothing, or a write no client ran".to_string()),
                    Some(Outcome::Aborted(reason)) => Some(format!("an aborted write (\"{reason}\")")),
                    Some(Outcome::Committed(origin)) if *origin < own && home_here => {
                        Some(format!("an older write, origin {origin}"))
                    }
                    Some(_) => None,
                };
                if let Some(wrong) = wrong {
                    return Err(format!(
                        "tag {} ({:?}) committed at {own} and read {key:?} back through {} as written by {writer}: {wrong}",
                        record.txn, record.isolation, record.node
                    ));
                }
            }
        }
        Ok(())
    }

    /// R16: once the faults stopped, every outbox shipped all it queued,
    /// and every home shard applied each queue exactly through its end.
    fn check_outboxes(&mut self) -> Result<(), String> {
        for outbox in OUTBOXES {
            let replica = self.most_advanced(outbox).ok_or(format!("outbox {outbox}: no replica is up"))?;
            for queue in replica.queues() {
                if queue.shipped != queue.last {
                    return Err(format!(
                        "outbox {outbox} still holds entries {}..={} for shard {} after the faults stopped",
                        queue.shipped + 1,
                        queue.last,
                        queue.dest
                    ));
                }
                let home = self.most_advanced(queue.dest).ok_or(format!("shard {}: no replica is up", queue.dest))?;
                let through = home.delivered_through(outbox);
                if through != queue.last {
                    return Err(format!(
                        "shard {} applied outbox {outbox}'s queue through {through}, which ends at {}",
                        queue.dest, queue.last
                    ));
                }
                self.report.queued += queue.last;
            }
        }
        Ok(())
    }

    fn shard_of(&self, key: &[u8]) -> ShardId {
        workload::BankRouter::shard_of(key)
    }
}

/// A replica's replicated state, for comparing replicas.
/// Every pair of a family a snapshot carries.
type Dump = Vec<(ColumnFamily, Vec<u8>, Vec<u8>)>;

/// A replica's state as reads at or above `horizon` see it: of each key's
/// versions, those above the horizon, the newest at or below it (which no
/// replica's collection takes), and those collection always keeps (writes
/// shipped with named sibling keys); not the replica's own threshold.
/// Replicas collect on their own, so other old versions may differ.
fn dump(engine: &dyn Engine, horizon: Timestamp) -> Result<Dump, String> {
    let mut out = Vec::new();
    for cf in [ColumnFamily::Data, ColumnFamily::Latest, ColumnFamily::Locks] {
        let mut below: Option<Vec<u8>> = None;
        for pair in engine.scan(cf, Bound::Unbounded, Bound::Unbounded, false).map_err(|e| e.to_string())? {
            let (key, value) = pair.map_err(|e| e.to_string())?;
            if cf == ColumnFamily::Locks && key == b"g" {
                continue;
            }
            if cf == ColumnFamily::Data {
                let (user_key, version) = mvcc::decode_version(&key, &value).map_err(|e| e.to_string())?;
                if version.ts <= horizon {
                    // Newest first: the first at or below the horizon stays.
                    let newest_below = below.as_ref() != Some(&user_key);
                    below = Some(user_key);
                    if !newest_below && !geodb_txn::participant::kept(&version) {
                        continue;
                    }
                }
            }
            out.push((cf, key, value));
        }
    }
    Ok(out)
}

/// Every key's newest version in the data family is the one `latest` names.
fn check_newest_is_latest(engine: &dyn Engine) -> Result<(), String> {
    for key in mvcc::keys_in_range(engine, Bound::Unbounded, Bound::Unbounded).map_err(|e| e.to_string())? {
        let latest = mvcc::latest_version(engine, &key).map_err(|e| e.to_string())?;
        let newest = mvcc::versions_of(engine, &key, 1).map_err(|e| e.to_string())?.pop();
        if latest.as_ref().map(|version| version.ts) != newest.as_ref().map(|version| version.ts) {
            return Err(format!("{key:?}: latest names {latest:?}, the newest stored version is {newest:?}"));
        }
    }
    Ok(())
}

/// R17: along each key's history, by commit timestamp, origins never go
/// back (a write never replaced a version with a newer origin).
fn check_last_writer_wins(chains: &BTreeMap<Vec<u8>, Vec<Version>>) -> Result<(), String> {
    for (key, chain) in chains {
        for pair in chain.windows(2) {
            if pair[1].origin < pair[0].origin {
                return Err(format!(
                    "{key:?}: the write of {} (origin {}) replaced that of {} (origin {}), newer by origin: last writer wins is broken; history {chain:?}",
                    pair[1].writer, pair[1].origin, pair[0].writer, pair[0].origin
                ));
            }
        }
    }
    Ok(())
}

/// A highly available tag write with origin `origin` (R17): at most one
/// version per key, each at that origin, and every key it has none of holds
/// a version with a newer origin. Returns how many of its writes lost so.
fn check_tag_writes(
    record: &TxnRecord,
    origin: Timestamp,
    versions: &[(&Vec<u8>, Timestamp)],
    chains: &BTreeMap<Vec<u8>, Vec<Version>>,
    describe: &str,
) -> Result<u64, String> {
    let mut superseded = 0;
    for key in &record.writes {
        let chain = chains.get(key).map(Vec::as_slice).unwrap_or_default();
        let mine: Vec<&Version> = chain.iter().filter(|version| version.writer == record.txn.0).collect();
        let newest = chain.last().map(|version| version.origin);
        let fine = match mine.as_slice() {
            [version] => version.origin == origin,
            [] => {
                superseded += 1;
                newest.is_some_and(|newest| newest > origin)
            }
            _ => false,
        };
        if !fine {
            return Err(format!(
                "{describe} with origin {origin}: its write to {key:?} is neither there once at that origin nor replaced by a newer origin; history {chain:?}"
            ));
        }
    }
    if versions.len() + superseded as usize != record.writes.len() {
        return Err(format!("{describe} wrote {versions:?}"));
    }
    Ok(superseded)
}

fn check_flags(chains: &BTreeMap<Vec<u8>, Vec<Version>>) -> Result<(), String> {
    let ranges: BTreeMap<ShardId, geodb_txn::protocol::KeyRange> = flag_ranges().collect();
    for (left, right) in FLAG_PAIRS {
        let count = chains
            .keys()
            .filter(|key| {
                geodb_txn::conflict::range_contains(&ranges[&left], key)
                    || geodb_txn::conflict::range_contains(&ranges[&right], key)
            })
            .count();
        if count > FLAGS_PER_PAIR_MAX {
            return Err(format!(
                "shards {left} and {right} hold {count} flags, more than the {FLAGS_PER_PAIR_MAX} serializable inserts allow"
            ));
        }
    }
    Ok(())
}

/// What each committed coordinated transaction read, per key: the writer of
/// the version it saw ([`GENESIS`] for none), from its point reads and its
/// scans (a key of a scanned range it did not find: none).
fn observations<'a>(
    record: &'a TxnRecord,
    chains: &'a BTreeMap<Vec<u8>, Vec<Version>>,
) -> impl Iterator<Item = (&'a Vec<u8>, u64)> + 'a {
    let points = record.reads.iter().map(|(key, writer)| (key, *writer));
    let scanned = record.scans.iter().flat_map(move |(range, found)| {
        chains.keys().filter(move |key| geodb_txn::conflict::range_contains(range, key)).map(move |key| {
            let writer = found.iter().find(|(k, _)| k == key).map_or(GENESIS, |(_, writer)| *writer);
            (key, writer)
        })
    });
    points.chain(scanned)
}

/// The index in `chain` of the version `writer` wrote (`None` for
/// [`GENESIS`], the state before the first version).
fn position(chain: &[Version], writer: u64) -> Result<Option<usize>, ()> {
    if writer == GENESIS {
        return Ok(None);
    }
    chain.iter().position(|version| version.writer == writer).map(Some).ok_or(())
}

fn check_snapshots(
    records: &[TxnRecord],
    committed: &HashMap<u64, Option<Timestamp>>,
    chains: &BTreeMap<Vec<u8>, Vec<Version>>,
) -> Result<(), String> {
    let empty = Vec::new();
    for record in records.iter().filter(|record| committed.contains_key(&record.txn.0)) {
        for (key, writer) in observations(record, chains) {
            let chain = chains.get(key).unwrap_or(&empty);
            let Ok(at) = position(chain, writer) else {
                return Err(format!("{} read {key:?} as written by {writer}, which never committed it", record.txn));
            };
            // The newest version at or below the read timestamp, ignoring
            // the transaction's own (later) write.
            let visible =
                chain.iter().rposition(|version| version.ts <= record.read_ts && version.writer != record.txn.0);
            if at != visible {
                let writer = visible.and_then(|index| records.iter().find(|other| other.txn.0 == chain[index].writer));
                return Err(format!(
                    "{} ({:?}) read {key:?} at {} and saw {:?}, but the newest version at or below it is {:?} (versions {chain:?}); reader {record:?}; writer {writer:?}",
                    record.txn,
                    record.isolation,
                    record.read_ts,
                    at.map(|index| chain[index]),
                    visible.map(|index| chain[index])
                ));
            }
        }
    }
    Ok(())
}

/// Builds the dependency graph and looks for forbidden cycles; returns
/// the number of edges.
fn check_cycles(
    records: &[TxnRecord],
    committed: &HashMap<u64, Option<Timestamp>>,
    chains: &BTreeMap<Vec<u8>, Vec<Version>>,
    queued: &std::collections::HashSet<u64>,
) -> Result<u64, String> {
    let members: Vec<&TxnRecord> = records.iter().filter(|record| committed.contains_key(&record.txn.0)).collect();
    let index: HashMap<u64, usize> = members.iter().enumerate().map(|(i, record)| (record.txn.0, i)).collect();
    let n = members.len();
    let mut edges: Vec<(usize, usize, Edge)> = Vec::new();
    for chain in chains.values() {
        for pair in chain.windows(2) {
            if let (Some(&a), Some(&b)) = (index.get(&pair[0].writer), index.get(&pair[1].writer)) {
                edges.push((a, b, Edge::WriteWrite));
            }
        }
    }
    let empty = Vec::new();
    for (reader, record) in members.iter().enumerate() {
        for (key, writer) in observations(record, chains) {
            let chain = chains.get(key).unwrap_or(&empty);
            let at = position(chain, writer).map_err(|()| format!("{} read a version never written", record.txn))?;
            if let Some(&source) = index.get(&writer).filter(|source| **source != reader) {
                edges.push((source, reader, Edge::WriteRead));
            }
            let next = at.map_or(0, |at| at + 1);
            if let Some(version) = chain.get(next).filter(|version| version.writer != record.txn.0)
                && let Some(&target) = index.get(&version.writer)
            {
                edges.push((reader, target, Edge::ReadWrite));
            }
        }
    }
    // Real time: only transactions whose end is known (acknowledged).
    for (a, first) in members.iter().enumerate() {
        let Some(end) =
            first.end_us.filter(|_| matches!(first.outcome, Outcome::Committed(_)) && !queued.contains(&first.txn.0))
        else {
            continue;
        };
        for (b, second) in members.iter().enumerate() {
            if a != b && end < second.begin_us {
                edges.push((a, b, Edge::RealTime));
            }
        }
    }
    let describe = |cycle: &[(usize, usize, Edge)]| {
        cycle
            .iter()
            .map(|(a, b, edge)| {
                let (first, second) = (members[*a], members[*b]);
                format!(
                    "{}({:?} {:?} {}..{:?}) -{edge:?}-> {}",
                    first.txn, first.kind, first.isolation, first.begin_us, first.end_us, second.txn
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    // 1. No cycle without anti-dependencies.
    let plain: Vec<(usize, usize, Edge)> =
        edges.iter().copied().filter(|(_, _, edge)| *edge != Edge::ReadWrite).collect();
    if let Some(cycle) = find_cycle(n, &plain) {
        return Err(format!(
            "a cycle of write and real-time dependencies (G0/G1c or real-time order): {}",
            describe(&cycle)
        ));
    }
    // 2. No cycle with exactly one anti-dependency (G-single).
    let reach = reachability(n, &plain);
    for &(reader, writer, edge) in &edges {
        if edge == Edge::ReadWrite && reach[writer][reader / 64] & (1 << (reader % 64)) != 0 {
            let mut path = find_path(n, &plain, writer, reader).expect("reachable");
            path.insert(0, (reader, writer, Edge::ReadWrite));
            return Err(format!("a cycle with one anti-dependency (G-single): {}", describe(&path)));
        }
    }
    // 3. No cycle whose anti-dependencies all come from serializable readers.
    let serializable: Vec<(usize, usize, Edge)> = edges
        .iter()
        .copied()
        .filter(|(reader, _, edge)| *edge != Edge::ReadWrite || members[*reader].isolation == Isolation::Serializable)
        .collect();
    if let Some(cycle) = find_cycle(n, &serializable) {
        return Err(format!("a cycle among serializable transactions (G2): {}", describe(&cycle)));
    }
    Ok(edges.len() as u64)
}

fn adjacency(n: usize, edges: &[(usize, usize, Edge)]) -> Vec<Vec<(usize, Edge)>> {
    let mut out = vec![Vec::new(); n];
    for &(a, b, edge) in edges {
        out[a].push((b, edge));
    }
    out
}

/// A cycle, as its edges, if the graph has one (iterative depth-first
/// search with colours).
fn find_cycle(n: usize, edges: &[(usize, usize, Edge)]) -> Option<Vec<(usize, usize, Edge)>> {
    let next = adjacency(n, edges);
    let mut colour = vec![0u8; n];
    let mut parent: Vec<Option<(usize, Edge)>> = vec![None; n];
    for root in 0..n {
        if colour[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        colour[root] = 1;
        while let Some((node, child)) = stack.pop() {
            if child < next[node].len() {
                stack.push((node, child + 1));
                let (to, edge) = next[node][child];
                match colour[to] {
                    0 => {
                        colour[to] = 1;
                        parent[to] = Some((node, edge));
                        stack.push((to, 0));
                    }
                    1 => {
                        let mut cycle = vec![(node, to, edge)];
                        let mut at = node;
                        while at != to {
                            let (from, edge) = parent[at].expect("on the stack");
                            cycle.push((from, at, edge));
                            at = from;
                        }
                        cycle.reverse();
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
            }
        }
    }
    None
}

/// For each node of an acyclic graph, the set of nodes it reaches (bitsets).
fn reachability(n: usize, edges: &[(usize, usize, Edge)]) -> Vec<Vec<u64>> {
    let next = adjacency(n, edges);
    let words = n.div_ceil(64).max(1);
    // Reverse topological order by depth-first finishing times.
    let mut order = Vec::with_capacity(n);
    let mut seen = vec![false; n];
    for root in 0..n {
        if seen[root] {
            continue;
        }
        seen[root] = true;
        let mut stack = vec![(root, 0usize)];
        while let Some((node, child)) = stack.pop() {
            if child < next[node].len() {
                stack.push((node, child + 1));
                let to = next[node][child].0;
                if !seen[to] {
                    seen[to] = true;
                    stack.push((to, 0));
                }
            } else {
                order.push(node);
            }
        }
    }
    let mut reach = vec![vec![0u64; words]; n];
    for &node in &order {
        let mut bits = vec![0u64; words];
        for &(to, _) in &next[node] {
            bits[to / 64] |= 1 << (to % 64);
            for (word, other) in bits.iter_mut().zip(&reach[to]) {
                *word |= other;
            }
        }
        reach[node] = bits;
    }
    reach
}

/// A path from `from` to `to`, as its edges (breadth-first).
fn find_path(n: usize, edges: &[(usize, usize, Edge)], from: usize, to: usize) -> Option<Vec<(usize, usize, Edge)>> {
    let next = adjacency(n, edges);
    let mut parent: Vec<Option<(usize, Edge)>> = vec![None; n];
    let mut queue = std::collections::VecDeque::from([from]);
    let mut seen = vec![false; n];
    seen[from] = true;
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = Vec::new();
            let mut at = to;
            while at != from {
                let (previous, edge) = parent[at].expect("visited");
                path.push((previous, at, edge));
                at = previous;
            }
            path.reverse();
            return Some(path);
        }
        for &(next_node, edge) in &next[node] {
            if !seen[next_node] {
                seen[next_node] = true;
                parent[next_node] = Some((node, edge));
                queue.push_back(next_node);
            }
        }
    }
    None
}
