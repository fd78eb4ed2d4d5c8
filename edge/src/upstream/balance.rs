//! The three balancing algorithms, as nginx's upstream modules define them.
//!
//! - round robin: `ngx_http_upstream_get_peer`, smooth weighted (each pick adds every usable
//!   server's effective weight to its current weight, takes the largest, and subtracts the
//!   total from it), so weights 3:1 give a a b a, not a a a b;
//! - least_conn: fewest in-flight requests relative to weight, ties by smooth round robin;
//! - ip_hash: the first three octets of an IPv4 client (the whole address for IPv6) hashed
//!   with nginx's constants, rehashing past unusable servers, round robin after 20 misses.

use super::{Attempts, Upstream};
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
        let mut weights = self.weights.lock().unwrap_or_else(|p| p.into_inner());
        let mut best: Option<usize> = None;
        let mut total: i64 = 0;
        for (i, server) in self.servers.iter().enumerate() {
            if attempts.tried(i) || !eligible(i) || !server.usable(now, single) {
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
            if attempts.tried(i) || !server.usable(now, single) {
                continue;
            }
            let conns = server.state.inflight.load(Ordering::Relaxed) as u64;
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
            s.state.inflight.load(Ordering::Relaxed) as u64 * bw == bc * s.weight as u64
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
            if !attempts.tried(index) && self.servers[index].usable(now, single) {
                return Some(index);
            }
            attempts.ip_hash_tries += 1;
            if attempts.ip_hash_tries > 20 {
                return self.round_robin(now, attempts, |_| true);
            }
        }
    }
}
