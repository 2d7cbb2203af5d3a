//! Planning: from a parsed statement to a [`Plan`] the executor runs.
//!
//! - [`bind`]: names and expressions ([`expr::Expr`]), parameter types.
//! - [`access`]: how each table is read (point get, prefix or range scan
//!   on the primary key or an index, full scan).
//! - [`select`], [`dml`], [`ddl`]: one planner per statement family.
//! - [`explain`]: the text `EXPLAIN` shows.
//! - [`describe`]: the types a statement takes and returns, without
//!   running it (the PostgreSQL extended protocol's `Describe`).
//!
//! A plan depends on the catalog it was made with (table definitions are
//! captured in it) and on nothing else: parameters are bound when it runs,
//! which is what lets the statement cache keep it.

pub mod access;
pub mod bind;
pub mod ddl;
pub mod describe;
pub mod dml;
pub mod explain;
pub mod expr;
pub mod select;
pub mod show;

use std::sync::Arc;

use geodb_storage::DataType;
use sqlparser::ast;

use crate::catalog::{ALL_FAMILIES, Catalog, Column, Family, FamilySet, Locality, Table};
use crate::error::{Error, Result};
use crate::limits::BRIEF_KEYS_MAX;
use access::Access;
use bind::{AggSpec, ParamTypes};
use expr::Expr;

/// A statement ready to run, with the parameter types it expects.
#[derive(Debug)]
pub struct Prepared {
    pub plan: Plan,
    pub params: ParamTypes,
    /// Generation of the catalog the plan was made with.
    pub generation: u64,
}

/// What kind of statement a plan runs (for results and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Explain,
}

impl StatementKind {
    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Ddl => "ddl",
            StatementKind::Explain => "explain",
        }
    }
}

#[derive(Debug)]
pub enum Plan {
    Select(SelectPlan),
    Insert(InsertPlan),
    Update(UpdatePlan),
    Delete(DeletePlan),
    CreateTable(CreateTablePlan),
    DropTable {
        name: String,
        if_exists: bool,
    },
    CreateIndex(CreateIndexPlan),
    DropIndex {
        name: String,
        if_exists: bool,
    },
    Explain(Box<Plan>),
    /// `SHOW <setting>`.
    Show(show::ShowPlan),
}

impl Plan {
    pub fn kind(&self) -> StatementKind {
        match self {
            Plan::Select(_) => StatementKind::Select,
            Plan::Insert(_) => StatementKind::Insert,
            Plan::Update(_) => StatementKind::Update,
            Plan::Delete(_) => StatementKind::Delete,
            Plan::CreateTable(_) | Plan::DropTable { .. } | Plan::CreateIndex(_) | Plan::DropIndex { .. } => {
                StatementKind::Ddl
            }
            Plan::Explain(_) => StatementKind::Explain,
            Plan::Show(_) => StatementKind::Select,
        }
    }

    /// Whether the plan's work is small enough to run where it is called,
    /// on a server's async worker: one table (no join), at most
    /// [`BRIEF_KEYS_MAX`] rows inserted or whole keys listed (an `IN` list
    /// over part of a key is not brief), no schema change.
    /// A scan of one table is brief too: it reads one batch of
    /// [`SCAN_BATCH_ROWS`](crate::limits::SCAN_BATCH_ROWS) rows where it
    /// is called and says it may run for long before the next one
    /// (`exec/scan.rs`). A plan that is not brief runs through
    /// `geodb_storage::wait::blocking` from its start.
    pub fn is_brief(&self) -> bool {
        // An `IN` list of point reads reads one row per value; one over a
        // key prefix scans a first batch per value.
        fn brief_access(access: &Access) -> bool {
            access.in_list.as_ref().is_none_or(|values| access.point && values.len() <= BRIEF_KEYS_MAX)
        }
        match self {
            Plan::Select(select) => {
                select.levels.len() <= 1 && select.levels.iter().all(|level| brief_access(&level.access))
            }
            Plan::Insert(insert) => insert.rows.len() <= BRIEF_KEYS_MAX,
            Plan::Update(UpdatePlan { level, .. }) | Plan::Delete(DeletePlan { level }) => brief_access(&level.access),
            Plan::Explain(_) | Plan::Show(_) => true,
            Plan::CreateTable(_) | Plan::DropTable { .. } | Plan::CreateIndex(_) | Plan::DropIndex { .. } => false,
        }
    }

    /// Whether running the plan writes nothing (a plain `SELECT` or an
    /// `EXPLAIN`; `SELECT ... FOR UPDATE` takes write intents).
    pub fn is_read_only(&self) -> bool {
        match self {
            Plan::Select(select) => !select.for_update,
            Plan::Explain(_) | Plan::Show(_) => true,
            _ => false,
        }
    }
}

/// One table of a query, in join order, with how it is read.
#[derive(Clone, Debug)]
pub struct Level {
    pub table: Arc<Table>,
    /// The alias or table name.
    pub name: String,
    /// Position of the table's first column in the joined row.
    pub offset: usize,
    pub access: Access,
    /// Conjuncts evaluated once this table's row is joined.
    pub filter: Option<Expr>,
    /// The column families a point read of a row fetches (every family
    /// for a table without declared ones): those holding a column the
    /// statement uses. Scans read every family.
    pub families: FamilySet,
}

