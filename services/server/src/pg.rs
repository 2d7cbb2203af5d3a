//! The PostgreSQL wire protocol (v3), beside the HTTP API (`docs/api.md`,
//! "PostgreSQL wire protocol"), over the `pgwire` crate.
//!
//! Each connection is a session ([`crate::session`]): the same statements,
//! levels, transaction blocks and SQLSTATEs as `POST /v1/sessions`, and the
//! transaction status every `ReadyForQuery` reports is the session's own.
//! Both query protocols are served:
//!
//! - the simple query protocol (what `psql` and a driver's `simple_query`
//!   send): several statements of one query string outside a transaction
//!   block run as one implicit transaction, as in PostgreSQL; values go in
//!   text format, each column typed by the values it holds;
//! - the extended query protocol (`pg/extended.rs`: `Parse`, `Bind`,
//!   `Describe`, `Execute`, `Close`, `Sync`; what a driver's `query`,
//!   `execute` and `prepare` send): statements are planned at `Parse` so
//!   that parameter and result types are described before anything runs,
//!   and values travel in text or binary format (`pg/values.rs`).
//!
//! `psql`'s `\dt` and `\d <table>` describe GeoDB's tables: their
//! `pg_catalog` queries are answered from its catalog (`pg/catalog.rs`),
//! and so are the catalog queries of drivers and ORMs (`pg/reflect.rs`:
//! psycopg's `pg_type` lookup, SQLAlchemy's reflection).
//!
//! A client stops a running statement with a cancel request, over another
//! connection, naming the key it was told at startup (`pg/cancel.rs`):
//! the statement answers `57014` at its next read.
//!
//! A node without certificates lets any user and database name connect.
//! A node with certificates authenticates every connection (`pg/login.rs`:
//! SCRAM-SHA-256 or a client certificate) and runs its statements as that
//! user; it answers `SSLRequest` and
//! upgrades the connection to TLS (or takes TLS at once: PostgreSQL 17's
//! direct negotiation), and refuses a client that does not ask for it with
//! FATAL `28000`; cancel requests, which carry only a random key, are
//! taken either way. With TLS, GeoDB negotiates it itself, never pgwire
//! (`pg/negotiate.rs` says why).
//! Connections count against `limits.sessions_max` and queries against
//! `limits.requests_inflight_max`.

mod cancel;
mod catalog;
mod extended;
mod login;
mod negotiate;
mod reflect;
mod values;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Sink, SinkExt, stream};
use geodb_sql::{Control, StatementResult};
use geodb_storage::Value;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response, send_ready_for_query,
};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::exec::Statement;
use crate::http::ApiError;
use crate::node::Node;
use crate::session::{self, Ran, Session};
use cancel::{Cancels, Registration};
use extended::StatementParser;

/// How long the accept loop pauses after a failed accept (out of file
/// descriptors, say) before it tries again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Accepts PostgreSQL connections on `listener` until the node stops
/// serving; each runs on its own task, at most `limits.sessions_max` at
/// once (a connection beyond it is closed at once, and logged).
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let connections = Arc::new(Semaphore::new(node.config.limits.sessions_max));
    let cancels = Arc::new(Cancels::default());
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a PostgreSQL connection");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        if !node.is_ready() {
            return;
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refused a PostgreSQL connection: limits.sessions_max connections are open");
            continue;
        };
        let _ = socket.set_nodelay(true);
        let connection = Arc::new(Connection::new(node.clone(), cancels.clone()));
        tokio::spawn(async move {
            let served = match connection.handler.node.tls.as_ref().map(|tls| tls.pg_acceptor()) {
                Some(acceptor) => negotiate::serve(socket, peer, acceptor, connection).await,
                None => pgwire::tokio::process_socket(socket, None, connection).await,
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "PostgreSQL connection ended");
            }
            drop(permit);
        });
    }
}

/// One client connection: its session (or, for a cancel request, none:
/// such a connection sends no startup message).
struct Connection {
    handler: Arc<Handler>,
    cancels: Arc<Cancels>,
}

