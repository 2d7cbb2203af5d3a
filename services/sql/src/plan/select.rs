//! Planning `SELECT`.
//!
//! Tables join as nested loops in `FROM` order (no reordering: the query's
//! author chose it, and every TPC-C query lists its driving table first).
//! `WHERE` and inner-join `ON` conjuncts are pooled; each is evaluated at
//! the first level where all its tables are joined, and the conjuncts of a
//! level choose that table's access path ([`super::access`]), so an `ON`
//! that binds the inner table's key becomes an index nested-loop join.
//!
//! `ORDER BY` resolves an output ordinal, an output column name or alias,
//! or an expression (added as a hidden output column). When the driving
//! table's scan order already yields the wanted order the sort is dropped,
//! and with no aggregation, `DISTINCT` or filter in between, the `LIMIT`
//! is pushed into the scan. A lone `MIN(c)` / `MAX(c)` over a scan ordered
//! by `c` reads only the first row.

use crate::catalog::{ALL_FAMILIES, Catalog};
use crate::error::{Error, Result};
use crate::limits::JOIN_TABLES_MAX;
use crate::plan::access;
use crate::plan::bind::{self, AggContext, AggFunc, Binder, ParamTypes, Scope, contains_aggregate, ident_name};
use crate::plan::expr::Expr;
use crate::plan::{AggregatePlan, LIMIT_TYPE, Level, SelectPlan, SortKey};
use sqlparser::ast;

