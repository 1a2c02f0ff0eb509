//! The `ovh:` and `failover_ips:` sections of carpd.yaml: their YAML shape, their checks, and
//! the checked model the OVH side uses.
//!
//! Kept in its own file so that other sections (vault) grow beside it without touching it.
//! Pure like the rest of validation: no file system, no network. Shape:
//!
//! ```yaml
//! ovh:
//!   endpoint: ovh-eu                    # or a base URL (https://...)
//!   credentials: { file: /etc/ovh.conf }            # python-ovh INI
//!   # credentials: { vault: apps/network/x, fields: { consumer_key: ck } }
//!   claim_deadline: 300                 # seconds, optional
//!   recheck_interval: 30s               # while MASTER: re-read the binding, repair drift
//!   hold_down: 60s                      # at most one moving claim per IP per period
//!   requests_per_minute: 30             # steady state (checks): this router's share of the key's budget
//!   failover_requests_per_minute: 120   # what a failover may burst to, for its duration
//!   claim_concurrency: 16               # claims of one failover running at once
//!   # token_url: https://...            # OAuth2 token URL of a custom endpoint
//!   refused_retry: 2m                   # retry of a claim the credential's rights refuse
//! failover_ips:
//!   - ip: 51.68.252.230
//!     group: 2@vmx1
//!     ovh_virtual_mac: { service: ns1.eu, mac: "02:00:00:aa:bb:cc", virtual_machine_name: router-003 }
//!     allow_last_ip_release: false
//!   - ip: 51.68.252.231
//!     group: 3@vmx1
//!     ovh_ip_move: { block: 51.68.252.231/32, service: ns2.eu }
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::GroupConfig;
use super::daemon::{RawDuration, duration};
use super::error::{Pos, Problems};
use crate::carp::GroupId;
use crate::ovh::Endpoint;
use crate::ovh::credentials::FieldNames;
use crate::ovh::failover::{MoveTarget, VmacTarget};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOvh {
    pub endpoint: Option<Spanned<String>>,
    pub credentials: Option<RawOvhCredentials>,
    pub claim_deadline: Option<Spanned<i64>>,
    pub recheck_interval: Option<Spanned<RawDuration>>,
    pub hold_down: Option<Spanned<RawDuration>>,
    pub proxy: Option<Spanned<String>>,
    pub requests_per_minute: Option<Spanned<i64>>,
    pub failover_requests_per_minute: Option<Spanned<i64>>,
    pub claim_concurrency: Option<Spanned<i64>>,
    pub token_url: Option<Spanned<String>>,
    pub refused_retry: Option<Spanned<RawDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOvhCredentials {
    pub file: Option<Spanned<String>>,
    pub vault: Option<Spanned<String>>,
    pub fields: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailoverIp {
    pub ip: Spanned<String>,
    pub group: Spanned<String>,
    pub ovh_virtual_mac: Option<RawVmac>,
    pub ovh_ip_move: Option<RawIpMove>,
    pub allow_last_ip_release: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVmac {
    pub service: Spanned<String>,
    pub mac: Spanned<String>,
    pub virtual_machine_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpMove {
    pub block: Option<Spanned<String>>,
    pub service: Spanned<String>,
}

/// Where the OVH credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OvhCredentialSource {
    /// A python-ovh INI file (root-only).
    File(PathBuf),
    /// A kv-v2 secret in Vault/OpenBao (`mount/path`) and the names of its fields.
    Vault { path: String, fields: FieldNames },
}

/// The checked `ovh:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OvhConfig {
    pub endpoint: Endpoint,
    pub credentials: OvhCredentialSource,
    pub claim_deadline: Duration,
    /// While MASTER, how often each failover IP's binding is re-read (and repaired).
    pub recheck_interval: Duration,
    /// At most one claim that moves an IP per this period, unless the local state changed:
    /// two MASTERs of a split brain cannot ping-pong the IP faster than this.
    pub hold_down: Duration,
    /// The HTTP proxy to reach the OVH API through (`ovh.proxy`); `None`: direct, whatever
    /// the environment says (src/remote.rs).
    pub proxy: Option<String>,
    /// This daemon's OVH request budget (requests in any minute) when set; claims come
    /// first, checks use what is left. `None`: the default, 60.
    pub requests_per_minute: Option<u32>,
    /// What a failover's claims may send in any minute, for the failover's duration (a rare
    /// burst above the steady budget; any 429 slows everything at once). `None`: the default,
    /// 120, or the steady budget when that is higher.
    pub failover_requests_per_minute: Option<u32>,
    /// Claims running at once (each IP still has one writer).
    pub claim_concurrency: usize,
    /// How long after a claim refused for lack of rights (or an invalid credential) it is
    /// tried again: slow, so a broken credential costs one refused call per period, and
    /// bounded, so fixing the credential heals the binding without a restart.
    pub refused_retry: Duration,
    pub pos: Pos,
}

impl OvhConfig {
    /// What a failover may send in a minute: the key, else the default (never below the
    /// steady budget).
    pub fn failover_budget(&self) -> u32 {
        self.failover_requests_per_minute.unwrap_or_else(|| {
            DEFAULT_FAILOVER_RPM.max(
                self.requests_per_minute
                    .unwrap_or(crate::ovh::policy::DEFAULT_PER_MINUTE),
            )
        })
    }
}

/// Default of `ovh.recheck_interval`: two reads per IP per minute stay far inside OVH's rate
/// budget (carpd keeps under 60 requests a minute in all).
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);
/// Default of `ovh.hold_down`.
pub const DEFAULT_HOLD_DOWN: Duration = Duration::from_secs(60);
/// Default of `ovh.refused_retry`.
pub const DEFAULT_REFUSED_RETRY: Duration = Duration::from_secs(120);
const REFUSED_RETRY_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));
const RECHECK_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
const HOLD_DOWN_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// How a failover IP is bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailoverMode {
    VirtualMac(VmacTarget),
    IpMove(MoveTarget),
}

