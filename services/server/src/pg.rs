//! The PostgreSQL wire protocol (v3), beside the HTTP API (`docs/api.md`,
//! "PostgreSQL wire protocol"), over the `pgwire` crate.
//!
//! Each connection is a session ([`crate::session`]): the same statements,
//! levels, transaction blocks and SQLSTATEs as `POST /v1/sessions`. This
//! step serves the simple query protocol (what `psql` and a driver's
//! `simple_query` send), statements of a query string one after the other,
//! values in text format; the extended protocol (Parse/Bind/Execute) is
//! refused with `0A000` until it arrives. Any user and database name
//! connect (development and insecure mode).

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream;
use geodb_sql::{Control, StatementResult};
use geodb_storage::Value;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireResult};
use tokio::net::TcpListener;

use crate::exec::Statement;
use crate::http::ApiError;
use crate::node::Node;
use crate::session::{self, Ran, Session};

/// Accepts PostgreSQL connections on `listener` until the node stops
/// serving; each runs on its own task.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    loop {
        let Ok((socket, peer)) = listener.accept().await else { continue };
        if !node.is_ready() {
            return;
        }
        let connection = Arc::new(Connection::new(node.clone()));
        tokio::spawn(async move {
            if let Err(error) = pgwire::tokio::process_socket(socket, None, connection).await {
                tracing::debug!(%peer, %error, "PostgreSQL connection ended");
            }
        });
    }
}

/// One client connection: its session.
struct Connection {
    handler: Arc<Handler>,
}

impl Connection {
    fn new(node: Arc<Node>) -> Self {
        let session = Session::new(geodb_txn::Isolation::default());
        Connection { handler: Arc::new(Handler { node, session: tokio::sync::Mutex::new(session) }) }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.handler.clone()
    }
}

struct Handler {
    node: Arc<Node>,
    session: tokio::sync::Mutex<Session>,
}

impl NoopStartupHandler for Handler {}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
    {
        let mut session = self.session.lock().await;
        let mut responses = Vec::new();
        for sql in split_statements(query) {
            let statement = Statement { sql: sql.to_string(), params: Vec::new() };
            match session::run(&self.node, &mut session, statement).await {
                Ok(ran) => responses.push(response(sql, ran)),
                Err(error) => {
                    // As PostgreSQL: an error ends the query string.
                    responses.push(Response::Error(Box::new(error_info(&error))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A GeoDB error as PostgreSQL's error fields.
fn error_info(error: &ApiError) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_string(), error.code.clone(), error.message.clone())
}

/// What a statement's run answers on the wire.
fn response(sql: &str, ran: Ran) -> Response {
    match (ran.control, ran.result) {
        (Some(Control::Begin { .. }), _) => Response::TransactionStart(Tag::new("BEGIN")),
        (Some(Control::Commit), _) => Response::TransactionEnd(Tag::new("COMMIT")),
        (Some(Control::Rollback), _) => Response::TransactionEnd(Tag::new("ROLLBACK")),
        (Some(Control::SetIsolation(_)), _) => Response::Execution(Tag::new("SET")),
        (None, Some(result)) => result_response(sql, result),
        (None, None) => Response::EmptyQuery,
    }
}

fn result_response(sql: &str, result: StatementResult) -> Response {
    use geodb_sql::StatementKind as K;
    match result.kind {
        K::Select | K::Explain => rows_response(result),
        K::Insert => Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(result.rows_affected as usize)),
        K::Update => Response::Execution(Tag::new("UPDATE").with_rows(result.rows_affected as usize)),
        K::Delete => Response::Execution(Tag::new("DELETE").with_rows(result.rows_affected as usize)),
        // PostgreSQL's tag for DDL is the statement's leading words
        // (`CREATE TABLE`, `DROP INDEX`).
        K::Ddl => {
            let words: Vec<String> = sql.split_whitespace().take(2).map(str::to_ascii_uppercase).collect();
            Response::Execution(Tag::new(&words.join(" ")))
        }
    }
}

/// Rows in text format; a column's type is that of its first non-NULL
/// value (text if every value is NULL).
fn rows_response(result: StatementResult) -> Response {
    let fields: Vec<FieldInfo> = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let first = result.rows.iter().map(|row| &row[i]).find(|value| !matches!(value, Value::Null));
            FieldInfo::new(name.clone(), None, None, pg_type(first), FieldFormat::Text)
        })
        .collect();
    let fields = Arc::new(fields);
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(result.rows.len());
    for row in &result.rows {
        for value in row {
            if let Err(error) = encoder.encode_field(&text_of(value)) {
                return Response::Error(Box::new(ErrorInfo::new("ERROR".into(), "XX000".into(), error.to_string())));
            }
        }
        rows.push(Ok(encoder.take_row()));
    }
    Response::Query(QueryResponse::new(fields, stream::iter(rows)))
}

/// The PostgreSQL type a value is sent as.
fn pg_type(value: Option<&Value>) -> Type {
    match value {
        Some(Value::Bool(_)) => Type::BOOL,
        Some(Value::Int(_)) => Type::INT8,
        Some(Value::Float(_)) => Type::FLOAT8,
        Some(Value::Decimal(_)) => Type::NUMERIC,
        Some(Value::Timestamp(_)) => Type::TIMESTAMPTZ,
        Some(Value::Text(_) | Value::Null) | None => Type::TEXT,
    }
}

/// A value in PostgreSQL's text format (`None`: NULL).
fn text_of(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) if x.is_nan() => "NaN".to_string(),
        Value::Float(x) if x.is_infinite() => if *x > 0.0 { "Infinity" } else { "-Infinity" }.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Text(s) => s.clone(),
        Value::Timestamp(_) => {
            // RFC 3339 (`2026-12-06T16:00:00Z`) as PostgreSQL writes it.
            let json = geodb_sql::json::value_to_json(value);
            json.as_str().unwrap_or_default().replacen('T', " ", 1).replace('Z', "+00")
        }
    })
}

