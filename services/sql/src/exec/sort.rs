//! Orderings of values and rows for sorting, grouping and `DISTINCT`.
//!
//! Grouping and `DISTINCT` use [`Value::total_cmp`] (NULLs equal each
//! other, `1` equals `1.0`). `ORDER BY` follows PostgreSQL: ascending puts
//! NULLs last, descending first, unless `NULLS FIRST/LAST` says otherwise.

use std::cmp::Ordering;

use geodb_storage::Value;

use crate::plan::SortKey;

/// A value ordered by [`Value::total_cmp`], for sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrdValue(pub Value);

impl PartialOrd for OrdValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdValue {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A row ordered lexicographically by [`Value::total_cmp`], for maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrdRow(pub Vec<Value>);

impl PartialOrd for OrdRow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdRow {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_rows(&self.0, &other.0)
    }
}

fn compare_rows(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.total_cmp(y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

/// Sorts rows by `keys` (stable: equal rows keep their scan order).
pub fn sort_rows(rows: &mut [Vec<Value>], keys: &[SortKey]) {
    rows.sort_by(|a, b| {
        for key in keys {
            let (x, y) = (&a[key.column], &b[key.column]);
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if key.nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (false, true) => {
                    if key.nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, false) => {
                    let ord = x.total_cmp(y);
                    if key.desc { ord.reverse() } else { ord }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}
