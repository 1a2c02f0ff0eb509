//! Tests of the demotion ledger on the simulated kernel and a real temporary directory:
//! table tests of every path (double enter, leave without enter, reboot, both reasons, the
//! kernel's own part), crashes between the write-ahead and the end (a kernel wrapper that
//! unwinds before or after its write, as a killed process would stop), refused kernel writes,
//! bad directories and corrupt files; and a property test over random sequences.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Mutex;

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::carp::{CarpStats, Vhid};
use crate::kernel::sim::{Flavour, SimKernel};
use crate::kernel::{BackendInfo, KernelGroup, SetRequest};
use std::os::unix::fs::PermissionsExt;

/// What the next `demotion_add` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// Returns EPERM without touching the kernel.
    Fail,
    /// The process dies before the kernel write.
    CrashBefore,
    /// The process dies after the kernel write, before the ledger records it.
    CrashAfter,
}

/// A crash, unwound without the panic hook (so no noise): `catch_unwind` stops it.
struct Crash;

/// The simulated kernel with a fault injected into the next demotion write.
struct Faulty {
    inner: SimKernel,
    next: Mutex<Fault>,
}

impl Faulty {
    fn new() -> Faulty {
        Faulty {
            inner: SimKernel::new(Flavour::FreeBsd14),
            next: Mutex::new(Fault::None),
        }
    }

    fn arm(&self, f: Fault) {
        *self.next.lock().unwrap() = f;
    }

    fn demotion(&self) -> i64 {
        self.inner.sysctl_get(Sysctl::Demotion).unwrap()
    }
}

impl Kernel for Faulty {
    fn info(&self) -> BackendInfo {
        self.inner.info()
    }
    fn interfaces(&self) -> Result<Vec<String>, KernelError> {
        self.inner.interfaces()
    }
    fn groups(&self, ifname: &str) -> Result<Vec<KernelGroup>, KernelError> {
        self.inner.groups(ifname)
    }
    fn group(&self, ifname: &str, vhid: Vhid) -> Result<Option<KernelGroup>, KernelError> {
        self.inner.group(ifname, vhid)
    }
    fn set_raw(&self, ifname: &str, req: &SetRequest) -> Result<(), KernelError> {
        self.inner.set_raw(ifname, req)
    }
    fn add_address(&self, ifname: &str, vhid: Vhid, addr: IpNet) -> Result<(), KernelError> {
        self.inner.add_address(ifname, vhid, addr)
    }
    fn del_address(&self, ifname: &str, addr: IpNet) -> Result<(), KernelError> {
        self.inner.del_address(ifname, addr)
    }
    fn sysctl_get(&self, knob: Sysctl) -> Result<i64, KernelError> {
        self.inner.sysctl_get(knob)
    }
    fn sysctl_set(&self, knob: Sysctl, value: i64) -> Result<(), KernelError> {
        self.inner.sysctl_set(knob, value)
    }
    fn demotion_add(&self, delta: i64) -> Result<(), KernelError> {
        let f = std::mem::replace(&mut *self.next.lock().unwrap(), Fault::None);
        match f {
            Fault::None => self.inner.demotion_add(delta),
            Fault::Fail => Err(KernelError::errno(
                "add to net.inet.carp.demotion",
                libc::EPERM,
            )),
            Fault::CrashBefore => resume_unwind(Box::new(Crash)),
            Fault::CrashAfter => {
                self.inner.demotion_add(delta).unwrap();
                resume_unwind(Box::new(Crash))
            }
        }
    }
    fn stats(&self) -> Result<CarpStats, KernelError> {
        self.inner.stats()
    }
    fn boot_id(&self) -> Result<BootId, KernelError> {
        self.inner.boot_id()
    }
}

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: LedgerStore,
    k: Faulty,
}

fn fixture() -> Fixture {
    fixture_in(tempfile::tempdir().unwrap())
}

/// On tmpfs when there is one: the property test makes thousands of fsyncs, which cost
/// real disk flushes elsewhere and test nothing more.
fn fast_fixture() -> Fixture {
    let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir());
    fixture_in(dir.unwrap())
}

