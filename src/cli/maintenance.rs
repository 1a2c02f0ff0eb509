//! `carpd maintenance enter [--wait] [--timeout DUR] | leave | status [--json]`: demote this
//! node on purpose so the peer takes over, and undo exactly that.
//!
//! These commands act on the demotion ledger (`controller::ledger`, in
//! `maintenance.state_dir`) and the kernel directly, so they work with or without a running
//! daemon; the daemon needs no telling (the ledger's lock keeps the two apart, and the
//! daemon re-applies the ledger at start after a reboot).
//!
//! - `enter` records `maintenance.demotion` (default 240) in the ledger, then adds it to
//!   `net.inet.carp.demotion`; idempotent. `--wait` then polls (every 250 ms; OVH at most
//!   once a second, and only once every group is BACKUP) until every group this node manages
//!   (`groups` and the groups of `failover_ips`) is BACKUP here and every failover IP is
//!   bound to another node; `--timeout` (default 60 s) ends it with exit 1 naming what did
//!   not happen. The demotion stays in place either way.
//! - `leave` removes exactly carpd's maintenance entry (never the kernel's or pfsync's part,
//!   nor the readiness demotion).
//! - `status` shows the ledger, carpd's part, the kernel's level and the rest; `--json` has
//!   the schema `carpd.maintenance-status.v1` (see the README).
//!
//! Exit status as everywhere: 0 done (including "nothing to do"), 1 failed or timed out.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use crate::carp::{CarpState, GroupId, Sysctl};
use crate::config::ovh::FailoverIp;
use crate::config::{Config, MaintenanceConfig};
use crate::controller::ledger::{AddOutcome, LedgerStore, Reason, RemoveOutcome, rfc3339};
use crate::kernel::Kernel;
use crate::ovh::Client;
use crate::ovh::plan::Found;

use super::failover_ip::{client, observe, runtime};
use super::{Context, eprint_error};

/// How often `--wait` reads the kernel.
const POLL: Duration = Duration::from_millis(250);
/// How often `--wait` asks OVH at most (its rate budget is shared with the daemon).
const OVH_POLL: Duration = Duration::from_secs(1);

fn load(ctx: &Context) -> Result<Config, String> {
    ctx.load_config().map_err(|e| e.to_string())
}

/// The configuration and the kernel `enter` and `leave` act on.
fn load_with_kernel(ctx: &Context) -> Result<(Config, Box<dyn Kernel>), String> {
    let config = load(ctx)?;
    let k = ctx.open_kernel().map_err(|e| e.to_string())?;
    Ok((config, k))
}

