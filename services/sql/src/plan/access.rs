//! Access paths: how one table of a query is read.
//!
//! For each table the planner looks at the conjuncts of `WHERE` and `ON`
//! that compare one of its columns with something already known when the
//! table is read — a literal, a parameter, or a column of a table earlier
//! in the join order — and, for the primary key and every secondary index,
//! counts how many leading key columns are bound by equality, and whether
//! the next one has a range (`<`, `<=`, `>`, `>=`, `BETWEEN`). The best
//! candidate wins, by:
//!
//! 1. a point read: every column of the primary key (or of a unique index)
//!    bound by equality — one `get`;
//! 2. more leading columns bound by equality (a narrower prefix);
//! 3. a range on the next column;
//! 4. a scan order that makes an `ORDER BY` (or a `MIN`/`MAX`) free;
//! 5. the primary key over a secondary index (no second read per row).
//!
//! An `IN (...)` list of known values on the key column right after the
//! equality prefix counts as one more bound column: the table is read once
//! per distinct value — a point read each when that completes a unique key
//! (TPC-C New-Order's `i_id IN (...)` is a handful of gets, not a scan of
//! the item table). Such reads come back in key order of the values, which
//! no `ORDER BY` is assumed to match.
//!
//! With nothing bound the table is scanned in full. Equality conjuncts the
//! key consumes are dropped from the table's filter (the key encodes the
//! column's exact value); range conjuncts stay in the filter, so a bound
//! that cannot be converted exactly to the column's type only widens the
//! scan. A scan's key order is the index columns after the equality prefix
//! (then the primary key, for a secondary index), so it satisfies an
//! `ORDER BY` of those columns, all ascending (a forward scan) or all
//! descending (a reverse scan), provided the columns hold no NULL: NULL
//! keys sort first, where PostgreSQL's ascending order puts them last.

use std::collections::HashSet;

use crate::catalog::Table;
use crate::plan::expr::{CmpOp, Expr};

/// Which index an access reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexChoice {
    Primary,
    /// Position in [`Table::indexes`].
    Secondary(usize),
}

/// One end of a key range.
#[derive(Clone, Debug)]
pub struct RangeBound {
    pub expr: Expr,
    pub inclusive: bool,
}

/// How one table is read.
#[derive(Clone, Debug)]
pub struct Access {
    pub index: IndexChoice,
    /// Table positions of the index's key columns.
    pub key_columns: Vec<usize>,
    /// Values of the leading key columns, bound by equality (over the
    /// joined row of the earlier tables, and parameters).
    pub eq: Vec<Expr>,
    /// Values of key column `eq.len()`, from an `IN (...)` list: the
    /// access is repeated for each distinct value (no range then).
    pub in_list: Option<Vec<Expr>>,
    /// Range on key column `eq.len()`.
    pub lower: Option<RangeBound>,
    pub upper: Option<RangeBound>,
    /// Every key column is bound (by `eq`, then `in_list`) and the key is
    /// unique: one `get` (per `in_list` value).
    pub point: bool,
    /// Scan in descending key order.
    pub reverse: bool,
    /// The statement's `LIMIT` (plus `OFFSET`) applies to this scan as is.
    pub limit_pushdown: bool,
    /// Stop after the first row that passes the filter (`MIN` / `MAX`).
    pub first_row_only: bool,
}

impl Access {
    /// Calls `f` with every expression the access path evaluates.
    pub fn visit_exprs(&self, f: &mut impl FnMut(&Expr)) {
        self.eq.iter().for_each(&mut *f);
        self.in_list.iter().flatten().for_each(&mut *f);
        self.lower.iter().chain(&self.upper).for_each(|bound| f(&bound.expr));
    }
}

/// A conjunct in the form the chooser looks for: `column op value`.
struct Bound<'a> {
    column: usize,
    op: CmpOp,
    value: &'a Expr,
}

/// The result of choosing: the access, which conjuncts it consumed, and
/// whether it satisfies the wanted order.
pub struct Choice {
    pub access: Access,
    pub consumed: Vec<usize>,
    pub order_satisfied: bool,
}

