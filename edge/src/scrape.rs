//! `GET /metrics`: the Prometheus exposition. The per-request series come from
//! [`crate::observe::metrics`]; the state that lives in atomics elsewhere (servers, zones,
//! reloads, connections, OCSP) is a [`Collector`] registered once, which reads it at each
//! scrape from the running snapshot and the reload stats.

use crate::held;
use crate::observe::metrics::METRICS;
use crate::reload::Reloader;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// What `/metrics` answers: the request metrics and the scrape-time state.
pub struct Exposition {
    state: Registry,
}

impl Exposition {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>, reloader: Arc<Reloader>) -> Exposition {
        let state = Registry::new();
        state
            .register(Box::new(State::new(snapshot, reloader)))
            .expect("the state's metric names are unique and valid");
        Exposition { state }
    }

    /// The whole exposition, families in name order.
    pub fn render(&self) -> String {
        let mut families = METRICS.registry.gather();
        families.extend(self.state.gather());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The state read at scrape time. Its families are made once; a scrape resets them and fills
/// them from the state (so a server or zone that a reload removed leaves the exposition).
struct State {
    snapshot: Arc<ArcSwap<Snapshot>>,
    reloader: Arc<Reloader>,
    /// One scrape at a time fills the families.
    filling: Mutex<()>,
    f: Families,
}

struct Families {
    server_in_flight: IntGaugeVec,
    server_up: IntGaugeVec,
    server_health: IntGaugeVec,
    healthy_servers: IntGaugeVec,
    server_failures: IntCounterVec,
    zone_decisions: IntCounterVec,
    redis_fallbacks: IntCounterVec,
    reloads: IntCounterVec,
    last_applied: IntGaugeVec,
    config_info: IntGaugeVec,
    connections: IntGaugeVec,
    connections_refused: IntCounterVec,
    quic_retries: IntCounterVec,
    quic_handshakes: IntGaugeVec,
    header_timeouts: IntCounterVec,
    client_timeouts: IntCounterVec,
    log_dropped: IntCounterVec,
    build_info: IntGaugeVec,
    ocsp_stapled: IntGaugeVec,
    ocsp_last_success: IntGaugeVec,
    ocsp_next_update: IntGaugeVec,
    ocsp_failures: IntCounterVec,
    ocsp_revoked: IntCounterVec,
    acme_expiry: IntGaugeVec,
    acme_next_renewal: IntGaugeVec,
    acme_orders: IntCounterVec,
    acme_failures: IntCounterVec,
}

impl Families {
    fn new() -> Families {
        // Over 100 lines: one name, help and label set per family, nothing else.
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge")
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter")
        };
        let server = &["upstream", "server"];
        let certificate = &["certificate"];
        Families {
            server_in_flight: gauge(
                "edge_upstream_requests_in_flight",
                "Requests in flight per server (least_conn's view)",
                server,
            ),
            server_up: gauge(
                "edge_upstream_server_up",
                "1 when the server takes traffic (active and passive health allow it)",
                server,
            ),
            server_health: gauge(
                "edge_upstream_server_health",
                "1 when this health check lets the server take traffic",
                &["upstream", "server", "check"],
            ),
            healthy_servers: gauge(
                "edge_upstream_healthy_servers",
                "Servers of the upstream that take traffic",
                &["upstream"],
            ),
            server_failures: counter(
                "edge_upstream_failures_total",
                "Connect errors, timeouts and broken responses per server",
                server,
            ),
            zone_decisions: counter(
                "edge_ratelimit_requests_total",
                "Rate-limit decisions per zone",
                &["zone", "outcome"],
            ),
            redis_fallbacks: counter(
                "edge_ratelimit_redis_fallbacks_total",
                "Checks answered without Redis",
                &["zone"],
            ),
            reloads: counter(
                "edge_config_reloads_total",
                "Config reloads by result (applied or refused)",
                &["result"],
            ),
            last_applied: gauge(
                "edge_config_last_applied_timestamp_seconds",
                "When the running config was applied (at start or by a reload)",
                &[],
            ),
            config_info: gauge("edge_config_info", "The running config's hash", &["hash"]),
            connections: gauge(
                "edge_client_connections",
                "Client connections open now, by listener",
                &["listener"],
            ),
            connections_refused: counter(
                "edge_client_connections_refused_total",
                "Connections refused because their client held max_connections_per_client",
                &[],
            ),
            quic_retries: counter(
                "edge_quic_retries_total",
                "QUIC connection attempts sent a Retry to prove their address first",
                &[],
            ),
            quic_handshakes: gauge(
                "edge_quic_handshakes_in_progress",
                "QUIC handshakes under way now",
                &[],
            ),
            header_timeouts: counter(
                "edge_client_header_timeouts_total",
                "Connections closed because a request head took longer than client_header_timeout",
                &[],
            ),
            client_timeouts: counter(
                "edge_client_timeouts_total",
                "Client clocks that ran out, by phase: header (connections, as edge_client_header_timeouts_total), body (client_body_timeout) and send (send_timeout) (requests)",
                &["phase"],
            ),
            log_dropped: counter(
                "edge_access_log_dropped_total",
                "Access log lines dropped because the writer fell behind",
                &[],
            ),
            build_info: gauge("edge_build_info", "The edge's version", &["version"]),
            ocsp_stapled: gauge(
                "edge_ocsp_stapled",
                "1 while a verified OCSP response is stapled",
                certificate,
            ),
            ocsp_last_success: gauge(
                "edge_ocsp_last_success_timestamp_seconds",
                "When the last good OCSP response was fetched (Unix seconds; 0: never)",
                certificate,
            ),
            ocsp_next_update: gauge(
                "edge_ocsp_next_update_timestamp_seconds",
                "When the stapled OCSP response expires (its nextUpdate; 0: none stapled)",
                certificate,
            ),
            ocsp_failures: counter(
                "edge_ocsp_fetch_failures_total",
                "OCSP fetches that failed (unreachable responder, bad or unverifiable answer)",
                certificate,
            ),
            ocsp_revoked: counter(
                "edge_ocsp_revoked_total",
                "OCSP answers that said the certificate is revoked",
                certificate,
            ),
            acme_expiry: gauge(
                "edge_acme_certificate_expiry_timestamp_seconds",
                "When the certificate ACME obtained for a name expires (Unix seconds; 0: none yet)",
                &["name"],
            ),
            acme_next_renewal: gauge(
                "edge_acme_next_renewal_timestamp_seconds",
                "When a name's certificate is next renewed, or ordered again after a failure (Unix seconds)",
                &["name"],
            ),
            acme_orders: counter(
                "edge_acme_orders_total",
                "ACME orders placed by this replica, by result (valid, failed)",
                &["result"],
            ),
            acme_failures: counter(
                "edge_acme_failures_total",
                "ACME attempts that failed, by step: account, order, challenge, finalize, store",
                &["reason"],
            ),
        }
    }

    fn gauges(&self) -> [&IntGaugeVec; 14] {
        [
            &self.acme_expiry,
            &self.acme_next_renewal,
            &self.quic_handshakes,
            &self.server_in_flight,
            &self.server_up,
            &self.server_health,
            &self.healthy_servers,
            &self.last_applied,
            &self.config_info,
            &self.connections,
            &self.build_info,
            &self.ocsp_stapled,
            &self.ocsp_last_success,
            &self.ocsp_next_update,
        ]
    }

    fn counters(&self) -> [&IntCounterVec; 13] {
        [
            &self.acme_orders,
            &self.acme_failures,
            &self.quic_retries,
            &self.server_failures,
            &self.zone_decisions,
            &self.redis_fallbacks,
            &self.reloads,
            &self.connections_refused,
            &self.header_timeouts,
            &self.client_timeouts,
            &self.log_dropped,
            &self.ocsp_failures,
            &self.ocsp_revoked,
        ]
    }
}

