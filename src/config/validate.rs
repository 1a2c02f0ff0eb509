//! From the YAML shape to a checked [`Config`], collecting every problem with its position.
//!
//! Pure: no file system, no kernel. Checks that need the running kernel (does the interface
//! exist, can it do unicast) are in [`kernel_problems`], which takes what the kernel said as
//! plain values.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::Spanned;

use crate::carp::BackendInfo;
use crate::carp::{
    CarpKey, GroupId, KEY_LEN, MAX_SKEW, MAX_VHID, MULTICAST_V4, MULTICAST_V6, Sysctl, Vhid,
    validate_ifname,
};

use super::error::{ConfigError, Pos, Problem, Problems};
use super::raw::{RawConfig, RawGroup, RawPassword, RawVault};
use super::{Config, GroupConfig, PasswordSource, VaultConfig};

/// Parses YAML into the raw shape; a syntax or type error becomes one problem with the
/// parser's position and, unless the file may hold a password, its source snippet.
pub fn parse_yaml(text: &str, file: &Path) -> Result<RawConfig, ConfigError> {
    if text.trim().is_empty() {
        let mut p = Problems::new(file);
        p.add(
            Pos::default(),
            "",
            "the configuration is empty: at least `node:` is required (see carpd.yaml(5))",
        );
        return Err(p.into_error());
    }
    serde_saphyr::from_str::<RawConfig>(text).map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_default();
        let full = e.to_string();
        let mut lines = full.lines();
        let first = lines.next().unwrap_or("invalid YAML");
        // The parser's first line repeats the position ("error: line 4 column 5: ..."),
        // which Problem prints in file:line:col form already.
        let message = strip_position_prefix(first);
        // The snippet quotes the lines around the error, values included: a password written
        // in the file (or a password line next to the error) would be printed. Since the file
        // did not parse, which value is a password cannot be known; any `password` key hides
        // the snippet, and the position still says where to look.
        let detail = if holds_password(text) {
            "(source lines not shown: this file holds a password)".to_string()
        } else {
            lines
                .collect::<Vec<_>>()
                .join("\n")
                .replace("<input>", &file.display().to_string())
        };
        ConfigError {
            problems: vec![Problem {
                file: file.to_path_buf(),
                pos,
                key: String::new(),
                message: message.to_string(),
                detail,
            }],
        }
    })
}

/// Whether any line has a `password` key (`password:` after the indentation and list dashes,
/// in any case or quoting): what a parse error must then not quote.
fn holds_password(text: &str) -> bool {
    text.lines().any(|l| {
        let key = l.trim_start().trim_start_matches(['-', ' ']);
        let key = key.trim_start_matches(['"', '\'']);
        key.get(..8)
            .is_some_and(|k| k.eq_ignore_ascii_case("password"))
    })
}

fn strip_position_prefix(line: &str) -> &str {
    let rest = line.strip_prefix("error: ").unwrap_or(line);
    if let Some(after) = rest.strip_prefix("line ")
        && let Some((_, msg)) = after.split_once(": ")
    {
        return msg;
    }
    rest
}

