//! The catalog queries drivers and ORMs send by themselves, answered from
//! GeoDB's catalog over either query protocol (`psql`'s are
//! `pg/catalog.rs`'s):
//!
//! ```text
//! who sends it                                  what it answers
//! psycopg's TypeInfo.fetch (SQLAlchemy's        a built-in type's row of pg_type; none for a
//!   psycopg dialect asks for hstore on connect) type GeoDB lacks (hstore)
//! SQLAlchemy: has_table, get_table_names        relname of each table asked for
//!   the tables' oids (before keys and indexes)  oid, relname
//!   get_columns                                 name, format_type, not_null, table_name, ...
//!   get_pk_constraint, get_unique_constraints   the primary key <table>_pkey; no unique constraints
//!   get_indexes (with pg_am and pg_opclass)     the secondary indexes, all B-trees
//!   get_foreign_keys, get_check_constraints,    a row of NULLs per table: none
//!   get_table_comment, get_table_options
//! ```
//!
//! A query is recognised by its text with whitespace folded
//! ([`Query::recognise`]): how it starts, and the clauses it must have.
//! What it asks for is read from its conditions, with `$n` standing for
//! the `n`th parameter and quoted literals for themselves (the simple
//! protocol): the kinds of relation (`relkind`), the persistence, the
//! schema, the table names or oids and the kind of constraint. Every
//! GeoDB table is an ordinary (`'r'`), permanent (`'p'`) table in schema
//! `public`, with oid 16384 plus its id (`pg/catalog.rs`). A unique index
//! is an index, not a constraint (as `CREATE UNIQUE INDEX` makes in
//! PostgreSQL); GeoDB has no foreign keys, checks, comments, defaults,
//! collations or operator classes (an index column's is 0, and
//! `pg_opclass` has no non-default class).
//!
//! A query with another shape is not recognised, and is planned as SQL,
//! which answers `42P01` (no such relation): never rows that could be
//! wrong.

use std::sync::Arc;

use futures::stream;
use geodb_sql::catalog::{Catalog, Table};
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::types::format::FormatOptions;

use super::catalog::{SCHEMA, fold, oid, table_of, term, type_name};
use crate::http::ApiError;

/// A catalog query this module answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// psycopg's `TypeInfo.fetch`: a type's row of `pg_type`, by name.
    TypeInfo,
    /// SQLAlchemy's `has_table` and `get_table_names`: `relname`.
    TableNames,
    /// The tables' oids, which SQLAlchemy reads keys and indexes by.
    TableOids,
    /// `get_table_options`: access method, tablespace, inheritance.
    TableOptions,
    /// `get_columns`.
    Columns,
    /// `get_table_comment`.
    Comments,
    /// `get_pk_constraint` and `get_unique_constraints`, by table oids.
    Constraints,
    /// `get_indexes`, by table oids; the primary key's is left out.
    Indexes,
    /// `get_foreign_keys`.
    ForeignKeys,
    /// `get_check_constraints`.
    Checks,
    /// `pg_am`: the B-tree's oid, which `get_indexes` compares with.
    AccessMethods,
    /// `pg_opclass`'s non-default classes, which `get_indexes` names.
    NonDefaultOperatorClasses,
}

/// A value of an answer.
#[derive(Clone, Debug, PartialEq)]
enum Datum {
    Null,
    Text(String),
    Oid(u32),
    SmallInt(i16),
    Bool(bool),
    TextArray(Vec<String>),
    /// An `int2vector`: `0 1` in text, an array's layout in binary.
    SmallIntVector(Vec<i16>),
    BoolArray(Vec<bool>),
    BigIntArray(Vec<i64>),
}

/// An answer's rows.
pub struct Rows(Vec<Vec<Datum>>);

/// The join every SQLAlchemy query over `pg_class` has (its schema
/// filter), whitespace folded.
const NAMESPACE_JOIN: &str =
    "JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace";

/// How psycopg's query of `pg_type` starts, whitespace folded.
const TYPE_INFO_START: &str = "SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype, \
     typdelim AS delimiter FROM pg_type t WHERE t.oid = ";

