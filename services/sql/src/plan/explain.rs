//! The text of `EXPLAIN`: one line per plan node, outermost first, inputs
//! indented under the node that consumes them.
//!
//! ```text
//! Limit 1
//!   Scan orders INDEX orders_idx (prefix 3 cols) reverse limit 1
//! Aggregate
//!   NestedLoopJoin
//!     Scan order_line PRIMARY KEY (prefix 2 cols, range on ol_o_id)
//!     Get stock PRIMARY KEY (s_w_id, s_i_id)
//! ```

use geodb_storage::Value;

use crate::plan::access::IndexChoice;
use crate::plan::expr::Expr;
use crate::plan::{Level, Plan, SelectPlan};

/// The lines `EXPLAIN` answers for a plan.
pub fn explain(plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    match plan {
        Plan::Select(select) => explain_select(select, &mut lines),
        Plan::Insert(insert) => {
            lines.push(format!(
                "Insert {} ({} rows){}",
                insert.table.name,
                insert.rows.len(),
                if insert.do_nothing { " on conflict do nothing" } else { "" }
            ));
        }
        Plan::Update(update) => {
            lines.push(format!("Update {}", update.level.table.name));
            lines.push(format!("  {}", access_line(&update.level, None)));
        }
        Plan::Delete(delete) => {
            lines.push(format!("Delete {}", delete.level.table.name));
            lines.push(format!("  {}", access_line(&delete.level, None)));
        }
        Plan::CreateTable(create) => lines.push(format!("CreateTable {}", create.name)),
        Plan::DropTable { name, .. } => lines.push(format!("DropTable {name}")),
        Plan::CreateIndex(create) => lines.push(format!("CreateIndex {} ON {}", create.name, create.table)),
        Plan::DropIndex { name, .. } => lines.push(format!("DropIndex {name}")),
        Plan::Explain(inner) => lines.extend(explain(inner)),
        Plan::Show(show) => lines.push(format!("Show {}", show.column())),
    }
    lines
}

fn explain_select(select: &SelectPlan, lines: &mut Vec<String>) {
    let mut depth = 0;
    let push = |lines: &mut Vec<String>, depth: &mut usize, text: String| {
        lines.push(format!("{}{}", "  ".repeat(*depth), text));
        *depth += 1;
    };
    if let Some(limit) = &select.limit {
        push(lines, &mut depth, format!("Limit {}", count_text(limit)));
    }
    if select.offset.is_some() {
        push(lines, &mut depth, "Offset".into());
    }
    if !select.sort.is_empty() {
        let keys: Vec<String> =
            select.sort.iter().map(|k| format!("{}{}", k.column + 1, if k.desc { " desc" } else { "" })).collect();
        push(lines, &mut depth, format!("Sort ({})", keys.join(", ")));
    }
    if select.distinct {
        push(lines, &mut depth, "Distinct".into());
    }
    if let Some(aggregate) = &select.aggregate {
        if aggregate.having.is_some() {
            push(lines, &mut depth, "Filter (having)".into());
        }
        let text = if aggregate.group_by.is_empty() {
            "Aggregate".to_string()
        } else {
            format!("Aggregate (group by {} keys)", aggregate.group_by.len())
        };
        push(lines, &mut depth, text);
    }
    match select.levels.as_slice() {
        [] => push(lines, &mut depth, "Values (1 row)".into()),
        [only] => push(lines, &mut depth, access_line(only, select.limit.as_ref())),
        levels => {
            push(lines, &mut depth, "NestedLoopJoin".into());
            for level in levels {
                lines.push(format!("{}{}", "  ".repeat(depth), access_line(level, select.limit.as_ref())));
            }
        }
    }
}

fn count_text(expr: &Expr) -> String {
    match expr {
        Expr::Literal(Value::Int(n)) => n.to_string(),
        Expr::Param(i) => format!("${}", i + 1),
        _ => "?".into(),
    }
}

/// `Get t PRIMARY KEY (a, b)`, `Scan t INDEX i (prefix 2 cols, range on c)
/// reverse limit 1`, `Scan t FULL`.
pub fn access_line(level: &Level, limit: Option<&Expr>) -> String {
    let table = &level.table;
    let access = &level.access;
    let index = match access.index {
        IndexChoice::Primary => "PRIMARY KEY".to_string(),
        IndexChoice::Secondary(i) => format!("INDEX {}", table.indexes[i].name),
    };
    let in_values = access.in_list.as_ref().map(|list| format!(" IN list of {}", list.len()));
    let mut line = if access.point {
        let names: Vec<&str> = access.key_columns.iter().map(|&c| table.columns[c].name.as_str()).collect();
        format!("Get {} {} ({}){}", table.name, index, names.join(", "), in_values.unwrap_or_default())
    } else {
        let mut parts = Vec::new();
        if !access.eq.is_empty() {
            parts.push(format!("prefix {} cols", access.eq.len()));
        }
        if let Some(list) = &access.in_list {
            let column = access.key_columns[access.eq.len()];
            parts.push(format!("{} IN list of {}", table.columns[column].name, list.len()));
        }
        if access.lower.is_some() || access.upper.is_some() {
            let column = access.key_columns[access.eq.len()];
            parts.push(format!("range on {}", table.columns[column].name));
        }
        if parts.is_empty() && access.index == IndexChoice::Primary {
            format!("Scan {} FULL", table.name)
        } else if parts.is_empty() {
            format!("Scan {} {} FULL", table.name, index)
        } else {
            format!("Scan {} {} ({})", table.name, index, parts.join(", "))
        }
    };
    if access.reverse {
        line.push_str(" reverse");
    }
    if access.first_row_only {
        line.push_str(if access.limit_pushdown { " limit 1" } else { " first row" });
    } else if access.limit_pushdown
        && let Some(limit) = limit
    {
        line.push_str(&format!(" limit {}", count_text(limit)));
    }
    line
}
