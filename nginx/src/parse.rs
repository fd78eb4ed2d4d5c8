//! nginx's configuration syntax: directives, blocks, quoting, `#` comments and `include`.
//!
//! The result is a tree of [`Directive`]s, each knowing the file, line and column it was
//! written at. `include` is expanded in place as nginx does: a relative path is taken from the
//! directory of the main file (nginx's configuration prefix), a glob's matches are read in
//! name order, and a glob that matches nothing is not an error. Variables (`$host`) stay text.

use super::lex::{Lexer, TokenKind};
use super::place::syntax;
pub use super::place::{ParseError, Place};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// One directive: `name arg ...;` or `name arg ... { ... }`.
#[derive(Clone, Debug)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// The directives inside its `{ }`, for a block directive.
    pub block: Option<Vec<Directive>>,
    pub at: Place,
}

/// `arg` as nginx would read it back: as it is, or quoted (an empty one, one with spaces or
/// with characters that end a word).
pub fn written(arg: &str) -> String {
    let mut text = String::new();
    push_written(&mut text, arg);
    text
}

fn push_written(text: &mut String, arg: &str) {
    let plain = !arg.is_empty()
        && !arg.contains(|c: char| {
            c.is_whitespace() || matches!(c, ';' | '"' | '\'' | '{' | '}' | '#')
        });
    if plain {
        text.push_str(arg);
        return;
    }
    text.push('"');
    for c in arg.chars() {
        if matches!(c, '"' | '\\') {
            text.push('\\');
        }
        text.push(c);
    }
    text.push('"');
}

impl Directive {
    /// The directive as written, without its block: `listen 443 ssl`.
    pub fn text(&self) -> String {
        let mut text = self.name.clone();
        for arg in &self.args {
            text.push(' ');
            push_written(&mut text, arg);
        }
        text
    }

    /// The directives of its block (none for a simple directive).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// How deep includes may nest before the parser calls it a loop.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Paths in the files are resolved like nginx resolves them.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The directory relative paths are taken from: the main file's directory.
    pub prefix: PathBuf,
    /// nginx's own configuration directory (`/etc/nginx` on Debian). When the main file is
    /// not in it, an absolute path under it is taken from `prefix` where that has the file, so
    /// a copy of a server's `/etc/nginx` imports anywhere (even beside a real /etc/nginx).
    pub nginx_root: PathBuf,
}

impl Paths {
    /// The path a directive's file argument names, as nginx would open it here.
    pub fn resolve(&self, written: &str) -> PathBuf {
        let path = Path::new(written);
        if path.is_relative() {
            if self.prefix == Path::new(".") {
                return path.to_path_buf();
            }
            return self.prefix.join(path);
        }
        if let Ok(rest) = path.strip_prefix(&self.nginx_root) {
            let moved = self.prefix.join(rest);
            if self.prefix != self.nginx_root && literal_part(&moved).exists() {
                return moved;
            }
        }
        path.to_path_buf()
    }
}

impl Paths {
    /// Where a file really is: symbolic links followed (Debian's sites-enabled links into
    /// sites-available), an absolute link target under `nginx_root` taken from the copy as
    /// [`Paths::resolve`] does. The last path is returned even if it does not exist.
    pub fn follow(&self, path: &Path) -> PathBuf {
        let mut at = path.to_path_buf();
        for _ in 0..8 {
            let Ok(target) = std::fs::read_link(&at) else {
                break;
            };
            at = if target.is_relative() {
                at.parent().map_or(target.clone(), |dir| dir.join(&target))
            } else {
                self.resolve(&target.to_string_lossy())
            };
        }
        at
    }
}

/// The part of a path before its first glob character: what must exist for it to match.
fn literal_part(path: &Path) -> PathBuf {
    path.components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
        .collect()
}

/// Reads the main file and every file it includes.
pub fn parse_file(main: &Path, paths: &Paths) -> Result<Vec<Directive>, ParseError> {
    read_file(main, paths, 0)
}

fn read_file(file: &Path, paths: &Paths, depth: usize) -> Result<Vec<Directive>, ParseError> {
    read_named(file, file, paths, depth)
}

/// Reads `file`, naming its places by `shown` (the path the configuration used).
fn read_named(
    file: &Path,
    shown: &Path,
    paths: &Paths,
    depth: usize,
) -> Result<Vec<Directive>, ParseError> {
    let name = shown.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|error| ParseError::Read {
        file: name.clone(),
        error,
    })?;
    let mut parser = Parser {
        lexer: Lexer::new(&text, Rc::from(name)),
        paths,
        depth,
    };
    parser.block(false)
}

/// Parses text that includes nothing (tests, and `edge import-nginx -` someday).
pub fn parse_str(name: &str, text: &str, paths: &Paths) -> Result<Vec<Directive>, ParseError> {
    let mut parser = Parser {
        lexer: Lexer::new(text, Rc::from(name)),
        paths,
        depth: 0,
    };
    parser.block(false)
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    paths: &'a Paths,
    depth: usize,
}

