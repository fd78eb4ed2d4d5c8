//! Where something was written in the nginx files, and the parse errors that say so: what the
//! lexer and the parser both report with.

use std::fmt;
use std::rc::Rc;

/// Where a directive was written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub file: Rc<str>,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// A file that cannot be read or is not valid nginx syntax.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{at}: {message}")]
    Syntax { at: Place, message: String },
    #[error("{file}: cannot read the file: {error}")]
    Read { file: String, error: std::io::Error },
}

pub(crate) fn syntax(at: Place, message: impl Into<String>) -> ParseError {
    ParseError::Syntax {
        at,
        message: message.into(),
    }
}