/// How a query starts, and the clauses it must have besides, whitespace
/// folded; the first shape a query has is its.
const SHAPES: &[(Query, &str, &[&str])] = &[
    (Query::TypeInfo, TYPE_INFO_START, &[]),
    (
        Query::TableNames,
        "SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON",
        &[],
    ),
    (
        Query::TableOids,
        "SELECT pg_catalog.pg_class.oid, pg_catalog.pg_class.relname FROM pg_catalog.pg_class \
         JOIN pg_catalog.pg_namespace ON",
        &[],
    ),
    (
        Query::TableOptions,
        "SELECT pg_catalog.pg_class.oid, pg_catalog.pg_class.relname, pg_catalog.pg_class.reloptions, ",
        &[
            "AS access_method_name, pg_catalog.pg_tablespace.spcname AS tablespace_name, \
             inherits.parent_table_names FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_am ",
            NAMESPACE_JOIN,
        ],
    ),
    (
        Query::Columns,
        "SELECT pg_catalog.pg_attribute.attname AS name, \
         pg_catalog.format_type(pg_catalog.pg_attribute.atttypid, pg_catalog.pg_attribute.atttypmod) AS format_type, ",
        &[
            "AS \"default\", pg_catalog.pg_attribute.attnotnull AS not_null, \
             pg_catalog.pg_class.relname AS table_name, pg_catalog.pg_description.description AS comment, \
             pg_catalog.pg_attribute.attgenerated AS generated, ",
            "AS identity_options, ",
            "AS collation FROM pg_catalog.pg_class LEFT OUTER JOIN pg_catalog.pg_attribute \
             ON pg_catalog.pg_class.oid = pg_catalog.pg_attribute.attrelid ",
            NAMESPACE_JOIN,
        ],
    ),
    (
        Query::Comments,
        "SELECT pg_catalog.pg_class.relname, pg_catalog.pg_description.description FROM pg_catalog.pg_class \
         LEFT OUTER JOIN pg_catalog.pg_description ON pg_catalog.pg_class.oid = pg_catalog.pg_description.objoid ",
        &[NAMESPACE_JOIN],
    ),
    (
        Query::ForeignKeys,
        "SELECT pg_catalog.pg_class.relname, pg_catalog.pg_constraint.conname, CASE WHEN ",
        &[
            " nsp_ref.nspname, pg_catalog.pg_description.description FROM pg_catalog.pg_class \
             LEFT OUTER JOIN pg_catalog.pg_constraint ON pg_catalog.pg_class.oid = pg_catalog.pg_constraint.conrelid \
             AND pg_catalog.pg_constraint.contype = ",
            NAMESPACE_JOIN,
        ],
    ),
    (
        Query::Checks,
        "SELECT pg_catalog.pg_class.relname, pg_catalog.pg_constraint.conname, CASE WHEN ",
        &[
            " pg_catalog.pg_description.description FROM pg_catalog.pg_class \
             LEFT OUTER JOIN pg_catalog.pg_constraint ON pg_catalog.pg_class.oid = pg_catalog.pg_constraint.conrelid \
             AND pg_catalog.pg_constraint.contype = ",
            NAMESPACE_JOIN,
        ],
    ),
    (
        Query::Constraints,
        "SELECT attr.conrelid, array_agg(CAST(attr.attname AS TEXT) ORDER BY attr.ord) AS cols, attr.conname, \
         min(attr.description) AS description, min(attr.indnkeyatts) AS indnkeyatts, \
         bool_and(attr.indnullsnotdistinct) AS indnullsnotdistinct FROM ",
        &["pg_catalog.pg_constraint.contype = ", "pg_catalog.pg_constraint.conrelid IN ("],
    ),
    (
        Query::Indexes,
        "SELECT pg_catalog.pg_index.indrelid, pg_catalog.pg_class.relname, pg_catalog.pg_index.indisunique, \
         pg_catalog.pg_index.indisvalid, pg_catalog.pg_constraint.conrelid IS NOT NULL AS has_constraint, \
         pg_catalog.pg_index.indoption, pg_catalog.pg_class.reloptions, pg_catalog.pg_class.relam, ",
        &[
            "AS filter_definition, pg_catalog.pg_index.indnkeyatts, pg_catalog.pg_index.indnullsnotdistinct, \
             idx_cols.elements, idx_cols.elements_is_expr, idx_cols.elements_opclass FROM pg_catalog.pg_index ",
            "WHERE pg_catalog.pg_index.indrelid IN (",
            "AND NOT pg_catalog.pg_index.indisprimary ",
        ],
    ),
    (Query::AccessMethods, "SELECT pg_catalog.pg_am.oid, pg_catalog.pg_am.amname FROM pg_catalog.pg_am", &[]),
    (
        Query::NonDefaultOperatorClasses,
        "SELECT pg_catalog.pg_opclass.oid, pg_catalog.pg_opclass.opcname FROM pg_catalog.pg_opclass \
         WHERE NOT pg_catalog.pg_opclass.opcdefault",
        &[],
    ),
];

