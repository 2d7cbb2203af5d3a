//! GeoDB over its HTTP API (`docs/api.md`, version 1): one interactive
//! session (`POST /v1/sessions`) per terminal, one `POST
//! /v1/sessions/<id>/sql` per statement.
//!
//! Home-aware: a target holds one gateway per region. The loader writes
//! each warehouse through the gateway of the region chosen for it, which
//! makes that region the warehouse's home (a locality key with no home yet
//! gets the region of the gateway that first writes it); the driver then
//! asks `GET /v1/homes/<w>` where each warehouse lives and binds the
//! warehouse's terminals to a gateway in that region.

use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use super::schema::Dialect;
use super::session::{DbError, Isolation, Rows, Session, Target, Value};

/// A gateway and the region it answers for (its `X-GeoDB-Region` header).
#[derive(Clone, Debug)]
pub struct Gateway {
    pub region: String,
    pub url: String,
}

/// Sessions idle longer than 60 s are removed by the server (the API's
/// default timeout); a session idle for half that is replaced before its
/// next transaction so that think times never hit a vanished session.
const SESSION_REFRESH_IDLE: Duration = Duration::from_secs(30);

/// The SQLSTATE of a session that does not exist (reaped or never opened).
const SESSION_UNKNOWN: &str = "08003";

/// An HTTP request that takes longer than this is a failure: far beyond
/// any statement of TPC-C, short enough that a hung server ends the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// GeoDB reached through one or more gateways.
#[derive(Clone)]
pub struct GeoDbTarget {
    client: reqwest::Client,
    pub gateways: Vec<Gateway>,
    isolation: Isolation,
}

impl GeoDbTarget {
    /// Connects to every gateway once to learn its region.
    pub async fn connect(urls: &[String], isolation: Isolation) -> Result<GeoDbTarget, String> {
        let client =
            reqwest::Client::builder().timeout(REQUEST_TIMEOUT).tcp_nodelay(true).build().map_err(|e| e.to_string())?;
        let mut gateways = Vec::new();
        for url in urls {
            let url = url.trim_end_matches('/').to_string();
            let response =
                client.get(format!("{url}/healthz")).send().await.map_err(|e| format!("GeoDB at {url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("GeoDB at {url}: /healthz answered {}", response.status()));
            }
            let region =
                response.headers().get("x-geodb-region").and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_string();
            if gateways.iter().any(|g: &Gateway| g.region == region) {
                return Err(format!("two gateways given for region {region}: give one URL per region"));
            }
            gateways.push(Gateway { region, url });
        }
        Ok(GeoDbTarget { client, gateways, isolation })
    }

    /// The gateway the loader writes warehouse `w` through: warehouses are
    /// spread round-robin over the regions given.
    pub fn load_gateway(&self, warehouse: i64) -> &Gateway {
        &self.gateways[((warehouse - 1) as usize) % self.gateways.len()]
    }

    /// The gateway in warehouse `w`'s home region, asked of the server;
    /// the first gateway when only one is given or the home's region has
    /// none (the caller is told, to print a warning).
    pub async fn home_gateway(&self, warehouse: i64) -> Result<(Gateway, bool), String> {
        if self.gateways.len() == 1 {
            return Ok((self.gateways[0].clone(), true));
        }
        let url = format!("{}/v1/homes/{warehouse}", self.gateways[0].url);
        let body: Json = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let region = body["region"].as_str().ok_or_else(|| format!("{url}: no region in {body}"))?;
        match self.gateways.iter().find(|g| g.region == region) {
            Some(gateway) => Ok((gateway.clone(), true)),
            None => Ok((self.gateways[0].clone(), false)),
        }
    }

    pub async fn session(&self, gateway: &Gateway) -> Result<GeoDbSession, DbError> {
        let mut session = GeoDbSession {
            client: self.client.clone(),
            url: gateway.url.clone(),
            id: String::new(),
            isolation: self.isolation,
            last_used: Instant::now(),
            in_transaction: false,
        };
        session.open().await?;
        Ok(session)
    }
}

/// One server-side session.
pub struct GeoDbSession {
    client: reqwest::Client,
    url: String,
    id: String,
    isolation: Isolation,
    last_used: Instant,
    /// Between `BEGIN` and its `COMMIT` or `ROLLBACK`: the session then
    /// holds a transaction and is never replaced under it.
    in_transaction: bool,
}

impl GeoDbSession {
    async fn open(&mut self) -> Result<(), DbError> {
        let body = json!({"isolation": self.isolation.geodb_name()});
        let answer = post(&self.client, &format!("{}/v1/sessions", self.url), &body).await?;
        self.id = answer["session"]
            .as_str()
            .ok_or_else(|| DbError::protocol(format!("no session id in {answer}")))?
            .to_string();
        self.last_used = Instant::now();
        Ok(())
    }
}

impl GeoDbSession {
    /// Ends this server-side session (if it still exists) and opens another.
    async fn reopen(&mut self) -> Result<(), DbError> {
        let _ = self.client.delete(format!("{}/v1/sessions/{}", self.url, self.id)).send().await;
        self.open().await
    }
}

impl Target for GeoDbTarget {
    type Session = GeoDbSession;

