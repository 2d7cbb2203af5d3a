//! Users, privileges, and the statements that change them.
//!
//! Users live in the catalog (`0x01 'u' <name>`, [`keys::catalog_user_key`])
//! beside the tables, so they are replicated with it, seen by every node
//! and kept across restarts; a statement that changes one is a catalog
//! change like DDL ([`crate::catalog::CatalogCache::change_user`]: a new
//! version token in every shard's guard), so a transaction planned before a
//! `REVOKE` cannot commit a write after it.
//!
//! A [`User`] has an optional password, kept only as a SCRAM-SHA-256
//! verifier ([`crate::password`]), the `admin` role or not, and per table
//! (by id: a table dropped and created again starts with no grants) the
//! [`Privileges`] granted. `root` is built in: always admin, never dropped;
//! it has no password until `ALTER USER root PASSWORD` gives it one, and
//! logs in with the client certificate `client.root.crt` meanwhile.
//!
//! [`authorize`] decides whether a user may run a plan, before anything
//! runs: reading a table needs `SELECT` (so does the `WHERE` of an
//! `UPDATE` or `DELETE`, and an assignment that reads a column), writing it
//! `INSERT`, `UPDATE` or `DELETE` (`SELECT ... FOR UPDATE` needs `UPDATE`
//! too), and DDL and the statements of this module the `admin` role.
//!
//! The statements, recognised before `sqlparser` sees the text
//! ([`parse_user_statement`]; its AST of them follows other dialects):
//!
//! ```text
//! CREATE USER name [[WITH] [LOGIN] PASSWORD 'secret' | PASSWORD NULL]
//! CREATE ROLE name [WITH] LOGIN [PASSWORD 'secret']
//! ALTER USER | ROLE name [WITH] PASSWORD 'secret' | PASSWORD NULL
//! DROP USER | ROLE [IF EXISTS] name [, ...]
//! GRANT {SELECT | INSERT | UPDATE | DELETE} [, ...] | ALL [PRIVILEGES] ON [TABLE] t [, ...] TO u [, ...]
//! REVOKE ... ON [TABLE] t [, ...] FROM u [, ...]
//! GRANT admin TO u [, ...]        REVOKE admin FROM u [, ...]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::catalog::{Catalog, CatalogCache};
use crate::error::{Error, Result};
use crate::exec::StatementResult;
use crate::password::{PASSWORD_BYTES_MAX, Verifier};
use crate::plan::{Plan, StatementKind};
use geodb_txn::Transaction;

/// The built-in superuser.
pub const ROOT: &str = "root";
/// The role that may run DDL, change users and call `/v1/admin/*`.
pub const ADMIN_ROLE: &str = "admin";
/// The longest user name (PostgreSQL's `NAMEDATALEN` - 1).
pub const USER_NAME_BYTES_MAX: usize = 63;

/// A set of table privileges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges(u8);

impl Privileges {
    pub const NONE: Privileges = Privileges(0);
    pub const SELECT: Privileges = Privileges(1);
    pub const INSERT: Privileges = Privileges(2);
    pub const UPDATE: Privileges = Privileges(4);
    pub const DELETE: Privileges = Privileges(8);
    pub const ALL: Privileges = Privileges(15);

    pub fn contains(self, other: Privileges) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Privileges) -> Privileges {
        Privileges(self.0 | other.0)
    }

    pub fn without(self, other: Privileges) -> Privileges {
        Privileges(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The privilege's SQL name (one privilege only).
    fn name(self) -> &'static str {
        match self {
            Privileges::SELECT => "SELECT",
            Privileges::INSERT => "INSERT",
            Privileges::UPDATE => "UPDATE",
            Privileges::DELETE => "DELETE",
            _ => "ALL",
        }
    }

    fn parse(word: &str) -> Option<Privileges> {
        Some(match word {
            "select" => Privileges::SELECT,
            "insert" => Privileges::INSERT,
            "update" => Privileges::UPDATE,
            "delete" => Privileges::DELETE,
            _ => return None,
        })
    }
}

/// A user: its password verifier, whether it has the admin role, and its
/// privileges by table id. Its `Debug` never shows the verifier's keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub password: Option<Verifier>,
    pub admin: bool,
    pub grants: BTreeMap<u32, Privileges>,
}

