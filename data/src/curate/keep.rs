//! The `keep` expression: turns per-document attributes into keep / drop.
//!
//! ```text
//! expr  := or
//! or    := and ("||" and)*
//! and   := not ("&&" not)*
//! not   := "!" not | cmp
//! cmp   := atom (("==" | "!=" | "<" | "<=" | ">" | ">=") atom)?
//! atom  := "(" expr ")" | "true" | "false" | NUMBER | "STRING" | STAGE "." FIELD
//! ```
//!
//! Statically typed: every `STAGE.FIELD` has a type (bool, number or string)
//! known from the recipe's stages; `&&`, `||` and `!` take booleans, `<`..`>=`
//! numbers, `==` / `!=` two values of one type; the whole expression is a
//! boolean. A wrong name or type is an error at load time, before anything
//! runs. `&&` binds tighter than `||`; `!` tighter than both; comparisons do
//! not chain (`a < b < c` is an error). Evaluation short-circuits.

/// A value's type in an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Bool,
    Num,
    Str,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Bool => "a boolean",
            Type::Num => "a number",
            Type::Str => "a string",
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed, type-checked expression. Field references hold the stage's
/// index among the recipe's stages.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Bool(bool),
    Num(f64),
    Str(String),
    Field {
        stage: usize,
        field: String,
        ty: Type,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
}

/// A parse or type error: the message and the character offset.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepError {
    pub at: usize,
    pub message: String,
}

/// A value read from a document's attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Bool(bool),
    Num(f64),
    Str(&'a str),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Not,
    And,
    Or,
    Cmp(CmpOp),
    Dot,
    Num(f64),
    Str(String),
    Ident(String),
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, KeepError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, message: String| Err(KeepError { at, message });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let start = i;
        let two = |a: char, b: char| c == a && next == Some(b);
        let tok = if c.is_whitespace() {
            i += 1;
            continue;
        } else if two('&', '&') {
            i += 2;
            Tok::And
        } else if two('|', '|') {
            i += 2;
            Tok::Or
        } else if two('=', '=') {
            i += 2;
            Tok::Cmp(CmpOp::Eq)
        } else if two('!', '=') {
            i += 2;
            Tok::Cmp(CmpOp::Ne)
        } else if two('<', '=') {
            i += 2;
            Tok::Cmp(CmpOp::Le)
        } else if two('>', '=') {
            i += 2;
            Tok::Cmp(CmpOp::Ge)
        } else if matches!(c, '(' | ')' | '!' | '<' | '>' | '.')
            && !(c == '.' && next.is_some_and(|n| n.is_ascii_digit()))
        {
            i += 1;
            match c {
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                '!' => Tok::Not,
                '<' => Tok::Cmp(CmpOp::Lt),
                '>' => Tok::Cmp(CmpOp::Gt),
                _ => Tok::Dot,
            }
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return err(start, "a string is not closed: add `\"`".into()),
                    Some('"') => break,
                    Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\')) => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&ch) => {
                        s.push(ch);
                        i += 1;
                    }
                }
            }
            i += 1;
            Tok::Str(s)
        } else if c.is_ascii_digit()
            || c == '.'
            || (c == '-' && next.is_some_and(|n| n.is_ascii_digit() || n == '.'))
        {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() => Tok::Num(v),
                _ => return err(start, format!("`{text}` is not a number")),
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-'))
            {
                i += 1;
            }
            Tok::Ident(chars[start..i].iter().collect())
        } else {
            let hint = match c {
                '&' => ": use `&&`",
                '|' => ": use `||`",
                '=' => ": use `==`",
                _ => "",
            };
            return err(start, format!("unexpected `{c}`{hint}"));
        };
        out.push((start, tok));
    }
    Ok(out)
}

/// What a stage name resolves to: its index and the type of each field.
pub trait Schema {
    /// `Err` carries the list of known names for the message.
    fn stage(&self, name: &str) -> Result<usize, String>;
    fn field(&self, stage: usize, field: &str) -> Result<Type, String>;
}

struct Parser<'s> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    schema: &'s dyn Schema,
}