impl State {
    fn new(snapshot: Arc<ArcSwap<Snapshot>>, reloader: Arc<Reloader>) -> State {
        State {
            snapshot,
            reloader,
            filling: Mutex::new(()),
            f: Families::new(),
        }
    }

    fn fill(&self) {
        let f = &self.f;
        f.gauges().into_iter().for_each(IntGaugeVec::reset);
        f.counters().into_iter().for_each(IntCounterVec::reset);
        let snapshot = self.snapshot.load();
        for (name, u) in &snapshot.upstreams {
            let mut usable = 0;
            for s in &u.servers {
                let labels = [name.as_str(), s.label.as_str()];
                let in_flight = s.state.in_flight.load(Ordering::Relaxed);
                f.server_in_flight
                    .with_label_values(&labels)
                    .set(in_flight as i64);
                let is_up = s.is_up();
                usable += i64::from(is_up);
                f.server_up.with_label_values(&labels).set(i64::from(is_up));
                for (check, up) in [("active", s.state.probe_up()), ("passive", s.passive_up())] {
                    let labels = [name.as_str(), s.label.as_str(), check];
                    f.server_health
                        .with_label_values(&labels)
                        .set(i64::from(up));
                }
                f.server_failures
                    .with_label_values(&labels)
                    .inc_by(s.state.failures());
            }
            f.healthy_servers
                .with_label_values(&[name.as_str()])
                .set(usable);
        }
        for (name, z) in &snapshot.zones {
            let c = &z.counters;
            for (outcome, value) in [
                ("passed", &c.passed),
                ("delayed", &c.delayed),
                ("rejected", &c.rejected),
                ("dry_run_rejected", &c.dry_run_rejected),
            ] {
                let value = value.load(Ordering::Relaxed);
                f.zone_decisions
                    .with_label_values(&[name.as_str(), outcome])
                    .inc_by(value);
            }
            let fallbacks = c.redis_fallbacks.load(Ordering::Relaxed);
            f.redis_fallbacks
                .with_label_values(&[name.as_str()])
                .inc_by(fallbacks);
        }
        let reloads = &self.reloader.stats;
        f.reloads
            .with_label_values(&["applied"])
            .inc_by(reloads.applied.load(Ordering::Relaxed));
        f.reloads
            .with_label_values(&["refused"])
            .inc_by(reloads.refused.load(Ordering::Relaxed));
        let applied_at = reloads.last_applied_unix.load(Ordering::Relaxed);
        f.last_applied
            .with_label_values::<&str>(&[])
            .set(applied_at as i64);
        let hash = format!("{:016x}", reloads.config_hash.load(Ordering::Relaxed));
        f.config_info.with_label_values(&[hash.as_str()]).set(1);
        for (listener, count) in crate::observe::connections::open_now() {
            f.connections
                .with_label_values(&[listener.as_str()])
                .set(count);
        }
        use crate::observe::connections::{
            client_timeouts, TimeoutPhase, HEADER_TIMEOUTS, REFUSED,
        };
        f.connections_refused
            .with_label_values::<&str>(&[])
            .inc_by(REFUSED.load(Ordering::Relaxed));
        f.header_timeouts
            .with_label_values::<&str>(&[])
            .inc_by(HEADER_TIMEOUTS.load(Ordering::Relaxed));
        f.quic_retries
            .with_label_values::<&str>(&[])
            .inc_by(crate::quic::RETRIES.load(Ordering::Relaxed) as u64);
        f.quic_handshakes
            .with_label_values::<&str>(&[])
            .set(crate::quic::handshakes_in_progress() as i64);
        for phase in TimeoutPhase::ALL {
            f.client_timeouts
                .with_label_values(&[phase.name()])
                .inc_by(client_timeouts(phase).load(Ordering::Relaxed));
        }
        f.log_dropped
            .with_label_values::<&str>(&[])
            .inc_by(crate::observe::access_log::dropped());
        f.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        self.ocsp();
        self.acme();
    }

