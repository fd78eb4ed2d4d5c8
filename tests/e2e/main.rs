//! End-to-end tests: the real edge binary in front of real backend servers, on loopback.

mod peers;
mod support;

mod acme;
mod balancing;
mod check;
mod clients;
mod deployment;
mod discovery;
mod explain;
mod failover;
mod grpc;
mod h2c;
mod h3;
mod headers;
mod health;
mod hostile;
mod http2;
mod import_nginx;
mod limits;
mod observe;
mod ocsp;
mod policy;
mod pools;
mod ratelimit;
mod reload;
mod routing;
mod slow_clients;
mod status_page;
mod tls;
mod upstream_tls;
mod websocket;
