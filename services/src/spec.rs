//! What a service is told: its name, instance, version and the dependencies its `/health`
//! checks, and the health it is set to report. A leaf: it imports nothing of the crate.

/// What a service is and which dependencies its `/health` checks.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Service name, e.g. `content-manager`.
    pub name: String,
    /// Identifies this process or instance in responses, e.g. `cm-1`.
    pub instance: String,
    /// Version reported by `/health` and `service_info`.
    pub version: String,
    /// `(check name, "host:port")` pairs, e.g. `("database", "127.0.0.1:5432")`, each checked
    /// by a TCP connect with a 2 s timeout.
    pub dependencies: Vec<(String, String)>,
}

impl ServiceSpec {
    /// A spec with this crate's version and no dependencies.
    pub fn new(name: &str, instance: &str) -> Self {
        Self {
            name: name.to_owned(),
            instance: instance.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            dependencies: Vec::new(),
        }
    }
}

/// Forces what `/health` reports, for testing active health checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthOverride {
    /// Report the status the dependency checks give.
    Auto,
    /// Always report `healthy` (HTTP 200).
    Healthy,
    /// Always report `degraded` (HTTP 200).
    Degraded,
    /// Always report `unhealthy` (HTTP 503).
    Unhealthy,
}

impl HealthOverride {
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Self::Auto => 0,
            Self::Healthy => 1,
            Self::Degraded => 2,
            Self::Unhealthy => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Healthy,
            2 => Self::Degraded,
            3 => Self::Unhealthy,
            _ => Self::Auto,
        }
    }
}
