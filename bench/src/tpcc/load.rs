//! The initial population of TPC-C v5.11 clause 4.3.3.1, loaded in
//! parallel with multi-row `INSERT`s.
//!
//! The population is cut into [`Unit`]s — a range of items, one
//! warehouse with its districts, a range of one warehouse's stock, one
//! district's customers, history, orders, order lines and new-orders — and
//! `workers` tasks take units from a shared queue. Each unit draws its
//! rows from its own seeded generator, so a seed gives the same population
//! whatever the interleaving. A warehouse's units are written through
//! [`Target::load_session`] for that warehouse, which on GeoDB makes the
//! chosen gateway's region the warehouse's home.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::random::{self, A_C_LAST, Constants};
use super::schema::{self, DISTRICTS_PER_WAREHOUSE, Dialect, LAST_NAMES, Population};
use super::session::{Session, Target, Value, cents, ten_thousandths};
use super::txns::value_rows;

/// Attempts of one INSERT batch before the load fails. A batch whose
/// outcome is unknown (`08007`: a shard's leader changed under it) or that
/// was refused for a retryable reason is sent again with `ON CONFLICT DO
/// NOTHING`: the rows are the same (drawn before the first attempt) and
/// every table has a primary key, so a batch that did commit adds nothing.
const INSERT_ATTEMPTS_MAX: u32 = 8;
/// Pause before the second attempt; doubled after each.
const INSERT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Rows per multi-row INSERT, by table, sized so that one statement stays
/// near 100–200 KB of SQL and parameters: well inside GeoDB's 1 MiB request
/// bound and PostgreSQL's 65,535 parameters, large enough that per-request
/// overhead is small. CUSTOMER rows carry up to 500 characters of C_DATA.
const CUSTOMER_BATCH_ROWS: usize = 200;
const STOCK_BATCH_ROWS: usize = 400;
const ITEM_BATCH_ROWS: usize = 1_000;
const SMALL_ROW_BATCH_ROWS: usize = 1_000;

/// Stock rows per unit of work: a warehouse's 100,000 split into ten, so
/// that one warehouse alone still spreads over the workers.
const STOCK_UNIT_ROWS: i64 = 10_000;
const ITEM_UNIT_ROWS: i64 = 10_000;

/// Clause 4.3.3.1 constants.
const WAREHOUSE_YTD_CENTS: i64 = 30_000_000;
const DISTRICT_YTD_CENTS: i64 = 3_000_000;
const CUSTOMER_CREDIT_LIMIT_CENTS: i64 = 5_000_000;
const CUSTOMER_BALANCE_CENTS: i64 = -1_000;
const CUSTOMER_YTD_PAYMENT_CENTS: i64 = 1_000;
const HISTORY_AMOUNT_CENTS: i64 = 1_000;
const ORDER_LINE_QUANTITY: i64 = 5;

/// One piece of the population.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Items { first: i64, last: i64 },
    Warehouse { w: i64 },
    Stock { w: i64, first: i64, last: i64 },
    District { w: i64, d: i64 },
}

impl Unit {
    fn warehouse(self) -> Option<i64> {
        match self {
            Unit::Items { .. } => None,
            Unit::Warehouse { w } | Unit::Stock { w, .. } | Unit::District { w, .. } => Some(w),
        }
    }
}

