//! "Could this node complete a failover right now?": the pure assessment behind the
//! readiness section of `carpd status`, the `carpd_ready` metrics and the optional demotion.
//!
//! Inputs are what the daemon already learns while BACKUP (and MASTER) from its periodic
//! read-only checks of each failover IP and from the Vault agent; nothing here does I/O.
//! Each check says what is wrong and what to do, the way errors do.

use std::time::{Duration, Instant};

use crate::ovh::rights::{self, Verdict};
use crate::vault::agent::AgentView;

/// One readiness check.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// `vault`, `ovh_api`, `ovh_credentials`, `ovh_rights`, `own_vmac`, `clock`.
    pub name: String,
    pub ok: bool,
    /// What was seen; when not ok, what to do.
    pub detail: String,
}

/// What the last check of one failover IP saw.
#[derive(Clone, Debug, Default)]
pub struct IpEvidence {
    pub ip: String,
    /// When the last check (or claim) succeeded.
    pub ok_at: Option<Instant>,
    /// The last failure's class and text, cleared by a success.
    pub error: Option<(&'static str, String)>,
    /// vMAC mode: whether our vMAC exists and how many IPs it holds.
    pub own_vmac: Option<(bool, usize, String)>,
    /// Whether the credential grants every call of a claim of this IP, when judged.
    pub rights: Option<Verdict>,
}

/// Everything the assessment looks at.
pub struct Evidence<'a> {
    pub now: Instant,
    /// Checks older than this count as missing.
    pub stale_after: Duration,
    pub ips: &'a [IpEvidence],
    /// `None` when Vault is not configured.
    pub vault: Option<&'a AgentView>,
    /// OVH's clock minus ours, seconds (`None`: not measured).
    pub clock_delta: Option<i64>,
    pub max_clock_delta: Duration,
    /// OAuth2 credentials do not sign with a timestamp: the clock matters less.
    pub clock_needed: bool,
    /// CARP passwords taken from the local copy because Vault could not be read at the last
    /// load (group, why): the groups run, but on a password Vault did not confirm.
    pub passwords_from_local_copy: &'a [(crate::carp::GroupId, String)],
}

/// Error classes that mean the credentials are refused (not the network or OVH).
const CREDENTIAL_KINDS: &[&str] = &[
    "credentials",
    "invalid_credential",
    "invalid_key",
    "invalid_signature",
    "not_granted",
    "unauthorized",
    "oauth",
];

