//! PostgreSQL through `tokio-postgres`: one connection per terminal, each
//! statement prepared once per connection and then executed by name, the
//! way a careful PostgreSQL application runs a fixed set of statements.
//! The same client drives GeoDB over its PostgreSQL wire protocol
//! (`geodb-pg=URL[,URL...]`, one URL per region): GeoDB's schema, and each
//! warehouse loaded and served through the same region's URL, round-robin
//! in the order given, as the HTTP target's loader places it (its home is
//! the region that first wrote it; run with automatic rehoming off).
//!
//! Values cross as the kit's [`Value`]: integers to `INT2`/`INT4`/`INT8`,
//! exact decimals to and from `NUMERIC`'s binary form (encoded here, since
//! `tokio-postgres` has no decimal type of its own without extra crates),
//! timestamps as microseconds. SQLSTATE `40001` (serialization failure)
//! and `40P01` (deadlock) are retryable.

use std::collections::HashMap;
use std::error::Error;

// `ToSql` writes into a `bytes::BytesMut`; this is the path through which
// `tokio-postgres` re-exports it (the one its own `to_sql_checked!` uses),
// so the kit needs no direct dependency on `bytes`.
use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

use super::schema::Dialect;
use super::session::{DbError, Isolation, Rows, Session, Target, Value};

/// Prepared statements kept per connection. TPC-C has a few dozen distinct
/// statements; the loader's multi-row inserts beyond this bound run
/// unprepared rather than pile up in the server.
const PREPARED_STATEMENTS_MAX: usize = 256;

/// Microseconds from the Unix epoch to PostgreSQL's epoch, 2000-01-01.
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Which server a [`PostgresTarget`] speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    Postgres,
    /// GeoDB over its PostgreSQL wire protocol.
    GeoDb,
}

#[derive(Clone)]
pub struct PostgresTarget {
    server: Server,
    /// One connection string; for GeoDB, one per region.
    configs: Vec<String>,
    isolation: Isolation,
    version: String,
}

impl PostgresTarget {
    /// Checks that the server answers, and names its version.
    pub async fn connect(config: &str, isolation: Isolation) -> Result<PostgresTarget, String> {
        let mut target = PostgresTarget {
            server: Server::Postgres,
            configs: vec![config.to_string()],
            isolation,
            version: String::new(),
        };
        let session = target.session(None).await.map_err(|e| format!("PostgreSQL at {config}: {e}"))?;
        target.version = session
            .client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(|e| format!("PostgreSQL at {config}: {e}"))?
            .get::<_, String>(0);
        Ok(target)
    }

    /// GeoDB at `configs` (one `postgresql://` URL per region): checks that
    /// each answers.
    pub async fn connect_geodb(configs: &[String], isolation: Isolation) -> Result<PostgresTarget, String> {
        if configs.is_empty() {
            return Err("geodb-pg: no URL given".into());
        }
        let target =
            PostgresTarget { server: Server::GeoDb, configs: configs.to_vec(), isolation, version: String::new() };
        for (i, config) in configs.iter().enumerate() {
            let session = target.connect_to(i).await.map_err(|e| format!("GeoDB at {config}: {e}"))?;
            session.client.query_one("SELECT 1", &[]).await.map_err(|e| format!("GeoDB at {config}: {e}"))?;
        }
        Ok(target)
    }

    /// A session through the URL of warehouse `warehouse`'s region
    /// (round-robin over those given), or the first one.
    pub async fn session(&self, warehouse: Option<i64>) -> Result<PostgresSession, DbError> {
        let index = warehouse.map_or(0, |w| (w - 1).rem_euclid(self.configs.len() as i64) as usize);
        self.connect_to(index).await
    }

    async fn connect_to(&self, index: usize) -> Result<PostgresSession, DbError> {
        let (client, connection) = tokio_postgres::connect(&self.configs[index], NoTls).await.map_err(error)?;
        tokio::spawn(async move {
            // The connection ends when the client is dropped; an error here
            // also surfaces on the client's next request.
            let _ = connection.await;
        });
        Ok(PostgresSession {
            client,
            statements: HashMap::new(),
            begin_sql: format!("BEGIN ISOLATION LEVEL {}", self.isolation.postgres_name()),
        })
    }
}

impl Target for PostgresTarget {
    type Session = PostgresSession;

    fn name(&self) -> &str {
        match self.server {
            Server::Postgres => "postgres",
            Server::GeoDb => "geodb-pg",
        }
    }

