//! Named bounds of the SQL layer. Every input a client controls has a
//! limit here; passing one answers SQLSTATE 54000 (program limit exceeded)
//! instead of exhausting memory.

/// Longest statement text accepted, in bytes. Bulk loaders send multi-row
/// `INSERT`s of a few hundred KiB; 4 MiB leaves room for that while keeping
/// one parse (and its AST, several times the text) well under 100 MiB.
pub const STATEMENT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most rows one result may hold. Results are materialised and sent as one
/// JSON body; 100 000 rows of a wide TPC-C table is tens of MiB, which is
/// as much as one request should pin.
pub const RESULT_ROWS_MAX: usize = 100_000;

/// Most rows one `UPDATE` / `DELETE` / `CREATE INDEX` / `DROP TABLE` may
/// touch. They are collected before being written (so a statement never
/// sees its own writes) and buffered in the transaction until commit.
pub const WRITTEN_ROWS_MAX: usize = 1_000_000;

/// Most rows an aggregation or sort may hold in memory (groups, distinct
/// values, rows to sort).
pub const WORKING_ROWS_MAX: usize = 1_000_000;

/// Most elements of one `IN (...)` list.
pub const IN_LIST_MAX: usize = 10_000;

/// Most parameters of one statement: PostgreSQL's wire protocol bound.
pub const PARAMETERS_MAX: usize = 65_535;

/// Most columns of one table (PostgreSQL allows 1600).
pub const COLUMNS_MAX: usize = 1_600;

/// Most tables joined in one query. Joins run as nested loops in `FROM`
/// order; past a handful of tables that is a plan nobody wants.
pub const JOIN_TABLES_MAX: usize = 16;

/// Rows fetched from the transaction per scan call. Scans are chunked so
/// that a `LIMIT` above a filter stops early (and, under serializable, the
/// recorded read range stops where reading stopped) without one call per
/// row.
pub const SCAN_BATCH_ROWS: usize = 256;

/// Most rows an `INSERT`'s `VALUES`, or keys an `IN` list, a statement
/// may have and still run where it is called (`Plan::is_brief`); beyond
/// it, the statement tells the program it may run for long
/// (`geodb_storage::wait`) before it starts.
pub const BRIEF_KEYS_MAX: usize = 64;

/// Longest statement text parsed where it is called; a longer one is
/// parsed and run as a statement that may run for long (as above).
pub const BRIEF_STATEMENT_BYTES_MAX: usize = 64 * 1024;

/// Statements kept planned in the statement cache. A TPC-C client uses
/// about 30 distinct statements; applications rarely use more than a few
/// hundred. A plan is a few KiB, so 1024 entries stay under ~10 MiB.
pub const STATEMENT_CACHE_ENTRIES: usize = 1024;

/// Longest `CHAR(n)` / `VARCHAR(n)` (PostgreSQL's bound is 10 485 760).
pub const TEXT_LENGTH_MAX: u64 = 10_485_760;

/// Most significant digits of a `DECIMAL`: what `rust_decimal` holds exactly.
pub const DECIMAL_PRECISION_MAX: u64 = 28;

const _: () = assert!(SCAN_BATCH_ROWS > 0 && SCAN_BATCH_ROWS <= RESULT_ROWS_MAX);
const _: () = assert!(RESULT_ROWS_MAX <= WORKING_ROWS_MAX);
