//! Backup and restore (`POST /v1/admin/backup`, `POST /v1/admin/restore`;
//! `docs/design/storage.md`, "Backup and restore").
//!
//! A backup reads the whole database in one snapshot-isolation
//! transaction, so at one timestamp across every shard of every region,
//! and writes into a new directory on the node that runs it:
//!
//! ```text
//!   manifest.json          format, the snapshot's timestamp, the source's regions,
//!                          and for each table its DDL, columns and rows file
//!   homes.rows             the directory of homes: (locality key, region) rows
//!   tables/<n>.rows        the rows of the n-th table, in primary-key order
//! ```
//!
//! A `.rows` file is a sequence of frames, each a big-endian `u32` length
//! and a row as the storage layer encodes it (`geodb_storage::value`), so
//! every value comes back exactly. The manifest, written last (through a
//! temporary file and a rename), names each file's frame count, size and
//! SHA-256: a directory without one is not a backup.
//!
//! A restore checks every file against the manifest before it writes
//! anything, refuses a database that has tables, then runs each table's
//! DDL, homes each locality key in its region (a cluster's directory), and
//! inserts the rows in transactions of [`RESTORE_BATCH_ROWS`], retrying
//! those that lose to a conflict or an election.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use geodb_sql::Table;
use geodb_sql::backup::{self as sql_backup};
use geodb_storage::Value;
use geodb_storage::value::encode_row;
use geodb_txn::Isolation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::exec::{Statement, run_transaction};
use crate::http::ApiError;
use crate::node::Node;

/// The format this version writes and reads.
pub const FORMAT: &str = "geodb-backup/1";
const MANIFEST: &str = "manifest.json";
/// Present while a backup writes into its directory.
const CLAIM: &str = ".backup-in-progress";
const HOMES_FILE: &str = "homes.rows";
const TABLES_DIR: &str = "tables";
/// Rows (or homes) one scan of a backup reads, at most...
const PAGE: usize = 1_000;
/// ...and in the first page of a table, before its rows' size is known
/// (rows of up to 4 MiB, the largest a statement takes, stay within the
/// transport's 64 MiB frames).
const PAGE_FIRST: usize = 8;
/// ...and about this many bytes of them from each shard the scan spans
/// (far below the transport's frame limit).
const PAGE_BYTES: usize = 4 << 20;
/// Rows one transaction of a restore inserts, at most...
pub const RESTORE_BATCH_ROWS: usize = 200;
/// ...and about this many bytes of them.
const RESTORE_BATCH_BYTES: usize = 1 << 20;
/// Keys one transaction of a restore homes.
const HOMES_BATCH: usize = 500;
/// Attempts at one transaction of a restore that lost to a conflict.
const ATTEMPTS_MAX: u32 = 30;
/// The largest frame a restore accepts (a row is far smaller: the
/// request and value limits bound it).
const FRAME_BYTES_MAX: u32 = 64 << 20;

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The snapshot's HLC timestamp, as `/v1/cluster` shows timestamps.
    pub timestamp: String,
    /// When the backup started, by the node's clock (RFC 3339).
    pub started_at: String,
    /// The source cluster's regions.
    pub regions: Vec<String>,
    pub tables: Vec<TableEntry>,
    pub homes: FileEntry,
}

/// One table of a backup.
#[derive(Debug, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub locality: String,
    pub columns: Vec<ColumnEntry>,
    /// The statements that make the table again (`CREATE TABLE`, then
    /// its indexes).
    pub ddl: Vec<String>,
    pub rows: FileEntry,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub not_null: bool,
}

/// A `.rows` file: its path in the backup, frames, bytes and SHA-256.
#[derive(Debug, Serialize, Deserialize)]
pub struct FileEntry {
    pub file: String,
    pub count: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// What a backup or a restore did (the endpoints' answer).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub dir: String,
    pub timestamp: String,
    pub tables: usize,
    pub rows: u64,
    pub homes: u64,
    pub bytes: u64,
    pub ms: f64,
}