/// Drops and recreates the nine tables, then loads the population.
/// Returns the rows written.
pub async fn load<T: Target>(
    target: &T,
    population: Population,
    constants: Constants,
    seed: u64,
    workers: usize,
    column_families: bool,
) -> Result<u64, String> {
    let mut session = target.load_session(None).await.map_err(|e| format!("connect: {e}"))?;
    for table in schema::TABLES {
        session
            .execute(&format!("DROP TABLE IF EXISTS {table}"), &[])
            .await
            .map_err(|e| format!("drop {table}: {e}"))?;
    }
    for statement in schema::create_statements(target.dialect(), column_families) {
        session.execute(&statement, &[]).await.map_err(|e| format!("{statement}: {e}"))?;
    }
    session.close().await;

    let mut units = VecDeque::new();
    // Warehouses first: the first write of a warehouse's key picks its home.
    for w in 1..=population.warehouses {
        units.push_back(Unit::Warehouse { w });
    }
    for first in (1..=population.items).step_by(ITEM_UNIT_ROWS as usize) {
        units.push_back(Unit::Items { first, last: (first + ITEM_UNIT_ROWS - 1).min(population.items) });
    }
    for w in 1..=population.warehouses {
        for d in 1..=DISTRICTS_PER_WAREHOUSE {
            units.push_back(Unit::District { w, d });
        }
        for first in (1..=population.items).step_by(STOCK_UNIT_ROWS as usize) {
            units.push_back(Unit::Stock { w, first, last: (first + STOCK_UNIT_ROWS - 1).min(population.items) });
        }
    }
    let units: Vec<(usize, Unit)> = units.into_iter().enumerate().collect();
    let queue = Arc::new(Mutex::new(VecDeque::from(units)));

    // Clause 4.3.3.1: O_OL_CNT is uniform in [5, 15], 10 on average.
    let progress = ProgressBar::new(population.rows_total(10));
    progress.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} rows ({per_sec}, eta {eta})")
            .expect("valid template"),
    );
    progress.set_prefix(format!("loading {}", target.name()));
    let started = Instant::now();
    let load_time = now_micros();
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let (target, queue, progress) = (target.clone(), queue.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut sessions: HashMap<Option<i64>, T::Session> = HashMap::new();
            let mut rows = 0;
            loop {
                let next = queue.lock().expect("queue lock").pop_front();
                let Some((index, unit)) = next else { break };
                let key = unit.warehouse();
                let session = match sessions.entry(key) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        entry.insert(target.load_session(key).await.map_err(|e| format!("connect: {e}"))?)
                    }
                };
                let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut writer = Writer { session, progress: &progress, rows: 0 };
                load_unit(&mut writer, unit, &population, constants, load_time, &mut rng)
                    .await
                    .map_err(|e| format!("loading {unit:?}: {e}"))?;
                rows += writer.rows;
            }
            for (_, session) in sessions {
                session.close().await;
            }
            Ok::<u64, String>(rows)
        }));
    }
    let mut rows = 0;
    for task in tasks {
        rows += task.await.map_err(|e| e.to_string())??;
    }
    progress.finish_and_clear();
    if target.dialect() == Dialect::Postgres {
        // PostgreSQL plans from statistics that autovacuum gathers only
        // later; without them Stock-Level's join runs on guessed row counts.
        let mut session = target.load_session(None).await.map_err(|e| format!("connect: {e}"))?;
        session.execute("ANALYZE", &[]).await.map_err(|e| format!("ANALYZE: {e}"))?;
        session.close().await;
    }
    eprintln!("loaded {rows} rows into {} in {:.1} s", target.name(), started.elapsed().as_secs_f64());
    Ok(rows)
}

pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as i64
}

struct Writer<'a, S> {
    session: &'a mut S,
    progress: &'a ProgressBar,
    rows: u64,
}

impl<S: Session> Writer<'_, S> {
    /// Inserts `rows` into `table`, `batch_rows` per statement, each
    /// statement committing on its own.
    async fn insert(
        &mut self,
        table: &str,
        columns: &str,
        rows: Vec<Vec<Value>>,
        batch_rows: usize,
    ) -> Result<(), String> {
        for batch in rows.chunks(batch_rows) {
            let width = batch[0].len();
            let sql = format!("INSERT INTO {table} ({columns}) VALUES {}", value_rows(batch.len(), width));
            let params: Vec<Value> = batch.iter().flatten().cloned().collect();
            let mut attempt = 1;
            let mut pause = INSERT_RETRY_PAUSE;
            let mut statement = sql.clone();
            loop {
                match self.session.execute(&statement, &params).await {
                    Ok(_) => break,
                    Err(e) if attempt < INSERT_ATTEMPTS_MAX && (e.retryable || e.code == "08007") => {
                        attempt += 1;
                        tokio::time::sleep(pause).await;
                        pause *= 2;
                        statement = format!("{sql} ON CONFLICT DO NOTHING");
                    }
                    Err(e) => return Err(format!("insert into {table} (attempt {attempt}): {e}")),
                }
            }
            self.rows += batch.len() as u64;
            self.progress.inc(batch.len() as u64);
        }
        Ok(())
    }
}

