//! From file to [`Config`]: every mistake in one pass, each with file:line:col.

use super::file::*;
use super::model::*;
use crate::units::{parse_duration, parse_size};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;
use toml::Spanned;

mod edge;
mod route;
mod tls;
mod upstream;
mod zone;

/// One problem found in a config file, located by line and column (both from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every error in a config file that could not be loaded.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors {
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A config that passed validation, with what is worth a warning.
#[derive(Clone, Debug)]
pub struct Validated {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates config text. `file` names it in messages.
pub fn validate(file: &str, source: &str) -> Result<Validated, ConfigErrors> {
    validate_with(file, source, StartFiles::Skip)
}

/// What becomes of the files only a starting edge reads (the `[tls]` certificates and keys:
/// a reload does not read them, they are bound at start and their files watched apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFiles {
    /// Not read: a reload, an import, `explain`, `diff`.
    Skip,
    /// Read; one missing or unreadable is a warning at its place (`edge check`: a file is
    /// often checked where the certificates of its deployment are not).
    Warn,
    /// Read; one missing or unreadable is an error at its place (`edge run`).
    Require,
}

/// [`validate`], with the files a starting edge reads treated as `start_files` says.
pub fn validate_with(
    file: &str,
    source: &str,
    start_files: StartFiles,
) -> Result<Validated, ConfigErrors> {
    let mut v = Validator {
        file,
        source,
        start_files,
        inserted: Vec::new(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let parsed = v.parse();
    let config = parsed.map(|f| v.config(f));
    match config {
        Some(config) if v.errors.is_empty() => Ok(Validated {
            config,
            warnings: v.warnings,
        }),
        _ => {
            v.errors.sort_by_key(|d| (d.line, d.column));
            Err(ConfigErrors { errors: v.errors })
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    source: &'a str,
    /// What becomes of the files a starting edge reads.
    start_files: StartFiles,
    /// Headers added to the text that is deserialized ([`explicit_tables`]), as (position in
    /// that text, length): spans are mapped back to the file through them.
    inserted: Vec<(usize, usize)>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn at(&self, span: Range<usize>, message: String) -> Diagnostic {
        let mut offset = span.start;
        for &(at, len) in self.inserted.iter().rev() {
            if offset >= at + len {
                offset -= len;
            } else if offset >= at {
                offset = at; // an added header: the place of the table it stands for
            }
        }
        let offset = offset.min(self.source.len());
        let before = &self.source[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.source[line_start..offset].chars().count() + 1;
        Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message,
        }
    }

    /// A PEM file that must hold at least one `what` ("certificate" or "key"): an error at
    /// its place if it cannot be read or holds none.
    fn pem_file(&mut self, path: &Spanned<String>, what: &str) {
        if let Some(problem) = pem_problem(path.get_ref(), what) {
            self.error(path.span(), problem);
        }
    }

    /// A `[tls]` certificate's file, read as [`StartFiles`] says.
    fn start_file(&mut self, path: &Spanned<String>, what: &str) {
        if self.start_files == StartFiles::Skip {
            return;
        }
        if let Some(problem) = pem_problem(path.get_ref(), what) {
            match self.start_files {
                StartFiles::Require => self.error(path.span(), problem),
                _ => self.warn(
                    path.span(),
                    format!("{problem}: `edge run` would not start with this file here"),
                ),
            }
        }
    }

    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message.into());
        self.errors.push(d);
    }

    fn warn(&mut self, span: Range<usize>, message: impl Into<String>) {
        let d = self.at(span, message.into());
        self.warnings.push(d);
    }

    /// Deserializes the file, recording unknown keys (all of them) and the first type error.
    fn parse(&mut self) -> Option<FileConfig> {
        let mut unknown: Vec<Vec<String>> = Vec::new();
        let (text, inserted) = explicit_tables(self.source);
        self.inserted = inserted;
        let result = {
            let deserializer = toml::Deserializer::new(&text);
            serde_ignored::deserialize(deserializer, |path| {
                unknown.push(path_segments(&path));
            })
        };
        if !unknown.is_empty() {
            let document = text.parse::<toml_edit::ImDocument<String>>().ok();
            for segments in unknown {
                let span = document
                    .as_ref()
                    .and_then(|d| key_span(d.as_item(), &segments))
                    .unwrap_or(0..0);
                let (name, parent) = segments
                    .split_last()
                    .map_or(("?", &[][..]), |(n, p)| (n.as_str(), p));
                let place = if parent.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `{}`", parent.join("."))
                };
                self.error(span, format!("unknown key `{name}` {place}"));
            }
        }
        match result {
            Ok(file) => Some(file),
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                // The parser leaves some messages empty (a lone carriage return, found by the
                // property tests): say at least what kind of problem it is.
                let message = match e.message().trim() {
                    "" => "invalid TOML syntax".to_string(),
                    m => m.to_string(),
                };
                self.error(span, message);
                None
            }
        }
    }

    fn config(&mut self, file: FileConfig) -> Config {
        let edge_file = file.edge.unwrap_or_default();
        let mut tls = file.tls.as_ref().map(|t| self.tls(t));
        let edge = self.edge(&edge_file, tls.is_some());
        let gzip = self.gzip(file.gzip.unwrap_or_default());
        let redis_given = file.redis.is_some();
        let redis = self.redis(file.redis.unwrap_or_default());
        let mut zones = BTreeMap::new();
        for (name, zone) in &file.zones {
            if let Some(z) = self.zone(name, zone) {
                zones.insert(name.clone(), z);
            }
        }
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &file.upstreams {
            self.check_name(name, upstream.span(), "upstream");
            if let Some(u) = self.upstream(name, upstream) {
                upstreams.insert(name.clone(), u);
            }
        }
        let mut routes = Vec::new();
        let mut seen = HashSet::new();
        for route in &file.routes {
            if let Some(r) = self.route(route, &file.upstreams, &file.zones, &mut seen) {
                routes.push(r);
            }
        }
        // ACME's names, when not listed: every exact host a route names.
        if let Some(acme) = tls.as_mut().and_then(|t| t.acme.as_mut()) {
            if acme.domains.is_empty() {
                for host in routes.iter().filter_map(|r| r.host.as_deref()) {
                    let host = host.to_ascii_lowercase();
                    let orderable = !host.starts_with('*')
                        && host.contains('.')
                        && host.parse::<std::net::IpAddr>().is_err();
                    if orderable && !acme.domains.contains(&host) {
                        acme.domains.push(host);
                    }
                }
            }
            if acme.domains.is_empty() {
                let span = file
                    .tls
                    .as_ref()
                    .and_then(|t| t.get_ref().acme.as_ref())
                    .map_or(0..0, |a| a.span());
                self.error(
                    span,
                    "[tls.acme] has no domains: list them in `domains` or give routes a `host`",
                );
            }
            let acme_file = file.tls.as_ref().and_then(|t| t.get_ref().acme.as_ref());
            let span = acme_file.map_or(0..0, |a| a.span());
            let challenge_given = acme_file.is_some_and(|a| a.get_ref().challenge.is_some());
            if acme.challenge == AcmeChallenge::TlsAlpn01 && edge.https_listen.is_empty() {
                match challenge_given {
                    // The default: TLS-ALPN-01 where an https listener can answer it.
                    false => acme.challenge = AcmeChallenge::Http01,
                    true => self.error(
                        span.clone(),
                        "challenge = \"tls-alpn-01\" needs an https listener",
                    ),
                }
            }
            if acme.challenge == AcmeChallenge::Http01 && edge.http_listen.is_empty() {
                self.error(
                    span.clone(),
                    "challenge = \"http-01\" needs an http listener (port 80)",
                );
            }
            if acme.store == AcmeStore::Redis && !redis_given {
                self.warn(
                    span,
                    format!(
                        "store = \"redis\" without a [redis] section: the default url {} is used",
                        crate::config::DEFAULT_REDIS_URL
                    ),
                );
            }
        }
        let used: HashSet<&str> = routes.iter().map(|r| r.upstream.as_str()).collect();
        for (name, upstream) in &file.upstreams {
            if !used.contains(name.as_str()) {
                self.warn(
                    upstream.span(),
                    format!("upstream `{name}` is not used by any route"),
                );
            }
        }
        Config {
            edge,
            tls,
            gzip,
            redis,
            zones,
            upstreams,
            routes,
        }
    }

    fn check_name(&mut self, name: &str, span: Range<usize>, what: &str) {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            self.error(
                span,
                format!("{what} name `{name}` must be letters, digits, `_` or `-`"),
            );
        }
    }

    /// A key whose value is one of `choices`; the first is the default, for a key not given
    /// and for one given wrong (which is an error listing the choices).
    fn choice<T: Clone>(
        &mut self,
        key: &str,
        t: &Option<Spanned<String>>,
        choices: &[(&str, T)],
    ) -> T {
        let Some(t) = t else {
            return choices[0].1.clone();
        };
        let given = t.get_ref().as_str();
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == given) {
            return value.clone();
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let listed = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        self.error(t.span(), format!("{key} is {listed}, not `{given}`"));
        choices[0].1.clone()
    }

    fn cidr(&mut self, t: &Spanned<String>) -> Option<IpNet> {
        let text = t.get_ref().trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Some(net.trunc());
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.error(
            t.span(),
            format!("`{text}` is not an address or CIDR like \"10.0.0.0/8\""),
        );
        None
    }

    /// A list of addresses and CIDRs (`trusted_proxies`, a route's `allow`), each mistake
    /// reported; none when the key is absent.
    fn cidrs(&mut self, list: &Option<Vec<Spanned<String>>>) -> Vec<IpNet> {
        list.iter().flatten().filter_map(|t| self.cidr(t)).collect()
    }

    fn duration_or(&mut self, t: &Option<Spanned<String>>, default: Duration) -> Duration {
        match t {
            Some(t) => match parse_duration(t.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.error(t.span(), e.to_string());
                    default
                }
            },
            None => default,
        }
    }

    fn positive_duration_or(&mut self, t: &Option<Spanned<String>>, default: Duration) -> Duration {
        let d = self.duration_or(t, default);
        if d.is_zero() {
            if let Some(t) = t {
                self.error(t.span(), "this duration must be longer than 0");
            }
            return default;
        }
        d
    }

    fn size(&mut self, t: &Spanned<String>) -> u64 {
        parse_size(t.get_ref()).unwrap_or_else(|e| {
            self.error(t.span(), e.to_string());
            0
        })
    }

    fn int_or(
        &mut self,
        t: &Option<Spanned<i64>>,
        default: u32,
        min: i64,
        max: i64,
        key: &str,
    ) -> u32 {
        match t {
            Some(n) if (min..=max).contains(n.get_ref()) => {
                u32::try_from(*n.get_ref()).unwrap_or(u32::MAX)
            }
            Some(n) => {
                self.error(
                    n.span(),
                    format!("{key} = {} is out of range ({min} to {max})", n.get_ref()),
                );
                default
            }
            None => default,
        }
    }
}

