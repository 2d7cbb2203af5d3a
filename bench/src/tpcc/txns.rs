//! The five TPC-C transactions (clauses 2.4 to 2.8), written once against
//! [`Session`] so that GeoDB and PostgreSQL run the very same statements.
//!
//! Each transaction has an input, drawn by [`Input::draw`] as the emulated
//! terminal would key it (clauses 2.4.1 to 2.8.1), and a body that runs
//! inside one database transaction. [`run`] wraps a body in
//! BEGIN/COMMIT, rolling back on any error; the driver decides whether to
//! run it again.
//!
//! Choices the specification leaves to the implementation:
//! - New-Order reads its items with one `IN` list and inserts its order
//!   lines with one multi-row `INSERT`; it takes its stock rows in
//!   (supply warehouse, item) order, so concurrent New-Orders lock stock in
//!   one global order and cannot deadlock on each other.
//! - Delivery runs its ten districts in one transaction, in the
//!   foreground (clause 2.7.2 allows queuing it; the kit does not).
//! - The terminal's output screens are not rendered; every value they show
//!   is read.

use rand::Rng;

use super::random::{self, A_C_ID, A_C_LAST, A_OL_I_ID, Constants};
use super::schema::{DISTRICTS_PER_WAREHOUSE, Population};
use super::session::{DbError, Session, Value, cents, parse_scaled};

/// The five transaction types, in the order the tables print them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Kind {
    NewOrder,
    Payment,
    OrderStatus,
    Delivery,
    StockLevel,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::NewOrder, Kind::Payment, Kind::OrderStatus, Kind::Delivery, Kind::StockLevel];

    pub fn name(self) -> &'static str {
        match self {
            Kind::NewOrder => "New-Order",
            Kind::Payment => "Payment",
            Kind::OrderStatus => "Order-Status",
            Kind::Delivery => "Delivery",
            Kind::StockLevel => "Stock-Level",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The standard mix of clause 5.2.3, in percent: New-Order takes what
    /// the minimums of the other four leave.
    pub fn mix_percent(self) -> u32 {
        match self {
            Kind::NewOrder => 45,
            Kind::Payment => 43,
            Kind::OrderStatus | Kind::Delivery | Kind::StockLevel => 4,
        }
    }

    /// Clause 5.2.5.2: keying time, seconds.
    pub fn keying_s(self) -> f64 {
        match self {
            Kind::NewOrder => 18.0,
            Kind::Payment => 3.0,
            Kind::OrderStatus | Kind::Delivery | Kind::StockLevel => 2.0,
        }
    }

    /// Clause 5.2.5.4: mean think time, seconds.
    pub fn think_mean_s(self) -> f64 {
        match self {
            Kind::NewOrder | Kind::Payment => 12.0,
            Kind::OrderStatus => 10.0,
            Kind::Delivery | Kind::StockLevel => 5.0,
        }
    }

    /// Draws a type with the standard mix.
    pub fn draw(rng: &mut impl Rng) -> Kind {
        let mut roll = rng.random_range(0..100);
        for kind in Kind::ALL {
            if roll < kind.mix_percent() {
                return kind;
            }
            roll -= kind.mix_percent();
        }
        unreachable!("the mix adds up to 100 %")
    }
}

/// What the terminal knows: its warehouse and district, the population's
/// ranges and the run's `NURand` constants.
#[derive(Clone, Copy, Debug)]
pub struct Terminal {
    pub warehouse: i64,
    /// Clause 2.8.1.1: Stock-Level uses the terminal's own district.
    pub district: i64,
    pub population: Population,
    pub constants: Constants,
}

/// A customer as the terminal names it (clause 2.5.1.2 and 2.6.1.2).
#[derive(Clone, Debug)]
pub enum CustomerKey {
    Id(i64),
    LastName(String),
}

#[derive(Clone, Debug)]
pub struct OrderLineInput {
    pub item: i64,
    pub supply_warehouse: i64,
    pub quantity: i64,
}

#[derive(Clone, Debug)]
pub enum Input {
    NewOrder { district: i64, customer: i64, lines: Vec<OrderLineInput> },
    Payment { district: i64, customer_warehouse: i64, customer_district: i64, customer: CustomerKey, amount_cents: i64 },
    OrderStatus { district: i64, customer: CustomerKey },
    Delivery { carrier: i64 },
    StockLevel { threshold: i64 },
}

