//! Prometheus metrics, prefixed `edge_`, labelled in the config's own words.
//!
//! Per-request series are pre-resolved handles on each compiled route (no label lookup per
//! request), and striped ([`crate::stripe`]): each is one series per stripe, a thread counts
//! in its own, and a scrape sums them into the one series it shows. State that lives in
//! atomics elsewhere (servers, zones, reloads) is read when `/metrics` is scraped
//! ([`crate::scrape`]).

use crate::stripe::{self, STRIPES};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily};
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
    requests: Striped<IntCounterVec>,
    request_duration: Striped<HistogramVec>,
    upstream_duration: Striped<HistogramVec>,
    /// `edge_requests_in_flight`, a gauge per stripe.
    in_flight: Striped<IntGauge>,
    retries: IntCounterVec,
    client_closed: IntCounterVec,
    /// `edge_client_requests_total{protocol}`, one handle per protocol and stripe.
    by_protocol: [[IntCounter; STRIPES]; 4],
}

/// A metric kept as one copy per stripe (each its own allocation, so its own cache lines),
/// shown as one: a scrape sums the copies' series that have the same labels (counters,
/// gauges, and histograms bucket by bucket).
#[derive(Clone)]
pub struct Striped<M> {
    copies: [M; STRIPES],
}

impl<M> Striped<M> {
    fn new(make: impl Fn() -> M) -> Striped<M> {
        Striped {
            copies: std::array::from_fn(|_| make()),
        }
    }
}

impl<M: Collector> Collector for Striped<M> {
    fn desc(&self) -> Vec<&Desc> {
        self.copies[0].desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.copies.iter().flat_map(|c| c.collect());
        let Some(mut family) = families.next() else {
            return Vec::new();
        };
        let mut series = family.take_metric();
        for mut other in families {
            for metric in other.take_metric() {
                match series
                    .iter_mut()
                    .find(|m| m.get_label() == metric.get_label())
                {
                    Some(known) => add(known, &metric),
                    None => series.push(metric),
                }
            }
        }
        family.set_metric(series);
        vec![family]
    }
}