/// Checks the raw configuration and builds the model, or lists every problem.
pub fn validate(raw: RawConfig, file: &Path) -> Result<Config, ConfigError> {
    let mut p = Problems::new(file);
    let mut warnings = Problems::new(file);

    let node = match &raw.node {
        None => {
            p.add(
                Pos::default(),
                "node",
                "is missing: name this node (e.g. `node: router-003`); it appears in logs and status",
            );
            String::new()
        }
        Some(n) if n.value.trim().is_empty() || n.value.len() > 64 => {
            p.add(Pos::of(n), "node", "must be 1..64 characters");
            String::new()
        }
        Some(n) => n.value.clone(),
    };

    let mut sysctls = Vec::new();
    let mut allow_at_start = true;
    if let Some(c) = &raw.carp {
        if let Some(v) = &c.allow {
            sysctls.push((Sysctl::Allow, i64::from(v.value)));
        }
        if let Some(v) = &c.allow_at_start {
            allow_at_start = v.value;
            if v.value && c.allow.as_ref().is_some_and(|a| !a.value) {
                p.add(
                    Pos::of(v),
                    "carp.allow_at_start",
                    "true contradicts carp.allow: false (CARP off): remove one of them",
                );
            }
        }
        if let Some(v) = &c.preempt {
            sysctls.push((Sysctl::Preempt, i64::from(v.value)));
        }
        if let Some(v) = &c.log {
            if (0..=2).contains(&v.value) {
                sysctls.push((Sysctl::Log, v.value));
            } else {
                p.add(
                    Pos::of(v),
                    "carp.log",
                    format!(
                        "{} is out of range: allowed 0 (silent), 1 (state changes) or 2 (also bad packets)",
                        v.value
                    ),
                );
            }
        }
        if let Some(v) = &c.dscp {
            if (0..=63).contains(&v.value) {
                sysctls.push((Sysctl::Dscp, v.value));
            } else {
                p.add(
                    Pos::of(v),
                    "carp.dscp",
                    format!("{} is out of range: allowed 0..63 (default 56)", v.value),
                );
            }
        }
    }

    let mut groups = Vec::new();
    let mut seen: BTreeMap<GroupId, Pos> = BTreeMap::new();
    let mut addr_owner: BTreeMap<IpAddr, (String, Pos)> = BTreeMap::new();
    for (i, g) in raw.groups.iter().enumerate() {
        let key = format!("groups[{i}]");
        if let Some(group) = validate_group(g, &key, &mut p, &mut warnings) {
            if let Some(first) = seen.get(&group.id) {
                p.add(
                    Pos::of(&g.vhid),
                    format!("{key}.vhid"),
                    format!(
                        "vhid {} on {} is already configured at line {}: a vhid may appear once per interface",
                        group.id.vhid, group.id.ifname, first.line
                    ),
                );
                continue;
            }
            seen.insert(group.id.clone(), Pos::of(&g.vhid));
            for (a, spanned) in group.addresses.iter().zip(&g.addresses) {
                if let Some((owner, pos)) = addr_owner.get(&a.addr()) {
                    p.add(
                        Pos::of(spanned),
                        format!("{key}.addresses"),
                        format!(
                            "{} is already an address of {owner} (line {}): an address belongs to one group",
                            a.addr(),
                            pos.line
                        ),
                    );
                } else {
                    addr_owner.insert(a.addr(), (group.id.to_string(), Pos::of(spanned)));
                }
            }
            groups.push(group);
        }
    }

    let daemon = super::daemon::validate_daemon(raw.daemon.as_ref(), &mut p);
    let vault = raw.vault.as_ref().and_then(|v| validate_vault(v, &mut p));
    if raw.vault.is_none() {
        for (i, g) in raw.groups.iter().enumerate() {
            if let Some(pw) = &g.password
                && let RawPassword::Source(map) = &pw.value
                && let Some(path) = map.get("vault")
            {
                p.add(
                    Pos::of(pw),
                    format!("groups[{i}].password"),
                    format!(
                        "comes from Vault ({path}), but carpd.yaml has no vault: section saying how to reach it: add `vault: {{ secretsmith: /usr/local/etc/secrets/carp-secretsmith.yaml }}` (or `vault: {{}}` to use VAULT_ADDR and VAULT_TOKEN)"
                    ),
                );
            }
        }
    }
    let ovh = raw
        .ovh
        .as_ref()
        .and_then(|o| super::ovh::validate_ovh(o, &mut p));
    if raw.vault.is_none()
        && let Some(o) = &ovh
        && let super::ovh::OvhCredentialSource::Vault { path, .. } = &o.credentials
    {
        p.add(
            o.pos,
            "ovh.credentials",
            format!(
                "come from Vault ({path}), but carpd.yaml has no vault: section saying how to reach it: add `vault: {{ secretsmith: /usr/local/etc/secrets/carp-secretsmith.yaml }}` (or `vault: {{}}` to use VAULT_ADDR and VAULT_TOKEN)"
            ),
        );
    }
    let failover_ips = super::ovh::validate_failover_ips(
        &raw.failover_ips,
        &groups,
        &node,
        raw.ovh.is_some(),
        &mut p,
        &mut warnings,
    );

    let metrics = super::metrics::validate_metrics(raw.metrics.as_ref(), &mut p, &mut warnings);
    let readiness = super::readiness::validate_readiness(raw.readiness.as_ref(), &mut p);
    let maintenance = super::maintenance::validate_maintenance(raw.maintenance.as_ref(), &mut p);

    if !p.is_empty() {
        return Err(p.into_error());
    }
    Ok(Config {
        file: file.to_path_buf(),
        node,
        sysctls,
        allow_at_start,
        groups,
        daemon,
        vault,
        ovh,
        failover_ips,
        metrics,
        readiness,
        maintenance,
        warnings: warnings.list,
    })
}

