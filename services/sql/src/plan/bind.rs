//! Name resolution and expression binding: `sqlparser` AST to [`Expr`].
//!
//! A [`Scope`] is the tables of a query, each with the offset of its
//! columns in the joined input row. A [`Binder`] resolves column names
//! against it (unquoted identifiers fold to lower case, as in PostgreSQL),
//! turns literals into values, and records a type for each parameter from
//! its context ([`ParamTypes`]): `c_balance = $1` types `$1` as the column's
//! `DECIMAL`, so a JSON string or number parameter is converted once per
//! execution and compares (and encodes into a key) as a decimal.
//!
//! Aggregation binds in two modes. Arguments of aggregates, `GROUP BY`
//! keys and `WHERE` bind against the input row. The select list, `HAVING`
//! and `ORDER BY` of an aggregating query bind against the aggregation's
//! output row — `[group keys..., aggregate results...]` — through an
//! [`AggContext`]: an aggregate call becomes a column of that row, a
//! subexpression equal to a group key becomes that key's column, and any
//! other column reference is 42803.

use std::sync::Arc;

use geodb_storage::{DataType, Value};
use rust_decimal::Decimal;
use sqlparser::ast;

use crate::catalog::Table;
use crate::error::{Error, Result};
use crate::limits::{IN_LIST_MAX, PARAMETERS_MAX};
use crate::plan::expr::{ArithOp, CmpOp, Expr};
use crate::plan::show;
use crate::types;

/// One table of a query's `FROM`.
#[derive(Clone, Debug)]
pub struct ScopeTable {
    /// The alias, or the table name.
    pub name: String,
    pub table: Arc<Table>,
    /// Position of the table's first column in the joined row.
    pub offset: usize,
}

/// The tables a query reads, in join order.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub tables: Vec<ScopeTable>,
}

impl Scope {
    pub fn push(&mut self, name: String, table: Arc<Table>) -> Result<()> {
        if self.tables.iter().any(|t| t.name == name) {
            return Err(Error::Syntax(format!("table name \"{name}\" specified more than once")));
        }
        let offset = self.width();
        self.tables.push(ScopeTable { name, table, offset });
        Ok(())
    }

    /// Number of columns of the joined row.
    pub fn width(&self) -> usize {
        self.tables.last().map_or(0, |t| t.offset + t.table.columns.len())
    }

    /// The position of `qualifier.column` (or a bare `column`).
    pub fn resolve(&self, qualifier: Option<&str>, column: &str) -> Result<usize> {
        let mut found = None;
        for t in &self.tables {
            if qualifier.is_some_and(|q| q != t.name) {
                continue;
            }
            if let Some(c) = t.table.column_index(column) {
                if found.is_some() {
                    return Err(Error::AmbiguousColumn(column.to_string()));
                }
                found = Some(t.offset + c);
            }
        }
        match (found, qualifier) {
            (Some(pos), _) => Ok(pos),
            (None, Some(q)) if !self.tables.iter().any(|t| t.name == q) => Err(Error::UndefinedTable(q.to_string())),
            (None, Some(q)) => Err(Error::UndefinedColumn(format!("{q}.{column}"))),
            (None, None) => Err(Error::UndefinedColumn(column.to_string())),
        }
    }

    /// Which table a joined-row position belongs to, and the column there.
    pub fn locate(&self, pos: usize) -> (usize, usize) {
        let t = self.tables.iter().rposition(|t| t.offset <= pos).expect("position inside the scope");
        (t, pos - self.tables[t].offset)
    }

    pub fn column_type(&self, pos: usize) -> &DataType {
        let (t, c) = self.locate(pos);
        &self.tables[t].table.columns[c].ty
    }

    pub fn column_name(&self, pos: usize) -> &str {
        let (t, c) = self.locate(pos);
        &self.tables[t].table.columns[c].name
    }

    pub fn column_not_null(&self, pos: usize) -> bool {
        let (t, c) = self.locate(pos);
        self.tables[t].table.columns[c].not_null
    }
}

