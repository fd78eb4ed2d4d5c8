//! `[upstreams.NAME]`: balancing, servers, keep-alive and health checks.

use super::{check_server_addr, Validator};
use crate::config::file::*;
use crate::config::model::*;
use std::collections::HashSet;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn upstream(
        &mut self,
        name: &str,
        u: &Spanned<UpstreamFile>,
    ) -> Option<UpstreamSettings> {
        let f = u.get_ref();
        let balance = self.choice(
            "balance",
            &f.balance,
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_conn", Balance::LeastConn),
                ("ip_hash", Balance::IpHash),
            ],
        );
        let mut servers = Vec::new();
        match &f.servers {
            Some(list) if !list.is_empty() => {
                let mut seen = HashSet::new();
                for s in list {
                    if let Some(server) = self.server(s) {
                        if !seen.insert(server.addr.clone()) {
                            self.error(
                                s.span(),
                                format!(
                                    "server `{}` is listed twice in upstream `{}`",
                                    server.addr, name
                                ),
                            );
                        }
                        servers.push(server);
                    }
                }
            }
            // Not `Spanned`: toml cannot give the span of a `[[upstreams.x.servers]]` array.
            Some(_) => self.error(u.span(), format!("upstream `{}` has no servers", name)),
            None => self.error(u.span(), format!("upstream `{}` needs `servers`", name)),
        }
        let health = f.health.as_ref().map(|h| self.health(h));
        let protocol = self.choice(
            "protocol",
            &f.protocol,
            &[
                ("http1", UpstreamProtocol::Http1),
                ("h2", UpstreamProtocol::H2),
                ("auto", UpstreamProtocol::Auto),
            ],
        );
        let tls = f.tls.as_ref().map(|t| self.upstream_tls(t));
        if protocol == UpstreamProtocol::Auto && tls.is_none() {
            let span = f.protocol.as_ref().map_or(u.span(), |p| p.span());
            self.error(
                span,
                format!(
                    "upstream `{name}`: protocol \"auto\" is chosen by ALPN, which needs `tls` \
                     (cleartext HTTP/2 is protocol \"h2\")"
                ),
            );
        }
        if health.as_ref().is_some_and(|h| h.grpc_service.is_some())
            && protocol == UpstreamProtocol::Http1
        {
            let span = f.health.as_ref().map_or(u.span(), |h| h.span());
            self.error(
                span,
                format!("upstream `{name}`: gRPC health probes need protocol \"h2\" or \"auto\""),
            );
        }
        Some(UpstreamSettings {
            protocol,
            tls,
            balance,
            keepalive: self.int_or(
                &f.keepalive,
                DEFAULT_UPSTREAM_KEEPALIVE as u32,
                0,
                100_000,
                "keepalive",
            ) as usize,
            keepalive_requests: self.int_or(
                &f.keepalive_requests,
                DEFAULT_UPSTREAM_KEEPALIVE_REQUESTS,
                1,
                u32::MAX as i64,
                "keepalive_requests",
            ),
            keepalive_timeout: self
                .duration_or(&f.keepalive_timeout, DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT),
            connect_timeout: self.positive_duration_or(&f.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            read_timeout: self.positive_duration_or(&f.read_timeout, DEFAULT_READ_TIMEOUT),
            send_timeout: self.positive_duration_or(&f.send_timeout, DEFAULT_SEND_TIMEOUT),
            next_upstream_tries: self.int_or(
                &f.next_upstream_tries,
                DEFAULT_NEXT_UPSTREAM_TRIES,
                0,
                1000,
                "next_upstream_tries",
            ),
            servers,
            health,
        })
    }

    fn server(&mut self, s: &Spanned<ServerFile>) -> Option<ServerSettings> {
        let f = s.get_ref();
        let Some(addr) = &f.addr else {
            self.error(
                s.span(),
                "a server needs an `addr` like \"content-manager:8000\"",
            );
            return None;
        };
        if let Err(e) = check_server_addr(addr.get_ref()) {
            self.error(addr.span(), e);
        }
        let weight = self.int_or(&f.weight, DEFAULT_WEIGHT, 1, 1_000_000, "weight");
        Some(ServerSettings {
            addr: addr.get_ref().clone(),
            weight,
            max_fails: self.int_or(&f.max_fails, DEFAULT_MAX_FAILS, 0, 1_000_000, "max_fails"),
            fail_timeout: self.duration_or(&f.fail_timeout, DEFAULT_FAIL_TIMEOUT),
        })
    }

    /// `tls = { server_name, ca, verify, cert, key }`: the files are read now, so that a
    /// mistake is reported here with its place rather than at the first request.
    fn upstream_tls(&mut self, t: &Spanned<UpstreamTlsFile>) -> UpstreamTlsSettings {
        let f = t.get_ref();
        if let Some(ca) = &f.ca {
            self.pem_file(ca, "certificate");
        }
        match (&f.cert, &f.key) {
            (Some(cert), Some(key)) => {
                self.pem_file(cert, "certificate");
                self.pem_file(key, "key");
            }
            (None, None) => {}
            _ => self.error(t.span(), "a client certificate needs both `cert` and `key`"),
        }
        if let Some(name) = &f.server_name {
            if rustls::pki_types::ServerName::try_from(name.get_ref().as_str()).is_err() {
                self.error(
                    name.span(),
                    format!("`{}` is not a host name or address", name.get_ref()),
                );
            }
        }
        UpstreamTlsSettings {
            server_name: f.server_name.as_ref().map(|n| n.get_ref().clone()),
            ca: f.ca.as_ref().map(|p| p.get_ref().into()),
            verify: f.verify.unwrap_or(true),
            cert: f.cert.as_ref().map(|p| p.get_ref().into()),
            key: f.key.as_ref().map(|p| p.get_ref().into()),
        }
    }

    fn health(&mut self, h: &Spanned<HealthFile>) -> HealthSettings {
        let f = h.get_ref();
        let path = match &f.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(p.span(), "a health `path` starts with `/`");
                DEFAULT_HEALTH_PATH.to_string()
            }
            Some(p) => p.get_ref().clone(),
            None => DEFAULT_HEALTH_PATH.to_string(),
        };
        HealthSettings {
            path,
            grpc_service: f.grpc_service.as_ref().map(|s| s.get_ref().clone()),
            interval: self.positive_duration_or(&f.interval, DEFAULT_HEALTH_INTERVAL),
            timeout: self.positive_duration_or(&f.timeout, DEFAULT_HEALTH_TIMEOUT),
            rise: self.int_or(&f.rise, DEFAULT_HEALTH_RISE, 1, 1000, "rise"),
            fall: self.int_or(&f.fall, DEFAULT_HEALTH_FALL, 1, 1000, "fall"),
            start_period: self.duration_or(&f.start_period, DEFAULT_HEALTH_START_PERIOD),
        }
    }
}
