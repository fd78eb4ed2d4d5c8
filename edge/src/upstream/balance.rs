//! The three balancing algorithms, as nginx's upstream modules define them.
//!
//! - round robin: `ngx_http_upstream_get_peer`, smooth weighted (each pick adds every usable
//!   server's effective weight to its current weight, takes the largest, and subtracts the
//!   total from it), so weights 3:1 give a a b a, not a a a b;
//! - least_conn: fewest in-flight requests relative to weight, ties by smooth round robin;
//! - ip_hash: the first three octets of an IPv4 client (the whole address for IPv6) hashed
//!   with nginx's constants, rehashing past unusable servers, round robin after 20 misses.

use super::{Attempts, Upstream};
use crate::held;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

impl Upstream {
    /// Smooth weighted round robin over the usable, untried servers that `eligible` admits.
    pub(crate) fn round_robin(
        &self,
        now: u64,
        attempts: &Attempts,
        eligible: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let single = self.servers.len() == 1;
        let mut guard = held::lock(&self.weights);
        let mut copy;
        let weights: &mut [super::Weights] = if attempts.preview {
            copy = guard.clone();
            &mut copy
        } else {
            &mut guard
        };
        let mut best: Option<usize> = None;
        let mut total: i64 = 0;
        for (i, server) in self.servers.iter().enumerate() {
            if attempts.tried(i) || !eligible(i) || !attempts.usable(server, now, single) {
                continue;
            }
            let w = &mut weights[i];
            w.current += w.effective;
            total += w.effective;
            if w.effective < server.weight as i64 {
                w.effective += 1;
            }
            let current = w.current;
            if best.is_none_or(|b| current > weights[b].current) {
                best = Some(i);
            }
        }
        let best = best?;
        weights[best].current -= total;
        Some(best)
    }

    /// Fewest in-flight requests relative to weight; ties go to smooth round robin.
    pub(crate) fn least_conn(&self, now: u64, attempts: &Attempts) -> Option<usize> {
        let single = self.servers.len() == 1;
        // (in-flight, weight) of the best ratio so far, and how many servers share it.
        let mut best: Option<(u64, u64)> = None;
        let mut ties = 0usize;
        let mut first = 0usize;
        for (i, server) in self.servers.iter().enumerate() {
            if attempts.tried(i) || !attempts.usable(server, now, single) {
                continue;
            }
            let conns = server.state.in_flight.load(Ordering::Relaxed) as u64;
            let weight = server.weight as u64;
            match best {
                Some((bc, bw)) if conns * bw > bc * weight => {}
                Some((bc, bw)) if conns * bw == bc * weight => ties += 1,
                _ => {
                    best = Some((conns, weight));
                    ties = 1;
                    first = i;
                }
            }
        }
        let (bc, bw) = best?;
        if ties == 1 {
            return Some(first);
        }
        self.round_robin(now, attempts, |i| {
            let s = &self.servers[i];
            s.state.in_flight.load(Ordering::Relaxed) as u64 * bw == bc * s.weight as u64
        })
    }

    /// nginx's ip_hash: sticky by the client's /24 (IPv4) or address (IPv6).
    pub(crate) fn ip_hash(
        &self,
        now: u64,
        client: IpAddr,
        attempts: &mut Attempts,
    ) -> Option<usize> {
        let single = self.servers.len() == 1;
        let total_weight: u64 = self.servers.iter().map(|s| s.weight as u64).sum();
        if single || total_weight == 0 || attempts.ip_hash_tries > 20 {
            return self.round_robin(now, attempts, |_| true);
        }
        let v4;
        let v6;
        let key: &[u8] = match client {
            IpAddr::V4(a) => {
                v4 = a.octets();
                &v4[..3]
            }
            IpAddr::V6(a) => {
                v6 = a.octets();
                &v6[..]
            }
        };
        let mut hash = attempts.ip_hash.unwrap_or(89);
        loop {
            for &b in key {
                hash = (hash * 113 + b as u32) % 6271;
            }
            let mut w = hash as u64 % total_weight;
            let mut index = 0;
            while w >= self.servers[index].weight as u64 {
                w -= self.servers[index].weight as u64;
                index += 1;
            }
            attempts.ip_hash = Some(hash);
            if !attempts.tried(index) && attempts.usable(&self.servers[index], now, single) {
                return Some(index);
            }
            attempts.ip_hash_tries += 1;
            if attempts.ip_hash_tries > 20 {
                return self.round_robin(now, attempts, |_| true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Attempts, Server, ServerState, Upstream};
    use crate::config::{Balance, UpstreamSettings};
    use std::net::IpAddr;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    fn upstream(balance: Balance, weights: &[u32]) -> Upstream {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Server {
                label: format!("10.0.0.{}:80", i + 1),
                host: format!("10.0.0.{}", i + 1),
                addr: Some(format!("10.0.0.{}:80", i + 1).parse().expect("addr")),
                weight,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                state: Arc::new(ServerState::default()),
            })
            .collect();
        let settings = UpstreamSettings {
            balance,
            keepalive: 0,
            keepalive_requests: 100,
            keepalive_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            next_upstream_tries: 0,
            servers: Vec::new(),
            health: None,
            protocol: Default::default(),
            tls: None,
        };
        Upstream::new("test".into(), settings, servers)
    }

    fn client(s: &str) -> IpAddr {
        s.parse().expect("client")
    }

    fn picks(u: &Upstream, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                u.select(client("1.2.3.4"), &mut Attempts::default())
                    .expect("a server")
            })
            .collect()
    }

