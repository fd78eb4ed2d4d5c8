//! Observability: Prometheus metrics, client connections, the JSON access log and the status
//! page.

pub mod access_log;
pub mod connections;
pub mod metrics;
