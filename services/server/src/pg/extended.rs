//! The extended query protocol: `Parse`, `Bind`, `Describe`, `Execute`,
//! `Close` and `Sync`, what drivers send for `query`, `execute` and
//! `prepare` (tokio-postgres, psycopg 3, JDBC).
//!
//! ```text
//!   Parse(name, sql, declared types) --> plan against the catalog, keep a [`Prepared`]
//!   Bind(portal, name, params)        --> check count and formats, decode the values
//!   Describe(statement | portal)      --> ParameterDescription, RowDescription | NoData
//!   Execute(portal, max rows)         --> session::run, rows in the portal's formats
//!   Sync                              --> ReadyForQuery with the session's status
//! ```
//!
//! `Parse` plans the statement without running it
//! ([`geodb_sql::Database::describe_statement`]), so that `Describe`
//! answers the types a driver checks its values against before anything
//! runs: a parameter has the client's declared type, else the type of the
//! column it meets, its cast or its `LIMIT`, else `text`; a result column
//! the type of its expression ([`geodb_sql::plan::describe`]). Values
//! travel as [`super::values`] says, in text or binary per parameter and
//! per column.
//!
//! `Execute` runs the portal through [`crate::session::run`], as the
//! simple protocol and `POST /v1/sessions` do: the same transaction
//! blocks, retries and SQLSTATEs. Outside a transaction block each
//! `Execute` commits on its own, even when several come before one `Sync`
//! (PostgreSQL would make them one implicit transaction). Rows are
//! computed whole; `Execute` with a row limit sends them in batches
//! (`PortalSuspended`), as pgwire's portals do.
//!
//! Any error answers `ErrorResponse`, and pgwire then skips messages up to
//! the next `Sync`; inside a transaction block the error also fails the
//! transaction (`25P02` until `ROLLBACK`), as in PostgreSQL.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt, stream};
use geodb_sql::{Control, StatementKind, StatementResult};
use geodb_storage::{DataType, Value};
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{FieldDescription, NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Parse, ParseComplete, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::types::format::FormatOptions;
use tokio::sync::Mutex;

use super::{Handler, values};
use crate::exec::{self, Statement};
use crate::http::ApiError;
use crate::node::Node;
use crate::session::{self, Session};

/// A statement as `Parse` left it: its text and what it takes and returns.
#[derive(Debug)]
pub struct Prepared {
    pub sql: String,
    /// Each parameter's type: the client's, else the one GeoDB inferred,
    /// else `text`.
    pub params: Vec<Type>,
    /// The result columns; empty for a statement that returns no rows.
    pub columns: Vec<(String, Type)>,
    /// Who runs it, decided once at `Parse`.
    pub runner: Runner,
}

/// Who runs a prepared statement.
#[derive(Debug)]
pub enum Runner {
    /// The session: planned SQL, or transaction control.
    Session,
    /// The connection: `DEALLOCATE` or `DISCARD ALL`.
    Connection(super::Maintenance),
    /// The catalog: a driver's or an ORM's catalog query (`pg/reflect.rs`).
    Catalog(super::reflect::Query),
}

/// Plans statements for `Parse`, against the catalog the connection's
/// session sees.
pub struct StatementParser {
    pub node: Arc<Node>,
    pub session: Arc<Mutex<Session>>,
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        declared: &[Option<Type>],
    ) -> PgWireResult<Option<Arc<Prepared>>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let statements = super::split_statements(sql);
        let sql = match statements.as_slice() {
            [] => return Ok(None),
            [sql] => sql.clone(),
            _ => {
                return Err(user_error(&ApiError::new(
                    "42601",
                    "cannot insert multiple commands into a prepared statement",
                )));
            }
        };
        let mut session = self.session.lock().await;
        let control = match geodb_sql::parse_control(&sql) {
            Some(Err(error)) => return Err(user_error(&ApiError::from(error))),
            Some(Ok(control)) => Some(control),
            None => None,
        };
        // As PostgreSQL: a failed transaction takes nothing but its end.
        if session.failed && !matches!(control, Some(Control::Commit | Control::Rollback | Control::RollbackTo(_))) {
            return Err(user_error(&session::in_failed_transaction()));
        }
        // A driver's or an ORM's catalog query, answered from the catalog
        // (`pg/reflect.rs`): its parameters are text unless declared.
        if let Some(query) = super::reflect::Query::recognise(&sql) {
            let count = placeholders(&sql).max(declared.len()).min(i16::MAX as usize);
            let params = (0..count)
                .map(|i| declared.get(i).cloned().flatten().filter(|ty| *ty != Type::UNKNOWN).unwrap_or(Type::TEXT))
                .collect();
            let columns = query.columns(&sql);
            return Ok(Some(Arc::new(Prepared { sql, params, columns, runner: Runner::Catalog(query) })));
        }
        // Transaction control, and `DEALLOCATE`/`DISCARD ALL` (psycopg sends
        // them this way in pipeline mode), are run by the session and the
        // connection, not planned.
        let maintenance = super::Maintenance::parse(&sql);
        if control.is_some() || maintenance.is_some() {
            let params = declared.iter().map(|ty| ty.clone().unwrap_or(Type::TEXT)).collect();
            let runner = maintenance.map_or(Runner::Session, Runner::Connection);
            return Ok(Some(Arc::new(Prepared { sql, params, columns: Vec::new(), runner })));
        }
        let declared_types: Vec<Option<DataType>> =
            declared.iter().map(|ty| ty.as_ref().and_then(values::data_type_of)).collect();
        // Planning reads the catalog: it counts against the node's load
        // bound like any statement.
        if !self.node.is_ready() {
            return Err(user_error(&ApiError::new("57P01", "the node is shutting down; connect to another")));
        }
        let _admission = self.node.admit().map_err(|shed| user_error(&shed))?;
        let description = exec::statement(&self.node, || {
            self.node.db.describe_statement(&sql, &declared_types, session.txn.as_mut())
        })
        .map_err(|error| user_error(&ApiError::from(error)))?;
        // ParameterDescription counts them in 16 bits.
        if description.params.len() > i16::MAX as usize {
            let error = ApiError::new("54000", format!("{} parameters; at most 32767", description.params.len()));
            return Err(user_error(&error));
        }
        let params = description
            .params
            .iter()
            .enumerate()
            .map(|(i, inferred)| {
                declared
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|ty| *ty != Type::UNKNOWN)
                    .unwrap_or(values::pg_type_of(*inferred))
            })
            .collect();
        let columns =
            description.columns.into_iter().map(|column| (column.name, values::pg_type_of(column.ty))).collect();
        Ok(Some(Arc::new(Prepared { sql, params, columns, runner: Runner::Session })))
    }

    fn get_parameter_types(&self, statement: &Arc<Prepared>) -> PgWireResult<Vec<Type>> {
        Ok(statement.params.clone())
    }

    fn get_result_schema(&self, statement: &Arc<Prepared>, formats: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(statement, formats))
    }
}

