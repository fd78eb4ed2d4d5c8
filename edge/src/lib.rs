//! edge: a Pingora-based gateway that replaces the AquaScene Content Engine's Nginx edge.
//!
//! A request goes accept ▸ route match ▸ allow ▸ upstream select ▸ proxy, reading one
//! [`snapshot::Snapshot`] (routes, upstreams) that a reload swaps atomically. The request's
//! path is [`proxy`]; config loading is [`config`] (file ▸ validate ▸ model) and
//! [`snapshot`] (compile); balancing and passive health are [`upstream`]; the admin
//! endpoints are [`admin`].

pub mod admin;
pub mod client;
pub mod compress;
pub mod config;
pub mod discovery;
pub mod forward;
pub mod gate;
pub mod health;
pub mod listen;
pub mod observe;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod request;
pub mod respond;
pub mod route;
pub mod server;
pub mod signals;
pub mod snapshot;
pub mod tls;
pub mod units;
pub mod upstream;
pub mod websocket;