/// The oid of the B-tree access method, as PostgreSQL numbers it (what
/// SQLAlchemy compares an index's `relam` with).
const BTREE_OID: u32 = 403;
/// The oid of the heap access method, every table's.
const HEAP_OID: u32 = 2;

/// GeoDB's built-in types as `pg_type` holds them: each type its values
/// are described as (`pg/values.rs`), its array type, its name as
/// `regtype` writes it, and the other names PostgreSQL reads as it.
const BUILT_IN_TYPES: &[(Type, Type, &str, &[&str])] = &[
    (Type::BOOL, Type::BOOL_ARRAY, "boolean", &[]),
    (Type::INT2, Type::INT2_ARRAY, "smallint", &[]),
    (Type::INT4, Type::INT4_ARRAY, "integer", &["int"]),
    (Type::INT8, Type::INT8_ARRAY, "bigint", &[]),
    (Type::NUMERIC, Type::NUMERIC_ARRAY, "numeric", &["decimal"]),
    (Type::FLOAT4, Type::FLOAT4_ARRAY, "real", &[]),
    (Type::FLOAT8, Type::FLOAT8_ARRAY, "double precision", &["float"]),
    (Type::BPCHAR, Type::BPCHAR_ARRAY, "character", &["char"]),
    (Type::VARCHAR, Type::VARCHAR_ARRAY, "character varying", &[]),
    (Type::TEXT, Type::TEXT_ARRAY, "text", &[]),
    (Type::TIMESTAMPTZ, Type::TIMESTAMPTZ_ARRAY, "timestamp with time zone", &[]),
];

impl Query {
    /// The catalog query `sql` is, if it is one this module answers.
    pub fn recognise(sql: &str) -> Option<Query> {
        // Cheap first: most queries are no catalog query.
        if !sql.contains("pg_catalog.") && !sql.contains("pg_type") {
            return None;
        }
        let folded = fold(sql);
        let folded = folded.trim_end_matches(';').trim_end();
        let (query, start, _) = SHAPES
            .iter()
            .find(|(_, start, clauses)| folded.starts_with(start) && clauses.iter().all(|c| folded.contains(c)))?;
        let rest = &folded[start.len()..];
        let whole = match query {
            Query::TypeInfo => type_argument(rest).is_some(),
            Query::AccessMethods => rest.is_empty() || rest.starts_with(" WHERE pg_catalog.pg_am.amname = "),
            Query::NonDefaultOperatorClasses => rest.is_empty(),
            _ => true,
        };
        whole.then_some(*query)
    }

