//! One request's context: what it carries from phase to phase (its snapshot, client, route,
//! the servers tried, timings), and what follows from it alone (forwarding headers, HSTS).
//! The phases ([`crate::proxy`], [`crate::forward`], [`crate::respond`],
//! [`crate::websocket`]) take it from here.

use crate::client::IpText;
use crate::observe::metrics::METRICS;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::{Attempts, InFlightGuard};
use http::{HeaderName, HeaderValue};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one request carries from phase to phase.
pub struct RequestCtx {
    /// The config this request started with; it keeps it to the end.
    pub snapshot: Arc<Snapshot>,
    pub request_id: crate::client::RequestId,
    /// The client as the limits, allow lists and ip_hash see it.
    pub client_ip: IpAddr,
    /// The socket peer (what X-Forwarded-For is extended with).
    pub peer_ip: IpAddr,
    pub tls: bool,
    pub route: Option<Arc<Route>>,
    /// Servers tried for this request.
    pub attempts: Attempts,
    /// The server in use, counted in flight while held.
    pub server: Option<(usize, InFlightGuard)>,
    /// The request reached its upstream (a server was sought); false when the edge answered
    /// it itself (403, 413, 429, a redirect, ...).
    pub went_upstream: bool,
    /// The upstream's response header has arrived: no more retries.
    pub response_started: bool,
    /// When the request started, and when its current upstream attempt started.
    pub started: Instant,
    pub upstream_started: Option<Instant>,
    /// How long the upstream took to answer (its response header).
    pub upstream_elapsed: Option<Duration>,
    /// The rate-limit outcome, for the access log.
    pub limit: Option<std::borrow::Cow<'static, str>>,
    /// A gRPC call (`content-type: application/grpc*` over HTTP/2): what the edge answers
    /// itself is a gRPC status, and its body streams both ways.
    pub grpc: bool,
    /// The request came in TLS early data (0-RTT, HTTP/3): it may be a replay, and says so
    /// upstream (`Early-Data: 1`).
    pub early_data: bool,
    /// The protocol the last attempt spoke to its server, for the access log.
    pub upstream_protocol: Option<&'static str>,
    _in_flight: InFlight,
}

/// Counts a request in `edge_requests_in_flight` while it lives (on the stripe it began on).
struct InFlight(usize);

impl InFlight {
    fn new() -> InFlight {
        InFlight(METRICS.request_began())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.request_ended(self.0);
    }
}

impl RequestCtx {
    /// A request starting now on `snapshot`, counted in flight until it is dropped.
    pub fn new(snapshot: Arc<Snapshot>) -> RequestCtx {
        RequestCtx {
            snapshot,
            request_id: crate::client::RequestId::default(),
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peer_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            tls: false,
            route: None,
            attempts: Attempts::default(),
            server: None,
            went_upstream: false,
            response_started: false,
            started: Instant::now(),
            upstream_started: None,
            upstream_elapsed: None,
            limit: None,
            grpc: false,
            early_data: false,
            upstream_protocol: None,
            _in_flight: InFlight::new(),
        }
    }

