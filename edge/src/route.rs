//! Routing: `Router::find(host, path)` picks the route for a request.
//!
//! Routes are grouped by host: an exact host beats a `*.domain` wildcard, which beats routes
//! for any host; within the first group that has a match, the longest path prefix wins (as an
//! nginx `server_name` picks the server block, then the longest prefix `location`).

use std::collections::HashMap;

/// One group of routes. Small groups are scanned longest prefix first; a group of more than
/// [`SCAN_MAX`] routes is also indexed by prefix length, so a lookup costs one hash probe per
/// distinct length (tens at most) instead of one comparison per route (thousands).
#[derive(Debug)]
struct Prefixes<T> {
    /// (prefix, index into `values`): longest first, equal lengths in insertion order, while
    /// the group is scanned.
    entries: Vec<(String, usize)>,
    values: Vec<T>,
    /// Prefix length -> prefix bytes -> index into `values`, longest length first; built
    /// once the group outgrows a scan.
    by_length: Vec<(usize, PrefixIndex)>,
}

/// Prefixes of one length, to their index into `values`.
type PrefixIndex = HashMap<Box<[u8]>, usize>;

/// The most routes a group scans one by one.
const SCAN_MAX: usize = 16;

impl<T> Default for Prefixes<T> {
    fn default() -> Self {
        Prefixes {
            entries: Vec::new(),
            values: Vec::new(),
            by_length: Vec::new(),
        }
    }
}

impl<T> Prefixes<T> {
    fn insert(&mut self, prefix: String, value: T) {
        let index = self.values.len();
        self.values.push(value);
        if !self.by_length.is_empty() {
            // Indexed: the scan order no longer matters (and keeping it would cost a shift
            // per route, quadratic over thousands).
            self.index(&prefix, index);
            self.entries.push((prefix, index));
            return;
        }
        let at = self
            .entries
            .partition_point(|(p, _)| p.len() >= prefix.len());
        self.entries.insert(at, (prefix, index));
        if self.entries.len() > SCAN_MAX {
            let entries = std::mem::take(&mut self.entries);
            for (prefix, index) in &entries {
                self.index(prefix, *index);
            }
            self.entries = entries;
        }
    }

    /// Adds one prefix to the length index (the first of equal prefixes wins, as in a scan).
    fn index(&mut self, prefix: &str, index: usize) {
        let len = prefix.len();
        let at = self.by_length.partition_point(|(l, _)| *l > len);
        if self.by_length.get(at).is_none_or(|(l, _)| *l != len) {
            self.by_length.insert(at, (len, HashMap::new()));
        }
        self.by_length[at]
            .1
            .entry(prefix.as_bytes().into())
            .or_insert(index);
    }

    fn find(&self, path: &str) -> Option<&T> {
        let index = if self.by_length.is_empty() {
            self.entries
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, i)| *i)
        } else {
            let path = path.as_bytes();
            self.by_length
                .iter()
                .filter(|(len, _)| *len <= path.len())
                .find_map(|(len, map)| map.get(&path[..*len]).copied())
        };
        index.map(|i| &self.values[i])
    }
}

/// Finds the route of a request from its host and path.
#[derive(Debug)]
pub struct Router<T> {
    exact: HashMap<String, Prefixes<T>>,
    /// Wildcards by their suffix (".example.com"), longest suffix first.
    wildcard: Vec<(String, Prefixes<T>)>,
    any: Prefixes<T>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Prefixes::default(),
        }
    }
}

impl<T> Router<T> {
    /// Adds a route. `host` is an exact lowercase name, `*.domain`, or `None` for any host.
    pub fn add(&mut self, host: Option<&str>, prefix: &str, value: T) {
        let group = match host {
            None => &mut self.any,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => {
                    let at = match self.wildcard.iter().position(|(s, _)| s == suffix) {
                        Some(i) => i,
                        None => {
                            let at = self
                                .wildcard
                                .partition_point(|(s, _)| s.len() >= suffix.len());
                            self.wildcard
                                .insert(at, (suffix.to_string(), Prefixes::default()));
                            at
                        }
                    };
                    &mut self.wildcard[at].1
                }
                None => self.exact.entry(h.to_string()).or_default(),
            },
        };
        group.insert(prefix.to_string(), value);
    }

    /// The route for `host` (lowercase, without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&T> {
        if !self.exact.is_empty() {
            if let Some(found) = self.exact.get(host).and_then(|g| g.find(path)) {
                return Some(found);
            }
        }
        for (suffix, group) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(found) = group.find(path) {
                    return Some(found);
                }
            }
        }
        self.any.find(path)
    }
}

