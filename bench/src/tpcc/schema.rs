//! The nine TPC-C tables (clause 1.3) and the size of their population
//! (clause 4.3).
//!
//! Every table but ITEM leads its primary key with the warehouse id, so on
//! GeoDB the warehouse is the locality key: all rows of warehouse 7, in any
//! table, live in warehouse 7's home region. ITEM is read by every
//! warehouse and never written, so it is a `global` table. HISTORY has no
//! key in the specification; it gets `(h_w_id, h_id)` with a synthetic id
//! that is unique per writer (see [`history_id`]).
//!
//! The loader owns these nine tables: it drops and recreates them on the
//! target at every run.
//!
//! [`Population`] holds the clause 4.3 cardinalities, reduced by `--scale`
//! for smoke tests. A reduced population is not TPC-C and the output says
//! so.

/// The SQL dialect a statement is written for. Only DDL differs: every
/// transaction and check statement is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    GeoDb,
    Postgres,
}

/// The tables in dependency-free creation order.
pub const TABLES: [&str; 9] =
    ["warehouse", "district", "customer", "history", "new_order", "orders", "order_line", "item", "stock"];

/// `CREATE TABLE` and `CREATE INDEX` statements for `dialect`.
///
/// With `column_families`, GeoDB stores the counters that Payment and
/// Delivery update in column families of their own, apart from the columns
/// New-Order reads (vertical partitioning, clause 1.6): a New-Order that
/// read `w_tax` or bumped `d_next_o_id` no longer conflicts with a Payment
/// that added to `w_ytd` or `d_ytd` of the same row. The statements of the
/// transactions are the same either way.
pub fn create_statements(dialect: Dialect, column_families: bool) -> Vec<String> {
    let geodb = dialect == Dialect::GeoDb;
    let global = if geodb { " WITH (locality = 'global')" } else { "" };
    let families = |options: &str| if geodb && column_families { format!(" WITH ({options})") } else { String::new() };
    let warehouse = families("family_ytd = 'w_ytd'");
    let district = families("family_ytd = 'd_ytd', family_next = 'd_tax, d_next_o_id'");
    let customer = families("family_balance = 'c_balance, c_ytd_payment, c_payment_cnt, c_delivery_cnt, c_data'");
    vec![
        format!(
            "CREATE TABLE warehouse (w_id INT NOT NULL, w_name VARCHAR(10), w_street_1 VARCHAR(20), \
         w_street_2 VARCHAR(20), w_city VARCHAR(20), w_state CHAR(2), w_zip CHAR(9), w_tax DECIMAL(4,4), \
         w_ytd DECIMAL(12,2), PRIMARY KEY (w_id)){warehouse}"
        ),
        format!(
            "CREATE TABLE district (d_w_id INT NOT NULL, d_id INT NOT NULL, d_name VARCHAR(10), \
         d_street_1 VARCHAR(20), d_street_2 VARCHAR(20), d_city VARCHAR(20), d_state CHAR(2), d_zip CHAR(9), \
         d_tax DECIMAL(4,4), d_ytd DECIMAL(12,2), d_next_o_id INT, PRIMARY KEY (d_w_id, d_id)){district}"
        ),
        format!(
            "CREATE TABLE customer (c_w_id INT NOT NULL, c_d_id INT NOT NULL, c_id INT NOT NULL, \
         c_first VARCHAR(16), c_middle CHAR(2), c_last VARCHAR(16), c_street_1 VARCHAR(20), \
         c_street_2 VARCHAR(20), c_city VARCHAR(20), c_state CHAR(2), c_zip CHAR(9), c_phone CHAR(16), \
         c_since TIMESTAMP, c_credit CHAR(2), c_credit_lim DECIMAL(12,2), c_discount DECIMAL(4,4), \
         c_balance DECIMAL(12,2), c_ytd_payment DECIMAL(12,2), c_payment_cnt INT, c_delivery_cnt INT, \
         c_data VARCHAR(500), PRIMARY KEY (c_w_id, c_d_id, c_id)){customer}"
        ),
        "CREATE INDEX customer_name ON customer (c_w_id, c_d_id, c_last, c_first)".to_string(),
        "CREATE TABLE history (h_w_id INT NOT NULL, h_id BIGINT NOT NULL, h_c_id INT, h_c_d_id INT, \
         h_c_w_id INT, h_d_id INT, h_date TIMESTAMP, h_amount DECIMAL(6,2), h_data VARCHAR(24), \
         PRIMARY KEY (h_w_id, h_id))"
            .to_string(),
        "CREATE TABLE new_order (no_w_id INT NOT NULL, no_d_id INT NOT NULL, no_o_id INT NOT NULL, \
         PRIMARY KEY (no_w_id, no_d_id, no_o_id))"
            .to_string(),
        "CREATE TABLE orders (o_w_id INT NOT NULL, o_d_id INT NOT NULL, o_id INT NOT NULL, o_c_id INT, \
         o_entry_d TIMESTAMP, o_carrier_id INT, o_ol_cnt INT, o_all_local INT, \
         PRIMARY KEY (o_w_id, o_d_id, o_id))"
            .to_string(),
        "CREATE INDEX orders_customer ON orders (o_w_id, o_d_id, o_c_id, o_id)".to_string(),
        "CREATE TABLE order_line (ol_w_id INT NOT NULL, ol_d_id INT NOT NULL, ol_o_id INT NOT NULL, \
         ol_number INT NOT NULL, ol_i_id INT, ol_supply_w_id INT, ol_delivery_d TIMESTAMP, ol_quantity INT, \
         ol_amount DECIMAL(6,2), ol_dist_info CHAR(24), PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number))"
            .to_string(),
        format!(
            "CREATE TABLE item (i_id INT NOT NULL, i_im_id INT, i_name VARCHAR(24), i_price DECIMAL(5,2), \
             i_data VARCHAR(50), PRIMARY KEY (i_id)){global}"
        ),
        "CREATE TABLE stock (s_w_id INT NOT NULL, s_i_id INT NOT NULL, s_quantity INT, \
         s_dist_01 CHAR(24), s_dist_02 CHAR(24), s_dist_03 CHAR(24), s_dist_04 CHAR(24), s_dist_05 CHAR(24), \
         s_dist_06 CHAR(24), s_dist_07 CHAR(24), s_dist_08 CHAR(24), s_dist_09 CHAR(24), s_dist_10 CHAR(24), \
         s_ytd INT, s_order_cnt INT, s_remote_cnt INT, s_data VARCHAR(50), PRIMARY KEY (s_w_id, s_i_id))"
            .to_string(),
    ]
}