/// Chooses how to read `table`, whose columns start at `offset` in the
/// joined row, given the conjuncts evaluated at this table's level and the
/// wanted order (joined-row positions and descending flags), if any.
pub fn choose(table: &Table, offset: usize, conjuncts: &[Expr], order: Option<&[(usize, bool)]>) -> Choice {
    let width = table.columns.len();
    // Conjuncts of the shape `column op known` (or `BETWEEN`), by conjunct.
    let mut bounds: Vec<(usize, Bound<'_>)> = Vec::new();
    // `column IN (known, ...)` lists, by column.
    let mut in_lists: Vec<(usize, &Vec<Expr>)> = Vec::new();
    let mut restricted: HashSet<usize> = HashSet::new();
    for (i, conjunct) in conjuncts.iter().enumerate() {
        let known = |e: &Expr| {
            let mut ok = true;
            e.visit_columns(&mut |c| ok &= c < offset);
            ok
        };
        let own = |e: &Expr| match e {
            Expr::Column(c) if (offset..offset + width).contains(c) => Some(c - offset),
            _ => None,
        };
        match conjunct {
            Expr::Compare(op, a, b) if *op != CmpOp::NotEq => {
                if let Some(column) = own(a)
                    && known(b)
                {
                    bounds.push((i, Bound { column, op: *op, value: b }));
                    restricted.insert(column);
                } else if let Some(column) = own(b)
                    && known(a)
                {
                    bounds.push((i, Bound { column, op: op.flip(), value: a }));
                    restricted.insert(column);
                }
            }
            Expr::InList { expr, list, negated: false } => {
                if let Some(column) = own(expr)
                    && list.iter().all(known)
                {
                    in_lists.push((column, list));
                    restricted.insert(column);
                }
            }
            Expr::Between { expr, low, high, negated: false } => {
                if let Some(column) = own(expr)
                    && known(low)
                    && known(high)
                {
                    bounds.push((i, Bound { column, op: CmpOp::GtEq, value: low }));
                    bounds.push((i, Bound { column, op: CmpOp::LtEq, value: high }));
                    restricted.insert(column);
                }
            }
            _ => {}
        }
        // Any comparison rejects NULL, which makes a nullable column safe
        // to order by through the index.
        if let Expr::Compare(_, a, b) = conjunct {
            for side in [a, b] {
                if let Some(c) = own(side) {
                    restricted.insert(c);
                }
            }
        }
    }

    let mut candidates = vec![(IndexChoice::Primary, table.primary_key.clone(), true)];
    for (i, index) in table.indexes.iter().enumerate() {
        candidates.push((IndexChoice::Secondary(i), index.columns.clone(), index.unique));
    }

    let mut best: Option<(Score, Choice)> = None;
    for (index, key_columns, unique) in candidates {
        let mut eq = Vec::new();
        let mut consumed = Vec::new();
        for &col in &key_columns {
            match bounds.iter().find(|(_, b)| b.column == col && b.op == CmpOp::Eq) {
                Some((i, b)) => {
                    eq.push(b.value.clone());
                    consumed.push(*i);
                }
                None => break,
            }
        }
        // An IN list on the next key column; the conjunct stays in the
        // filter, so the list needs no exact conversion to be correct.
        let in_list = key_columns
            .get(eq.len())
            .and_then(|col| in_lists.iter().find(|(column, _)| column == col))
            .map(|(_, list)| (*list).clone());
        let bound_count = eq.len() + usize::from(in_list.is_some());
        let (mut lower, mut upper) = (None, None);
        if let Some(&col) = key_columns.get(eq.len())
            && in_list.is_none()
        {
            for (_, b) in bounds.iter().filter(|(_, b)| b.column == col) {
                let bound = RangeBound { expr: b.value.clone(), inclusive: matches!(b.op, CmpOp::GtEq | CmpOp::LtEq) };
                match b.op {
                    CmpOp::Gt | CmpOp::GtEq if lower.is_none() => lower = Some(bound),
                    CmpOp::Lt | CmpOp::LtEq if upper.is_none() => upper = Some(bound),
                    _ => {}
                }
            }
        }
        let point = bound_count == key_columns.len() && unique;
        // Key order after the equality prefix.
        let mut order_columns: Vec<usize> = key_columns[eq.len()..].to_vec();
        if index != IndexChoice::Primary {
            order_columns.extend(table.primary_key.iter().filter(|c| !key_columns.contains(c)));
        }
        let bound_columns = &key_columns[..eq.len()];
        let satisfied = order
            .filter(|_| in_list.is_none())
            .and_then(|order| order_satisfied(table, offset, order, bound_columns, &order_columns, &restricted));
        let score = Score {
            point: u8::from(point) * 2 + u8::from(point && index == IndexChoice::Primary),
            eq: bound_count,
            range: lower.is_some() || upper.is_some(),
            order: satisfied.is_some(),
            primary: index == IndexChoice::Primary,
        };
        let access = Access {
            index,
            key_columns,
            eq,
            in_list,
            lower,
            upper,
            point,
            reverse: satisfied.unwrap_or(false) && !point,
            limit_pushdown: false,
            first_row_only: false,
        };
        let single_point = point && access.in_list.is_none();
        let choice =
            Choice { access, consumed, order_satisfied: satisfied.is_some() || (single_point && order.is_some()) };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, choice));
        }
    }
    best.expect("the primary key is always a candidate").1
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Score {
    point: u8,
    eq: usize,
    range: bool,
    order: bool,
    primary: bool,
}

/// `Some(reverse)` when scanning in key order (forward or reverse) yields
/// rows in the wanted `order`.
fn order_satisfied(
    table: &Table,
    offset: usize,
    order: &[(usize, bool)],
    bound_columns: &[usize],
    order_columns: &[usize],
    restricted: &HashSet<usize>,
) -> Option<bool> {
    let mut direction = None;
    let mut next = 0;
    for &(pos, desc) in order {
        let column = pos.checked_sub(offset).filter(|c| *c < table.columns.len())?;
        if bound_columns.contains(&column) {
            continue;
        }
        if order_columns.get(next) != Some(&column) {
            return None;
        }
        if !table.columns[column].not_null && !restricted.contains(&column) {
            return None;
        }
        if *direction.get_or_insert(desc) != desc {
            return None;
        }
        next += 1;
    }
    Some(direction.unwrap_or(false))
}