    #[test]
    fn round_robin_is_smooth_like_nginx() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
        let u = upstream(Balance::RoundRobin, &[5, 1, 1]);
        assert_eq!(picks(&u, 7), vec![0, 0, 1, 0, 2, 0, 0]);
        let u = upstream(Balance::RoundRobin, &[3, 1]);
        let counts = picks(&u, 400).iter().filter(|&&i| i == 0).count();
        assert_eq!(counts, 300);
    }

    #[test]
    fn round_robin_skips_tried_and_failed_servers() {
        let u = upstream(Balance::RoundRobin, &[1, 1, 1]);
        let mut attempts = Attempts::default();
        let first = u.select(client("1.1.1.1"), &mut attempts).expect("server");
        attempts.mark(first);
        let second = u.select(client("1.1.1.1"), &mut attempts).expect("server");
        assert_ne!(first, second);
        u.report_failure(1);
        assert!(picks(&u, 20).iter().all(|&i| i != 1));
    }

    #[test]
    fn all_failed_gives_none_then_recovers_like_nginx() {
        let u = upstream(Balance::RoundRobin, &[1, 1]);
        u.report_failure(0);
        u.report_failure(1);
        assert_eq!(u.select(client("1.1.1.1"), &mut Attempts::default()), None);
        // nginx marks every server live again after "no live upstreams".
        assert!(u
            .select(client("1.1.1.1"), &mut Attempts::default())
            .is_some());
    }

    #[test]
    fn a_single_server_is_never_taken_out() {
        let u = upstream(Balance::RoundRobin, &[1]);
        u.report_failure(0);
        u.report_failure(0);
        assert_eq!(picks(&u, 3), vec![0, 0, 0]);
    }

    #[test]
    fn least_conn_prefers_idle_servers_relative_to_weight() {
        let u = upstream(Balance::LeastConn, &[1, 1, 2]);
        u.servers[0].state.in_flight.store(3, Ordering::Relaxed);
        u.servers[1].state.in_flight.store(1, Ordering::Relaxed);
        u.servers[2].state.in_flight.store(4, Ordering::Relaxed);
        // ratios 3, 1, 2
        assert_eq!(picks(&u, 1), vec![1]);
        u.servers[1].state.in_flight.store(2, Ordering::Relaxed);
        // ratios 3, 2, 2: a tie between 1 and 2, broken by weighted round robin
        let p = picks(&u, 3);
        assert!(p.iter().all(|&i| i == 1 || i == 2));
        assert!(p.contains(&2));
    }

    #[test]
    fn ip_hash_matches_nginx_and_is_sticky() {
        let u = upstream(Balance::IpHash, &[1, 1, 1]);
        // nginx: hash = 89; for 3 octets hash = (hash * 113 + octet) % 6271; server = hash % 3.
        let mut hash: u32 = 89;
        for b in [192u32, 168, 7] {
            hash = (hash * 113 + b) % 6271;
        }
        let expected = (hash % 3) as usize;
        for last in [1, 77, 254] {
            let ip = client(&format!("192.168.7.{last}"));
            assert_eq!(u.select(ip, &mut Attempts::default()), Some(expected));
        }
        // different /24s spread over the servers
        let spread: std::collections::HashSet<usize> = (0..50)
            .filter_map(|n| u.select(client(&format!("10.{n}.0.1")), &mut Attempts::default()))
            .collect();
        assert_eq!(spread.len(), 3);
    }

    #[test]
    fn ip_hash_moves_only_when_its_server_is_down() {
        let u = upstream(Balance::IpHash, &[1, 1, 1]);
        let ip = client("172.16.5.9");
        let home = u.select(ip, &mut Attempts::default()).expect("server");
        u.report_failure(home);
        let away = u.select(ip, &mut Attempts::default()).expect("server");
        assert_ne!(home, away);
        // Another client whose home is still up does not move.
        let other = (0..50)
            .map(|n| client(&format!("10.9.{n}.1")))
            .find(|c| u.select(*c, &mut Attempts::default()) != Some(home))
            .expect("a client elsewhere");
        let before = u.select(other, &mut Attempts::default());
        assert_eq!(u.select(other, &mut Attempts::default()), before);
    }
}