fn columns_of(table: &Table) -> Vec<ColumnEntry> {
    columns_of_made(&table.columns)
}

fn columns_of_made(columns: &[geodb_sql::catalog::Column]) -> Vec<ColumnEntry> {
    columns
        .iter()
        .map(|column| ColumnEntry { name: column.name.clone(), ty: column.ty.sql_name(), not_null: column.not_null })
        .collect()
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> ApiError {
    ApiError::new("58030", format!("{what} {}: {error}", path.display()))
}

/// The directory a request names: an absolute path (relative ones would
/// depend on where the node was started).
pub fn directory(named: &str) -> Result<PathBuf, ApiError> {
    let path = PathBuf::from(named);
    if named.is_empty() || !path.is_absolute() {
        return Err(ApiError::new("22023", format!("\"dir\" must be an absolute path on the node, not \"{named}\"")));
    }
    Ok(path)
}

/// Writes frames into a file, hashing and counting them.
struct FrameWriter {
    path: PathBuf,
    name: String,
    out: BufWriter<File>,
    hash: Sha256,
    count: u64,
    bytes: u64,
}

impl FrameWriter {
    fn create(root: &Path, name: &str) -> Result<FrameWriter, ApiError> {
        let path = root.join(name);
        let file = File::create_new(&path).map_err(|e| io_error("cannot create", &path, e))?;
        Ok(FrameWriter {
            path,
            name: name.to_string(),
            out: BufWriter::new(file),
            hash: Sha256::new(),
            count: 0,
            bytes: 0,
        })
    }

    fn write(&mut self, frame: &[u8]) -> Result<(), ApiError> {
        let length = u32::try_from(frame.len())
            .ok()
            .filter(|length| *length <= FRAME_BYTES_MAX)
            .ok_or_else(|| ApiError::new("54000", format!("a row of {} bytes is too large to back up", frame.len())))?;
        let header = length.to_be_bytes();
        for part in [&header[..], frame] {
            self.out.write_all(part).map_err(|e| io_error("cannot write", &self.path, e))?;
            self.hash.update(part);
        }
        self.count += 1;
        self.bytes += 4 + frame.len() as u64;
        Ok(())
    }

    /// Flushes and syncs the file; its entry for the manifest.
    fn finish(self) -> Result<FileEntry, ApiError> {
        let file = self.out.into_inner().map_err(|e| io_error("cannot write", &self.path, e.into_error()))?;
        file.sync_all().map_err(|e| io_error("cannot sync", &self.path, e))?;
        Ok(FileEntry { file: self.name, count: self.count, bytes: self.bytes, sha256: hex(&self.hash.finalize()) })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Reads the frames of a `.rows` file.
struct FrameReader {
    path: PathBuf,
    input: BufReader<File>,
    hash: Sha256,
    count: u64,
    bytes: u64,
}

impl FrameReader {
    fn open(root: &Path, entry: &FileEntry) -> Result<FrameReader, ApiError> {
        // Only names a backup writes: never a path out of the directory.
        let plain = entry.file.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        if !plain || entry.file.contains('\\') {
            return Err(corrupt(root, format!("the manifest names the file \"{}\"", entry.file)));
        }
        let path = root.join(&entry.file);
        let file = File::open(&path).map_err(|e| io_error("cannot open", &path, e))?;
        Ok(FrameReader { path, input: BufReader::new(file), hash: Sha256::new(), count: 0, bytes: 0 })
    }

    /// The next frame, `None` at the end of the file.
    fn next(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        let mut header = [0u8; 4];
        match self.input.read(&mut header[..1]) {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(io_error("cannot read", &self.path, e)),
        }
        self.input.read_exact(&mut header[1..]).map_err(|e| self.truncated(e))?;
        let length = u32::from_be_bytes(header);
        if length > FRAME_BYTES_MAX {
            return Err(corrupt(&self.path, format!("a frame of {length} bytes")));
        }
        let mut frame = vec![0u8; length as usize];
        self.input.read_exact(&mut frame).map_err(|e| self.truncated(e))?;
        self.hash.update(header);
        self.hash.update(&frame);
        self.count += 1;
        self.bytes += 4 + u64::from(length);
        Ok(Some(frame))
    }

    fn truncated(&self, error: std::io::Error) -> ApiError {
        if error.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt(&self.path, "it ends inside a frame".into())
        } else {
            io_error("cannot read", &self.path, error)
        }
    }

    /// Whether the frames read so far are the whole file `entry` names.
    fn finish(self, entry: &FileEntry) -> Result<(), ApiError> {
        let sha256 = hex(&self.hash.finalize());
        if (self.count, self.bytes, &sha256) != (entry.count, entry.bytes, &entry.sha256) {
            return Err(corrupt(
                &self.path,
                format!(
                    "{} frames, {} bytes, SHA-256 {sha256}; the manifest says {}, {}, {}",
                    self.count, self.bytes, entry.count, entry.bytes, entry.sha256
                ),
            ));
        }
        Ok(())
    }
}

/// Reads every frame of the file `entry` names, handing each to `each`,
/// then checks the file against `entry` (frames, bytes, SHA-256): a file
/// changed since it was checked fails here, before the caller uses what
/// it read after its last frame.
fn read_frames(
    root: &Path,
    entry: &FileEntry,
    mut each: impl FnMut(&Path, Vec<u8>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut reader = FrameReader::open(root, entry)?;
    while let Some(frame) = reader.next()? {
        each(&reader.path, frame)?;
    }
    reader.finish(entry)
}

/// `XX001` (data corrupted): a backup file is not what its manifest says.
fn corrupt(path: &Path, what: String) -> ApiError {
    ApiError::new("XX001", format!("backup file {} is damaged: {what}", path.display()))
}

/// The source's regions: the cluster's, or the single node's.
fn regions_of(node: &Node) -> Vec<String> {
    match &node.cluster {
        Some(cluster) => cluster.map.regions.iter().map(|region| region.0.clone()).collect(),
        None => vec![node.config.region.clone()],
    }
}

/// Takes a backup of the whole database into `dir` (absolute; it must not
/// exist, or be empty): one snapshot transaction reads every table and
/// the directory of homes at one timestamp. A backup that fails removes
/// what it wrote.
pub fn backup(node: &Node, dir: &Path) -> Result<Summary, ApiError> {
    let created = prepare_directory(dir)?;
    // Claimed by a marker only one backup can create: a second backup into
    // the same directory is refused, and never removes this one's files.
    let marker = dir.join(CLAIM);
    if let Err(e) = File::create_new(&marker) {
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            ApiError::new("55000", format!("another backup is being written into {}", dir.display()))
        } else {
            io_error("cannot create", &marker, e)
        });
    }
    let outcome = write_backup(node, dir);
    if outcome.is_err() {
        // The manifest first: without it nothing here passes for a backup.
        for name in [MANIFEST, "manifest.json.partial", HOMES_FILE, TABLES_DIR] {
            let path = dir.join(name);
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }
    let _ = std::fs::remove_file(&marker);
    if outcome.is_err() && created {
        let _ = std::fs::remove_dir(dir);
    }
    outcome
}

fn write_backup(node: &Node, dir: &Path) -> Result<Summary, ApiError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let tables_dir = dir.join(TABLES_DIR);
    std::fs::create_dir(&tables_dir).map_err(|e| io_error("cannot create", &tables_dir, e))?;
    let mut txn = node.txns.begin(Isolation::Snapshot).map_err(geodb_sql::Error::from)?;
    let timestamp = txn.read_ts().to_string();
    let tables = sql_backup::tables_at(&mut txn)?;
    let mut entries = Vec::with_capacity(tables.len());
    let mut rows = 0;
    for (n, table) in tables.iter().enumerate() {
        let mut file = FrameWriter::create(dir, &format!("{TABLES_DIR}/{n:04}.rows"))?;
        let mut after: Option<Vec<u8>> = None;
        // Each shard a page spans answers up to `page` rows: the first
        // page is small enough for rows of the largest size a statement
        // takes, later ones keep near PAGE_BYTES for the largest row seen.
        let mut page = PAGE_FIRST;
        let mut largest = 0;
        loop {
            let read = sql_backup::rows_after(&mut txn, table, after.as_deref(), page)?;
            for (_, row) in &read.rows {
                file.write(row)?;
                largest = largest.max(row.len());
            }
            match read.next {
                Some(key) => after = Some(key),
                None => break,
            }
            page = (PAGE_BYTES / largest.max(1)).clamp(1, PAGE);
        }
        let file = file.finish()?;
        rows += file.count;
        entries.push(TableEntry {
            name: table.name.clone(),
            locality: table.locality.name().to_string(),
            columns: columns_of(table),
            ddl: sql_backup::create_statements(table),
            rows: file,
        });
    }
    let homes = backup_homes(node, &mut txn, dir)?;
    txn.rollback();
    let manifest =
        Manifest { format: FORMAT.into(), timestamp, started_at, regions: regions_of(node), tables: entries, homes };
    let bytes = manifest.tables.iter().map(|table| table.rows.bytes).sum::<u64>() + manifest.homes.bytes;
    // The files' names are durable before the manifest that names them.
    sync_directory(&tables_dir)?;
    sync_directory(dir)?;
    write_manifest(dir, &manifest)?;
    Ok(Summary {
        dir: dir.display().to_string(),
        timestamp: manifest.timestamp,
        tables: manifest.tables.len(),
        rows,
        homes: manifest.homes.count,
        bytes,
        ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn sync_directory(dir: &Path) -> Result<(), ApiError> {
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(|e| io_error("cannot sync", dir, e))
}

/// Creates `dir` (answering `true`), or takes it if it exists and is empty.
fn prepare_directory(dir: &Path) -> Result<bool, ApiError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ApiError::new(
                    "22023",
                    format!("{} is not empty: a backup goes into a new or empty directory", dir.display()),
                ));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_directory(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(ApiError::new(
            "22023",
            format!("{} is a file: a backup goes into a new or empty directory", dir.display()),
        )),
        Err(e) => Err(io_error("cannot read", dir, e)),
    }
}

/// The directory of homes at `txn`'s snapshot, as (key, region) rows.
fn backup_homes(node: &Node, txn: &mut geodb_txn::Transaction, dir: &Path) -> Result<FileEntry, ApiError> {
    let regions = regions_of(node);
    let mut file = FrameWriter::create(dir, HOMES_FILE)?;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = sql_backup::homes_after(txn, after.as_deref(), PAGE)?;
        for entry in &page {
            let region = regions.get(entry.home.region as usize).ok_or_else(|| {
                ApiError::new("XX000", format!("a home in region {} of {}", entry.home.region, regions.len()))
            })?;
            file.write(&encode_row(&[entry.locality.clone(), Value::Text(region.clone())]))?;
        }
        match page.last() {
            Some(entry) if page.len() == PAGE => after = Some(entry.key.clone()),
            _ => break,
        }
    }
    file.finish()
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ApiError> {
    let text = serde_json::to_vec_pretty(manifest).map_err(|e| ApiError::new("XX000", e.to_string()))?;
    let partial = dir.join(format!("{MANIFEST}.partial"));
    let mut file = File::create_new(&partial).map_err(|e| io_error("cannot create", &partial, e))?;
    file.write_all(&text).and_then(|_| file.sync_all()).map_err(|e| io_error("cannot write", &partial, e))?;
    let path = dir.join(MANIFEST);
    std::fs::rename(&partial, &path).map_err(|e| io_error("cannot rename", &partial, e))?;
    // The rename itself is durable once the directory is synced.
    sync_directory(dir)
}

fn read_manifest(dir: &Path) -> Result<Manifest, ApiError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::new(
                "22023",
                format!(
                    "{} holds no backup: {MANIFEST} is missing (a backup that did not finish has none)",
                    dir.display()
                ),
            )
        } else {
            io_error("cannot read", &path, e)
        }
    })?;
    let format = serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|manifest| manifest.get("format").and_then(|format| format.as_str().map(str::to_string)));
    match format {
        Some(format) if format == FORMAT => {}
        Some(format) => {
            return Err(ApiError::new(
                "0A000",
                format!("backup format \"{format}\" is not one this version reads ({FORMAT})"),
            ));
        }
        None => return Err(corrupt(&path, "it is not a backup manifest".into())),
    }
    serde_json::from_slice(&text).map_err(|e| corrupt(&path, e.to_string()))
}