    fn description(&self) -> String {
        match self.server {
            Server::Postgres => {
                format!("PostgreSQL {} via tokio-postgres, isolation {}", self.version, self.isolation.postgres_name())
            }
            Server::GeoDb => format!(
                "GeoDB over the PostgreSQL wire protocol via tokio-postgres, isolation {}, {}",
                self.isolation.postgres_name(),
                self.configs.join(" ")
            ),
        }
    }

    fn dialect(&self) -> Dialect {
        match self.server {
            Server::Postgres => Dialect::Postgres,
            Server::GeoDb => Dialect::GeoDb,
        }
    }

    async fn load_session(&self, warehouse: Option<i64>) -> Result<PostgresSession, DbError> {
        self.session(warehouse).await
    }

    async fn terminal_session(&self, warehouse: i64) -> Result<PostgresSession, DbError> {
        self.session(Some(warehouse)).await
    }
}

pub struct PostgresSession {
    client: Client,
    statements: HashMap<String, Statement>,
    begin_sql: String,
}

impl PostgresSession {
    async fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await.map_err(error)?;
        if self.statements.len() < PREPARED_STATEMENTS_MAX {
            self.statements.insert(sql.to_string(), statement.clone());
        }
        Ok(statement)
    }
}

impl Session for PostgresSession {
    async fn begin(&mut self) -> Result<(), DbError> {
        self.client.batch_execute(&self.begin_sql).await.map_err(error)
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        let statement = self.statement(sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        if statement.columns().is_empty() {
            let rows_affected = self.client.execute(&statement, &params).await.map_err(error)?;
            return Ok(Rows { rows: Vec::new(), rows_affected });
        }
        let rows = self.client.query(&statement, &params).await.map_err(error)?;
        let rows = rows
            .iter()
            .map(|row| (0..row.len()).map(|i| row.try_get::<_, Value>(i).map_err(error)).collect())
            .collect::<Result<Vec<Vec<Value>>, DbError>>()?;
        Ok(Rows { rows_affected: rows.len() as u64, rows })
    }

    async fn commit(&mut self) -> Result<(), DbError> {
        self.client.batch_execute("COMMIT").await.map_err(error)
    }

    async fn rollback(&mut self) -> Result<(), DbError> {
        // Outside a transaction PostgreSQL answers ROLLBACK with a warning,
        // not an error, which is what the Session contract asks for.
        self.client.batch_execute("ROLLBACK").await.map_err(error)
    }

    async fn close(self) {
        // Dropping the client closes the connection; the server rolls back.
    }
}

/// Appends an already encoded value.
fn raw(out: &mut BytesMut, bytes: &[u8]) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
    out.extend_from_slice(bytes);
    Ok(IsNull::No)
}