/// The Host of a request in routing form: lowercase, without the port.
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let without_port = if raw.starts_with('[') {
        // [v6]:port
        raw.split_once(']')
            .map_or(raw, |(h, _)| &raw[..h.len() + 1])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let trimmed = without_port.trim_end_matches('.');
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        let mut r = Router::default();
        r.add(None, "/", "dashboard");
        r.add(None, "/api/content/", "content");
        r.add(None, "/api/", "api");
        r.add(Some("admin.example.com"), "/", "admin-host");
        r.add(Some("*.example.com"), "/api/", "wild-api");
        r
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router();
        assert_eq!(r.find("x", "/api/content/42"), Some(&"content"));
        assert_eq!(r.find("x", "/api/ai/1"), Some(&"api"));
        assert_eq!(r.find("x", "/index.html"), Some(&"dashboard"));
        assert_eq!(r.find("x", "/api"), Some(&"dashboard"));
    }

    #[test]
    fn host_groups_take_precedence_then_fall_back() {
        let r = router();
        assert_eq!(
            r.find("admin.example.com", "/api/content/"),
            Some(&"admin-host")
        );
        assert_eq!(
            r.find("www.example.com", "/api/content/"),
            Some(&"wild-api")
        );
        assert_eq!(r.find("www.example.com", "/other"), Some(&"dashboard"));
        assert_eq!(r.find("example.com", "/api/x"), Some(&"api"));
    }

    /// A group large enough to be indexed by length answers exactly as a scan would,
    /// including prefixes that end inside a multi-byte character of the path.
    #[test]
    fn an_indexed_group_matches_like_a_scan() {
        let prefixes = [
            "/",
            "/a",
            "/ab",
            "/abc/",
            "/api/",
            "/api/v1/",
            "/api/v1/items",
            "/é",
            "/éx/",
            "/static/",
            "/static/img/",
            "/x/y/z/",
            "/x/",
            "/long/prefix/here/",
            "/a/b/",
            "/a/b/c/",
            "/q",
            "/api/v2/",
            "/api/v1/items/special/",
            "/api",
        ];
        let mut indexed: Router<usize> = Router::default();
        for (i, p) in prefixes.iter().enumerate() {
            indexed.add(None, p, i);
        }
        indexed.add(None, "/api/", 99); // a duplicate: the first one wins
        assert!(!indexed.any.by_length.is_empty(), "the group is indexed");
        let scan = |path: &str| {
            let mut best: Option<(usize, usize)> = None;
            for (i, p) in prefixes.iter().enumerate() {
                if path.starts_with(p) && best.is_none_or(|(len, _)| p.len() > len) {
                    best = Some((p.len(), i));
                }
            }
            best.map(|(_, i)| i)
        };
        for path in [
            "/",
            "/a",
            "/abc",
            "/abc/d",
            "/api",
            "/api/",
            "/api/v1/items/7",
            "/api/v1/items/special/1",
            "/api/v2",
            "/é",
            "/éx/1",
            "/ê",
            "/static/img/a.png",
            "/x/y/z",
            "/x/y/z/w",
            "/long/prefix/her",
            "/q/r",
            "/zzz",
        ] {
            assert_eq!(indexed.find("h", path).copied(), scan(path), "{path}");
        }
        let mut no_root: Router<usize> = Router::default();
        for (i, p) in prefixes.iter().enumerate().skip(1) {
            no_root.add(None, p, i);
        }
        assert_eq!(no_root.find("h", "/zzz"), None);
    }

    #[test]
    fn no_route_is_none() {
        let mut r: Router<u8> = Router::default();
        r.add(None, "/api/", 1);
        assert_eq!(r.find("h", "/"), None);
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
        assert_eq!(normalize_host("plain"), "plain");
    }
}
