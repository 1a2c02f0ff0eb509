//! Progress of a multi-IP failover, for `carpd status` (issue 21): per group MASTER here, how
//! many of its failover IPs are bound here, and the slowest one with why it is not yet.
//!
//! Pure: computed from the failover IP views the daemon already builds (no clock, no I/O).
//! Groups that are not MASTER here have no failover to report.

use serde::{Deserialize, Serialize};

use super::daemon_view::FailoverIpView;
use crate::controller::claims::JobKind;

/// One group's failover, while it is MASTER here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverProgressView {
    pub group: String,
    /// Failover IPs following the group.
    pub ips: usize,
    /// Of which bound here (as last read or claimed).
    pub bound: usize,
    /// The IP not bound here whose claim has run longest (or, without a running claim, the
    /// first not bound), and why it is not bound yet; `null` when all are bound.
    pub slowest: Option<SlowestView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowestView {
    pub ip: String,
    /// How long its claim has been running, when one runs.
    pub running_ms: Option<u64>,
    /// `queued` (waiting for a claim slot), the claim's phase, `held down until …`, the
    /// last error, or `binding unknown yet`.
    pub why: String,
}

/// Why `f` (MASTER here, not bound here) is not bound yet.
fn why(f: &FailoverIpView) -> String {
    if f.in_flight == Some(JobKind::Claim) {
        return match (&f.phase, f.window_open) {
            (Some(p), true) => {
                format!("claim in phase {p} (the IP may be bound nowhere until it ends)")
            }
            (Some(p), false) => format!("claim in phase {p}"),
            (None, _) => "claim running".into(),
        };
    }
    if let Some(h) = &f.held_down_until {
        return format!("claim held down until {h}");
    }
    if let Some(e) = &f.last_error {
        return format!("last claim failed: {e}");
    }
    match f.bound_here {
        None => "binding unknown yet".into(),
        _ => "claim not started yet".into(),
    }
}

/// The failovers in progress or done, one per group MASTER here, in the order the IPs come.
pub fn failovers(ips: &[FailoverIpView]) -> Vec<FailoverProgressView> {
    let mut out: Vec<FailoverProgressView> = Vec::new();
    let mut slowest_ms: Vec<Option<u64>> = Vec::new();
    for f in ips
        .iter()
        .filter(|f| f.local_state.as_deref() == Some("MASTER"))
    {
        let i = match out.iter().position(|g| g.group == f.group) {
            Some(i) => i,
            None => {
                out.push(FailoverProgressView {
                    group: f.group.clone(),
                    ..FailoverProgressView::default()
                });
                slowest_ms.push(None);
                out.len() - 1
            }
        };
        let g = &mut out[i];
        g.ips += 1;
        if f.bound_here == Some(true) && f.in_flight != Some(JobKind::Claim) {
            g.bound += 1;
            continue;
        }
        let running = f
            .claim_running_ms
            .filter(|_| f.in_flight == Some(JobKind::Claim));
        let slower = match (&g.slowest, running, slowest_ms[i]) {
            (None, _, _) => true,
            (Some(_), Some(r), Some(best)) => r > best,
            (Some(_), Some(_), None) => true,
            (Some(_), None, _) => false,
        };
        if slower {
            slowest_ms[i] = running;
            g.slowest = Some(SlowestView {
                ip: f.ip.clone(),
                running_ms: running,
                why: why(f),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8, state: &str, bound: Option<bool>) -> FailoverIpView {
        FailoverIpView {
            ip: format!("51.68.252.{n}"),
            group: "2@vmx1".into(),
            local_state: Some(state.into()),
            bound_here: bound,
            ..FailoverIpView::default()
        }
    }

    #[test]
    fn counts_bound_ips_and_names_the_slowest_claim() {
        let mut v: Vec<FailoverIpView> = (1..=4).map(|n| ip(n, "MASTER", Some(true))).collect();
        v[1].bound_here = Some(false);
        v[1].in_flight = Some(JobKind::Claim);
        v[1].phase = Some("bind".into());
        v[1].window_open = true;
        v[1].claim_running_ms = Some(900);
        v[2].bound_here = Some(false);
        v[2].in_flight = Some(JobKind::Claim);
        v[2].phase = Some("queued".into());
        v[2].claim_running_ms = Some(1500);
        v.push(FailoverIpView {
            group: "3@vmx1".into(),
            ..ip(9, "BACKUP", Some(false))
        });
        let p = failovers(&v);
        assert_eq!(p.len(), 1, "only groups MASTER here: {p:?}");
        assert_eq!((p[0].ips, p[0].bound), (4, 2));
        let s = p[0].slowest.as_ref().unwrap();
        assert_eq!(s.ip, "51.68.252.3");
        assert_eq!(s.running_ms, Some(1500));
        assert!(s.why.contains("queued"), "{}", s.why);
    }

    #[test]
    fn an_ip_without_a_claim_says_why() {
        let mut v = vec![ip(1, "MASTER", Some(true)), ip(2, "MASTER", Some(false))];
        v[1].last_error = Some("OVH task 7 ended with status ovhError".into());
        let p = failovers(&v);
        assert_eq!((p[0].ips, p[0].bound), (2, 1));
        let s = p[0].slowest.as_ref().unwrap();
        assert_eq!(s.running_ms, None);
        assert!(
            s.why.starts_with("last claim failed: OVH task 7"),
            "{}",
            s.why
        );
        // All bound: nothing slow.
        v[1].bound_here = Some(true);
        assert_eq!(failovers(&v)[0].slowest, None);
    }
}