fn error(e: tokio_postgres::Error) -> DbError {
    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
    let message = e.as_db_error().map(|db| db.message().to_string()).unwrap_or_else(|| e.to_string());
    DbError { retryable: DbError::is_retry_code(&code), code, message }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(v), &Type::INT2) => i16::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT4) => i32::try_from(*v)?.to_sql(ty, out),
            (Value::Int(v), &Type::INT8) => v.to_sql(ty, out),
            (Value::Int(v), &Type::NUMERIC) => raw(out, &encode_numeric(&v.to_string())?),
            (Value::Decimal(s), &Type::NUMERIC) => raw(out, &encode_numeric(s)?),
            (Value::Int(v), &Type::FLOAT8) => (*v as f64).to_sql(ty, out),
            (Value::Float(v), &Type::FLOAT8) => v.to_sql(ty, out),
            (Value::Decimal(s), &Type::FLOAT8) => s.parse::<f64>()?.to_sql(ty, out),
            (Value::Text(s) | Value::Decimal(s), _) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            (Value::Timestamp(micros), &Type::TIMESTAMP | &Type::TIMESTAMPTZ) => {
                raw(out, &(micros - POSTGRES_EPOCH_UNIX_MICROS).to_be_bytes())
            }
            (value, ty) => Err(format!("cannot send {value:?} as PostgreSQL type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Every pairing is checked in `to_sql`, which names the mismatch.
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(match *ty {
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::NUMERIC => Value::Decimal(decode_numeric(raw)?),
            Type::FLOAT4 => Value::Float(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Float(f64::from_sql(ty, raw)?),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let bytes: [u8; 8] = raw.try_into().map_err(|_| "timestamp is not 8 bytes")?;
                Value::Timestamp(i64::from_be_bytes(bytes) + POSTGRES_EPOCH_UNIX_MICROS)
            }
            _ => Value::Text(<&str>::from_sql(ty, raw)?.to_string()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value, Box<dyn Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// `NUMERIC`'s binary form: digit count, weight of the first digit, sign,
/// display scale, then base-10,000 digits, all big-endian 16-bit.
const NUMERIC_NEGATIVE: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_BASE_DIGITS: usize = 4;

/// Encodes a decimal text like `-123.4500` into `NUMERIC`'s binary form.
pub fn encode_numeric(text: &str) -> Result<Vec<u8>, String> {
    let invalid = || format!("not a decimal: {text:?}");
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (integer, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if integer.is_empty() && fraction.is_empty() || !integer.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let scale = u16::try_from(fraction.len()).map_err(|_| invalid())?;
    // Pad the integer part on the left and the fraction on the right to
    // whole base-10,000 digits.
    let integer_pad = (NUMERIC_BASE_DIGITS - integer.len() % NUMERIC_BASE_DIGITS) % NUMERIC_BASE_DIGITS;
    let fraction_pad = (NUMERIC_BASE_DIGITS - fraction.len() % NUMERIC_BASE_DIGITS) % NUMERIC_BASE_DIGITS;
    let digits_text = format!("{}{integer}{fraction}{}", "0".repeat(integer_pad), "0".repeat(fraction_pad));
    let mut digits: Vec<i16> = digits_text
        .as_bytes()
        .chunks(NUMERIC_BASE_DIGITS)
        .map(|chunk| std::str::from_utf8(chunk).expect("ascii digits").parse().expect("four digits"))
        .collect();
    let mut weight = ((integer.len() + integer_pad) / NUMERIC_BASE_DIGITS) as i16 - 1;
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign = if negative && !digits.is_empty() { NUMERIC_NEGATIVE } else { 0 };
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for digit in digits {
        out.extend_from_slice(&digit.to_be_bytes());
    }
    Ok(out)
}

/// Decodes `NUMERIC`'s binary form into decimal text with its display scale.
pub fn decode_numeric(raw: &[u8]) -> Result<String, String> {
    let word = |i: usize| -> Result<i16, String> {
        raw.get(2 * i..2 * i + 2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short NUMERIC".to_string())
    };
    let count = word(0)? as usize;
    let weight = word(1)? as i64;
    let sign = word(2)? as u16;
    let scale = word(3)? as usize;
    if sign == NUMERIC_NAN {
        return Ok("NaN".into());
    }
    let digits = (0..count).map(|i| word(4 + i)).collect::<Result<Vec<i16>, String>>()?;
    let digit_at = |position: i64| if position >= 0 { digits.get(position as usize).copied().unwrap_or(0) } else { 0 };
    let mut text = String::new();
    if sign == NUMERIC_NEGATIVE {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        text.push_str(&digit_at(0).to_string());
        for position in 1..=weight {
            text.push_str(&format!("{:04}", digit_at(position)));
        }
    }
    if scale > 0 {
        let mut fraction = String::new();
        let mut position = weight + 1;
        while fraction.len() < scale {
            fraction.push_str(&format!("{:04}", digit_at(position)));
            position += 1;
        }
        fraction.truncate(scale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_round_trips() {
        for text in [
            "0",
            "0.00",
            "-10.00",
            "12.34",
            "300000.00",
            "0.0007",
            "0.1234",
            "123456789.1",
            "-0.05",
            "10000",
            "9999.99",
        ] {
            let decoded = decode_numeric(&encode_numeric(text).unwrap()).unwrap();
            assert_eq!(decoded, text, "round trip of {text}");
        }
        assert_eq!(decode_numeric(&encode_numeric("007.50").unwrap()).unwrap(), "7.50");
        assert!(encode_numeric("1.2.3").is_err());
        assert!(encode_numeric("").is_err());
        assert!(encode_numeric("abc").is_err());
    }

    #[test]
    fn numeric_matches_postgres_wire_bytes() {
        // SELECT '12.34'::numeric in binary: 2 digits, weight 0, +, scale 2, [12, 3400].
        assert_eq!(encode_numeric("12.34").unwrap(), [0, 2, 0, 0, 0, 0, 0, 2, 0, 12, 13, 72]);
        // 10000: 1 digit, weight 1, [1].
        assert_eq!(encode_numeric("10000").unwrap(), [0, 1, 0, 1, 0, 0, 0, 0, 0, 1]);
    }
}
