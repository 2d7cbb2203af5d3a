//! Bound expressions: the planner's form of a SQL expression.
//!
//! Names are resolved (a column is a position in the input row), literals
//! are values, parameters are positions in the bound parameter list, and
//! aggregates are gone (an aggregate's result is a column of the
//! aggregation's output row). [`crate::exec::eval`] evaluates them.

use geodb_storage::{DataType, Value};

/// Arithmetic operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "<>",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }
}

/// A bound expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    /// Parameter `$n` is `Param(n - 1)`.
    Param(usize),
    /// A position in the input row.
    Column(usize),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Concat(Box<Expr>, Box<Expr>),
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    Cast(Box<Expr>, DataType),
    /// `COALESCE(a, b, ...)`.
    Coalesce(Vec<Expr>),
}

impl Expr {
    /// Calls `f` with every column position the expression reads.
    pub fn visit_columns(&self, f: &mut impl FnMut(usize)) {
        match self {
            Expr::Literal(_) | Expr::Param(_) => {}
            Expr::Column(c) => f(*c),
            Expr::Neg(e) | Expr::Not(e) | Expr::Cast(e, _) | Expr::IsNull { expr: e, .. } => e.visit_columns(f),
            Expr::Arith(_, a, b)
            | Expr::Concat(a, b)
            | Expr::Compare(_, a, b)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::Like { expr: a, pattern: b, .. } => {
                a.visit_columns(f);
                b.visit_columns(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.visit_columns(f);
                list.iter().for_each(|e| e.visit_columns(f));
            }
            Expr::Between { expr, low, high, .. } => {
                expr.visit_columns(f);
                low.visit_columns(f);
                high.visit_columns(f);
            }
            Expr::Coalesce(list) => list.iter().for_each(|e| e.visit_columns(f)),
        }
    }

    /// Whether the expression reads no column (only literals and params).
    pub fn is_constant(&self) -> bool {
        let mut constant = true;
        self.visit_columns(&mut |_| constant = false);
        constant
    }

    /// Splits a conjunction into its conjuncts.
    pub fn into_conjuncts(self, out: &mut Vec<Expr>) {
        match self {
            Expr::And(a, b) => {
                a.into_conjuncts(out);
                b.into_conjuncts(out);
            }
            other => out.push(other),
        }
    }

    /// The conjunction of `exprs` (`None` when empty).
    pub fn conjunction(exprs: Vec<Expr>) -> Option<Expr> {
        exprs.into_iter().reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
    }
}