/// The statements of a query string, split at semicolons outside quotes
/// (`'...'`, `"..."`) and comments (`-- ...`); empty ones dropped.
fn split_statements(query: &str) -> Vec<&str> {
    let mut statements = Vec::new();
    let (bytes, mut start, mut i) = (query.as_bytes(), 0, 0);
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let byte = bytes[i];
        match quote {
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'\'' || byte == b'"' => quote = Some(byte),
            None if byte == b'-' && bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            None if byte == b';' => {
                statements.push(&query[start..i]);
                start = i + 1;
            }
            None => {}
        }
        i += 1;
    }
    statements.push(&query[start..]);
    statements.into_iter().map(without_leading_comments).filter(|sql| !sql.is_empty()).collect()
}

/// A statement without the `-- ...` lines and blanks before it.
fn without_leading_comments(mut sql: &str) -> &str {
    loop {
        sql = sql.trim();
        match sql.strip_prefix("--") {
            Some(rest) => sql = rest.split_once('\n').map_or("", |(_, after)| after),
            None => return sql,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split_statements("BEGIN; INSERT INTO t VALUES ('a;b', \"c;\"); -- x; y\nCOMMIT;;"),
            vec!["BEGIN", "INSERT INTO t VALUES ('a;b', \"c;\")", "COMMIT"]
        );
        assert!(split_statements(" ; ").is_empty());
    }

    #[test]
    fn values_have_postgresql_text_forms() {
        assert_eq!(text_of(&Value::Bool(true)).as_deref(), Some("t"));
        assert_eq!(text_of(&Value::Int(-7)).as_deref(), Some("-7"));
        assert_eq!(text_of(&Value::Float(f64::NEG_INFINITY)).as_deref(), Some("-Infinity"));
        assert_eq!(text_of(&Value::Timestamp(0)).as_deref(), Some("1970-01-01 00:00:00+00"));
        assert_eq!(text_of(&Value::Null), None);
    }
}