/// One checked `failover_ips` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverIp {
    pub ip: Ipv4Addr,
    /// The CARP group whose state it follows.
    pub group: GroupId,
    pub mode: FailoverMode,
    /// `failover_ips[0]`, for messages.
    pub key: String,
    pub pos: Pos,
}

const DEFAULT_DEADLINE: u64 = 300;
/// Range of `ovh.requests_per_minute`.
const RPM_RANGE: (i64, i64) = (6, 600);
/// Default of `ovh.failover_requests_per_minute`: 16 IPs at about 4 requests each plus the
/// shared reads fit in one minute's burst; twice OVH's guidance, for the seconds a failover
/// lasts.
pub const DEFAULT_FAILOVER_RPM: u32 = crate::ovh::policy::DEFAULT_FAILOVER_PER_MINUTE;
const FAILOVER_RPM_RANGE: (i64, i64) = (6, 6000);
/// Default of `ovh.claim_concurrency`: 16 IPs of one group in one wave.
pub const DEFAULT_CLAIM_CONCURRENCY: usize = 16;
const CONCURRENCY_RANGE: (i64, i64) = (1, 256);

fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// `02:00:00:aa:bb:cc` (any case) -> lowercase; anything else is an error message.
pub fn parse_mac(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        Ok(s.trim().to_lowercase())
    } else {
        Err(format!(
            "'{}' is not a MAC address: expected six hex pairs separated by colons, e.g. 02:00:00:aa:bb:cc (quote it in YAML)",
            s.escape_default()
        ))
    }
}