/// How a transaction ended when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    /// New-Order's 1 % rolled back by design (clause 2.4.2.3).
    RolledBack,
}

impl Input {
    pub fn draw(kind: Kind, terminal: &Terminal, rng: &mut impl Rng) -> Input {
        let p = &terminal.population;
        let district = rng.random_range(1..=DISTRICTS_PER_WAREHOUSE);
        match kind {
            Kind::NewOrder => {
                // Clause 2.4.1.
                let customer = customer_id(terminal, rng);
                let line_count = rng.random_range(5..=15);
                let rollback = rng.random_range(1..=100) == 1;
                let lines = (0..line_count)
                    .map(|number| {
                        let item = if rollback && number == line_count - 1 {
                            // Clause 2.4.1.4: an unused item id makes the last line fail.
                            p.items + 1
                        } else {
                            random::nurand(rng, A_OL_I_ID, terminal.constants.ol_i_id, 1, p.items)
                        };
                        // Clause 2.4.1.5: 1 % of lines are supplied by another warehouse.
                        let supply_warehouse = if p.warehouses > 1 && rng.random_range(1..=100) == 1 {
                            other_warehouse(terminal.warehouse, p.warehouses, rng)
                        } else {
                            terminal.warehouse
                        };
                        OrderLineInput { item, supply_warehouse, quantity: rng.random_range(1..=10) }
                    })
                    .collect();
                Input::NewOrder { district, customer, lines }
            }
            Kind::Payment => {
                // Clause 2.5.1.2: 85 % home customers, 15 % of another warehouse.
                let (customer_warehouse, customer_district) = if p.warehouses > 1 && rng.random_range(1..=100) > 85 {
                    (
                        other_warehouse(terminal.warehouse, p.warehouses, rng),
                        rng.random_range(1..=DISTRICTS_PER_WAREHOUSE),
                    )
                } else {
                    (terminal.warehouse, district)
                };
                Input::Payment {
                    district,
                    customer_warehouse,
                    customer_district,
                    customer: customer_key(terminal, rng),
                    // Clause 2.5.1.3: [1.00, 5,000.00].
                    amount_cents: rng.random_range(100..=500_000),
                }
            }
            Kind::OrderStatus => Input::OrderStatus { district, customer: customer_key(terminal, rng) },
            Kind::Delivery => Input::Delivery { carrier: rng.random_range(1..=10) },
            Kind::StockLevel => Input::StockLevel { threshold: rng.random_range(10..=20) },
        }
    }
}

fn customer_id(terminal: &Terminal, rng: &mut impl Rng) -> i64 {
    random::nurand(rng, A_C_ID, terminal.constants.c_id, 1, terminal.population.customers_per_district)
}

/// Clause 2.5.1.2 and 2.6.1.2: 60 % by last name, 40 % by id.
fn customer_key(terminal: &Terminal, rng: &mut impl Rng) -> CustomerKey {
    if rng.random_range(1..=100) <= 60 {
        let number = random::nurand(rng, A_C_LAST, terminal.constants.c_last, 0, terminal.population.last_name_max());
        CustomerKey::LastName(random::last_name(number))
    } else {
        CustomerKey::Id(customer_id(terminal, rng))
    }
}

/// A warehouse other than `home`, uniformly (requires at least two).
fn other_warehouse(home: i64, warehouses: i64, rng: &mut impl Rng) -> i64 {
    let other = rng.random_range(1..warehouses);
    if other >= home { other + 1 } else { other }
}

