//! Writes the imported configuration as a commented `upstreams.toml`.
//!
//! The translation fills [`Section`]s in file order; each section and each value may name the
//! nginx `file:line` it came from, which becomes a comment beside it.

use super::parse::Place;
use std::fmt::Write;

/// One `key = value` line. `value` is already TOML (see [`string`], [`strings`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub key: &'static str,
    pub value: Value,
    pub from: Option<Place>,
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A TOML value on one line.
    Line(String),
    /// An array written one item per line, each with the place it came from.
    Items(Vec<(String, Option<Place>)>),
}

/// A table (`[edge]`, `[upstreams.app]`) or an array-of-tables item (`[[routes]]`).
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub header: String,
    pub from: Option<Place>,
    pub comment: Option<String>,
    pub entries: Vec<Entry>,
}

impl Section {
    pub fn new(header: impl Into<String>, from: Option<Place>) -> Section {
        Section {
            header: header.into(),
            from,
            ..Section::default()
        }
    }

    /// Sets `key` (replacing an earlier value of it).
    pub fn set(&mut self, key: &'static str, value: Value, from: Option<Place>) {
        self.set_commented(key, value, from, None);
    }

    pub fn set_commented(
        &mut self,
        key: &'static str,
        value: Value,
        from: Option<Place>,
        comment: Option<String>,
    ) {
        let entry = Entry {
            key,
            value,
            from,
            comment,
        };
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A TOML basic string.
pub fn string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A one-line TOML array of strings.
pub fn strings<S: AsRef<str>>(items: &[S]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// `file:line`, for comments.
pub fn line_of(place: &Place) -> String {
    format!("{}:{}", place.file, place.line)
}

/// The whole file: a header comment, then the sections in order.
pub fn write(preamble: &[String], sections: &[Section]) -> String {
    let mut out = String::new();
    for line in preamble {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            let _ = writeln!(out, "# {line}");
        }
    }
    for section in sections {
        out.push('\n');
        if let Some(comment) = &section.comment {
            for line in comment.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        let _ = write!(out, "{}", section.header);
        if let Some(from) = &section.from {
            let _ = write!(out, "  # nginx {}", line_of(from));
        }
        out.push('\n');
        for entry in &section.entries {
            write_entry(&mut out, entry);
        }
    }
    out
}

fn write_entry(out: &mut String, entry: &Entry) {
    let trailer = |from: &Option<Place>, comment: &Option<String>| {
        let mut parts = Vec::new();
        if let Some(from) = from {
            parts.push(format!("nginx {}", line_of(from)));
        }
        if let Some(comment) = comment {
            parts.push(comment.clone());
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("  # {}", parts.join("; "))
        }
    };
    match &entry.value {
        Value::Line(value) => {
            let _ = writeln!(
                out,
                "{} = {value}{}",
                entry.key,
                trailer(&entry.from, &entry.comment)
            );
        }
        Value::Items(items) => {
            let _ = writeln!(
                out,
                "{} = [{}",
                entry.key,
                trailer(&entry.from, &entry.comment)
            );
            for (item, from) in items {
                let _ = writeln!(out, "  {item},{}", trailer(from, &None));
            }
            out.push_str("]\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn sections_and_values_carry_their_nginx_lines_as_comments() {
        let at = |line| Place {
            file: Rc::from("nginx.conf"),
            line,
            column: 1,
        };
        let mut edge = Section::new("[edge]", None);
        edge.set("keepalive_timeout", Value::Line(string("65s")), Some(at(3)));
        edge.set(
            "trusted_proxies",
            Value::Items(vec![(string("10.0.0.0/8"), Some(at(4)))]),
            None,
        );
        let mut route = Section::new("[[routes]]", Some(at(9)));
        route.set_commented(
            "path",
            Value::Line(string("/a \"b\"")),
            None,
            Some("exact in nginx".into()),
        );
        let text = write(&["imported".into(), String::new()], &[edge, route]);
        assert_eq!(
            text,
            "# imported\n#\n\n[edge]\nkeepalive_timeout = \"65s\"  # nginx nginx.conf:3\n\
             trusted_proxies = [\n  \"10.0.0.0/8\",  # nginx nginx.conf:4\n]\n\n\
             [[routes]]  # nginx nginx.conf:9\npath = '/a \"b\"'  # exact in nginx\n"
        );
        let parsed: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(parsed["routes"][0]["path"].as_str(), Some("/a \"b\""));
    }
}
