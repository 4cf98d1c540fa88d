//! The part of the collector's `if` expressions (expr-lang over `body`, `attributes`,
//! `resource`) that operators use most: field access (`body`, `body.x`, `attributes["a.b"]`,
//! `resource.x`), string, number, `true`/`false` and `nil` literals, `==`, `!=`, `matches`,
//! `startsWith`, `endsWith`, `contains`, `and`/`&&`, `or`/`||`, `not`/`!` and parentheses.
//! Anything else is refused when the config is read. Nothing here panics.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::field::{self, Field, Root};

#[derive(Clone, Debug)]
pub enum Expr {
    Field(Field),
    Str(String),
    Num(f64),
    Bool(bool),
    Nil,
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>, bool),
    Matches(Box<Expr>, regex::Regex),
    Str2(StrOp, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Copy, Debug)]
pub enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LBracket,
    RBracket,
    LParen,
    RParen,
    Dot,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            '.' => {
                out.push(Tok::Dot);
                i += 1;
            }
            '"' | '\'' => {
                let mut text = String::new();
                i += 1;
                loop {
                    let Some(&d) = b.get(i) else {
                        return Err("unterminated string".into());
                    };
                    i += 1;
                    match d {
                        _ if d == c => break,
                        '\\' => {
                            let Some(&e) = b.get(i) else {
                                return Err("unterminated string".into());
                            };
                            i += 1;
                            text.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' | '"' | '\'' => e,
                                other => return Err(format!("invalid char escape `\\{other}`")),
                            });
                        }
                        _ => text.push(d),
                    }
                }
                out.push(Tok::Str(text));
            }
            '=' | '!' | '&' | '|' => {
                let two: String = b[i..(i + 2).min(b.len())].iter().collect();
                let op = match two.as_str() {
                    "==" => "==",
                    "!=" => "!=",
                    "&&" => "and",
                    "||" => "or",
                    _ if c == '!' => "not",
                    _ => return Err(format!("`{c}` is not supported yet in `if`")),
                };
                i += if op == "not" { 1 } else { 2 };
                out.push(Tok::Op(op));
            }
            _ if c.is_ascii_digit()
                || (c == '-' && b.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == '.' || b[i] == '_') {
                    i += 1;
                }
                let text: String = b[start..i].iter().filter(|&&d| d != '_').collect();
                out.push(Tok::Num(
                    text.parse().map_err(|_| format!("bad number `{text}`"))?,
                ));
            }
            _ if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                out.push(match word.as_str() {
                    "and" | "or" | "not" | "matches" | "startsWith" | "endsWith" | "contains" => {
                        Tok::Op(match word.as_str() {
                            "and" => "and",
                            "or" => "or",
                            "not" => "not",
                            "matches" => "matches",
                            "startsWith" => "startsWith",
                            "endsWith" => "endsWith",
                            _ => "contains",
                        })
                    }
                    _ => Tok::Ident(word),
                });
            }
            other => return Err(format!("`{other}` is not supported yet in `if`")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.peek()
            == Some(&Tok::Op(match op {
                "and" => "and",
                "or" => "or",
                "not" => "not",
                _ => return false,
            }))
        {
            self.pos += 1;
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_op("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.eat_op("and") {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_op("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Op(
                op @ ("==" | "!=" | "matches" | "startsWith" | "endsWith" | "contains"),
            )) => *op,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(match op {
            "==" => Expr::Eq(Box::new(left), Box::new(right), true),
            "!=" => Expr::Eq(Box::new(left), Box::new(right), false),
            "matches" => {
                let Expr::Str(pattern) = right else {
                    return Err("`matches` needs a string literal pattern".into());
                };
                let re = go_regex(&pattern)?;
                Expr::Matches(Box::new(left), re)
            }
            "startsWith" => Expr::Str2(StrOp::StartsWith, Box::new(left), Box::new(right)),
            "endsWith" => Expr::Str2(StrOp::EndsWith, Box::new(left), Box::new(right)),
            _ => Expr::Str2(StrOp::Contains, Box::new(left), Box::new(right)),
        })
    }

    fn operand(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                if self.next() != Some(Tok::RParen) {
                    return Err("missing `)`".into());
                }
                Ok(e)
            }
            Some(Tok::Str(s)) => Ok(Expr::Str(s)),
            Some(Tok::Num(n)) => Ok(Expr::Num(n)),
            Some(Tok::Ident(w)) => match w.as_str() {
                "true" => Ok(Expr::Bool(true)),
                "false" => Ok(Expr::Bool(false)),
                "nil" => Ok(Expr::Nil),
                "body" | "attributes" | "resource" => {
                    let root = match w.as_str() {
                        "body" => Root::Body,
                        "attributes" => Root::Attributes,
                        _ => Root::Resource,
                    };
                    let mut keys = Vec::new();
                    loop {
                        match self.peek() {
                            Some(Tok::Dot) => {
                                self.pos += 1;
                                match self.next() {
                                    Some(Tok::Ident(k)) => keys.push(k),
                                    _ => return Err("expected a name after `.`".into()),
                                }
                            }
                            Some(Tok::LBracket) => {
                                self.pos += 1;
                                let Some(Tok::Str(k)) = self.next() else {
                                    return Err("expected a string in `[...]`".into());
                                };
                                if self.next() != Some(Tok::RBracket) {
                                    return Err("missing `]`".into());
                                }
                                keys.push(k);
                            }
                            _ => break,
                        }
                    }
                    if keys.is_empty() && root != Root::Body {
                        return Err(format!("`{w}` alone is not supported yet in `if`"));
                    }
                    Ok(Expr::Field(Field { root, keys }))
                }
                other => Err(format!("`{other}` is not supported yet in `if`")),
            },
            Some(t) => Err(format!("unexpected {t:?} in `if`")),
            None => Err("the `if` expression ends early".into()),
        }
    }
}

