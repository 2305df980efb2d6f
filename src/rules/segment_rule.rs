//! Segment rules: Boolean combinations of trait references.
//!
//! ```text
//! term    := TRAITREF            123T: the visitor holds trait 123, unexpired
//! ```
//!
//! `FREQUENCY([…] <=7D) >= 3` (DESIGN.md §4) is recognised and refused with a clear error
//! until frequency and recency counting exist in the profile.
//!
//! A rule that would match a visitor who holds none of its traits (`NOT 1T` alone) is
//! rejected, as AAM does: such a segment would contain nearly everyone, and the engine finds
//! candidate segments through the traits a visitor holds.

use std::collections::BTreeSet;

use super::lexer::Tok;
use super::{parse, Expr, LeafParser, Parser, RuleError};

/// Most trait references in one segment rule (AAM's code-view limit).
pub const MAX_TRAIT_REFS: usize = 5000;

/// A compiled segment rule.
#[derive(Clone, Debug)]
pub struct SegmentRule {
    expr: Expr<u64>,
    traits: Vec<u64>,
}

impl SegmentRule {
    pub fn parse(text: &str) -> Result<SegmentRule, RuleError> {
        let mut leaves = SegmentLeaves { refs: 0 };
        let expr = parse(text, &mut leaves)?;
        if expr.eval(&mut |_| false) {
            return Err(RuleError::new(
                0,
                "rule would match visitors who hold none of its traits; combine it with AND \
                 and a trait they must hold (e.g. 1T AND NOT 2T)",
            ));
        }
        let mut traits = BTreeSet::new();
        expr.for_each_leaf(&mut |t: &u64| {
            traits.insert(*t);
        });
        Ok(SegmentRule {
            expr,
            traits: traits.into_iter().collect(),
        })
    }

    /// Whether a visitor holding exactly the traits for which `holds` is true qualifies.
    pub fn matches(&self, holds: impl Fn(u64) -> bool) -> bool {
        self.expr.eval(&mut |t| holds(*t))
    }

    /// The trait ids the rule references (sorted, unique).
    pub fn traits(&self) -> &[u64] {
        &self.traits
    }
}

struct SegmentLeaves {
    refs: usize,
}

impl LeafParser for SegmentLeaves {
    type Leaf = u64;

    fn parse_leaf(&mut self, p: &mut Parser<'_>) -> Result<u64, RuleError> {
        let token = p.peek().clone();
        match token.tok {
            Tok::Word(w) if w.eq_ignore_ascii_case("FREQUENCY") => Err(RuleError::new(
                token.offset,
                "FREQUENCY(...) is not supported yet; use trait references such as 123T",
            )),
            Tok::Word(w) => {
                let id = parse_trait_ref(w)
                    .ok_or_else(|| p.expected("a trait reference such as 123T"))?;
                self.refs += 1;
                if self.refs > MAX_TRAIT_REFS {
                    return Err(RuleError::new(
                        token.offset,
                        format!("a segment rule references at most {MAX_TRAIT_REFS} traits"),
                    ));
                }
                p.advance();
                Ok(id)
            }
            _ => Err(p.expected("a trait reference such as 123T")),
        }
    }
}

/// `123T` (or `123t`) → 123.
fn parse_trait_ref(word: &str) -> Option<u64> {
    let digits = word.strip_suffix(['T', 't'])?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: &str, held: &[u64], expected: bool) {
        let r = SegmentRule::parse(rule).unwrap_or_else(|e| panic!("{rule:?}: {e}"));
        assert_eq!(
            r.matches(|t| held.contains(&t)),
            expected,
            "{rule:?} with {held:?}"
        );
    }

    #[test]
    fn boolean_combinations() {
        check("1T", &[1], true);
        check("1T", &[2], false);
        check("1T AND (2T OR NOT 3T)", &[1], true);
        check("1T AND (2T OR NOT 3T)", &[1, 3], false);
        check("1T AND (2T OR NOT 3T)", &[1, 2, 3], true);
        check("(123T OR 456T) AND NOT 789T", &[456], true);
        check("1t or 2t", &[2], true);
    }

    #[test]
    fn references_are_collected() {
        let r = SegmentRule::parse("3T OR 1T AND NOT 3T OR 2T").unwrap();
        assert_eq!(r.traits(), [1, 2, 3]);
    }

    fn error(rule: &str) -> String {
        SegmentRule::parse(rule)
            .map(|_| "ok".into())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn errors() {
        assert!(error("NOT 1T").starts_with("rule would match visitors who hold none"));
        assert!(error("1T OR NOT 2T").starts_with("rule would match visitors who hold none"));
        assert_eq!(error("1T AND NOT 2T"), "ok");
        assert_eq!(
            error("T"),
            "expected a trait reference such as 123T, found 'T' (at byte 0)"
        );
        assert_eq!(
            error("1T AND x"),
            "expected a trait reference such as 123T, found 'x' (at byte 7)"
        );
        assert_eq!(
            error("1T AND 99999999999999999999999T"),
            "expected a trait reference such as 123T, found '99999999999999999999999T' (at byte 7)"
        );
        assert!(error("FREQUENCY([1T]) >= 2").contains("not supported yet"));
        assert_eq!(
            error("1T == 2"),
            "expected AND, OR or the end of the rule, found '==' (at byte 3)"
        );
    }

    #[test]
    fn reference_limit() {
        // 5000 references fit in 8 KiB only with short ids: "1T OR " is 6 bytes, so use a
        // segment text just under the length limit and count from there.
        let ok = vec!["1T"; 1300].join(" OR ");
        assert!(SegmentRule::parse(&ok).is_ok());
        let mut counter = SegmentLeaves {
            refs: MAX_TRAIT_REFS,
        };
        let mut p = Parser::new("1T").unwrap();
        assert!(counter
            .parse_leaf(&mut p)
            .unwrap_err()
            .message
            .contains("at most 5000"));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "(1T|22T|NOT|AND|OR|\\(|\\)|x| ){0,80}") {
            let _ = SegmentRule::parse(&text);
        }
    }
}
