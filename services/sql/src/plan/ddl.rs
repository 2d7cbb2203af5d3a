//! Planning `CREATE TABLE`, `DROP TABLE`, `CREATE INDEX`, `DROP INDEX`.
//!
//! A table needs a primary key (column or table constraint): rows are
//! stored by it and its first column is the table's locality key, so an
//! implicit key would silently put every row of a table in one home. A
//! table without one is rejected with 42P16. Primary-key columns are
//! `NOT NULL`. `WITH (locality = 'home' | 'global')` sets the locality
//! (`home` by default). Column `UNIQUE` constraints and other options
//! (`DEFAULT`, `CHECK`, foreign keys) are not supported (0A000), rather
//! than silently ignored.

use std::collections::HashSet;

use sqlparser::ast;

use crate::catalog::{Column, FAMILIES_MAX, Family, Locality};
use crate::error::{Error, Result};
use crate::limits::COLUMNS_MAX;
use crate::plan::bind::{self, ident_name};
use crate::plan::{CreateIndexPlan, CreateTablePlan, Plan};
use crate::types;

pub fn plan_create_table(create: &ast::CreateTable) -> Result<CreateTablePlan> {
    if create.or_replace || create.temporary || create.external || create.query.is_some() || create.like.is_some() {
        return Err(Error::unsupported("this CREATE TABLE form"));
    }
    let name = bind::object_name(&create.name)?;
    if create.columns.is_empty() {
        return Err(Error::InvalidTableDefinition(format!("table \"{name}\" has no columns")));
    }
    if create.columns.len() > COLUMNS_MAX {
        return Err(Error::ProgramLimitExceeded(format!("tables can have at most {COLUMNS_MAX} columns")));
    }
    let mut columns: Vec<Column> = Vec::with_capacity(create.columns.len());
    let mut primary_key: Option<Vec<usize>> = None;
    let mut seen = HashSet::new();
    for (pos, def) in create.columns.iter().enumerate() {
        let column_name = ident_name(&def.name);
        if !seen.insert(column_name.clone()) {
            return Err(Error::DuplicateColumn(column_name));
        }
        let mut column = Column { name: column_name, ty: types::column_type(&def.data_type)?, not_null: false };
        for option in &def.options {
            match &option.option {
                ast::ColumnOption::NotNull => column.not_null = true,
                ast::ColumnOption::Null => {}
                ast::ColumnOption::PrimaryKey(_) => {
                    if primary_key.is_some() {
                        return Err(multiple_keys(&name));
                    }
                    primary_key = Some(vec![pos]);
                }
                other => return Err(Error::unsupported(format!("column option {other}"))),
            }
        }
        columns.push(column);
    }
    for constraint in &create.constraints {
        match constraint {
            ast::TableConstraint::PrimaryKey(pk) => {
                if primary_key.is_some() {
                    return Err(multiple_keys(&name));
                }
                let mut positions = Vec::with_capacity(pk.columns.len());
                for column in &pk.columns {
                    let column_name = index_column_name(column)?;
                    let pos = columns
                        .iter()
                        .position(|c| c.name == column_name)
                        .ok_or_else(|| Error::UndefinedColumn(column_name.clone()))?;
                    if positions.contains(&pos) {
                        return Err(Error::DuplicateColumn(column_name));
                    }
                    positions.push(pos);
                }
                primary_key = Some(positions);
            }
            other => return Err(Error::unsupported(format!("table constraint {other}"))),
        }
    }
    let primary_key = primary_key.ok_or_else(|| {
        Error::InvalidTableDefinition(format!(
            "table \"{name}\" needs a PRIMARY KEY (its first column is the table's locality key)"
        ))
    })?;
    for &pos in &primary_key {
        columns[pos].not_null = true;
        if matches!(columns[pos].ty, geodb_storage::DataType::Real | geodb_storage::DataType::Double) {
            // Keycode encodes floats, but equality on floats is a trap.
            return Err(Error::InvalidTableDefinition("floating-point primary key columns are not supported".into()));
        }
    }
    let (locality, families) = match &create.table_options {
        ast::CreateTableOptions::None => (Locality::Home, Vec::new()),
        ast::CreateTableOptions::With(options) => parse_options(options, &columns, &primary_key)?,
        _ => return Err(Error::unsupported("table options other than WITH (locality = ..., family_<name> = ...)")),
    };
    Ok(CreateTablePlan { name, columns, primary_key, locality, families, if_not_exists: create.if_not_exists })
}

fn multiple_keys(table: &str) -> Error {
    Error::InvalidTableDefinition(format!("multiple primary keys for table \"{table}\" are not allowed"))
}

/// The option keys naming a column family: `family_<name>`.
const FAMILY_OPTION_PREFIX: &str = "family_";