    /// `edge_acme_*`: each name's certificate and the orders of this replica; none without
    /// `[tls.acme]`.
    fn acme(&self) {
        let f = &self.f;
        let stats = held::lock(&crate::acme::STATS);
        if stats.names.is_empty() && stats.failures.is_empty() {
            return;
        }
        for (name, s) in &stats.names {
            let l = [name.as_str()];
            f.acme_expiry.with_label_values(&l).set(s.expires as i64);
            f.acme_next_renewal
                .with_label_values(&l)
                .set(s.next_renewal as i64);
        }
        for result in ["valid", "failed"] {
            let n = stats.orders.get(result).copied().unwrap_or(0);
            f.acme_orders.with_label_values(&[result]).inc_by(n);
        }
        for reason in crate::acme::FAILURE_REASONS {
            let n = stats.failures.get(reason).copied().unwrap_or(0);
            f.acme_failures.with_label_values(&[reason]).inc_by(n);
        }
    }

    /// `edge_ocsp_*`: each certificate's stapling (ocsp.rs); none without OCSP.
    fn ocsp(&self) {
        let f = &self.f;
        let stats = held::lock(&crate::ocsp::STATS).clone();
        for (cert, s) in &stats {
            let l = [cert.as_str()];
            f.ocsp_stapled
                .with_label_values(&l)
                .set(i64::from(s.stapled));
            f.ocsp_last_success
                .with_label_values(&l)
                .set(s.last_success);
            f.ocsp_next_update.with_label_values(&l).set(s.next_update);
            f.ocsp_failures.with_label_values(&l).inc_by(s.failures);
            f.ocsp_revoked.with_label_values(&l).inc_by(s.revoked);
        }
    }
}