/// The type each parameter takes from its context (`None`: no context;
/// the value is used as given).
#[derive(Clone, Debug, Default)]
pub struct ParamTypes {
    pub types: Vec<Option<DataType>>,
}

impl ParamTypes {
    fn see(&mut self, index: usize) {
        if self.types.len() <= index {
            self.types.resize(index + 1, None);
        }
    }

    /// Records a context type for a parameter; the first context wins.
    pub fn note(&mut self, index: usize, ty: &DataType) {
        self.see(index);
        if self.types[index].is_none() {
            self.types[index] = Some(*ty);
        }
    }

    pub fn count(&self) -> usize {
        self.types.len()
    }
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl AggFunc {
    pub fn from_name(name: &str) -> Option<AggFunc> {
        Some(match name {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "avg" => AggFunc::Avg,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Avg => "avg",
        }
    }
}

/// One aggregate call: `func([DISTINCT] arg)`; `arg` is `None` for
/// `COUNT(*)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AggSpec {
    pub func: AggFunc,
    pub arg: Option<Expr>,
    pub distinct: bool,
}

/// What the post-aggregation expressions of a query can refer to.
#[derive(Debug, Default)]
pub struct AggContext {
    /// Group keys, bound over the input row.
    pub group_by: Vec<Expr>,
    /// Aggregate calls found so far, bound over the input row.
    pub aggs: Vec<AggSpec>,
}

/// Binds expressions of one statement.
pub struct Binder<'a> {
    pub scope: &'a Scope,
    pub params: &'a mut ParamTypes,
}

/// Folds an unquoted identifier to lower case, as PostgreSQL does.
pub fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_lowercase() }
}

/// The last part of an object name (`public.t` is `t`).
pub fn object_name(name: &ast::ObjectName) -> Result<String> {
    match name.0.last() {
        Some(ast::ObjectNamePart::Identifier(ident)) if name.0.len() <= 2 => Ok(ident_name(ident)),
        _ => Err(Error::unsupported(format!("name {name}"))),
    }
}

/// Whether an AST contains an aggregate call (not looking into subqueries).
pub fn contains_aggregate(expr: &ast::Expr) -> bool {
    let mut found = false;
    visit_ast(expr, &mut |e| {
        if let ast::Expr::Function(f) = e
            && AggFunc::from_name(&f.name.to_string().to_lowercase()).is_some()
        {
            found = true;
        }
    });
    found
}