/// Checks `ovh:`.
pub fn validate_ovh(raw: &RawOvh, p: &mut Problems) -> Option<OvhConfig> {
    let before = p.list.len();
    let pos = raw
        .endpoint
        .as_ref()
        .map(Pos::of)
        .or_else(|| {
            raw.credentials
                .as_ref()
                .and_then(|c| c.file.as_ref().or(c.vault.as_ref()).map(Pos::of))
        })
        .unwrap_or_default();
    let endpoint = match &raw.endpoint {
        None => {
            p.add(
                pos,
                "ovh.endpoint",
                "is missing: name the API endpoint (ovh-eu, ovh-ca, ovh-us, kimsufi-eu, ... or a base URL)",
            );
            None
        }
        Some(e) => match Endpoint::parse(&e.value) {
            Ok(ep) => Some(ep),
            Err(m) => {
                p.add(Pos::of(e), "ovh.endpoint", m);
                None
            }
        },
    };
    let endpoint = match (&raw.token_url, endpoint) {
        (Some(t), Some(ep)) => match Endpoint::parse(&t.value) {
            Ok(u) => Some(ep.with_token_url(u.base())),
            Err(_) => {
                p.add(
                    Pos::of(t),
                    "ovh.token_url",
                    format!(
                        "'{}' is not an http(s) URL: give the OAuth2 token URL of the custom endpoint, e.g. https://proxy.example/auth/oauth2/token",
                        t.value.escape_default()
                    ),
                );
                None
            }
        },
        (_, ep) => ep,
    };
    let requests_per_minute = match &raw.requests_per_minute {
        None => Some(None),
        Some(n) if (RPM_RANGE.0..=RPM_RANGE.1).contains(&n.value) => {
            Some(u32::try_from(n.value).ok())
        }
        Some(n) => {
            p.add(
                Pos::of(n),
                "ovh.requests_per_minute",
                format!(
                    "{} is out of range: allowed {}..{} (OVH suggests staying under about 60 a minute per consumer key; two routers sharing one key take 30 each)",
                    n.value, RPM_RANGE.0, RPM_RANGE.1
                ),
            );
            None
        }
    };
    let failover_requests_per_minute = match &raw.failover_requests_per_minute {
        None => Some(None),
        Some(n)
            if (FAILOVER_RPM_RANGE.0..=FAILOVER_RPM_RANGE.1).contains(&n.value)
                && requests_per_minute
                    .flatten()
                    .is_none_or(|steady| n.value >= i64::from(steady)) =>
        {
            Some(u32::try_from(n.value).ok())
        }
        Some(n) => {
            p.add(
                Pos::of(n),
                "ovh.failover_requests_per_minute",
                format!(
                    "{} is out of range: allowed {}..{} and at least ovh.requests_per_minute (it is the burst a failover may use above the steady budget; default {DEFAULT_FAILOVER_RPM}). Fix: raise it, or lower ovh.requests_per_minute",
                    n.value, FAILOVER_RPM_RANGE.0, FAILOVER_RPM_RANGE.1
                ),
            );
            None
        }
    };
    let claim_concurrency = match &raw.claim_concurrency {
        None => Some(DEFAULT_CLAIM_CONCURRENCY),
        Some(n) if (CONCURRENCY_RANGE.0..=CONCURRENCY_RANGE.1).contains(&n.value) => {
            usize::try_from(n.value).ok()
        }
        Some(n) => {
            p.add(
                Pos::of(n),
                "ovh.claim_concurrency",
                format!(
                    "{} is out of range: allowed {}..{} (how many failover IPs are claimed at once; default {DEFAULT_CLAIM_CONCURRENCY}). Fix: set a number in that range",
                    n.value, CONCURRENCY_RANGE.0, CONCURRENCY_RANGE.1
                ),
            );
            None
        }
    };
    let claim_deadline = match &raw.claim_deadline {
        None => Some(Duration::from_secs(DEFAULT_DEADLINE)),
        Some(d) if (10..=3600).contains(&d.value) => Some(Duration::from_secs(d.value as u64)),
        Some(d) => {
            p.add(
                Pos::of(d),
                "ovh.claim_deadline",
                format!(
                    "{} is out of range: allowed 10..3600 seconds (how long one claim may take, OVH tasks included; default {DEFAULT_DEADLINE})",
                    d.value
                ),
            );
            None
        }
    };
    let recheck_interval = match &raw.recheck_interval {
        None => Some(DEFAULT_RECHECK),
        Some(v) => duration(p, "ovh.recheck_interval", v, RECHECK_RANGE),
    };
    let hold_down = match &raw.hold_down {
        None => Some(DEFAULT_HOLD_DOWN),
        Some(v) => duration(p, "ovh.hold_down", v, HOLD_DOWN_RANGE),
    };
    let refused_retry = match &raw.refused_retry {
        None => Some(DEFAULT_REFUSED_RETRY),
        Some(v) => duration(p, "ovh.refused_retry", v, REFUSED_RETRY_RANGE),
    };
    let credentials = match &raw.credentials {
        None => {
            p.add(
                pos,
                "ovh.credentials",
                "is missing: give {file: /etc/ovh.conf} (python-ovh INI, root-only) or {vault: mount/path}",
            );
            None
        }
        Some(c) => validate_credentials(c, pos, p),
    };
    let proxy = raw.proxy.as_ref().and_then(|u| {
        super::validate::check_proxy(&u.value)
            .map_err(|m| p.add(Pos::of(u), "ovh.proxy", m))
            .ok()
    });
    if p.list.len() != before {
        return None;
    }
    Some(OvhConfig {
        proxy,
        endpoint: endpoint?,
        credentials: credentials?,
        claim_deadline: claim_deadline?,
        recheck_interval: recheck_interval?,
        hold_down: hold_down?,
        requests_per_minute: requests_per_minute?,
        failover_requests_per_minute: failover_requests_per_minute?,
        claim_concurrency: claim_concurrency?,
        refused_retry: refused_retry?,
        pos,
    })
}

