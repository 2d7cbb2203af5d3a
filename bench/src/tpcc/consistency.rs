//! The consistency conditions of TPC-C clause 3.3.2, checked through SQL
//! against the target after every run, with the terminals stopped:
//!
//! 1. (3.3.2.1) W_YTD = sum(D_YTD) for every warehouse.
//! 2. (3.3.2.2) D_NEXT_O_ID − 1 = max(O_ID) = max(NO_O_ID) for every district.
//! 3. (3.3.2.3) max(NO_O_ID) − min(NO_O_ID) + 1 = the number of NEW-ORDER
//!    rows, for every district.
//! 4. (3.3.2.4) sum(O_OL_CNT) = the number of ORDER-LINE rows, for every
//!    district.
//! 5. (3.3.2.5, by counts) the orders with a null O_CARRIER_ID are as many
//!    as the NEW-ORDER rows, for every district. The clause asks for a
//!    row-by-row match; counting is what one statement without outer joins
//!    can do, and it catches a lost or doubled delivery.
//!
//! Each query reads one district (or one warehouse's districts), so no
//! statement touches more than a district's order lines.
//! Money is compared exactly, in cents.

use super::schema::{DISTRICTS_PER_WAREHOUSE, Population};
use super::session::{DbError, Session, Value, parse_scaled};

/// The verdict on one condition over all warehouses.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub clause: &'static str,
    pub condition: &'static str,
    /// The violations found, at most [`VIOLATIONS_SHOWN_MAX`] of them.
    pub violations: Vec<String>,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Violations listed per condition; more only repeat the news.
const VIOLATIONS_SHOWN_MAX: usize = 10;

fn int(v: i64) -> Value {
    Value::Int(v)
}

fn money_cents(value: &Value) -> Result<i128, DbError> {
    let text = value.as_decimal()?;
    parse_scaled(&text, 2).ok_or_else(|| DbError::protocol(format!("not a money amount: {text:?}")))
}

/// Integer or NULL (an aggregate over no rows).
fn optional_int(value: &Value) -> Result<Option<i64>, DbError> {
    if value.is_null() { Ok(None) } else { value.as_i64().map(Some) }
}

pub async fn check<S: Session>(session: &mut S, population: &Population) -> Result<Vec<Check>, DbError> {
    let mut checks = vec![
        Check { clause: "3.3.2.1", condition: "W_YTD = sum(D_YTD)", violations: Vec::new() },
        Check { clause: "3.3.2.2", condition: "D_NEXT_O_ID - 1 = max(O_ID) = max(NO_O_ID)", violations: Vec::new() },
        Check {
            clause: "3.3.2.3",
            condition: "max(NO_O_ID) - min(NO_O_ID) + 1 = count(NEW-ORDER)",
            violations: Vec::new(),
        },
        Check { clause: "3.3.2.4", condition: "sum(O_OL_CNT) = count(ORDER-LINE)", violations: Vec::new() },
        Check {
            clause: "3.3.2.5",
            condition: "count(O_CARRIER_ID IS NULL) = count(NEW-ORDER) (by counts)",
            violations: Vec::new(),
        },
    ];
    let mut report = |index: usize, violation: String| {
        let violations: &mut Vec<String> = &mut checks[index].violations;
        if violations.len() < VIOLATIONS_SHOWN_MAX {
            violations.push(violation);
        }
    };
    for w in 1..=population.warehouses {
        let rows = session.execute("SELECT w_ytd FROM warehouse WHERE w_id = $1", &[int(w)]).await?;
        let w_ytd = money_cents(&rows.one("warehouse")?[0])?;
        let rows = session.execute("SELECT SUM(d_ytd) FROM district WHERE d_w_id = $1", &[int(w)]).await?;
        let d_ytd = money_cents(&rows.one("districts")?[0])?;
        if w_ytd != d_ytd {
            report(0, format!("warehouse {w}: W_YTD {w_ytd} cents, sum(D_YTD) {d_ytd} cents"));
        }
        for d in 1..=DISTRICTS_PER_WAREHOUSE {
            let key = [int(w), int(d)];
            let rows =
                session.execute("SELECT d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2", &key).await?;
            let next = rows.one("district")?[0].as_i64()?;
            let rows = session
                .execute("SELECT MAX(o_id), SUM(o_ol_cnt) FROM orders WHERE o_w_id = $1 AND o_d_id = $2", &key)
                .await?;
            let row = rows.one("orders")?;
            let (max_order, line_count_sum) = (optional_int(&row[0])?, optional_int(&row[1])?.unwrap_or(0));
            let rows = session
                .execute(
                    "SELECT COUNT(*), MIN(no_o_id), MAX(no_o_id) FROM new_order WHERE no_w_id = $1 AND no_d_id = $2",
                    &key,
                )
                .await?;
            let row = rows.one("new orders")?;
            let (new_orders, min_new, max_new) = (row[0].as_i64()?, optional_int(&row[1])?, optional_int(&row[2])?);
            let rows =
                session.execute("SELECT COUNT(*) FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2", &key).await?;
            let order_lines = rows.one("order lines")?[0].as_i64()?;
            let rows = session
                .execute("SELECT COUNT(*) FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_carrier_id IS NULL", &key)
                .await?;
            let undelivered = rows.one("undelivered orders")?[0].as_i64()?;

            // 3.3.2.2: with no new-orders left, max(NO_O_ID) has no value
            // and only the ORDER half of the condition applies.
            if max_order != Some(next - 1) || max_new.is_some_and(|m| m != next - 1) {
                report(
                    1,
                    format!(
                        "district ({w}, {d}): D_NEXT_O_ID - 1 = {}, max(O_ID) = {max_order:?}, max(NO_O_ID) = {max_new:?}",
                        next - 1
                    ),
                );
            }
            if let (Some(min_new), Some(max_new)) = (min_new, max_new) {
                if max_new - min_new + 1 != new_orders {
                    report(
                        2,
                        format!("district ({w}, {d}): NO_O_ID spans [{min_new}, {max_new}] with {new_orders} rows"),
                    );
                }
            } else if new_orders != 0 {
                report(2, format!("district ({w}, {d}): {new_orders} new-orders without a min and max"));
            }
            if line_count_sum != order_lines {
                report(3, format!("district ({w}, {d}): sum(O_OL_CNT) = {line_count_sum}, {order_lines} order lines"));
            }
            if undelivered != new_orders {
                report(4, format!("district ({w}, {d}): {undelivered} undelivered orders, {new_orders} new-orders"));
            }
        }
    }
    Ok(checks)
}
