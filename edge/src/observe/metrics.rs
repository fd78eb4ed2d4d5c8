//! Prometheus metrics, prefixed `edge_`, labelled in the config's own words.
//!
//! Per-request series are pre-resolved handles on each compiled route (no label lookup per
//! request); state that lives in atomics elsewhere (servers, zones, reloads) is read when
//! `/metrics` is scraped.

use crate::reload::ReloadStats;
use crate::snapshot::Snapshot;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::Ordering;
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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
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
        }
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

/// The whole exposition: request metrics plus state read now from the snapshot and stats.
pub fn render(snapshot: &Snapshot, reloads: &ReloadStats) -> String {
    let state = Registry::new();
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        state.register(Box::new(g.clone())).expect("unique metric");
        g
    };
    let counter = |name: &str, help: &str, labels: &[&str]| {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        state.register(Box::new(c.clone())).expect("unique metric");
        c
    };
    let inflight = gauge(
        "edge_upstream_inflight_requests",
        "Requests in flight per server (least_conn's view)",
        &["upstream", "server"],
    );
    let up = gauge(
        "edge_upstream_server_up",
        "1 when the server takes traffic (active and passive health allow it)",
        &["upstream", "server"],
    );
    let health = gauge(
        "edge_upstream_server_health",
        "1 when this health check lets the server take traffic",
        &["upstream", "server", "check"],
    );
    let healthy = gauge(
        "edge_upstream_healthy_servers",
        "Servers of the upstream that take traffic",
        &["upstream"],
    );
    let failures = counter(
        "edge_upstream_failures_total",
        "Connect errors, timeouts and broken responses per server",
        &["upstream", "server"],
    );
    for (name, u) in &snapshot.upstreams {
        let mut usable = 0;
        for s in &u.servers {
            let labels = [name.as_str(), s.label.as_str()];
            inflight
                .with_label_values(&labels)
                .set(s.state.inflight.load(Ordering::Relaxed) as i64);
            let is_up = s.is_up();
            usable += i64::from(is_up);
            up.with_label_values(&labels).set(i64::from(is_up));
            health
                .with_label_values(&[name.as_str(), s.label.as_str(), "active"])
                .set(i64::from(s.state.probe_up()));
            health
                .with_label_values(&[name.as_str(), s.label.as_str(), "passive"])
                .set(i64::from(s.passive_up()));
            failures
                .with_label_values(&labels)
                .inc_by(s.state.failures());
        }
        healthy.with_label_values(&[name.as_str()]).set(usable);
    }
    let limits = counter(
        "edge_ratelimit_requests_total",
        "Rate-limit decisions per zone",
        &["zone", "outcome"],
    );
    let fallbacks = counter(
        "edge_ratelimit_redis_fallbacks_total",
        "Checks answered without Redis",
        &["zone"],
    );
    for (name, z) in &snapshot.zones {
        let c = &z.counters;
        for (outcome, value) in [
            ("passed", &c.passed),
            ("delayed", &c.delayed),
            ("rejected", &c.rejected),
            ("dry_run_rejected", &c.dry_run_rejected),
        ] {
            limits
                .with_label_values(&[name.as_str(), outcome])
                .inc_by(value.load(Ordering::Relaxed));
        }
        fallbacks
            .with_label_values(&[name.as_str()])
            .inc_by(c.redis_fallbacks.load(Ordering::Relaxed));
    }
    let reload_total = counter(
        "edge_config_reloads_total",
        "Config reloads by result",
        &["result"],
    );
    reload_total
        .with_label_values(&["success"])
        .inc_by(reloads.succeeded.load(Ordering::Relaxed));
    reload_total
        .with_label_values(&["failure"])
        .inc_by(reloads.failed.load(Ordering::Relaxed));
    gauge(
        "edge_config_last_reload_success_timestamp_seconds",
        "When the running config was loaded",
        &[],
    )
    .with_label_values::<&str>(&[])
    .set(reloads.last_success_unix.load(Ordering::Relaxed) as i64);
    gauge("edge_config_info", "The running config's hash", &["hash"])
        .with_label_values(&[
            format!("{:016x}", reloads.config_hash.load(Ordering::Relaxed)).as_str(),
        ])
        .set(1);
    let open = gauge(
        "edge_client_connections",
        "Client connections open now, by listener",
        &["listener"],
    );
    for (listener, count) in super::connections::open_now() {
        open.with_label_values(&[listener.as_str()]).set(count);
    }
    counter(
        "edge_client_connections_refused_total",
        "Connections refused because their client held max_connections_per_client",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(super::connections::REFUSED.load(Ordering::Relaxed));
    counter(
        "edge_client_header_timeouts_total",
        "Connections closed because a request head took longer than client_header_timeout",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(crate::gate::HEADER_TIMEOUTS.load(Ordering::Relaxed));
    counter(
        "edge_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(super::access_log::dropped());
    gauge("edge_build_info", "The edge's version", &["version"])
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);

    let mut families = METRICS.registry.gather();
    families.extend(state.gather());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