/// Calls `f` on an expression and its direct and indirect operands, for
/// the shapes the binder accepts.
fn visit_ast(expr: &ast::Expr, f: &mut impl FnMut(&ast::Expr)) {
    f(expr);
    use ast::Expr as E;
    match expr {
        E::BinaryOp { left, right, .. } => {
            visit_ast(left, f);
            visit_ast(right, f);
        }
        E::UnaryOp { expr, .. }
        | E::Nested(expr)
        | E::IsNull(expr)
        | E::IsNotNull(expr)
        | E::Cast { expr, .. }
        | E::IsTrue(expr)
        | E::IsFalse(expr) => {
            visit_ast(expr, f);
        }
        E::In { expr, target: ast::InTarget::List(list), .. } => {
            visit_ast(expr, f);
            list.iter().for_each(|e| visit_ast(e, f));
        }
        E::Between { expr, low, high, .. } => {
            visit_ast(expr, f);
            visit_ast(low, f);
            visit_ast(high, f);
        }
        E::Like { expr, pattern, .. } | E::ILike { expr, pattern, .. } => {
            visit_ast(expr, f);
            visit_ast(pattern, f);
        }
        E::Function(func) => {
            if let ast::FunctionArguments::List(list) = &func.args {
                for arg in &list.args {
                    if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = arg {
                        visit_ast(e, f);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The PostgreSQL-style output column name of a select-list expression.
pub fn output_name(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Identifier(ident) => ident_name(ident),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map_or("?column?".into(), ident_name),
        ast::Expr::Function(f) => f.name.0.last().map_or("?column?".into(), |p| match p {
            ast::ObjectNamePart::Identifier(i) => ident_name(i),
            _ => "?column?".into(),
        }),
        ast::Expr::Nested(inner) | ast::Expr::Cast { expr: inner, .. } => output_name(inner),
        _ => "?column?".into(),
    }
}

impl Binder<'_> {
    /// Binds an expression over the input row; aggregates are 42803.
    pub fn bind(&mut self, ast: &ast::Expr) -> Result<Expr> {
        self.bind_mode(ast, None)
    }

    /// Binds a post-aggregation expression over `[group keys, aggregates]`.
    pub fn bind_aggregated(&mut self, ast: &ast::Expr, ctx: &mut AggContext) -> Result<Expr> {
        self.bind_mode(ast, Some(ctx))
    }

    fn bind_mode(&mut self, ast: &ast::Expr, mut agg: Option<&mut AggContext>) -> Result<Expr> {
        use ast::Expr as E;
        if let Some(ctx) = agg.as_deref_mut() {
            if let E::Function(func) = ast
                && let Some(function) = AggFunc::from_name(&func.name.to_string().to_lowercase())
            {
                let spec = self.bind_aggregate_call(function, func)?;
                let slot = match ctx.aggs.iter().position(|a| *a == spec) {
                    Some(slot) => slot,
                    None => {
                        ctx.aggs.push(spec);
                        ctx.aggs.len() - 1
                    }
                };
                return Ok(Expr::Column(ctx.group_by.len() + slot));
            }
            if !ctx.group_by.is_empty()
                && !matches!(ast, E::Value(_))
                && let Ok(bound) = self.bind_mode(ast, None)
                && let Some(i) = ctx.group_by.iter().position(|g| *g == bound)
            {
                return Ok(Expr::Column(i));
            }
        }
        let post_aggregate = agg.is_some();
        Ok(match ast {
            E::Identifier(ident) => {
                let name = ident_name(ident);
                let pos = self.scope.resolve(None, &name)?;
                if post_aggregate {
                    return Err(not_grouped(&name));
                }
                Expr::Column(pos)
            }
            E::CompoundIdentifier(parts) => {
                let (qualifier, column) = match parts.as_slice() {
                    [q, c] => (ident_name(q), ident_name(c)),
                    [_schema, q, c] => (ident_name(q), ident_name(c)),
                    _ => return Err(Error::unsupported(format!("column reference {ast}"))),
                };
                let pos = self.scope.resolve(Some(&qualifier), &column)?;
                if post_aggregate {
                    return Err(not_grouped(&format!("{qualifier}.{column}")));
                }
                Expr::Column(pos)
            }
            E::Value(v) => self.bind_value(&v.value)?,
            E::TypedString(typed) => {
                let ty = types::column_type(&typed.data_type)?;
                let text = typed.value.value.clone().into_string().ok_or_else(|| Error::Syntax(format!("{ast}")))?;
                Expr::Literal(types::cast(Value::Text(text), &ty)?)
            }
            E::Nested(inner) => self.bind_mode(inner, agg)?,
            E::UnaryOp { op, expr } => match op {
                ast::UnaryOperator::Minus => {
                    if let E::Value(v) = expr.as_ref()
                        && let ast::Value::Number(n, _) = &v.value
                    {
                        parse_number(&format!("-{n}"))?
                    } else {
                        let inner = self.bind_mode(expr, agg)?;
                        match inner {
                            Expr::Literal(Value::Int(i)) if i != i64::MIN => Expr::Literal(Value::Int(-i)),
                            other => Expr::Neg(Box::new(other)),
                        }
                    }
                }
                ast::UnaryOperator::Plus => self.bind_mode(expr, agg)?,
                ast::UnaryOperator::Not => Expr::Not(Box::new(self.bind_mode(expr, agg)?)),
                other => return Err(Error::unsupported(format!("operator {other}"))),
            },
            E::BinaryOp { left, op, right } => {
                let mut l = self.bind_mode(left, agg.as_deref_mut())?;
                let mut r = self.bind_mode(right, agg.as_deref_mut())?;
                use ast::BinaryOperator as B;
                match op {
                    B::And => Expr::And(Box::new(l), Box::new(r)),
                    B::Or => Expr::Or(Box::new(l), Box::new(r)),
                    B::StringConcat => {
                        self.hint_text(&l);
                        self.hint_text(&r);
                        Expr::Concat(Box::new(l), Box::new(r))
                    }
                    B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                        self.unify(&mut l, &mut r, post_aggregate)?;
                        let op = match op {
                            B::Plus => ArithOp::Add,
                            B::Minus => ArithOp::Sub,
                            B::Multiply => ArithOp::Mul,
                            B::Divide => ArithOp::Div,
                            _ => ArithOp::Rem,
                        };
                        Expr::Arith(op, Box::new(l), Box::new(r))
                    }
                    B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq => {
                        self.unify(&mut l, &mut r, post_aggregate)?;
                        let op = match op {
                            B::Eq => CmpOp::Eq,
                            B::NotEq => CmpOp::NotEq,
                            B::Lt => CmpOp::Lt,
                            B::LtEq => CmpOp::LtEq,
                            B::Gt => CmpOp::Gt,
                            _ => CmpOp::GtEq,
                        };
                        Expr::Compare(op, Box::new(l), Box::new(r))
                    }
                    other => return Err(Error::unsupported(format!("operator {other}"))),
                }
            }
            E::IsNull(e) => Expr::IsNull { expr: Box::new(self.bind_mode(e, agg)?), negated: false },
            E::IsNotNull(e) => Expr::IsNull { expr: Box::new(self.bind_mode(e, agg)?), negated: true },
            E::In { expr, target: ast::InTarget::List(list), negated, global: false } => {
                if list.len() > IN_LIST_MAX {
                    return Err(Error::ProgramLimitExceeded(format!(
                        "IN list has {} elements, more than the limit of {IN_LIST_MAX}",
                        list.len()
                    )));
                }
                let mut e = self.bind_mode(expr, agg.as_deref_mut())?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    let mut b = self.bind_mode(item, agg.as_deref_mut())?;
                    self.unify(&mut e, &mut b, post_aggregate)?;
                    items.push(b);
                }
                Expr::InList { expr: Box::new(e), list: items, negated: *negated }
            }
            E::Between { expr, negated, low, high } => {
                let mut e = self.bind_mode(expr, agg.as_deref_mut())?;
                let mut lo = self.bind_mode(low, agg.as_deref_mut())?;
                let mut hi = self.bind_mode(high, agg.as_deref_mut())?;
                self.unify(&mut e, &mut lo, post_aggregate)?;
                self.unify(&mut e, &mut hi, post_aggregate)?;
                Expr::Between { expr: Box::new(e), low: Box::new(lo), high: Box::new(hi), negated: *negated }
            }
            E::Like { negated, any: false, expr, pattern, escape_char: None }
            | E::ILike { negated, any: false, expr, pattern, escape_char: None } => {
                let e = self.bind_mode(expr, agg.as_deref_mut())?;
                let p = self.bind_mode(pattern, agg.as_deref_mut())?;
                self.hint_text(&e);
                self.hint_text(&p);
                Expr::Like {
                    expr: Box::new(e),
                    pattern: Box::new(p),
                    negated: *negated,
                    case_insensitive: matches!(ast, E::ILike { .. }),
                }
            }
            E::Cast { kind: ast::CastKind::Cast | ast::CastKind::DoubleColon, expr, data_type, format: None } => {
                let ty = types::column_type(data_type)?;
                match self.bind_mode(expr, agg)? {
                    Expr::Literal(v) => Expr::Literal(types::cast(v, &ty)?),
                    Expr::Param(i) => {
                        self.params.note(i, &ty);
                        Expr::Cast(Box::new(Expr::Param(i)), ty)
                    }
                    other => Expr::Cast(Box::new(other), ty),
                }
            }
            E::Function(func) => {
                let name = func.name.to_string().to_lowercase();
                if AggFunc::from_name(&name).is_some() {
                    return Err(Error::Grouping("aggregate functions are not allowed here".into()));
                }
                match name.as_str() {
                    "coalesce" => {
                        let args = plain_args(func)?;
                        if args.is_empty() {
                            return Err(Error::Syntax("COALESCE needs at least one argument".into()));
                        }
                        let mut bound = Vec::with_capacity(args.len());
                        for arg in args {
                            bound.push(self.bind_mode(arg, agg.as_deref_mut())?);
                        }
                        Expr::Coalesce(bound)
                    }
                    // What drivers ask on connect (SQLAlchemy: `version()`
                    // and `current_schema()`), as PostgreSQL answers.
                    "version" | "pg_catalog.version" => no_args(func, show::VERSION_TEXT)?,
                    "current_schema" | "pg_catalog.current_schema" => no_args(func, show::SCHEMA)?,
                    "current_database" | "pg_catalog.current_database" => no_args(func, show::DATABASE)?,
                    _ => return Err(Error::UndefinedFunction(format!("function {name} does not exist"))),
                }
            }
            E::Subquery(_) | E::Exists { .. } | E::In { .. } => return Err(Error::unsupported("subqueries")),
            other => return Err(Error::unsupported(format!("expression {other}"))),
        })
    }

    fn bind_aggregate_call(&mut self, function: AggFunc, func: &ast::Function) -> Result<AggSpec> {
        let ast::FunctionArguments::List(list) = &func.args else {
            return Err(Error::Syntax(format!("{} needs an argument", function.name())));
        };
        if func.filter.is_some() || func.over.is_some() || !list.clauses.is_empty() {
            return Err(Error::unsupported(format!("{} with FILTER, OVER or ORDER BY", function.name())));
        }
        let distinct = matches!(list.duplicate_treatment, Some(ast::DuplicateTreatment::Distinct));
        match list.args.as_slice() {
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)] if function == AggFunc::Count && !distinct => {
                Ok(AggSpec { func: function, arg: None, distinct: false })
            }
            [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))] => {
                if contains_aggregate(e) {
                    return Err(Error::Grouping("aggregate function calls cannot be nested".into()));
                }
                let arg = self.bind_mode(e, None)?;
                Ok(AggSpec { func: function, arg: Some(arg), distinct })
            }
            _ => Err(Error::UndefinedFunction(format!("function {}({}) does not exist", function.name(), list))),
        }
    }

    fn bind_value(&mut self, value: &ast::Value) -> Result<Expr> {
        Ok(match value {
            ast::Value::Number(n, _) => parse_number(n)?,
            ast::Value::Boolean(b) => Expr::Literal(Value::Bool(*b)),
            ast::Value::Null => Expr::Literal(Value::Null),
            ast::Value::Placeholder(p) => {
                let n = p
                    .strip_prefix('$')
                    .and_then(|d| d.parse::<usize>().ok())
                    .filter(|n| (1..=PARAMETERS_MAX).contains(n))
                    .ok_or_else(|| Error::Syntax(format!("invalid parameter \"{p}\" (use $1 .. ${PARAMETERS_MAX})")))?;
                self.params.see(n - 1);
                Expr::Param(n - 1)
            }
            other => match other.clone().into_string() {
                Some(s) => Expr::Literal(Value::Text(s)),
                None => return Err(Error::unsupported(format!("literal {other}"))),
            },
        })
    }

    /// The type an expression is known to have at plan time, if any.
    fn static_type(&self, expr: &Expr, post_aggregate: bool) -> Option<DataType> {
        match expr {
            Expr::Column(pos) if !post_aggregate => Some(*self.scope.column_type(*pos)),
            Expr::Param(i) => self.params.types.get(*i).copied().flatten(),
            Expr::Cast(_, ty) => Some(*ty),
            Expr::Literal(v) => match v {
                Value::Int(_) => Some(DataType::BigInt),
                Value::Decimal(_) => Some(DataType::Decimal { precision: 28, scale: 0 }),
                Value::Float(_) => Some(DataType::Double),
                Value::Bool(_) => Some(DataType::Bool),
                Value::Timestamp(_) => Some(DataType::Timestamp),
                Value::Text(_) | Value::Null => None,
            },
            Expr::Neg(e) => self.static_type(e, post_aggregate),
            Expr::Arith(_, a, b) => {
                let (ta, tb) = (self.static_type(a, post_aggregate), self.static_type(b, post_aggregate));
                match (ta, tb) {
                    (Some(t @ DataType::Decimal { .. }), _) | (_, Some(t @ DataType::Decimal { .. })) => Some(t),
                    (Some(t), _) | (None, Some(t)) => Some(t),
                    _ => None,
                }
            }
            Expr::Concat(..) => Some(DataType::Text),
            Expr::Coalesce(list) => list.iter().find_map(|e| self.static_type(e, post_aggregate)),
            _ => None,
        }
    }

    /// Gives an operand without a type (a parameter, a text literal) the
    /// type of the other operand.
    fn unify(&mut self, a: &mut Expr, b: &mut Expr, post_aggregate: bool) -> Result<()> {
        let ta = self.static_type(a, post_aggregate);
        let tb = self.static_type(b, post_aggregate);
        if let (Some(x), Some(y)) = (&ta, &tb)
            && !matches!(a, Expr::Param(_))
            && !matches!(b, Expr::Param(_))
            && type_class(x) != type_class(y)
        {
            return Err(Error::UndefinedFunction(format!(
                "operator does not exist: {} and {} cannot be compared or combined",
                x.sql_name(),
                y.sql_name()
            )));
        }
        self.adopt(a, tb.as_ref())?;
        self.adopt(b, ta.as_ref())
    }

    fn adopt(&mut self, expr: &mut Expr, ty: Option<&DataType>) -> Result<()> {
        let Some(ty) = ty else { return Ok(()) };
        match expr {
            Expr::Param(i) => self.params.note(*i, ty),
            Expr::Literal(v @ Value::Text(_)) => {
                *v = types::coerce_param(std::mem::replace(v, Value::Null), ty)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn hint_text(&mut self, expr: &Expr) {
        if let Expr::Param(i) = expr {
            self.params.note(*i, &DataType::Text);
        }
    }
}

/// Types that compare and combine with each other without a cast.
fn type_class(ty: &DataType) -> u8 {
    match ty {
        t if t.is_numeric() => 0,
        t if t.is_text() => 1,
        DataType::Bool => 2,
        _ => 3,
    }
}

fn not_grouped(column: &str) -> Error {
    Error::Grouping(format!(
        "column \"{column}\" must appear in the GROUP BY clause or be used in an aggregate function"
    ))
}

fn plain_args(func: &ast::Function) -> Result<Vec<&ast::Expr>> {
    let ast::FunctionArguments::List(list) = &func.args else {
        return Ok(Vec::new());
    };
    list.args
        .iter()
        .map(|arg| match arg {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
            other => Err(Error::unsupported(format!("function argument {other}"))),
        })
        .collect()
}

/// A numeric literal: an integer that fits `i64` is `Int`, anything else
/// exact is `DECIMAL` (PostgreSQL's numeric), and only what `DECIMAL`
/// cannot hold is a float.
pub fn parse_number(text: &str) -> Result<Expr> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Expr::Literal(Value::Int(i)));
    }
    if let Ok(d) = text.parse::<Decimal>() {
        return Ok(Expr::Literal(Value::Decimal(d)));
    }
    if let Ok(d) = Decimal::from_scientific(text) {
        return Ok(Expr::Literal(Value::Decimal(d)));
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Expr::Literal(Value::Float(x))),
        _ => Err(Error::NumericOutOfRange(format!("number {text} is out of range"))),
    }
}

/// A function of no arguments with a fixed text value.
fn no_args(func: &ast::Function, value: &str) -> Result<Expr> {
    if !plain_args(func)?.is_empty() {
        let name = func.name.to_string().to_lowercase();
        return Err(Error::UndefinedFunction(format!("function {name} takes no arguments")));
    }
    Ok(Expr::Literal(Value::Text(value.to_string())))
}
