//! edge: a Pingora-based gateway that replaces the AquaScene Content Engine's Nginx edge.
//!
//! A request goes accept ([`listen`]) ▸ TLS ▸ connection gate ([`gate`]) ▸ the request's
//! path ([`proxy`]: head checks ([`request`]), route, allow, rate limit, then [`forward`]:
//! body, server, kept-alive connection, answer, retries) ▸ log and metrics, reading one
//! [`snapshot::Snapshot`] (routes, upstreams, zones) that a reload swaps atomically. HTTP/1
//! runs in the edge's own loop, the common request on the edge's own HTTP/1.1 session
//! ([`downstream::h1`]) and the rest on pingora-core's; HTTP/2 streams on the same phases, on
//! pingora-core's h2 codec ([`downstream::h2`]).
//!
//! Layers, each importing only from its own layer's leaves or from below:
//!
//! ```text
//! nginx                              `edge import-nginx`: a tool beside the process
//! server, admin, scrape, reload,     the process: wiring, the admin listener, config swaps,
//!   explain                          and what the edge would do with a request
//! listen, gate                       client connections: accept, TLS, limits around requests
//! proxy, forward, ctx, request,      one request: its context, checks, answers, the phases,
//!   respond, websocket, downstream     and the client side they run on
//! snapshot                           the compiled config, one ArcSwap
//! route, upstream, ratelimit, tls,   runtime parts
//!   ocsp, discovery, health, compress
//! config, observe                    file ▸ validate ▸ model; counters, access log
//! units, clock, client, signals,     leaf helpers
//!   der, tcp
//! ```

pub mod admin;
pub mod chunked;
pub mod client;
pub mod clock;
pub mod compress;
pub mod config;
pub mod ctx;
pub mod der;
pub mod discovery;
pub mod downstream;
pub mod explain;
pub mod forward;
pub mod gate;
pub mod health;
pub mod listen;
pub mod nginx;
pub mod observe;
pub mod ocsp;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod request;
pub mod respond;
pub mod route;
pub mod scrape;
pub mod server;
pub mod signals;
pub mod snapshot;
pub mod tcp;
pub mod tls;
pub mod units;
pub mod upstream;
pub mod websocket;

#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The crate's top-level modules and, for each, the others its non-test code names
    /// (`crate::x`), read from the sources.
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut pending = vec![root.clone()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("src dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let rel = path.strip_prefix(&root).expect("under src");
                let top = rel
                    .components()
                    .next()
                    .and_then(|c| c.as_os_str().to_str())
                    .map(|c| c.trim_end_matches(".rs").to_string())
                    .expect("a module");
                let test_only = path.file_name().is_some_and(|n| n == "proptests.rs");
                if matches!(top.as_str(), "lib" | "main") || test_only {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let names = graph.entry(top.clone()).or_default();
                for line in code.lines() {
                    let line = line.split("//").next().unwrap_or("");
                    for (i, _) in line.match_indices("crate::") {
                        let name: String = line[i + 7..]
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

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let graph = imports();
        assert!(graph.contains_key("proxy") && graph["proxy"].contains("forward"));
        for start in graph.keys() {
            let mut path = vec![start.clone()];
            let found = cycle_from(&graph, start, start, &mut path, &mut BTreeSet::new());
            assert!(!found, "an import cycle: {}", path.join(" -> "));
        }
    }
}