/// Restores the backup in `dir` into this database, which must have no
/// tables. Before anything is written, every file is read and checked
/// against the manifest, every table's DDL checked to make that table,
/// every row checked to fit its columns and every home to name a region
/// of this cluster; then the tables, the homes and the rows are made
/// again. A restore that fails after it began writing says so, with a code
/// that is not retryable: the database then holds part of the backup.
pub fn restore(node: &Arc<Node>, dir: &Path) -> Result<Summary, ApiError> {
    let started = Instant::now();
    let manifest = read_manifest(dir)?;
    let regions = regions_of(node);
    let mut names = std::collections::HashSet::new();
    for table in &manifest.tables {
        let made = sql_backup::check_ddl(&table.name, &table.ddl, &mut names)
            .map_err(|e| corrupt(&dir.join(MANIFEST), ApiError::from(e).message))?;
        if columns_of_made(&made.columns) != table.columns || made.locality.name() != table.locality {
            return Err(corrupt(
                &dir.join(MANIFEST),
                format!("the DDL for table \"{}\" makes other columns or another locality than it lists", table.name),
            ));
        }
        read_frames(dir, &table.rows, |path, frame| {
            let values = geodb_storage::value::decode_row(&frame).map_err(|e| corrupt(path, e.to_string()))?;
            sql_backup::check_row(&made.columns, &values).map_err(|what| corrupt(path, what))
        })?;
    }
    let homes = read_homes(dir, &manifest.homes, &regions)?;
    let existing = existing_tables(node)?;
    if !existing.is_empty() {
        return Err(ApiError::new(
            "55000",
            format!(
                "a restore needs a database without tables; this one has {}: restore into a new cluster",
                existing.join(", ")
            ),
        ));
    }
    let mut progress = Progress::default();
    let outcome = restore_checked(node, dir, &manifest, &homes, &mut progress);
    let summary = |rows, homes| Summary {
        dir: dir.display().to_string(),
        timestamp: manifest.timestamp.clone(),
        tables: manifest.tables.len(),
        rows,
        homes,
        bytes: manifest.tables.iter().map(|table| table.rows.bytes).sum::<u64>() + manifest.homes.bytes,
        ms: started.elapsed().as_secs_f64() * 1e3,
    };
    match outcome {
        Ok(()) => {
            if let Some(cluster) = &node.cluster {
                settle_homes(node, cluster, &homes).map_err(|error| ApiError {
                    message: format!("every row is restored, but a key's home is not the backup's: {}", error.message),
                    retryable: false,
                    ..error
                })?;
            }
            Ok(summary(progress.rows, progress.homes))
        }
        Err(error) => Err(ApiError {
            message: format!(
                "{} (the restore stopped after making {} of {} tables, homing {} keys and inserting {} rows: the database holds part of the backup; restore into a new one)",
                error.message,
                progress.tables,
                manifest.tables.len(),
                progress.homes,
                progress.rows
            ),
            retryable: false,
            ..error
        }),
    }
}