    fn name(&self) -> &str {
        "geodb"
    }

    fn description(&self) -> String {
        let gateways: Vec<String> = self.gateways.iter().map(|g| format!("{}={}", g.region, g.url)).collect();
        format!("GeoDB over HTTP, isolation {}, gateways {}", self.isolation.geodb_name(), gateways.join(" "))
    }

    fn dialect(&self) -> Dialect {
        Dialect::GeoDb
    }

    async fn load_session(&self, warehouse: Option<i64>) -> Result<GeoDbSession, DbError> {
        let gateway = match warehouse {
            Some(w) => self.load_gateway(w).clone(),
            None => self.gateways[0].clone(),
        };
        self.session(&gateway).await
    }

    async fn terminal_session(&self, warehouse: i64) -> Result<GeoDbSession, DbError> {
        let (gateway, in_home_region) = self.home_gateway(warehouse).await.map_err(DbError::protocol)?;
        if !in_home_region {
            eprintln!(
                "warning: warehouse {warehouse}'s home region has no gateway given; its terminal uses {}",
                gateway.url
            );
        }
        self.session(&gateway).await
    }
}

impl Session for GeoDbSession {
    async fn begin(&mut self) -> Result<(), DbError> {
        self.execute("BEGIN", &[]).await?;
        self.in_transaction = true;
        Ok(())
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<Rows, DbError> {
        // Outside a transaction (BEGIN, or a statement that commits on its
        // own, as the loader's), a session idle for long is replaced
        // first, and one the server has reaped all the same (`08003`: the
        // statement never ran) is replaced and the statement sent again.
        if !self.in_transaction && self.last_used.elapsed() > SESSION_REFRESH_IDLE {
            self.reopen().await?;
        }
        let params: Vec<Json> = params.iter().map(to_json).collect();
        let body = json!({"sql": sql, "params": params});
        let url = format!("{}/v1/sessions/{}/sql", self.url, self.id);
        let answer = match post(&self.client, &url, &body).await {
            Err(error) if error.code == SESSION_UNKNOWN && !self.in_transaction => {
                self.reopen().await?;
                post(&self.client, &format!("{}/v1/sessions/{}/sql", self.url, self.id), &body).await?
            }
            answer => answer?,
        };
        self.last_used = Instant::now();
        let rows = match answer["rows"].as_array() {
            Some(rows) => rows
                .iter()
                .map(|row| row.as_array().map(|cells| cells.iter().map(from_json).collect()).unwrap_or_default())
                .collect(),
            None => Vec::new(),
        };
        Ok(Rows { rows, rows_affected: answer["rows_affected"].as_u64().unwrap_or(0) })
    }

    async fn commit(&mut self) -> Result<(), DbError> {
        let outcome = self.execute("COMMIT", &[]).await.map(drop);
        self.in_transaction = false;
        outcome
    }

    async fn rollback(&mut self) -> Result<(), DbError> {
        let outcome = self.execute("ROLLBACK", &[]).await.map(drop);
        self.in_transaction = false;
        outcome
    }

    async fn close(self) {
        let _ = self.client.delete(format!("{}/v1/sessions/{}", self.url, self.id)).send().await;
    }
}

/// Posts `body`; a non-2xx answer becomes the API's error.
async fn post(client: &reqwest::Client, url: &str, body: &Json) -> Result<Json, DbError> {
    let response = client.post(url).json(body).send().await.map_err(transport)?;
    let status = response.status();
    let answer: Json = response.json().await.map_err(transport)?;
    if status.is_success() {
        return Ok(answer);
    }
    let error = &answer["error"];
    let code = error["code"].as_str().unwrap_or_default().to_string();
    // 53000 (overloaded) asks the client to come back later, like 40001.
    let retryable = error["retryable"].as_bool().unwrap_or(false) || DbError::is_retry_code(&code) || code == "53000";
    Err(DbError {
        message: error["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("{status}: {answer}")),
        code,
        retryable,
    })
}

fn transport(error: reqwest::Error) -> DbError {
    DbError::protocol(format!("HTTP: {error}"))
}

fn to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int(v) => json!(v),
        Value::Float(v) => json!(v),
        Value::Decimal(s) | Value::Text(s) => json!(s),
        Value::Timestamp(micros) => json!(rfc3339(*micros)),
    }
}

fn from_json(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Int(i64::from(*b)),
        Json::Number(n) => n.as_i64().map(Value::Int).unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, e.g.
/// `2026-11-26T10:31:10.123456Z` (days to civil date: Howard Hinnant's
/// `civil_from_days`).
pub fn rfc3339(micros: i64) -> String {
    let seconds = micros.div_euclid(1_000_000);
    let fraction = micros.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_000 + 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(rfc3339(1_795_689_070_922_712), "2026-11-26T10:31:10.922712Z");
    }
}
