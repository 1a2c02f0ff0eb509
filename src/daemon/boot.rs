//! Boot order: CARP elections start only once carpd has restored its demotion ledger and
//! applied its configuration.
//!
//! Why: vhids configured in rc.conf are created by netif, long before `carpd run` starts.
//! With CARP allowed they elect at once, with the kernel's demotion at 0 (a reboot reset it),
//! so a node in maintenance can win MASTER for the seconds until carpd re-applies its
//! ledger. The fix is FreeBSD's own switch: `net.inet.carp.allow=0` as a loader tunable
//! (`/boot/loader.conf`, see docs/boot-order.md) keeps every vhid in INIT from the first
//! moment, and carpd writes `net.inet.carp.allow=1` once the ledger and the configuration are
//! in the kernel.
//!
//! [`decide`] is pure; [`release`] reads the switch, decides, writes, and logs. The daemon
//! calls [`release`] once, after its first reconcile. It never writes 1 when:
//! - carpd does not manage the kernel (`carpd run --no-apply`);
//! - the configuration says not to (`carp.allow: false`, or `carp.allow_at_start: false`);
//! - the demotion ledger could not be restored: releasing then could promote a node in
//!   maintenance, so CARP stays off and the error says how to recover.
//!
//! It only ever writes 1 over a 0 it read: CARP that is already allowed is left alone, and
//! nothing else in carpd writes `allow` back to 0.

use crate::carp::Sysctl;
use crate::config::Config;
use crate::kernel::Kernel;

/// What to do with `net.inet.carp.allow` at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write 1: elections start.
    Release,
    /// Leave it as it is, for this reason (nothing to log beyond debug).
    Leave(&'static str),
    /// Leave it at 0 although carpd would release it: the ledger is not restored. Logged as
    /// an error with the way out.
    Hold(String),
}

/// What [`decide`] needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// carpd changes the kernel (`carpd run` without `--no-apply`).
    pub manages_kernel: bool,
    /// `carp.allow_at_start` (default true).
    pub allow_at_start: bool,
    /// `carp.allow` from the configuration, when set.
    pub configured_allow: Option<bool>,
    /// `Err(why)` when the demotion ledger could not be restored.
    pub ledger: Result<(), &'a str>,
    /// `net.inet.carp.allow` as read now.
    pub kernel_allow: i64,
}

/// The boot-order decision (pure).
pub fn decide(i: &Inputs<'_>) -> Decision {
    if i.kernel_allow != 0 {
        return Decision::Leave("CARP is already allowed");
    }
    if !i.manages_kernel {
        return Decision::Leave("carpd run --no-apply does not change the kernel");
    }
    if i.configured_allow == Some(false) {
        return Decision::Leave("carp.allow is false in the configuration");
    }
    if !i.allow_at_start {
        return Decision::Leave("carp.allow_at_start is false in the configuration");
    }
    if let Err(why) = i.ledger {
        return Decision::Hold(format!(
            "net.inet.carp.allow stays 0: the demotion ledger could not be restored ({why}), and \
             allowing CARP now could let a node in maintenance become MASTER. Fix the ledger \
             (see carpd maintenance status) and restart carpd, or allow CARP by hand with \
             `sysctl net.inet.carp.allow=1` if this node may be MASTER"
        ));
    }
    Decision::Release
}