fn int(v: i64) -> Value {
    Value::Int(v)
}

fn text(s: String) -> Value {
    Value::Text(s)
}

/// Clause 4.3.3.1: street 1, street 2, city, state, zip.
fn address(rng: &mut impl Rng) -> [Value; 5] {
    [
        text(random::a_string(rng, 10, 20)),
        text(random::a_string(rng, 10, 20)),
        text(random::a_string(rng, 10, 20)),
        text(random::a_string(rng, 2, 2).to_uppercase()),
        text(random::zip(rng)),
    ]
}

async fn load_unit<S: Session>(
    writer: &mut Writer<'_, S>,
    unit: Unit,
    population: &Population,
    constants: Constants,
    load_time: i64,
    rng: &mut StdRng,
) -> Result<(), String> {
    match unit {
        Unit::Items { first, last } => {
            let rows = (first..=last)
                .map(|i| {
                    vec![
                        int(i),
                        int(rng.random_range(1..=10_000)),
                        text(random::a_string(rng, 14, 24)),
                        cents(rng.random_range(100..=10_000)),
                        text(random::data_maybe_original(rng)),
                    ]
                })
                .collect();
            writer.insert("item", "i_id, i_im_id, i_name, i_price, i_data", rows, ITEM_BATCH_ROWS).await
        }
        Unit::Warehouse { w } => {
            let mut row = vec![int(w), text(random::a_string(rng, 6, 10))];
            row.extend(address(rng));
            row.extend([ten_thousandths(rng.random_range(0..=2_000)), cents(WAREHOUSE_YTD_CENTS)]);
            writer
                .insert(
                    "warehouse",
                    "w_id, w_name, w_street_1, w_street_2, w_city, w_state, w_zip, w_tax, w_ytd",
                    vec![row],
                    1,
                )
                .await?;
            let rows = (1..=DISTRICTS_PER_WAREHOUSE)
                .map(|d| {
                    let mut row = vec![int(w), int(d), text(random::a_string(rng, 6, 10))];
                    row.extend(address(rng));
                    row.extend([
                        ten_thousandths(rng.random_range(0..=2_000)),
                        cents(DISTRICT_YTD_CENTS),
                        int(population.orders_per_district + 1),
                    ]);
                    row
                })
                .collect();
            writer
                .insert(
                    "district",
                    "d_w_id, d_id, d_name, d_street_1, d_street_2, d_city, d_state, d_zip, d_tax, d_ytd, d_next_o_id",
                    rows,
                    SMALL_ROW_BATCH_ROWS,
                )
                .await
        }
        Unit::Stock { w, first, last } => {
            let rows = (first..=last)
                .map(|i| {
                    let mut row = vec![int(w), int(i), int(rng.random_range(10..=100))];
                    row.extend((0..DISTRICTS_PER_WAREHOUSE).map(|_| text(random::a_string(rng, 24, 24))));
                    row.extend([int(0), int(0), int(0), text(random::data_maybe_original(rng))]);
                    row
                })
                .collect();
            writer
                .insert(
                    "stock",
                    "s_w_id, s_i_id, s_quantity, s_dist_01, s_dist_02, s_dist_03, s_dist_04, s_dist_05, s_dist_06, \
                     s_dist_07, s_dist_08, s_dist_09, s_dist_10, s_ytd, s_order_cnt, s_remote_cnt, s_data",
                    rows,
                    STOCK_BATCH_ROWS,
                )
                .await
        }
        Unit::District { w, d } => load_district(writer, w, d, population, constants, load_time, rng).await,
    }
}