/// How far a restore got.
#[derive(Debug, Default)]
struct Progress {
    tables: usize,
    homes: u64,
    rows: u64,
}

fn restore_checked(
    node: &Arc<Node>,
    dir: &Path,
    manifest: &Manifest,
    homes: &[(Value, u32)],
    progress: &mut Progress,
) -> Result<(), ApiError> {
    for table in &manifest.tables {
        for (n, ddl) in table.ddl.iter().enumerate() {
            retrying(node, &[Statement { sql: ddl.clone(), params: Vec::new() }], None)?;
            progress.tables += usize::from(n == 0);
        }
    }
    let made = made_tables(node, manifest)?;
    if node.cluster.is_some() {
        // Safe to run again whatever an earlier attempt did: an unknown
        // outcome (08007) is retried too.
        again(|| {
            sql_backup::home_keys(&node.txns, homes, HOMES_BATCH, &mut progress.homes)
                .map_err(ApiError::from)
                .map_err(|error| ApiError { retryable: error.retryable || error.code == "08007", ..error })
        })?;
    }
    for (entry, table) in manifest.tables.iter().zip(&made) {
        restore_rows(node, dir, entry, table, progress)?;
    }
    Ok(())
}

/// Automatic rehoming counts the restore's inserts as traffic from this
/// node's region and may have moved keys here meanwhile: each key whose
/// home is not the backup's any more is rehomed back.
fn settle_homes(node: &Node, cluster: &crate::cluster::Cluster, homes: &[(Value, u32)]) -> Result<(), ApiError> {
    let wanted: std::collections::HashMap<Vec<u8>, u32> = homes
        .iter()
        .map(|(key, region)| {
            let mut locality = Vec::new();
            geodb_storage::keycode::encode_value(&mut locality, key);
            (locality, *region)
        })
        .collect();
    let mut txn = node.txns.begin(Isolation::Snapshot).map_err(geodb_sql::Error::from)?;
    let mut moved = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = sql_backup::homes_after(&mut txn, after.as_deref(), PAGE)?;
        for entry in &page {
            let mut locality = Vec::new();
            geodb_storage::keycode::encode_value(&mut locality, &entry.locality);
            if let Some(&region) = wanted.get(&locality)
                && region != entry.home.region
            {
                moved.push((entry.locality.clone(), region));
            }
        }
        match page.last() {
            Some(entry) if page.len() == PAGE => after = Some(entry.key.clone()),
            _ => break,
        }
    }
    txn.rollback();
    for (key, region) in moved {
        tracing::warn!(key = ?key, "a restored key was moved by automatic rehoming during the restore: moving it back");
        crate::rehomer::rehome_one(node, cluster, &geodb_sql::json::value_to_json(&key), &key, region)?;
    }
    Ok(())
}

