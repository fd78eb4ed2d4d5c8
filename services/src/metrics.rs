//! Prometheus metrics of one service, kept in its own registry.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::spec::ServiceSpec;

/// The metrics a service exports on `/metrics`.
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    pub(crate) active_connections: IntGauge,
    pub(crate) up: IntGauge,
}

impl Metrics {
    pub(crate) fn new(spec: &ServiceSpec) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let service = |opts: Opts| opts.const_label("service", spec.name.as_str());

        let requests = IntCounterVec::new(
            service(Opts::new(
                "service_requests_total",
                "Requests served, excluding /health and /metrics.",
            )),
            &["method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "service_request_duration_seconds",
                "Time from receiving a request to producing its response.",
            )
            .const_label("service", spec.name.as_str())
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method"],
        )?;
        let active_connections = IntGauge::with_opts(service(Opts::new(
            "service_active_connections",
            "Open client connections, WebSockets included.",
        )))?;
        let up = IntGauge::with_opts(service(Opts::new(
            "service_up",
            "1 while the service accepts connections.",
        )))?;
        let info = IntGauge::with_opts(
            service(Opts::new(
                "service_info",
                "Service build and instance information.",
            ))
            .const_label("version", spec.version.as_str())
            .const_label("instance", spec.instance.as_str()),
        )?;
        info.set(1);

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(info))?;

        Ok(Self {
            registry,
            requests,
            duration,
            active_connections,
            up,
        })
    }

    /// Records one served request.
    pub(crate) fn observe(&self, method: &str, status: u16, seconds: f64) {
        let method = normalize_method(method);
        self.requests
            .with_label_values(&[method, status.to_string().as_str()])
            .inc();
        self.duration.with_label_values(&[method]).observe(seconds);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub(crate) fn render(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

/// Keeps the `method` label's cardinality bounded.
fn normalize_method(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "CONNECT" | "TRACE" => {
            method
        }
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_all_families() {
        let spec = ServiceSpec::new("content-manager", "cm-1");
        let m = Metrics::new(&spec).expect("valid metric definitions");
        m.up.set(1);
        m.observe("GET", 200, 0.01);
        m.observe("BREW", 418, 0.01);
        let text = m.render().expect("encodable");
        assert!(text.contains(
            r#"service_requests_total{method="GET",service="content-manager",status="200"} 1"#
        ));
        assert!(text.contains(r#"method="OTHER""#));
        assert!(text.contains("service_request_duration_seconds_bucket"));
        assert!(text.contains(r#"service_up{service="content-manager"} 1"#));
        assert!(text.contains(r#"service_active_connections{service="content-manager"} 0"#));
        assert!(text.contains(r#"instance="cm-1""#));
    }
}
