//! Transaction-control statements, recognised before SQL parsing.
//!
//! `sqlparser` cannot parse every isolation level name of the API
//! (`MONOTONIC ATOMIC VIEW`, `STRICT SERIALIZABLE`), and the server — not
//! the SQL layer — owns the session state these statements change. So
//! [`parse_control`] looks at the words of a statement and answers
//! `None` when it is not transaction control (the caller then hands it to
//! [`crate::Database::execute`]), or the [`Control`] to act on.
//!
//! Grammar (case-insensitive, any whitespace, an optional trailing `;`):
//!
//! ```text
//! BEGIN [WORK | TRANSACTION] [ISOLATION LEVEL <level>]
//! START TRANSACTION [ISOLATION LEVEL <level>]
//! SET TRANSACTION ISOLATION LEVEL <level>
//! COMMIT [WORK | TRANSACTION] | END [WORK | TRANSACTION]
//! ROLLBACK [WORK | TRANSACTION] | ABORT [WORK | TRANSACTION]
//! SAVEPOINT <name>
//! RELEASE [SAVEPOINT] <name>
//! ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] <name>
//! ```
//!
//! `<level>` is any name of the API's table, parsed by
//! [`Isolation::from_str`]. An unknown level answers 22023 (invalid
//! parameter value), a malformed control statement 42601.

use std::str::FromStr;

use geodb_txn::Isolation;

use crate::error::{Error, Result};

/// A transaction-control statement for the server to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// `BEGIN` / `START TRANSACTION`, with the level if one was named.
    Begin { isolation: Option<Isolation> },
    /// `SET TRANSACTION ISOLATION LEVEL <level>`.
    SetIsolation(Isolation),
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    /// `SAVEPOINT <name>`.
    Savepoint(Savepoint),
    /// `RELEASE [SAVEPOINT] <name>`.
    Release(Savepoint),
    /// `ROLLBACK TO [SAVEPOINT] <name>`.
    RollbackTo(Savepoint),
}

/// A savepoint's name, as PostgreSQL folds it (lower case unless quoted),
/// at most [`SAVEPOINT_NAME_MAX`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Savepoint {
    bytes: [u8; SAVEPOINT_NAME_MAX],
    len: u8,
}

/// The longest savepoint name (PostgreSQL's identifier limit).
pub const SAVEPOINT_NAME_MAX: usize = 63;

impl Savepoint {
    fn parse(word: &str) -> Result<Savepoint> {
        let name = match word.strip_prefix('"') {
            Some(quoted) => match quoted.strip_suffix('"') {
                Some(inner) if !inner.is_empty() && !inner.contains('"') => inner.to_string(),
                _ => return Err(Error::Syntax(format!("malformed savepoint name {word}"))),
            },
            None if word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !word.is_empty() => {
                word.to_ascii_lowercase()
            }
            None => return Err(Error::Syntax(format!("malformed savepoint name {word}"))),
        };
        if name.len() > SAVEPOINT_NAME_MAX {
            return Err(Error::Syntax(format!("savepoint name {word} is longer than {SAVEPOINT_NAME_MAX} bytes")));
        }
        let mut bytes = [0; SAVEPOINT_NAME_MAX];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Savepoint { bytes, len: name.len() as u8 })
    }

    pub fn name(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("parsed from a str")
    }
}

/// Recognises a transaction-control statement; `None` if `sql` is not one.
pub fn parse_control(sql: &str) -> Option<Result<Control>> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let words: Vec<String> = text.split_whitespace().map(|w| w.to_ascii_lowercase()).collect();
    let first = words.first()?.as_str();
    let rest = &words[1..];
    // Savepoint names keep their case when quoted: taken from the text.
    let raw: Vec<&str> = text.split_whitespace().collect();
    match first {
        "savepoint" => Some(savepoint_name(&raw[1..]).map(Control::Savepoint)),
        "release" => {
            let skip = usize::from(rest.first().map(String::as_str) == Some("savepoint"));
            Some(savepoint_name(&raw[1 + skip..]).map(Control::Release))
        }
        "rollback" if skip_noise(rest).first().map(String::as_str) == Some("to") => {
            let after = rest.len() - skip_noise(rest).len() + 1;
            let skip = usize::from(rest.get(after).map(String::as_str) == Some("savepoint"));
            Some(savepoint_name(&raw[1 + after + skip..]).map(Control::RollbackTo))
        }
        "begin" => Some(parse_begin(skip_noise(rest))),
        "start" => {
            if rest.first().map(String::as_str) != Some("transaction") {
                return None;
            }
            Some(parse_begin(&rest[1..]))
        }
        "set" => {
            if rest.first().map(String::as_str) != Some("transaction") {
                return None;
            }
            Some(parse_isolation_clause(&rest[1..]).and_then(|level| match level {
                Some(level) => Ok(Control::SetIsolation(level)),
                None => Err(Error::Syntax("expected ISOLATION LEVEL after SET TRANSACTION".into())),
            }))
        }
        "commit" | "end" => Some(expect_end(skip_noise(rest), Control::Commit)),
        "rollback" | "abort" => Some(expect_end(skip_noise(rest), Control::Rollback)),
        _ => None,
    }
}