/// The result columns of a statement, in `formats` (text if not bound yet).
fn fields(statement: &Prepared, formats: Option<&Format>) -> Vec<FieldInfo> {
    statement
        .columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| {
            let format = formats.map_or(FieldFormat::Text, |formats| formats.format_for(i));
            FieldInfo::new(name.clone(), None, None, ty.clone(), format)
        })
        .collect()
}

/// A GeoDB error as pgwire's error: an `ErrorResponse`, after which the
/// connection skips to the next `Sync`.
fn user_error(error: &ApiError) -> PgWireError {
    PgWireError::UserError(Box::new(super::error_info(error)))
}

/// A format code list of a `Bind` must name one format for all, or one
/// per item.
fn check_formats(codes: &[i16], items: usize, what: &str) -> Result<(), ApiError> {
    if codes.len() > 1 && codes.len() != items {
        return Err(ApiError::new(
            "08P01",
            format!("bind message has {} {what} formats but {items} {what}s", codes.len()),
        ));
    }
    match codes.iter().find(|code| !matches!(code, 0 | 1)) {
        Some(code) => Err(ApiError::new("08P01", format!("unsupported format code: {code}"))),
        None => Ok(()),
    }
}

/// The parameters of a portal as values.
fn portal_params(portal: &Portal<Arc<Prepared>>) -> Result<Vec<Value>, ApiError> {
    let statement = &portal.statement.statement;
    portal
        .parameters
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            values::decode_param(i + 1, &statement.params[i], bytes.as_deref(), portal.parameter_format.is_binary(i))
        })
        .collect()
}

/// How many parameters `sql` names: the highest `$n` in it.
fn placeholders(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok())
        .max()
        .unwrap_or(0)
}