impl Parser<'_> {
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.0)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn fail<T>(&self, at: usize, message: impl Into<String>) -> Result<T, KeepError> {
        Err(KeepError {
            at,
            message: message.into(),
        })
    }

    fn expect_bool(&self, e: (Expr, Type), at: usize, op: &str) -> Result<Expr, KeepError> {
        if e.1 != Type::Bool {
            return self.fail(at, format!("`{op}` needs a boolean, got {}", e.1.name()));
        }
        Ok(e.0)
    }

    fn or(&mut self) -> Result<(Expr, Type), KeepError> {
        let at = self.at();
        let mut lhs = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let at_r = self.at();
            let l = self.expect_bool(lhs, at, "||")?;
            let r = self.and()?;
            let r = self.expect_bool(r, at_r, "||")?;
            lhs = (Expr::Or(Box::new(l), Box::new(r)), Type::Bool);
        }
        Ok(lhs)
    }

    fn and(&mut self) -> Result<(Expr, Type), KeepError> {
        let at = self.at();
        let mut lhs = self.not()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let at_r = self.at();
            let l = self.expect_bool(lhs, at, "&&")?;
            let r = self.not()?;
            let r = self.expect_bool(r, at_r, "&&")?;
            lhs = (Expr::And(Box::new(l), Box::new(r)), Type::Bool);
        }
        Ok(lhs)
    }

    fn not(&mut self) -> Result<(Expr, Type), KeepError> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            let at = self.at();
            let e = self.not()?;
            let e = self.expect_bool(e, at, "!")?;
            return Ok((Expr::Not(Box::new(e)), Type::Bool));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<(Expr, Type), KeepError> {
        let at = self.at();
        let lhs = self.atom()?;
        let Some(Tok::Cmp(op)) = self.peek().cloned() else {
            return Ok(lhs);
        };
        self.pos += 1;
        let rhs = self.atom()?;
        if lhs.1 != rhs.1 {
            return self.fail(
                at,
                format!("cannot compare {} with {}", lhs.1.name(), rhs.1.name()),
            );
        }
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) && lhs.1 != Type::Num {
            return self.fail(
                at,
                format!("`<`, `<=`, `>`, `>=` need numbers, got {}", lhs.1.name()),
            );
        }
        if matches!(self.peek(), Some(Tok::Cmp(_))) {
            return self.fail(self.at(), "comparisons do not chain: join them with `&&`");
        }
        Ok((Expr::Cmp(Box::new(lhs.0), op, Box::new(rhs.0)), Type::Bool))
    }

    fn atom(&mut self) -> Result<(Expr, Type), KeepError> {
        let at = self.at();
        let Some(tok) = self.peek().cloned() else {
            return self.fail(at, "the expression ends early: a value is missing");
        };
        self.pos += 1;
        match tok {
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.fail(self.at(), "`(` is not closed: add `)`");
                }
                self.pos += 1;
                Ok(e)
            }
            Tok::Num(v) => Ok((Expr::Num(v), Type::Num)),
            Tok::Str(s) => Ok((Expr::Str(s), Type::Str)),
            Tok::Ident(id) if id == "true" || id == "false" => {
                Ok((Expr::Bool(id == "true"), Type::Bool))
            }
            Tok::Ident(stage_name) => {
                let stage = self
                    .schema
                    .stage(&stage_name)
                    .or_else(|e| self.fail(at, e))?;
                let Some(Tok::Dot) = self.peek() else {
                    return self.fail(
                        self.at(),
                        format!("`{stage_name}` needs a field: `{stage_name}.keep`"),
                    );
                };
                self.pos += 1;
                let at_f = self.at();
                let Some(Tok::Ident(field)) = self.peek().cloned() else {
                    return self.fail(at_f, format!("a field name must follow `{stage_name}.`"));
                };
                self.pos += 1;
                let ty = self
                    .schema
                    .field(stage, &field)
                    .or_else(|e| self.fail(at_f, e))?;
                Ok((Expr::Field { stage, field, ty }, ty))
            }
            other => self.fail(at, format!("expected a value, found {}", describe(&other))),
        }
    }
}

fn describe(t: &Tok) -> &'static str {
    match t {
        Tok::RParen => "`)`",
        Tok::And => "`&&`",
        Tok::Or => "`||`",
        Tok::Cmp(_) => "a comparison",
        Tok::Dot => "`.`",
        _ => "a value",
    }
}

/// Parses and type-checks `src` against `schema`.
pub fn parse(src: &str, schema: &dyn Schema) -> Result<Expr, KeepError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        end: src.chars().count(),
        schema,
    };
    let at = p.at();
    let e = p.or()?;
    if p.pos < p.toks.len() {
        let tok = &p.toks[p.pos].1;
        return p.fail(
            p.at(),
            format!("unexpected {} after a complete expression", describe(tok)),
        );
    }
    p.expect_bool(e, at, "keep").map_err(|_| KeepError {
        at,
        message:
            "the expression must be true or false: compare the value, e.g. `language.score >= 0.65`"
                .into(),
    })
}

/// How the evaluator reads an attribute: `(stage, field, type)` -> value.
pub type Lookup<'a> = dyn Fn(usize, &str, Type) -> Result<Value<'a>, String> + 'a;

impl Expr {
    /// Evaluates with `get`; `Err` when an attribute is missing or of the
    /// wrong type (a damaged attribute file).
    pub fn eval<'a>(&self, get: &Lookup<'a>) -> Result<bool, String> {
        match self.value(get)? {
            Value::Bool(b) => Ok(b),
            _ => Err("the keep expression is not a boolean".into()),
        }
    }

    fn value<'e, 'a: 'e>(&'e self, get: &Lookup<'a>) -> Result<Value<'e>, String> {
        Ok(match self {
            Expr::Bool(v) => Value::Bool(*v),
            Expr::Num(v) => Value::Num(*v),
            Expr::Str(s) => Value::Str(s),
            Expr::Field { stage, field, ty } => get(*stage, field, *ty)?,
            Expr::Not(e) => Value::Bool(!e.eval(get)?),
            Expr::And(l, r) => Value::Bool(l.eval(get)? && r.eval(get)?),
            Expr::Or(l, r) => Value::Bool(l.eval(get)? || r.eval(get)?),
            Expr::Cmp(l, op, r) => Value::Bool(compare(&l.value(get)?, *op, &r.value(get)?)?),
        })
    }
}

fn compare(a: &Value<'_>, op: CmpOp, b: &Value<'_>) -> Result<bool, String> {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Num(x), Value::Num(y)) => x.partial_cmp(y),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => return Err("compared values of different types".into()),
    };
    // NaN compares unequal to everything and is neither below nor above.
    Ok(match op {
        CmpOp::Eq => ord == Some(Ordering::Equal),
        CmpOp::Ne => ord != Some(Ordering::Equal),
        CmpOp::Lt => ord == Some(Ordering::Less),
        CmpOp::Le => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => ord == Some(Ordering::Greater),
        CmpOp::Ge => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
    })
}
