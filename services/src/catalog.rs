//! The catalogue of backend services: names, default ports and the API prefixes the edge routes.

/// One backend service of the content engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Service name, e.g. `content-manager`.
    pub name: &'static str,
    /// The port it listens on by default.
    pub port: u16,
    /// The path prefix the edge routes to it, e.g. `/api/content/`.
    pub api_prefix: &'static str,
}

/// Every backend service, in the order of docs/context.md.
pub const CATALOG: &[ServiceInfo] = &[
    ServiceInfo {
        name: "content-manager",
        port: 8000,
        api_prefix: "/api/content/",
    },
    ServiceInfo {
        name: "ai-processor",
        port: 8001,
        api_prefix: "/api/ai/",
    },
    ServiceInfo {
        name: "web-scraper",
        port: 8002,
        api_prefix: "/api/scraper/",
    },
    ServiceInfo {
        name: "distributor",
        port: 8003,
        api_prefix: "/api/distribution/",
    },
    ServiceInfo {
        name: "subscriber-manager",
        port: 8004,
        api_prefix: "/api/subscribers/",
    },
    ServiceInfo {
        name: "admin-dashboard",
        port: 3000,
        api_prefix: "/",
    },
];

/// Looks a service up in [`CATALOG`] by name.
pub fn find_service(name: &str) -> Option<&'static ServiceInfo> {
    CATALOG.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        assert_eq!(CATALOG.len(), 6);
        for (i, a) in CATALOG.iter().enumerate() {
            assert!(a.api_prefix.starts_with('/') && a.api_prefix.ends_with('/'));
            for b in &CATALOG[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.port, b.port);
            }
        }
        assert_eq!(find_service("distributor").map(|s| s.port), Some(8003));
        assert!(find_service("nope").is_none());
    }
}
