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