/// Compiles a Go (RE2) pattern: a `{` that does not start a repetition is a literal there
/// (`^{` matches JSON lines), where Rust's `regex` refuses it.
pub fn go_regex(pattern: &str) -> Result<regex::Regex, String> {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            out.push(c);
            if let Some((_, n)) = chars.next() {
                out.push(n);
            }
            continue;
        }
        if c == '{' && !starts_repetition(&pattern[i + 1..]) {
            out.push_str("\\{");
            continue;
        }
        out.push(c);
    }
    regex::Regex::new(&out).map_err(|e| format!("invalid regex: {e}"))
}

/// `n}`, `n,}` or `n,m}`.
fn starts_repetition(rest: &str) -> bool {
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let rest = &rest[digits..];
    if rest.starts_with('}') {
        return true;
    }
    let Some(rest) = rest.strip_prefix(',') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[digits..].starts_with('}')
}

impl Expr {
    pub fn parse(s: &str) -> Result<Expr, String> {
        let mut p = Parser {
            toks: lex(s)?,
            pos: 0,
        };
        let e = p.or()?;
        if p.pos != p.toks.len() {
            return Err(format!(
                "`if: {s}`: only comparisons (==, !=, matches, startsWith, endsWith, contains) of fields and literals, joined by and/or/not, are supported yet"
            ));
        }
        Ok(e)
    }

    /// Whether the operator runs on this record; an error is handled per `on_error`.
    pub fn eval_bool(&self, rec: &LogRecord, res: &[KeyValue]) -> Result<bool, String> {
        match self.eval(rec, res)? {
            V::Bool(b) => Ok(b),
            _ => Err("the `if` expression is not a boolean".into()),
        }
    }

    fn eval<'a>(&'a self, rec: &'a LogRecord, res: &'a [KeyValue]) -> Result<V<'a>, String> {
        Ok(match self {
            Expr::Field(f) => lookup(rec, res, f)?,
            Expr::Str(s) => V::Str(s),
            Expr::Num(n) => V::Num(*n),
            Expr::Bool(b) => V::Bool(*b),
            Expr::Nil => V::Nil,
            Expr::Not(e) => V::Bool(!e.eval_bool(rec, res)?),
            Expr::And(a, b) => V::Bool(a.eval_bool(rec, res)? && b.eval_bool(rec, res)?),
            Expr::Or(a, b) => V::Bool(a.eval_bool(rec, res)? || b.eval_bool(rec, res)?),
            Expr::Eq(a, b, eq) => V::Bool((a.eval(rec, res)? == b.eval(rec, res)?) == *eq),
            Expr::Matches(a, re) => match a.eval(rec, res)? {
                V::Str(s) => V::Bool(re.is_match(s)),
                _ => return Err("`matches` needs a string".into()),
            },
            Expr::Str2(op, a, b) => match (a.eval(rec, res)?, b.eval(rec, res)?) {
                (V::Str(x), V::Str(y)) => V::Bool(match op {
                    StrOp::StartsWith => x.starts_with(y),
                    StrOp::EndsWith => x.ends_with(y),
                    StrOp::Contains => x.contains(y),
                }),
                _ => return Err("string operator on a value that is not a string".into()),
            },
        })
    }
}