/// The rows of a query's result, encoded as the statement described them.
fn rows_response(statement: &Prepared, formats: &Format, result: StatementResult) -> Result<Response, ApiError> {
    // The plan was made again if the schema changed since `Parse`; its
    // columns must still be those described.
    let same_columns = result.columns.len() == statement.columns.len()
        && result.columns.iter().zip(&statement.columns).all(|(name, (described, _))| name == described);
    if !same_columns {
        return Err(ApiError::new("0A000", "cached plan must not change result type (prepare the statement again)"));
    }
    let fields = Arc::new(fields(statement, Some(formats)));
    let mut encoder = DataRowEncoder::new(fields.clone());
    let options = FormatOptions::default();
    let mut rows = Vec::with_capacity(result.rows.len());
    for row in &result.rows {
        for (i, value) in row.iter().enumerate() {
            let bytes = values::encode(value, fields[i].datatype(), formats.is_binary(i))?;
            // The bytes are already the column's wire form; bytea's binary
            // form writes them as they are.
            encoder
                .encode_field_with_type_and_format(&bytes, &Type::BYTEA, FieldFormat::Binary, &options)
                .map_err(|error| ApiError::new("XX000", error.to_string()))?;
        }
        rows.push(Ok(encoder.take_row()));
    }
    let mut response = QueryResponse::new(fields, stream::iter(rows));
    if result.kind == StatementKind::Explain {
        response.set_command_tag("EXPLAIN");
    }
    Ok(Response::Query(response))
}

impl Handler {
    /// Inside a transaction block, an error fails the transaction (25P02
    /// until it ends), whichever message it answered.
    async fn failing<T>(&self, outcome: PgWireResult<T>) -> PgWireResult<T> {
        if outcome.is_err() {
            let mut session = self.session.lock().await;
            if session.txn.is_some() {
                session.failed = true;
            }
        }
        outcome
    }

