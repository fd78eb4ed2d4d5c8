//! `edge import-nginx`: an nginx configuration turned into an `upstreams.toml`, with a report
//! of every directive that was not carried and why.
//!
//! parse (nginx syntax, includes) ▸ translate (directive by directive, with nginx's
//! inheritance from http to server to location) ▸ emit (a commented TOML file). The import is
//! a tool beside the running edge, a crate of its own: the `edge` binary offers it as
//! `edge import-nginx`, and nothing that serves a request links against it. The words of the
//! edge's config it writes come from `edge-syntax`, as the edge reads them.
//!
//! Layers, each importing only from its own layer or from below:
//!
//! ```text
//! translate          directive by directive, with nginx's inheritance
//! emit, known        the commented TOML; what the edge does about each directive it knows
//! parse              nginx's syntax: directives, blocks, includes
//! lex                tokens
//! place              where something was written, and the errors that say so
//! ```

mod emit;
mod known;
mod lex;
pub mod parse;
mod place;
mod translate;

use parse::{Paths, Place};
use std::fmt;
use std::path::{Path, PathBuf};

pub use parse::ParseError;

/// How a directive that was not carried as written relates to the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The edge has nothing like it: a person must decide what to do.
    NoEquivalent,
    /// Carried, or close to something the edge does, but it behaves differently.
    Differs,
    /// Nothing to carry: the edge does this (or does not need it) by default.
    ByDefault,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::NoEquivalent => "no equivalent",
            Kind::Differs => "differs",
            Kind::ByDefault => "edge default",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub at: Place,
    /// The directive as written.
    pub directive: String,
    pub kind: Kind,
    /// Whether a person must look at it before the result is used.
    pub decide: bool,
    pub why: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.decide { "!" } else { " " };
        write!(
            f,
            "{mark} {}: `{}`: {}: {}",
            self.at,
            self.directive,
            self.kind.label(),
            self.why
        )
    }
}

/// The result of an import.
#[derive(Debug)]
pub struct Imported {
    /// The `upstreams.toml` text.
    pub toml: String,
    /// Every directive not carried exactly, in file order.
    pub notes: Vec<Note>,
}

impl Imported {
    /// Whether anything in the report needs a person's decision.
    pub fn needs_decision(&self) -> bool {
        self.notes.iter().any(|n| n.decide)
    }
}

/// Where nginx keeps its configuration on Debian, and in its official images.
pub const DEFAULT_NGINX_ROOT: &str = "/etc/nginx";

/// Imports the nginx configuration `main` (and everything it includes).
pub fn import(main: &Path, nginx_root: &Path) -> Result<Imported, ParseError> {
    let prefix = main
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let paths = Paths {
        prefix,
        nginx_root: nginx_root.to_path_buf(),
    };
    let tree = parse::parse_file(main, &paths)?;
    Ok(translate::translate(
        &main.display().to_string(),
        &tree,
        &paths,
    ))
}

/// Imports configuration text that includes nothing (tests).
pub fn import_str(name: &str, text: &str, prefix: &Path) -> Result<Imported, ParseError> {
    let paths = Paths {
        prefix: prefix.to_path_buf(),
        nginx_root: PathBuf::from(DEFAULT_NGINX_ROOT),
    };
    let tree = parse::parse_str(name, text, &paths)?;
    Ok(translate::translate(name, &tree, &paths))
}

#[cfg(test)]
mod tests;