/// One district's customers (with one history row each), orders, order
/// lines and new-orders.
async fn load_district<S: Session>(
    writer: &mut Writer<'_, S>,
    w: i64,
    d: i64,
    population: &Population,
    constants: Constants,
    load_time: i64,
    rng: &mut StdRng,
) -> Result<(), String> {
    let customers = population.customers_per_district;
    let mut customer_rows = Vec::with_capacity(customers as usize);
    let mut history_rows = Vec::with_capacity(customers as usize);
    for c in 1..=customers {
        // Clause 4.3.2.3: the first 1,000 customers take the names 0..999
        // in order, the rest NURand(255, 0, 999).
        let name_number =
            if c <= LAST_NAMES { c - 1 } else { random::nurand(rng, A_C_LAST, constants.c_last, 0, LAST_NAMES - 1) };
        let mut row = vec![
            int(w),
            int(d),
            int(c),
            text(random::a_string(rng, 8, 16)),
            text("OE".into()),
            text(random::last_name(name_number)),
        ];
        row.extend(address(rng));
        row.extend([
            text(random::n_string(rng, 16, 16)),
            Value::Timestamp(load_time),
            // Clause 4.3.3.1: 10 % bad credit.
            text(if rng.random_ratio(1, 10) { "BC" } else { "GC" }.into()),
            cents(CUSTOMER_CREDIT_LIMIT_CENTS),
            ten_thousandths(rng.random_range(0..=5_000)),
            cents(CUSTOMER_BALANCE_CENTS),
            cents(CUSTOMER_YTD_PAYMENT_CENTS),
            int(1),
            int(0),
            text(random::a_string(rng, 300, 500)),
        ]);
        customer_rows.push(row);
        history_rows.push(vec![
            int(w),
            int(schema::history_id(0, ((d - 1) * customers + c) as u64)),
            int(c),
            int(d),
            int(w),
            int(d),
            Value::Timestamp(load_time),
            cents(HISTORY_AMOUNT_CENTS),
            text(random::a_string(rng, 12, 24)),
        ]);
    }
    writer
        .insert(
            "customer",
            "c_w_id, c_d_id, c_id, c_first, c_middle, c_last, c_street_1, c_street_2, c_city, c_state, c_zip, \
             c_phone, c_since, c_credit, c_credit_lim, c_discount, c_balance, c_ytd_payment, c_payment_cnt, \
             c_delivery_cnt, c_data",
            customer_rows,
            CUSTOMER_BATCH_ROWS,
        )
        .await?;
    writer
        .insert(
            "history",
            "h_w_id, h_id, h_c_id, h_c_d_id, h_c_w_id, h_d_id, h_date, h_amount, h_data",
            history_rows,
            SMALL_ROW_BATCH_ROWS,
        )
        .await?;

    // Clause 4.3.3.1: one order per customer, O_C_ID a random permutation.
    let mut order_customers: Vec<i64> = (1..=population.orders_per_district).collect();
    order_customers.shuffle(rng);
    let delivered_last = population.last_delivered_order();
    let mut order_rows = Vec::new();
    let mut line_rows = Vec::new();
    for (index, customer) in order_customers.into_iter().enumerate() {
        let o = index as i64 + 1;
        let delivered = o <= delivered_last;
        let line_count = rng.random_range(5..=15);
        order_rows.push(vec![
            int(w),
            int(d),
            int(o),
            int(customer),
            Value::Timestamp(load_time),
            if delivered { int(rng.random_range(1..=10)) } else { Value::Null },
            int(line_count),
            int(1),
        ]);
        for number in 1..=line_count {
            line_rows.push(vec![
                int(w),
                int(d),
                int(o),
                int(number),
                int(rng.random_range(1..=population.items)),
                int(w),
                if delivered { Value::Timestamp(load_time) } else { Value::Null },
                int(ORDER_LINE_QUANTITY),
                cents(if delivered { 0 } else { rng.random_range(1..=999_999) }),
                text(random::a_string(rng, 24, 24)),
            ]);
        }
    }
    writer
        .insert(
            "orders",
            "o_w_id, o_d_id, o_id, o_c_id, o_entry_d, o_carrier_id, o_ol_cnt, o_all_local",
            order_rows,
            SMALL_ROW_BATCH_ROWS,
        )
        .await?;
    writer
        .insert(
            "order_line",
            "ol_w_id, ol_d_id, ol_o_id, ol_number, ol_i_id, ol_supply_w_id, ol_delivery_d, ol_quantity, \
             ol_amount, ol_dist_info",
            line_rows,
            SMALL_ROW_BATCH_ROWS,
        )
        .await?;
    let new_order_rows =
        (delivered_last + 1..=population.orders_per_district).map(|o| vec![int(w), int(d), int(o)]).collect();
    writer.insert("new_order", "no_w_id, no_d_id, no_o_id", new_order_rows, SMALL_ROW_BATCH_ROWS).await
}