fn fixture_in(dir: tempfile::TempDir) -> Fixture {
    let store = LedgerStore::new(dir.path().join("db/carpd"));
    Fixture {
        _dir: dir,
        store,
        k: Faulty::new(),
    }
}

impl Fixture {
    fn boot(&self) -> BootId {
        self.k.boot_id().unwrap()
    }
    fn ledger(&self) -> Ledger {
        self.store.read().unwrap()
    }
    /// Runs `f`, which must "crash" (unwind with [`Crash`]).
    fn crashes<R: fmt::Debug>(&self, f: impl FnOnce() -> R) {
        match catch_unwind(AssertUnwindSafe(f)) {
            Err(p) if p.is::<Crash>() => {}
            Err(p) => resume_unwind(p),
            Ok(r) => panic!("expected a crash, got {r:?}"),
        }
    }
}

#[test]
fn enter_records_then_applies_and_is_idempotent() {
    let f = fixture();
    let o = f
        .store
        .add(&f.k, Reason::Maintenance, 240, t(1000))
        .unwrap();
    assert_eq!(o, AddOutcome::Added { delta: 240 });
    assert_eq!(f.k.demotion(), 240);
    let l = f.ledger();
    assert_eq!(
        l.entries,
        vec![Entry {
            reason: Reason::Maintenance,
            delta: 240,
            since: 1000,
            boot: f.boot(),
            state: EntryState::Applied,
        }]
    );
    // Double enter: nothing more in the kernel, the first time is kept.
    let o = f
        .store
        .add(&f.k, Reason::Maintenance, 240, t(2000))
        .unwrap();
    assert_eq!(
        o,
        AddOutcome::AlreadyApplied {
            delta: 240,
            since: 1000
        }
    );
    assert_eq!(f.k.demotion(), 240);
    // A different delta does not change an applied entry either.
    let o = f.store.add(&f.k, Reason::Maintenance, 10, t(3000)).unwrap();
    assert_eq!(o.kernel_delta(), 0);
    assert_eq!(f.k.demotion(), 240);
    assert_eq!(f.ledger().in_kernel(&f.boot()), 240);
}

#[test]
fn leave_removes_exactly_carpds_part_never_the_kernels() {
    let f = fixture();
    // The kernel's own part (an interface down) and pfsync's, before and after carpd's.
    f.k.inner.demotion_add(240).unwrap();
    f.store.add(&f.k, Reason::Maintenance, 100, t(1)).unwrap();
    f.k.inner.demotion_add(240).unwrap();
    assert_eq!(f.k.demotion(), 580);
    let o = f.store.remove(&f.k, Reason::Maintenance, t(2)).unwrap();
    assert_eq!(
        o,
        RemoveOutcome::Removed {
            delta: 100,
            subtracted: 100
        }
    );
    assert_eq!(f.k.demotion(), 480);
    assert!(f.ledger().entries.is_empty());
    // Leave again, and leave without enter: nothing happens.
    for _ in 0..2 {
        let o = f.store.remove(&f.k, Reason::Maintenance, t(3)).unwrap();
        assert_eq!(o, RemoveOutcome::NotInLedger);
        assert_eq!(f.k.demotion(), 480);
    }
}

#[test]
fn leave_without_enter_on_a_fresh_system_touches_nothing() {
    let f = fixture();
    f.k.inner.demotion_add(240).unwrap();
    assert_eq!(
        f.store.remove(&f.k, Reason::Maintenance, t(1)).unwrap(),
        RemoveOutcome::NotInLedger
    );
    assert_eq!(f.k.demotion(), 240);
}

