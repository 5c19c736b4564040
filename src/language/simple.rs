//! The few expressions handoff evaluates itself, without minijinja.
//!
//! A poll loop's expressions are nearly all of one shape: `tries + 1`,
//! `tries >= max_tries`, `status == 'Completed'`, a field by its name. Each
//! minijinja render builds a VM state, a context and a stack, which was a
//! third of a dry run's time. An expression of that shape is recognised
//! when the flow is loaded, and evaluated here on the fields directly.
//!
//! Only where the answer cannot differ from minijinja's: whole numbers that
//! fit in 64 bits, text compared with text, a field holding a scalar. Any
//! other value (a float, a missing field, an overflow, text added to a
//! number) returns `None`, and minijinja evaluates the expression as always.
//! A test compares the two on every operator and every kind of operand.

use indexmap::IndexMap;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Simple {
    /// One operand: a field, or a literal.
    One(Operand),
    Binary(Operand, Op, Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(String),
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Names that are not fields in an expression: minijinja's keywords and
/// constants, and what it provides in a loop.
const RESERVED: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
    "loop", "item", "self", "super", "varargs", "kwargs",
];

impl Simple {
    /// Recognises an expression of the simple shape, or says it is not one.
    pub fn parse(expr: &str) -> Option<Simple> {
        let mut p = Parser {
            s: expr.as_bytes(),
            i: 0,
        };
        let left = p.operand()?;
        p.space();
        if p.done() {
            return Some(Simple::One(left));
        }
        let op = p.op()?;
        let right = p.operand()?;
        p.space();
        p.done().then_some(Simple::Binary(left, op, right))
    }

    /// The value, when it is certain to be minijinja's; else `None`.
    pub fn eval(&self, fields: &IndexMap<String, Value>) -> Option<Value> {
        match self {
            Simple::One(Operand::Field(name)) => match fields.get(name)? {
                v @ (Value::Bool(_) | Value::String(_)) => Some(v.clone()),
                Value::Number(n) => int_of(n).map(|_| Value::Number(n.clone())),
                _ => None,
            },
            Simple::One(_) => None,
            Simple::Binary(a, op, b) => binary(resolve(a, fields)?, *op, resolve(b, fields)?),
        }
    }
}

/// An operand's value, when it is a whole number or text.
enum Scalar<'a> {
    Int(i128),
    Text(&'a str),
}

fn resolve<'a>(operand: &'a Operand, fields: &'a IndexMap<String, Value>) -> Option<Scalar<'a>> {
    match operand {
        Operand::Int(i) => Some(Scalar::Int(i128::from(*i))),
        Operand::Text(t) => Some(Scalar::Text(t)),
        Operand::Field(name) => match fields.get(name)? {
            Value::Number(n) => int_of(n).map(Scalar::Int),
            Value::String(s) => Some(Scalar::Text(s)),
            _ => None,
        },
    }
}

fn int_of(n: &serde_json::Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

fn binary(a: Scalar<'_>, op: Op, b: Scalar<'_>) -> Option<Value> {
    use std::cmp::Ordering;
    let order = match (&a, &b) {
        (Scalar::Int(x), Scalar::Int(y)) => x.cmp(y),
        (Scalar::Text(x), Scalar::Text(y)) if matches!(op, Op::Eq | Op::Ne) => x.cmp(y),
        _ => return None,
    };
    let (Scalar::Int(x), Scalar::Int(y)) = (a, b) else {
        return Some(Value::Bool((order == Ordering::Equal) == (op == Op::Eq)));
    };
    let result = match op {
        Op::Add => x + y,
        Op::Sub => x - y,
        Op::Mul => x.checked_mul(y)?,
        Op::Eq => return Some(Value::Bool(order == Ordering::Equal)),
        Op::Ne => return Some(Value::Bool(order != Ordering::Equal)),
        Op::Lt => return Some(Value::Bool(order == Ordering::Less)),
        Op::Le => return Some(Value::Bool(order != Ordering::Greater)),
        Op::Gt => return Some(Value::Bool(order == Ordering::Greater)),
        Op::Ge => return Some(Value::Bool(order != Ordering::Less)),
    };
    // Within 64 bits, minijinja's integers and serde_json's agree.
    if let Ok(i) = i64::try_from(result) {
        Some(Value::from(i))
    } else {
        u64::try_from(result).ok().map(Value::from)
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn space(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn done(&self) -> bool {
        self.i == self.s.len()
    }

    fn operand(&mut self) -> Option<Operand> {
        self.space();
        let start = self.i;
        let first = *self.s.get(self.i)?;
        if first.is_ascii_digit() {
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            // `1.5`, `1e3`, `1_000`, `0x1`: minijinja's to read.
            if self
                .s
                .get(self.i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'_')
            {
                return None;
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            // Leading zeros read differently here and there: leave them.
            if text.len() > 1 && text.starts_with('0') {
                return None;
            }
            return text.parse().ok().map(Operand::Int);
        }
        if first == b'\'' || first == b'"' {
            self.i += 1;
            let body = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|c| *c != first && *c != b'\\')
            {
                self.i += 1;
            }
            // An escape, or no closing quote: minijinja's to read.
            if self.s.get(self.i) != Some(&first) {
                return None;
            }
            let text = std::str::from_utf8(&self.s[body..self.i]).ok()?.to_string();
            self.i += 1;
            return Some(Operand::Text(text));
        }
        if first.is_ascii_alphabetic() || first == b'_' {
            while self
                .s
                .get(self.i)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
            {
                self.i += 1;
            }
            let name = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            if RESERVED.contains(&name) {
                return None;
            }
            return Some(Operand::Field(name.to_string()));
        }
        None
    }

    fn op(&mut self) -> Option<Op> {
        let rest = &self.s[self.i..];
        let (op, len) = match rest {
            [b'=', b'=', ..] => (Op::Eq, 2),
            [b'!', b'=', ..] => (Op::Ne, 2),
            [b'<', b'=', ..] => (Op::Le, 2),
            [b'>', b'=', ..] => (Op::Ge, 2),
            [b'<', ..] => (Op::Lt, 1),
            [b'>', ..] => (Op::Gt, 1),
            [b'+', ..] => (Op::Add, 1),
            [b'-', ..] => (Op::Sub, 1),
            // `**` is a power: not this `*`.
            [b'*', b'*', ..] => return None,
            [b'*', ..] => (Op::Mul, 1),
            _ => return None,
        };
        self.i += len;
        Some(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::language::template::{Scope, Template, environment};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn recognises_the_simple_shapes_only() {
        let field = |n: &str| Operand::Field(n.to_string());
        assert_eq!(Simple::parse("tries"), Some(Simple::One(field("tries"))));
        assert_eq!(
            Simple::parse(" tries+1 "),
            Some(Simple::Binary(field("tries"), Op::Add, Operand::Int(1)))
        );
        assert_eq!(
            Simple::parse("status == 'Completed'"),
            Some(Simple::Binary(
                field("status"),
                Op::Eq,
                Operand::Text("Completed".into())
            ))
        );
        for other in [
            "tries + 1 + 1",
            "a.b",
            "a[0]",
            "a | length",
            "a ** 2",
            "a / 2",
            "a // 2",
            "a % 2",
            "not a",
            "a and b",
            "true",
            "none",
            "item == 1",
            "1.5 + a",
            "1e3",
            "010",
            "'it\\'s' == a",
            "'open",
            "a ~ b",
            "f(a)",
            "-1",
            "(a)",
            "",
        ] {
            assert_eq!(Simple::parse(other), None, "{other}");
        }
    }

    /// Wherever the fast path answers, minijinja gives the same value; and
    /// it answers for the loop's own expressions.
    #[test]
    fn agrees_with_minijinja() {
        let env = environment();
        let values = [
            json!(0),
            json!(1),
            json!(-7),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(u64::MAX),
            json!(2.5),
            json!(3.0),
            json!("Completed"),
            json!(""),
            json!("10"),
            json!(true),
            json!(null),
            json!([1]),
            json!({"a": 1}),
        ];
        let ops = ["+", "-", "*", "==", "!=", "<", "<=", ">", ">="];
        let literals = ["1", "0", "9223372036854775807", "'Completed'", "\"x\""];
        let mut answered = 0;
        let mut compared = 0;
        for a in &values {
            for b in &values {
                let fields: IndexMap<String, Value> =
                    [("a".into(), a.clone()), ("b".into(), b.clone())]
                        .into_iter()
                        .collect();
                let scope = Scope::new(Arc::new(fields.clone()));
                let mut exprs: Vec<String> = vec!["a".into()];
                for op in ops {
                    exprs.push(format!("a {op} b"));
                    for l in literals {
                        exprs.push(format!("a {op} {l}"));
                        exprs.push(format!("{l} {op} b"));
                    }
                }
                for expr in exprs {
                    let simple = Simple::parse(&expr).expect(&expr);
                    let Some(ours) = simple.eval(&fields) else {
                        continue;
                    };
                    answered += 1;
                    let t = Template::compile_str(
                        &env,
                        Default::default(),
                        &format!("{{{{ {expr} }}}}"),
                    )
                    .unwrap_or_else(|e| panic!("{expr}: {}", e.message));
                    let theirs = t.render(&env, &scope);
                    assert_eq!(Ok(ours), theirs, "{expr} with a = {a}, b = {b}");
                    compared += 1;
                }
            }
        }
        assert!(answered > 500 && compared == answered, "{answered}");
        let fields: IndexMap<String, Value> =
            [("tries".into(), json!(3)), ("max_tries".into(), json!(3))]
                .into_iter()
                .collect();
        assert_eq!(
            Simple::parse("tries + 1").unwrap().eval(&fields),
            Some(json!(4))
        );
        assert_eq!(
            Simple::parse("tries >= max_tries").unwrap().eval(&fields),
            Some(json!(true))
        );
    }
}
