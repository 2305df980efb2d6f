//! Trait rules: Boolean combinations of comparisons over an event's signals.
//!
//! ```text
//! cmp     := KEY op VALUE | KEY ("in" | "not in") "[" VALUE ("," VALUE)* "]"
//! op      := "==" | "=" | "!=" | "<" | "<=" | ">" | ">=" | "=>"
//!          | "contains" | "startswith" | "endswith" | "matchesregex" | "matcheswords"
//! VALUE   := "string" | 'string' | bare-word | number
//! ```
//!
//! Semantics (`docs/rules.md`, Trait rules):
//! - keys and values are case-sensitive; keywords and named operators are not;
//! - a key absent from the event matches nothing, `!=` and `not in` included;
//! - a multi-valued key matches when any of its values matches;
//! - `<`, `<=`, `>`, `>=` compare numerically; a signal that is not a number does not match;
//! - `==`, `!=` and `in` against an unquoted number compare numerically when the signal is a
//!   number (`price == 10` matches `10.0`), and as text otherwise;
//! - `matchesregex` searches the value (anchor with `^…$` for a whole-value match) with the
//!   linear-time `regex` engine under size limits;
//! - `matcheswords` matches when the value contains all of the rule's words as whole words
//!   (words are runs of letters and digits).

use std::collections::BTreeSet;
use std::fmt;

use regex::{Regex, RegexBuilder};

use super::lexer::{CmpOp, Tok};
use super::{is_reserved_word, parse, quote, Expr, LeafParser, Parser, RuleError};
use crate::core::signals::Signals;

/// Most values in an `in [...]` list.
pub const MAX_LIST: usize = 1000;
/// Longest `matchesregex` pattern.
pub const MAX_REGEX_BYTES: usize = 512;

/// A compiled trait rule.
#[derive(Clone, Debug)]
pub struct TraitRule {
    expr: Expr<Comparison>,
    keys: Vec<String>,
    matches_without_signals: bool,
}

/// One `KEY op VALUE` test.
#[derive(Clone, Debug)]
pub struct Comparison {
    key: String,
    test: Test,
}

#[derive(Clone, Debug)]
enum Test {
    Eq(Literal),
    Ne(Literal),
    /// `<`, `<=`, `>`, `>=`; the literal always has its number.
    Num(CmpOp, Literal),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    Regex(Regex),
    Words(Vec<String>),
    In(Vec<Literal>),
    NotIn(Vec<Literal>),
}

/// A rule value: its text, and its number when it was written as an unquoted number.
#[derive(Clone, Debug)]
struct Literal {
    text: String,
    number: Option<f64>,
}

impl Literal {
    fn equals(&self, value: &str) -> bool {
        match self.number {
            Some(n) => match parse_number(value) {
                Some(v) => v == n,
                None => value == self.text,
            },
            None => value == self.text,
        }
    }
}

impl TraitRule {
    /// Parses and compiles a trait rule; all limits are checked here.
    pub fn parse(text: &str) -> Result<TraitRule, RuleError> {
        let expr = parse(text, &mut TraitLeaves)?;
        let mut keys = BTreeSet::new();
        expr.for_each_leaf(&mut |c: &Comparison| {
            keys.insert(c.key.clone());
        });
        let matches_without_signals = expr.eval(&mut |_| false);
        Ok(TraitRule {
            expr,
            keys: keys.into_iter().collect(),
            matches_without_signals,
        })
    }

    /// Whether the event's signals satisfy the rule.
    pub fn matches(&self, signals: &Signals) -> bool {
        self.expr.eval(&mut |c| c.matches(signals.get(&c.key)))
    }

