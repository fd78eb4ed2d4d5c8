//! The stapling schedule: for each certificate, when to fetch (or re-read) its response, what
//! to staple, and when to stop. [`Stapler::tick`] runs once a second on the certificates in
//! use and says what changed; the caller swaps the stapled responses.

use super::response::{Good, OcspError, Query};
use super::{expires, fetch, record, refresh_in, Stats, RETRY_AFTER_FAILURE};
use crate::config::OcspSource;
use std::time::{Duration, SystemTime};

/// One certificate as the stapler sees it.
pub struct CertView<'a> {
    /// Its file, for logs and metrics.
    pub name: &'a str,
    pub source: &'a OcspSource,
    pub leaf: &'a [u8],
    pub issuer: Option<&'a [u8]>,
}

/// The leaf (DER) a response is for, and the response (DER).
pub type Staple = (Vec<u8>, Vec<u8>);

/// What to staple for a certificate from now on (`None`: nothing).
#[derive(Debug, PartialEq, Eq)]
pub struct Change {
    pub index: usize,
    pub staple: Option<Staple>,
}

#[derive(Default)]
struct Slot {
    leaf: Vec<u8>,
    issuer: Option<Vec<u8>>,
    query: Option<Query>,
    good: Option<Good>,
    /// Unix seconds of the next fetch.
    next_at: i64,
    file_stamp: Option<SystemTime>,
    /// The last failure logged, so a failing responder is not logged every minute.
    last_error: Option<String>,
}

/// Where each certificate's stapling stands.
pub struct Stapler {
    refresh: Duration,
    slots: Vec<Slot>,
}

impl Stapler {
    /// `refresh`: the longest time between two fetches (at least a second).
    pub fn new(refresh: Duration) -> Stapler {
        Stapler {
            refresh: refresh.max(Duration::from_secs(1)),
            slots: Vec::new(),
        }
    }

    /// One round at `now` (Unix seconds): what is due is fetched, the certificates' fetches
    /// at once so that a slow responder delays no other certificate (each fetch ends within
    /// [`super::FETCH_TIMEOUT`]). Never on a handshake's path.
    pub async fn tick(&mut self, certs: &[CertView<'_>], now: i64) -> Vec<Change> {
        self.slots.resize_with(certs.len(), Slot::default);
        let mut changes = Vec::new();
        let mut due = vec![false; certs.len()];
        for (index, cert) in certs.iter().enumerate() {
            let slot = &mut self.slots[index];
            if slot.leaf != cert.leaf || slot.issuer.as_deref() != cert.issuer || slot.next_at == 0
            {
                // A new certificate or chain (a renewal, a fixed chain file): nothing of the
                // old one applies; fetch at once.
                let had = slot.good.is_some();
                *slot = Slot {
                    leaf: cert.leaf.to_vec(),
                    issuer: cert.issuer.map(<[u8]>::to_vec),
                    next_at: now,
                    ..Slot::default()
                };
                if had {
                    changes.push(Change {
                        index,
                        staple: None,
                    });
                }
                if *cert.source != OcspSource::Off {
                    record(cert.name, unstapled);
                }
            }
            if *cert.source == OcspSource::Off {
                continue;
            }
            if slot
                .good
                .as_ref()
                .is_some_and(|g| expires(g, self.refresh) <= now)
            {
                tracing::warn!(
                    certificate = cert.name,
                    "OCSP response expired and could not be refreshed; no longer stapled"
                );
                slot.good = None;
                record(cert.name, unstapled);
                changes.push(Change {
                    index,
                    staple: None,
                });
            }
            let stamp = match cert.source {
                OcspSource::File(path) => std::fs::metadata(path).and_then(|m| m.modified()).ok(),
                _ => None,
            };
            let file_changed = stamp.is_some() && stamp != slot.file_stamp;
            due[index] = now >= slot.next_at || file_changed;
            slot.file_stamp = stamp;
        }
        let attempts =
            self.slots
                .iter_mut()
                .zip(certs)
                .zip(&due)
                .map(|((slot, cert), &due)| async move {
                    if due {
                        Some(Self::attempt(slot, cert, now).await)
                    } else {
                        None
                    }
                });
        let outcomes = futures_util::future::join_all(attempts).await;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            if let Some(outcome) = outcome {
                self.settle(index, &certs[index], outcome, now, &mut changes);
            }
        }
        changes
    }

