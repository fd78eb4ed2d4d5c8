//! edge: the AquaScene Content Engine's edge gateway, in place of its Nginx edge.
//!
//! A request goes accept ([`listen`]) ▸ TLS ▸ the connection gate ([`gate`]: its clocks,
//! limits, the HTTP/1 loop or an HTTP/2 connection's streams) ▸ the request's path
//! ([`proxy`]: head checks ([`request`]), route, allow, rate limit, then [`forward`]: body,
//! server, kept-alive connection, answer, retries, a websocket's tunnel) ▸ log and metrics,
//! reading one [`snapshot::Snapshot`] (routes, upstreams, zones) that a reload swaps
//! atomically. The client side is the edge's own: an HTTP/1 session ([`downstream::h1`]) and
//! HTTP/2 streams on the h2 crate ([`downstream::h2`]), the phases written once for both;
//! toward servers there is one client ([`upstream::client`], [`upstream::h1`]), which the
//! health probes, OCSP fetches and the CLI use too.
//!
//! What the edge takes from Pingora: the process (its `Server`: worker threads, one
//! single-threaded runtime each, daemon-less signals, the graceful binary upgrade that hands
//! the listening sockets to a successor), the TLS acceptor on rustls, the `Stream` type that
//! TLS and plain connections share, and its timer wheel for the request bodies' timeouts.
//! Its HTTP sessions and proxy pipeline are not used.
//!
//! Layers, each importing only from its own layer or from below (the `layering` test reads
//! this table):
//!
//! ```text
//! server, admin, scrape, reload,     the process: wiring, the admin listener, config swaps,
//!   explain, health                    side systems, what the edge would do with a request
//! listen, gate, quic                 client connections: accept, TLS, QUIC, clocks, the loop
//! proxy, forward, ctx, request,      one request: its context, checks, answers, the phases,
//!   respond, websocket, downstream     and the client sessions it runs on
//! snapshot                           the compiled config, one ArcSwap
//! route, upstream, ratelimit, tls,   runtime parts
//!   ocsp, discovery, compress, acme
//! config, observe                    file ▸ validate ▸ model; counters, access log
//! units, clock, client, signals,     leaf helpers
//!   der, tcp, chunked, grpc, window,
//!   stripe, spare, held
//! ```

pub mod acme;
pub mod admin;
pub mod chunked;
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
pub mod grpc;
pub mod health;
pub mod held;
pub mod listen;
pub mod observe;
pub mod ocsp;
pub mod proxy;
pub mod quic;
pub mod ratelimit;
pub mod reload;
pub mod request;
pub mod respond;
pub mod route;
pub mod scrape;
pub mod server;
pub mod signals;
pub mod snapshot;
pub mod spare;
pub mod stripe;
pub mod tcp;
pub mod tls;
pub use edge_syntax::units;
pub mod upstream;
pub mod websocket;
pub mod window;