fn validate_vault(v: &Spanned<RawVault>, p: &mut Problems) -> Option<VaultConfig> {
    let before = p.list.len();
    let secretsmith = match &v.value.secretsmith {
        None => None,
        Some(s) => {
            let path = PathBuf::from(s.value.trim());
            if !path.is_absolute() {
                p.add(
                    Pos::of(s),
                    "vault.secretsmith",
                    format!(
                        "'{}' must be an absolute path, e.g. /usr/local/etc/secrets/carp-secretsmith.yaml",
                        s.value.escape_default()
                    ),
                );
            }
            Some(path)
        }
    };
    let approle_mount = match &v.value.approle_mount {
        None => super::DEFAULT_APPROLE_MOUNT.to_string(),
        Some(m) => {
            let t = m.value.trim().trim_matches('/');
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
            {
                p.add(
                    Pos::of(m),
                    "vault.approle_mount",
                    format!(
                        "'{}' is not a mount path: letters, digits, - _ . and /, e.g. approle (the default)",
                        m.value.escape_default()
                    ),
                );
            }
            t.to_string()
        }
    };
    let seconds = |p: &mut Problems,
                   key: &str,
                   val: Option<&Spanned<i64>>,
                   min: i64,
                   max: i64,
                   default: Duration,
                   meaning: &str| match val {
        None => default,
        Some(s) if (min..=max).contains(&s.value) => Duration::from_secs(s.value as u64),
        Some(s) => {
            p.add(
                Pos::of(s),
                format!("vault.{key}"),
                format!(
                    "{} is out of range: allowed {min}..{max} seconds ({meaning})",
                    s.value
                ),
            );
            default
        }
    };
    let cache_max_age = seconds(
        p,
        "cache_max_age",
        v.value.cache_max_age.as_ref(),
        0,
        86_400,
        VaultConfig::DEFAULT_CACHE_MAX_AGE,
        "how long a secret read from Vault is reused and kept when Vault fails; 0 disables",
    );
    let timeout = seconds(
        p,
        "timeout",
        v.value.timeout.as_ref(),
        1,
        300,
        VaultConfig::DEFAULT_TIMEOUT,
        "time limit of one request to Vault",
    );
    let proxy = v.value.proxy.as_ref().and_then(|u| {
        check_proxy(&u.value)
            .map_err(|m| p.add(Pos::of(u), "vault.proxy", m))
            .ok()
    });
    (p.list.len() == before).then(|| VaultConfig {
        secretsmith,
        approle_mount,
        cache_max_age,
        timeout,
        proxy,
        pos: Pos::of(v),
    })
}

fn validate_group(
    g: &RawGroup,
    key: &str,
    p: &mut Problems,
    warnings: &mut Problems,
) -> Option<GroupConfig> {
    let before = p.list.len();
    let pos = Pos::of(&g.interface);

    if let Err(e) = validate_ifname(&g.interface.value) {
        p.add(Pos::of(&g.interface), format!("{key}.interface"), e);
    }
    let vhid = match u32::try_from(g.vhid.value).ok().and_then(Vhid::new) {
        Some(v) => Some(v),
        None => {
            p.add(
                Pos::of(&g.vhid),
                format!("{key}.vhid"),
                format!("{} is out of range: allowed 1..{MAX_VHID}", g.vhid.value),
            );
            None
        }
    };
    let advbase = ranged(
        p,
        key,
        "advbase",
        g.advbase.as_ref(),
        1,
        1,
        255,
        "seconds between advertisements",
    );
    let advskew = ranged(
        p,
        key,
        "advskew",
        g.advskew.as_ref(),
        0,
        0,
        i64::from(MAX_SKEW),
        "lower wins the election; the kernel adds net.inet.carp.demotion and clamps at 240",
    );

    let peer = g
        .peer
        .as_ref()
        .and_then(|s| parse_peer4(p, key, s))
        .flatten();
    let peer6 = g
        .peer6
        .as_ref()
        .and_then(|s| parse_peer6(p, key, s))
        .flatten();

    if g.addresses.is_empty() {
        p.add(
            pos,
            format!("{key}.addresses"),
            "is missing or empty: a CARP group needs at least one address (the VIP), e.g. addresses: [51.68.252.230/32]; without one the vhid never leaves INIT",
        );
    }
    let mut addresses = Vec::new();
    for (j, a) in g.addresses.iter().enumerate() {
        match parse_address(&a.value) {
            Ok(net) => {
                if addresses.contains(&net) {
                    p.add(
                        Pos::of(a),
                        format!("{key}.addresses[{j}]"),
                        format!("{net} is listed twice"),
                    );
                } else {
                    addresses.push(net);
                }
            }
            Err(e) => p.add(Pos::of(a), format!("{key}.addresses[{j}]"), e),
        }
    }
    addresses.sort();
    if peer.is_some() && !addresses.iter().any(|a| a.addr().is_ipv4()) {
        warnings.add(
            pos,
            format!("{key}.peer"),
            "an IPv4 peer is set but the group has no IPv4 address",
        );
    }
    if peer6.is_some() && !addresses.iter().any(|a| a.addr().is_ipv6()) {
        warnings.add(
            pos,
            format!("{key}.peer6"),
            "an IPv6 peer is set but the group has no IPv6 address",
        );
    }

    let password = g
        .password
        .as_ref()
        .and_then(|pw| validate_password(p, warnings, key, pw));

    if p.list.len() != before {
        return None;
    }
    Some(GroupConfig {
        id: GroupId::new(g.interface.value.clone(), vhid?),
        advbase: advbase?,
        advskew: advskew?,
        password,
        peer,
        peer6,
        addresses,
        pos,
        peer_pos: g.peer.as_ref().or(g.peer6.as_ref()).map(Pos::of),
        key: key.to_string(),
    })
}