/// Adds `from`'s values to `into`'s (a series of the same labels and family).
fn add(into: &mut Metric, from: &Metric) {
    if let (Some(a), Some(b)) = (into.counter.as_mut(), from.counter.as_ref()) {
        a.set_value(a.value() + b.value());
    }
    if let (Some(a), Some(b)) = (into.gauge.as_mut(), from.gauge.as_ref()) {
        a.set_value(a.value() + b.value());
    }
    if let (Some(a), Some(b)) = (into.histogram.as_mut(), from.histogram.as_ref()) {
        a.set_sample_count(a.sample_count() + b.sample_count());
        a.set_sample_sum(a.sample_sum() + b.sample_sum());
        for (bucket, more) in a.bucket.iter_mut().zip(&b.bucket) {
            bucket.set_cumulative_count(bucket.cumulative_count() + more.cumulative_count());
        }
    }
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
        let requests = Striped::new(|| {
            IntCounterVec::new(
                Opts::new(
                    "edge_requests_total",
                    "Requests by route, upstream, method and status class",
                ),
                &["route", "upstream", "method", "status_class"],
            )
            .expect("valid metric")
        });
        let request_duration = Striped::new(|| {
            HistogramVec::new(
                HistogramOpts::new(
                    "edge_request_duration_seconds",
                    "Time from request to response end",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route"],
            )
            .expect("valid metric")
        });
        let upstream_duration = Striped::new(|| {
            HistogramVec::new(
                HistogramOpts::new(
                    "edge_upstream_response_duration_seconds",
                    "Time from choosing a server to its response header",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["upstream"],
            )
            .expect("valid metric")
        });
        let in_flight = Striped::new(|| {
            IntGauge::new("edge_requests_in_flight", "Requests being served").expect("valid metric")
        });
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
        let protocols = Striped::new(|| {
            IntCounterVec::new(
                Opts::new(
                    "edge_client_requests_total",
                    "Requests by the protocol the client spoke",
                ),
                &["protocol"],
            )
            .expect("valid metric")
        });
        let by_protocol =
            PROTOCOLS.map(|p| std::array::from_fn(|s| protocols.copies[s].with_label_values(&[p])));
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
        self.by_protocol[protocol_index(version)][stripe::mine()].inc();
    }

    /// A request began (`edge_requests_in_flight`); the stripe to end it on.
    pub fn request_began(&self) -> usize {
        let stripe = stripe::mine();
        self.in_flight.copies[stripe].inc();
        stripe
    }

    /// A request that began on `stripe` ended.
    pub fn request_ended(&self, stripe: usize) {
        self.in_flight.copies[stripe].dec();
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
    requests: [[OnceLock<[IntCounter; STRIPES]>; 5]; 8],
    duration: OnceLock<[Histogram; STRIPES]>,
    upstream_duration: OnceLock<[Histogram; STRIPES]>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish()
    }
}

impl RouteMetrics {
    /// A route's series; its two counters of rare events (a client that left, a request
    /// moved to another server) shown at 0 from the start, not only from their first count
    /// (an absent series is no rate to alert on).
    pub fn new(route: &str, upstream: &str) -> RouteMetrics {
        METRICS.client_closed.with_label_values(&[route]);
        METRICS.retries.with_label_values(&[upstream]);
        RouteMetrics::bare(route, upstream)
    }

    /// A route's series, none made before its first count.
    fn bare(route: &str, upstream: &str) -> RouteMetrics {
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
        let stripe = stripe::mine();
        self.requests[m][class].get_or_init(|| {
            std::array::from_fn(|s| {
                METRICS.requests.copies[s].with_label_values(&[
                    self.route.as_str(),
                    self.upstream.as_str(),
                    METHODS[m],
                    CLASSES[class],
                ])
            })
        })[stripe]
            .inc();
        self.duration.get_or_init(|| {
            std::array::from_fn(|s| {
                METRICS.request_duration.copies[s].with_label_values(&[self.route.as_str()])
            })
        })[stripe]
            .observe(seconds);
    }

    /// Records how long the upstream took to answer.
    pub fn observe_upstream(&self, seconds: f64) {
        self.upstream_duration.get_or_init(|| {
            std::array::from_fn(|s| {
                METRICS.upstream_duration.copies[s].with_label_values(&[self.upstream.as_str()])
            })
        })[stripe::mine()]
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
pub static UNROUTED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::bare("none", "none"));

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(family: &'a MetricFamily, label: &str) -> &'a Metric {
        family
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == label)
            .expect("a series")
    }

    /// A route's rare-event counters are there at 0 before anything counted.
    #[test]
    fn a_routes_client_closed_and_retry_counters_start_at_zero() {
        let _route = RouteMetrics::new("/zero/", "zero_upstream");
        let families = METRICS.registry.gather();
        let zero = |name: &str, label: &str| {
            let family = families
                .iter()
                .find(|f| f.name() == name)
                .unwrap_or_else(|| panic!("no {name}"));
            value(family, label).get_counter().value()
        };
        assert_eq!(zero("edge_client_closed_requests_total", "/zero/"), 0.0);
        assert_eq!(zero("edge_upstream_retries_total", "zero_upstream"), 0.0);
    }

    /// Counts made on any stripe, by any thread, show as one series per label set.
    #[test]
    fn a_striped_metric_shows_one_series_summing_every_copy() {
        let counters =
            Striped::new(|| IntCounterVec::new(Opts::new("t_total", "t"), &["l"]).expect("metric"));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    counters.copies[stripe::mine()]
                        .with_label_values(&["a"])
                        .inc_by(5)
                });
            }
        });
        counters.copies[0].with_label_values(&["b"]).inc();
        counters.copies[STRIPES - 1].with_label_values(&["a"]).inc();
        let families = counters.collect();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].get_metric().len(), 2, "{families:?}");
        assert_eq!(value(&families[0], "a").get_counter().value(), 21.0);
        assert_eq!(value(&families[0], "b").get_counter().value(), 1.0);

        let histograms = Striped::new(|| {
            HistogramVec::new(
                HistogramOpts::new("t_seconds", "t").buckets(LATENCY_BUCKETS.to_vec()),
                &["l"],
            )
            .expect("metric")
        });
        histograms.copies[1]
            .with_label_values(&["a"])
            .observe(0.002);
        histograms.copies[5].with_label_values(&["a"]).observe(0.2);
        let families = histograms.collect();
        let histogram = value(&families[0], "a").get_histogram();
        assert_eq!(histogram.sample_count(), 2);
        assert!((histogram.sample_sum() - 0.202).abs() < 1e-9);
        let le = |bound: f64| {
            histogram
                .bucket
                .iter()
                .find(|b| b.upper_bound() == bound)
                .expect("bucket")
                .cumulative_count()
        };
        assert_eq!((le(0.001), le(0.0025), le(0.1), le(0.25)), (0, 1, 1, 2));

        // A request that ends on another stripe than it began on: the sum is still right.
        let gauges = Striped::new(|| IntGauge::new("t_in_flight", "t").expect("metric"));
        gauges.copies[2].inc();
        gauges.copies[2].inc();
        gauges.copies[6].dec();
        let families = gauges.collect();
        assert_eq!(families[0].get_metric().len(), 1);
        assert_eq!(families[0].get_metric()[0].get_gauge().value(), 1.0);
    }
}
