//! `GET /metrics`: the Prometheus exposition. The per-request series come from
//! [`crate::observe::metrics`]; the state that lives in atomics elsewhere (servers, zones,
//! reloads, connections) is read now, from the running snapshot and the reload stats.

use crate::observe::metrics::METRICS;
use crate::reload::ReloadStats;
use crate::snapshot::Snapshot;
use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::atomic::Ordering;

/// The whole exposition: request metrics plus state read now from the snapshot and stats.
pub fn render(snapshot: &Snapshot, reloads: &ReloadStats) -> String {
    // Over 100 lines: one block per metric family, in exposition order (#16's Collector
    // rewrite is to replace it).
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
    for (listener, count) in crate::observe::connections::open_now() {
        open.with_label_values(&[listener.as_str()]).set(count);
    }
    counter(
        "edge_client_connections_refused_total",
        "Connections refused because their client held max_connections_per_client",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(crate::observe::connections::REFUSED.load(Ordering::Relaxed));
    counter(
        "edge_client_header_timeouts_total",
        "Connections closed because a request head took longer than client_header_timeout",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(crate::observe::connections::HEADER_TIMEOUTS.load(Ordering::Relaxed));
    counter(
        "edge_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind",
        &[],
    )
    .with_label_values::<&str>(&[])
    .inc_by(crate::observe::access_log::dropped());
    ocsp(&gauge, &counter);
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

/// `edge_ocsp_*`: each certificate's stapling (ocsp.rs).
fn ocsp(
    gauge: &dyn Fn(&str, &str, &[&str]) -> IntGaugeVec,
    counter: &dyn Fn(&str, &str, &[&str]) -> IntCounterVec,
) {
    let stats = crate::ocsp::STATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if stats.is_empty() {
        return;
    }
    let labels = &["certificate"];
    let stapled = gauge(
        "edge_ocsp_stapled",
        "1 while a verified OCSP response is stapled",
        labels,
    );
    let success = gauge(
        "edge_ocsp_last_success_timestamp_seconds",
        "When the last good OCSP response was fetched (Unix seconds; 0: never)",
        labels,
    );
    let next = gauge(
        "edge_ocsp_next_update_timestamp_seconds",
        "When the stapled OCSP response expires (its nextUpdate; 0: none stapled)",
        labels,
    );
    let failures = counter(
        "edge_ocsp_fetch_failures_total",
        "OCSP fetches that failed (unreachable responder, bad or unverifiable answer)",
        labels,
    );
    let revoked = counter(
        "edge_ocsp_revoked_total",
        "OCSP answers that said the certificate is revoked",
        labels,
    );
    for (cert, s) in &stats {
        let l = [cert.as_str()];
        stapled.with_label_values(&l).set(i64::from(s.stapled));
        success.with_label_values(&l).set(s.last_success);
        next.with_label_values(&l).set(s.next_update);
        failures.with_label_values(&l).inc_by(s.failures);
        revoked.with_label_values(&l).inc_by(s.revoked);
    }
}