impl Connection {
    fn new(node: Arc<Node>, cancels: Arc<Cancels>) -> Self {
        let session = Session::new(geodb_txn::Isolation::default());
        let cancel = session.cancel.clone();
        let session = Arc::new(tokio::sync::Mutex::new(session));
        let parser = Arc::new(StatementParser { node: node.clone(), session: session.clone() });
        let handler = Handler {
            node,
            session,
            parser,
            cancel,
            cancels: cancels.clone(),
            cancel_key: OnceLock::new(),
            login: login::Login::default(),
            statement_names: std::sync::Mutex::new(BTreeSet::new()),
        };
        Connection { handler: Arc::new(handler), cancels }
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.handler.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancels.clone()
    }
}

/// A connection's protocol handlers, over its session.
struct Handler {
    node: Arc<Node>,
    session: Arc<tokio::sync::Mutex<Session>>,
    /// Plans the statements of `Parse` (`pg/extended.rs`).
    parser: Arc<StatementParser>,
    /// The session's cancel flag, which a cancel request with this
    /// connection's key sets.
    cancel: Arc<AtomicBool>,
    cancels: Arc<Cancels>,
    /// The key drawn at startup (`BackendKeyData`); dropped, and so
    /// forgotten, with the connection.
    cancel_key: OnceLock<Registration>,
    /// The connection's login, on a secure node.
    login: login::Login,
    /// Names of the statements `Parse` stored (some may be closed since):
    /// what `DEALLOCATE ALL` removes, since the store cannot list them.
    statement_names: std::sync::Mutex<BTreeSet<String>>,
}

/// Names remembered in [`Handler::statement_names`] before the closed
/// ones are forgotten.
const STATEMENT_NAMES_KEPT: usize = 1024;

/// A statement that manages the connection's prepared statements, which
/// the connection answers itself.
#[derive(Clone, Debug)]
enum Maintenance {
    /// `DEALLOCATE [PREPARE] <name>`.
    Deallocate(String),
    /// `DEALLOCATE [PREPARE] ALL`.
    DeallocateAll,
    /// `DISCARD ALL`: every prepared statement and portal, and the level
    /// `SET TRANSACTION` chose for the next transaction.
    DiscardAll,
}