pub fn plan_query(catalog: &Catalog, query: &ast::Query, params: &mut ParamTypes) -> Result<SelectPlan> {
    if query.with.is_some() {
        return Err(Error::unsupported("WITH"));
    }
    if query.fetch.is_some() || query.for_clause.is_some() || !query.pipe_operators.is_empty() {
        return Err(Error::unsupported("FETCH / FOR clauses"));
    }
    let select = match query.body.as_ref() {
        ast::SetExpr::Select(select) => select,
        ast::SetExpr::SetOperation { .. } => return Err(Error::unsupported("UNION / INTERSECT / EXCEPT")),
        ast::SetExpr::Query(_) => return Err(Error::unsupported("parenthesised subqueries")),
        ast::SetExpr::Values(_) => return Err(Error::unsupported("VALUES as a query")),
        _ => return Err(Error::unsupported("this query form")),
    };
    if select.top.is_some()
        || select.into.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.connect_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.sort_by.is_empty()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || select.exclude.is_some()
    {
        return Err(Error::unsupported("this SELECT clause"));
    }
    let distinct = match &select.distinct {
        None | Some(ast::Distinct::All) => false,
        Some(ast::Distinct::Distinct) => true,
        Some(ast::Distinct::On(_)) => return Err(Error::unsupported("DISTINCT ON")),
    };

    // FROM and JOIN: the scope, and the ON conditions.
    let mut scope = Scope::default();
    let mut on_conditions = Vec::new();
    for from in &select.from {
        add_table(catalog, &mut scope, &from.relation)?;
        for join in &from.joins {
            let constraint = match &join.join_operator {
                ast::JoinOperator::Join(c) | ast::JoinOperator::Inner(c) => c,
                ast::JoinOperator::CrossJoin(c) => c,
                _ => return Err(Error::unsupported("outer, semi and anti joins")),
            };
            add_table(catalog, &mut scope, &join.relation)?;
            match constraint {
                ast::JoinConstraint::On(e) => on_conditions.push(e),
                ast::JoinConstraint::None => {}
                _ => return Err(Error::unsupported("JOIN ... USING / NATURAL JOIN")),
            }
        }
    }
    if scope.tables.len() > JOIN_TABLES_MAX {
        return Err(Error::ProgramLimitExceeded(format!("more than {JOIN_TABLES_MAX} tables in one query")));
    }

    let mut binder = Binder { scope: &scope, params };

    // WHERE and ON, as conjuncts.
    let mut conjuncts = Vec::new();
    for condition in select.selection.iter().chain(on_conditions) {
        if contains_aggregate(condition) {
            return Err(Error::Grouping("aggregate functions are not allowed in WHERE".into()));
        }
        binder.bind(condition)?.into_conjuncts(&mut conjuncts);
    }

    // The select list, as (name, AST or wildcard position).
    enum Item<'a> {
        Ast(&'a ast::Expr),
        Column(usize),
    }
    let mut items: Vec<(String, Item<'_>)> = Vec::new();
    for item in &select.projection {
        match item {
            ast::SelectItem::UnnamedExpr(e) => items.push((bind::output_name(e), Item::Ast(e))),
            ast::SelectItem::ExprWithAlias { expr, alias } => items.push((ident_name(alias), Item::Ast(expr))),
            ast::SelectItem::Wildcard(options) => {
                check_wildcard_options(options)?;
                if scope.tables.is_empty() {
                    return Err(Error::Syntax("SELECT * with no tables specified is not valid".into()));
                }
                for pos in 0..scope.width() {
                    items.push((scope.column_name(pos).to_string(), Item::Column(pos)));
                }
            }
            ast::SelectItem::QualifiedWildcard(kind, options) => {
                check_wildcard_options(options)?;
                let ast::SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
                    return Err(Error::unsupported("expression.*"));
                };
                let name = bind::object_name(name)?;
                let table =
                    scope.tables.iter().find(|t| t.name == name).ok_or_else(|| {
                        Error::UndefinedTable(format!("missing FROM-clause entry for table \"{name}\""))
                    })?;
                for c in 0..table.table.columns.len() {
                    items.push((table.table.columns[c].name.clone(), Item::Column(table.offset + c)));
                }
            }
            ast::SelectItem::ExprWithAliases { .. } => return Err(Error::unsupported("multiple aliases")),
        }
    }

    let group_asts: Vec<&ast::Expr> = match &select.group_by {
        ast::GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.iter().collect(),
        _ => return Err(Error::unsupported("GROUP BY ALL / ROLLUP / CUBE")),
    };
    let order_items: &[ast::OrderByExpr] = match query.order_by.as_ref().map(|o| &o.kind) {
        None => &[],
        Some(ast::OrderByKind::Expressions(list)) => list,
        Some(ast::OrderByKind::All(_)) => return Err(Error::unsupported("ORDER BY ALL")),
    };
    let aggregating = !group_asts.is_empty()
        || select.having.is_some()
        || items.iter().any(|(_, i)| matches!(i, Item::Ast(e) if contains_aggregate(e)))
        || order_items.iter().any(|o| contains_aggregate(&o.expr));

    // Bind the select list (and GROUP BY keys) in the right mode.
    let mut columns = Vec::with_capacity(items.len());
    let mut projection = Vec::with_capacity(items.len());
    let mut agg_ctx = AggContext::default();
    let outputs: Vec<Option<&ast::Expr>> =
        items.iter().map(|(_, item)| if let Item::Ast(e) = item { Some(*e) } else { None }).collect();
    if aggregating {
        for g in &group_asts {
            let ast = resolve_output_reference(g, &outputs)?;
            if contains_aggregate(ast) {
                return Err(Error::Grouping("aggregate functions are not allowed in GROUP BY".into()));
            }
            let bound = binder.bind(ast)?;
            agg_ctx.group_by.push(bound);
        }
    }
    for (name, item) in &items {
        let expr = match (item, aggregating) {
            (Item::Ast(e), false) => binder.bind(e)?,
            (Item::Ast(e), true) => binder.bind_aggregated(e, &mut agg_ctx)?,
            (Item::Column(pos), false) => Expr::Column(*pos),
            (Item::Column(pos), true) => match agg_ctx.group_by.iter().position(|g| *g == Expr::Column(*pos)) {
                Some(i) => Expr::Column(i),
                None => {
                    return Err(Error::Grouping(format!(
                        "column \"{}\" must appear in the GROUP BY clause or be used in an aggregate function",
                        scope.column_name(*pos)
                    )));
                }
            },
        };
        columns.push(name.clone());
        projection.push(expr);
    }
    let having = match &select.having {
        Some(h) => Some(binder.bind_aggregated(h, &mut agg_ctx)?),
        None => None,
    };

    // ORDER BY: output ordinal, output name, or expression (hidden column).
    let mut sort = Vec::new();
    for item in order_items {
        if item.with_fill.is_some() {
            return Err(Error::unsupported("WITH FILL"));
        }
        let desc = match &item.options.sort {
            None | Some(ast::OrderBySort::Asc) => false,
            Some(ast::OrderBySort::Desc) => true,
            Some(_) => return Err(Error::unsupported("ORDER BY ... USING")),
        };
        let nulls_first = item.options.nulls_first.unwrap_or(desc);
        let column = match &item.expr {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                let ordinal = v.value.to_string().parse::<usize>().ok().filter(|n| (1..=columns.len()).contains(n));
                ordinal.map(|n| n - 1).ok_or_else(|| {
                    Error::InvalidColumnReference(format!("ORDER BY position {} is not in select list", v.value))
                })?
            }
            ast::Expr::Identifier(ident) if columns.iter().any(|c| *c == ident_name(ident)) => {
                columns.iter().position(|c| *c == ident_name(ident)).expect("found above")
            }
            e => {
                let bound = if aggregating { binder.bind_aggregated(e, &mut agg_ctx)? } else { binder.bind(e)? };
                match projection[..columns.len()].iter().position(|p| *p == bound) {
                    Some(i) => i,
                    None => {
                        if distinct {
                            return Err(Error::InvalidColumnReference(
                                "for SELECT DISTINCT, ORDER BY expressions must appear in select list".into(),
                            ));
                        }
                        projection.push(bound);
                        projection.len() - 1
                    }
                }
            }
        };
        sort.push(SortKey { column, desc, nulls_first });
    }

    let limit = bind_limit(&mut binder, query)?;
    let offset = bind_offset(&mut binder, query)?;
    let for_update = match query.locks.as_slice() {
        [] => false,
        locks if locks.iter().all(|l| l.nonblock.is_none() && l.of.is_none()) => true,
        _ => return Err(Error::unsupported("FOR UPDATE OF / NOWAIT / SKIP LOCKED")),
    };
    if for_update && (aggregating || distinct) {
        return Err(Error::unsupported("FOR UPDATE with aggregation or DISTINCT"));
    }

    // Levels: each conjunct goes to the first level that has its tables.
    let mut per_level: Vec<Vec<Expr>> = vec![Vec::new(); scope.tables.len().max(1)];
    for conjunct in conjuncts {
        let mut level = 0;
        conjunct.visit_columns(&mut |c| level = level.max(scope.locate(c).0));
        per_level[level].push(conjunct);
    }

    // The order the driving table's scan should produce, if it can.
    let wanted_order: Option<Vec<(usize, bool)>> = if !aggregating && !sort.is_empty() {
        sort.iter()
            .map(|k| match &projection[k.column] {
                Expr::Column(pos) if k.nulls_first == k.desc => Some((*pos, k.desc)),
                _ => None,
            })
            .collect()
    } else {
        None
    };
    // A lone MIN / MAX of a column: the first row of a scan in that order.
    let min_max: Option<(usize, bool)> = match agg_ctx.aggs.as_slice() {
        [spec] if aggregating && agg_ctx.group_by.is_empty() && scope.tables.len() == 1 => {
            match (&spec.func, &spec.arg) {
                (AggFunc::Min, Some(Expr::Column(pos))) => Some((*pos, false)),
                (AggFunc::Max, Some(Expr::Column(pos))) => Some((*pos, true)),
                _ => None,
            }
        }
        _ => None,
    };

    let mut levels = Vec::with_capacity(scope.tables.len());
    let mut sort_satisfied = false;
    let mut first_row_only = false;
    for (i, table) in scope.tables.iter().enumerate() {
        let level_conjuncts = std::mem::take(&mut per_level[i]);
        let order = if i == 0 { wanted_order.clone().or_else(|| min_max.map(|m| vec![m])) } else { None };
        let choice = access::choose(&table.table, table.offset, &level_conjuncts, order.as_deref());
        if i == 0 && choice.order_satisfied {
            if wanted_order.is_some() {
                sort_satisfied = true;
            } else {
                first_row_only = true;
            }
        }
        let filter = Expr::conjunction(
            level_conjuncts
                .into_iter()
                .enumerate()
                .filter(|(j, _)| !choice.consumed.contains(j))
                .map(|(_, e)| e)
                .collect(),
        );
        levels.push(Level {
            table: table.table.clone(),
            name: table.name.clone(),
            offset: table.offset,
            access: choice.access,
            filter,
            families: ALL_FAMILIES,
        });
    }
    // Without tables (`SELECT 1 WHERE $1 > 0`) the conjuncts filter the
    // one empty row.
    let constant_filter =
        if scope.tables.is_empty() { Expr::conjunction(std::mem::take(&mut per_level[0])) } else { None };
    if sort_satisfied {
        sort.clear();
    }
    if let Some(first) = levels.first_mut() {
        let single = scope.tables.len() == 1 && first.filter.is_none();
        if first_row_only {
            first.access.first_row_only = true;
            first.access.limit_pushdown = single;
        } else if sort.is_empty() && !aggregating && !distinct && single && limit.is_some() {
            first.access.limit_pushdown = true;
        }
    }

    let aggregate = aggregating.then_some(AggregatePlan { group_by: agg_ctx.group_by, aggs: agg_ctx.aggs, having });
    // Point reads fetch only the column families holding a column the query
    // uses (the projection is over the aggregation row when aggregating).
    match &aggregate {
        Some(aggregate) => {
            let args = aggregate.aggs.iter().filter_map(|a| a.arg.as_ref());
            super::choose_families(&mut levels, aggregate.group_by.iter().chain(args), None);
        }
        None => super::choose_families(&mut levels, &projection, None),
    }
    Ok(SelectPlan {
        levels,
        constant_filter,
        aggregate,
        projection,
        columns,
        distinct,
        sort,
        limit,
        offset,
        for_update,
    })
}