/// A value as expr sees it.
#[derive(Debug)]
enum V<'a> {
    Nil,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    Other(&'a AnyValue),
}

impl PartialEq for V<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (V::Nil, V::Nil) => true,
            (V::Bool(a), V::Bool(b)) => a == b,
            (V::Num(a), V::Num(b)) => a == b,
            (V::Str(a), V::Str(b)) => a == b,
            (V::Other(a), V::Other(b)) => a == b,
            _ => false,
        }
    }
}

fn to_v(v: &AnyValue) -> V<'_> {
    match &v.value {
        None => V::Nil,
        Some(Value::BoolValue(b)) => V::Bool(*b),
        Some(Value::IntValue(i)) => V::Num(*i as f64),
        Some(Value::DoubleValue(d)) => V::Num(*d),
        Some(Value::StringValue(s)) => V::Str(s),
        Some(_) => V::Other(v),
    }
}

/// expr's member access: a missing key is nil; a key of something that is not a map is an
/// error.
fn lookup<'a>(rec: &'a LogRecord, res: &'a [KeyValue], f: &Field) -> Result<V<'a>, String> {
    let (mut cur, keys): (Option<&AnyValue>, &[String]) = match f.root {
        Root::Body => (rec.body.as_ref(), &f.keys[..]),
        Root::Attributes | Root::Resource => {
            let map = if f.root == Root::Attributes {
                &rec.attributes[..]
            } else {
                res
            };
            let Some((first, rest)) = f.keys.split_first() else {
                return Ok(V::Nil);
            };
            match field::map_get(map, first) {
                Some(v) => (Some(v), rest),
                None => return Ok(V::Nil),
            }
        }
    };
    for k in keys {
        match cur.and_then(|v| v.value.as_ref()) {
            Some(Value::KvlistValue(l)) => match field::map_get(&l.values, k) {
                Some(v) => cur = Some(v),
                None => return Ok(V::Nil),
            },
            None => return Err(format!("cannot fetch {k} from <nil>")),
            Some(_) => return Err(format!("cannot fetch {k} from a value that is not a map")),
        }
    }
    Ok(cur.map_or(V::Nil, to_v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(body: &str) -> LogRecord {
        LogRecord {
            body: Some(field::string_value(body.into())),
            attributes: vec![KeyValue {
                key: "log.iostream".into(),
                value: Some(field::string_value("stderr".into())),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn common_conditions() {
        let r = rec("{\"a\":1}");
        let t = |s: &str| Expr::parse(s).unwrap().eval_bool(&r, &[]);
        assert_eq!(t(r#"body matches "^\\{""#), Ok(true));
        assert_eq!(t(r#"body matches '^{'"#), Ok(true));
        assert!(
            Expr::parse(r#"body matches '^\{'"#).is_err(),
            "an unknown escape"
        );
        assert!(go_regex("a{2}").unwrap().is_match("aa"));
        assert!(go_regex("x{").unwrap().is_match("x{"));
        assert!(go_regex("{a,1}").unwrap().is_match("{a,1}"));
        assert_eq!(t(r#"attributes["log.iostream"] == "stderr""#), Ok(true));
        assert_eq!(
            t(r#"attributes.missing == nil and not (body startsWith "x")"#),
            Ok(true)
        );
        assert_eq!(
            t(r#"attributes.missing != nil || body contains "a""#),
            Ok(true)
        );
        assert!(t("body.x == 1").is_err());
        for bad in [
            "body + 1",
            "len(body) > 2",
            "attributes",
            "body ==",
            "body matches attributes.x",
        ] {
            assert!(Expr::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}", body in "\\PC{0,20}") {
            if let Ok(e) = Expr::parse(&s) {
                let _ = e.eval_bool(&rec(&body), &[]);
            }
        }
    }
}