/// Runs one transaction: BEGIN, the body, COMMIT (or ROLLBACK for the
/// designed New-Order rollback). On any error the transaction is rolled
/// back and the error returned for the driver to retry or count.
pub async fn run<S: Session>(
    session: &mut S,
    terminal: &Terminal,
    input: &Input,
    history_id: i64,
    now_micros: i64,
) -> Result<Outcome, DbError> {
    session.begin().await?;
    let body = match input {
        Input::NewOrder { district, customer, lines } => {
            new_order(session, terminal, *district, *customer, lines, now_micros).await
        }
        Input::Payment { district, customer_warehouse, customer_district, customer, amount_cents } => {
            let payment = PaymentInput {
                district: *district,
                customer_warehouse: *customer_warehouse,
                customer_district: *customer_district,
                customer,
                amount_cents: *amount_cents,
            };
            payment_body(session, terminal, &payment, history_id, now_micros).await
        }
        Input::OrderStatus { district, customer } => order_status(session, terminal, *district, customer).await,
        Input::Delivery { carrier } => delivery(session, terminal, *carrier, now_micros).await,
        Input::StockLevel { threshold } => stock_level(session, terminal, *threshold).await,
    };
    match body {
        Ok(Outcome::Committed) => match session.commit().await {
            Ok(()) => Ok(Outcome::Committed),
            Err(e) => {
                // The failed COMMIT already ended the transaction on both
                // targets; the ROLLBACK only makes sure of it.
                let _ = session.rollback().await;
                Err(e)
            }
        },
        Ok(Outcome::RolledBack) => session.rollback().await.map(|()| Outcome::RolledBack),
        Err(e) => {
            let _ = session.rollback().await;
            Err(e)
        }
    }
}

fn int(v: i64) -> Value {
    Value::Int(v)
}

/// Decimal text of a money column as cents, exactly.
fn money_cents(value: &Value) -> Result<i64, DbError> {
    let text = value.as_decimal()?;
    parse_scaled(&text, 2)
        .and_then(|c| i64::try_from(c).ok())
        .ok_or_else(|| DbError::protocol(format!("not a money amount: {text:?}")))
}