    /// The signal keys the rule reads (sorted, unique): the engine indexes rules by them.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// For a rule that is exact text equality on one key — `k == "v"`, `k in [a, b]`, or an
    /// OR of those on the same key, the bulk of real catalogs — the key and the values that
    /// realize it. The engine indexes such rules by value and never evaluates them. Numeric
    /// literals are left out: `k == 10` also matches `10.0`, which a text index cannot see.
    pub fn equality(&self) -> Option<(&str, Vec<&str>)> {
        fn collect<'a>(
            e: &'a Expr<Comparison>,
            key: &mut Option<&'a str>,
            out: &mut Vec<&'a str>,
        ) -> bool {
            match e {
                Expr::Or(items) => items.iter().all(|i| collect(i, key, out)),
                Expr::Leaf(c) => {
                    if key.is_some_and(|k| k != c.key) {
                        return false;
                    }
                    *key = Some(&c.key);
                    let text = |l: &'a Literal| l.number.is_none().then_some(l.text.as_str());
                    match &c.test {
                        Test::Eq(l) => text(l).map(|t| out.push(t)).is_some(),
                        Test::In(list) => {
                            list.iter().all(|l| text(l).map(|t| out.push(t)).is_some())
                        }
                        _ => false,
                    }
                }
                Expr::And(_) | Expr::Not(_) => false,
            }
        }
        let mut key = None;
        let mut values = Vec::new();
        if collect(&self.expr, &mut key, &mut values) {
            values.sort_unstable();
            values.dedup();
            key.map(|k| (k, values))
        } else {
            None
        }
    }

    /// True for rules such as `NOT a == 1` that match an event without any of their keys;
    /// the engine must consider them for every event.
    pub fn matches_without_signals(&self) -> bool {
        self.matches_without_signals
    }
}

impl Comparison {
    fn matches(&self, values: &[String]) -> bool {
        values.iter().any(|v| self.test.matches(v))
    }
}

impl Test {
    fn matches(&self, value: &str) -> bool {
        match self {
            Test::Eq(lit) => lit.equals(value),
            Test::Ne(lit) => !lit.equals(value),
            Test::Num(op, lit) => match (parse_number(value), lit.number) {
                (Some(v), Some(n)) => match op {
                    CmpOp::Lt => v < n,
                    CmpOp::Le => v <= n,
                    CmpOp::Gt => v > n,
                    CmpOp::Ge => v >= n,
                    CmpOp::Eq => v == n,
                    CmpOp::Ne => v != n,
                },
                _ => false,
            },
            Test::Contains(s) => value.contains(s.as_str()),
            Test::StartsWith(s) => value.starts_with(s.as_str()),
            Test::EndsWith(s) => value.ends_with(s.as_str()),
            Test::Regex(re) => re.is_match(value),
            Test::Words(words) => {
                let present: Vec<&str> = words_of(value).collect();
                words.iter().all(|w| present.contains(&w.as_str()))
            }
            Test::In(list) => list.iter().any(|l| l.equals(value)),
            Test::NotIn(list) => !list.iter().any(|l| l.equals(value)),
        }
    }
}

impl fmt::Display for TraitRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)
    }
}

impl TraitRule {
    /// The parsed rule as an S-expression, e.g. `(and (== color "blue") (> price 10))`:
    /// numbers bare, text quoted.
    pub fn sexp(&self) -> String {
        self.expr.sexp(&|c: &Comparison| {
            let (op, args) = c.test.parts();
            format!("({} {} {})", op.replace(' ', "-"), c.key, args.join(" "))
        })
    }
}

impl Literal {
    /// Unquoted when it was written as a number, so that it reads back the same.
    fn render(&self) -> String {
        match self.number {
            Some(_) => self.text.clone(),
            None => quote(&self.text),
        }
    }
}

