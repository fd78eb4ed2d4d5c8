//! nginx's tokens: words (bare, or quoted with nginx's escapes), `;`, `{` and `}`, with `#`
//! comments skipped, each with the line and column it starts at.

use super::place::{syntax, ParseError, Place};
use std::rc::Rc;

pub(super) struct Token {
    pub(super) kind: TokenKind,
    pub(super) at: Place,
}

pub(super) enum TokenKind {
    Word(String),
    Semicolon,
    Open,
    Close,
}

pub(super) struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    file: Rc<str>,
    line: u32,
    column: u32,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str, file: Rc<str>) -> Self {
        Lexer {
            chars: text.chars().peekable(),
            file,
            line: 1,
            column: 1,
        }
    }

    fn here(&self) -> Place {
        Place {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
        }
    }

    pub(super) fn error_here(&self, message: &str) -> ParseError {
        syntax(self.here(), message)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    pub(super) fn next(&mut self) -> Result<Option<Token>, ParseError> {
        // Whitespace and comments.
        loop {
            match self.chars.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while self.chars.peek().is_some_and(|c| *c != '\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        let at = self.here();
        let Some(&c) = self.chars.peek() else {
            return Ok(None);
        };
        let kind = match c {
            ';' => {
                self.bump();
                TokenKind::Semicolon
            }
            '{' => {
                self.bump();
                TokenKind::Open
            }
            '}' => {
                self.bump();
                TokenKind::Close
            }
            '"' | '\'' => {
                self.bump();
                let word = self.quoted(c, &at)?;
                // nginx wants a separator after a closing quote.
                if let Some(&next) = self.chars.peek() {
                    if !(next.is_whitespace() || matches!(next, ';' | '{' | '}')) {
                        return Err(self.error_here(&format!("unexpected \"{next}\"")));
                    }
                }
                TokenKind::Word(word)
            }
            _ => TokenKind::Word(self.bare()),
        };
        Ok(Some(Token { kind, at }))
    }

    fn quoted(&mut self, quote: char, at: &Place) -> Result<String, ParseError> {
        let mut word = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(syntax(
                        at.clone(),
                        format!("unexpected end of file: the {quote} opened here is never closed"),
                    ))
                }
                Some('\\') => match self.bump() {
                    Some(c) if c == quote || c == '\\' => word.push(c),
                    Some('n') => word.push('\n'),
                    Some('t') => word.push('\t'),
                    Some('r') => word.push('\r'),
                    Some(c) => {
                        word.push('\\');
                        word.push(c);
                    }
                    None => {}
                },
                Some(c) if c == quote => return Ok(word),
                Some(c) => word.push(c),
            }
        }
    }

    fn bare(&mut self) -> String {
        let mut word = String::new();
        while let Some(&c) = self.chars.peek() {
            if c.is_whitespace() || matches!(c, ';' | '{' | '}') {
                break;
            }
            self.bump();
            match c {
                // As nginx: \" \' \\ \t \r \n are unescaped, any other \x is kept.
                '\\' => match self.bump() {
                    Some(c @ ('"' | '\'' | '\\')) => word.push(c),
                    Some('t') => word.push('\t'),
                    Some('r') => word.push('\r'),
                    Some('n') => word.push('\n'),
                    Some(c) => {
                        word.push('\\');
                        word.push(c);
                    }
                    None => word.push('\\'),
                },
                // `${name}` keeps its braces.
                '$' if self.chars.peek() == Some(&'{') => {
                    word.push('$');
                    while let Some(inner) = self.bump() {
                        word.push(inner);
                        if inner == '}' {
                            break;
                        }
                    }
                }
                _ => word.push(c),
            }
        }
        word
    }
}
