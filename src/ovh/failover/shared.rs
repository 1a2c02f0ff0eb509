//! Reads shared by the claims and checks of many failover IPs (issue 21): one listing of a
//! vMAC serves every IP of a failover that needs it, instead of one read per IP.
//!
//! What lives here: per (service, vMAC) the last answer and the read in flight (single
//! flight: whoever needs a read joins the one in flight when it is fresh enough, or sends
//! one), the service's vMAC list likewise, and the releases in flight from each vMAC (the
//! last-IP rule for all IPs at once, [`crate::ovh::plan::may_release`]), and the tasks the
//! claims wait for (a refused write's wait for pending tasks skips the other IPs' tasks).
//!
//! What "fresh enough" means is the caller's, never a default ([`Fresh`]):
//! - the safety read before a DELETE must be *answered after* the claim needed it (a read in
//!   flight at that moment qualifies: its answer is later; a read from the checks while
//!   BACKUP never does), so the claims of one failover share one read, and a claim that
//!   starts later reads again;
//! - a read-back that verifies a bind must be *sent after* the POST's task was seen done; the
//!   first claim to need one waits a few milliseconds ([`VERIFY_COALESCE`]) so the binds of
//!   one failover, which end together, are verified by one read;
//! - a periodic check may use an answer up to an age (an observation, not a safety read).
//!
//! Invariants: an answer older than a write this process saw done on that vMAC never serves
//! anyone ([`SharedReads::wrote`]); an error is handed to those who joined its read, never
//! kept; a read whose sender was cancelled is sent again by the next one who needs it; a
//! reservation of a release ends with its claim (a guard), cancelled or not.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::sync::watch;
use tokio::time::Instant;

use super::super::api::FailoverApi;
use super::super::error::OvhError;

/// How long the first claim needing a read-back waits for the others of its failover
/// (their binds end within milliseconds of each other when the tasks run in parallel). Far
/// below any OVH task time; it delays the claim's report, never a bind.
pub const VERIFY_COALESCE: Duration = Duration::from_millis(30);

/// How fresh an answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// Answered at or after this instant (a read in flight then qualifies).
    AnsweredAfter(Instant),
    /// Sent at or after this instant; a new read waits `coalesce` first, for others to join.
    SentAfter { at: Instant, coalesce: Duration },
    /// Answered at most this long ago (or in flight).
    Within(Duration),
}

#[derive(Clone, Debug)]
struct Answer<T> {
    sent: Instant,
    answered: Instant,
    value: T,
}

type Outcome<T> = Option<Result<Answer<T>, OvhError>>;

struct Flight<T> {
    sent: Instant,
    rx: watch::Receiver<Outcome<T>>,
}

struct Slot<T> {
    last: Option<Answer<T>>,
    flight: Option<Flight<T>>,
    /// Answers sent before this are stale (a write was seen done after it).
    valid_from: Option<Instant>,
}

impl<T> Default for Slot<T> {
    fn default() -> Slot<T> {
        Slot {
            last: None,
            flight: None,
            valid_from: None,
        }
    }
}

impl<T: Clone> Slot<T> {
    fn usable(&self, a: &Answer<T>, need: Fresh, now: Instant) -> bool {
        if self.valid_from.is_some_and(|v| a.sent < v) {
            return false;
        }
        match need {
            Fresh::AnsweredAfter(t) => a.answered >= t,
            Fresh::SentAfter { at, .. } => a.sent >= at,
            Fresh::Within(age) => now.saturating_duration_since(a.answered) <= age,
        }
    }

    fn joinable(&self, f: &Flight<T>, need: Fresh) -> bool {
        if self.valid_from.is_some_and(|v| f.sent < v) {
            return false;
        }
        match need {
            Fresh::AnsweredAfter(_) | Fresh::Within(_) => true,
            Fresh::SentAfter { at, .. } => f.sent >= at,
        }
    }
}

/// (service, vMAC) -> its IPs.
type VmacSlots = Mutex<BTreeMap<(String, String), Slot<Vec<Ipv4Addr>>>>;

/// Reads shared by every claim and check of one OVH client.
#[derive(Default)]
pub struct SharedReads {
    vmacs: VmacSlots,
    lists: Mutex<BTreeMap<String, Slot<Vec<String>>>>,
    releasing: Mutex<BTreeMap<(String, String), BTreeSet<Ipv4Addr>>>,
    /// (service, task id) of the tasks the claims sharing these reads are waiting for.
    tasks: Mutex<BTreeSet<(String, u64)>>,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads").finish_non_exhaustive()
    }
}

fn key(service: &str, mac: &str) -> (String, String) {
    (service.to_string(), mac.to_ascii_lowercase())
}