    /// The result columns, as PostgreSQL describes them.
    pub fn columns(self, sql: &str) -> Vec<(String, Type)> {
        let constraint_definition = || {
            // The label SQLAlchemy gave `pg_get_constraintdef(...)`.
            let folded = fold(sql);
            let label = folded
                .split_once(" END AS ")
                .and_then(|(_, rest)| rest.split_once(','))
                .map_or("pg_get_constraintdef".to_string(), |(label, _)| label.trim().to_string());
            (label, Type::TEXT)
        };
        let named = |columns: &[(&str, Type)]| -> Vec<(String, Type)> {
            columns.iter().map(|(name, ty)| (name.to_string(), ty.clone())).collect()
        };
        match self {
            Query::TypeInfo => named(&[
                ("name", Type::NAME),
                ("oid", Type::OID),
                ("array_oid", Type::OID),
                ("regtype", Type::TEXT),
                ("delimiter", Type::CHAR),
            ]),
            Query::TableNames => named(&[("relname", Type::NAME)]),
            Query::TableOids => named(&[("oid", Type::OID), ("relname", Type::NAME)]),
            Query::TableOptions => named(&[
                ("oid", Type::OID),
                ("relname", Type::NAME),
                ("reloptions", Type::TEXT_ARRAY),
                ("relhasoids", Type::TEXT),
                ("access_method_name", Type::NAME),
                ("tablespace_name", Type::NAME),
                ("parent_table_names", Type::NAME_ARRAY),
            ]),
            Query::Columns => named(&[
                ("name", Type::NAME),
                ("format_type", Type::TEXT),
                ("default", Type::TEXT),
                ("not_null", Type::BOOL),
                ("table_name", Type::NAME),
                ("comment", Type::TEXT),
                ("generated", Type::CHAR),
                ("identity_options", Type::JSON),
                ("collation", Type::JSON),
            ]),
            Query::Comments => named(&[("relname", Type::NAME), ("description", Type::TEXT)]),
            Query::ForeignKeys => {
                let mut columns = named(&[("relname", Type::NAME), ("conname", Type::NAME)]);
                columns.push(constraint_definition());
                columns.extend(named(&[("nspname", Type::NAME), ("description", Type::TEXT)]));
                columns
            }
            Query::Checks => {
                let mut columns = named(&[("relname", Type::NAME), ("conname", Type::NAME)]);
                columns.push(constraint_definition());
                columns.extend(named(&[("description", Type::TEXT)]));
                columns
            }
            Query::Constraints => named(&[
                ("conrelid", Type::OID),
                ("cols", Type::TEXT_ARRAY),
                ("conname", Type::NAME),
                ("description", Type::TEXT),
                ("indnkeyatts", Type::INT2),
                ("indnullsnotdistinct", Type::BOOL),
            ]),
            Query::Indexes => named(&[
                ("indrelid", Type::OID),
                ("relname", Type::NAME),
                ("indisunique", Type::BOOL),
                ("indisvalid", Type::BOOL),
                ("has_constraint", Type::BOOL),
                ("indoption", Type::INT2_VECTOR),
                ("reloptions", Type::TEXT_ARRAY),
                ("relam", Type::OID),
                ("filter_definition", Type::TEXT),
                ("indnkeyatts", Type::INT2),
                ("indnullsnotdistinct", Type::BOOL),
                ("elements", Type::TEXT_ARRAY),
                ("elements_is_expr", Type::BOOL_ARRAY),
                ("elements_opclass", Type::INT8_ARRAY),
            ]),
            Query::AccessMethods => named(&[("oid", Type::OID), ("amname", Type::NAME)]),
            Query::NonDefaultOperatorClasses => named(&[("oid", Type::OID), ("opcname", Type::NAME)]),
        }
    }