    /// The headers the edge sets on a request it forwards: `X-Forwarded-For` (the client's
    /// `prior` value with the socket peer appended), `X-Real-IP`, `X-Forwarded-Proto` and
    /// `X-Request-Id`. Built as header values directly: this runs for every request.
    pub fn forwarding_headers(
        &self,
        prior: Option<&HeaderValue>,
    ) -> [(HeaderName, HeaderValue); 4] {
        let mut peer = IpText::default();
        let peer = peer.format(self.peer_ip);
        let forwarded_for = match prior {
            Some(p) => {
                let mut v = Vec::with_capacity(p.len() + 2 + peer.len());
                v.extend_from_slice(p.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(peer);
                header_value(&v)
            }
            None => header_value(peer),
        };
        let mut client = IpText::default();
        [
            (X_FORWARDED_FOR, forwarded_for),
            (X_REAL_IP, header_value(client.format(self.client_ip))),
            (
                X_FORWARDED_PROTO,
                HeaderValue::from_static(if self.tls { "https" } else { "http" }),
            ),
            (X_REQUEST_ID, self.request_id_value()),
        ]
    }

    /// The fields of [`Self::forwarding_headers`] written straight into an HTTP/1.1 head:
    /// the same values, made on the stack (no `HeaderValue` for each).
    pub fn write_forwarding(&self, prior: Option<&HeaderValue>, out: &mut Vec<u8>) {
        let mut peer = IpText::default();
        let peer = peer.format(self.peer_ip);
        match prior {
            Some(p) => crate::upstream::h1::write_field_parts(
                out,
                &X_FORWARDED_FOR,
                &[p.as_bytes(), b", ", peer],
            ),
            None => crate::upstream::h1::write_field(out, &X_FORWARDED_FOR, peer),
        }
        // The client is the peer unless a trusted proxy named another: written once then.
        let mut client = IpText::default();
        let client = if self.client_ip == self.peer_ip {
            peer
        } else {
            client.format(self.client_ip)
        };
        crate::upstream::h1::write_field(out, &X_REAL_IP, client);
        let proto: &[u8] = if self.tls { b"https" } else { b"http" };
        crate::upstream::h1::write_field(out, &X_FORWARDED_PROTO, proto);
        crate::upstream::h1::write_field(out, &X_REQUEST_ID, self.request_id.as_bytes());
    }

    /// The request id as a header value (sent upstream and back to the client).
    pub fn request_id_value(&self) -> HeaderValue {
        header_value(self.request_id.as_bytes())
    }

    /// The Strict-Transport-Security value for this request's responses: the configured one
    /// on TLS connections, none on plain HTTP.
    pub fn hsts_value(&self) -> Option<&str> {
        match (&self.snapshot.config.tls, self.tls) {
            (Some(tls), true) => tls.hsts.as_deref(),
            _ => None,
        }
    }

    /// [`RequestCtx::hsts_value`] as the field value the snapshot holds.
    pub fn hsts_header(&self) -> Option<HeaderValue> {
        self.snapshot.hsts.clone().filter(|_| self.tls)
    }

    /// The `Alt-Svc` value for this request's responses: on TLS connections, while the
    /// QUIC listener is up.
    pub fn alt_svc(&self) -> Option<Arc<HeaderValue>> {
        if self.tls {
            ALT_SVC.load_full()
        } else {
            None
        }
    }

    /// The fields of the edge's own answers on TLS connections (none on plain HTTP):
    /// Strict-Transport-Security and, while the QUIC listener is up, `Alt-Svc`.
    pub fn https_fields(&self) -> Vec<(&'static str, String)> {
        let hsts = self
            .hsts_value()
            .map(|v| ("strict-transport-security", v.to_string()));
        let alt_svc = self
            .alt_svc()
            .and_then(|v| v.to_str().ok().map(|v| ("alt-svc", v.to_string())));
        hsts.into_iter().chain(alt_svc).collect()
    }
}

/// What TLS responses advertise while a QUIC listener is up ([`advertise_http3`]).
static ALT_SVC: arc_swap::ArcSwapOption<HeaderValue> = arc_swap::ArcSwapOption::const_empty();

/// HTTP/3 at UDP `port` is advertised on TLS responses from now on (`Alt-Svc`, a day), or no
/// longer with `None`.
pub fn advertise_http3(port: Option<u16>) {
    ALT_SVC.store(port.map(|port| {
        Arc::new(HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).expect("ascii"))
    }));
}

// The names of the forwarding headers, as constants: a name built from a string is parsed,
// and one that is not a standard header is copied into an allocation, each time.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The fields the edge sets on every request it forwards (a client's own are replaced).
pub const FORWARDING: [HeaderName; 4] =
    [X_FORWARDED_FOR, X_REAL_IP, X_FORWARDED_PROTO, X_REQUEST_ID];

/// A header value from bytes that came from a valid header value or that the edge wrote (an
/// address, a request id); anything else would be a bug, and is sent as empty.
fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}
