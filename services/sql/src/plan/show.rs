//! `SHOW <setting>`: the run-time settings PostgreSQL clients and drivers
//! read, answered as one row of one text column named after the setting.
//!
//! GeoDB has no settings a session can change beyond its isolation level,
//! so every value but the transaction's level is fixed; they are the ones
//! a PostgreSQL connection reports at start-up (`ParameterStatus`), so a
//! driver that reads both sees one story. An unknown name answers `42704`,
//! as in PostgreSQL.

use geodb_txn::Isolation;
use sqlparser::ast::Ident;

use crate::error::{Error, Result};

/// The version GeoDB answers as PostgreSQL's: the protocol and catalog it
/// speaks are PostgreSQL 15's, and drivers parse the leading number.
pub const SERVER_VERSION: &str = concat!("15.0 (GeoDB ", env!("CARGO_PKG_VERSION"), ")");
/// [`SERVER_VERSION`] as `server_version_num` spells it.
pub const SERVER_VERSION_NUM: &str = "150000";
/// What `version()` answers.
pub const VERSION_TEXT: &str = concat!("PostgreSQL 15.0 (GeoDB ", env!("CARGO_PKG_VERSION"), ")");
/// The one schema every table is in.
pub const SCHEMA: &str = "public";
/// The database every connection is to, whatever name it asked for.
pub const DATABASE: &str = "geodb";
/// Dates as a PostgreSQL connection reports them at start-up.
pub const DATE_STYLE: &str = "ISO, YMD";
/// The time zone every timestamp is shown in.
pub const TIME_ZONE: &str = "Etc/UTC";

/// A setting `SHOW` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShowPlan {
    /// A fixed value, under the column name PostgreSQL gives it.
    Fixed { name: &'static str, value: &'static str },
    /// The level of the transaction the statement runs in.
    TransactionIsolation,
}

impl ShowPlan {
    /// The output column's name.
    pub fn column(&self) -> &'static str {
        match self {
            ShowPlan::Fixed { name, .. } => name,
            ShowPlan::TransactionIsolation => "transaction_isolation",
        }
    }

    /// The value, in a transaction at `isolation`.
    pub fn value(&self, isolation: Isolation) -> String {
        match self {
            ShowPlan::Fixed { value, .. } => (*value).to_string(),
            ShowPlan::TransactionIsolation => isolation_name(isolation).to_string(),
        }
    }
}

/// A level as PostgreSQL names it where PostgreSQL has it (snapshot
/// isolation is its `repeatable read`), and GeoDB's name otherwise.
pub fn isolation_name(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Snapshot => "repeatable read",
        other => other.name(),
    }
}

/// Plans `SHOW` of the setting named by `words` (`SHOW TRANSACTION
/// ISOLATION LEVEL` is three).
pub fn plan_show(words: &[Ident]) -> Result<ShowPlan> {
    let name = words.iter().map(|word| word.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" ");
    let fixed = |name, value| Ok(ShowPlan::Fixed { name, value });
    match name.as_str() {
        "transaction isolation level" | "transaction_isolation" => Ok(ShowPlan::TransactionIsolation),
        "server_version" => fixed("server_version", SERVER_VERSION),
        "server_version_num" => fixed("server_version_num", SERVER_VERSION_NUM),
        "server_encoding" => fixed("server_encoding", "UTF8"),
        "client_encoding" => fixed("client_encoding", "UTF8"),
        "standard_conforming_strings" => fixed("standard_conforming_strings", "on"),
        "integer_datetimes" => fixed("integer_datetimes", "on"),
        "datestyle" => fixed("DateStyle", DATE_STYLE),
        "timezone" | "time zone" => fixed("TimeZone", TIME_ZONE),
        "intervalstyle" => fixed("IntervalStyle", "postgres"),
        "search_path" => fixed("search_path", SCHEMA),
        "max_identifier_length" => fixed("max_identifier_length", "63"),
        "default_transaction_read_only" => fixed("default_transaction_read_only", "off"),
        "transaction_read_only" => fixed("transaction_read_only", "off"),
        "" => Err(Error::Syntax("SHOW needs the name of a setting".into())),
        other => Err(Error::UndefinedObject(format!("unrecognized configuration parameter \"{other}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(sql: &str) -> Result<ShowPlan> {
        let words: Vec<Ident> = sql.split_whitespace().map(Ident::new).collect();
        plan_show(&words)
    }

    #[test]
    fn settings_drivers_read_have_postgresql_s_names_and_values() {
        assert_eq!(show("standard_conforming_strings").unwrap().value(Isolation::Serializable), "on");
        assert_eq!(show("DateStyle").unwrap().column(), "DateStyle");
        assert!(show("server_version").unwrap().value(Isolation::Serializable).starts_with("15.0 (GeoDB "));
        let level = show("TRANSACTION ISOLATION LEVEL").unwrap();
        assert_eq!(level.column(), "transaction_isolation");
        assert_eq!(level.value(Isolation::Snapshot), "repeatable read");
        assert_eq!(level.value(Isolation::MonotonicAtomicView), "monotonic atomic view");
        assert_eq!(show("transaction_isolation").unwrap(), level);
    }

    #[test]
    fn an_unknown_setting_is_42704() {
        let error = show("work_mem_of_geodb").unwrap_err();
        assert_eq!(error.code(), "42704");
        assert_eq!(error.to_string(), "unrecognized configuration parameter \"work_mem_of_geodb\"");
    }
}
