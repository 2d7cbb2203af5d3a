//! The `pg_catalog` queries of `psql`'s `\dt` and `\d <table>`, answered
//! from GeoDB's catalog.
//!
//! GeoDB has no `pg_catalog` schema. `psql` describes tables with fixed
//! queries over it (`psql -E` prints them); this module recognises the
//! ones `psql` 15 sends for `\dt [pattern]` and `\d <pattern>` by their
//! shape and answers them as PostgreSQL would for GeoDB's tables:
//!
//! ```text
//! \dt [pattern]   the tables list             Schema, Name, Type, Owner
//! \d <pattern>    the tables that match       oid, nspname, relname
//!                 then per table: its kind, its columns (name, type,
//!                 NOT NULL), its primary key and secondary indexes; and
//!                 no policies, statistics, publications or inheritance
//! ```
//!
//! The catalog queries drivers and ORMs send by themselves (psycopg's
//! `pg_type` lookup, SQLAlchemy's reflection) are `pg/reflect.rs`'s,
//! answered from here over the simple protocol too.
//!
//! Every table is in schema `public`, owned by `geodb`; a table's oid is
//! [`TABLE_OID_BASE`] plus its GeoDB id. Other catalog queries are not
//! recognised and fail as before (`42P01`, no such relation).

use std::sync::Arc;

use futures::stream;
use geodb_sql::catalog::{Catalog, Table};
use geodb_storage::DataType;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};

/// Where table oids start (PostgreSQL's first oid for user objects).
const TABLE_OID_BASE: u32 = 16_384;

/// The schema and owner every table is shown in.
pub(super) const SCHEMA: &str = "public";
const OWNER: &str = "geodb";

/// One answer's rows, in text format (`None`: NULL).
type Rows = Vec<Vec<Option<String>>>;

/// The answer to `query` if it is one of the `psql` catalog queries this
/// module knows, from `catalog`.
pub fn answer(catalog: &Catalog, query: &str) -> Option<Response> {
    if let Some(response) = super::reflect::answer(catalog, query) {
        return Some(response);
    }
    // Cheap first: most queries are not psql's.
    if !query.contains("pg_catalog.") {
        return None;
    }
    let query = fold(query);
    let query = query.as_str();
    if query.contains("AS \"Schema\"") || query.contains("as \"Schema\"") {
        return Some(list(catalog, query));
    }
    if query.starts_with("SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c") {
        let rows = matching(catalog, query)
            .map(|table| vec![Some(oid(table).to_string()), Some(SCHEMA.into()), Some(table.name.clone())])
            .collect();
        return Some(text_response(&["oid", "nspname", "relname"], rows));
    }
    if query.starts_with("SELECT c.relchecks, c.relkind") {
        let rows = quoted_oid(query, "c.oid = '")
            .and_then(|oid| table_of(catalog, oid))
            .map(|table| vec![table_info(table)])
            .unwrap_or_default();
        let names = [
            "relchecks",
            "relkind",
            "relhasindex",
            "relhasrules",
            "relhastriggers",
            "relrowsecurity",
            "relforcerowsecurity",
            "relhasoids",
            "relispartition",
            "?column?",
            "reltablespace",
            "reloftype",
            "relpersistence",
            "relreplident",
            "amname",
        ];
        return Some(text_response(&names, rows));
    }
    if query.starts_with("SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)") {
        let table = quoted_oid(query, "a.attrelid = '").and_then(|oid| table_of(catalog, oid));
        let rows = table.map(columns).unwrap_or_default();
        let names =
            ["attname", "format_type", "pg_get_expr", "attnotnull", "attcollation", "attidentity", "attgenerated"];
        return Some(text_response(&names, rows));
    }
    if query.starts_with("SELECT c2.relname, i.indisprimary, i.indisunique") {
        let table = quoted_oid(query, "c.oid = '").and_then(|oid| table_of(catalog, oid));
        let rows = table.map(indexes).unwrap_or_default();
        let names = [
            "relname",
            "indisprimary",
            "indisunique",
            "indisclustered",
            "indisvalid",
            "pg_get_indexdef",
            "pg_get_constraintdef",
            "contype",
            "condeferrable",
            "condeferred",
            "indisreplident",
            "reltablespace",
        ];
        return Some(text_response(&names, rows));
    }
    // What GeoDB has none of: row security policies, extended statistics,
    // publications, inheritance and partitions.
    let nothing: &[&str] = if query.contains("FROM pg_catalog.pg_policy pol") {
        &["polname", "polpermissive", "array_to_string", "pg_get_expr", "pg_get_expr", "cmd"]
    } else if query.contains("FROM pg_catalog.pg_statistic_ext") {
        &[
            "oid",
            "stxrelid",
            "nsp",
            "stxname",
            "columns",
            "ndist_enabled",
            "deps_enabled",
            "mcv_enabled",
            "stxstattarget",
        ]
    } else if query.contains("FROM pg_catalog.pg_publication p") {
        &["pubname", "?column?", "?column?"]
    } else if query.contains("inhdetachpending") {
        &["oid", "relkind", "inhdetachpending", "pg_get_expr"]
    } else if query.contains("pg_catalog.pg_inherits i") {
        &["oid"]
    } else {
        return None;
    };
    Some(text_response(nothing, Vec::new()))
}

