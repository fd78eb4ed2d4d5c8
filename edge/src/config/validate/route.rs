//! `[[routes]]`: path and host, upstream, limits, allow lists.

use super::Validator;
use crate::config::file::*;
use crate::config::model::*;
use std::collections::{BTreeMap, HashSet};
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn route(
        &mut self,
        r: &Spanned<RouteFile>,
        upstreams: &BTreeMap<String, Spanned<UpstreamFile>>,
        zones: &BTreeMap<String, Spanned<ZoneFile>>,
        seen: &mut HashSet<(Option<String>, String)>,
    ) -> Option<RouteSettings> {
        let f = r.get_ref();
        let path = match &f.path {
            Some(p) if !p.get_ref().starts_with('/') => {
                self.error(
                    p.span(),
                    format!("route path `{}` must start with `/`", p.get_ref()),
                );
                None
            }
            Some(p) => Some(p),
            None => {
                self.error(r.span(), "a route needs a `path`");
                None
            }
        };
        let host = f.host.as_ref().and_then(|h| self.route_host(h));
        if let Some(p) = path {
            if !seen.insert((host.clone(), p.get_ref().clone())) {
                self.error(
                    p.span(),
                    format!(
                        "duplicate route: path `{}` is already routed{}",
                        p.get_ref(),
                        host.as_ref()
                            .map_or(String::new(), |h| format!(" for host `{h}`"))
                    ),
                );
            }
        }
        let upstream = match &f.upstream {
            Some(u) if upstreams.contains_key(u.get_ref().as_str()) => Some(u.get_ref().clone()),
            Some(u) => {
                let known: Vec<&str> = upstreams.keys().map(|k| k.as_str()).collect();
                self.error(
                    u.span(),
                    format!(
                        "unknown upstream `{}` (defined: {})",
                        u.get_ref(),
                        known.join(", ")
                    ),
                );
                None
            }
            None => {
                self.error(r.span(), "a route needs an `upstream`");
                None
            }
        };
        let h2_upstream = upstream
            .as_ref()
            .and_then(|u| upstreams.get(u))
            .and_then(|u| u.get_ref().protocol.as_ref())
            .is_some_and(|p| p.get_ref() == "h2");
        if let (Some(ws), true) = (&f.websocket, h2_upstream) {
            if *ws.get_ref() {
                self.error(
                    ws.span(),
                    "a websocket is carried over HTTP/1.1, and this route's upstream has \
                     protocol \"h2\" (use \"auto\" with `tls`, or \"http1\")",
                );
            }
        }
        let limits = self.route_limits(f, zones);
        let limit_status = self.int_or(
            &f.limit_status,
            DEFAULT_LIMIT_STATUS as u32,
            400,
            599,
            "limit_status",
        ) as u16;
        let allow = self.cidrs(&f.allow);
        Some(RouteSettings {
            path: path?.get_ref().clone(),
            host,
            upstream: upstream?,
            limit: limits,
            limit_status,
            allow,
            websocket: f.websocket.as_ref().is_some_and(|w| *w.get_ref()),
        })
    }

    /// A route's `host`: a name or a `*.domain` wildcard, lower-cased.
    fn route_host(&mut self, h: &Spanned<String>) -> Option<String> {
        let text = h.get_ref().to_ascii_lowercase();
        let bare = text.strip_prefix("*.").unwrap_or(&text);
        let valid = !bare.is_empty()
            && !bare.contains('*')
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if valid {
            Some(text)
        } else {
            self.error(
                h.span(),
                format!(
                    "host `{}` is not a host name or a `*.domain` wildcard",
                    h.get_ref()
                ),
            );
            None
        }
    }

    /// A route's `limit` list: each names a defined zone.
    fn route_limits(
        &mut self,
        f: &RouteFile,
        zones: &BTreeMap<String, Spanned<ZoneFile>>,
    ) -> Vec<LimitSettings> {
        let mut limits = Vec::new();
        for l in &f.limit {
            let lf = l.get_ref();
            let zone = match &lf.zone {
                Some(z) if zones.contains_key(z.get_ref().as_str()) => z.get_ref().clone(),
                Some(z) => {
                    self.error(
                        z.span(),
                        format!(
                            "unknown zone `{}`; define it as [zones.{}]",
                            z.get_ref(),
                            z.get_ref()
                        ),
                    );
                    continue;
                }
                None => {
                    self.error(l.span(), "a limit needs a `zone`");
                    continue;
                }
            };
            limits.push(LimitSettings {
                zone,
                burst: self.int_or(&lf.burst, 0, 0, 1_000_000, "burst"),
                nodelay: lf.nodelay.unwrap_or(false),
                dry_run: lf.dry_run.unwrap_or(false),
            });
        }
        limits
    }
}