impl User {
    fn new(name: &str) -> User {
        User { name: name.to_string(), password: None, admin: false, grants: BTreeMap::new() }
    }

    /// The built-in `root`, as stored (with a password) or not.
    pub fn root(stored: Option<&User>) -> User {
        let mut root = stored.cloned().unwrap_or_else(|| User::new(ROOT));
        root.admin = true;
        root
    }

    /// Whether the user may do `wanted` to the table `table_id`.
    pub fn may(&self, table_id: u32, wanted: Privileges) -> bool {
        self.admin || self.grants.get(&table_id).is_some_and(|granted| granted.contains(wanted))
    }
}

/// Format byte of a stored user.
const USER_FORMAT_V1: u8 = 1;

pub fn encode_user(user: &User) -> Vec<u8> {
    postcard::to_extend(user, vec![USER_FORMAT_V1]).expect("user encoding is infallible")
}

pub fn decode_user(bytes: &[u8]) -> Result<User> {
    match bytes.split_first() {
        Some((&USER_FORMAT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| Error::Internal(format!("corrupt user record: {e}")))
        }
        _ => Err(Error::Internal("user record has an unknown format".into())),
    }
}

/// A statement of this module. Its `Debug` never shows a password.
#[derive(Clone, PartialEq, Eq)]
pub enum UserStatement {
    /// `CREATE USER` / `CREATE ROLE ... LOGIN`; `password` `None`: none.
    Create {
        name: String,
        password: Option<String>,
        if_not_exists: bool,
    },
    /// `ALTER USER ... PASSWORD`; `None`: `PASSWORD NULL` (removes it).
    SetPassword {
        name: String,
        password: Option<String>,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
    },
    Grant {
        privileges: Privileges,
        tables: Vec<String>,
        users: Vec<String>,
    },
    Revoke {
        privileges: Privileges,
        tables: Vec<String>,
        users: Vec<String>,
    },
    GrantAdmin {
        users: Vec<String>,
    },
    RevokeAdmin {
        users: Vec<String>,
    },
}

impl std::fmt::Debug for UserStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.tag())
    }
}

impl UserStatement {
    /// The PostgreSQL command tag of the statement.
    pub fn tag(&self) -> &'static str {
        match self {
            UserStatement::Create { .. } => "CREATE ROLE",
            UserStatement::SetPassword { .. } => "ALTER ROLE",
            UserStatement::Drop { .. } => "DROP ROLE",
            UserStatement::Grant { .. } | UserStatement::GrantAdmin { .. } => "GRANT",
            UserStatement::Revoke { .. } | UserStatement::RevokeAdmin { .. } => "REVOKE",
        }
    }
}

/// Whether `sql` starts like a statement of this module (cheap: words
/// only), so that only those are tokenized.
fn looks_like_user_statement(sql: &str) -> bool {
    let mut words = sql.split_whitespace().map(|word| word.to_ascii_lowercase());
    match words.next().as_deref() {
        Some("grant" | "revoke") => true,
        Some("create" | "alter" | "drop") => matches!(words.next().as_deref(), Some("user" | "role")),
        _ => false,
    }
}

/// Recognises a statement of this module; `None` if `sql` is not one.
pub fn parse_user_statement(sql: &str) -> Option<Result<UserStatement>> {
    if !looks_like_user_statement(sql) {
        return None;
    }
    Some(parse(sql))
}

/// One token of a user statement: a word (lower-cased unless quoted), a
/// string literal, a comma or `NULL`-free punctuation.
#[derive(Debug, PartialEq)]
enum Part {
    /// A keyword or unquoted name, lower-cased.
    Word(String),
    /// A double-quoted name, as written.
    Quoted(String),
    Text(String),
    Comma,
}

