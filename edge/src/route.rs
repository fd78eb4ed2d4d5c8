//! Routing: `Router::find(host, path)` picks the route for a request.
//!
//! Routes are grouped by host: an exact host beats a `*.domain` wildcard, which beats routes
//! for any host; within the first group that has a match, the longest path prefix wins (as an
//! nginx `server_name` picks the server block, then the longest prefix `location`).

use std::collections::HashMap;

/// One group of routes, longest prefix first.
#[derive(Debug, Default)]
struct Prefixes<T> {
    entries: Vec<(String, T)>,
}

impl<T> Prefixes<T> {
    fn insert(&mut self, prefix: String, value: T) {
        let at = self
            .entries
            .partition_point(|(p, _)| p.len() >= prefix.len());
        self.entries.insert(at, (prefix, value));
    }

    fn find(&self, path: &str) -> Option<&T> {
        self.entries
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, v)| v)
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
            any: Prefixes {
                entries: Vec::new(),
            },
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
                            self.wildcard.insert(
                                at,
                                (
                                    suffix.to_string(),
                                    Prefixes {
                                        entries: Vec::new(),
                                    },
                                ),
                            );
                            at
                        }
                    };
                    &mut self.wildcard[at].1
                }
                None => self.exact.entry(h.to_string()).or_insert_with(|| Prefixes {
                    entries: Vec::new(),
                }),
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
