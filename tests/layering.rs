//! The layers of every crate of the workspace, as each crate's `lib.rs` draws them: a table in
//! a ```` ```text ```` block of its module documentation, the top layer first, each line the
//! layer's modules (comma-separated; a line that starts with spaces goes on the line before)
//! and, after two or more spaces, what the layer is. A module may name (`crate::x`, or
//! `super::x` from the crate's top) modules of its own layer or of the layers below, never of a
//! layer above, and no two modules may name each other round a cycle. Every module must be in
//! the table. Tests (`#[cfg(test)]` and on, `tests.rs`, `proptests.rs`) are not looked at.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates of the workspace, by their source directories.
const CRATES: &[&str] = &["edge", "services", "nginx", "syntax"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The layer table of the crate whose sources are at `src`: each top-level module with its
/// layer's number (0 is the top).
fn layers(src: &Path) -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut table = BTreeMap::new();
    let mut inside = false;
    let mut layer = 0usize;
    let mut started = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.strip_prefix(' ').unwrap_or(doc);
        if doc.trim() == "```text" {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if doc.trim() == "```" {
            break;
        }
        let continued = doc.starts_with(' ');
        let names = doc.trim_start().split("  ").next().unwrap_or("");
        if !continued && started {
            layer += 1;
        }
        started = true;
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            table.insert(name.to_string(), layer);
        }
    }
    table
}

/// The crate's top-level modules and, for each, the others its non-test code names.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|c| c.trim_end_matches(".rs").to_string())
                .expect("a module");
            let test_only = path
                .file_name()
                .is_some_and(|n| n == "tests.rs" || n == "proptests.rs");
            if matches!(top.as_str(), "lib" | "main") || test_only {
                continue;
            }
            // A file at src/x.rs or src/x/mod.rs is one `super::` from the crate's top.
            let mut depth = rel.components().count();
            if path.file_name().is_some_and(|n| n == "mod.rs") {
                depth -= 1;
            }
            let to_top = "super::".repeat(depth);
            let text = std::fs::read_to_string(&path).expect("source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let names = graph.entry(top.clone()).or_default();
            for line in code.lines() {
                let line = line.split("//").next().unwrap_or("");
                for prefix in ["crate::", to_top.as_str()] {
                    for (i, _) in line.match_indices(prefix) {
                        // `super::super::x` from deeper down is not `super::x`.
                        if prefix != "crate::" && line[..i].ends_with("super::") {
                            continue;
                        }
                        let name: String = line[i + prefix.len()..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != top {
                            names.insert(name);
                        }
                    }
                }
            }
        }
    }
    graph
}

/// A path back to `start` through `graph`, if there is one.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> bool {
    for next in graph.get(at).into_iter().flatten() {
        path.push(next.clone());
        if next == start
            || (seen.insert(next.clone()) && cycle_from(graph, start, next, path, seen))
        {
            return true;
        }
        path.pop();
    }
    false
}

/// What is wrong with the layers of the crate at `src`, one line each.
fn violations(src: &Path) -> Vec<String> {
    let table = layers(src);
    let graph = imports(src);
    let mut wrong = Vec::new();
    if table.is_empty() {
        wrong.push(format!("{}: no layer table in lib.rs", src.display()));
        return wrong;
    }
    for (module, names) in &graph {
        let Some(&own) = table.get(module) else {
            wrong.push(format!("`{module}` is not in the layer table"));
            continue;
        };
        for name in names {
            // Items of the crate's root (lib.rs) and names that are not modules (a type the
            // root re-exports) are the crate's face, not a layer.
            let Some(&theirs) = table.get(name) else {
                continue;
            };
            if theirs < own {
                wrong.push(format!(
                    "`{module}` (layer {own}) imports `{name}`, a layer above it ({theirs})"
                ));
            }
        }
    }
    // Names only: a module of the table that names no other has no entry in the graph.
    let graph: BTreeMap<String, BTreeSet<String>> = graph
        .into_iter()
        .map(|(m, names)| {
            (
                m,
                names
                    .into_iter()
                    .filter(|n| table.contains_key(n))
                    .collect(),
            )
        })
        .collect();
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        if cycle_from(&graph, start, start, &mut path, &mut BTreeSet::new()) {
            wrong.push(format!("an import cycle: {}", path.join(" -> ")));
        }
    }
    wrong
}

#[test]
fn no_module_of_any_crate_imports_from_a_layer_above_or_round_a_cycle() {
    let root = workspace();
    let mut wrong = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        for line in violations(&src) {
            wrong.push(format!("{krate}: {line}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_import_from_above_and_a_cycle() {
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path();
    std::fs::write(
        src.join("lib.rs"),
        "//! ```text\n//! top, peer   the top\n//! low         a leaf\n//! ```\n",
    )
    .expect("lib");
    std::fs::write(
        src.join("top.rs"),
        "use crate::low::X;\nuse crate::peer::Y;\n",
    )
    .expect("top");
    std::fs::write(src.join("peer.rs"), "use crate::top::Z;\n").expect("peer");
    std::fs::write(
        src.join("low.rs"),
        "use super::top::W; // a leaf that looks up\n",
    )
    .expect("low");
    let wrong = violations(src);
    assert!(
        wrong
            .iter()
            .any(|w| w.contains("`low` (layer 1) imports `top`")),
        "{wrong:?}"
    );
    assert!(
        wrong.iter().any(|w| w.starts_with("an import cycle")),
        "{wrong:?}"
    );
    std::fs::write(src.join("stray.rs"), "").expect("stray");
    assert!(
        violations(src)
            .iter()
            .any(|w| w.contains("`stray` is not in the layer table")),
        "a module outside the table"
    );
}