fn check_wildcard_options(options: &ast::WildcardAdditionalOptions) -> Result<()> {
    if options.opt_exclude.is_some()
        || options.opt_except.is_some()
        || options.opt_replace.is_some()
        || options.opt_rename.is_some()
        || options.opt_ilike.is_some()
    {
        return Err(Error::unsupported("wildcard options"));
    }
    Ok(())
}

fn add_table(catalog: &Catalog, scope: &mut Scope, relation: &ast::TableFactor) -> Result<()> {
    match relation {
        ast::TableFactor::Table { name, alias, args: None, with_hints, version: None, partitions, .. }
            if with_hints.is_empty() && partitions.is_empty() =>
        {
            let table_name = bind::object_name(name)?;
            let table = catalog.table(&table_name)?.clone();
            let scope_name = match alias {
                Some(alias) if alias.columns.is_empty() => ident_name(&alias.name),
                Some(_) => return Err(Error::unsupported("column aliases on tables")),
                None => table_name,
            };
            scope.push(scope_name, table)
        }
        ast::TableFactor::Derived { .. } => Err(Error::unsupported("subqueries in FROM")),
        _ => Err(Error::unsupported("this FROM item")),
    }
}

/// GROUP BY may name an output ordinal or an output alias (PostgreSQL).
fn resolve_output_reference<'a>(expr: &'a ast::Expr, outputs: &[Option<&'a ast::Expr>]) -> Result<&'a ast::Expr> {
    match expr {
        ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
            let n = v.value.to_string().parse::<usize>().ok().filter(|n| (1..=outputs.len()).contains(n));
            match n.and_then(|n| outputs[n - 1]) {
                Some(e) => Ok(e),
                None => {
                    Err(Error::InvalidColumnReference(format!("GROUP BY position {} is not in select list", v.value)))
                }
            }
        }
        _ => Ok(expr),
    }
}