impl Maintenance {
    /// Recognises a query of exactly one such statement.
    fn parse(query: &str) -> Option<Maintenance> {
        let text = query.trim().trim_end_matches(';').trim_end();
        // Cheap first: every query of a connection passes here.
        let first = text.split_whitespace().next()?;
        if !first.eq_ignore_ascii_case("deallocate") && !first.eq_ignore_ascii_case("discard") {
            return None;
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let lower: Vec<String> = words.iter().map(|word| word.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        match lower.as_slice() {
            ["discard", "all"] => Some(Maintenance::DiscardAll),
            ["deallocate", "all"] | ["deallocate", "prepare", "all"] => Some(Maintenance::DeallocateAll),
            ["deallocate", _] => Some(Maintenance::Deallocate(statement_name(words[1]))),
            ["deallocate", "prepare", _] => Some(Maintenance::Deallocate(statement_name(words[2]))),
            _ => None,
        }
    }
}

/// A statement name as PostgreSQL reads it: as written when double-quoted,
/// else folded to lower case.
fn statement_name(word: &str) -> String {
    match word.strip_prefix('"').and_then(|inner| inner.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => word.to_ascii_lowercase(),
    }
}

impl Handler {
    /// Remembers the name of a statement `Parse` stored.
    fn note_statement<S: PortalStore>(&self, store: &S, name: &str) {
        let mut names = self.statement_names.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if names.len() >= STATEMENT_NAMES_KEPT {
            names.retain(|name| store.get_statement(name).is_some());
        }
        names.insert(name.to_string());
    }

    /// Runs `DEALLOCATE` or `DISCARD ALL` on the connection's statements,
    /// over either query protocol. As in PostgreSQL, a failed transaction
    /// block refuses it (`25P02`), and its own error fails the block.
    async fn maintain<C>(&self, client: &mut C, maintenance: Maintenance) -> Result<Response, ApiError>
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore,
    {
        let store = client.portal_store();
        let mut session = self.session.lock().await;
        if session.failed {
            return Err(session::in_failed_transaction());
        }
        let mut names = self.statement_names.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tag = match maintenance {
            Maintenance::Deallocate(name) => {
                if store.get_statement(&name).is_none() {
                    let error = ApiError::new("26000", format!("prepared statement \"{name}\" does not exist"));
                    return Err(session::fail(&mut session, error));
                }
                store.rm_statement(&name);
                names.remove(&name);
                "DEALLOCATE"
            }
            Maintenance::DeallocateAll => {
                std::mem::take(&mut *names).iter().for_each(|name| store.rm_statement(name));
                "DEALLOCATE ALL"
            }
            Maintenance::DiscardAll => {
                if session.txn.is_some() {
                    let error = ApiError::new("25001", "DISCARD ALL cannot run inside a transaction block");
                    return Err(session::fail(&mut session, error));
                }
                session.next_isolation = None;
                std::mem::take(&mut *names).iter().for_each(|name| store.rm_statement(name));
                store.clear_portals();
                "DISCARD ALL"
            }
        };
        Ok(Response::Execution(Tag::new(tag)))
    }

    /// The transaction status `ReadyForQuery` reports: the session's.
    async fn transaction_status(&self) -> TransactionStatus {
        let session = self.session.lock().await;
        match (session.txn.is_some(), session.failed) {
            (false, _) => TransactionStatus::Idle,
            (true, true) => TransactionStatus::Error,
            (true, false) => TransactionStatus::Transaction,
        }
    }
}

#[async_trait]
impl StartupHandler for Handler {
    /// A node with certificates first refuses a client that did not ask
    /// for TLS (FATAL `28000`, before anything else is said), then logs the
    /// client in (`pg/login.rs`) and runs the session as its user. A node
    /// without lets anyone in, as pgwire's `NoopStartupHandler`.
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let startup = match message {
            PgWireFrontendMessage::Startup(startup) => startup,
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                if let Some(user) = self.login.step(&self.node, client, password).await? {
                    return self.logged_in(client, user).await;
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let startup = &startup;
        if self.node.tls.is_some() && !client.is_secure() {
            tracing::warn!(peer = %client.socket_addr(), "refused a PostgreSQL client that did not ask for TLS");
            crate::tls::count_refused(crate::tls::Listener::Pg, crate::tls::Refusal::Plaintext);
            let message = "this node accepts TLS connections only: connect with sslmode=require or verify-full";
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_string(),
                "28000".to_string(),
                message.to_string(),
            ))));
        }
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        // The handler draws its connection's cancel key itself, to register it.
        let (pid, secret) = self.generate(client);
        client.set_pid_and_secret_key(pid, secret);
        if !self.node.auth.required {
            return finish_authentication(client, &server_parameters()).await;
        }
        match self.login.begin(&self.node, client).await? {
            login::Begun::As(user) => self.logged_in(client, user).await,
            login::Begun::Asked => Ok(()),
        }
    }
}

/// The settings a connection reports at start-up: GeoDB's, as `SHOW`
/// answers them (`geodb_sql::plan::show`).
fn server_parameters() -> DefaultServerParameterProvider {
    use geodb_sql::plan::show;
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = show::SERVER_VERSION.to_owned();
    parameters.search_path = show::SCHEMA.to_owned();
    parameters.date_style = show::DATE_STYLE.to_owned();
    parameters.time_zone = show::TIME_ZONE.to_owned();
    parameters
}