fn validate_credentials(
    c: &RawOvhCredentials,
    pos: Pos,
    p: &mut Problems,
) -> Option<OvhCredentialSource> {
    let k = "ovh.credentials";
    match (&c.file, &c.vault) {
        (Some(f), None) => {
            if c.fields.is_some() {
                p.add(
                    Pos::of(f),
                    format!("{k}.fields"),
                    "only applies to {vault: ...}: an ovh.conf file uses python-ovh's key names",
                );
                return None;
            }
            let path = PathBuf::from(&f.value);
            if !path.is_absolute() {
                p.add(
                    Pos::of(f),
                    format!("{k}.file"),
                    format!("'{}' must be an absolute path", path.display()),
                );
                return None;
            }
            Some(OvhCredentialSource::File(path))
        }
        (None, Some(v)) => {
            let path = v.value.trim_matches('/').to_string();
            if !path.contains('/') || path.split('/').any(str::is_empty) {
                p.add(
                    Pos::of(v),
                    format!("{k}.vault"),
                    format!(
                        "'{}' must be <mount>/<path> of a kv-v2 secret, e.g. apps/network/carp-hyper-001-switch",
                        v.value
                    ),
                );
                return None;
            }
            let mut names = FieldNames::default();
            let mut ok = true;
            for (name, value) in c.fields.iter().flatten() {
                let slot = match name.as_str() {
                    "application_key" => &mut names.application_key,
                    "application_secret" => &mut names.application_secret,
                    "consumer_key" => &mut names.consumer_key,
                    "client_id" => &mut names.client_id,
                    "client_secret" => &mut names.client_secret,
                    "endpoint" => &mut names.endpoint,
                    other => {
                        p.add(
                            Pos::of(value),
                            format!("{k}.fields.{other}"),
                            "unknown: allowed application_key, application_secret, consumer_key, client_id, client_secret, endpoint (each maps to the field name in the secret)",
                        );
                        ok = false;
                        continue;
                    }
                };
                if value.value.trim().is_empty() {
                    p.add(
                        Pos::of(value),
                        format!("{k}.fields.{name}"),
                        "must name a field of the secret",
                    );
                    ok = false;
                }
                *slot = value.value.trim().to_string();
            }
            ok.then_some(OvhCredentialSource::Vault {
                path,
                fields: names,
            })
        }
        (Some(f), Some(_)) => {
            p.add(Pos::of(f), k, "has both file and vault: keep one source");
            None
        }
        (None, None) => {
            p.add(
                pos,
                k,
                "needs a source: {file: /etc/ovh.conf} or {vault: mount/path}",
            );
            None
        }
    }
}

