//! Active health probing, the side system: a background service that follows the snapshot's
//! servers and runs a prober ([`crate::upstream::probe`]) for each server of every upstream
//! with `health`, each on its own schedule and kept-alive connection. Reloads are followed:
//! servers that stay keep their prober (and its counts), new ones get one, removed ones lose
//! theirs; a server of an upstream without `health` is never kept out by probes.

use crate::snapshot::Snapshot;
use crate::upstream::probe::probe_loop;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the prober set is compared with the live snapshot.
const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// The probing background service.
pub struct HealthService {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

/// Identifies a prober: the server and the settings it probes with.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ProbeKey {
    upstream: String,
    /// The server's display label, for logs.
    server: String,
    /// The Host the probe sends.
    host: String,
    addr: SocketAddr,
    settings: String,
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut probers: HashMap<ProbeKey, JoinHandle<()>> = HashMap::new();
        loop {
            self.sync(&mut probers);
            tokio::select! {
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
                _ = shutdown.changed() => break,
            }
        }
        for (_, task) in probers {
            task.abort();
        }
    }
}

impl HealthService {
    /// Starts probers for servers that need one and stops those whose server is gone.
    fn sync(&self, probers: &mut HashMap<ProbeKey, JoinHandle<()>>) {
        let snapshot = self.snapshot.load();
        let mut wanted = HashMap::new();
        for upstream in snapshot.upstreams.values() {
            for server in &upstream.servers {
                let Some(health) = &upstream.settings.health else {
                    // No probing: active health never keeps the server out.
                    server.state.set_probe_up(true);
                    continue;
                };
                let Some(addr) = server.addr else { continue };
                // A prober speaks the upstream's protocol and TLS: a change of them starts
                // a new one.
                let key = ProbeKey {
                    upstream: upstream.name.clone(),
                    server: server.label.clone(),
                    host: server.host.clone(),
                    addr,
                    settings: format!(
                        "{health:?} {:?} {:?}",
                        upstream.settings.protocol, upstream.settings.tls
                    ),
                };
                wanted.insert(
                    key,
                    (health.clone(), server.state.clone(), upstream.clone()),
                );
            }
        }
        probers.retain(|key, task| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (settings, state, upstream)) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = probers.entry(key) {
                let key = slot.key();
                let task = tokio::spawn(probe_loop(
                    upstream,
                    key.server.clone(),
                    key.addr,
                    key.host.clone(),
                    settings,
                    state,
                ));
                slot.insert(task);
            }
        }
    }
}
