//! Realistic stand-ins for the AquaScene Content Engine backend services that the edge proxy routes to.
//!
//! Each service is a small hyper 1 server (HTTP/1.1 with keep-alive, plus h2c) that answers
//! `GET /health` in the architecture document's format, exposes Prometheus metrics on
//! `GET /metrics`, echoes every other request back as JSON (tunable with query parameters) and
//! echoes WebSocket messages. Start one in-process with [`spawn`] or [`serve`].

mod catalog;
mod handler;
mod health;
mod metrics;
mod server;
mod state;
mod ws;

pub use catalog::{find_service, ServiceInfo, CATALOG};
pub use health::HealthOverride;
pub use server::{serve, spawn, RunningService, ServiceSpec};