fn bind_limit(binder: &mut Binder<'_>, query: &ast::Query) -> Result<Option<Expr>> {
    match &query.limit_clause {
        None => Ok(None),
        Some(ast::LimitClause::LimitOffset { limit: Some(e), limit_by, .. }) if limit_by.is_empty() => {
            bind_count(binder, e).map(Some)
        }
        Some(ast::LimitClause::LimitOffset { limit: None, limit_by, .. }) if limit_by.is_empty() => Ok(None),
        Some(_) => Err(Error::unsupported("this LIMIT form")),
    }
}

fn bind_offset(binder: &mut Binder<'_>, query: &ast::Query) -> Result<Option<Expr>> {
    match &query.limit_clause {
        Some(ast::LimitClause::LimitOffset { offset: Some(offset), .. }) => bind_count(binder, &offset.value).map(Some),
        _ => Ok(None),
    }
}

/// A `LIMIT` / `OFFSET` value: an integer literal or a parameter.
fn bind_count(binder: &mut Binder<'_>, ast: &ast::Expr) -> Result<Expr> {
    match binder.bind(ast)? {
        e @ Expr::Literal(geodb_storage::Value::Int(_) | geodb_storage::Value::Null) => Ok(e),
        Expr::Param(i) => {
            binder.params.note(i, &LIMIT_TYPE);
            Ok(Expr::Param(i))
        }
        _ => Err(Error::DatatypeMismatch("argument of LIMIT must be an integer constant or parameter".into())),
    }
}