pub const DISTRICTS_PER_WAREHOUSE: i64 = 10;

/// Clause 4.3.3.1 cardinalities at scale 1.
const ITEMS_STANDARD: i64 = 100_000;
const CUSTOMERS_PER_DISTRICT_STANDARD: i64 = 3_000;
/// Clause 4.3.3.1: the last 900 of the 3,000 orders per district are new-orders.
const NEW_ORDERS_PER_DISTRICT_STANDARD: i64 = 900;
/// Clause 4.3.2.3: the first 1,000 customers of a district get the last names 0..999 in order.
pub const LAST_NAMES: i64 = 1_000;

/// Floors for a reduced population, so that a smoke run still has hot
/// and cold items, several customers per last name lookup and a queue of
/// new-orders for Delivery.
const ITEMS_MIN: i64 = 100;
const CUSTOMERS_PER_DISTRICT_MIN: i64 = 10;

/// How many rows the loader makes, and the ranges the driver draws from.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Population {
    pub warehouses: i64,
    pub scale: f64,
    pub items: i64,
    pub customers_per_district: i64,
    /// One order per customer at load time (clause 4.3.3.1).
    pub orders_per_district: i64,
    /// The newest orders of each district, still undelivered.
    pub new_orders_per_district: i64,
}

impl Population {
    pub fn new(warehouses: i64, scale: f64) -> Result<Population, String> {
        if warehouses < 1 {
            return Err("--warehouses must be at least 1".into());
        }
        if !(scale > 0.0 && scale <= 1.0) {
            return Err("--scale must be in (0, 1]".into());
        }
        let scaled = |standard: i64, min: i64| ((standard as f64 * scale).round() as i64).max(min);
        let items = scaled(ITEMS_STANDARD, ITEMS_MIN);
        let customers_per_district = scaled(CUSTOMERS_PER_DISTRICT_STANDARD, CUSTOMERS_PER_DISTRICT_MIN);
        let new_orders_per_district =
            customers_per_district * NEW_ORDERS_PER_DISTRICT_STANDARD / CUSTOMERS_PER_DISTRICT_STANDARD;
        Ok(Population {
            warehouses,
            scale,
            items,
            customers_per_district,
            orders_per_district: customers_per_district,
            new_orders_per_district,
        })
    }

    pub fn is_standard(&self) -> bool {
        self.scale == 1.0
    }

    /// Orders with ids up to this one were delivered at load time.
    pub fn last_delivered_order(&self) -> i64 {
        self.orders_per_district - self.new_orders_per_district
    }

    /// The largest last-name number every district holds: all 1,000 at
    /// scale 1, fewer when a reduced district has fewer customers.
    pub fn last_name_max(&self) -> i64 {
        self.customers_per_district.min(LAST_NAMES) - 1
    }

    /// Rows the loader writes, for the progress bar.
    pub fn rows_total(&self, order_lines_per_order_mean: i64) -> u64 {
        let per_district = self.customers_per_district * 2
            + self.orders_per_district * (1 + order_lines_per_order_mean)
            + self.new_orders_per_district;
        let per_warehouse = 1 + DISTRICTS_PER_WAREHOUSE * (1 + per_district) + self.items;
        (self.items + self.warehouses * per_warehouse) as u64
    }
}

/// HISTORY's synthetic key: the writer in the high bits (0 is the loader,
/// terminal `t` is `t + 1`), the writer's own sequence number below.
pub fn history_id(writer: u64, sequence: u64) -> i64 {
    assert!(sequence < HISTORY_SEQUENCE_LIMIT, "history sequence overflow");
    assert!(writer < (1 << 22), "too many history writers");
    ((writer << HISTORY_SEQUENCE_BITS) | sequence) as i64
}

/// 2^40 history rows per writer is far more than any run writes.
const HISTORY_SEQUENCE_BITS: u32 = 40;
const HISTORY_SEQUENCE_LIMIT: u64 = 1 << HISTORY_SEQUENCE_BITS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_population_is_clause_4_3() {
        let p = Population::new(4, 1.0).unwrap();
        assert_eq!((p.items, p.customers_per_district, p.new_orders_per_district), (100_000, 3_000, 900));
        assert_eq!(p.last_delivered_order(), 2_100);
        assert_eq!(p.last_name_max(), 999);
        assert!(p.is_standard());
    }

    #[test]
    fn reduced_population_keeps_its_floors() {
        let p = Population::new(1, 0.001).unwrap();
        assert_eq!((p.items, p.customers_per_district, p.new_orders_per_district), (100, 10, 3));
        assert_eq!(p.last_name_max(), 9);
        assert!(Population::new(1, 0.0).is_err());
        assert!(Population::new(0, 1.0).is_err());
    }
}