fn parse_default(text: &str) -> SocketAddr {
    text.parse().expect("built-in default addresses are valid")
}

/// Checks "host:port" (host a name, IPv4 or bracketed IPv6; port 1-65535).
pub fn check_server_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!("server addr `{addr}` {why}; expected \"host:port\" like \"content-manager:8000\"")
    };
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("has no valid port")),
    }
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid_host {
        Ok(())
    } else {
        Err(bad("is not a valid host name"))
    }
}

/// The file's text with a header added for each table of the model that the file makes only
/// implicitly: `[tls]` above a lone `[[tls.certificates]]`, `[upstreams.x]` above a lone
/// `[[upstreams.x.servers]]`. Both are valid TOML, but the toml crate has no span for an
/// implicit table, and the model keeps a span for each of these. Returns the text and where
/// the headers went (position in the new text, length).
fn explicit_tables(source: &str) -> (String, Vec<(usize, usize)>) {
    let Ok(document) = toml_edit::ImDocument::parse(source) else {
        return (source.to_string(), Vec::new());
    };
    let root = document.as_table();
    let mut headers: Vec<(usize, String)> = Vec::new();
    let mut implicit = |table: &toml_edit::Table, header: String| {
        // A table made by dotted keys (`app.balance = ...`) has a place of its own already;
        // a header for it would define it twice.
        let made_by_header = table.is_implicit() && !table.is_dotted();
        if let Some(start) = made_by_header.then(|| first_header(table)).flatten() {
            let line = source[..start].rfind('\n').map_or(0, |i| i + 1);
            headers.push((line, header));
        }
    };
    if let Some(toml_edit::Item::Table(tls)) = root.get("tls") {
        implicit(tls, "[tls]\n".to_string());
    }
    if let Some(toml_edit::Item::Table(upstreams)) = root.get("upstreams") {
        for (name, item) in upstreams.iter() {
            if let toml_edit::Item::Table(upstream) = item {
                implicit(
                    upstream,
                    format!("[upstreams.{}]\n", toml_edit::Key::new(name)),
                );
            }
        }
    }
    headers.sort();
    let (mut text, mut inserted, mut copied) = (String::new(), Vec::new(), 0);
    for (at, header) in headers {
        text.push_str(&source[copied..at]);
        inserted.push((text.len(), header.len()));
        text.push_str(&header);
        copied = at;
    }
    text.push_str(&source[copied..]);
    (text, inserted)
}