fn kernel_demotion(k: &dyn Kernel) -> String {
    match k.sysctl_get(Sysctl::Demotion) {
        Ok(v) => v.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

pub fn enter(ctx: &Context, wait: bool, timeout: Duration, out: &mut dyn Write) -> bool {
    let (config, k) = match load_with_kernel(ctx) {
        Ok(x) => x,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let store = LedgerStore::from_config(&config.maintenance);
    let m = &config.maintenance;
    let outcome = match store.add(
        k.as_ref(),
        Reason::Maintenance,
        m.demotion,
        SystemTime::now(),
    ) {
        Ok(o) => o,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let _ = writeln!(out, "{}", describe_add(&outcome, m, &store));
    let _ = writeln!(
        out,
        "net.inet.carp.demotion is now {}",
        kernel_demotion(k.as_ref())
    );
    if !wait {
        return true;
    }
    wait_until_away(ctx, &config, k.as_ref(), timeout, out)
}

fn describe_add(o: &AddOutcome, m: &MaintenanceConfig, store: &LedgerStore) -> String {
    let ledger = store.path();
    let ledger = ledger.display();
    match o {
        AddOutcome::Added { delta } => format!(
            "maintenance entered: added {delta} to net.inet.carp.demotion (recorded in {ledger})"
        ),
        AddOutcome::AlreadyApplied { delta, since } => {
            let mut s = format!(
                "already in maintenance since {} with {delta}: nothing added",
                rfc3339(*since)
            );
            if *delta != m.demotion {
                s.push_str(&format!(
                    " (maintenance.demotion is now {}: leave and enter again to use it)",
                    m.demotion
                ));
            }
            s
        }
        AddOutcome::ReappliedAfterReboot { delta, since } => format!(
            "in maintenance since {}; a reboot had reset the kernel's demotion: added {delta} again (recorded in {ledger})",
            rfc3339(*since)
        ),
        AddOutcome::ReappliedAfterKernelReset { delta, since } => format!(
            "in maintenance since {}; the kernel's demotion had fallen below carpd's part (carp.ko reloaded?): added {delta} again (recorded in {ledger})",
            rfc3339(*since)
        ),
        AddOutcome::ReappliedAfterInterruption { delta, since } => format!(
            "an earlier enter (at {}) was interrupted: added {delta} (the kernel may now hold it twice: see carpd maintenance status)",
            rfc3339(*since)
        ),
    }
}

/// Every group this node manages: configured groups and the groups failover IPs follow.
fn managed_groups(config: &Config) -> Vec<GroupId> {
    let set: BTreeSet<GroupId> = config
        .groups
        .iter()
        .map(|g| g.id.clone())
        .chain(config.failover_ips.iter().map(|f| f.group.clone()))
        .collect();
    set.into_iter().collect()
}

/// Why `group` does not count as moved away yet, or `None` when it is BACKUP here.
pub(crate) fn group_pending(
    group: &GroupId,
    state: &Result<Option<CarpState>, String>,
) -> Option<String> {
    match state {
        Ok(Some(CarpState::Backup)) => None,
        Ok(Some(CarpState::Master)) => Some(format!(
            "{group} is still MASTER here: is the peer up and preempt enabled? sysctl net.inet.carp.preempt=1 on the peer"
        )),
        Ok(Some(CarpState::Init)) => Some(format!(
            "{group} is INIT here, not BACKUP: is its interface down, or net.inet.carp.allow=0?"
        )),
        Ok(None) => Some(format!(
            "{group} does not exist in the kernel here: create it with carpd apply"
        )),
        Err(e) => Some(format!("{group}: cannot read the kernel: {e}")),
    }
}

/// Why failover IP `ip` does not count as bound away yet, or `None` when OVH has it on
/// another node. `observed` is `observe`'s answer: where it is, and whether that is here.
pub(crate) fn ip_pending(ip: &str, observed: &Result<(Found, bool), String>) -> Option<String> {
    match observed {
        Ok((_, true)) => Some(format!(
            "{ip} is still bound to this node at OVH: the new MASTER's carpd moves it (is carpd running on the peer, with working OVH credentials?)"
        )),
        Ok((found @ (Found::Unbound | Found::Service { service: None }), false)) => Some(format!(
            "{ip} is {found} at OVH: the new MASTER's carpd has not claimed it yet"
        )),
        Ok((_, false)) => None,
        Err(e) => Some(format!("{ip}: cannot locate it at OVH: {e}")),
    }
}

/// OVH access for the failover IPs, when any are configured.
struct Ovh {
    rt: tokio::runtime::Runtime,
    api: Client,
    ips: Vec<FailoverIp>,
}

fn wait_until_away(
    ctx: &Context,
    config: &Config,
    k: &dyn Kernel,
    timeout: Duration,
    out: &mut dyn Write,
) -> bool {
    let groups = managed_groups(config);
    let ovh = match (&config.ovh, config.failover_ips.is_empty()) {
        (Some(o), false) => {
            match runtime().and_then(|rt| client(ctx, config, o, &rt).map(|api| (rt, api))) {
                Ok((rt, api)) => Some(Ovh {
                    rt,
                    api,
                    ips: config.failover_ips.clone(),
                }),
                Err(e) => {
                    eprint_error(format!("cannot wait for the failover IPs: {e}"));
                    return false;
                }
            }
        }
        _ => None,
    };
    if groups.is_empty() {
        let _ = writeln!(out, "no groups configured: nothing to wait for");
        return true;
    }
    let n_ips = ovh.as_ref().map_or(0, |o| o.ips.len());
    let _ = writeln!(
        out,
        "waiting up to {} for {} group(s) to be BACKUP here{}",
        humantime::format_duration(timeout),
        groups.len(),
        if n_ips > 0 {
            format!(" and {n_ips} failover IP(s) to be bound to another node")
        } else {
            String::new()
        }
    );
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last_ovh: Option<Instant> = None;
    let mut ip_pending_list: Vec<String> = Vec::new();
    loop {
        let mut pending: Vec<String> = groups
            .iter()
            .filter_map(|g| {
                let state = k
                    .group(&g.ifname, g.vhid)
                    .map(|o| o.map(|x| x.state))
                    .map_err(|e| e.to_string());
                group_pending(g, &state)
            })
            .collect();
        if let Some(o) = &ovh {
            // OVH is only worth asking once the groups have moved (the IP follows them),
            // and not more than once a second.
            if !pending.is_empty() {
                ip_pending_list =
                    vec!["the failover IPs are checked once every group is BACKUP".into()];
            } else if last_ovh.is_none_or(|t| t.elapsed() >= OVH_POLL) {
                last_ovh = Some(Instant::now());
                ip_pending_list = o
                    .ips
                    .iter()
                    .filter_map(|f| {
                        let observed = o.rt.block_on(observe(&o.api, f));
                        ip_pending(&f.ip.to_string(), &observed)
                    })
                    .collect();
            }
            pending.extend(ip_pending_list.iter().cloned());
        }
        if pending.is_empty() {
            let _ = writeln!(
                out,
                "after {}: every group is BACKUP here{}",
                humantime::format_duration(Duration::from_millis(
                    start.elapsed().as_millis() as u64
                )),
                if n_ips > 0 {
                    " and every failover IP is bound to another node"
                } else {
                    ""
                }
            );
            return true;
        }
        if Instant::now() >= deadline {
            let mut msg = format!(
                "maintenance is entered (the demotion stays), but after {} not everything moved away:",
                humantime::format_duration(timeout)
            );
            for p in &pending {
                msg.push_str("\n  ");
                msg.push_str(p);
            }
            msg.push_str("\n(carpd maintenance leave undoes the demotion)");
            eprint_error(msg);
            return false;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

pub fn leave(ctx: &Context, out: &mut dyn Write) -> bool {
    let (config, k) = match load_with_kernel(ctx) {
        Ok(x) => x,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let store = LedgerStore::from_config(&config.maintenance);
    let outcome = match store.remove(k.as_ref(), Reason::Maintenance, SystemTime::now()) {
        Ok(o) => o,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let text = match outcome {
        RemoveOutcome::Removed { delta, subtracted } if subtracted == i64::from(delta) => {
            format!("maintenance left: removed {delta} from net.inet.carp.demotion")
        }
        RemoveOutcome::Removed { delta, subtracted } => format!(
            "maintenance left: removed {subtracted} of carpd's {delta} from net.inet.carp.demotion: the kernel held less than carpd had added (carp.ko reloaded, or someone wrote a negative value), and carpd never takes it below its own other entries"
        ),
        RemoveOutcome::NotInLedger => format!(
            "not in maintenance ({} has no maintenance entry): nothing removed",
            store.path().display()
        ),
        RemoveOutcome::LostByReboot { delta } => format!(
            "maintenance left: its {delta} was applied before the last reboot, which already reset it; nothing subtracted"
        ),
        RemoveOutcome::DroppedInterrupted { delta } => format!(
            "maintenance left: the enter that recorded {delta} was interrupted, so carpd cannot know whether the kernel holds it; nothing subtracted (see carpd maintenance status)"
        ),
    };
    let _ = writeln!(out, "{text}");
    let _ = writeln!(
        out,
        "net.inet.carp.demotion is now {}",
        kernel_demotion(k.as_ref())
    );
    true
}

pub fn status(ctx: &Context, json: bool, out: &mut dyn Write) -> bool {
    // Without a configuration file the default state_dir is shown; a broken one is an
    // error, since it may name another state_dir.
    let m = if ctx.config_path.exists() {
        match load(ctx) {
            Ok(c) => c.maintenance,
            Err(e) => {
                eprint_error(e);
                return false;
            }
        }
    } else {
        MaintenanceConfig::default()
    };
    let k = match ctx.open_kernel() {
        Ok(k) => k,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let s = LedgerStore::from_config(&m).status(k.as_ref());
    let text = if json {
        serde_json::to_string_pretty(&s).unwrap_or_default() + "\n"
    } else {
        s.to_text()
    };
    out.write_all(text.as_bytes()).is_ok() && s.errors.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> GroupId {
        "2@vmx1".parse().unwrap()
    }

    #[test]
    fn only_backup_counts_as_moved_away() {
        assert_eq!(group_pending(&g(), &Ok(Some(CarpState::Backup))), None);
        let m = group_pending(&g(), &Ok(Some(CarpState::Master))).unwrap();
        assert!(
            m.starts_with("2@vmx1 is still MASTER")
                && m.contains("sysctl net.inet.carp.preempt=1 on the peer"),
            "{m}"
        );
        let m = group_pending(&g(), &Ok(Some(CarpState::Init))).unwrap();
        assert!(m.contains("INIT") && m.contains("interface down"), "{m}");
        let m = group_pending(&g(), &Ok(None)).unwrap();
        assert!(
            m.contains("does not exist") && m.contains("carpd apply"),
            "{m}"
        );
        let m = group_pending(&g(), &Err("EPERM".into())).unwrap();
        assert!(m.contains("cannot read the kernel: EPERM"), "{m}");
    }

    #[test]
    fn an_ip_counts_as_bound_away_only_on_another_node() {
        let ip = "51.68.252.230";
        let peer = Found::Vmac {
            mac: "02:00:00:11:22:33".into(),
            ips: 2,
        };
        assert_eq!(ip_pending(ip, &Ok((peer.clone(), false))), None);
        let routed = Found::Service {
            service: Some("ns2".into()),
        };
        assert_eq!(ip_pending(ip, &Ok((routed, false))), None);
        let m = ip_pending(ip, &Ok((peer, true))).unwrap();
        assert!(m.contains("still bound to this node"), "{m}");
        let m = ip_pending(ip, &Ok((Found::Unbound, false))).unwrap();
        assert!(
            m.contains("on no virtual MAC") && m.contains("not claimed"),
            "{m}"
        );
        let m = ip_pending(ip, &Ok((Found::Service { service: None }, false))).unwrap();
        assert!(m.contains("routed nowhere"), "{m}");
        let m = ip_pending(ip, &Err("OVH 503".into())).unwrap();
        assert!(m.contains("cannot locate it at OVH: OVH 503"), "{m}");
    }
}