impl Collector for State {
    fn desc(&self) -> Vec<&Desc> {
        let gauges = self.f.gauges().into_iter().flat_map(Collector::desc);
        gauges
            .chain(self.f.counters().into_iter().flat_map(Collector::desc))
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _one_scrape = held::lock(&self.filling);
        self.fill();
        let gauges = self.f.gauges().into_iter().flat_map(Collector::collect);
        gauges
            .chain(self.f.counters().into_iter().flat_map(Collector::collect))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(servers: &str) -> Snapshot {
        let text = format!(
            "[edge]\naccess_log = \"off\"\n[upstreams.app]\nservers = [{servers}]\n\
             [[routes]]\npath = \"/\"\nupstream = \"app\"\n"
        );
        let validated = crate::config::validate("t.toml", &text).expect("valid");
        Snapshot::compile("t.toml", validated.config, None)
    }

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(name)).collect()
    }

    #[test]
    fn a_scrape_reads_the_state_now_and_forgets_removed_servers() {
        let two = r#"{ addr = "127.0.0.1:1" }, { addr = "127.0.0.1:2" }"#;
        let live = Arc::new(ArcSwap::from_pointee(snapshot(two)));
        let reloader = Arc::new(Reloader::new(None, live.clone(), ""));
        let exposition = Exposition::new(live.clone(), reloader.clone());
        let first = live.load().upstreams["app"].servers[0].state.clone();
        first.in_flight.store(3, Ordering::Relaxed);
        reloader.stats.refused.store(2, Ordering::Relaxed);

        let text = exposition.render();
        let in_flight = lines_of(&text, "edge_upstream_requests_in_flight{");
        assert_eq!(in_flight.len(), 2, "{text}");
        assert!(
            text.contains(
                "edge_upstream_requests_in_flight{server=\"127.0.0.1:1\",upstream=\"app\"} 3"
            ),
            "{text}"
        );
        // Counters are the state's totals, however often scraped.
        for _ in 0..2 {
            let text = exposition.render();
            assert!(
                text.contains("edge_config_reloads_total{result=\"refused\"} 2"),
                "{text}"
            );
            assert!(
                text.contains("edge_config_reloads_total{result=\"applied\"} 0"),
                "{text}"
            );
        }

        // A reload that drops a server drops its series.
        live.store(Arc::new(snapshot(r#"{ addr = "127.0.0.1:2" }"#)));
        let text = exposition.render();
        let in_flight = lines_of(&text, "edge_upstream_requests_in_flight{");
        assert_eq!(in_flight.len(), 1, "{text}");
        assert!(in_flight[0].contains("127.0.0.1:2"), "{text}");
        // Families without series (no OCSP here) are left out rather than printed empty.
        assert!(!text.contains("edge_ocsp_stapled"), "{text}");
    }
}