fn parse(sql: &str) -> Result<UserStatement> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().map_err(|e| Error::Syntax(e.to_string()))?;
    let mut parts = Vec::new();
    let mut ended = false;
    for token in tokens {
        match token {
            Token::Whitespace(_) => {}
            Token::SemiColon => ended = true,
            _ if ended => return Err(Error::unsupported("several statements in one request")),
            Token::Word(word) if word.quote_style.is_some() => parts.push(Part::Quoted(word.value)),
            Token::Word(word) => parts.push(Part::Word(word.value.to_lowercase())),
            Token::SingleQuotedString(text) => parts.push(Part::Text(text)),
            Token::Comma => parts.push(Part::Comma),
            Token::EOF => {}
            // Never echo the statement: it may hold a password.
            _ => return Err(Error::Syntax("unexpected symbol in a user or privilege statement".into())),
        }
    }
    let mut parser = Parser { parts, at: 0 };
    let statement = parser.statement()?;
    if parser.at != parser.parts.len() {
        return Err(Error::Syntax("unexpected words at the end of a user or privilege statement".into()));
    }
    Ok(statement)
}

struct Parser {
    parts: Vec<Part>,
    at: usize,
}

impl Parser {
    fn peek_word(&self) -> Option<&str> {
        match self.parts.get(self.at) {
            Some(Part::Word(word)) => Some(word),
            _ => None,
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek_word() == Some(word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.eat(word) { Ok(()) } else { Err(Error::Syntax(format!("expected {} here", word.to_uppercase()))) }
    }

    fn name(&mut self) -> Result<String> {
        let name = match self.parts.get(self.at) {
            Some(Part::Word(word)) => word.clone(),
            Some(Part::Quoted(word)) => word.clone(),
            _ => return Err(Error::Syntax("expected a name".into())),
        };
        self.at += 1;
        check_name(&name)?;
        Ok(name)
    }

    fn names(&mut self) -> Result<Vec<String>> {
        let mut names = vec![self.name()?];
        while self.parts.get(self.at) == Some(&Part::Comma) {
            self.at += 1;
            names.push(self.name()?);
        }
        Ok(names)
    }

    /// `PASSWORD 'x'` or `PASSWORD NULL`, `PASSWORD` already read.
    fn password(&mut self) -> Result<Option<String>> {
        match self.parts.get(self.at) {
            Some(Part::Text(text)) => {
                let text = text.clone();
                self.at += 1;
                if text.is_empty() {
                    return Err(Error::InvalidParameterValue("a password must not be empty".into()));
                }
                if text.len() > PASSWORD_BYTES_MAX {
                    return Err(Error::InvalidParameterValue(format!(
                        "a password is at most {PASSWORD_BYTES_MAX} bytes"
                    )));
                }
                Ok(Some(text))
            }
            Some(Part::Word(word)) if word == "null" => {
                self.at += 1;
                Ok(None)
            }
            _ => Err(Error::Syntax("PASSWORD takes a string literal ('...') or NULL".into())),
        }
    }

    fn statement(&mut self) -> Result<UserStatement> {
        let verb = self.peek_word().unwrap_or_default().to_string();
        self.at += 1;
        match verb.as_str() {
            "create" => {
                let role = self.eat("role");
                if !role {
                    self.expect("user")?;
                }
                let if_not_exists = self.eat("if");
                if if_not_exists {
                    self.expect("not")?;
                    self.expect("exists")?;
                }
                let name = self.name()?;
                self.eat("with");
                let (mut login, mut password) = (!role, None);
                while self.at < self.parts.len() {
                    if self.eat("login") {
                        login = true;
                    } else if self.eat("password") {
                        password = self.password()?;
                    } else {
                        return Err(Error::unsupported(
                            "options of CREATE USER other than LOGIN and PASSWORD (see docs/sql.md)",
                        ));
                    }
                }
                if !login {
                    return Err(Error::unsupported("roles that cannot log in (CREATE ROLE needs LOGIN)"));
                }
                Ok(UserStatement::Create { name, password, if_not_exists })
            }
            "alter" => {
                if !self.eat("role") {
                    self.expect("user")?;
                }
                let name = self.name()?;
                self.eat("with");
                self.expect("password")?;
                let password = self.password()?;
                Ok(UserStatement::SetPassword { name, password })
            }
            "drop" => {
                if !self.eat("role") {
                    self.expect("user")?;
                }
                let if_exists = self.eat("if");
                if if_exists {
                    self.expect("exists")?;
                }
                Ok(UserStatement::Drop { names: self.names()?, if_exists })
            }
            "grant" | "revoke" => {
                let grant = verb == "grant";
                if self.peek_word() == Some(ADMIN_ROLE) {
                    self.at += 1;
                    self.expect(if grant { "to" } else { "from" })?;
                    let users = self.names()?;
                    return Ok(if grant {
                        UserStatement::GrantAdmin { users }
                    } else {
                        UserStatement::RevokeAdmin { users }
                    });
                }
                let privileges = self.privileges()?;
                self.expect("on")?;
                self.eat("table");
                let tables = self.names()?;
                self.expect(if grant { "to" } else { "from" })?;
                let users = self.names()?;
                Ok(if grant {
                    UserStatement::Grant { privileges, tables, users }
                } else {
                    UserStatement::Revoke { privileges, tables, users }
                })
            }
            _ => Err(Error::Syntax("not a user or privilege statement".into())),
        }
    }

    fn privileges(&mut self) -> Result<Privileges> {
        if self.eat("all") {
            self.eat("privileges");
            return Ok(Privileges::ALL);
        }
        let mut privileges = Privileges::NONE;
        loop {
            let word = self.peek_word().unwrap_or_default();
            let Some(privilege) = Privileges::parse(word) else {
                return Err(Error::unsupported(
                    "privileges other than SELECT, INSERT, UPDATE, DELETE and ALL (or the admin role)",
                ));
            };
            self.at += 1;
            privileges = privileges.with(privilege);
            if self.parts.get(self.at) != Some(&Part::Comma) {
                return Ok(privileges);
            }
            self.at += 1;
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > USER_NAME_BYTES_MAX {
        return Err(Error::InvalidParameterValue(format!("a name is 1 to {USER_NAME_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// Looks a user up, `root` included.
pub fn user(catalog: &Catalog, name: &str) -> Option<User> {
    let stored = catalog.get_user(name);
    if name == ROOT { Some(User::root(stored.map(Arc::as_ref))) } else { stored.map(|user| user.as_ref().clone()) }
}

/// Whether `user` may run `plan`: `Ok`, or 42501 naming what is missing.
pub fn authorize(catalog: &Catalog, user: &str, plan: &Plan) -> Result<()> {
    let Some(user) = self::user(catalog, user) else {
        return Err(Error::InsufficientPrivilege(format!("role \"{user}\" does not exist")));
    };
    if user.admin {
        return Ok(());
    }
    let needs = |table: &crate::catalog::Table, wanted: Privileges| -> Result<()> {
        for privilege in [Privileges::SELECT, Privileges::INSERT, Privileges::UPDATE, Privileges::DELETE] {
            if wanted.contains(privilege) && !user.may(table.id, privilege) {
                return Err(Error::InsufficientPrivilege(format!(
                    "permission denied for table {} ({} needed)",
                    table.name,
                    privilege.name()
                )));
            }
        }
        Ok(())
    };
    match plan {
        Plan::Select(select) => {
            let wanted =
                if select.for_update { Privileges::SELECT.with(Privileges::UPDATE) } else { Privileges::SELECT };
            select.levels.iter().try_for_each(|level| needs(&level.table, wanted))
        }
        Plan::Insert(insert) => needs(&insert.table, Privileges::INSERT),
        Plan::Update(update) => {
            let mut reads = reads_rows(&update.level);
            for (_, value) in &update.assignments {
                value.visit_columns(&mut |_| reads = true);
            }
            let wanted = if reads { Privileges::UPDATE.with(Privileges::SELECT) } else { Privileges::UPDATE };
            needs(&update.level.table, wanted)
        }
        Plan::Delete(delete) => {
            let reads = reads_rows(&delete.level);
            let wanted = if reads { Privileges::DELETE.with(Privileges::SELECT) } else { Privileges::DELETE };
            needs(&delete.level.table, wanted)
        }
        Plan::Explain(inner) => authorize(catalog, &user.name, inner),
        // Settings are no secret: PostgreSQL shows them to every user.
        Plan::Show(_) => Ok(()),
        Plan::CreateTable(_) | Plan::DropTable { .. } | Plan::CreateIndex(_) | Plan::DropIndex { .. } => {
            Err(needs_admin("DDL"))
        }
    }
}

/// Whether an `UPDATE` or `DELETE` reads the table to choose its rows (a
/// `WHERE`): reading it needs `SELECT`, as in PostgreSQL.
fn reads_rows(level: &crate::plan::Level) -> bool {
    let access = &level.access;
    level.filter.is_some()
        || !access.eq.is_empty()
        || access.in_list.is_some()
        || access.lower.is_some()
        || access.upper.is_some()
}

fn needs_admin(what: &str) -> Error {
    Error::InsufficientPrivilege(format!("permission denied: {what} needs the {ADMIN_ROLE} role"))
}

/// Runs a statement of this module in `txn` as `by` (`None`: unchecked,
/// a node without authentication): the admin role's, but for a user
/// changing its own password.
pub fn execute(
    cache: &CatalogCache,
    catalog: &Catalog,
    txn: &mut Transaction,
    statement: &UserStatement,
    by: Option<&str>,
) -> Result<StatementResult> {
    // A user may change its own password, as in PostgreSQL; the rest needs
    // the admin role.
    let own_password = matches!(statement, UserStatement::SetPassword { name, .. } if Some(name.as_str()) == by);
    if let Some(by) = by
        && !own_password
        && !self::user(catalog, by).is_some_and(|user| user.admin)
    {
        return Err(needs_admin(statement.tag()));
    }
    let unknown = |name: &str| Error::UndefinedRole(name.to_string());
    let mut changed: Vec<(String, Option<User>)> = Vec::new();
    match statement {
        UserStatement::Create { name, password, if_not_exists } => {
            if name == ADMIN_ROLE {
                return Err(Error::ReservedName(format!("\"{ADMIN_ROLE}\" is the name of a role")));
            }
            if self::user(catalog, name).is_some() {
                if *if_not_exists {
                    return Ok(StatementResult::affected(StatementKind::Ddl, 0));
                }
                return Err(Error::DuplicateRole(name.clone()));
            }
            let mut user = User::new(name);
            user.password = password.as_deref().map(Verifier::new);
            changed.push((name.clone(), Some(user)));
        }
        UserStatement::SetPassword { name, password } => {
            let mut user = self::user(catalog, name).ok_or_else(|| unknown(name))?;
            user.password = password.as_deref().map(Verifier::new);
            changed.push((name.clone(), Some(user)));
        }
        UserStatement::Drop { names, if_exists } => {
            for name in names {
                if name == ROOT {
                    return Err(Error::InsufficientPrivilege(format!("{ROOT} is built in and cannot be dropped")));
                }
                if catalog.get_user(name).is_none() {
                    if *if_exists {
                        continue;
                    }
                    return Err(unknown(name));
                }
                changed.push((name.clone(), None));
            }
        }
        UserStatement::Grant { privileges, tables, users } | UserStatement::Revoke { privileges, tables, users } => {
            let grant = matches!(statement, UserStatement::Grant { .. });
            let ids =
                tables.iter().map(|name| catalog.table(name).map(|table| table.id)).collect::<Result<Vec<_>>>()?;
            for name in users {
                let mut user = self::user(catalog, name).ok_or_else(|| unknown(name))?;
                for id in &ids {
                    let held = user.grants.get(id).copied().unwrap_or_default();
                    let now = if grant { held.with(*privileges) } else { held.without(*privileges) };
                    if now.is_empty() {
                        user.grants.remove(id);
                    } else {
                        user.grants.insert(*id, now);
                    }
                }
                changed.push((name.clone(), Some(user)));
            }
        }
        UserStatement::GrantAdmin { users } | UserStatement::RevokeAdmin { users } => {
            let grant = matches!(statement, UserStatement::GrantAdmin { .. });
            for name in users {
                if name == ROOT && !grant {
                    return Err(Error::InsufficientPrivilege(format!("{ROOT} is always {ADMIN_ROLE}")));
                }
                let mut user = self::user(catalog, name).ok_or_else(|| unknown(name))?;
                user.admin = grant;
                changed.push((name.clone(), Some(user)));
            }
        }
    }
    let mut base = Arc::new(catalog.clone_shallow());
    for (name, user) in changed {
        base = cache.change_user(txn, &base, &name, user)?;
    }
    Ok(StatementResult::affected(StatementKind::Ddl, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> UserStatement {
        parse_user_statement(sql).expect("a user statement").expect("parses")
    }

    #[test]
    fn user_statements_parse() {
        assert_eq!(
            parsed("CREATE USER alice WITH PASSWORD 'it''s'"),
            UserStatement::Create { name: "alice".into(), password: Some("it's".into()), if_not_exists: false }
        );
        assert_eq!(
            parsed("create role \"Bob\" login password 'x';"),
            UserStatement::Create { name: "Bob".into(), password: Some("x".into()), if_not_exists: false }
        );
        assert_eq!(
            parsed("CREATE USER IF NOT EXISTS carol"),
            UserStatement::Create { name: "carol".into(), password: None, if_not_exists: true }
        );
        assert_eq!(
            parsed("ALTER USER alice PASSWORD NULL"),
            UserStatement::SetPassword { name: "alice".into(), password: None }
        );
        assert_eq!(
            parsed("DROP USER IF EXISTS a, b"),
            UserStatement::Drop { names: vec!["a".into(), "b".into()], if_exists: true }
        );
        assert_eq!(
            parsed("GRANT SELECT, UPDATE ON TABLE t, u TO alice"),
            UserStatement::Grant {
                privileges: Privileges::SELECT.with(Privileges::UPDATE),
                tables: vec!["t".into(), "u".into()],
                users: vec!["alice".into()],
            }
        );
        assert_eq!(
            parsed("REVOKE ALL PRIVILEGES ON t FROM alice"),
            UserStatement::Revoke {
                privileges: Privileges::ALL,
                tables: vec!["t".into()],
                users: vec!["alice".into()]
            }
        );
        assert_eq!(parsed("GRANT admin TO alice"), UserStatement::GrantAdmin { users: vec!["alice".into()] });
        assert_eq!(parsed("revoke ADMIN from alice"), UserStatement::RevokeAdmin { users: vec!["alice".into()] });
        assert!(parse_user_statement("CREATE TABLE t (a INT PRIMARY KEY)").is_none());
        assert!(parse_user_statement("SELECT 1").is_none());
    }

    #[test]
    fn bad_user_statements_are_refused_without_echoing_passwords() {
        for (sql, code) in [
            ("CREATE ROLE r", "0A000"),
            ("CREATE USER a PASSWORD 'secret' SUPERUSER", "0A000"),
            ("GRANT TRUNCATE ON t TO a", "0A000"),
            ("GRANT SELECT ON t", "42601"),
            ("ALTER USER a PASSWORD secret", "42601"),
            ("CREATE USER a PASSWORD ''", "22023"),
            ("CREATE USER a PASSWORD 'secret' 'more'", "0A000"),
            ("CREATE USER a PASSWORD 'x'; DROP USER b", "0A000"),
        ] {
            let error = parse_user_statement(sql).expect("a user statement").expect_err(sql);
            assert_eq!(error.code(), code, "{sql}: {error}");
            assert!(!error.to_string().contains("secret"), "{sql}: {error}");
        }
        let statement = parsed("CREATE USER a PASSWORD 'secret'");
        assert!(!format!("{statement:?}").contains("secret"));
    }

    #[test]
    fn privileges_combine() {
        let held = Privileges::SELECT.with(Privileges::INSERT);
        assert!(held.contains(Privileges::SELECT));
        assert!(!held.contains(Privileges::SELECT.with(Privileges::UPDATE)));
        assert!(held.without(Privileges::ALL).is_empty());
        assert!(Privileges::ALL.contains(Privileges::DELETE));
    }

    #[test]
    fn users_round_trip_and_root_is_admin() {
        let mut user = User::new("alice");
        user.password = Some(Verifier::new("pw"));
        user.grants.insert(7, Privileges::SELECT);
        let decoded = decode_user(&encode_user(&user)).unwrap();
        assert!(decoded.password.as_ref().unwrap().check("pw"));
        assert!(decoded.may(7, Privileges::SELECT));
        assert!(!decoded.may(7, Privileges::INSERT));
        assert!(!decoded.may(8, Privileges::SELECT));
        assert!(User::root(None).admin && User::root(None).may(8, Privileges::ALL));
        assert!(decode_user(&[9, 1, 2]).is_err());
    }
}