/// Clause 2.4.2: New-Order.
async fn new_order<S: Session>(
    session: &mut S,
    terminal: &Terminal,
    district: i64,
    customer: i64,
    lines: &[OrderLineInput],
    now_micros: i64,
) -> Result<Outcome, DbError> {
    let w = terminal.warehouse;
    let warehouse = session.execute("SELECT w_tax FROM warehouse WHERE w_id = $1", &[int(w)]).await?;
    let w_tax = warehouse.one("warehouse")?[0].as_f64()?;
    let rows = session
        .execute(
            "SELECT d_tax, d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2 FOR UPDATE",
            &[int(w), int(district)],
        )
        .await?;
    let row = rows.one("district")?;
    let d_tax = row[0].as_f64()?;
    let order_id = row[1].as_i64()?;
    session
        .execute(
            "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2",
            &[int(w), int(district)],
        )
        .await?;
    let rows = session
        .execute(
            "SELECT c_discount, c_last, c_credit FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
            &[int(w), int(district), int(customer)],
        )
        .await?;
    let c_discount = rows.one("customer")?[0].as_f64()?;
    let all_local = lines.iter().all(|line| line.supply_warehouse == w);
    session
        .execute(
            "INSERT INTO orders (o_w_id, o_d_id, o_id, o_c_id, o_entry_d, o_carrier_id, o_ol_cnt, o_all_local) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $7)",
            &[
                int(w),
                int(district),
                int(order_id),
                int(customer),
                Value::Timestamp(now_micros),
                int(lines.len() as i64),
                int(i64::from(all_local)),
            ],
        )
        .await?;
    session
        .execute(
            "INSERT INTO new_order (no_w_id, no_d_id, no_o_id) VALUES ($1, $2, $3)",
            &[int(w), int(district), int(order_id)],
        )
        .await?;

    // Items: one read for all lines. An unused id (the designed 1 %
    // rollback) is simply missing from the answer.
    let item_ids: Vec<i64> = lines.iter().map(|line| line.item).collect();
    let placeholders: Vec<String> = (1..=item_ids.len()).map(|i| format!("${i}")).collect();
    let items = session
        .execute(
            &format!("SELECT i_id, i_price, i_name, i_data FROM item WHERE i_id IN ({})", placeholders.join(", ")),
            &item_ids.iter().map(|&id| int(id)).collect::<Vec<_>>(),
        )
        .await?;
    let mut prices = std::collections::HashMap::new();
    for row in &items.rows {
        prices.insert(row[0].as_i64()?, (money_cents(&row[1])?, row[3].as_str()?.contains("ORIGINAL")));
    }
    if lines.iter().any(|line| !prices.contains_key(&line.item)) {
        // Clause 2.4.2.3: "Item number is not valid": roll back.
        return Ok(Outcome::RolledBack);
    }

    // Stock in (supply warehouse, item) order; order-line numbers follow
    // the terminal's order.
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by_key(|&i| (lines[i].supply_warehouse, lines[i].item));
    let stock_select = format!(
        "SELECT s_quantity, s_dist_{district:02}, s_data FROM stock WHERE s_w_id = $1 AND s_i_id = $2 FOR UPDATE"
    );
    let mut line_values: Vec<Option<[Value; 10]>> = vec![None; lines.len()];
    let mut total_cents = 0;
    for i in order {
        let line = &lines[i];
        let rows = session.execute(&stock_select, &[int(line.supply_warehouse), int(line.item)]).await?;
        let row = rows.one("stock")?;
        let quantity = row[0].as_i64()?;
        let dist_info = row[1].as_str()?.to_string();
        let (price_cents, item_original) = prices[&line.item];
        let _brand_generic = if item_original && row[2].as_str()?.contains("ORIGINAL") { 'B' } else { 'G' };
        // Clause 2.4.2.2: restock by 91 when fewer than 10 would remain.
        let new_quantity =
            if quantity >= line.quantity + 10 { quantity - line.quantity } else { quantity - line.quantity + 91 };
        session
            .execute(
                "UPDATE stock SET s_quantity = $3, s_ytd = s_ytd + $4, s_order_cnt = s_order_cnt + 1, \
                 s_remote_cnt = s_remote_cnt + $5 WHERE s_w_id = $1 AND s_i_id = $2",
                &[
                    int(line.supply_warehouse),
                    int(line.item),
                    int(new_quantity),
                    int(line.quantity),
                    int(i64::from(line.supply_warehouse != w)),
                ],
            )
            .await?;
        let amount_cents = line.quantity * price_cents;
        total_cents += amount_cents;
        line_values[i] = Some([
            int(w),
            int(district),
            int(order_id),
            int(i as i64 + 1),
            int(line.item),
            int(line.supply_warehouse),
            Value::Null,
            int(line.quantity),
            cents(amount_cents),
            Value::Text(dist_info),
        ]);
    }
    let values: Vec<Value> = line_values.into_iter().flat_map(|v| v.expect("every line was stocked")).collect();
    session
        .execute(
            &format!(
                "INSERT INTO order_line (ol_w_id, ol_d_id, ol_o_id, ol_number, ol_i_id, ol_supply_w_id, \
                 ol_delivery_d, ol_quantity, ol_amount, ol_dist_info) VALUES {}",
                value_rows(lines.len(), 10)
            ),
            &values,
        )
        .await?;
    // Clause 2.4.2.2: the total shown to the terminal.
    let _total = total_cents as f64 / 100.0 * (1.0 - c_discount) * (1.0 + w_tax + d_tax);
    Ok(Outcome::Committed)
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` parameters.
pub fn value_rows(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * columns + column + 1));
        }
        sql.push(')');
    }
    sql
}

/// Clause 2.5.2.2 and 2.6.2.2: the customer by id, or the one at position
/// ⌈n/2⌉ among those with the last name, sorted by first name.
async fn find_customer<S: Session>(
    session: &mut S,
    warehouse: i64,
    district: i64,
    key: &CustomerKey,
) -> Result<i64, DbError> {
    match key {
        CustomerKey::Id(id) => Ok(*id),
        CustomerKey::LastName(last) => {
            let rows = session
                .execute(
                    "SELECT c_id FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3 ORDER BY c_first",
                    &[int(warehouse), int(district), Value::text(last.clone())],
                )
                .await?;
            if rows.rows.is_empty() {
                return Err(DbError::protocol(format!("no customer named {last} in ({warehouse}, {district})")));
            }
            rows.rows[rows.rows.len().div_ceil(2) - 1][0].as_i64()
        }
    }
}

struct PaymentInput<'a> {
    district: i64,
    customer_warehouse: i64,
    customer_district: i64,
    customer: &'a CustomerKey,
    amount_cents: i64,
}

/// Clause 2.5.2: Payment.
async fn payment_body<S: Session>(
    session: &mut S,
    terminal: &Terminal,
    input: &PaymentInput<'_>,
    history_id: i64,
    now_micros: i64,
) -> Result<Outcome, DbError> {
    let (w, d) = (terminal.warehouse, input.district);
    let (c_w, c_d) = (input.customer_warehouse, input.customer_district);
    let amount = cents(input.amount_cents);
    session.execute("UPDATE warehouse SET w_ytd = w_ytd + $2 WHERE w_id = $1", &[int(w), amount.clone()]).await?;
    let rows = session
        .execute(
            "SELECT w_name, w_street_1, w_street_2, w_city, w_state, w_zip FROM warehouse WHERE w_id = $1",
            &[int(w)],
        )
        .await?;
    let w_name = rows.one("warehouse")?[0].as_str()?.to_string();
    session
        .execute(
            "UPDATE district SET d_ytd = d_ytd + $3 WHERE d_w_id = $1 AND d_id = $2",
            &[int(w), int(d), amount.clone()],
        )
        .await?;
    let rows = session
        .execute(
            "SELECT d_name, d_street_1, d_street_2, d_city, d_state, d_zip FROM district \
             WHERE d_w_id = $1 AND d_id = $2",
            &[int(w), int(d)],
        )
        .await?;
    let d_name = rows.one("district")?[0].as_str()?.to_string();
    let c_id = find_customer(session, c_w, c_d, input.customer).await?;
    let rows = session
        .execute(
            "SELECT c_first, c_middle, c_last, c_street_1, c_street_2, c_city, c_state, c_zip, c_phone, c_since, \
             c_credit, c_credit_lim, c_discount, c_balance, c_data FROM customer \
             WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3 FOR UPDATE",
            &[int(c_w), int(c_d), int(c_id)],
        )
        .await?;
    let row = rows.one("customer")?;
    let credit = row[10].as_str()?.to_string();
    let customer = [int(c_w), int(c_d), int(c_id), amount.clone()];
    if credit == "BC" {
        // Clause 2.5.2.2: bad credit prepends the payment to C_DATA, kept to 500 characters.
        let old = row[14].as_str()?;
        let mut data = format!("{c_id} {c_d} {c_w} {d} {w} {} | {old}", super::session::cents_text(input.amount_cents));
        data.truncate(500);
        let mut params = customer.to_vec();
        params.push(Value::Text(data));
        session
            .execute(
                "UPDATE customer SET c_balance = c_balance - $4, c_ytd_payment = c_ytd_payment + $4, \
                 c_payment_cnt = c_payment_cnt + 1, c_data = $5 WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
                &params,
            )
            .await?;
    } else {
        session
            .execute(
                "UPDATE customer SET c_balance = c_balance - $4, c_ytd_payment = c_ytd_payment + $4, \
                 c_payment_cnt = c_payment_cnt + 1 WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
                &customer,
            )
            .await?;
    }
    // Clause 2.5.2.2: H_DATA is W_NAME, four spaces, D_NAME.
    let mut h_data = format!("{w_name}    {d_name}");
    h_data.truncate(24);
    session
        .execute(
            "INSERT INTO history (h_w_id, h_id, h_c_id, h_c_d_id, h_c_w_id, h_d_id, h_date, h_amount, h_data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                int(w),
                int(history_id),
                int(c_id),
                int(c_d),
                int(c_w),
                int(d),
                Value::Timestamp(now_micros),
                amount,
                Value::Text(h_data),
            ],
        )
        .await?;
    Ok(Outcome::Committed)
}

/// Clause 2.6.2: Order-Status (read-only).
async fn order_status<S: Session>(
    session: &mut S,
    terminal: &Terminal,
    district: i64,
    key: &CustomerKey,
) -> Result<Outcome, DbError> {
    let w = terminal.warehouse;
    let c_id = find_customer(session, w, district, key).await?;
    let rows = session
        .execute(
            "SELECT c_balance, c_first, c_middle, c_last FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
            &[int(w), int(district), int(c_id)],
        )
        .await?;
    rows.one("customer")?;
    let rows = session
        .execute(
            "SELECT o_id, o_carrier_id, o_entry_d FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_c_id = $3 \
             ORDER BY o_id DESC LIMIT 1",
            &[int(w), int(district), int(c_id)],
        )
        .await?;
    let order_id = rows.one("the customer's last order")?[0].as_i64()?;
    let lines = session
        .execute(
            "SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_delivery_d FROM order_line \
             WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3",
            &[int(w), int(district), int(order_id)],
        )
        .await?;
    if lines.rows.is_empty() {
        return Err(DbError::protocol(format!("order ({w}, {district}, {order_id}) has no lines")));
    }
    Ok(Outcome::Committed)
}

/// Clause 2.7.4: Delivery of the oldest new-order of each district.
async fn delivery<S: Session>(
    session: &mut S,
    terminal: &Terminal,
    carrier: i64,
    now_micros: i64,
) -> Result<Outcome, DbError> {
    let w = terminal.warehouse;
    for d in 1..=DISTRICTS_PER_WAREHOUSE {
        let rows = session
            .execute(
                "SELECT no_o_id FROM new_order WHERE no_w_id = $1 AND no_d_id = $2 ORDER BY no_o_id LIMIT 1",
                &[int(w), int(d)],
            )
            .await?;
        let Some(row) = rows.rows.first() else {
            // Clause 2.7.4.2: no outstanding order: skip the district.
            continue;
        };
        let order_id = row[0].as_i64()?;
        let key = [int(w), int(d), int(order_id)];
        let deleted =
            session.execute("DELETE FROM new_order WHERE no_w_id = $1 AND no_d_id = $2 AND no_o_id = $3", &key).await?;
        if deleted.rows_affected == 0 {
            // Another Delivery took it first (possible below serializable).
            continue;
        }
        let rows =
            session.execute("SELECT o_c_id FROM orders WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3", &key).await?;
        let c_id = rows.one("order")?[0].as_i64()?;
        let mut with_carrier = key.to_vec();
        with_carrier.push(int(carrier));
        session
            .execute(
                "UPDATE orders SET o_carrier_id = $4 WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3",
                &with_carrier,
            )
            .await?;
        let mut with_date = key.to_vec();
        with_date.push(Value::Timestamp(now_micros));
        session
            .execute(
                "UPDATE order_line SET ol_delivery_d = $4 WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3",
                &with_date,
            )
            .await?;
        let rows = session
            .execute("SELECT SUM(ol_amount) FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3", &key)
            .await?;
        let total = rows.one("order lines")?[0].as_decimal()?;
        session
            .execute(
                "UPDATE customer SET c_balance = c_balance + $4, c_delivery_cnt = c_delivery_cnt + 1 \
                 WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3",
                &[int(w), int(d), int(c_id), Value::Decimal(total)],
            )
            .await?;
    }
    Ok(Outcome::Committed)
}

/// Clause 2.8.2: Stock-Level of the terminal's district.
async fn stock_level<S: Session>(session: &mut S, terminal: &Terminal, threshold: i64) -> Result<Outcome, DbError> {
    let (w, d) = (terminal.warehouse, terminal.district);
    let rows =
        session.execute("SELECT d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2", &[int(w), int(d)]).await?;
    let next = rows.one("district")?[0].as_i64()?;
    // The last 20 orders' distinct items with stock below the threshold.
    let rows = session
        .execute(
            "SELECT COUNT(DISTINCT s_i_id) FROM order_line JOIN stock ON s_w_id = ol_w_id AND s_i_id = ol_i_id \
             WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id >= $3 AND ol_o_id < $4 AND s_quantity < $5",
            &[int(w), int(d), int(next - 20), int(next), int(threshold)],
        )
        .await?;
    rows.one("stock count")?[0].as_i64()?;
    Ok(Outcome::Committed)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn the_mix_adds_up_to_100_percent() {
        assert_eq!(Kind::ALL.iter().map(|kind| kind.mix_percent()).sum::<u32>(), 100);
    }

    #[test]
    fn mix_is_the_standard_one() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0u32; 5];
        for _ in 0..100_000 {
            counts[Kind::draw(&mut rng).index()] += 1;
        }
        for kind in Kind::ALL {
            let percent = f64::from(counts[kind.index()]) / 1000.0;
            assert!((percent - f64::from(kind.mix_percent())).abs() < 0.6, "{kind:?}: {percent} %");
        }
    }

    #[test]
    fn value_rows_numbers_parameters_row_by_row() {
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn other_warehouse_is_never_home() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..1000 {
            let other = other_warehouse(2, 4, &mut rng);
            assert!(other != 2 && (1..=4).contains(&other));
        }
    }
}
