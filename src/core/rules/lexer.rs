//! Tokens of the trait and segment rule languages (`docs/rules.md`, Tokens).
//!
//! One lexer serves both languages: keywords (`AND`, `contains`, `FREQUENCY`…) and trait
//! references (`123T`) are bare words that the parsers recognise, so the lexer never has to
//! know which language it reads.

use super::RuleError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok<'a> {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// `==`, `=`, `!=`, `<`, `<=`, `>`, `>=`, `=>`.
    Op(CmpOp),
    /// A bare word: a key, a keyword, a named operator, an unquoted value, `123T`, `7D`.
    Word(&'a str),
    /// A quoted string, unescaped.
    Str(String),
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Token<'a> {
    pub tok: Tok<'a>,
    /// Byte offset of the token's first character in the rule text.
    pub offset: usize,
}

impl Tok<'_> {
    /// How the token is named in "expected …, found …" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Comma => "','".into(),
            Tok::Op(op) => format!("'{}'", op.as_str()),
            Tok::Word(w) => format!("'{}'", crate::core::error::truncate(w, 40)),
            Tok::Str(s) => format!("\"{}\"", crate::core::error::truncate(s, 40)),
            Tok::End => "the end of the rule".into(),
        }
    }
}

/// Characters that end a bare word.
fn is_delimiter(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '"' | '\'' | '=' | '!' | '<' | '>'
        )
}

/// Splits rule text into tokens; the last token is always [`Tok::End`].
pub fn tokenize(text: &str) -> Result<Vec<Token<'_>>, RuleError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(offset, c)) = chars.peek() {
        let tok = match c {
            c if c.is_whitespace() => {
                chars.next();
                continue;
            }
            '(' | ')' | '[' | ']' | ',' => {
                chars.next();
                match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    '[' => Tok::LBracket,
                    ']' => Tok::RBracket,
                    _ => Tok::Comma,
                }
            }
            '=' | '!' | '<' | '>' => {
                chars.next();
                let next = chars.peek().map(|&(_, n)| n);
                let (op, two) = match (c, next) {
                    ('=', Some('=')) => (CmpOp::Eq, true),
                    ('=', Some('>')) => (CmpOp::Ge, true),
                    ('=', _) => (CmpOp::Eq, false),
                    ('!', Some('=')) => (CmpOp::Ne, true),
                    ('<', Some('=')) => (CmpOp::Le, true),
                    ('<', _) => (CmpOp::Lt, false),
                    ('>', Some('=')) => (CmpOp::Ge, true),
                    ('>', _) => (CmpOp::Gt, false),
                    _ => return Err(RuleError::new(offset, "expected '!=', found '!'")),
                };
                if two {
                    chars.next();
                }
                Tok::Op(op)
            }
            '"' | '\'' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, q)) if q == c => break,
                        // Only the quote and the backslash itself are escapes, so regex
                        // patterns keep their backslashes: "\d+" is the regex \d+.
                        Some((_, '\\')) => match chars.peek() {
                            Some(&(_, next)) if next == c || next == '\\' => {
                                value.push(next);
                                chars.next();
                            }
                            Some(_) => value.push('\\'),
                            None => return Err(unterminated(offset)),
                        },
                        Some((_, other)) => value.push(other),
                        None => return Err(unterminated(offset)),
                    }
                }
                Tok::Str(value)
            }
            _ => {
                let mut end = text.len();
                while let Some(&(i, w)) = chars.peek() {
                    if is_delimiter(w) {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                Tok::Word(&text[offset..end])
            }
        };
        tokens.push(Token { tok, offset });
    }
    tokens.push(Token {
        tok: Tok::End,
        offset: text.len(),
    });
    Ok(tokens)
}

fn unterminated(offset: usize) -> RuleError {
    RuleError::new(offset, "unterminated string: expected a closing quote")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Tok<'_>> {
        tokenize(text).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_words() {
        use CmpOp::*;
        assert_eq!(
            kinds("a==1 b=2 c!=3 d<4 e<=5 f>6 g>=7 h=>8"),
            vec![
                Tok::Word("a"),
                Tok::Op(Eq),
                Tok::Word("1"),
                Tok::Word("b"),
                Tok::Op(Eq),
                Tok::Word("2"),
                Tok::Word("c"),
                Tok::Op(Ne),
                Tok::Word("3"),
                Tok::Word("d"),
                Tok::Op(Lt),
                Tok::Word("4"),
                Tok::Word("e"),
                Tok::Op(Le),
                Tok::Word("5"),
                Tok::Word("f"),
                Tok::Op(Gt),
                Tok::Word("6"),
                Tok::Word("g"),
                Tok::Op(Ge),
                Tok::Word("7"),
                Tok::Word("h"),
                Tok::Op(Ge),
                Tok::Word("8"),
                Tok::End,
            ]
        );
    }

    #[test]
    fn strings_and_offsets() {
        let toks = tokenize(r#"k == "a \"b\" c" OR x in ['p', "q"]"#).unwrap();
        assert_eq!(toks[2].tok, Tok::Str("a \"b\" c".into()));
        assert_eq!(toks[2].offset, 5);
        assert_eq!(toks[3].tok, Tok::Word("OR"));
        assert_eq!(toks[7].tok, Tok::Str("p".into()));
    }

    #[test]
    fn backslashes_escape_only_quotes_and_themselves() {
        assert_eq!(kinds(r#""\d+\.\\x\"""#)[0], Tok::Str(r#"\d+\.\x""#.into()));
        assert_eq!(kinds(r"'it\'s'")[0], Tok::Str("it's".into()));
    }

    #[test]
    fn errors_carry_offsets() {
        let e = tokenize("a == \"open").unwrap_err();
        assert_eq!(e.offset, 5);
        let e = tokenize("a ! b").unwrap_err();
        assert_eq!(e.offset, 2);
    }

    #[test]
    fn non_ascii_words() {
        assert_eq!(
            kinds("clé==é"),
            vec![
                Tok::Word("clé"),
                Tok::Op(CmpOp::Eq),
                Tok::Word("é"),
                Tok::End
            ]
        );
    }
}