#[test]
fn maintenance_and_not_ready_are_separate_entries() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    f.store.add(&f.k, Reason::NotReady, 50, t(2)).unwrap();
    assert_eq!(f.k.demotion(), 290);
    assert_eq!(f.ledger().in_kernel(&f.boot()), 290);
    f.store.remove(&f.k, Reason::Maintenance, t(3)).unwrap();
    assert_eq!(f.k.demotion(), 50);
    assert!(f.ledger().is_applied(Reason::NotReady, &f.boot()));
    f.store.remove(&f.k, Reason::NotReady, t(4)).unwrap();
    assert_eq!(f.k.demotion(), 0);
}

#[test]
fn a_reboot_loses_the_kernel_part_leave_subtracts_nothing_and_restore_reapplies() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    let first = f.boot();
    f.k.inner.reboot().unwrap();
    assert_ne!(f.boot(), first);
    assert_eq!(f.k.demotion(), 0);
    let s = f.store.status(&f.k);
    assert_eq!(s.entries[0].state, "lost_by_reboot");
    assert_eq!((s.carpd_demotion, s.kernel_demotion), (0, Some(0)));
    assert!(s.maintenance);

    // restore applies it in the new boot, once.
    let r = f.store.restore(&f.k, t(50)).unwrap();
    assert_eq!(
        r,
        vec![(
            Reason::Maintenance,
            AddOutcome::ReappliedAfterReboot {
                delta: 240,
                since: 1
            }
        )]
    );
    assert_eq!(f.k.demotion(), 240);
    assert!(f.store.restore(&f.k, t(51)).unwrap().is_empty());
    assert_eq!(f.k.demotion(), 240);
    let s = f.store.status(&f.k);
    assert_eq!(s.entries[0].state, "applied");
    assert_eq!(s.entries[0].since_unix, 1, "since survives the reboot");

    // Leave after a reboot without restore: the reboot already removed it; carpd must not
    // subtract (the kernel's part would go, or the level below 0).
    f.k.inner.reboot().unwrap();
    f.k.inner.demotion_add(240).unwrap(); // an interface is down in the new boot
    let o = f.store.remove(&f.k, Reason::Maintenance, t(60)).unwrap();
    assert_eq!(o, RemoveOutcome::LostByReboot { delta: 240 });
    assert_eq!(f.k.demotion(), 240);
    assert!(f.ledger().entries.is_empty());
}

#[test]
fn enter_after_a_reboot_reapplies_the_old_entry() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    f.k.inner.reboot().unwrap();
    let o = f.store.add(&f.k, Reason::Maintenance, 240, t(9)).unwrap();
    assert_eq!(
        o,
        AddOutcome::ReappliedAfterReboot {
            delta: 240,
            since: 1
        }
    );
    assert_eq!(f.k.demotion(), 240);
}

#[test]
fn a_refused_kernel_write_rolls_the_ledger_back() {
    let f = fixture();
    f.k.arm(Fault::Fail);
    let e = f
        .store
        .add(&f.k, Reason::Maintenance, 240, t(1))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("EPERM") && msg.contains("root") && msg.contains("is unchanged"),
        "{msg}"
    );
    assert!(f.ledger().entries.is_empty());
    assert_eq!(f.k.demotion(), 0);

    f.store.add(&f.k, Reason::Maintenance, 240, t(2)).unwrap();
    f.k.arm(Fault::Fail);
    assert!(f.store.remove(&f.k, Reason::Maintenance, t(3)).is_err());
    assert!(f.ledger().is_applied(Reason::Maintenance, &f.boot()));
    assert_eq!(f.k.demotion(), 240);
    // And it can be left afterwards.
    f.store.remove(&f.k, Reason::Maintenance, t(4)).unwrap();
    assert_eq!(f.k.demotion(), 0);
}