impl Handler {
    /// Ends a successful login: the session runs as `user` from now on.
    async fn logged_in<C>(&self, client: &mut C, user: geodb_sql::access::User) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.session.lock().await.user = Some(std::sync::Arc::from(user.name.as_str()));
        finish_authentication(client, &server_parameters()).await
    }
}

impl PidSecretKeyGenerator for Handler {
    /// Registers the connection's cancel key, once (pgwire asks at startup).
    fn generate(&self, client: &dyn ClientInfo) -> (i32, SecretKey) {
        let key = self.cancel_key.get_or_init(|| self.cancels.register(client.protocol_version(), self.cancel.clone()));
        (key.pid, key.secret.clone())
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    /// pgwire's own `on_query`, but for the transaction status it reports:
    /// the session's (a failed `COMMIT` ends the transaction, a `BEGIN`
    /// after a failed one does not start one), not one inferred from the
    /// answers.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let responses = match Maintenance::parse(&query.query) {
            Some(maintenance) => match self.maintain(client, maintenance).await {
                Ok(response) => vec![response],
                Err(error) => vec![Response::Error(Box::new(error_info(&error)))],
            },
            None => SimpleQueryHandler::do_query(self, client, &query.query).await?,
        };
        for response in responses {
            match response {
                Response::EmptyQuery => {
                    client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?
                }
                Response::Query(results) => send_query_response(client, results, true).await?,
                Response::Execution(tag) | Response::TransactionStart(tag) | Response::TransactionEnd(tag) => {
                    send_execution_response(client, tag).await?
                }
                Response::Error(error) => client.feed(PgWireBackendMessage::ErrorResponse((*error).into())).await?,
                Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                    unreachable!("GeoDB answers no COPY")
                }
            }
        }
        let status = self.transaction_status().await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
    {
        // psql's `\dt` and `\d`, from GeoDB's catalog (`pg/catalog.rs`).
        if let Some(response) = catalog::answer(&self.node.db.catalog(), query) {
            return Ok(vec![response]);
        }
        let statements = split_statements(query);
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        if !self.node.is_ready() {
            let error = ApiError::new("57P01", "the node is shutting down; connect to another");
            return Ok(vec![Response::Error(Box::new(error_info(&error)))]);
        }
        let _admission = match self.node.admit() {
            Ok(admission) => admission,
            Err(shed) => return Ok(vec![Response::Error(Box::new(error_info(&shed)))]),
        };
        let mut session = self.session.lock().await;
        // As PostgreSQL: several statements outside a transaction block, none
        // of them transaction control, are one implicit transaction.
        let implicit = statements.len() > 1
            && session.txn.is_none()
            && statements.iter().all(|sql| geodb_sql::parse_control(sql).is_none());
        if implicit {
            let begin = Statement { sql: "BEGIN".into(), params: Vec::new() };
            if let Err(error) = session::run(&self.node, &mut session, begin).await {
                return Ok(vec![Response::Error(Box::new(error_info(&error)))]);
            }
        }
        let mut responses = Vec::new();
        for (i, sql) in statements.iter().enumerate() {
            crate::exec::pause_in_list(i).await;
            let statement = Statement { sql: sql.to_string(), params: Vec::new() };
            let ran = session::run(&self.node, &mut session, statement).await;
            match ran {
                Ok(ran) => responses.push(response(sql, ran)),
                // `COMMIT` of a failed transaction rolls it back, and says so.
                Err(error)
                    if error.code == "25P02" && matches!(geodb_sql::parse_control(sql), Some(Ok(Control::Commit))) =>
                {
                    responses.push(Response::TransactionEnd(Tag::new("ROLLBACK")));
                }
                Err(error) => {
                    // As PostgreSQL: an error ends the query string (and its
                    // implicit transaction).
                    responses.push(Response::Error(Box::new(error_info(&error))));
                    if implicit && let Some(txn) = session.end_transaction() {
                        txn.rollback();
                    }
                    return Ok(responses);
                }
            }
        }
        if implicit {
            let commit = Statement { sql: "COMMIT".into(), params: Vec::new() };
            if let Err(error) = session::run(&self.node, &mut session, commit).await {
                responses.push(Response::Error(Box::new(error_info(&error))));
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
        (Some(Control::Savepoint(_)), _) => Response::Execution(Tag::new("SAVEPOINT")),
        (Some(Control::Release(_)), _) => Response::Execution(Tag::new("RELEASE")),
        (Some(Control::RollbackTo(_)), _) => Response::Execution(Tag::new("ROLLBACK")),
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
        K::Ddl => Response::Execution(Tag::new(&ddl_tag(sql))),
    }
}

/// PostgreSQL's tag for DDL: the statement's leading words (`CREATE
/// TABLE`, `DROP INDEX`); for users and grants, PostgreSQL's own (`CREATE
/// ROLE` for `CREATE USER`, `GRANT`).
fn ddl_tag(sql: &str) -> String {
    if let Some(Ok(statement)) = geodb_sql::access::parse_user_statement(sql) {
        return statement.tag().to_string();
    }
    let words: Vec<String> =
        sql.split_whitespace().map(str::to_ascii_uppercase).filter(|word| word != "UNIQUE").take(2).collect();
    words.join(" ")
}

/// Rows in text format; a column's type is the one its values share
/// (numbers of several kinds: the widest; text if every value is NULL or
/// the kinds differ otherwise).
fn rows_response(result: StatementResult) -> Response {
    let fields: Vec<FieldInfo> = result
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let kind = result.rows.iter().map(|row| pg_type(&row[i])).fold(None, widest);
            FieldInfo::new(name.clone(), None, None, kind.flatten().unwrap_or(Type::TEXT), FieldFormat::Text)
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

/// The PostgreSQL type a value is sent as (`None`: NULL, any type).
fn pg_type(value: &Value) -> Option<Type> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => Type::BOOL,
        Value::Int(_) => Type::INT8,
        Value::Float(_) => Type::FLOAT8,
        Value::Decimal(_) => Type::NUMERIC,
        Value::Timestamp(_) => Type::TIMESTAMPTZ,
        Value::Text(_) => Type::TEXT,
    })
}