    /// The answer to `sql`, a query of this kind, from `catalog`, with
    /// `params` (text, `None` for NULL) standing for its `$n`.
    pub fn rows(self, catalog: &Catalog, sql: &str, params: &[Option<String>]) -> Result<Rows, ApiError> {
        let query = fold(sql);
        let query = query.as_str();
        let rows = match self {
            Query::TypeInfo => type_info(query, params)?.into_iter().collect(),
            Query::TableNames => {
                tables(catalog, query, params).iter().map(|table| vec![Datum::Text(table.name.clone())]).collect()
            }
            Query::TableOids => tables(catalog, query, params)
                .iter()
                .map(|table| vec![Datum::Oid(oid(table)), Datum::Text(table.name.clone())])
                .collect(),
            Query::TableOptions => tables(catalog, query, params)
                .iter()
                .map(|table| {
                    let mut row = vec![Datum::Oid(oid(table)), Datum::Text(table.name.clone())];
                    row.extend([Datum::Null, Datum::Null, Datum::Null, Datum::Null, Datum::Null]);
                    row
                })
                .collect(),
            Query::Columns => tables(catalog, query, params).iter().flat_map(|table| columns(table)).collect(),
            Query::Comments => tables(catalog, query, params)
                .iter()
                .map(|table| vec![Datum::Text(table.name.clone()), Datum::Null])
                .collect(),
            Query::ForeignKeys | Query::Checks => {
                // GeoDB has neither: a row of NULLs per table, as the outer
                // join leaves it, for the kind of constraint asked for.
                let kind = value_after(query, "pg_catalog.pg_constraint.contype = ", params);
                let expected = if self == Query::ForeignKeys { "f" } else { "c" };
                if kind.as_deref() != Some(expected) {
                    return Err(unanswered(sql));
                }
                let nulls = self.columns(sql).len() - 1;
                tables(catalog, query, params)
                    .iter()
                    .map(|table| {
                        std::iter::once(Datum::Text(table.name.clone())).chain(vec![Datum::Null; nulls]).collect()
                    })
                    .collect()
            }
            Query::Constraints => {
                let kind = value_after(query, "pg_catalog.pg_constraint.contype = ", params);
                let tables = by_oids(catalog, query, "pg_catalog.pg_constraint.conrelid IN (", params);
                match kind.as_deref() {
                    Some("p") => tables
                        .iter()
                        .filter(|table| !table.primary_key.is_empty())
                        .map(|table| primary_key(table))
                        .collect(),
                    _ => Vec::new(),
                }
            }
            Query::Indexes => {
                let tables = by_oids(catalog, query, "pg_catalog.pg_index.indrelid IN (", params);
                tables.iter().flat_map(|table| indexes(table)).collect()
            }
            Query::AccessMethods => {
                let name = query.contains(" WHERE ").then(|| value_after(query, "pg_catalog.pg_am.amname = ", params));
                [(HEAP_OID, "heap"), (BTREE_OID, "btree")]
                    .into_iter()
                    .filter(|(_, method)| name.as_ref().is_none_or(|name| name.as_deref() == Some(*method)))
                    .map(|(oid, method)| vec![Datum::Oid(oid), Datum::Text(method.into())])
                    .collect()
            }
            Query::NonDefaultOperatorClasses => Vec::new(),
        };
        Ok(Rows(rows))
    }
}

/// The answer to `query` over the simple protocol (values inline, no
/// parameters), in text format, if it is a query this module answers.
pub fn answer(catalog: &Catalog, query: &str) -> Option<Response> {
    let recognised = Query::recognise(query)?;
    let fields = recognised
        .columns(query)
        .into_iter()
        .map(|(name, ty)| FieldInfo::new(name, None, None, ty, FieldFormat::Text))
        .collect();
    let answer = recognised.rows(catalog, query, &[]).and_then(|rows| encode(Arc::new(fields), rows));
    Some(answer.unwrap_or_else(|error| Response::Error(Box::new(super::error_info(&error)))))
}

/// `rows` as the result `fields` describe, in their formats.
pub fn encode(fields: Arc<Vec<FieldInfo>>, rows: Rows) -> Result<Response, ApiError> {
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut encoded = Vec::with_capacity(rows.0.len());
    for row in rows.0 {
        for (field, datum) in fields.iter().zip(row) {
            match datum {
                Datum::Null => encoder.encode_field(&None::<String>),
                Datum::Text(text) => encoder.encode_field(&text),
                Datum::Oid(oid) => encoder.encode_field(&oid),
                Datum::SmallInt(n) => encoder.encode_field(&n),
                Datum::Bool(b) => encoder.encode_field(&b),
                Datum::TextArray(items) => encoder.encode_field(&items),
                Datum::SmallIntVector(items) if field.format() == FieldFormat::Text => {
                    // Written as the text it is: no array's quotes around it.
                    let text: Vec<String> = items.iter().map(i16::to_string).collect();
                    let options = FormatOptions::default();
                    encoder.encode_field_with_type_and_format(&text.join(" "), &Type::TEXT, FieldFormat::Text, &options)
                }
                Datum::SmallIntVector(items) => encoder.encode_field(&items),
                Datum::BoolArray(items) => encoder.encode_field(&items),
                Datum::BigIntArray(items) => encoder.encode_field(&items),
            }
            .map_err(|error| ApiError::new("XX000", error.to_string()))?;
        }
        encoded.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(fields, stream::iter(encoded))))
}