    async fn bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Arc<Prepared>>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
        let shown_name = message.statement_name.as_deref().unwrap_or("");
        let statement = match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => Some(statement),
            Some(Entry::Empty) => None,
            None => {
                let error = ApiError::new("26000", format!("prepared statement \"{shown_name}\" does not exist"));
                return Err(user_error(&error));
            }
        };
        let wanted = statement.as_ref().map_or(0, |statement| statement.statement.params.len());
        if message.parameters.len() != wanted {
            let error = ApiError::new(
                "08P01",
                format!(
                    "bind message supplies {} parameters, but prepared statement \"{shown_name}\" requires {wanted}",
                    message.parameters.len()
                ),
            );
            return Err(user_error(&error));
        }
        let columns = statement.as_ref().map_or(0, |statement| statement.statement.columns.len());
        check_formats(&message.parameter_format_codes, wanted, "parameter")
            .and_then(|()| check_formats(&message.result_column_format_codes, columns, "result column"))
            .map_err(|error| user_error(&error))?;
        match statement {
            Some(statement) => {
                let portal = Portal::try_new(&message, statement)?;
                // Decoded again at `Execute`: checked here, as PostgreSQL
                // reports a bad value in answer to `Bind`.
                portal_params(&portal).map_err(|error| user_error(&error))?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            None => client.portal_store().put_empty_portal(portal_name),
        }
        client.feed(PgWireBackendMessage::BindComplete(BindComplete::new())).await?;
        Ok(())
    }

    async fn describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Arc<Prepared>>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        let shown_name = message.name.as_deref().unwrap_or("");
        let fields = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let statement = match client.portal_store().get_statement(name) {
                    Some(Entry::Value(statement)) => Some(statement),
                    Some(Entry::Empty) => None,
                    None => {
                        let error =
                            ApiError::new("26000", format!("prepared statement \"{shown_name}\" does not exist"));
                        return Err(user_error(&error));
                    }
                };
                let prepared = statement.as_ref().map(|statement| &statement.statement);
                let oids = prepared.map_or_else(Vec::new, |prepared| prepared.params.iter().map(Type::oid).collect());
                client.feed(PgWireBackendMessage::ParameterDescription(ParameterDescription::new(oids))).await?;
                prepared.map_or_else(Vec::new, |prepared| fields(prepared, None))
            }
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => fields(&portal.statement.statement, Some(&portal.result_column_format)),
                Some(Entry::Empty) => Vec::new(),
                None => {
                    let error = ApiError::new("34000", format!("portal \"{shown_name}\" does not exist"));
                    return Err(user_error(&error));
                }
            },
            other => {
                let error = ApiError::new("08P01", format!("invalid DESCRIBE message subtype {other}"));
                return Err(user_error(&error));
            }
        };
        let message = if fields.is_empty() {
            PgWireBackendMessage::NoData(NoData::new())
        } else {
            PgWireBackendMessage::RowDescription(RowDescription::new(
                fields.iter().map(FieldDescription::from).collect(),
            ))
        };
        client.feed(message).await?;
        Ok(())
    }

    /// Runs a portal's statement in the session.
    async fn execute(&self, portal: &Portal<Arc<Prepared>>) -> Result<Response, ApiError> {
        let statement = &portal.statement.statement;
        let params = portal_params(portal)?;
        if let Runner::Catalog(query) = statement.runner {
            let texts: Vec<Option<String>> = params
                .iter()
                .map(|value| match value {
                    Value::Null => None,
                    Value::Text(text) => Some(text.clone()),
                    other => Some(other.to_string()),
                })
                .collect();
            let rows = query.rows(&self.node.db.catalog(), &statement.sql, &texts)?;
            let fields = fields(statement, Some(&portal.result_column_format));
            return super::reflect::encode(Arc::new(fields), rows);
        }
        if !self.node.is_ready() {
            return Err(ApiError::new("57P01", "the node is shutting down; connect to another"));
        }
        let _admission = self.node.admit()?;
        let mut session = self.session.lock().await;
        let run = Statement { sql: statement.sql.clone(), params };
        match session::run(&self.node, &mut session, run).await {
            Ok(ran) => match ran.result {
                Some(result) if matches!(result.kind, StatementKind::Select | StatementKind::Explain) => {
                    rows_response(statement, &portal.result_column_format, result)
                }
                result => Ok(super::response(&statement.sql, session::Ran { result, ..ran })),
            },
            // `COMMIT` of a failed transaction rolls it back, and says so.
            Err(error)
                if error.code == "25P02"
                    && matches!(geodb_sql::parse_control(&statement.sql), Some(Ok(Control::Commit))) =>
            {
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Arc<Prepared>;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome: PgWireResult<()> = async {
            let name = message.name.clone().unwrap_or_else(|| DEFAULT_NAME.to_owned());
            if message.name.is_some() && client.portal_store().get_statement(&name).is_some() {
                let error = ApiError::new("42P05", format!("prepared statement \"{name}\" already exists"));
                return Err(user_error(&error));
            }
            match StoredStatement::parse(client, &message, self.parser.clone()).await? {
                Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
                None => client.portal_store().put_empty_statement(&name),
            }
            if message.name.is_some() {
                self.note_statement(client.portal_store(), &name);
            }
            client.feed(PgWireBackendMessage::ParseComplete(ParseComplete::new())).await?;
            Ok(())
        }
        .await;
        self.failing(outcome).await
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = self.bind(client, message).await;
        self.failing(outcome).await
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = self.describe(client, message).await;
        self.failing(outcome).await
    }

    async fn on_execute<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut message = message;
        // PostgreSQL reads a row limit at or below zero as none. pgwire
        // reserves room for the limit up front, so one far beyond any result
        // (a client's 2^31 - 1) would be an allocation the node cannot make:
        // no result holds more than RESULT_ROWS_MAX rows, so none it is.
        if message.max_rows <= 0 || message.max_rows as usize > geodb_sql::limits::RESULT_ROWS_MAX {
            message.max_rows = 0;
        }
        let name = message.name.clone().unwrap_or_else(|| DEFAULT_NAME.to_owned());
        // A portal that returns no rows runs once: executing it again must
        // not write again.
        let once = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(portal)) if portal.statement.statement.columns.is_empty() => Some(portal),
            _ => None,
        };
        if let Some(portal) = &once
            && matches!(*portal.state.lock().await, PortalExecutionState::Finished)
        {
            let error = ApiError::new("55000", format!("portal \"{name}\" cannot be run"));
            return self.failing(Err(user_error(&error))).await;
        }
        let outcome = self._on_execute(client, message).await;
        if let Some(portal) = once {
            *portal.state.lock().await = PortalExecutionState::Finished;
        }
        self.failing(outcome).await
    }

    /// pgwire's `Sync`, but for the transaction status it reports: the
    /// session's (an error outside a transaction block leaves it idle).
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = self.transaction_status().await;
        // As PostgreSQL: portals live until their transaction ends (each
        // holds its rows), and outside a block every Sync ends one.
        if status == TransactionStatus::Idle {
            client.portal_store().clear_portals();
        }
        client.set_transaction_status(status);
        client.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status))).await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Arc<Prepared>>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Runner::Connection(maintenance) = &portal.statement.statement.runner {
            return self.maintain(client, maintenance.clone()).await.map_err(|error| user_error(&error));
        }
        self.execute(portal).await.map_err(|error| user_error(&error))
    }
}
