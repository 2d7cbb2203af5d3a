//! Planning `INSERT`, `UPDATE` and `DELETE`.
//!
//! `INSERT` takes `VALUES` rows (missing columns are NULL); each value is
//! assigned to its column's type when the row is built. `UPDATE` and
//! `DELETE` read their table through an access path chosen exactly as for
//! a one-table `SELECT` ([`super::access`]), so `UPDATE district ... WHERE
//! d_w_id = $1 AND d_id = $2` is a point read and a point write.

use std::collections::HashSet;

use sqlparser::ast;

use crate::catalog::{ALL_FAMILIES, Catalog};
use crate::error::{Error, Result};
use crate::plan::access;
use crate::plan::bind::{self, Binder, ParamTypes, Scope, contains_aggregate, ident_name};
use crate::plan::expr::Expr;
use crate::plan::{DeletePlan, InsertPlan, Level, UpdatePlan};

pub fn plan_insert(catalog: &Catalog, insert: &ast::Insert, params: &mut ParamTypes) -> Result<InsertPlan> {
    if insert.returning.is_some() {
        return Err(Error::unsupported("RETURNING"));
    }
    if insert.or.is_some() || insert.ignore || insert.overwrite || !insert.assignments.is_empty() {
        return Err(Error::unsupported("this INSERT form"));
    }
    let ast::TableObject::TableName(name) = &insert.table else {
        return Err(Error::unsupported("INSERT into a table function"));
    };
    let table = catalog.table(&bind::object_name(name)?)?.clone();
    let do_nothing = match &insert.on {
        None => false,
        Some(ast::OnInsert::OnConflict(conflict)) if matches!(conflict.action, ast::OnConflictAction::DoNothing) => {
            true
        }
        Some(_) => return Err(Error::unsupported("ON CONFLICT DO UPDATE / ON DUPLICATE KEY")),
    };
    // Target columns, by table position.
    let targets: Vec<usize> = if insert.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        let mut seen = HashSet::new();
        let mut targets = Vec::with_capacity(insert.columns.len());
        for column in &insert.columns {
            let name = bind::object_name(column)?;
            let pos = table.column_index(&name).ok_or_else(|| Error::UndefinedColumn(name.clone()))?;
            if !seen.insert(pos) {
                return Err(Error::DuplicateColumn(name));
            }
            targets.push(pos);
        }
        targets
    };
    let source = insert.source.as_ref().ok_or_else(|| Error::unsupported("INSERT without VALUES"))?;
    let ast::SetExpr::Values(values) = source.body.as_ref() else {
        return Err(Error::unsupported("INSERT ... SELECT"));
    };
    if source.order_by.is_some() || source.limit_clause.is_some() || source.with.is_some() {
        return Err(Error::unsupported("this INSERT source"));
    }
    let scope = Scope::default();
    let mut binder = Binder { scope: &scope, params };
    let mut rows = Vec::with_capacity(values.rows.len());
    for row in &values.rows {
        let row = &row.content;
        if row.len() != targets.len() {
            return Err(Error::Syntax(format!(
                "INSERT has {} expressions but {} target columns",
                row.len(),
                targets.len()
            )));
        }
        let mut exprs = vec![Expr::Literal(geodb_storage::Value::Null); table.columns.len()];
        for (ast, &pos) in row.iter().zip(&targets) {
            if contains_aggregate(ast) {
                return Err(Error::Grouping("aggregate functions are not allowed in VALUES".into()));
            }
            let expr = binder.bind(ast)?;
            if let Expr::Param(i) = expr {
                binder.params.note(i, &table.columns[pos].ty);
            }
            exprs[pos] = expr;
        }
        rows.push(exprs);
    }
    Ok(InsertPlan { table, rows, do_nothing })
}