#[test]
fn crash_before_the_kernel_write_leaves_a_pending_entry_that_is_applied_once_more() {
    let f = fixture();
    f.k.arm(Fault::CrashBefore);
    f.crashes(|| f.store.add(&f.k, Reason::Maintenance, 240, t(1)));
    assert_eq!(f.k.demotion(), 0);
    let l = f.ledger();
    assert_eq!(l.entries[0].state, EntryState::Pending, "write-ahead");
    assert_eq!(f.store.status(&f.k).entries[0].state, "interrupted_add");

    // The next enter (or the daemon's restore) applies it, and says the kernel may hold it
    // twice (it does not here: the crash came before the write).
    let o = f.store.add(&f.k, Reason::Maintenance, 240, t(2)).unwrap();
    assert_eq!(
        o,
        AddOutcome::ReappliedAfterInterruption {
            delta: 240,
            since: 1
        }
    );
    assert_eq!(f.k.demotion(), 240);
    let s = f.store.status(&f.k);
    assert_eq!((s.carpd_demotion, s.carpd_uncertain), (240, 240));
    assert!(
        s.to_text().contains("doubt: maintenance 240"),
        "{}",
        s.to_text()
    );
}

#[test]
fn crash_after_the_kernel_write_over_demotes_never_under() {
    let f = fixture();
    f.k.arm(Fault::CrashAfter);
    f.crashes(|| f.store.add(&f.k, Reason::Maintenance, 240, t(1)));
    assert_eq!(f.k.demotion(), 240, "the kernel saw the write");
    // The daemon starts: restore re-applies the pending entry (safe direction).
    let r = f.store.restore(&f.k, t(2)).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(f.k.demotion(), 480);
    let l = f.ledger();
    assert_eq!((l.in_kernel(&f.boot()), l.in_doubt(&f.boot())), (240, 240));
    // Leave removes what the ledger holds; the doubt stays visible.
    f.store.remove(&f.k, Reason::Maintenance, t(3)).unwrap();
    assert_eq!(f.k.demotion(), 240);
    let s = f.store.status(&f.k);
    assert_eq!((s.carpd_demotion, s.carpd_uncertain), (0, 240));
    // A reboot makes the doubt moot, and it is forgotten at the next write.
    f.k.inner.reboot().unwrap();
    f.store.restore(&f.k, t(4)).unwrap();
    assert!(f.ledger().doubts.is_empty());
    assert_eq!(f.k.demotion(), 0);
}

#[test]
fn leave_after_an_interrupted_enter_subtracts_nothing() {
    let f = fixture();
    f.k.arm(Fault::CrashBefore);
    f.crashes(|| f.store.add(&f.k, Reason::Maintenance, 240, t(1)));
    let o = f.store.remove(&f.k, Reason::Maintenance, t(2)).unwrap();
    assert_eq!(o, RemoveOutcome::DroppedInterrupted { delta: 240 });
    assert_eq!(f.k.demotion(), 0, "never below what carpd knows it added");
    assert_eq!(f.ledger().in_doubt(&f.boot()), 240);
}

#[test]
fn crashes_during_leave_count_the_removal_as_done() {
    for (fault, kernel_after) in [(Fault::CrashBefore, 240), (Fault::CrashAfter, 0)] {
        let f = fixture();
        f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
        f.k.arm(fault);
        f.crashes(|| f.store.remove(&f.k, Reason::Maintenance, t(2)));
        assert_eq!(f.ledger().entries[0].state, EntryState::Removing);
        assert_eq!(f.store.status(&f.k).entries[0].state, "interrupted_removal");
        // Leaving again does not subtract a second time.
        let o = f.store.remove(&f.k, Reason::Maintenance, t(3)).unwrap();
        assert_eq!(o, RemoveOutcome::NotInLedger, "{fault:?}");
        assert_eq!(f.k.demotion(), kernel_after, "{fault:?}");
        let l = f.ledger();
        assert!(l.entries.is_empty());
        assert_eq!(l.in_doubt(&f.boot()), 240, "{fault:?}");
    }
}