/// The names of the tables the database has now.
fn existing_tables(node: &Node) -> Result<Vec<String>, ApiError> {
    let mut txn = node.txns.begin(Isolation::Snapshot).map_err(geodb_sql::Error::from)?;
    let tables = sql_backup::tables_at(&mut txn);
    txn.rollback();
    Ok(tables?.iter().map(|table| table.name.clone()).collect())
}

/// The homes of a backup, each region's name turned into this cluster's
/// index of it: a region this cluster lacks is refused before anything is
/// written.
fn read_homes(dir: &Path, entry: &FileEntry, regions: &[String]) -> Result<Vec<(Value, u32)>, ApiError> {
    let mut homes = Vec::new();
    read_frames(dir, entry, |path, frame| {
        let values = geodb_storage::value::decode_row(&frame).map_err(|e| corrupt(path, e.to_string()))?;
        let [key @ (Value::Int(_) | Value::Text(_)), Value::Text(region)] = values.as_slice() else {
            return Err(corrupt(path, "a home that is not a (key, region) pair".into()));
        };
        let index = regions.iter().position(|known| known == region).ok_or_else(|| {
            ApiError::new(
                "22023",
                format!(
                    "the backup homes keys in region \"{region}\", which this cluster lacks (its regions: {})",
                    regions.join(", ")
                ),
            )
        })?;
        homes.push((key.clone(), index as u32));
        Ok(())
    })?;
    let mut seen = std::collections::HashSet::new();
    let mut encoded = |key: &Value| {
        let mut bytes = Vec::new();
        geodb_storage::keycode::encode_value(&mut bytes, key);
        seen.insert(bytes)
    };
    if let Some((key, _)) = homes.iter().find(|(key, _)| !encoded(key)) {
        return Err(corrupt(&dir.join(&entry.file), format!("locality key {key} is homed twice")));
    }
    Ok(homes)
}