pub fn plan_update(catalog: &Catalog, update: &ast::Update, params: &mut ParamTypes) -> Result<UpdatePlan> {
    if update.from.is_some() || update.returning.is_some() || update.or.is_some() || update.limit.is_some() {
        return Err(Error::unsupported("UPDATE ... FROM / RETURNING / LIMIT"));
    }
    if !update.table.joins.is_empty() {
        return Err(Error::unsupported("UPDATE of a join"));
    }
    let scope = single_table_scope(catalog, &update.table.relation)?;
    let table = scope.tables[0].table.clone();
    let mut binder = Binder { scope: &scope, params };
    let mut assignments = Vec::with_capacity(update.assignments.len());
    let mut seen = HashSet::new();
    for assignment in &update.assignments {
        let ast::AssignmentTarget::ColumnName(name) = &assignment.target else {
            return Err(Error::unsupported("tuple assignment"));
        };
        let column = match name.0.last() {
            Some(ast::ObjectNamePart::Identifier(ident)) => ident_name(ident),
            _ => return Err(Error::Syntax(format!("bad column {name}"))),
        };
        let pos = table.column_index(&column).ok_or_else(|| Error::UndefinedColumn(column.clone()))?;
        if !seen.insert(pos) {
            return Err(Error::Syntax(format!("multiple assignments to same column \"{column}\"")));
        }
        if contains_aggregate(&assignment.value) {
            return Err(Error::Grouping("aggregate functions are not allowed in UPDATE".into()));
        }
        let expr = binder.bind(&assignment.value)?;
        if let Expr::Param(i) = expr {
            binder.params.note(i, &table.columns[pos].ty);
        }
        assignments.push((pos, expr));
    }
    let mut level = plan_level(&scope, &mut binder, update.selection.as_ref())?;
    // The families to read: what the statement reads, what it changes, the
    // columns of every index holding a changed column (its old entry), and
    // every column when the row's key changes.
    let assigned: Vec<usize> = assignments.iter().map(|(pos, _)| *pos).collect();
    if !assigned.iter().any(|pos| table.primary_key.contains(pos)) {
        let indexed = table.indexes.iter().filter(|index| index.columns.iter().any(|c| assigned.contains(c)));
        let columns = assigned.iter().copied().chain(indexed.flat_map(|index| index.columns.iter().copied()));
        let exprs = assignments.iter().map(|(_, expr)| expr);
        super::choose_families(std::slice::from_mut(&mut level), exprs, columns);
    }
    Ok(UpdatePlan { level, assignments })
}

pub fn plan_delete(catalog: &Catalog, delete: &ast::Delete, params: &mut ParamTypes) -> Result<DeletePlan> {
    if delete.using.is_some() || delete.returning.is_some() || delete.limit.is_some() || !delete.order_by.is_empty() {
        return Err(Error::unsupported("DELETE ... USING / RETURNING / ORDER BY / LIMIT"));
    }
    let from = match &delete.from {
        ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from) => from,
    };
    let [from] = from.as_slice() else {
        return Err(Error::unsupported("DELETE from several tables"));
    };
    if !from.joins.is_empty() || !delete.tables.is_empty() {
        return Err(Error::unsupported("DELETE of a join"));
    }
    let scope = single_table_scope(catalog, &from.relation)?;
    let mut binder = Binder { scope: &scope, params };
    let level = plan_level(&scope, &mut binder, delete.selection.as_ref())?;
    Ok(DeletePlan { level })
}

fn single_table_scope(catalog: &Catalog, relation: &ast::TableFactor) -> Result<Scope> {
    let ast::TableFactor::Table { name, alias, args: None, .. } = relation else {
        return Err(Error::unsupported("this target table"));
    };
    let table_name = bind::object_name(name)?;
    let table = catalog.table(&table_name)?.clone();
    let scope_name = alias.as_ref().map_or(table_name, |a| ident_name(&a.name));
    let mut scope = Scope::default();
    scope.push(scope_name, table)?;
    Ok(scope)
}

/// The access path and filter of a one-table statement's `WHERE`.
fn plan_level(scope: &Scope, binder: &mut Binder<'_>, selection: Option<&ast::Expr>) -> Result<Level> {
    let mut conjuncts = Vec::new();
    if let Some(selection) = selection {
        if contains_aggregate(selection) {
            return Err(Error::Grouping("aggregate functions are not allowed in WHERE".into()));
        }
        binder.bind(selection)?.into_conjuncts(&mut conjuncts);
    }
    let table = &scope.tables[0];
    let choice = access::choose(&table.table, 0, &conjuncts, None);
    let filter = Expr::conjunction(
        conjuncts.into_iter().enumerate().filter(|(j, _)| !choice.consumed.contains(j)).map(|(_, e)| e).collect(),
    );
    Ok(Level {
        table: table.table.clone(),
        name: table.name.clone(),
        offset: 0,
        access: choice.access,
        filter,
        families: ALL_FAMILIES,
    })
}