#[test]
fn a_kernel_reset_without_reboot_never_makes_carpd_go_negative() {
    // carp.ko reloaded (or someone wrote a negative value): the kernel lost carpd's part
    // while the boot is the same.
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    f.store.add(&f.k, Reason::NotReady, 50, t(1)).unwrap();
    f.k.inner.demotion_add(-290).unwrap();
    f.k.inner.demotion_add(100).unwrap();
    // 100 in the kernel; carpd's other entry (not_ready, 50) stays accounted for.
    let o = f.store.remove(&f.k, Reason::Maintenance, t(2)).unwrap();
    assert_eq!(
        o,
        RemoveOutcome::Removed {
            delta: 240,
            subtracted: 50
        }
    );
    assert_eq!(f.k.demotion(), 50);
    f.store.remove(&f.k, Reason::NotReady, t(3)).unwrap();
    assert_eq!(f.k.demotion(), 0);
    f.store.add(&f.k, Reason::NotReady, 50, t(4)).unwrap();
    f.k.inner.demotion_add(-50).unwrap();
    f.store.remove(&f.k, Reason::NotReady, t(5)).unwrap();
    assert_eq!(f.k.demotion(), 0, "not -50");
}

/// issue 16: carp.ko unloaded and loaded again (or a VNET jail re-created) resets the
/// kernel's demotion without a new boot id. The ledger used to believe its entries were
/// still applied; restore (and a repeated enter) now see the kernel below carpd's part and
/// apply them again.
#[test]
fn a_carp_reload_is_detected_from_the_kernel_and_the_demotion_reapplied() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    f.store.add(&f.k, Reason::NotReady, 50, t(2)).unwrap();
    let boot = f.boot();
    // carp.ko reloaded: demotion back to 0, same boot.
    f.k.inner.demotion_add(-290).unwrap();
    assert_eq!(f.boot(), boot);
    let r = f.store.restore(&f.k, t(10)).unwrap();
    assert_eq!(
        r,
        vec![
            (
                Reason::Maintenance,
                AddOutcome::ReappliedAfterKernelReset {
                    delta: 240,
                    since: 1
                }
            ),
            (
                Reason::NotReady,
                AddOutcome::ReappliedAfterKernelReset {
                    delta: 50,
                    since: 2
                }
            ),
        ]
    );
    assert_eq!(f.k.demotion(), 290);
    assert!(f.ledger().doubts.is_empty(), "nothing had survived: exact");
    // Idempotent: nothing is missing any more.
    assert!(f.store.restore(&f.k, t(11)).unwrap().is_empty());
    assert_eq!(f.k.demotion(), 290);

    // A kernel that kept more than carpd's part (an interface down) is not a reset.
    f.k.inner.demotion_add(240).unwrap();
    assert!(f.store.restore(&f.k, t(12)).unwrap().is_empty());
    assert_eq!(f.k.demotion(), 530);
}

#[test]
fn a_partial_reset_reapplies_everything_and_records_the_doubt() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    // Reloaded, and a vhid that cannot run added 100 (not carpd's).
    f.k.inner.demotion_add(-240 + 100).unwrap();
    let r = f.store.restore(&f.k, t(5)).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(f.k.demotion(), 340, "over-demote rather than promote");
    let l = f.ledger();
    assert_eq!(
        l.in_doubt(&f.boot()),
        100,
        "the 100 might have been carpd's"
    );
    assert!(l.is_applied(Reason::Maintenance, &f.boot()));
}

#[test]
fn enter_again_after_a_carp_reload_reapplies() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    f.k.inner.demotion_add(-240).unwrap();
    let o = f.store.add(&f.k, Reason::Maintenance, 240, t(9)).unwrap();
    assert_eq!(
        o,
        AddOutcome::ReappliedAfterKernelReset {
            delta: 240,
            since: 1
        }
    );
    assert_eq!(f.k.demotion(), 240);
    let o = f.store.add(&f.k, Reason::Maintenance, 240, t(10)).unwrap();
    assert!(matches!(o, AddOutcome::AlreadyApplied { .. }), "{o:?}");
}

/// A crash while re-applying after a reset leaves a pending entry: the next restore applies
/// it (once more) and says the kernel may hold it twice.
#[test]
fn a_crash_while_reapplying_after_a_reset_over_demotes_never_under() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    f.k.inner.demotion_add(-240).unwrap();
    f.k.arm(Fault::CrashAfter);
    f.crashes(|| f.store.restore(&f.k, t(2)));
    assert_eq!(f.k.demotion(), 240);
    f.store.restore(&f.k, t(3)).unwrap();
    assert_eq!(f.k.demotion(), 480);
    assert_eq!(f.ledger().in_doubt(&f.boot()), 240);
}

