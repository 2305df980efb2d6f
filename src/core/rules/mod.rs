//! The rule languages (`docs/rules.md`): trait rules over signals, segment rules over traits.
//!
//! Both languages share one Boolean skeleton, parsed here by recursive descent:
//!
//! ```text
//! rule    := or
//! or      := and ("OR" and)*
//! and     := unary ("AND" unary)*
//! unary   := "NOT" unary | "(" rule ")" | leaf
//! ```
//!
//! NOT binds tighter than AND, which binds tighter than OR (AAM's precedence). Keywords are
//! case-insensitive. Each language supplies its own `leaf` ([`trait_rule`], [`segment_rule`]).
//! Rules are parsed and compiled once, when the catalog changes; events only evaluate.
//!
//! Every error names the byte offset where the text went wrong and what was expected there.
//! Limits (rule length, nesting, list size, regex size, trait references) are enforced here, at
//! save time, so that no event pays for a hostile rule.

pub mod lexer;
pub mod segment_rule;
pub mod trait_rule;

use std::fmt;

use lexer::{Tok, Token};

/// Longest rule text accepted.
pub const MAX_RULE_BYTES: usize = 8 * 1024;
/// Deepest nesting of parentheses and NOTs.
pub const MAX_DEPTH: usize = 32;

/// A syntax or limit error in a rule, at a byte offset of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub offset: usize,
    pub message: String,
}

impl RuleError {
    pub fn new(offset: usize, message: impl Into<String>) -> Self {
        RuleError {
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for RuleError {}

/// A Boolean combination of leaves.
#[derive(Clone, Debug)]
pub enum Expr<L> {
    Or(Vec<Expr<L>>),
    And(Vec<Expr<L>>),
    Not(Box<Expr<L>>),
    Leaf(L),
}

impl<L> Expr<L> {
    /// Evaluates the expression, asking `leaf` about each leaf it needs (short-circuiting).
    pub fn eval(&self, leaf: &mut impl FnMut(&L) -> bool) -> bool {
        match self {
            Expr::Or(items) => items.iter().any(|e| e.eval(leaf)),
            Expr::And(items) => items.iter().all(|e| e.eval(leaf)),
            Expr::Not(inner) => !inner.eval(leaf),
            Expr::Leaf(l) => leaf(l),
        }
    }

    /// Visits every leaf.
    pub fn for_each_leaf<'a>(&'a self, f: &mut impl FnMut(&'a L)) {
        match self {
            Expr::Or(items) | Expr::And(items) => items.iter().for_each(|e| e.for_each_leaf(f)),
            Expr::Not(inner) => inner.for_each_leaf(f),
            Expr::Leaf(l) => f(l),
        }
    }
}

impl<L: fmt::Display> Expr<L> {
    /// Binding strength: a child printed inside a parent of at least its strength needs
    /// parentheses to parse back into the same tree.
    fn strength(&self) -> u8 {
        match self {
            Expr::Or(_) => 1,
            Expr::And(_) => 2,
            Expr::Not(_) | Expr::Leaf(_) => 3,
        }
    }

    fn write_child(&self, f: &mut fmt::Formatter<'_>, parent: u8) -> fmt::Result {
        if self.strength() <= parent {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }

    /// The tree as an S-expression, `(or a (and b (not c)))`; `leaf` renders each leaf.
    pub fn sexp(&self, leaf: &impl Fn(&L) -> String) -> String {
        let list = |name: &str, items: &[Expr<L>]| {
            let inner: Vec<String> = items.iter().map(|e| e.sexp(leaf)).collect();
            format!("({name} {})", inner.join(" "))
        };
        match self {
            Expr::Or(items) => list("or", items),
            Expr::And(items) => list("and", items),
            Expr::Not(inner) => format!("(not {})", inner.sexp(leaf)),
            Expr::Leaf(l) => leaf(l),
        }
    }
}

/// Canonical rule text: keywords upper-case, parentheses only where the tree needs them.
/// Parsing the text again gives the same tree.
impl<L: fmt::Display> fmt::Display for Expr<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, items: &[Expr<L>], sep: &str, strength| {
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                e.write_child(f, strength)?;
            }
            Ok(())
        };
        match self {
            Expr::Or(items) => join(f, items, " OR ", 1),
            Expr::And(items) => join(f, items, " AND ", 2),
            Expr::Not(inner) => {
                f.write_str("NOT ")?;
                inner.write_child(f, 2)
            }
            Expr::Leaf(l) => write!(f, "{l}"),
        }
    }
}

/// A value as rule text: a double-quoted string in which only `"` and `\` are escaped,
/// exactly what the lexer reads back.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Parses one leaf of a language; called by the shared Boolean parser.
pub trait LeafParser {
    type Leaf;
    fn parse_leaf(&mut self, p: &mut Parser<'_>) -> Result<Self::Leaf, RuleError>;
}

/// A cursor over a rule's tokens.
pub struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, RuleError> {
        if text.len() > MAX_RULE_BYTES {
            return Err(RuleError::new(
                MAX_RULE_BYTES,
                format!("rule is longer than {MAX_RULE_BYTES} bytes"),
            ));
        }
        Ok(Parser {
            tokens: lexer::tokenize(text)?,
            pos: 0,
            depth: 0,
        })
    }