#[allow(clippy::too_many_arguments)]
fn ranged(
    p: &mut Problems,
    key: &str,
    name: &str,
    v: Option<&Spanned<i64>>,
    default: u32,
    min: i64,
    max: i64,
    meaning: &str,
) -> Option<u32> {
    let Some(v) = v else { return Some(default) };
    if (min..=max).contains(&v.value) {
        Some(v.value as u32)
    } else {
        p.add(
            Pos::of(v),
            format!("{key}.{name}"),
            format!(
                "{} is out of range: allowed {min}..{max} ({meaning})",
                v.value
            ),
        );
        None
    }
}

/// `Some(None)` = multicast, `Some(Some(a))` = unicast, `None` = invalid (problem recorded).
fn parse_peer4(p: &mut Problems, key: &str, s: &Spanned<String>) -> Option<Option<Ipv4Addr>> {
    match s.value.trim().parse::<Ipv4Addr>() {
        Ok(a) if a == MULTICAST_V4 => Some(None),
        Ok(a) if a.is_unspecified() || a.is_multicast() || a.is_broadcast() => {
            p.add(
                Pos::of(s),
                format!("{key}.peer"),
                format!("{a} is not a unicast address: give the other node's address, or omit peer for multicast"),
            );
            None
        }
        Ok(a) => Some(Some(a)),
        Err(_) => {
            p.add(
                Pos::of(s),
                format!("{key}.peer"),
                format!(
                    "'{}' is not an IPv4 address (IPv6 peers go in peer6)",
                    s.value.escape_default()
                ),
            );
            None
        }
    }
}

fn parse_peer6(p: &mut Problems, key: &str, s: &Spanned<String>) -> Option<Option<Ipv6Addr>> {
    match s.value.trim().parse::<Ipv6Addr>() {
        Ok(a) if a == MULTICAST_V6 => Some(None),
        Ok(a) if a.is_unspecified() || a.is_multicast() => {
            p.add(
                Pos::of(s),
                format!("{key}.peer6"),
                format!("{a} is not a unicast address: give the other node's address, or omit peer6 for multicast"),
            );
            None
        }
        Ok(a) => Some(Some(a)),
        Err(_) => {
            p.add(
                Pos::of(s),
                format!("{key}.peer6"),
                format!(
                    "'{}' is not an IPv6 address (IPv4 peers go in peer)",
                    s.value.escape_default()
                ),
            );
            None
        }
    }
}

/// An address with its prefix length, e.g. `51.68.252.230/32` or `2001:db8::1/64`.
pub fn parse_address(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if !s.contains('/') {
        return match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => Err(format!("'{s}' needs a prefix length, e.g. {s}/32")),
            Ok(IpAddr::V6(_)) => Err(format!("'{s}' needs a prefix length, e.g. {s}/128")),
            Err(_) => Err(format!(
                "'{}' is not an address with a prefix length (e.g. 51.68.252.230/32)",
                s.escape_default()
            )),
        };
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!(
            "'{}' is not an address with a prefix length (e.g. 51.68.252.230/32, 2001:db8::1/64)",
            s.escape_default()
        )
    })?;
    let a = net.addr();
    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
        return Err(format!(
            "{net} cannot be a CARP address (unspecified, multicast or loopback)"
        ));
    }
    Ok(net)
}