/// The checks, in a stable order. An empty list means there is nothing to be ready for.
pub fn assess(e: &Evidence<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    if let Some(v) = e.vault {
        out.push(match (&v.last_error, v.token) {
            (_, true) => Check {
                name: "vault".into(),
                ok: true,
                detail: match v.token_ttl_s {
                    Some(ttl) => format!("token held ({ttl} s left) from {}", v.server),
                    None => format!("token held from {}", v.server),
                },
            },
            (Some(err), false) => Check {
                name: "vault".into(),
                ok: false,
                detail: format!("no Vault token: {err}"),
            },
            (None, false) => Check {
                name: "vault".into(),
                ok: false,
                detail: format!(
                    "no Vault token yet from {} (logging in); see `carpd secrets check`",
                    v.server
                ),
            },
        });
    }
    if !e.passwords_from_local_copy.is_empty() {
        let list: Vec<String> = e
            .passwords_from_local_copy
            .iter()
            .map(|(g, why)| format!("{g} ({why})"))
            .collect();
        out.push(Check {
            name: "carp_passwords".into(),
            ok: false,
            detail: format!(
                "CARP password(s) from the local copy, not from Vault: {}; once Vault answers, `carpd reload` (or service carpd reload) reads them again",
                list.join(", ")
            ),
        });
    }
    if e.ips.is_empty() {
        return out;
    }
    let fresh = |ip: &IpEvidence| ip.ok_at.is_some_and(|t| e.now < t + e.stale_after);
    let refused: Vec<String> = e
        .ips
        .iter()
        .filter_map(|ip| match &ip.error {
            Some((kind, text)) if CREDENTIAL_KINDS.contains(kind) => {
                Some(format!("{}: {text}", ip.ip))
            }
            _ => None,
        })
        .collect();
    out.push(Check {
        name: "ovh_credentials".into(),
        ok: refused.is_empty(),
        detail: if refused.is_empty() {
            "accepted".into()
        } else {
            refused.join("; ")
        },
    });
    let judged: Vec<(&str, &Verdict)> = e
        .ips
        .iter()
        .filter_map(|ip| ip.rights.as_ref().map(|v| (ip.ip.as_str(), v)))
        .collect();
    if !judged.is_empty() {
        let missing: Vec<String> = judged
            .iter()
            .filter_map(|(ip, v)| match v {
                Verdict::Missing(lines) => Some(format!("{ip}: {}", rights::fix(lines))),
                _ => None,
            })
            .collect();
        let unverified: Vec<String> = judged
            .iter()
            .filter_map(|(ip, v)| match v {
                Verdict::Unverified(why) => Some(format!("{ip}: unverified: {why}")),
                _ => None,
            })
            .collect();
        out.push(Check {
            name: "ovh_rights".into(),
            ok: missing.is_empty(),
            detail: if !missing.is_empty() {
                missing.join("; ")
            } else if !unverified.is_empty() {
                // Not a fault: OVH gives no way to read them. Said, so nobody assumes.
                unverified.join("; ")
            } else {
                "the credential's access rules grant every call of a claim".into()
            },
        });
    }
    let unreachable: Vec<String> = e
        .ips
        .iter()
        .filter(|ip| !fresh(ip))
        .map(|ip| match &ip.error {
            Some((_, text)) => format!("{}: {text}", ip.ip),
            None if ip.ok_at.is_none() => format!("{}: not checked yet", ip.ip),
            None => format!(
                "{}: no successful check for more than {}",
                ip.ip,
                humantime::format_duration(e.stale_after)
            ),
        })
        .collect();
    out.push(Check {
        name: "ovh_api".into(),
        ok: unreachable.is_empty(),
        detail: if unreachable.is_empty() {
            "every failover IP was located recently".into()
        } else {
            unreachable.join("; ")
        },
    });
    let vmacs: Vec<&(bool, usize, String)> =
        e.ips.iter().filter_map(|ip| ip.own_vmac.as_ref()).collect();
    if !vmacs.is_empty() {
        let bad: Vec<String> = vmacs
            .iter()
            .filter(|(exists, ips, _)| !*exists || *ips == 0)
            .map(|(exists, _, mac)| {
                if *exists {
                    format!("virtual MAC {mac} holds no IP: OVH deletes a vMAC with its last IP; give it this node's own IP")
                } else {
                    format!("virtual MAC {mac} does not exist: create it in the OVH manager for this VM's NIC, or correct ovh_virtual_mac.mac")
                }
            })
            .collect();
        out.push(Check {
            name: "own_vmac".into(),
            ok: bad.is_empty(),
            detail: if bad.is_empty() {
                "present and holding an IP".into()
            } else {
                bad.join("; ")
            },
        });
    }
    if e.clock_needed {
        let max = e.max_clock_delta.as_secs();
        out.push(match e.clock_delta {
            Some(d) if d.unsigned_abs() <= max => Check {
                name: "clock".into(),
                ok: true,
                detail: format!("{d:+} s from OVH"),
            },
            Some(d) => Check {
                name: "clock".into(),
                ok: false,
                detail: format!(
                    "this clock is {d:+} s from OVH's (more than {max} s): signed calls may be refused; fix NTP (service ntpd status)"
                ),
            },
            None => Check {
                name: "clock".into(),
                ok: false,
                detail: "not measured yet (no successful OVH call)".into(),
            },
        });
    }
    out
}