/// The type of a column so far (`None`: no value yet; `Some(None)`: no
/// NULL-free value yet) with one more value's.
fn widest(so_far: Option<Option<Type>>, next: Option<Type>) -> Option<Option<Type>> {
    let Some(next) = next else { return Some(so_far.flatten()) };
    let Some(Some(current)) = so_far else { return Some(Some(next)) };
    let numeric = |kind: &Type| [Type::INT8, Type::FLOAT8, Type::NUMERIC].contains(kind);
    Some(Some(if current == next {
        current
    } else if numeric(&current) && numeric(&next) {
        if current == Type::NUMERIC || next == Type::NUMERIC { Type::NUMERIC } else { Type::FLOAT8 }
    } else {
        Type::TEXT
    }))
}

/// A value in PostgreSQL's text format (`None`: NULL).
fn text_of(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) if x.is_nan() => "NaN".to_string(),
        Value::Float(x) if x.is_infinite() => if *x > 0.0 { "Infinity" } else { "-Infinity" }.to_string(),
        Value::Float(x) => float_text(*x, 1e15),
        Value::Decimal(d) => d.to_string(),
        Value::Text(s) => s.clone(),
        Value::Timestamp(_) => {
            // RFC 3339 (`2026-12-06T16:00:00Z`) as PostgreSQL writes it.
            let json = geodb_sql::json::value_to_json(value);
            json.as_str().unwrap_or_default().replacen('T', " ", 1).replace('Z', "+00")
        }
    })
}

/// A finite float as PostgreSQL writes it: plain, or in exponent form
/// (`1e+300`) from `plain_below` up and below 10^-4 — 10^15 for a `DOUBLE
/// PRECISION`, 10^6 for a `REAL`, each printed at its own precision.
fn float_text<T: std::fmt::Display + std::fmt::LowerExp + Into<f64> + Copy>(x: T, plain_below: f64) -> String {
    let magnitude = x.into().abs();
    if magnitude != 0.0 && !(1e-4..plain_below).contains(&magnitude) {
        let text = format!("{x:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => format!("{mantissa}e+{exponent}"),
            _ => text,
        }
    } else {
        x.to_string()
    }
}