    pub fn peek(&self) -> &Token<'a> {
        // tokenize always ends with End, and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    /// The token after the next one.
    pub fn peek_second(&self) -> &Token<'a> {
        &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)]
    }

    pub fn advance(&mut self) -> Token<'a> {
        let token = self.peek().clone();
        if token.tok != Tok::End {
            self.pos += 1;
        }
        token
    }

    /// An error at the next token: "expected X, found Y".
    pub fn expected(&self, what: &str) -> RuleError {
        let t = self.peek();
        RuleError::new(
            t.offset,
            format!("expected {what}, found {}", t.tok.describe()),
        )
    }

    pub fn expect(&mut self, tok: Tok<'_>, what: &str) -> Result<Token<'a>, RuleError> {
        if self.peek().tok == tok {
            Ok(self.advance())
        } else {
            Err(self.expected(what))
        }
    }

    /// Whether the next token is the bare word `kw` (case-insensitive).
    pub fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek().tok, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn enter(&mut self) -> Result<(), RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(RuleError::new(
                self.peek().offset,
                format!("rule is nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }
}

/// Words that cannot be keys or bare values, because they structure the rule.
pub fn is_reserved_word(word: &str) -> bool {
    ["AND", "OR", "NOT"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

/// Parses a whole rule with the given leaf language.
pub fn parse<P: LeafParser>(text: &str, leaves: &mut P) -> Result<Expr<P::Leaf>, RuleError> {
    let mut p = Parser::new(text)?;
    if p.peek().tok == Tok::End {
        return Err(RuleError::new(0, "rule is empty"));
    }
    let expr = parse_or(&mut p, leaves)?;
    if p.peek().tok != Tok::End {
        return Err(p.expected("AND, OR or the end of the rule"));
    }
    Ok(expr)
}

fn parse_or<P: LeafParser>(p: &mut Parser<'_>, leaves: &mut P) -> Result<Expr<P::Leaf>, RuleError> {
    let mut items = vec![parse_and(p, leaves)?];
    while p.at_keyword("OR") {
        p.advance();
        items.push(parse_and(p, leaves)?);
    }
    Ok(if items.len() == 1 {
        items.remove(0)
    } else {
        Expr::Or(items)
    })
}

fn parse_and<P: LeafParser>(
    p: &mut Parser<'_>,
    leaves: &mut P,
) -> Result<Expr<P::Leaf>, RuleError> {
    let mut items = vec![parse_unary(p, leaves)?];
    while p.at_keyword("AND") {
        p.advance();
        items.push(parse_unary(p, leaves)?);
    }
    Ok(if items.len() == 1 {
        items.remove(0)
    } else {
        Expr::And(items)
    })
}

fn parse_unary<P: LeafParser>(
    p: &mut Parser<'_>,
    leaves: &mut P,
) -> Result<Expr<P::Leaf>, RuleError> {
    // At the start of a term NOT is always a negation: `not in` only follows a key, and NOT
    // itself can never be a key, so `NOT in == 1` negates a comparison on the key `in`.
    if p.at_keyword("NOT") {
        p.advance();
        p.enter()?;
        let inner = parse_unary(p, leaves)?;
        p.depth -= 1;
        return Ok(Expr::Not(Box::new(inner)));
    }
    if p.peek().tok == Tok::LParen {
        p.advance();
        p.enter()?;
        let inner = parse_or(p, leaves)?;
        p.expect(Tok::RParen, "')'")?;
        p.depth -= 1;
        return Ok(inner);
    }
    Ok(Expr::Leaf(leaves.parse_leaf(p)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy leaf language: single letters.
    struct Letters;
    impl LeafParser for Letters {
        type Leaf = char;
        fn parse_leaf(&mut self, p: &mut Parser<'_>) -> Result<char, RuleError> {
            match p.peek().tok {
                Tok::Word(w) if w.len() == 1 && !is_reserved_word(w) => {
                    let c = w.chars().next().unwrap_or('?');
                    p.advance();
                    Ok(c)
                }
                _ => Err(p.expected("a letter")),
            }
        }
    }

    fn sexp(e: &Expr<char>) -> String {
        match e {
            Expr::Or(v) => format!("(or {})", v.iter().map(sexp).collect::<Vec<_>>().join(" ")),
            Expr::And(v) => format!("(and {})", v.iter().map(sexp).collect::<Vec<_>>().join(" ")),
            Expr::Not(i) => format!("(not {})", sexp(i)),
            Expr::Leaf(c) => c.to_string(),
        }
    }

    fn check(text: &str, expected: &str) {
        let got = parse(text, &mut Letters)
            .map(|e| sexp(&e))
            .unwrap_or_else(|e| e.to_string());
        assert_eq!(got, expected, "rule {text:?}");
    }

    #[test]
    fn precedence_table() {
        check("a", "a");
        check("a OR b AND c", "(or a (and b c))");
        check("a AND b OR c", "(or (and a b) c)");
        check("NOT a AND b", "(and (not a) b)");
        check("NOT (a OR b)", "(not (or a b))");
        check("a and not b or c", "(or (and a (not b)) c)");
        check("((a))", "a");
        check("a OR b OR c", "(or a b c)");
    }

    #[test]
    fn errors_table() {
        check("", "rule is empty (at byte 0)");
        check(
            "a AND",
            "expected a letter, found the end of the rule (at byte 5)",
        );
        check(
            "(a OR b",
            "expected ')', found the end of the rule (at byte 7)",
        );
        check(
            "a b",
            "expected AND, OR or the end of the rule, found 'b' (at byte 2)",
        );
        check("a OR )", "expected a letter, found ')' (at byte 5)");
    }

    #[test]
    fn depth_and_length_limits() {
        let deep = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&deep, &mut Letters).is_ok());
        let deeper = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let e = parse(&deeper, &mut Letters).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        let nots = format!("{}a", "NOT ".repeat(2000));
        assert!(
            parse(&nots, &mut Letters).is_err(),
            "no stack overflow on NOT chains"
        );
        let long = "a OR ".repeat(2000) + "a";
        let e = parse(&long, &mut Letters).unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
    }

    #[test]
    fn printing_round_trips_with_minimal_parentheses() {
        for (text, printed) in [
            ("a", "a"),
            ("a or b and c", "a OR b AND c"),
            ("(a OR b) AND c", "(a OR b) AND c"),
            ("(a OR b) OR c", "(a OR b) OR c"),
            ("a AND (b AND c)", "a AND (b AND c)"),
            ("not (a and b)", "NOT (a AND b)"),
            ("NOT NOT a", "NOT NOT a"),
            ("((a))", "a"),
        ] {
            let e = parse(text, &mut Letters).unwrap();
            assert_eq!(e.to_string(), printed, "{text:?}");
            let again = parse(&e.to_string(), &mut Letters).unwrap();
            assert_eq!(sexp(&again), sexp(&e), "{text:?}");
            assert_eq!(e.sexp(&|c| c.to_string()), sexp(&e));
        }
    }

    #[test]
    fn quoting_escapes_only_quote_and_backslash() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        let quoted = quote(r#"x\d" '"#);
        let toks = lexer::tokenize(&quoted).unwrap();
        assert_eq!(toks[0].tok, Tok::Str(r#"x\d" '"#.into()));
    }

    #[test]
    fn eval_short_circuits_and_negates() {
        let e = parse("a AND NOT (b OR c)", &mut Letters).unwrap();
        assert!(e.eval(&mut |c| *c == 'a'));
        assert!(!e.eval(&mut |c| *c == 'a' || *c == 'c'));
        let mut leaves = vec![];
        e.for_each_leaf(&mut |c| leaves.push(*c));
        assert_eq!(leaves, ['a', 'b', 'c']);
    }
}