/// Reads `net.inet.carp.allow`, decides and, when it is time, writes 1. Logs what it did;
/// returns the decision (tests). Never fails: a kernel error is logged and CARP stays as
/// it is.
pub fn release(
    kernel: &dyn Kernel,
    config: &Config,
    manages_kernel: bool,
    ledger: Result<(), &str>,
) -> Decision {
    let kernel_allow = match kernel.sysctl_get(Sysctl::Allow) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("boot order: cannot read net.inet.carp.allow: {e}");
            return Decision::Leave("net.inet.carp.allow cannot be read");
        }
    };
    let configured_allow = config
        .sysctls
        .iter()
        .find(|(k, _)| *k == Sysctl::Allow)
        .map(|(_, v)| *v != 0);
    let d = decide(&Inputs {
        manages_kernel,
        allow_at_start: config.allow_at_start,
        configured_allow,
        ledger,
        kernel_allow,
    });
    match &d {
        Decision::Release => match kernel.sysctl_set(Sysctl::Allow, 1) {
            Ok(()) => tracing::info!(
                "net.inet.carp.allow=1: CARP elections start now that the demotion ledger and the configuration are applied"
            ),
            Err(e) => tracing::error!("boot order: cannot allow CARP: {e}"),
        },
        Decision::Hold(why) => tracing::error!("boot order: {why}"),
        Decision::Leave(why) if kernel_allow == 0 => {
            tracing::warn!("net.inet.carp.allow is 0 (CARP off) and carpd leaves it: {why}");
        }
        Decision::Leave(why) => tracing::debug!("boot order: {why}"),
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carp::CarpState;
    use crate::controller::ledger::{LedgerStore, Reason};
    use crate::kernel::merge;
    use crate::kernel::sim::{Flavour, SimKernel};
    use std::time::{Duration, UNIX_EPOCH};

    fn inputs() -> Inputs<'static> {
        Inputs {
            manages_kernel: true,
            allow_at_start: true,
            configured_allow: None,
            ledger: Ok(()),
            kernel_allow: 0,
        }
    }

    #[test]
    fn releases_only_a_zero_it_may_release() {
        assert_eq!(decide(&inputs()), Decision::Release);
        let cases: [(Inputs<'static>, &str); 4] = [
            (
                Inputs {
                    kernel_allow: 1,
                    ..inputs()
                },
                "already",
            ),
            (
                Inputs {
                    manages_kernel: false,
                    ..inputs()
                },
                "--no-apply",
            ),
            (
                Inputs {
                    configured_allow: Some(false),
                    ..inputs()
                },
                "carp.allow",
            ),
            (
                Inputs {
                    allow_at_start: false,
                    ..inputs()
                },
                "allow_at_start",
            ),
        ];
        for (i, want) in cases {
            match decide(&i) {
                Decision::Leave(why) => assert!(why.contains(want), "{why}"),
                d => panic!("{i:?}: {d:?}"),
            }
        }
    }

    #[test]
    fn a_ledger_that_could_not_be_restored_holds_carp_off() {
        let d = decide(&Inputs {
            ledger: Err("ledger.json is corrupt"),
            ..inputs()
        });
        let Decision::Hold(why) = d else {
            panic!("{d:?}")
        };
        assert!(
            why.contains("ledger.json is corrupt") && why.contains("sysctl net.inet.carp.allow=1")
        );
    }

    /// The network's election, for this test: a vhid that can run becomes MASTER when its
    /// effective skew (advskew + demotion, capped at 240) beats the peer's.
    fn elect(k: &SimKernel, peer_skew: i64) {
        let g = k.group("vmx1", v2()).unwrap().unwrap();
        let demotion = k.sysctl_get(Sysctl::Demotion).unwrap();
        let ours = (i64::from(g.advskew) + demotion).clamp(0, 240);
        let state = if ours < peer_skew {
            CarpState::Master
        } else {
            CarpState::Backup
        };
        k.set_state("vmx1", v2(), state).unwrap();
    }

    fn v2() -> crate::carp::Vhid {
        crate::carp::Vhid::new(2).unwrap()
    }

    fn config(dir: &std::path::Path) -> Config {
        let path = dir.join("carpd.yaml");
        let yaml = format!(
            "node: a\ngroups:\n  - {{interface: vmx1, vhid: 2, advskew: 0, addresses: [192.0.2.1/32]}}\nmaintenance:\n  state_dir: {}\n",
            dir.join("db").display()
        );
        std::fs::write(&path, yaml).unwrap();
        crate::config::load(&path).unwrap()
    }

    /// issue 16: a node in maintenance (the preferred one: advskew 0 against the peer's 100)
    /// reboots. rc.conf re-creates its vhid at boot; with `net.inet.carp.allow=0` in
    /// loader.conf it stays INIT through every election until carpd has restored the ledger
    /// and released CARP, and then it is demoted: it never becomes MASTER.
    #[test]
    fn a_node_in_maintenance_never_becomes_master_across_a_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let k = SimKernel::new(Flavour::FreeBsd14);
        // Before the reboot: configured, MASTER, then maintenance.
        merge::set_merged(&k, "vmx1", v2(), &merge::Changes::default()).unwrap();
        k.add_address("vmx1", v2(), "192.0.2.1/32".parse().unwrap())
            .unwrap();
        elect(&k, 100);
        assert_eq!(
            k.group("vmx1", v2()).unwrap().unwrap().state,
            CarpState::Master
        );
        let store = LedgerStore::from_config(&config.maintenance);
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        store.add(&k, Reason::Maintenance, 240, t(1)).unwrap();
        elect(&k, 100);
        assert_eq!(
            k.group("vmx1", v2()).unwrap().unwrap().state,
            CarpState::Backup
        );

        // The reboot, with the loader tunable.
        let mut st = k.snapshot().unwrap();
        st.loader.insert(Sysctl::Allow, 0);
        k.replace(st).unwrap();
        k.reboot().unwrap();
        let state = || k.group("vmx1", v2()).unwrap().unwrap().state;
        // The network elects while carpd is not running yet: INIT, not MASTER.
        elect(&k, 100);
        assert_eq!(state(), CarpState::Init, "elected before carpd started");

        // carpd starts: ledger first, then the configuration, then the release.
        store.restore(&k, t(100)).unwrap();
        elect(&k, 100);
        assert_eq!(state(), CarpState::Init);
        let d = release(&k, &config, true, Ok(()));
        assert_eq!(d, Decision::Release);
        assert_eq!(k.sysctl_get(Sysctl::Allow).unwrap(), 1);
        elect(&k, 100);
        assert_eq!(state(), CarpState::Backup, "demoted by the restored ledger");
        assert_eq!(k.sysctl_get(Sysctl::Demotion).unwrap(), 240);
        // A second call changes nothing (CARP is allowed).
        assert!(matches!(
            release(&k, &config, true, Ok(())),
            Decision::Leave(_)
        ));

        // Without the tunable the same reboot makes it MASTER before carpd starts: the
        // window this closes.
        let mut st = k.snapshot().unwrap();
        st.loader.clear();
        k.replace(st).unwrap();
        k.reboot().unwrap();
        elect(&k, 100);
        assert_eq!(state(), CarpState::Master, "the window without allow=0");
    }

    #[test]
    fn a_failed_restore_keeps_carp_off_on_the_simulated_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.sysctl_set(Sysctl::Allow, 0).unwrap();
        let d = release(&k, &config, true, Err("corrupt"));
        assert!(matches!(d, Decision::Hold(_)), "{d:?}");
        assert_eq!(k.sysctl_get(Sysctl::Allow).unwrap(), 0);
        let d = release(&k, &config, false, Ok(()));
        assert!(matches!(d, Decision::Leave(_)), "{d:?}");
        assert_eq!(k.sysctl_get(Sysctl::Allow).unwrap(), 0);
    }
}