/// The statements of a query string, split at semicolons outside quotes
/// (`'...'`, `"..."`), with comments (`-- ...`, `/* ... */`) outside
/// quotes taken out; empty ones dropped.
fn split_statements(query: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = query.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                current.push(c);
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        break;
                    }
                }
                current.push(' ');
            }
            None if c == '/' && chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                for skipped in chars.by_ref() {
                    if previous == '*' && skipped == '/' {
                        break;
                    }
                    previous = skipped;
                }
                current.push(' ');
            }
            None if c == ';' => statements.push(std::mem::take(&mut current)),
            None => current.push(c),
        }
    }
    statements.push(current);
    statements.into_iter().map(|sql| sql.trim().to_string()).filter(|sql| !sql.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_statements_answer_postgresql_tags() {
        for (sql, tag) in [
            ("CREATE USER bob PASSWORD 'b'", "CREATE ROLE"),
            ("ALTER USER bob PASSWORD 'b'", "ALTER ROLE"),
            ("DROP USER bob", "DROP ROLE"),
            ("GRANT SELECT ON t TO bob", "GRANT"),
            ("GRANT admin TO bob", "GRANT"),
            ("REVOKE ALL PRIVILEGES ON t FROM bob", "REVOKE"),
            ("create unique index i on t (v)", "CREATE INDEX"),
            ("CREATE TABLE t (k INT PRIMARY KEY)", "CREATE TABLE"),
        ] {
            assert_eq!(ddl_tag(sql), tag, "{sql}");
        }
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        assert_eq!(
            split_statements("BEGIN; INSERT INTO t VALUES ('a;b', \"c;\", 'it''s -- /*'); -- x; y\nCOMMIT -- done;;"),
            vec!["BEGIN", "INSERT INTO t VALUES ('a;b', \"c;\", 'it''s -- /*')", "COMMIT"]
        );
        assert_eq!(split_statements("/* a; b */ SELECT 1; /* c */"), vec!["SELECT 1"]);
        assert!(split_statements(" ; -- nothing").is_empty());
    }

    #[test]
    fn a_column_takes_the_type_its_values_share() {
        let column = |values: &[Value]| values.iter().map(pg_type).fold(None, widest).flatten();
        assert_eq!(column(&[Value::Null, Value::Int(1)]), Some(Type::INT8));
        assert_eq!(column(&[Value::Int(1), Value::Float(1.5)]), Some(Type::FLOAT8));
        assert_eq!(column(&[Value::Float(1.5), Value::Decimal(1.into())]), Some(Type::NUMERIC));
        assert_eq!(column(&[Value::Int(1), Value::Text("a".into())]), Some(Type::TEXT));
        assert_eq!(column(&[Value::Null]), None);
    }

    #[test]
    fn values_have_postgresql_text_forms() {
        assert_eq!(text_of(&Value::Bool(true)).as_deref(), Some("t"));
        assert_eq!(text_of(&Value::Int(-7)).as_deref(), Some("-7"));
        assert_eq!(text_of(&Value::Float(f64::NEG_INFINITY)).as_deref(), Some("-Infinity"));
        assert_eq!(text_of(&Value::Timestamp(0)).as_deref(), Some("1970-01-01 00:00:00+00"));
        assert_eq!(text_of(&Value::Null), None);
        assert_eq!(text_of(&Value::Float(1e300)).as_deref(), Some("1e+300"));
        assert_eq!(text_of(&Value::Float(1.5e-7)).as_deref(), Some("1.5e-7"));
        assert_eq!(text_of(&Value::Float(2.5)).as_deref(), Some("2.5"));
    }
}