fn validate_password(
    p: &mut Problems,
    warnings: &mut Problems,
    key: &str,
    pw: &Spanned<RawPassword>,
) -> Option<PasswordSource> {
    let pos = Pos::of(pw);
    let k = format!("{key}.password");
    match &pw.value {
        RawPassword::Inline(s) if crate::carp::has_nul(s.as_bytes()) => {
            p.add(
                pos,
                k,
                "contains a NUL byte, which the kernel cannot store in a key",
            );
            None
        }
        RawPassword::Inline(s) => match CarpKey::new(s.as_bytes().to_vec()) {
            Ok(key) if key.is_empty() => {
                p.add(pos, k, "is empty: omit password for no authentication");
                None
            }
            Ok(key) => {
                warnings.add(
                    pos,
                    k,
                    "is written inline: anyone who can read carpd.yaml can read it; prefer {file: /usr/local/etc/carpd/vhidN.key} (mode 0400) or {vault: mount/path, field: name}",
                );
                Some(PasswordSource::Inline(key))
            }
            Err(n) => {
                p.add(
                    pos,
                    k,
                    format!("is {n} bytes long: CARP passwords are at most {KEY_LEN} bytes"),
                );
                None
            }
        },
        RawPassword::Source(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            match keys.as_slice() {
                ["file"] => {
                    let path = PathBuf::from(&map["file"]);
                    if !path.is_absolute() {
                        p.add(
                            pos,
                            k,
                            format!("file '{}' must be an absolute path", path.display()),
                        );
                        return None;
                    }
                    Some(PasswordSource::File(path))
                }
                ["vault"] | ["field", "vault"] => {
                    let path = map["vault"].trim_matches('/').to_string();
                    if !path.contains('/') || path.split('/').any(str::is_empty) {
                        p.add(
                            pos,
                            k,
                            format!(
                                "vault '{}' must be <mount>/<path> of a kv-v2 secret, e.g. ops/secrets/network/carp/2",
                                map["vault"]
                            ),
                        );
                        return None;
                    }
                    let field = map
                        .get("field")
                        .cloned()
                        .unwrap_or_else(|| "password".into());
                    if field.is_empty() {
                        p.add(pos, k, "field must not be empty (default: password)");
                        return None;
                    }
                    Some(PasswordSource::Vault { path, field })
                }
                _ => {
                    p.add(
                        pos,
                        k,
                        format!(
                            "has keys [{}]: expected {{file: /path}} or {{vault: mount/path, field: name}} (or an inline string, discouraged)",
                            keys.join(", ")
                        ),
                    );
                    None
                }
            }
        }
    }
}

/// Problems only the running kernel can reveal: interfaces that do not exist, unicast peers
/// on a kernel without netlink.
pub fn kernel_problems(
    config: &Config,
    backend: &BackendInfo,
    interfaces: &[String],
) -> Vec<Problem> {
    let mut out = Vec::new();
    for g in &config.groups {
        let mut add = |message: String, key: &str| {
            out.push(Problem {
                file: config.file.clone(),
                pos: if key.starts_with("peer") {
                    g.peer_pos.unwrap_or(g.pos)
                } else {
                    g.pos
                },
                key: format!("{}.{key}", g.key),
                message,
                detail: String::new(),
            })
        };
        if !interfaces.contains(&g.id.ifname) {
            add(
                format!(
                    "interface {} does not exist on this system (have: {}); check the name with ifconfig -l",
                    g.id.ifname,
                    interfaces.join(" ")
                ),
                "interface",
            );
        }
        if !backend.unicast && (g.peer.is_some() || g.peer6.is_some()) {
            add(
                format!(
                    "group {} sets a unicast peer, but this kernel ({}) cannot: unicast CARP needs the netlink interface of FreeBSD 14+; remove peer/peer6 to use multicast",
                    g.id, backend.name
                ),
                if g.peer.is_some() { "peer" } else { "peer6" },
            );
        }
    }
    out
}

/// Checks a `proxy:` setting: an `http://` or `https://` URL with a host. Returns the URL
/// as given, or what is wrong with it (never echoing a password in the URL).
pub fn check_proxy(text: &str) -> Result<String, String> {
    let t = text.trim();
    let url = url::Url::parse(t).map_err(|e| {
        format!(
            "is not a URL ({e}): give the proxy as http://host:port, e.g. http://proxy.example:3128"
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "must be an http:// or https:// URL with a host (got scheme {}), e.g. http://proxy.example:3128",
            url.scheme()
        ));
    }
    Ok(t.to_string())
}