impl Parser<'_> {
    /// Directives up to the end of the file (`nested` false) or the closing `}`.
    fn block(&mut self, nested: bool) -> Result<Vec<Directive>, ParseError> {
        let mut directives = Vec::new();
        loop {
            let Some(first) = self.lexer.next()? else {
                if nested {
                    return Err(self
                        .lexer
                        .error_here("unexpected end of file, expecting \"}\""));
                }
                return Ok(directives);
            };
            let at = first.at.clone();
            let name = match first.kind {
                TokenKind::Word(word) => word,
                TokenKind::Close if nested => return Ok(directives),
                TokenKind::Close => return Err(syntax(at, "unexpected \"}\"")),
                TokenKind::Semicolon => return Err(syntax(at, "unexpected \";\"")),
                TokenKind::Open => return Err(syntax(at, "unexpected \"{\"")),
            };
            let mut args = Vec::new();
            let block = loop {
                let Some(token) = self.lexer.next()? else {
                    return Err(self
                        .lexer
                        .error_here("unexpected end of file, expecting \";\" or \"}\""));
                };
                match token.kind {
                    TokenKind::Word(word) => args.push(word),
                    TokenKind::Semicolon => break None,
                    TokenKind::Open => break Some(self.block(true)?),
                    TokenKind::Close => return Err(syntax(token.at, "unexpected \"}\"")),
                }
            };
            let directive = Directive {
                name,
                args,
                block,
                at,
            };
            if directive.name == "include" && directive.block.is_none() {
                directives.extend(self.include(&directive)?);
            } else {
                directives.push(directive);
            }
        }
    }

    fn include(&self, directive: &Directive) -> Result<Vec<Directive>, ParseError> {
        let [pattern] = directive.args.as_slice() else {
            return Err(syntax(
                directive.at.clone(),
                "invalid number of arguments in \"include\" directive",
            ));
        };
        if self.depth >= MAX_INCLUDE_DEPTH {
            return Err(syntax(
                directive.at.clone(),
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH}: an include loop?"),
            ));
        }
        let resolved = self.paths.resolve(pattern);
        let text = resolved.to_string_lossy();
        let files: Vec<PathBuf> = if text.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(&text)
                .map_err(|e| syntax(directive.at.clone(), format!("bad include pattern: {e}")))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file() || p.is_symlink())
                .collect();
            found.sort();
            found
        } else {
            vec![resolved]
        };
        let mut directives = Vec::new();
        for file in files {
            let real = self.paths.follow(&file);
            if !real.is_file() {
                return Err(syntax(
                    directive.at.clone(),
                    format!(
                        "cannot include {}: it leads to {}, which is not a file here",
                        file.display(),
                        real.display()
                    ),
                ));
            }
            directives.extend(
                read_named(&real, &file, self.paths, self.depth + 1).map_err(|e| match e {
                    ParseError::Read { file, error } => syntax(
                        directive.at.clone(),
                        format!("cannot include {file}: {error}"),
                    ),
                    other => other,
                })?,
            );
        }
        Ok(directives)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            prefix: dir.to_path_buf(),
            nginx_root: PathBuf::from("/etc/nginx"),
        }
    }

    fn parse(text: &str) -> Result<Vec<Directive>, ParseError> {
        parse_str("test.conf", text, &paths(Path::new("/nonexistent")))
    }

    #[test]
    fn blocks_quotes_comments_and_variables() {
        let tree = parse(
            "# top\nhttp {\n  add_header X \"a; b\" always; # trailing\n  return 308 https://$host$request_uri;\n  map $a ${b}x { default 'it''s'; }\n}\n",
        );
        let err = tree.expect_err("'it''s' needs a separator after the quote");
        assert_eq!(err.to_string(), "test.conf:5:30: unexpected \"'\"");
        let tree = parse(
            "# top\nhttp {\n  add_header X \"a; b\" always; # trailing\n  return 308 https://$host$request_uri;\n  map $a ${b}x { default 'it\\'s'; }\n}\n",
        )
        .expect("parses");
        assert_eq!(tree.len(), 1);
        let http = &tree[0];
        assert_eq!(
            (http.name.as_str(), http.at.line, http.at.column),
            ("http", 2, 1)
        );
        let children = http.children();
        assert_eq!(children[0].args, ["X", "a; b", "always"]);
        assert_eq!((children[0].at.line, children[0].at.column), (3, 3));
        assert_eq!(children[1].args, ["308", "https://$host$request_uri"]);
        assert_eq!(children[2].args, ["$a", "${b}x"]);
        assert_eq!(children[2].children()[0].args, ["it's"]);
    }

    #[test]
    fn a_directive_is_shown_as_it_could_be_written_back() {
        let tree = parse("add_header X-Note \"a \\\"quoted\\\" value\" always;\n").expect("parses");
        assert_eq!(tree[0].args[1], "a \"quoted\" value");
        assert_eq!(
            tree[0].text(),
            "add_header X-Note \"a \\\"quoted\\\" value\" always"
        );
    }

    #[test]
    fn syntax_errors_name_their_line_and_column() {
        let cases = [
            ("http {\n  gzip on\n}\n", "test.conf:3:1: unexpected \"}\""),
            (
                "http {\n  gzip on;\n",
                "test.conf:3:1: unexpected end of file, expecting \"}\"",
            ),
            ("gzip on;\n}\n", "test.conf:2:1: unexpected \"}\""),
            (
                "keepalive_timeout 65",
                "test.conf:1:21: unexpected end of file, expecting \";\" or \"}\"",
            ),
            ("  ;", "test.conf:1:3: unexpected \";\""),
            (
                "a \"open;\n",
                "test.conf:1:3: unexpected end of file: the \" opened here is never closed",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn includes_expand_in_place_with_globs_in_name_order() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir(dir.path().join("sites")).expect("mkdir");
        std::fs::write(dir.path().join("sites/b.conf"), "server { listen 81; }\n").expect("b");
        std::fs::write(dir.path().join("sites/a.conf"), "server { listen 80; }\n").expect("a");
        std::fs::write(dir.path().join("sites/notes.txt"), "not nginx {{{\n").expect("txt");
        std::fs::write(dir.path().join("up.conf"), "upstream u { server a:1; }\n").expect("up");
        std::fs::write(
            dir.path().join("nginx.conf"),
            "http {\n include up.conf;\n include sites/*.conf;\n include none/*.conf;\n gzip on;\n}\n",
        )
        .expect("main");
        let tree = parse_file(&dir.path().join("nginx.conf"), &paths(dir.path())).expect("parses");
        let names: Vec<(String, String)> = tree[0]
            .children()
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.at.file.rsplit('/').next().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("upstream".into(), "up.conf".into()),
                ("server".into(), "a.conf".into()),
                ("server".into(), "b.conf".into()),
                ("gzip".into(), "nginx.conf".into()),
            ]
        );
        // An include of a missing file is an error at the include.
        std::fs::write(dir.path().join("bad.conf"), "\n  include missing.conf;\n").expect("bad");
        let err =
            parse_file(&dir.path().join("bad.conf"), &paths(dir.path())).expect_err("missing");
        assert!(
            err.to_string().contains("bad.conf:2:3: cannot include"),
            "{err}"
        );
        // A loop is reported, not followed forever.
        std::fs::write(dir.path().join("loop.conf"), "include loop.conf;\n").expect("loop");
        let err = parse_file(&dir.path().join("loop.conf"), &paths(dir.path())).expect_err("loop");
        assert!(err.to_string().contains("include loop"), "{err}");
    }

    #[test]
    fn debian_links_into_sites_available_are_followed_into_the_copy() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("sites-available")).expect("mkdir");
        std::fs::create_dir_all(d.join("sites-enabled")).expect("mkdir");
        std::fs::write(d.join("sites-available/app"), "server { listen 8080; }\n").expect("app");
        // As Debian makes them: absolute links into /etc/nginx.
        std::os::unix::fs::symlink(
            "/etc/nginx/sites-available/app",
            d.join("sites-enabled/app"),
        )
        .expect("link");
        std::fs::write(
            d.join("nginx.conf"),
            "http {\n include /etc/nginx/sites-enabled/*;\n}\n",
        )
        .expect("main");
        let tree = parse_file(&d.join("nginx.conf"), &paths(d)).expect("parses");
        let server = &tree[0].children()[0];
        assert_eq!(server.children()[0].args, ["8080"]);
        assert!(
            server.at.file.ends_with("sites-enabled/app"),
            "{}",
            server.at
        );
        // A dangling link is an error, as for nginx.
        std::os::unix::fs::symlink(
            "/etc/nginx/sites-available/gone",
            d.join("sites-enabled/gone"),
        )
        .expect("link");
        let err = parse_file(&d.join("nginx.conf"), &paths(d)).expect_err("dangling");
        assert!(err.to_string().contains("sites-enabled/gone"), "{err}");
    }

    #[test]
    fn an_absolute_path_under_etc_nginx_is_found_beside_the_main_file() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("upstream.conf"),
            "upstream u { server a:1; }\n",
        )
        .expect("up");
        let p = paths(dir.path());
        assert_eq!(
            p.resolve("/etc/nginx/upstream.conf"),
            dir.path().join("upstream.conf")
        );
        assert_eq!(p.resolve("upstream.conf"), dir.path().join("upstream.conf"));
        assert_eq!(
            p.resolve("/srv/other.conf"),
            PathBuf::from("/srv/other.conf")
        );
    }
}