#[derive(Debug)]
pub struct SelectPlan {
    /// Tables in nested-loop order; empty for `SELECT` without `FROM`.
    pub levels: Vec<Level>,
    /// The `WHERE` of a query without tables.
    pub constant_filter: Option<Expr>,
    pub aggregate: Option<AggregatePlan>,
    /// Output expressions over the joined row (or the aggregation row),
    /// then hidden sort keys.
    pub projection: Vec<Expr>,
    /// Names of the visible output columns.
    pub columns: Vec<String>,
    pub distinct: bool,
    /// Sort on projected columns; empty when the scan order already fits.
    pub sort: Vec<SortKey>,
    /// Literal or parameter.
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
    pub for_update: bool,
}

#[derive(Debug)]
pub struct AggregatePlan {
    pub group_by: Vec<Expr>,
    pub aggs: Vec<AggSpec>,
    pub having: Option<Expr>,
}

#[derive(Clone, Copy, Debug)]
pub struct SortKey {
    pub column: usize,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Debug)]
pub struct InsertPlan {
    pub table: Arc<Table>,
    /// One expression per table column, per row.
    pub rows: Vec<Vec<Expr>>,
    pub do_nothing: bool,
}

#[derive(Debug)]
pub struct UpdatePlan {
    pub level: Level,
    /// Column position and new value (over the old row).
    pub assignments: Vec<(usize, Expr)>,
}

#[derive(Debug)]
pub struct DeletePlan {
    pub level: Level,
}

#[derive(Debug)]
pub struct CreateTablePlan {
    pub name: String,
    pub columns: Vec<Column>,
    pub primary_key: Vec<usize>,
    pub locality: Locality,
    pub families: Vec<Family>,
    pub if_not_exists: bool,
}

#[derive(Debug)]
pub struct CreateIndexPlan {
    pub name: String,
    pub table: String,
    pub columns: Vec<String>,
    pub unique: bool,
    pub if_not_exists: bool,
}

/// Sets the column families each level's point reads fetch: those holding
/// a column the statement uses, that is one `exprs` read (over the joined
/// row: the statement's output, or what an update assigns), one of
/// `columns` (joined-row positions), or one the levels' own filters and
/// access paths read.
pub fn choose_families<'e>(
    levels: &mut [Level],
    exprs: impl IntoIterator<Item = &'e Expr>,
    columns: impl IntoIterator<Item = usize>,
) {
    let width = levels.last().map_or(0, |level| level.offset + level.table.columns.len());
    let mut used = vec![false; width];
    let mut mark = |c: usize| {
        if let Some(u) = used.get_mut(c) {
            *u = true;
        }
    };
    columns.into_iter().for_each(&mut mark);
    exprs.into_iter().for_each(|e| e.visit_columns(&mut mark));
    for level in levels.iter() {
        level.filter.iter().for_each(|e| e.visit_columns(&mut mark));
        level.access.visit_exprs(&mut |e| e.visit_columns(&mut mark));
    }
    for level in levels {
        let table = &level.table;
        level.families = if table.has_families() {
            table.families_of((0..table.columns.len()).filter(|c| used.get(level.offset + c) == Some(&true)))
        } else {
            ALL_FAMILIES
        };
    }
}

/// Plans one parsed statement against `catalog`.
pub fn plan_statement(catalog: &Catalog, statement: &ast::Statement, params: &mut ParamTypes) -> Result<Plan> {
    use ast::Statement as S;
    match statement {
        S::Query(query) => select::plan_query(catalog, query, params).map(Plan::Select),
        S::Insert(insert) => dml::plan_insert(catalog, insert, params).map(Plan::Insert),
        S::Update(update) => dml::plan_update(catalog, update, params).map(Plan::Update),
        S::Delete(delete) => dml::plan_delete(catalog, delete, params).map(Plan::Delete),
        S::CreateTable(create) => ddl::plan_create_table(create).map(Plan::CreateTable),
        S::CreateIndex(create) => ddl::plan_create_index(create).map(Plan::CreateIndex),
        S::Drop { object_type, if_exists, names, cascade: false, .. } => {
            ddl::plan_drop(*object_type, *if_exists, names)
        }
        S::Explain { statement, analyze: false, .. } => {
            let inner = plan_statement(catalog, statement, params)?;
            if matches!(inner, Plan::Explain(_)) {
                return Err(Error::Syntax("EXPLAIN of EXPLAIN".into()));
            }
            Ok(Plan::Explain(Box::new(inner)))
        }
        S::ShowVariable { variable } => show::plan_show(variable).map(Plan::Show),
        S::StartTransaction { .. } | S::Commit { .. } | S::Rollback { .. } => {
            Err(Error::unsupported("transaction control here (the session handles BEGIN, COMMIT and ROLLBACK)"))
        }
        other => Err(Error::unsupported(format!("statement {}", statement_word(other)))),
    }
}

/// The first words of a statement, for error messages.
fn statement_word(statement: &ast::Statement) -> String {
    statement.to_string().split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// The type a `LIMIT` / `OFFSET` parameter takes.
pub const LIMIT_TYPE: DataType = DataType::BigInt;