    /// What one fetch's outcome changes: the staple, the schedule, the log and the counts.
    fn settle(
        &mut self,
        index: usize,
        cert: &CertView<'_>,
        outcome: Result<Good, OcspError>,
        now: i64,
        changes: &mut Vec<Change>,
    ) {
        let refresh = self.refresh;
        let slot = &mut self.slots[index];
        tracing::debug!(certificate = cert.name, outcome = ?outcome.as_ref().map(|g| g.next_update), "OCSP fetch");
        let error = outcome.as_ref().err().map(|e| e.to_string());
        let repeated = error.is_some() && slot.last_error == error;
        slot.last_error = error;
        match outcome {
            Ok(good) => {
                if slot.good.as_ref().is_none_or(|g| g.der != good.der) {
                    if slot.good.is_none() {
                        tracing::info!(certificate = cert.name, next_update = ?good.next_update, "OCSP response verified; stapled");
                    }
                    changes.push(Change {
                        index,
                        staple: Some((cert.leaf.to_vec(), good.der.clone())),
                    });
                }
                record(cert.name, |s| {
                    s.last_success = now;
                    s.next_update = expires(&good, refresh);
                    s.stapled = true;
                });
                slot.next_at = now + refresh_in(&good, now, refresh).as_secs() as i64;
                slot.good = Some(good);
            }
            Err(OcspError::Revoked) => {
                if !repeated {
                    tracing::error!(
                        certificate = cert.name,
                        "OCSP responder says the certificate is REVOKED; not stapled"
                    );
                }
                record(cert.name, |s| {
                    s.revoked += 1;
                    unstapled(s);
                });
                if slot.good.take().is_some() {
                    changes.push(Change {
                        index,
                        staple: None,
                    });
                }
                slot.next_at = now + refresh.as_secs() as i64;
            }
            Err(e @ (OcspError::NoResponder | OcspError::NoIssuer | OcspError::Certificate(_))) => {
                // Nothing changes until the certificate file does (which resets the slot).
                tracing::info!(certificate = cert.name, reason = %e, "no OCSP stapling for this certificate");
                record(cert.name, unstapled);
                slot.next_at = i64::MAX;
            }
            Err(e) => {
                if !repeated {
                    tracing::warn!(certificate = cert.name, error = %e, stapling_last_good = slot.good.is_some(), "OCSP refresh failed");
                }
                record(cert.name, |s| s.failures += 1);
                let retry = refresh.min(RETRY_AFTER_FAILURE).as_secs().max(1) as i64;
                slot.next_at = now + retry;
            }
        }
    }

    /// One fetch (or read) and check of a certificate's response.
    async fn attempt(slot: &mut Slot, cert: &CertView<'_>, now: i64) -> Result<Good, OcspError> {
        let issuer = cert.issuer.ok_or(OcspError::NoIssuer)?;
        if slot.query.is_none() {
            slot.query = Some(Query::new(cert.leaf, issuer)?);
        }
        let query = slot.query.as_ref().ok_or(OcspError::NoIssuer)?;
        let bytes = match cert.source {
            OcspSource::File(path) => std::fs::read(path)
                .map_err(|e| OcspError::Fetch(format!("{}: {e}", path.display())))?,
            _ => {
                let url = query.url.as_deref().ok_or(OcspError::NoResponder)?;
                fetch(url, query).await?
            }
        };
        query.check(&bytes, now)
    }
}

/// Nothing stapled (and so no nextUpdate).
fn unstapled(s: &mut Stats) {
    s.stapled = false;
    s.next_update = 0;
}