/// A recognised query whose conditions ask for what this module cannot
/// answer.
fn unanswered(sql: &str) -> ApiError {
    let start: String = fold(sql).chars().take(80).collect();
    ApiError::new("0A000", format!("GeoDB does not answer this catalog query: {start}..."))
}

/// The tables a query over `pg_class` admits, by name: read from its
/// conditions, the kinds asked for (`relkind`: none unless tables, `'r'`,
/// are among them), the persistence (`relpersistence`: `'p'`), the schema
/// (`nspname`: `public`) and the names (`relname IN (...)` or
/// `relname = ...`); every other condition holds for every GeoDB table
/// (visible, outside `pg_catalog`).
fn tables<'a>(catalog: &'a Catalog, query: &str, params: &[Option<String>]) -> Vec<&'a Arc<Table>> {
    let is = |value: Option<String>, expected: &str| value.as_deref() == Some(expected);
    if let Some(kinds) = items(query, "pg_catalog.pg_class.relkind = ANY (ARRAY[", ']', params) {
        if !kinds.iter().any(|kind| kind.as_deref() == Some("r")) {
            return Vec::new();
        }
    } else if query.contains("pg_catalog.pg_class.relkind = ")
        && !is(value_after(query, "pg_catalog.pg_class.relkind = ", params), "r")
    {
        return Vec::new();
    }
    let admitted = [
        ("pg_catalog.pg_class.relpersistence = ", "p", true),
        ("pg_catalog.pg_class.relpersistence != ", "p", false),
        ("pg_catalog.pg_namespace.nspname = ", SCHEMA, true),
        ("pg_catalog.pg_namespace.nspname != ", SCHEMA, false),
    ]
    .into_iter()
    .all(|(condition, ours, equal)| {
        !query.contains(condition) || is(value_after(query, condition, params), ours) == equal
    });
    if !admitted {
        return Vec::new();
    }
    let wanted = items(query, "pg_catalog.pg_class.relname IN (", ')', params).or_else(|| {
        query
            .contains("pg_catalog.pg_class.relname = ")
            .then(|| vec![value_after(query, "pg_catalog.pg_class.relname = ", params)])
    });
    let mut tables: Vec<&Arc<Table>> = catalog
        .tables()
        .filter(|table| {
            wanted.as_ref().is_none_or(|wanted| wanted.iter().any(|name| name.as_deref() == Some(&table.name)))
        })
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    tables
}

/// The tables whose oids the list after `prefix` names, by oid.
fn by_oids<'a>(catalog: &'a Catalog, query: &str, prefix: &str, params: &[Option<String>]) -> Vec<&'a Arc<Table>> {
    let oids = items(query, prefix, ')', params).unwrap_or_default();
    let mut tables: Vec<&Arc<Table>> =
        oids.iter().filter_map(|oid| oid.as_deref()?.parse().ok()).filter_map(|oid| table_of(catalog, oid)).collect();
    tables.sort_by_key(|table| oid(table));
    tables.dedup_by_key(|table| oid(table));
    tables
}

/// The values of the list right after `prefix`, up to `until`.
fn items(query: &str, prefix: &str, until: char, params: &[Option<String>]) -> Option<Vec<Option<String>>> {
    let (_, rest) = query.split_once(prefix)?;
    let (list, _) = rest.split_once(until)?;
    Some(list.split(',').map(|item| term(item.trim(), params)).collect())
}

/// The value right after `prefix`, up to a space, `)` or the end.
fn value_after(query: &str, prefix: &str, params: &[Option<String>]) -> Option<String> {
    let (_, rest) = query.split_once(prefix)?;
    let end = rest.find([' ', ')']).unwrap_or(rest.len());
    term(&rest[..end], params)
}