/// `WITH (locality = 'home' | 'global', family_<name> = 'column, ...', ...)`.
fn parse_options(
    options: &[ast::SqlOption],
    columns: &[Column],
    primary_key: &[usize],
) -> Result<(Locality, Vec<Family>)> {
    let mut locality = Locality::Home;
    let mut families: Vec<Family> = Vec::new();
    for option in options {
        let ast::SqlOption::KeyValue { key, value } = option else {
            return Err(Error::unsupported(format!("table option {option}")));
        };
        let key = bind::object_name(key)?;
        let text = match value {
            ast::Expr::Value(v) => v.value.clone().into_string(),
            ast::Expr::Identifier(ident) => Some(ident.value.clone()),
            _ => None,
        };
        if let Some(name) = key.strip_prefix(FAMILY_OPTION_PREFIX) {
            let text = text.ok_or_else(|| {
                Error::InvalidParameterValue(format!(
                    "family \"{name}\" must list its columns in a string, not {value}"
                ))
            })?;
            families.push(parse_family(name, &text, columns, primary_key, &families)?);
            continue;
        }
        if key != "locality" {
            return Err(Error::InvalidParameterValue(format!("unrecognized parameter \"{key}\"")));
        }
        locality = match text.map(|t| t.to_lowercase()).as_deref() {
            Some("home") => Locality::Home,
            Some("global") => Locality::Global,
            _ => return Err(Error::InvalidParameterValue(format!("locality must be 'home' or 'global', not {value}"))),
        };
    }
    if families.len() > FAMILIES_MAX {
        return Err(Error::InvalidTableDefinition(format!(
            "a table has at most {FAMILIES_MAX} column families besides its primary one"
        )));
    }
    Ok((locality, families))
}

/// One declared family: `name` and its comma-separated column names.
fn parse_family(
    name: &str,
    list: &str,
    columns: &[Column],
    primary_key: &[usize],
    earlier: &[Family],
) -> Result<Family> {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(Error::InvalidTableDefinition(format!(
            "column family name \"{name}\" must be lower-case letters, digits and underscores"
        )));
    }
    if name == "primary" || earlier.iter().any(|f| f.name == name) {
        return Err(Error::InvalidTableDefinition(format!("column family name \"{name}\" is reserved or used twice")));
    }
    let mut positions = Vec::new();
    for column in list.split(',').map(str::trim) {
        // A name as written (a quoted column's case kept), else folded to
        // lower case as an unquoted identifier would be.
        let pos = columns
            .iter()
            .position(|c| c.name == column)
            .or_else(|| columns.iter().position(|c| c.name == column.to_lowercase()))
            .ok_or_else(|| Error::UndefinedColumn(column.to_string()))?;
        if primary_key.contains(&pos) {
            return Err(Error::InvalidTableDefinition(format!(
                "primary-key column \"{column}\" cannot be in a column family (it is in every family's key)"
            )));
        }
        if positions.contains(&pos) || earlier.iter().any(|f| f.columns.contains(&pos)) {
            return Err(Error::InvalidTableDefinition(format!("column \"{column}\" is in two column families")));
        }
        positions.push(pos);
    }
    positions.sort_unstable();
    Ok(Family { name: name.to_string(), columns: positions })
}

fn index_column_name(column: &ast::IndexColumn) -> Result<String> {
    if !matches!(column.column.options.sort, None | Some(ast::OrderBySort::Asc))
        || column.column.options.nulls_first.is_some()
    {
        return Err(Error::unsupported("descending or NULLS FIRST/LAST index columns"));
    }
    match &column.column.expr {
        ast::Expr::Identifier(ident) => Ok(ident_name(ident)),
        other => Err(Error::unsupported(format!("index on expression {other}"))),
    }
}

pub fn plan_create_index(create: &ast::CreateIndex) -> Result<CreateIndexPlan> {
    if create.predicate.is_some() || !create.include.is_empty() || create.using.is_some() || create.concurrently {
        return Err(Error::unsupported("partial, covering, concurrent or typed indexes"));
    }
    let name = match &create.name {
        Some(name) => bind::object_name(name)?,
        None => return Err(Error::Syntax("CREATE INDEX needs an index name".into())),
    };
    let table = bind::object_name(&create.table_name)?;
    let columns = create.columns.iter().map(index_column_name).collect::<Result<Vec<_>>>()?;
    Ok(CreateIndexPlan { name, table, columns, unique: create.unique, if_not_exists: create.if_not_exists })
}

pub fn plan_drop(object_type: ast::ObjectType, if_exists: bool, names: &[ast::ObjectName]) -> Result<Plan> {
    let [name] = names else {
        return Err(Error::unsupported("DROP of several objects"));
    };
    let name = bind::object_name(name)?;
    match object_type {
        ast::ObjectType::Table => Ok(Plan::DropTable { name, if_exists }),
        ast::ObjectType::Index => Ok(Plan::DropIndex { name, if_exists }),
        other => Err(Error::unsupported(format!("DROP {other}"))),
    }
}