/// The one savepoint name `words` hold.
fn savepoint_name(words: &[&str]) -> Result<Savepoint> {
    match words {
        [name] => Savepoint::parse(name),
        [] => Err(Error::Syntax("expected a savepoint name".into())),
        [_, extra, ..] => Err(Error::Syntax(format!("unexpected \"{extra}\" after the savepoint name"))),
    }
}

/// Skips the optional `WORK` / `TRANSACTION` after BEGIN, COMMIT, ...
fn skip_noise(words: &[String]) -> &[String] {
    match words.first().map(String::as_str) {
        Some("work" | "transaction") => &words[1..],
        _ => words,
    }
}

fn expect_end(words: &[String], control: Control) -> Result<Control> {
    match words.first() {
        None => Ok(control),
        Some(word) => Err(Error::Syntax(format!("unexpected \"{word}\" in transaction control statement"))),
    }
}

fn parse_begin(words: &[String]) -> Result<Control> {
    Ok(Control::Begin { isolation: parse_isolation_clause(words)? })
}

/// Parses `[ISOLATION LEVEL <level>]`, the level running to the end.
fn parse_isolation_clause(words: &[String]) -> Result<Option<Isolation>> {
    match words {
        [] => Ok(None),
        [isolation, level, name @ ..] if isolation == "isolation" && level == "level" && !name.is_empty() => {
            let name = name.join(" ");
            Isolation::from_str(&name)
                .map(Some)
                .map_err(|_| Error::InvalidParameterValue(format!("unknown isolation level \"{name}\"")))
        }
        [isolation, level] if isolation == "isolation" && level == "level" => {
            Err(Error::Syntax("expected an isolation level after ISOLATION LEVEL".into()))
        }
        [word, ..] => Err(Error::Syntax(format!("expected ISOLATION LEVEL <level>, found \"{word}\""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(sql: &str) -> Control {
        parse_control(sql).expect("is control").expect("parses")
    }

    #[test]
    fn begin_forms() {
        assert_eq!(control("BEGIN"), Control::Begin { isolation: None });
        assert_eq!(control("  begin transaction ;"), Control::Begin { isolation: None });
        assert_eq!(control("START TRANSACTION"), Control::Begin { isolation: None });
        assert_eq!(
            control("BEGIN ISOLATION LEVEL monotonic   atomic view;"),
            Control::Begin { isolation: Some(Isolation::MonotonicAtomicView) }
        );
        assert_eq!(
            control("start transaction isolation level STRICT SERIALIZABLE"),
            Control::Begin { isolation: Some(Isolation::Serializable) }
        );
        assert_eq!(
            control("BEGIN TRANSACTION ISOLATION LEVEL repeatable read"),
            Control::Begin { isolation: Some(Isolation::Snapshot) }
        );
    }

    #[test]
    fn set_commit_rollback() {
        assert_eq!(control("SET TRANSACTION ISOLATION LEVEL RC"), Control::SetIsolation(Isolation::ReadCommitted));
        assert_eq!(control("commit;"), Control::Commit);
        assert_eq!(control("END"), Control::Commit);
        assert_eq!(control("ROLLBACK WORK"), Control::Rollback);
        assert_eq!(control("abort"), Control::Rollback);
        let name = |word| Savepoint::parse(word).unwrap();
        assert_eq!(control("SAVEPOINT a1"), Control::Savepoint(name("a1")));
        assert_eq!(control("savepoint \"_pg3_1\""), Control::Savepoint(name("_pg3_1")));
        assert_eq!(control("RELEASE SAVEPOINT A1;"), Control::Release(name("a1")));
        assert_eq!(control("release a1"), Control::Release(name("a1")));
        assert_eq!(control("ROLLBACK TO SAVEPOINT a1"), Control::RollbackTo(name("a1")));
        assert_eq!(control("rollback work to a1"), Control::RollbackTo(name("a1")));
        assert_eq!(control("SAVEPOINT \"Mixed\""), Control::Savepoint(name("\"Mixed\"")));
        assert_eq!(name("\"Mixed\"").name(), "Mixed");
        assert_eq!(name("Mixed").name(), "mixed");
    }

    #[test]
    fn not_control() {
        assert!(parse_control("SELECT 1").is_none());
        assert!(parse_control("").is_none());
        assert!(parse_control("SET x = 1").is_none());
        assert!(parse_control("START something").is_none());
    }

    #[test]
    fn errors() {
        assert_eq!(parse_control("BEGIN ISOLATION LEVEL chaos").unwrap().unwrap_err().code(), "22023");
        assert_eq!(parse_control("BEGIN nonsense").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("SET TRANSACTION").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("COMMIT now").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("SAVEPOINT").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("SAVEPOINT a b").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("RELEASE SAVEPOINT").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("ROLLBACK TO").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control("SAVEPOINT a-b").unwrap().unwrap_err().code(), "42601");
        assert_eq!(parse_control(&format!("SAVEPOINT {}", "s".repeat(64))).unwrap().unwrap_err().code(), "42601");
    }
}