/// The type name a psycopg `pg_type` query asks for, after `t.oid = `:
/// `to_regtype(<name>)` (NULL for a type that does not exist) or
/// `<name>::regtype` (an error for one), then `ORDER BY t.oid`.
fn type_argument(rest: &str) -> Option<(&str, bool)> {
    let rest = rest.strip_suffix(" ORDER BY t.oid").unwrap_or(rest);
    if let Some(inner) = rest.strip_prefix("to_regtype(").and_then(|inner| inner.strip_suffix(')')) {
        return Some((inner.trim(), false));
    }
    rest.strip_suffix("::regtype").map(|inner| (inner.trim(), true))
}

/// psycopg's `TypeInfo.fetch`: the row of the type named, if GeoDB has it.
fn type_info(query: &str, params: &[Option<String>]) -> Result<Option<Vec<Datum>>, ApiError> {
    let Some((argument, strict)) = query.strip_prefix(TYPE_INFO_START).and_then(type_argument) else {
        return Err(unanswered(query));
    };
    let Some(name) = term(argument, params) else { return Ok(None) };
    match built_in_type(&name) {
        Some(row) => Ok(Some(row)),
        None if strict => Err(ApiError::new("42704", format!("type \"{name}\" does not exist"))),
        None => Ok(None),
    }
}

/// The `pg_type` row of a built-in type, named as PostgreSQL reads a type
/// name: any case unless double-quoted, in schema `pg_catalog` or none, a
/// type modifier (`(20)`) ignored, `[]` for its array type (also named
/// `_<name>`).
fn built_in_type(name: &str) -> Option<Vec<Datum>> {
    let mut name = name.trim();
    let mut array = false;
    while let Some(element) = name.strip_suffix("[]") {
        (name, array) = (element.trim_end(), true);
    }
    if let Some((bare, modifier)) = name.split_once('(')
        && modifier.ends_with(')')
    {
        name = bare.trim_end();
    }
    let name = match name.strip_prefix('"').and_then(|quoted| quoted.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => name.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase(),
    };
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let (name, array) = match name.strip_prefix('_') {
        Some(element) if !array => (element, true),
        _ => (name, array),
    };
    let (ty, array_ty, shown, _) = BUILT_IN_TYPES
        .iter()
        .find(|(ty, _, shown, aliases)| ty.name() == name || *shown == name || aliases.contains(&name))?;
    // An array type's row names no array of its own.
    let (row_ty, row_array_oid, shown) =
        if array { (array_ty, 0, format!("{shown}[]")) } else { (ty, array_ty.oid(), shown.to_string()) };
    Some(vec![
        Datum::Text(row_ty.name().into()),
        Datum::Oid(row_ty.oid()),
        Datum::Oid(row_array_oid),
        Datum::Text(shown),
        Datum::Text(",".into()),
    ])
}

/// A table's columns as `get_columns` reads them: name, type as
/// `format_type` writes it, no default, `NOT NULL` (every primary-key
/// column), no comment, generation, identity or collation.
fn columns(table: &Table) -> Vec<Vec<Datum>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(position, column)| {
            let not_null = column.not_null || table.primary_key.contains(&position);
            vec![
                Datum::Text(column.name.clone()),
                Datum::Text(type_name(&column.ty)),
                Datum::Null,
                Datum::Bool(not_null),
                Datum::Text(table.name.clone()),
                Datum::Null,
                Datum::Text(String::new()),
                Datum::Null,
                Datum::Null,
            ]
        })
        .collect()
}

/// The names of a table's columns at `positions`.
fn names(table: &Table, positions: &[usize]) -> Vec<String> {
    positions.iter().map(|&position| table.columns[position].name.clone()).collect()
}

/// A table's primary key as a constraint, named `<table>_pkey` as
/// PostgreSQL names it (and `\d` shows it).
fn primary_key(table: &Table) -> Vec<Datum> {
    vec![
        Datum::Oid(oid(table)),
        Datum::TextArray(names(table, &table.primary_key)),
        Datum::Text(format!("{}_pkey", table.name)),
        Datum::Null,
        Datum::SmallInt(table.primary_key.len() as i16),
        Datum::Bool(false),
    ]
}