/// Where the first header inside `table` starts (a sub-table's or an array of tables').
fn first_header(table: &toml_edit::Table) -> Option<usize> {
    let starts = table.iter().filter_map(|(_, item)| match item {
        toml_edit::Item::Table(t) if t.is_implicit() => first_header(t),
        toml_edit::Item::Table(t) => t.span().map(|s| s.start),
        toml_edit::Item::ArrayOfTables(a) => {
            a.iter().filter_map(|t| t.span()).map(|s| s.start).min()
        }
        _ => None,
    });
    starts.min()
}

fn path_segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_segments(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(index.to_string()),
        Path::Map { key, .. } => out.push(key.clone()),
        _ => {}
    }
    // toml's Spanned travels through a private map key; it is not a part of the user's path.
    out.retain(|s| !s.starts_with("$__"));
    out
}

/// Finds where the key at `segments` is written, walking tables, arrays and inline tables.
fn key_span(item: &toml_edit::Item, segments: &[String]) -> Option<Range<usize>> {
    let (first, rest) = segments.split_first()?;
    let table_like = item.as_table_like();
    if let Some(table) = table_like {
        let (key, child) = table.get_key_value(first)?;
        if rest.is_empty() {
            return key.span().or_else(|| child.span());
        }
        return key_span(child, rest);
    }
    let index: usize = first.parse().ok()?;
    let child = match item {
        toml_edit::Item::ArrayOfTables(a) => toml_edit::Item::Table(a.get(index)?.clone()),
        toml_edit::Item::Value(toml_edit::Value::Array(a)) => {
            toml_edit::Item::Value(a.get(index)?.clone())
        }
        _ => return None,
    };
    if rest.is_empty() {
        return child.span();
    }
    key_span(&child, rest)
}

/// What is wrong with `name` as a PEM file that must hold at least one `what` ("certificate"
/// or "key"), if anything.
fn pem_problem(name: &str, what: &str) -> Option<String> {
    match std::fs::read(name) {
        Err(e) => Some(format!("cannot read `{name}`: {e}")),
        Ok(pem) => {
            let found = match what {
                "key" => matches!(
                    rustls_pemfile::private_key(&mut pem.as_slice()),
                    Ok(Some(_))
                ),
                _ => rustls_pemfile::certs(&mut pem.as_slice()).any(|c| c.is_ok()),
            };
            (!found).then(|| format!("`{name}` holds no PEM {what}"))
        }
    }
}