/// Ready when every check passed.
pub fn ready(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ok_ip(now: Instant) -> IpEvidence {
        IpEvidence {
            ip: "51.68.252.230".into(),
            ok_at: Some(now),
            error: None,
            own_vmac: Some((true, 1, "02:00:00:aa:bb:cc".into())),
            rights: Some(Verdict::Granted),
        }
    }

    fn evidence<'a>(
        now: Instant,
        ips: &'a [IpEvidence],
        vault: Option<&'a AgentView>,
    ) -> Evidence<'a> {
        Evidence {
            now,
            stale_after: MIN,
            ips,
            vault,
            clock_delta: Some(1),
            max_clock_delta: Duration::from_secs(10),
            clock_needed: true,
            passwords_from_local_copy: &[],
        }
    }

    #[test]
    fn a_password_from_the_local_copy_is_not_ready_and_says_how_to_recover() {
        let now = Instant::now();
        let ips = [ok_ip(now)];
        let copies = [("2@vmx1".parse().unwrap(), "Vault unreachable".to_string())];
        let mut e = evidence(now, &ips, None);
        e.passwords_from_local_copy = &copies;
        let checks = assess(&e);
        assert_eq!(failing(&checks), vec!["carp_passwords"]);
        let c = checks.iter().find(|c| c.name == "carp_passwords").unwrap();
        assert!(
            c.detail.contains("2@vmx1 (Vault unreachable)"),
            "{}",
            c.detail
        );
        assert!(c.detail.contains("carpd reload"), "{}", c.detail);
        assert!(!ready(&checks));
    }

    fn failing(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn all_good_is_ready() {
        let now = Instant::now();
        let ips = [ok_ip(now)];
        let v = AgentView {
            server: "https://vault:8200".into(),
            token: true,
            token_ttl_s: Some(3000),
            ..AgentView::default()
        };
        let checks = assess(&evidence(now, &ips, Some(&v)));
        assert_eq!(checks.len(), 6, "{checks:?}");
        assert!(ready(&checks), "{checks:?}");
    }

    #[test]
    fn each_fault_fails_its_own_check_and_says_why() {
        let now = Instant::now();
        let base = ok_ip(now);
        let table: Vec<(IpEvidence, Option<i64>, &str, &str)> = vec![
            (
                IpEvidence {
                    ok_at: Some(now - 5 * MIN),
                    error: Some((
                        "not_granted",
                        "NOT_GRANTED_CALL on GET /dedicated/server".into(),
                    )),
                    ..base.clone()
                },
                Some(0),
                "ovh_credentials",
                "NOT_GRANTED_CALL",
            ),
            (
                IpEvidence {
                    ok_at: Some(now - 5 * MIN),
                    error: Some(("network", "connection refused".into())),
                    ..base.clone()
                },
                Some(0),
                "ovh_api",
                "connection refused",
            ),
            (
                IpEvidence {
                    ok_at: None,
                    ..base.clone()
                },
                None,
                "ovh_api",
                "not checked yet",
            ),
            (
                IpEvidence {
                    own_vmac: Some((false, 0, "02:00:00:aa:bb:cc".into())),
                    ..base.clone()
                },
                Some(0),
                "own_vmac",
                "does not exist",
            ),
            (
                IpEvidence {
                    own_vmac: Some((true, 0, "02:00:00:aa:bb:cc".into())),
                    ..base.clone()
                },
                Some(0),
                "own_vmac",
                "holds no IP",
            ),
            (base.clone(), Some(-45), "clock", "fix NTP"),
            (
                IpEvidence {
                    rights: Some(Verdict::Missing(vec![
                        "POST /dedicated/server/ns1/virtualMac/*/virtualAddress (to bind the IP to this node's vMAC; IAM action dedicatedServer:apiovh:virtualMac/virtualAddress/create)".into(),
                    ])),
                    ..base.clone()
                },
                Some(0),
                "ovh_rights",
                "POST /dedicated/server/ns1/virtualMac/*/virtualAddress",
            ),
        ];
        for (ip, delta, name, says) in table {
            let ips = [ip];
            let mut e = evidence(now, &ips, None);
            e.clock_delta = delta;
            let checks = assess(&e);
            let bad = failing(&checks);
            assert!(bad.contains(&name), "{name}: {checks:?}");
            let c = checks.iter().find(|c| c.name == name).unwrap();
            assert!(c.detail.contains(says), "{name}: {}", c.detail);
            assert!(!ready(&checks));
        }
    }

    #[test]
    fn vault_without_token_is_not_ready_and_nothing_to_claim_is_only_vault() {
        let now = Instant::now();
        let v = AgentView {
            server: "https://vault:8200".into(),
            token: false,
            last_error: Some("permission denied (AppRole login)".into()),
            ..AgentView::default()
        };
        let checks = assess(&evidence(now, &[], Some(&v)));
        assert_eq!(failing(&checks), vec!["vault"]);
        assert!(checks[0].detail.contains("permission denied"));
        assert!(assess(&evidence(now, &[], None)).is_empty());
    }

    #[test]
    fn unverified_rights_are_said_but_ready() {
        let now = Instant::now();
        let ips = [IpEvidence {
            rights: Some(Verdict::Unverified("an OAuth2 service account".into())),
            ..ok_ip(now)
        }];
        let checks = assess(&evidence(now, &ips, None));
        let c = checks.iter().find(|c| c.name == "ovh_rights").unwrap();
        assert!(c.ok && c.detail.contains("unverified"), "{c:?}");
        assert!(ready(&checks));
        let ips = [IpEvidence {
            rights: None,
            ..ok_ip(now)
        }];
        let checks = assess(&evidence(now, &ips, None));
        assert!(
            checks.iter().all(|c| c.name != "ovh_rights"),
            "not judged yet: no check"
        );
    }

    #[test]
    fn oauth2_does_not_need_the_clock() {
        let now = Instant::now();
        let ips = [ok_ip(now)];
        let mut e = evidence(now, &ips, None);
        e.clock_needed = false;
        e.clock_delta = None;
        let checks = assess(&e);
        assert!(ready(&checks), "{checks:?}");
        assert!(checks.iter().all(|c| c.name != "clock"));
    }
}
