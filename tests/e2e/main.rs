//! End-to-end tests: the real edge binary in front of real backend servers, on loopback.

mod support;

mod balancing;
mod check;
mod failover;
mod headers;
mod ratelimit;
mod routing;
mod websocket;