/// A value in a query: `$n` (with any cast) is the `n`th parameter, a
/// quoted literal or a number is itself; anything else is nothing known.
pub(super) fn term(item: &str, params: &[Option<String>]) -> Option<String> {
    let bare = item.split("::").next().unwrap_or(item).trim();
    if let Some(n) = bare.strip_prefix('$') {
        let n: usize = n.parse().ok()?;
        return params.get(n.checked_sub(1)?).cloned().flatten();
    }
    if !bare.is_empty() && bare.chars().all(|c| c.is_ascii_digit()) {
        return Some(bare.to_string());
    }
    let quoted = bare.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(quoted.replace("''", "'"))
}

/// `query` with every run of whitespace one space.
pub(super) fn fold(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `\dt`'s (and `\d`'s) list of relations: the tables, when the kinds
/// asked for include tables (`'r'`), that match the pattern if one is given.
fn list(catalog: &Catalog, query: &str) -> Response {
    let names = ["Schema", "Name", "Type", "Owner"];
    let kinds = query.split_once("c.relkind IN (").and_then(|(_, rest)| rest.split_once(')')).map(|(kinds, _)| kinds);
    if !kinds.is_some_and(|kinds| kinds.contains("'r'")) {
        return text_response(&names, Vec::new());
    }
    let mut tables: Vec<&Arc<Table>> = matching(catalog, query).collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let rows = tables
        .into_iter()
        .map(|table| vec![Some(SCHEMA.into()), Some(table.name.clone()), Some("table".into()), Some(OWNER.into())])
        .collect();
    text_response(&names, rows)
}

/// The tables whose name matches the query's pattern
/// (`c.relname OPERATOR(pg_catalog.~) '^(...)$'`), or all of them without
/// one; none if the pattern names a schema other than `public`.
fn matching<'a>(catalog: &'a Catalog, query: &'a str) -> impl Iterator<Item = &'a Arc<Table>> + 'a {
    let pattern = anchored_pattern(query, "c.relname OPERATOR(pg_catalog.~) '");
    let schema = anchored_pattern(query, "n.nspname OPERATOR(pg_catalog.~) '");
    let in_schema = schema.as_deref().is_none_or(|schema| regex_matches(schema, SCHEMA));
    catalog
        .tables()
        .filter(move |table| in_schema && pattern.as_deref().is_none_or(|pattern| regex_matches(pattern, &table.name)))
}

/// The regular expression psql made of a pattern, `'^(...)$'` after
/// `prefix`, without its anchors.
fn anchored_pattern(query: &str, prefix: &str) -> Option<String> {
    let (_, rest) = query.split_once(prefix)?;
    let (quoted, _) = rest.split_once("$'")?;
    let inner = quoted.strip_prefix("^(")?.strip_suffix(')')?;
    Some(inner.replace("''", "'"))
}

/// Whether `name` matches the whole of `pattern`, a regular expression as
/// psql writes patterns: literal characters (escaped with `\` where
/// special), `.` for `?` and `.*` for `*`. Anything else psql could write
/// (`|`, classes, groups) matches nothing.
fn regex_matches(pattern: &str, name: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Char(char),
        Any,
        AnyRun,
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '\\' => match chars.next() {
                Some(escaped) => Token::Char(escaped),
                None => return false,
            },
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::AnyRun
            }
            '.' => Token::Any,
            '|' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '{' | '}' | '^' | '$' => return false,
            c => Token::Char(c),
        });
    }
    let name: Vec<char> = name.chars().collect();
    // matches[i][j]: tokens[i..] match name[j..].
    let mut matches = vec![vec![false; name.len() + 1]; tokens.len() + 1];
    matches[tokens.len()][name.len()] = true;
    for i in (0..tokens.len()).rev() {
        for j in (0..=name.len()).rev() {
            matches[i][j] = match tokens[i] {
                Token::AnyRun => matches[i + 1][j] || (j < name.len() && matches[i][j + 1]),
                Token::Any => j < name.len() && matches[i + 1][j + 1],
                Token::Char(c) => j < name.len() && name[j] == c && matches[i + 1][j + 1],
            };
        }
    }
    matches[0][0]
}

/// The oid quoted right after `prefix` (`c.oid = '16384'`).
fn quoted_oid(query: &str, prefix: &str) -> Option<u32> {
    let (_, rest) = query.split_once(prefix)?;
    rest.split_once('\'')?.0.parse().ok()
}

/// A table's oid.
pub(super) fn oid(table: &Table) -> u32 {
    TABLE_OID_BASE + table.id
}

/// The table whose oid is `oid`.
pub(super) fn table_of(catalog: &Catalog, oid: u32) -> Option<&Arc<Table>> {
    catalog.tables().find(|table| self::oid(table) == oid)
}