impl Test {
    /// The operator's canonical spelling and its rendered operands.
    fn parts(&self) -> (&'static str, Vec<String>) {
        let list = |l: &[Literal]| {
            let items: Vec<String> = l.iter().map(Literal::render).collect();
            vec![format!("[{}]", items.join(", "))]
        };
        match self {
            Test::Eq(l) => ("==", vec![l.render()]),
            Test::Ne(l) => ("!=", vec![l.render()]),
            Test::Num(op, l) => (op.as_str(), vec![l.render()]),
            Test::Contains(s) => ("contains", vec![quote(s)]),
            Test::StartsWith(s) => ("startswith", vec![quote(s)]),
            Test::EndsWith(s) => ("endswith", vec![quote(s)]),
            Test::Regex(re) => ("matchesregex", vec![quote(re.as_str())]),
            Test::Words(w) => ("matcheswords", vec![quote(&w.join(" "))]),
            Test::In(l) => ("in", list(l)),
            Test::NotIn(l) => ("not in", list(l)),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, args) = self.test.parts();
        write!(f, "{} {op} {}", self.key, args.join(" "))
    }
}

/// Words for `matcheswords`: maximal runs of letters and digits.
fn words_of(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// A decimal number as rules and signals write it: optional sign, digits, optional fraction.
/// Exponents, `inf` and `NaN` are text, not numbers.
pub fn parse_number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let valid = all_digits(int)
        && frac.is_none_or(all_digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    if !valid {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

struct TraitLeaves;

impl LeafParser for TraitLeaves {
    type Leaf = Comparison;

    fn parse_leaf(&mut self, p: &mut Parser<'_>) -> Result<Comparison, RuleError> {
        let key = match p.peek().tok {
            Tok::Word(w) if !is_reserved_word(w) => w.to_string(),
            _ => return Err(p.expected("a signal key or '('")),
        };
        p.advance();
        let op_token = p.peek().clone();
        let test = match op_token.tok {
            Tok::Op(op) => {
                p.advance();
                let value_offset = p.peek().offset;
                let lit = parse_value(p)?;
                match op {
                    CmpOp::Eq => Test::Eq(lit),
                    CmpOp::Ne => Test::Ne(lit),
                    _ => {
                        // `price < "10"` is a numeric test too: the quotes only say how
                        // the value was written.
                        let number =
                            lit.number
                                .or_else(|| parse_number(&lit.text))
                                .ok_or_else(|| {
                                    RuleError::new(
                                        value_offset,
                                        format!("expected a number after '{}'", op.as_str()),
                                    )
                                })?;
                        Test::Num(
                            op,
                            Literal {
                                text: lit.text,
                                number: Some(number),
                            },
                        )
                    }
                }
            }
            Tok::Word(w) => {
                let named = w.to_ascii_lowercase();
                p.advance();
                match named.as_str() {
                    "contains" => Test::Contains(parse_value(p)?.text),
                    "startswith" => Test::StartsWith(parse_value(p)?.text),
                    "endswith" => Test::EndsWith(parse_value(p)?.text),
                    "matchesregex" => {
                        let offset = p.peek().offset;
                        Test::Regex(compile_regex(&parse_value(p)?.text, offset)?)
                    }
                    "matcheswords" => {
                        let offset = p.peek().offset;
                        let text = parse_value(p)?.text;
                        let words: Vec<String> = words_of(&text).map(str::to_string).collect();
                        if words.is_empty() {
                            return Err(RuleError::new(offset, "expected at least one word"));
                        }
                        Test::Words(words)
                    }
                    "in" => Test::In(parse_list(p)?),
                    "not" if p.at_keyword("in") => {
                        p.advance();
                        Test::NotIn(parse_list(p)?)
                    }
                    _ => return Err(unknown_operator(op_token.offset, w)),
                }
            }
            _ => return Err(p.expected("a comparison operator")),
        };
        Ok(Comparison { key, test })
    }
}

fn unknown_operator(offset: usize, word: &str) -> RuleError {
    RuleError::new(
        offset,
        format!(
            "expected a comparison operator (==, !=, <, <=, >, >=, contains, startswith, endswith, \
             matchesregex, matcheswords, in, not in), found '{}'",
            crate::core::error::truncate(word, 40)
        ),
    )
}

fn parse_value(p: &mut Parser<'_>) -> Result<Literal, RuleError> {
    match p.peek().tok.clone() {
        Tok::Str(s) => {
            p.advance();
            Ok(Literal {
                text: s,
                number: None,
            })
        }
        Tok::Word(w) if !is_reserved_word(w) => {
            p.advance();
            Ok(Literal {
                text: w.to_string(),
                number: parse_number(w),
            })
        }
        _ => Err(p.expected("a value")),
    }
}

fn parse_list(p: &mut Parser<'_>) -> Result<Vec<Literal>, RuleError> {
    p.expect(Tok::LBracket, "'['")?;
    let mut list = vec![parse_value(p)?];
    while p.peek().tok == Tok::Comma {
        p.advance();
        if list.len() == MAX_LIST {
            return Err(RuleError::new(
                p.peek().offset,
                format!("a list holds at most {MAX_LIST} values"),
            ));
        }
        list.push(parse_value(p)?);
    }
    p.expect(Tok::RBracket, "',' or ']'")?;
    Ok(list)
}

fn compile_regex(pattern: &str, offset: usize) -> Result<Regex, RuleError> {
    if pattern.len() > MAX_REGEX_BYTES {
        return Err(RuleError::new(
            offset,
            format!("regular expression is longer than {MAX_REGEX_BYTES} bytes"),
        ));
    }
    // The defaults (10 MiB program, 2 MiB lazy DFA per regex) would multiply across thousands
    // of rules; these bounds keep a regex-heavy catalog small (`docs/architecture.md`,
    // Dependency notes: regex).
    RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(256 << 10)
        .nest_limit(64)
        .build()
        .map_err(|e| {
            let first_line = e
                .to_string()
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string();
            RuleError::new(offset, format!("invalid regular expression: {first_line}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signals(pairs: &[(&str, &[&str])]) -> Signals {
        let mut s = Signals::new();
        for (k, vs) in pairs {
            s.add(*k, vs.iter().map(|v| v.to_string()));
        }
        s
    }

    /// check(rule, signals, expected match)
    fn check(rule: &str, pairs: &[(&str, &[&str])], expected: bool) {
        let r = TraitRule::parse(rule).unwrap_or_else(|e| panic!("{rule:?}: {e}"));
        assert_eq!(
            r.matches(&signals(pairs)),
            expected,
            "rule {rule:?} on {pairs:?}"
        );
    }

    /// `check(input, expected)` for the parser: the tree as an S-expression, or the error.
    fn parsed(rule: &str) -> String {
        TraitRule::parse(rule)
            .map(|r| r.sexp())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn parse_table() {
        for (input, expected) in [
            (r#"color == "blue""#, r#"(== color "blue")"#),
            ("color = blue", r#"(== color "blue")"#),
            (
                "color != 'it''s'",
                "expected AND, OR or the end of the rule, found \"s\" (at byte 13)",
            ),
            (r#"t == "say \"hi\"""#, r#"(== t "say \"hi\"")"#),
            ("price == 10", "(== price 10)"),
            ("price == 10.50", "(== price 10.50)"),
            (r#"price == "10""#, r#"(== price "10")"#),
            ("price > -1", "(> price -1)"),
            (
                "price >= 1.00 AND price <= 100.00",
                "(and (>= price 1.00) (<= price 100.00))",
            ),
            ("price => 5", "(>= price 5)"),
            ("price < \"10\"", "(< price 10)"),
            ("n != 3", "(!= n 3)"),
            ("u CONTAINS shop", r#"(contains u "shop")"#),
            ("u StartsWith 'h'", r#"(startswith u "h")"#),
            ("u endswith .com", r#"(endswith u ".com")"#),
            (r#"u matchesregex "^\d+$""#, r#"(matchesregex u "^\\d+$")"#),
            ("q matcheswords 'red  car'", r#"(matcheswords q "red car")"#),
            (r#"c in [a, "b c", 3]"#, r#"(in c ["a", "b c", 3])"#),
            ("c NOT IN [1]", "(not-in c [1])"),
            ("c not in[x,y]", r#"(not-in c ["x", "y"])"#),
            (
                "a == 1 OR b == 2 AND c == 3",
                "(or (== a 1) (and (== b 2) (== c 3)))",
            ),
            (
                "(a == 1 OR b == 2) AND c == 3",
                "(and (or (== a 1) (== b 2)) (== c 3))",
            ),
            ("NOT a == 1 AND b != 2", "(and (not (== a 1)) (!= b 2))"),
            ("not (a == 1 or b == 2)", "(not (or (== a 1) (== b 2)))"),
            (
                "a==1 AND NOT NOT b==2",
                "(and (== a 1) (not (not (== b 2))))",
            ),
            ("in == 1", "(== in 1)"),
            ("NOT (in == 1)", "(not (== in 1))"),
            ("NOT in == 1", "(not (== in 1))"),
            (
                "NOT in [a]",
                "expected a comparison operator, found '[' (at byte 7)",
            ),
            (
                "d_country=CW OR d_country=SX",
                r#"(or (== d_country "CW") (== d_country "SX"))"#,
            ),
        ] {
            assert_eq!(parsed(input), expected, "{input:?}");
        }
    }

    #[test]
    fn equality_and_case() {
        check(r#"color == "blue""#, &[("color", &["blue"])], true);
        check("color == blue", &[("color", &["Blue"])], false);
        check("color = blue", &[("color", &["blue"])], true);
        check("Color == blue", &[("color", &["blue"])], false);
        check("color != blue", &[("color", &["red"])], true);
        check("color != blue", &[("color", &["blue"])], false);
    }

    #[test]
    fn absent_keys_match_nothing() {
        check("color == blue", &[], false);
        check("color != blue", &[], false);
        check("color not in [a, b]", &[], false);
        check("NOT color == blue", &[], true);
    }

    #[test]
    fn numbers() {
        check("price == 10", &[("price", &["10.0"])], true);
        check(r#"price == "10""#, &[("price", &["10.0"])], false);
        check("price > 100", &[("price", &["100.5"])], true);
        check("price > 100", &[("price", &["abc"])], false);
        check(
            "price >= 1.00 AND price <= 100.00",
            &[("price", &["1"])],
            true,
        );
        check("price => 5", &[("price", &["5"])], true);
        check("price < -1", &[("price", &["-2"])], true);
        check("code == 007", &[("code", &["7"])], true);
        check("code == 007", &[("code", &["x7"])], false);
        check(r#"price < "10""#, &[("price", &["9"])], true);
        check("p == 1", &[("p", &["1e0"])], false);
    }

    #[test]
    fn text_operators() {
        check(
            "url contains shop",
            &[("url", &["https://shop.example"])],
            true,
        );
        check(
            "url CONTAINS Shop",
            &[("url", &["https://shop.example"])],
            false,
        );
        check("url startswith https", &[("url", &["https://x"])], true);
        check("url endswith .com", &[("url", &["a.com"])], true);
        check(r#"url matchesregex "^a+b$""#, &[("url", &["aaab"])], true);
        check(r#"url matchesregex "^a+b$""#, &[("url", &["aaabc"])], false);
        check(
            r#"id matchesregex "^\d{3}-\d+$""#,
            &[("id", &["123-4"])],
            true,
        );
        check(
            r#"q matcheswords "red car""#,
            &[("q", &["a car, red one"])],
            true,
        );
        check(
            r#"q matcheswords "red car""#,
            &[("q", &["a carred"])],
            false,
        );
    }

    #[test]
    fn lists_and_multi_values() {
        check("c in [a, \"b c\", 3]", &[("c", &["b c"])], true);
        check("c in [a, 3]", &[("c", &["3.0"])], true);
        check("c not in [a, b]", &[("c", &["a"])], false);
        check("c not in [a, b]", &[("c", &["z"])], true);
        check("c == b", &[("c", &["a", "b"])], true);
        check("c != a", &[("c", &["a", "b"])], true);
    }

    #[test]
    fn boolean_structure() {
        check(
            r#"(c_make=="A") AND (c_model=="B") AND (c_search=="1")"#,
            &[
                ("c_make", &["A"]),
                ("c_model", &["B"]),
                ("c_search", &["1"]),
            ],
            true,
        );
        check(
            r#"(a== "1" OR b=="1") AND (c=="new")"#,
            &[("b", &["1"]), ("c", &["new"])],
            true,
        );
        check(
            "a == 1 and not b == 2",
            &[("a", &["1"]), ("b", &["2"])],
            false,
        );
        check(
            "d_country=CW OR d_country=SX",
            &[("d_country", &["SX"])],
            true,
        );
        check(
            "x not in [1] AND y == 2",
            &[("x", &["2"]), ("y", &["2"])],
            true,
        );
    }

    fn error(rule: &str) -> String {
        TraitRule::parse(rule)
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn errors_name_offset_and_expectation() {
        assert_eq!(
            error("a =="),
            "expected a value, found the end of the rule (at byte 4)"
        );
        assert_eq!(error("a > abc"), "expected a number after '>' (at byte 4)");
        assert_eq!(
            error("== 1"),
            "expected a signal key or '(', found '==' (at byte 0)"
        );
        assert!(error("a 1").starts_with("expected a comparison operator (==,"));
        assert!(error("a 1").ends_with("found '1' (at byte 2)"));
        assert!(error("a likes 1").starts_with("expected a comparison operator (==,"));
        assert_eq!(
            error("a in [1,"),
            "expected a value, found the end of the rule (at byte 8)"
        );
        assert_eq!(error("a in 1"), "expected '[', found '1' (at byte 5)");
        assert_eq!(
            error("a == AND"),
            "expected a value, found 'AND' (at byte 5)"
        );
        assert!(error(r#"a matchesregex "(""#).starts_with("invalid regular expression"));
        assert_eq!(
            error("a matcheswords \"!!\""),
            "expected at least one word (at byte 15)"
        );
        assert_eq!(
            error("a == 1 b == 2"),
            "expected AND, OR or the end of the rule, found 'b' (at byte 7)"
        );
    }

    #[test]
    fn limits() {
        let list: Vec<String> = (0..MAX_LIST).map(|i| i.to_string()).collect();
        assert!(TraitRule::parse(&format!("a in [{}]", list.join(","))).is_ok());
        let list: Vec<String> = (0..=MAX_LIST).map(|i| i.to_string()).collect();
        assert!(error(&format!("a in [{}]", list.join(","))).contains("at most 1000"));
        let long = "a".repeat(MAX_REGEX_BYTES + 1);
        assert!(error(&format!("x matchesregex \"{long}\"")).contains("longer than 512"));
        let huge = error(r#"x matchesregex "\w{50}\w{50}\w{50}""#);
        assert!(huge.starts_with("invalid regular expression"), "{huge}");
    }

    #[test]
    fn equality_rules_are_recognised_for_the_index() {
        let eq = |rule: &str| {
            TraitRule::parse(rule)
                .unwrap()
                .equality()
                .map(|(k, v)| format!("{k}: {}", v.join("|")))
        };
        assert_eq!(eq("c == blue").as_deref(), Some("c: blue"));
        assert_eq!(eq(r#"c = "10""#).as_deref(), Some("c: 10"));
        assert_eq!(eq("c in [b, a, b]").as_deref(), Some("c: a|b"));
        assert_eq!(
            eq("c == x OR c == y OR c in [z]").as_deref(),
            Some("c: x|y|z")
        );
        for not_indexable in [
            "c == 10",
            "c in [a, 1]",
            "c == x OR d == y",
            "c == x AND c == y",
            "NOT c == x",
            "c != x",
            "c contains x",
            "c > 1",
        ] {
            assert_eq!(eq(not_indexable), None, "{not_indexable}");
        }
    }

    #[test]
    fn keys_and_empty_matching_are_known() {
        let r = TraitRule::parse("b == 1 OR a == 2 OR NOT b == 3").unwrap();
        assert_eq!(r.keys(), ["a", "b"]);
        assert!(r.matches_without_signals());
        assert!(!TraitRule::parse("a == 1")
            .unwrap()
            .matches_without_signals());
    }

    #[test]
    fn parse_number_table() {
        for (t, n) in [
            ("1", Some(1.0)),
            ("-1.5", Some(-1.5)),
            ("+2", Some(2.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
        ] {
            assert_eq!(parse_number(t), n, "{t}");
        }
        for t in ["", ".", "-", "1e3", "inf", "NaN", "1.2.3", "0x10", " 1"] {
            assert_eq!(parse_number(t), None, "{t}");
        }
    }

    /// Rule text from the grammar, with random spacing, case and quoting.
    fn rule_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let key = "[a-z_][a-z0-9_]{0,5}".prop_filter("not a keyword", |k| !is_reserved_word(k));
        let number = prop_oneof![
            (-1000i32..1000).prop_map(|n| n.to_string()),
            (0u32..100, 0u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
        ];
        let text = "[ -~]{0,8}".prop_map(|t| quote(&t));
        let value = prop_oneof![
            number.clone(),
            text.clone(),
            "[a-z]{1,6}".prop_filter("not a keyword", |w| !is_reserved_word(w))
        ];
        let list = proptest::collection::vec(value.clone(), 1..4).prop_map(|v| v.join(" , "));
        let cmp = (key, 0usize..13, value, number, list).prop_map(|(k, op, v, n, l)| match op {
            0 => format!("{k} == {v}"),
            1 => format!("{k}={v}"),
            2 => format!("{k} != {v}"),
            3 => format!("{k} < {n}"),
            4 => format!("{k}<={n}"),
            5 => format!("{k} > {n}"),
            6 => format!("{k} => {n}"),
            7 => format!("{k} Contains {v}"),
            8 => format!("{k} startswith {v}"),
            9 => format!("{k} ENDSWITH {v}"),
            10 => format!("{k} matchesregex \"^(a|b)+[0-9]*$\""),
            11 => format!("{k} in [{l}]"),
            _ => format!("{k} not in [ {l} ]"),
        });
        cmp.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4)
                    .prop_map(|v| format!("({})", v.join(" and "))),
                proptest::collection::vec(inner.clone(), 2..4)
                    .prop_map(|v| format!("({})", v.join(" OR "))),
                inner.prop_map(|t| format!("NOT {t}")),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn printing_and_parsing_again_gives_the_same_rule(text in rule_text()) {
            let rule = TraitRule::parse(&text).map_err(|e| format!("{text:?}: {e}"));
            proptest::prop_assert!(rule.is_ok(), "{:?}", rule.err());
            if let Ok(rule) = rule {
                let printed = rule.to_string();
                let again = TraitRule::parse(&printed).map_err(|e| format!("{printed:?}: {e}"));
                proptest::prop_assert!(again.is_ok(), "{:?}", again.err());
                if let Ok(again) = again {
                    proptest::prop_assert_eq!(again.sexp(), rule.sexp());
                    proptest::prop_assert_eq!(again.to_string(), printed);
                }
            }
        }

        #[test]
        fn evaluation_never_panics_on_arbitrary_signals(
            text in rule_text(),
            pairs in proptest::collection::vec(("[a-z_]{1,3}", proptest::collection::vec("\\PC{0,12}", 1..3)), 0..8),
        ) {
            if let Ok(rule) = TraitRule::parse(&text) {
                let mut s = Signals::new();
                for (k, vs) in &pairs {
                    s.add(k.as_str(), vs.iter().cloned());
                }
                let _ = rule.matches(&s);
            }
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,200}") {
            let _ = TraitRule::parse(&text);
        }

        #[test]
        fn parser_never_panics_on_rule_like_text(
            text in "(a|b|NOT|AND|OR|in|not|contains|==|!=|<|>=|\\(|\\)|\\[|\\]|,|\"x\"|1| ){0,60}"
        ) {
            if let Ok(rule) = TraitRule::parse(&text) {
                let _ = rule.matches(&signals(&[("a", &["1"])]));
            }
        }
    }
}