#[test]
fn files_are_private_and_written_atomically() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(f.store.dir()), 0o700);
    assert_eq!(mode(&f.store.path()), 0o600);
    assert_eq!(mode(&f.store.dir().join(LOCK_FILE)), 0o600);
    // No temp file is left behind: the directory holds the ledger and the lock only.
    let names: Vec<String> = fs::read_dir(f.store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let text = fs::read_to_string(f.store.path()).unwrap();
    assert!(
        text.contains("\"schema\": \"carpd.ledger.v1\"") && text.contains("\"maintenance\""),
        "{text}"
    );
}

#[test]
fn a_corrupt_ledger_is_an_error_naming_the_file_and_the_recovery_never_a_reset() {
    for garbage in [
        "{not json".to_string(),
        r#"{"schema":"carpd.ledger.v9","entries":[]}"#.to_string(),
        r#"{"schema":"carpd.ledger.v1","entries":[{"reason":"maintenance","delta":0,"since":1,"boot":"sim:0","state":"applied"}]}"#.to_string(),
        r#"{"schema":"carpd.ledger.v1","entries":[{"reason":"maintenance","delta":5,"since":1,"boot":"sim:0","state":"applied"},{"reason":"maintenance","delta":5,"since":1,"boot":"sim:0","state":"applied"}]}"#.to_string(),
    ] {
        let f = fixture();
        fs::create_dir_all(f.store.dir()).unwrap();
        fs::set_permissions(f.store.dir(), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(f.store.path(), &garbage).unwrap();
        for e in [
            f.store
                .add(&f.k, Reason::Maintenance, 240, t(1))
                .unwrap_err(),
            f.store.remove(&f.k, Reason::Maintenance, t(1)).unwrap_err(),
            f.store.restore(&f.k, t(1)).unwrap_err(),
        ] {
            let msg = e.to_string();
            assert!(
                matches!(e, LedgerError::Corrupt { .. })
                    && msg.contains(&f.store.path().display().to_string())
                    && msg.contains("mv ")
                    && msg.contains("sysctl net.inet.carp.demotion"),
                "{msg}"
            );
        }
        assert_eq!(fs::read_to_string(f.store.path()).unwrap(), garbage);
        assert_eq!(f.k.demotion(), 0);
        let s = f.store.status(&f.k);
        assert_eq!(s.errors.len(), 1, "{s:?}");
    }
}

#[test]
fn unusable_state_dirs_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let k = Faulty::new();
    // A file where the directory should be.
    let file = dir.path().join("carpd");
    fs::write(&file, "x").unwrap();
    let e = LedgerStore::new(&file)
        .add(&k, Reason::Maintenance, 240, t(1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&file.display().to_string())
            && e.contains("not a directory")
            && e.contains("maintenance.state_dir"),
        "{e}"
    );
    // A directory below a file cannot be created.
    let e = LedgerStore::new(file.join("sub"))
        .add(&k, Reason::Maintenance, 240, t(1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot be created") && e.contains("maintenance.state_dir"),
        "{e}"
    );
    // A directory that cannot be created for another reason (here: a read-only parent
    // as a non-root user; as root, a path under /proc) names the directory and the fix.
    let e = LedgerStore::new("/proc/carpd-ledger-test")
        .add(&k, Reason::Maintenance, 240, t(1))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/proc/carpd-ledger-test: cannot be created") && e.contains("install -d"),
        "{e}"
    );
    // A directory others can write.
    let open = dir.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let e = LedgerStore::new(&open)
        .add(&k, Reason::Maintenance, 240, t(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("chmod 0700"), "{e}");
    assert_eq!(k.demotion(), 0, "nothing reached the kernel");
    // Invalid deltas are refused before anything.
    let e = LedgerStore::new(dir.path().join("ok"))
        .add(&k, Reason::NotReady, 0, t(1))
        .unwrap_err();
    assert!(matches!(e, LedgerError::InvalidDelta(0)), "{e}");
}

#[test]
fn status_of_an_absent_ledger_is_empty_and_shows_the_kernel_part() {
    let f = fixture();
    f.k.inner.demotion_add(240).unwrap();
    let s = f.store.status(&f.k);
    assert!(s.errors.is_empty(), "{s:?}");
    assert!(!s.maintenance && s.entries.is_empty());
    assert_eq!(
        (s.carpd_demotion, s.kernel_demotion, s.other_demotion),
        (0, Some(240), Some(240))
    );
    assert!(!f.store.dir().exists(), "status creates nothing");
    assert!(f.store.restore(&f.k, t(1)).unwrap().is_empty());
    assert_eq!(
        f.store.remove(&f.k, Reason::NotReady, t(1)).unwrap(),
        RemoveOutcome::NotInLedger
    );
    assert!(
        !f.store.dir().exists(),
        "restore and remove without a ledger create nothing"
    );
    assert_eq!(f.k.demotion(), 240);
    let text = s.to_text();
    assert!(text.contains("240, of which 240 not carpd's"), "{text}");
}

#[test]
fn concurrent_writers_never_lose_each_others_entries() {
    // The CLI and the daemon (here: two threads, each with its own open of the lock file,
    // which flock treats like two processes) change different reasons at the same time.
    // Without the lock around read-modify-write, one's write would drop the other's entry.
    // 40 rounds let that break pass one run in five (the threads need not overlap); 400
    // make an overlap certain.
    let f = fast_fixture();
    std::thread::scope(|s| {
        for (reason, delta) in [(Reason::Maintenance, 240), (Reason::NotReady, 50)] {
            let f = &f;
            s.spawn(move || {
                for i in 0..400 {
                    f.store.add(&f.k, reason, delta, t(i)).unwrap();
                    f.store.remove(&f.k, reason, t(i)).unwrap();
                }
                f.store.add(&f.k, reason, delta, t(99)).unwrap();
            });
        }
    });
    let l = f.ledger();
    assert_eq!(l.entries.len(), 2, "{l:?}");
    assert_eq!(l.in_kernel(&f.boot()), 290);
    assert_eq!(f.k.demotion(), 290);
}

// ---------------------------------------------------------------------------------------
// Property: random sequences of operations, reboots, kernel activity and crashes.

#[derive(Clone, Debug)]
enum Op {
    Add(Reason, u32, Fault),
    Remove(Reason, Fault),
    Restore(Fault),
    Reboot,
    /// The kernel or pfsync adds 240 (interface down) ...
    ExternalUp,
    /// ... and takes it back.
    ExternalDown,
}

fn reason() -> impl Strategy<Value = Reason> {
    prop_oneof![Just(Reason::Maintenance), Just(Reason::NotReady)]
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::Fail),
        1 => Just(Fault::CrashBefore),
        1 => Just(Fault::CrashAfter),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (reason(), 1u32..=240, fault()).prop_map(|(r, d, f)| Op::Add(r, d, f)),
        3 => (reason(), fault()).prop_map(|(r, f)| Op::Remove(r, f)),
        2 => fault().prop_map(Op::Restore),
        1 => Just(Op::Reboot),
        1 => Just(Op::ExternalUp),
        1 => Just(Op::ExternalDown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The kernel's demotion is never below the part that is not carpd's; carpd's actual
    /// part is between what the ledger says and that plus its recorded doubts after any
    /// restore; and without faults it is exactly the ledger's total after every step.
    #[test]
    fn carpd_never_eats_the_kernels_part(ops in proptest::collection::vec(op(), 1..24)) {
        let f = fast_fixture();
        let mut external = 0i64;
        let mut faulted = false;
        for (i, op) in ops.iter().enumerate() {
            let now = t(100 + i as u64);
            let mut restored = false;
            let arm = |fault: Fault| {
                f.k.arm(fault);
                fault != Fault::None
            };
            // Every result is allowed (refusals and crashes are part of the test); only
            // the invariants below matter.
            let run = |op: &Op| -> bool {
                catch_unwind(AssertUnwindSafe(|| match op {
                    Op::Add(r, d, _) => f.store.add(&f.k, *r, *d, now).is_ok(),
                    Op::Remove(r, _) => f.store.remove(&f.k, *r, now).is_ok(),
                    Op::Restore(_) => f.store.restore(&f.k, now).is_ok(),
                    _ => true,
                }))
                .unwrap_or(false)
            };
            match op {
                Op::Add(_, _, fl) | Op::Remove(_, fl) => {
                    faulted |= arm(*fl);
                    run(op);
                }
                Op::Restore(fl) => {
                    faulted |= arm(*fl);
                    restored = run(op);
                }
                Op::Reboot => {
                    f.k.inner.reboot().unwrap();
                    external = 0;
                }
                Op::ExternalUp => {
                    f.k.inner.demotion_add(240).unwrap();
                    external += 240;
                }
                Op::ExternalDown if external >= 240 => {
                    f.k.inner.demotion_add(-240).unwrap();
                    external -= 240;
                }
                Op::ExternalDown => {}
            }
            f.k.arm(Fault::None);
            let kernel = f.k.demotion();
            let carpd = kernel - external;
            prop_assert!(carpd >= 0, "step {i} {op:?}: kernel {kernel} below the external part {external}");
            let l = f.store.read().unwrap();
            let boot = f.boot();
            if !faulted {
                prop_assert_eq!(carpd, l.in_kernel(&boot), "step {} {:?}: exact without faults", i, op);
            }
            if restored {
                prop_assert!(
                    l.in_kernel(&boot) <= carpd && carpd <= l.in_kernel(&boot) + l.in_doubt(&boot),
                    "step {} {:?}: carpd's part {} vs ledger {} + doubt {}",
                    i, op, carpd, l.in_kernel(&boot), l.in_doubt(&boot)
                );
                prop_assert!(l.to_restore(&boot).is_empty());
            }
        }
        // A final clean restore and leave of everything: only the doubts may remain.
        f.store.restore(&f.k, t(10_000)).unwrap();
        for r in Reason::ALL {
            f.store.remove(&f.k, r, t(10_001)).unwrap();
        }
        let l = f.store.read().unwrap();
        let carpd = f.k.demotion() - external;
        prop_assert!(l.entries.is_empty());
        prop_assert!(carpd >= 0 && carpd <= l.in_doubt(&f.boot()), "left {carpd}, doubts {}", l.in_doubt(&f.boot()));
        if !faulted {
            prop_assert_eq!(carpd, 0);
        }
    }
}

/// Issue 19, item 4: the ledger is neither written nor believed in a directory another user
/// owns, and a symlink planted as the ledger is replaced, never written through.
#[test]
fn a_state_directory_others_control_is_refused_before_any_write() {
    let f = fixture();
    f.store.add(&f.k, Reason::Maintenance, 240, t(1)).unwrap();
    let before = fs::read(f.store.path()).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(f.store.dir(), Some(4242), None).unwrap();
        let e = f.store.remove(&f.k, Reason::Maintenance, t(2)).unwrap_err();
        assert!(e.to_string().contains("uid 4242"), "{e}");
        assert!(f.store.read().unwrap_err().to_string().contains("uid 4242"));
        assert_eq!(fs::read(f.store.path()).unwrap(), before, "nothing written");
        std::os::unix::fs::chown(f.store.dir(), Some(0), None).unwrap();
    }
    let victim = f.store.dir().parent().unwrap().join("victim");
    fs::write(&victim, "keep").unwrap();
    fs::remove_file(f.store.path()).unwrap();
    std::os::unix::fs::symlink(&victim, f.store.path()).unwrap();
    assert!(f.store.read().is_err(), "a symlinked ledger is not read");
}