/// A table's row of `pg_class` as `\d` reads it: an ordinary, permanent
/// table, with indexes if it has a key or an index.
fn table_info(table: &Table) -> Vec<Option<String>> {
    let has_index = !table.primary_key.is_empty() || !table.indexes.is_empty();
    let values =
        ["0", "r", if has_index { "t" } else { "f" }, "f", "f", "f", "f", "f", "f", "", "0", "", "p", "d", "heap"];
    values.into_iter().map(|value| Some(value.to_string())).collect()
}

/// A table's columns as `\d` reads them: name, type, no default,
/// `NOT NULL`, no collation, identity or generation.
fn columns(table: &Arc<Table>) -> Rows {
    table
        .columns
        .iter()
        .map(|column| {
            let not_null = if column.not_null { "t" } else { "f" };
            let values = [Some(column.name.clone()), Some(type_name(&column.ty)), None, Some(not_null.into())];
            values.into_iter().chain([None, Some(String::new()), Some(String::new())]).collect()
        })
        .collect()
}

/// A type as PostgreSQL's `format_type` writes it.
pub(super) fn type_name(ty: &DataType) -> String {
    match ty {
        DataType::Char(length) => format!("character({length})"),
        DataType::Varchar(length) => format!("character varying({length})"),
        DataType::Timestamp => "timestamp with time zone".into(),
        other => other.sql_name(),
    }
}

/// A table's indexes as `\d` reads them: the primary key (named
/// `<table>_pkey`, as PostgreSQL names it), then the secondary indexes by
/// name; all B-trees.
fn indexes(table: &Arc<Table>) -> Rows {
    let column_list = |positions: &[usize]| {
        positions.iter().map(|&position| table.columns[position].name.as_str()).collect::<Vec<_>>().join(", ")
    };
    let mut rows = Vec::new();
    if !table.primary_key.is_empty() {
        let name = format!("{}_pkey", table.name);
        let columns = column_list(&table.primary_key);
        let definition = format!("CREATE UNIQUE INDEX {name} ON {SCHEMA}.{} USING btree ({columns})", table.name);
        rows.push(index_row(&name, true, true, definition, Some(format!("PRIMARY KEY ({columns})"))));
    }
    let mut secondary: Vec<_> = table.indexes.iter().collect();
    secondary.sort_by(|a, b| a.name.cmp(&b.name));
    for index in secondary {
        let unique = if index.unique { "UNIQUE " } else { "" };
        let definition = format!(
            "CREATE {unique}INDEX {} ON {SCHEMA}.{} USING btree ({})",
            index.name,
            table.name,
            column_list(&index.columns)
        );
        rows.push(index_row(&index.name, false, index.unique, definition, None));
    }
    rows
}

/// One row of `\d`'s index query; `constraint` is a primary key's
/// definition (a secondary index is no constraint).
fn index_row(
    name: &str,
    primary: bool,
    unique: bool,
    definition: String,
    constraint: Option<String>,
) -> Vec<Option<String>> {
    let flag = |value: bool| Some(if value { "t" } else { "f" }.to_string());
    let contype = constraint.as_ref().map(|_| "p".to_string());
    let deferrable = constraint.as_ref().map(|_| "f".to_string());
    vec![
        Some(name.to_string()),
        flag(primary),
        flag(unique),
        flag(false),
        flag(true),
        Some(definition),
        constraint,
        contype,
        deferrable.clone(),
        deferrable,
        flag(false),
        Some("0".into()),
    ]
}

/// Rows as a result of `text` columns in text format.
fn text_response(names: &[&str], rows: Rows) -> Response {
    let fields: Vec<FieldInfo> =
        names.iter().map(|name| FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)).collect();
    let fields = Arc::new(fields);
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut encoded = Vec::with_capacity(rows.len());
    for row in rows {
        for value in row {
            encoder.encode_field(&value).expect("text encodes");
        }
        encoded.push(Ok(encoder.take_row()));
    }
    Response::Query(QueryResponse::new(fields, stream::iter(encoded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psql_patterns_match_whole_names() {
        assert!(regex_matches("accounts", "accounts"));
        assert!(!regex_matches("account", "accounts"));
        assert!(regex_matches("acc.*", "accounts"));
        assert!(regex_matches("acc.unts", "accounts"));
        assert!(regex_matches("a\\_b", "a_b"));
        assert!(!regex_matches("a|b", "a"), "alternatives are not understood");
        let query = "WHERE c.relname OPERATOR(pg_catalog.~) '^(acc.*)$' COLLATE pg_catalog.default";
        assert_eq!(anchored_pattern(query, "c.relname OPERATOR(pg_catalog.~) '").as_deref(), Some("acc.*"));
        assert_eq!(quoted_oid("WHERE c.oid = '16390' AND", "c.oid = '"), Some(16_390));
    }

    #[test]
    fn types_are_named_as_format_type_names_them() {
        assert_eq!(type_name(&DataType::Decimal { precision: 12, scale: 2 }), "numeric(12,2)");
        assert_eq!(type_name(&DataType::Varchar(20)), "character varying(20)");
        assert_eq!(type_name(&DataType::Timestamp), "timestamp with time zone");
    }
}
