//! Realistic stand-ins for the AquaScene Content Engine backend services that the edge proxy routes to.
//!
//! Each service is a small hyper 1 server (HTTP/1.1 with keep-alive, plus h2c) that answers
//! `GET /health` in the content engine's format (docs/context.md), exposes Prometheus metrics on
//! `GET /metrics`, echoes every other request back as JSON (tunable with query parameters) and
//! echoes WebSocket messages. Start one in-process with [`spawn`] or [`serve`].
//!
//! Layers, each importing only from its own layer or from below:
//!
//! ```text
//! server             serving: the accept loop, graceful shutdown, the in-process handle
//! handler, ws        one request: routing, the echo; the WebSocket echo
//! ctx, health        what a handler gets and the plain answers; the /health report
//! state              a service's shared state: counters, health override, metrics
//! metrics            Prometheus metrics
//! catalog, spec      leaves: the services there are; what a service is told
//! ```

mod catalog;
mod ctx;
mod handler;
mod health;
mod metrics;
mod server;
mod spec;
mod state;
mod ws;

pub use catalog::{find_service, ServiceInfo, CATALOG};
pub use server::{listen, serve, spawn, RunningService};
pub use spec::{HealthOverride, ServiceSpec};