/// A table's secondary indexes by name, as `get_indexes` reads them:
/// B-trees of columns in ascending order, no expressions, predicates,
/// included columns or options.
fn indexes(table: &Table) -> Vec<Vec<Datum>> {
    let mut secondary: Vec<_> = table.indexes.iter().collect();
    secondary.sort_by(|a, b| a.name.cmp(&b.name));
    secondary
        .into_iter()
        .map(|index| {
            let width = index.columns.len();
            vec![
                Datum::Oid(oid(table)),
                Datum::Text(index.name.clone()),
                Datum::Bool(index.unique),
                Datum::Bool(true),
                Datum::Bool(false),
                Datum::SmallIntVector(vec![0; width]),
                Datum::Null,
                Datum::Oid(BTREE_OID),
                Datum::Null,
                Datum::SmallInt(width as i16),
                Datum::Bool(false),
                Datum::TextArray(names(table, &index.columns)),
                Datum::BoolArray(vec![false; width]),
                Datum::BigIntArray(vec![0; width]),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psycopg_type_queries_are_recognised_in_either_form() {
        let query = "SELECT\n    typname AS name, oid, typarray AS array_oid,\n    oid::regtype::text AS regtype, \
                     typdelim AS delimiter\nFROM pg_type t\nWHERE t.oid = to_regtype($1)\nORDER BY t.oid\n";
        assert_eq!(Query::recognise(query), Some(Query::TypeInfo));
        let cast = query.replace("to_regtype($1)", "'hstore'::regtype");
        assert_eq!(Query::recognise(&cast), Some(Query::TypeInfo));
        assert_eq!(Query::recognise(&query.replace("t.oid = ", "t.typname = ")), None);
        let hstore = type_info(&fold(query), &[Some("hstore".into())]).unwrap();
        assert_eq!(hstore, None, "no hstore");
        assert_eq!(type_info(&fold(&cast), &[]).unwrap_err().code, "42704");
    }

    #[test]
    fn built_in_types_are_found_by_any_of_their_names() {
        let oid_of = |name: &str| built_in_type(name).map(|row| row[1].clone());
        assert_eq!(oid_of("int4"), Some(Datum::Oid(23)));
        assert_eq!(oid_of("INTEGER"), Some(Datum::Oid(23)));
        assert_eq!(oid_of("pg_catalog.int8"), Some(Datum::Oid(20)));
        assert_eq!(oid_of("character  varying(20)"), Some(Datum::Oid(1043)));
        assert_eq!(oid_of("timestamptz"), Some(Datum::Oid(1184)));
        assert_eq!(oid_of("text[]"), Some(Datum::Oid(1009)));
        assert_eq!(oid_of("_text"), Some(Datum::Oid(1009)));
        assert_eq!(oid_of("\"INT4\""), None, "quoted names keep their case");
        assert_eq!(oid_of("hstore"), None);
        assert_eq!(oid_of("timestamp"), None, "GeoDB describes no value as timestamp without time zone");
        let row = built_in_type("double precision").unwrap();
        assert_eq!(row[0], Datum::Text("float8".into()));
        assert_eq!(row[2], Datum::Oid(1022));
        assert_eq!(row[3], Datum::Text("double precision".into()));
    }

    #[test]
    fn other_catalog_queries_are_not_recognised() {
        assert_eq!(Query::recognise("SELECT * FROM accounts"), None);
        assert_eq!(Query::recognise("SELECT typname FROM pg_type"), None);
        assert_eq!(
            Query::recognise(
                "SELECT pg_catalog.pg_opclass.oid, pg_catalog.pg_opclass.opcname FROM pg_catalog.pg_opclass"
            ),
            None,
            "all operator classes"
        );
        assert_eq!(
            Query::recognise(
                "SELECT pg_catalog.pg_am.oid, pg_catalog.pg_am.amname FROM pg_catalog.pg_am WHERE amname = 'btree'"
            ),
            None
        );
        let am = "SELECT pg_catalog.pg_am.oid, pg_catalog.pg_am.amname \nFROM pg_catalog.pg_am \n\
                  WHERE pg_catalog.pg_am.amname = %(amname_1)s::VARCHAR";
        assert_eq!(Query::recognise(&am.replace("%(amname_1)s", "$1")), Some(Query::AccessMethods));
    }
}