/// The restored tables as the catalog now has them, in the manifest's
/// order, each checked to have the columns the backup describes.
fn made_tables(node: &Node, manifest: &Manifest) -> Result<Vec<Arc<Table>>, ApiError> {
    let mut txn = node.txns.begin(Isolation::Snapshot).map_err(geodb_sql::Error::from)?;
    let tables = sql_backup::tables_at(&mut txn);
    txn.rollback();
    let tables = tables?;
    manifest
        .tables
        .iter()
        .map(|entry| {
            let table = tables.iter().find(|table| table.name == entry.name).ok_or_else(|| {
                ApiError::new("XX000", format!("table \"{}\" is missing after its DDL ran", entry.name))
            })?;
            if columns_of(table) != entry.columns || table.locality.name() != entry.locality {
                return Err(ApiError::new(
                    "XX000",
                    format!("table \"{}\" was made with other columns than the backup describes", entry.name),
                ));
            }
            Ok(table.clone())
        })
        .collect()
}

/// Inserts the rows of one table in batches of at most
/// [`RESTORE_BATCH_ROWS`] rows and about [`RESTORE_BATCH_BYTES`].
fn restore_rows(
    node: &Node,
    dir: &Path,
    entry: &TableEntry,
    table: &Table,
    progress: &mut Progress,
) -> Result<(), ApiError> {
    let insert = sql_backup::insert_statement(table);
    let idempotent = format!("{insert} ON CONFLICT DO NOTHING");
    let mut batch: Vec<Statement> = Vec::with_capacity(RESTORE_BATCH_ROWS);
    let mut bytes = 0;
    let flush = |batch: &mut Vec<Statement>, progress: &mut Progress| -> Result<(), ApiError> {
        let again: Vec<Statement> = batch
            .iter()
            .map(|statement| Statement { sql: idempotent.clone(), params: statement.params.clone() })
            .collect();
        progress.rows += retrying(node, batch, Some(&again))?;
        batch.clear();
        Ok(())
    };
    read_frames(dir, &entry.rows, |path, frame| {
        bytes += frame.len();
        let params = sql_backup::row_values(table, &frame).map_err(|e| corrupt(path, e.to_string()))?;
        sql_backup::check_row(&table.columns, &params).map_err(|what| corrupt(path, what))?;
        batch.push(Statement { sql: insert.clone(), params });
        if batch.len() == RESTORE_BATCH_ROWS || bytes >= RESTORE_BATCH_BYTES {
            bytes = 0;
            flush(&mut batch, progress)?;
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        flush(&mut batch, progress)?;
    }
    Ok(())
}

/// Runs `work` again while it fails with a retryable error.
fn again<T>(mut work: impl FnMut() -> Result<T, ApiError>) -> Result<T, ApiError> {
    let mut pause = std::time::Duration::from_millis(5);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match work() {
            Err(error) if error.retryable && attempt < ATTEMPTS_MAX => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
            outcome => return outcome,
        }
    }
}

/// Runs `statements` as one serializable transaction, again while it
/// fails with a retryable error. After an outcome that is unknown
/// (`08007`: the commit may or may not have happened) it runs `unknown`
/// instead, statements meant to end the same whether or not it did (the
/// inserts with `ON CONFLICT DO NOTHING`); with none, the error stands.
/// Answers the rows the statements inserted, updated or deleted.
fn retrying(node: &Node, statements: &[Statement], unknown: Option<&[Statement]>) -> Result<u64, ApiError> {
    let mut running = statements;
    again(|| match run_transaction(node, Isolation::Serializable, running, None) {
        Ok((results, _)) => Ok(results.iter().map(|result| result.rows_affected).sum()),
        Err(error) if error.code == "08007" => match unknown {
            Some(unknown) => {
                running = unknown;
                Err(ApiError { retryable: true, ..error })
            }
            None => Err(error),
        },
        Err(error) => Err(error),
    })
}