/// Checks `failover_ips:`; `groups` are the configured CARP groups, `node` the default
/// virtual machine name. Not-configured groups and IPs missing from the group's addresses
/// are warnings: the group may be managed outside carpd.
pub fn validate_failover_ips(
    raw: &[RawFailoverIp],
    groups: &[GroupConfig],
    node: &str,
    have_ovh: bool,
    p: &mut Problems,
    warnings: &mut Problems,
) -> Vec<FailoverIp> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
    for (i, f) in raw.iter().enumerate() {
        let key = format!("failover_ips[{i}]");
        let before = p.list.len();
        let pos = Pos::of(&f.ip);
        if i == 0 && !have_ovh {
            p.add(
                pos,
                key.clone(),
                "failover IPs need an ovh: section (endpoint and credentials)",
            );
        }
        let ip = match f.ip.value.trim().parse::<Ipv4Addr>() {
            Ok(a) if a.is_unspecified() || a.is_loopback() || a.is_multicast() => {
                p.add(
                    pos,
                    format!("{key}.ip"),
                    format!("{a} cannot be a failover IP"),
                );
                None
            }
            Ok(a) => {
                if let Some(line) = seen.get(&a) {
                    p.add(
                        pos,
                        format!("{key}.ip"),
                        format!("{a} is already listed at line {line}: one entry per failover IP"),
                    );
                }
                seen.insert(a, pos.line);
                Some(a)
            }
            Err(_) => {
                p.add(
                    pos,
                    format!("{key}.ip"),
                    format!(
                        "'{}' is not an IPv4 address (OVH failover IPs are IPv4, without prefix length)",
                        f.ip.value.escape_default()
                    ),
                );
                None
            }
        };
        let group = match f.group.value.trim().parse::<GroupId>() {
            Ok(g) => {
                match groups.iter().find(|c| c.id == g) {
                    None => warnings.add(
                        Pos::of(&f.group),
                        format!("{key}.group"),
                        format!(
                            "{g} is not one of the groups: in this file; carpd follows its state but does not manage it"
                        ),
                    ),
                    Some(c) => {
                        if let Some(a) = ip
                            && !c.addresses.iter().any(|n| n.addr() == a)
                        {
                            warnings.add(
                                pos,
                                format!("{key}.ip"),
                                format!(
                                    "{a} is not an address of group {g}: the failover IP usually is the group's VIP"
                                ),
                            );
                        }
                    }
                }
                Some(g)
            }
            Err(e) => {
                p.add(Pos::of(&f.group), format!("{key}.group"), e);
                None
            }
        };
        let mode = match (&f.ovh_virtual_mac, &f.ovh_ip_move) {
            (Some(v), None) => {
                let mac = match parse_mac(&v.mac.value) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        p.add(Pos::of(&v.mac), format!("{key}.ovh_virtual_mac.mac"), e);
                        None
                    }
                };
                check_service(&v.service, &format!("{key}.ovh_virtual_mac.service"), p);
                let vm = v
                    .virtual_machine_name
                    .as_ref()
                    .map_or(node.to_string(), |s| s.value.trim().to_string());
                if vm.is_empty() {
                    p.add(
                        pos,
                        format!("{key}.ovh_virtual_mac.virtual_machine_name"),
                        "must not be empty (default: the node name)",
                    );
                }
                match (ip, mac) {
                    (Some(ip), Some(mac)) => Some(FailoverMode::VirtualMac(VmacTarget {
                        ip,
                        service: v.service.value.trim().to_string(),
                        mac,
                        virtual_machine_name: vm,
                        allow_last_ip_release: f
                            .allow_last_ip_release
                            .as_ref()
                            .is_some_and(|b| b.value),
                    })),
                    _ => None,
                }
            }
            (None, Some(m)) => {
                if let Some(b) = &f.allow_last_ip_release {
                    p.add(
                        Pos::of(b),
                        format!("{key}.allow_last_ip_release"),
                        "only applies to ovh_virtual_mac",
                    );
                }
                check_service(&m.service, &format!("{key}.ovh_ip_move.service"), p);
                let block = match &m.block {
                    None => ip.map(|a| IpNet::from(std::net::IpAddr::V4(a))),
                    Some(b) => match b.value.trim().parse::<IpNet>() {
                        Ok(n) if n.addr().is_ipv4() => {
                            let n = n.trunc();
                            if let Some(a) = ip
                                && !n.contains(&std::net::IpAddr::V4(a))
                            {
                                p.add(
                                    Pos::of(b),
                                    format!("{key}.ovh_ip_move.block"),
                                    format!("{n} does not contain the failover IP {a}"),
                                );
                            }
                            Some(n)
                        }
                        _ => {
                            p.add(
                                Pos::of(b),
                                format!("{key}.ovh_ip_move.block"),
                                format!(
                                    "'{}' is not an IPv4 block with prefix length, e.g. 51.68.252.230/32",
                                    b.value.escape_default()
                                ),
                            );
                            None
                        }
                    },
                };
                block.map(|block| {
                    FailoverMode::IpMove(MoveTarget {
                        block,
                        service: m.service.value.trim().to_string(),
                    })
                })
            }
            (Some(_), Some(_)) => {
                p.add(
                    pos,
                    key.clone(),
                    "has both ovh_virtual_mac and ovh_ip_move: choose one way to bind it",
                );
                None
            }
            (None, None) => {
                p.add(
                    pos,
                    key.clone(),
                    "says nothing about how to bind it: add ovh_virtual_mac: {service, mac} or ovh_ip_move: {service}",
                );
                None
            }
        };
        if p.list.len() != before {
            continue;
        }
        if let (Some(ip), Some(group), Some(mode)) = (ip, group, mode) {
            out.push(FailoverIp {
                ip,
                group,
                mode,
                key,
                pos,
            });
        }
    }
    out
}

