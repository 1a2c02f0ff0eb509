//! `carpd status`: every vhid on every interface, the sysctls, demotion and CARP statistics.
//!
//! [`collect`] reads the kernel once into a [`Status`]; rendering is pure. The JSON form is a
//! stable, documented interface (schema `carpd.status.v1`, see the README): fields are only
//! ever added, never renamed or removed, within v1. A kernel read that fails for one
//! interface is reported in `errors` and the rest is still shown.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::carp::{CarpStats, GroupId, Sysctl, effective_skew};
use crate::kernel::Kernel;

pub const SCHEMA: &str = "carpd.status.v1";

#[derive(Debug, Serialize)]
pub struct Status {
    pub schema: &'static str,
    /// The configured node name, when a configuration was loaded.
    pub node: Option<String>,
    pub backend: Backend,
    /// Every `net.inet.carp.*` integer that could be read, by short name.
    pub sysctls: std::collections::BTreeMap<&'static str, i64>,
    /// The global demotion level (also in `sysctls`), added to every advskew.
    pub demotion: i64,
    pub groups: Vec<GroupStatus>,
    pub stats: Option<CarpStats>,
    /// Kernel reads that failed; the rest of the status is still valid.
    pub errors: Vec<String>,
    /// The running daemon's view (`carpd run`), `null` when no daemon answers.
    pub daemon: Option<super::daemon_view::DaemonView>,
}

#[derive(Debug, Serialize)]
pub struct Backend {
    pub name: &'static str,
    pub unicast: bool,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    /// `vhid@interface`, as devd names it.
    pub group: String,
    pub interface: String,
    pub vhid: u32,
    pub state: &'static str,
    pub advbase: u32,
    pub advskew: u32,
    /// `clamp(advskew + demotion, 0, 240)`: what is advertised.
    pub effective_advskew: u32,
    /// Unicast IPv4 peer, `null` for multicast.
    pub peer: Option<String>,
    pub peer6: Option<String>,
    /// "set", "none" or "unknown (not root)"; never the password.
    pub password: &'static str,
    pub addresses: Vec<String>,
    /// Whether the configuration manages this group; `null` without a configuration.
    pub managed: Option<bool>,
}

/// Reads everything from the kernel. `managed` lists the configured groups, if any.
pub fn collect(k: &dyn Kernel, node: Option<&str>, managed: Option<&BTreeSet<GroupId>>) -> Status {
    let info = k.info();
    let mut errors = Vec::new();
    let mut sysctls = std::collections::BTreeMap::new();
    for knob in Sysctl::ALL {
        match k.sysctl_get(knob) {
            Ok(v) => {
                sysctls.insert(knob.key(), v);
            }
            Err(e) => {
                errors.push(e.to_string());
                // One failure (carp.ko missing) would repeat for every knob.
                break;
            }
        }
    }
    let demotion = sysctls.get(Sysctl::Demotion.key()).copied().unwrap_or(0);
    let mut groups = Vec::new();
    match k.interfaces() {
        Ok(ifs) => {
            for ifname in ifs {
                match k.groups(&ifname) {
                    Ok(gs) => groups.extend(gs.into_iter().map(|g| GroupStatus {
                        group: g.id().to_string(),
                        interface: g.ifname.clone(),
                        vhid: g.vhid.get(),
                        state: g.state.as_str(),
                        advbase: g.advbase,
                        advskew: g.advskew,
                        effective_advskew: effective_skew(g.advskew, demotion),
                        peer: g.peer.map(|p| p.to_string()),
                        peer6: g.peer6.map(|p| p.to_string()),
                        password: g.key.describe(),
                        addresses: g.addresses.iter().map(ToString::to_string).collect(),
                        managed: managed.map(|m| m.contains(&g.id())),
                    })),
                    Err(e) => {
                        let carp_missing = e.is_errno(libc::EPROTONOSUPPORT);
                        errors.push(e.to_string());
                        if carp_missing {
                            break;
                        }
                    }
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    let stats = match k.stats() {
        Ok(s) => Some(s),
        Err(e) => {
            if !errors.contains(&e.to_string()) {
                errors.push(e.to_string());
            }
            None
        }
    };
    Status {
        schema: SCHEMA,
        node: node.map(str::to_string),
        backend: Backend {
            name: info.name,
            unicast: info.unicast,
        },
        sysctls,
        demotion,
        groups,
        stats,
        errors,
        daemon: None,
    }
}

/// The JSON form (one document, pretty-printed, trailing newline).
pub fn to_json(s: &Status) -> String {
    let mut out = serde_json::to_string_pretty(s).unwrap_or_else(|e| {
        // Serializing plain data cannot fail; keep the promise of valid JSON regardless.
        format!("{{\"schema\":\"{SCHEMA}\",\"errors\":[\"cannot encode status: {e}\"]}}")
    });
    out.push('\n');
    out
}

/// The human form: a table of groups, then sysctls and statistics.
pub fn to_text(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "node {}  kernel {} (unicast peers: {})",
        s.node.as_deref().unwrap_or("-"),
        s.backend.name,
        if s.backend.unicast { "yes" } else { "no" }
    );
    if s.groups.is_empty() {
        let _ = writeln!(o, "\nno CARP groups");
    } else {
        let rows: Vec<[String; 9]> = s
            .groups
            .iter()
            .map(|g| {
                [
                    format!(
                        "{}{}",
                        g.group,
                        if g.managed == Some(false) {
                            " (unmanaged)"
                        } else {
                            ""
                        }
                    ),
                    g.state.to_string(),
                    g.advbase.to_string(),
                    g.advskew.to_string(),
                    g.effective_advskew.to_string(),
                    g.peer.clone().unwrap_or_else(|| "multicast".into()),
                    g.peer6.clone().unwrap_or_else(|| "multicast".into()),
                    g.password.to_string(),
                    g.addresses.join(" "),
                ]
            })
            .collect();
        let header = [
            "GROUP",
            "STATE",
            "ADVBASE",
            "ADVSKEW",
            "EFFECTIVE",
            "PEER",
            "PEER6",
            "PASSWORD",
            "ADDRESSES",
        ];
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.len());
            }
        }
        let _ = writeln!(o);
        let line = |o: &mut String, cells: &[&str]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    let _ = write!(l, "{c:<w$}  ", w = widths[i]);
                }
            }
            let _ = writeln!(o, "{}", l.trim_end());
        };
        line(&mut o, &header);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(&mut o, &cells);
        }
    }
    let _ = writeln!(o);
    let sys: Vec<String> = s.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        o,
        "sysctl net.inet.carp: {}",
        if sys.is_empty() {
            "-".into()
        } else {
            sys.join(" ")
        }
    );
    if s.demotion != 0 {
        let _ = writeln!(
            o,
            "demotion {} (added to every advskew, clamped to 0..240)",
            s.demotion
        );
    }
    if let Some(st) = &s.stats {
        let f: Vec<String> = st
            .fields()
            .iter()
            .filter(|(_, v)| *v != 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            o,
            "stats: {}",
            if f.is_empty() {
                "all zero".into()
            } else {
                f.join(" ")
            }
        );
    }
    match &s.daemon {
        Some(d) => {
            let _ = write!(o, "{}", super::daemon_view::to_text(d));
        }
        None => {
            let _ = writeln!(o, "daemon: not running");
        }
    }
    for e in &s.errors {
        let _ = writeln!(o, "error: {e}");
    }
    o
}