/// One single-flight read of `slot`'s value.
async fn single_flight<K, T, F, Fut>(
    slots: &Mutex<BTreeMap<K, Slot<T>>>,
    k: &K,
    need: Fresh,
    read: F,
) -> Result<T, OvhError>
where
    K: Ord + Clone,
    T: Clone,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, OvhError>>,
{
    loop {
        let (rx, mine) = {
            let mut map = slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = map.entry(k.clone()).or_default();
            let now = Instant::now();
            if let Some(a) = &slot.last
                && slot.usable(a, need, now)
            {
                return Ok(a.value.clone());
            }
            match &slot.flight {
                Some(f) if slot.joinable(f, need) && f.rx.has_changed().is_ok() => {
                    (f.rx.clone(), None)
                }
                _ => {
                    let coalesce = match need {
                        Fresh::SentAfter { coalesce, .. } => coalesce,
                        _ => Duration::ZERO,
                    };
                    let (tx, rx) = watch::channel(None);
                    let sent = now + coalesce;
                    slot.flight = Some(Flight {
                        sent,
                        rx: rx.clone(),
                    });
                    (rx, Some((tx, sent, coalesce)))
                }
            }
        };
        if let Some((tx, sent, coalesce)) = mine {
            if !coalesce.is_zero() {
                tokio::time::sleep_until(sent).await;
            }
            let r = read().await;
            let answered = Instant::now();
            let out = r.map(|value| Answer {
                sent,
                answered,
                value,
            });
            {
                let mut map = slots.lock().unwrap_or_else(|p| p.into_inner());
                let slot = map.entry(k.clone()).or_default();
                if let Ok(a) = &out
                    && slot.last.as_ref().is_none_or(|l| l.sent <= a.sent)
                {
                    slot.last = Some(a.clone());
                }
                if slot.flight.as_ref().is_some_and(|f| f.sent == sent) {
                    slot.flight = None;
                }
            }
            let _ = tx.send(Some(out.clone()));
            return out.map(|a| a.value);
        }
        let mut rx = rx;
        // The sender's task may be cancelled (a superseded job): then read again.
        if let Ok(v) = rx.wait_for(Option::is_some).await
            && let Some(out) = v.clone()
        {
            return out.map(|a| a.value);
        }
    }
}

impl SharedReads {
    pub fn new() -> SharedReads {
        SharedReads::default()
    }

    /// The IPs on `mac` of `service`, as fresh as `need` says.
    pub async fn vmac_ips<A: FailoverApi>(
        &self,
        api: &A,
        service: &str,
        mac: &str,
        need: Fresh,
    ) -> Result<Vec<Ipv4Addr>, OvhError> {
        let k = key(service, mac);
        single_flight(&self.vmacs, &k, need, || api.vmac_ips(service, mac)).await
    }

    /// The service's vMACs, as fresh as `need` says.
    pub async fn list_vmacs<A: FailoverApi>(
        &self,
        api: &A,
        service: &str,
        need: Fresh,
    ) -> Result<Vec<String>, OvhError> {
        let k = service.to_string();
        single_flight(&self.lists, &k, need, || api.list_vmacs(service)).await
    }

    /// A write on `mac` was seen done now: no answer sent before serves anyone.
    pub fn wrote(&self, service: &str, mac: &str) {
        let now = Instant::now();
        let mut map = self.vmacs.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key(service, mac)).or_default().valid_from = Some(now);
    }

    /// Task `id` on `service` was created by a claim sharing these reads, which waits for
    /// it until the guard is dropped. Such a task concerns that claim's IP (one writer per
    /// IP), so another claim's wait for pending tasks after a refused write skips it
    /// ([`SharedReads::is_own_task`]): OVH refuses a write while a task on the *same* IP
    /// runs, and the tasks of the failover's other IPs would only add a task time.
    pub fn own_task(&self, service: &str, id: u64) -> OwnTask<'_> {
        let key = (service.to_string(), id);
        let mut set = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone());
        OwnTask { shared: self, key }
    }

    /// Whether task `id` on `service` is one a claim sharing these reads waits for.
    pub fn is_own_task(&self, service: &str, id: u64) -> bool {
        let set = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        set.contains(&(service.to_string(), id))
    }

    /// The last-IP rule for `ip` on `mac` given its fresh listing `listed`, with every
    /// release in flight from that vMAC counted; when it allows the release, the release is
    /// reserved until the guard is dropped (the claim ends). `None`: refused.
    pub fn reserve_release(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
        listed: &[Ipv4Addr],
        allow_last: bool,
    ) -> Option<Release<'_>> {
        let k = key(service, mac);
        let mut map = self.releasing.lock().unwrap_or_else(|p| p.into_inner());
        let set = map.entry(k.clone()).or_default();
        if set.contains(&ip) {
            // This claim's own earlier reservation (a re-plan): judged without it.
            set.remove(&ip);
        }
        if !crate::ovh::plan::may_release(listed, set, ip, allow_last) {
            return None;
        }
        set.insert(ip);
        Some(Release {
            shared: self,
            key: k,
            ip,
        })
    }
}

/// A task a claim created and is waiting for ([`SharedReads::own_task`]).
pub struct OwnTask<'a> {
    shared: &'a SharedReads,
    key: (String, u64),
}

impl Drop for OwnTask<'_> {
    fn drop(&mut self) {
        let mut set = self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
}

/// A release reserved on a vMAC; dropped when the claim ends.
pub struct Release<'a> {
    shared: &'a SharedReads,
    key: (String, String),
    ip: Ipv4Addr,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let mut map = self
            .shared
            .releasing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(set) = map.get_mut(&self.key) {
            set.remove(&self.ip);
            if set.is_empty() {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "ns1.eu";
    const MAC: &str = "02:00:00:aa:bb:cc";

    // Freshness against a FailoverApi: tests/shared_reads.rs (the in-memory OVH lives in
    // carpd-testkit).

    #[test]
    fn a_release_is_reserved_until_its_claim_ends() {
        let shared = SharedReads::new();
        let ips: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let first = shared.reserve_release(S, MAC, ips[0], &ips, false);
        assert!(first.is_some());
        // The other IP would be the vMAC's last while the first release runs.
        assert!(
            shared
                .reserve_release(S, MAC, ips[1], &ips, false)
                .is_none()
        );
        drop(first);
        assert!(
            shared
                .reserve_release(S, MAC, ips[1], &ips, false)
                .is_some()
        );
    }
}