fn check_service(s: &Spanned<String>, key: &str, p: &mut Problems) {
    if !valid_service(s.value.trim()) {
        p.add(
            Pos::of(s),
            key,
            format!(
                "'{}' is not an OVH service name (e.g. ns1234567.ip-51-68-252.eu)",
                s.value.escape_default()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError, parse};

    const BASE: &str = "\
node: router-003
groups:
  - interface: vmx1
    vhid: 2
    addresses: [51.68.252.230/32]
";

    fn parse_with(extra: &str) -> Result<Config, ConfigError> {
        parse(&format!("{BASE}{extra}"), Path::new("carpd.yaml"))
    }

    fn problems(extra: &str) -> Vec<String> {
        parse_with(extra)
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    const GOOD: &str = "\
ovh:
  endpoint: ovh-eu
  credentials: { file: /etc/ovh.conf }
failover_ips:
  - ip: 51.68.252.230
    group: 2@vmx1
    ovh_virtual_mac:
      service: ns1234567.ip-51-68-252.eu
      mac: \"02:00:00:AA:BB:CC\"
  - ip: 51.68.253.1
    group: 3@vmx1
    ovh_ip_move: { block: 51.68.253.0/30, service: ns7654321.ip-51-68-253.eu }
";

    #[test]
    fn good_sections_build_the_model() {
        let c = parse_with(GOOD).unwrap();
        let o = c.ovh.unwrap();
        assert_eq!(o.endpoint.name(), "ovh-eu");
        assert_eq!(
            o.credentials,
            OvhCredentialSource::File("/etc/ovh.conf".into())
        );
        assert_eq!(o.claim_deadline, Duration::from_secs(300));
        assert_eq!(o.recheck_interval, DEFAULT_RECHECK);
        assert_eq!(o.hold_down, DEFAULT_HOLD_DOWN);
        assert_eq!(o.requests_per_minute, None);
        assert_eq!(o.failover_requests_per_minute, None);
        assert_eq!(o.claim_concurrency, DEFAULT_CLAIM_CONCURRENCY);
        assert_eq!(o.refused_retry, DEFAULT_REFUSED_RETRY);
        assert_eq!(c.failover_ips.len(), 2);
        match &c.failover_ips[0].mode {
            FailoverMode::VirtualMac(v) => {
                assert_eq!(v.mac, "02:00:00:aa:bb:cc");
                assert_eq!(v.virtual_machine_name, "router-003");
                assert!(!v.allow_last_ip_release);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.failover_ips[0].group.to_string(), "2@vmx1");
        // 3@vmx1 is not managed here: a warning, not an error.
        assert!(
            c.warnings.iter().any(|w| w.key == "failover_ips[1].group"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn budget_and_token_url_of_a_custom_endpoint() {
        let c = parse_with(
            "ovh:\n  endpoint: https://proxy.example/1.0\n  credentials: { file: /etc/ovh.conf }\n  requests_per_minute: 30\n  token_url: https://proxy.example/auth/oauth2/token\n",
        )
        .unwrap();
        let o = c.ovh.unwrap();
        assert_eq!(o.requests_per_minute, Some(30));
        assert_eq!(
            o.endpoint.token_url(),
            Some("https://proxy.example/auth/oauth2/token")
        );
        // Without token_url, a custom endpoint has none (never a guessed one).
        let c = parse_with(
            "ovh:\n  endpoint: https://proxy.example/1.0\n  credentials: { file: /etc/ovh.conf }\n",
        )
        .unwrap();
        assert_eq!(c.ovh.unwrap().endpoint.token_url(), None);
    }

    #[test]
    fn failover_burst_and_claim_concurrency() {
        let base = "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /etc/ovh.conf }\n";
        let c = parse_with(&format!(
            "{base}  requests_per_minute: 30\n  failover_requests_per_minute: 200\n  claim_concurrency: 4\n"
        ))
        .unwrap();
        let o = c.ovh.unwrap();
        assert_eq!(o.failover_requests_per_minute, Some(200));
        assert_eq!(o.claim_concurrency, 4);
        // The burst is never below the steady budget.
        let e = parse_with(&format!(
            "{base}  requests_per_minute: 60\n  failover_requests_per_minute: 30\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ovh.failover_requests_per_minute") && e.contains("Fix:"),
            "{e}"
        );
        let e = parse_with(&format!("{base}  claim_concurrency: 0\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ovh.claim_concurrency") && e.contains("1..256"),
            "{e}"
        );
        // A steady budget above the default burst: the burst's default follows it.
        let c = parse_with(&format!("{base}  requests_per_minute: 300\n")).unwrap();
        assert_eq!(c.ovh.unwrap().failover_budget(), 300);
    }

    #[test]
    fn vault_credentials_with_field_names() {
        let c = parse_with(
            "vault: {}\novh:\n  endpoint: https://127.0.0.1:9/1.0\n  credentials:\n    vault: apps/network/x\n    fields: { consumer_key: ck }\n",
        )
        .unwrap();
        match c.ovh.unwrap().credentials {
            OvhCredentialSource::Vault { path, fields } => {
                assert_eq!(path, "apps/network/x");
                assert_eq!(fields.consumer_key, "ck");
                assert_eq!(fields.application_key, "application_key");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn problem_table() {
        let table: &[(&str, &str)] = &[
            (
                "ovh:\n  endpoint: ovh-fr\n  credentials: { file: /etc/ovh.conf }\n",
                "carpd.yaml:7:13: ovh.endpoint: unknown OVH endpoint 'ovh-fr'",
            ),
            ("ovh:\n  endpoint: ovh-eu\n", "ovh.credentials: is missing"),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /x }\n  recheck_interval: 2h\n",
                "ovh.recheck_interval: 2h is out of range: allowed 1s to 1h",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /x }\n  hold_down: soon\n",
                "ovh.hold_down: \"soon\" is not a duration",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /x }\n  requests_per_minute: 5000\n",
                "ovh.requests_per_minute: 5000 is out of range: allowed 6..600",
            ),
            (
                "ovh:\n  endpoint: https://p.example/1.0\n  credentials: { file: /x }\n  token_url: p.example/token\n",
                "ovh.token_url: 'p.example/token' is not an http(s) URL",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { vault: apps/network/x }\n",
                "ovh.credentials: come from Vault (apps/network/x), but carpd.yaml has no vault: section",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { file: etc/ovh.conf }\n",
                "ovh.credentials.file: 'etc/ovh.conf' must be an absolute path",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { vault: x }\n",
                "ovh.credentials.vault: 'x' must be <mount>/<path>",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { vault: a/b, fields: { password: p } }\n",
                "ovh.credentials.fields.password: unknown",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /x, vault: a/b }\n",
                "has both file and vault",
            ),
            (
                "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /x }\n  claim_deadline: 1\n",
                "ovh.claim_deadline: 1 is out of range",
            ),
            (
                "failover_ips:\n  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { service: ns1.eu }\n",
                "failover IPs need an ovh: section",
            ),
        ];
        for (extra, want) in table {
            let got = problems(extra);
            assert!(
                got.iter().any(|p| p.contains(want)),
                "{extra}\nwant: {want}\ngot: {got:#?}"
            );
        }
    }

    #[test]
    fn failover_ip_problem_table() {
        let head =
            "ovh:\n  endpoint: ovh-eu\n  credentials: { file: /etc/ovh.conf }\nfailover_ips:\n";
        let table: &[(&str, &str)] = &[
            (
                "  - ip: 51.68.252.230/32\n    group: 2@vmx1\n    ovh_ip_move: { service: ns1.eu }\n",
                "carpd.yaml:10:9: failover_ips[0].ip: '51.68.252.230/32' is not an IPv4 address",
            ),
            (
                "  - ip: 51.68.252.230\n    group: vmx1\n    ovh_ip_move: { service: ns1.eu }\n",
                "carpd.yaml:11:12: failover_ips[0].group: 'vmx1' is not a CARP group",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_virtual_mac: { service: ns1.eu, mac: \"02:00:00:aa:bb\" }\n",
                "failover_ips[0].ovh_virtual_mac.mac: '02:00:00:aa:bb' is not a MAC address",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { block: 51.68.253.0/24, service: ns1.eu }\n",
                "failover_ips[0].ovh_ip_move.block: 51.68.253.0/24 does not contain the failover IP 51.68.252.230",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { service: \"ns1/eu\" }\n",
                "failover_ips[0].ovh_ip_move.service: 'ns1/eu' is not an OVH service name",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n",
                "says nothing about how to bind it",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { service: ns1.eu }\n    allow_last_ip_release: true\n",
                "allow_last_ip_release: only applies to ovh_virtual_mac",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { service: ns1.eu }\n  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { service: ns1.eu }\n",
                "failover_ips[1].ip: 51.68.252.230 is already listed at line 10",
            ),
            (
                "  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_ip_move: { service: ns1.eu }\n    typo: 1\n",
                "unknown field `typo`",
            ),
        ];
        for (extra, want) in table {
            let got = problems(&format!("{head}{extra}"));
            assert!(
                got.iter().any(|p| p.contains(want)),
                "{extra}\nwant: {want}\ngot: {got:#?}"
            );
        }
    }
}
