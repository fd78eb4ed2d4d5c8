//! Prometheus metrics, prefixed `edge_`, labelled in the config's own words.
//!
//! Per-request series are pre-resolved handles on each compiled route (no label lookup per
//! request); state that lives in atomics elsewhere (servers, zones, reloads) is read when
//! `/metrics` is scraped ([`crate::scrape`]).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use std::sync::{LazyLock, OnceLock};

/// Latency buckets from 1 ms to 300 s (the AI processor's read timeout).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// The process-wide request metrics.
pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    pub in_flight: IntGauge,
    retries: IntCounterVec,
    client_closed: IntCounterVec,
    /// `edge_client_requests_total{protocol}`, one handle per protocol.
    by_protocol: [IntCounter; 4],
}

/// The protocols a client may speak, in [`protocol_name`]'s words.
const PROTOCOLS: [&str; 4] = ["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/3"];

/// What a client spoke, as the access log and `edge_client_requests_total` name it.
pub fn protocol_name(version: http::Version) -> &'static str {
    PROTOCOLS[protocol_index(version)]
}

fn protocol_index(version: http::Version) -> usize {
    match version {
        http::Version::HTTP_09 | http::Version::HTTP_10 => 0,
        http::Version::HTTP_2 => 2,
        http::Version::HTTP_3 => 3,
        _ => 1,
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "edge_requests_total",
                "Requests by route, upstream, method and status class",
            ),
            &["route", "upstream", "method", "status_class"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "edge_request_duration_seconds",
                "Time from request to response end",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "edge_upstream_response_duration_seconds",
                "Time from choosing a server to its response header",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("edge_requests_in_flight", "Requests being served")
            .expect("valid metric");
        let retries = IntCounterVec::new(
            Opts::new(
                "edge_upstream_retries_total",
                "Requests moved to another server",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let client_closed = IntCounterVec::new(
            Opts::new(
                "edge_client_closed_requests_total",
                "Requests whose client closed the connection before the response was complete (logged as 499)",
            ),
            &["route"],
        )
        .expect("valid metric");
        let protocols = IntCounterVec::new(
            Opts::new(
                "edge_client_requests_total",
                "Requests by the protocol the client spoke",
            ),
            &["protocol"],
        )
        .expect("valid metric");
        let by_protocol = PROTOCOLS.map(|p| protocols.with_label_values(&[p]));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(protocols),
            Box::new(client_closed.clone()),
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(retries.clone()),
            Box::new(super::connections::TLS_HANDSHAKES.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            in_flight,
            retries,
            client_closed,
            by_protocol,
        }
    }

    /// Counts a request by the protocol its client spoke.
    pub fn client_request(&self, version: http::Version) {
        self.by_protocol[protocol_index(version)].inc();
    }

    /// Counts a request whose client left before its response was complete.
    pub fn client_closed(&self, route: &str) {
        self.client_closed.with_label_values(&[route]).inc();
    }

    pub fn retry(&self, upstream: &str) {
        self.retries.with_label_values(&[upstream]).inc();
    }
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A route's pre-resolved series.
pub struct RouteMetrics {
    route: String,
    upstream: String,
    requests: [[OnceLock<IntCounter>; 5]; 8],
    duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish()
    }
}

impl RouteMetrics {
    pub fn new(route: &str, upstream: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            upstream: upstream.to_string(),
            requests: Default::default(),
            duration: OnceLock::new(),
            upstream_duration: OnceLock::new(),
        }
    }

    /// Counts a finished request.
    pub fn observe(&self, method: &http::Method, status: u16, seconds: f64) {
        let m = METHODS
            .iter()
            .position(|name| *name == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[m][class]
            .get_or_init(|| {
                METRICS.requests.with_label_values(&[
                    self.route.as_str(),
                    self.upstream.as_str(),
                    METHODS[m],
                    CLASSES[class],
                ])
            })
            .inc();
        self.duration
            .get_or_init(|| {
                METRICS
                    .request_duration
                    .with_label_values(&[self.route.as_str()])
            })
            .observe(seconds);
    }

    /// Records how long the upstream took to answer.
    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream_duration
            .get_or_init(|| {
                METRICS
                    .upstream_duration
                    .with_label_values(&[self.upstream.as_str()])
            })
            .observe(seconds);
    }
}

/// Requests per route name since start, [all, 5xx], for `/status`.
pub fn route_counts() -> std::collections::HashMap<String, [u64; 2]> {
    let mut counts = std::collections::HashMap::new();
    for family in prometheus::core::Collector::collect(&METRICS.requests) {
        for metric in family.get_metric() {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let value = metric.get_counter().value() as u64;
            let entry: &mut [u64; 2] = counts.entry(label("route")).or_default();
            entry[0] += value;
            if label("status_class") == "5xx" {
                entry[1] += value;
            }
        }
    }
    counts
}

/// Requests that matched no route.
pub static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new("none", "none"));
