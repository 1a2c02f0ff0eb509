//! The demotion ledger: what carpd itself added to `net.inet.carp.demotion`, by reason, so
//! that it can remove exactly that and re-apply it after a reboot.
//!
//! Why: the kernel's demotion is one global integer shared with the kernel itself (interface
//! down, send errors) and pfsync, and a write ADDS to it. Nothing in the kernel says who
//! added what, and it resets to 0 at every boot. So carpd keeps its own account on disk,
//! `<state_dir>/ledger.json` (default /var/db/carpd): one entry per reason
//! ([`Reason::Maintenance`], [`Reason::NotReady`]) with its delta, when it was set, and the
//! boot identity ([`BootId`]) of the kernel it was applied to.
//!
//! Layers: [`Ledger`] and the planners [`plan_add`] / [`plan_remove`] are pure (no I/O, the
//! clock and the kernel's reading are inputs) and return a [`Txn`]; [`LedgerStore`] does the
//! I/O: directory, lock, atomic writes, the kernel call, rollback.
//!
//! Invariants:
//! - Write-ahead: the ledger records an intent (`pending` before an add, `removing` before a
//!   subtraction) and is fsynced BEFORE the kernel is touched; the final state is written
//!   after. A kernel call that returns an error changed nothing, so the ledger is rolled
//!   back to what it was.
//! - After a crash between the two writes, nobody can tell whether the kernel call happened.
//!   carpd resolves it in the safe direction, over-demoting rather than promoting: an
//!   interrupted add (`pending`) counts as NOT applied, so the next add or restore applies it
//!   (again); an interrupted removal (`removing`) counts as DONE, so the entry is dropped
//!   without subtracting again. Either way the kernel may hold up to that delta more than
//!   the ledger says; this is recorded as a [`Doubt`] (shown by `carpd maintenance status`,
//!   forgotten at the next reboot, which resets the kernel's demotion anyway).
//! - carpd never subtracts more than it recorded as applied in the current boot, and never
//!   so much that the kernel would go below what its other applied entries account for:
//!   a negative demotion never comes from carpd, and the kernel's and pfsync's part is never
//!   eaten.
//! - An entry applied in another boot is not in the kernel: `remove` drops it without
//!   touching the kernel, `restore` (the daemon, at start) applies it again.
//! - The ledger follows the kernel, not only the boot identity: carp.ko unloaded and loaded
//!   again, or a VNET jail re-created, resets `net.inet.carp.demotion` without a new
//!   `kern.boot_id`. When the kernel's level is below what the ledger says carpd applied in
//!   this boot, carpd's part is (at least partly) gone: `restore` (the daemon calls it at
//!   start and at every full resync) applies every such entry again, and records a doubt
//!   for whatever part of the kernel's level might have been carpd's (over-demoting rather
//!   than promoting, as everywhere here).
//! - One process at a time: an exclusive flock on `<state_dir>/ledger.lock` is held across
//!   the whole read-modify-write, kernel call included, so a `pending` entry found under the
//!   lock is always a crashed one, never one in flight.
//! - A ledger that does not parse is an error naming the file and how to recover; it is
//!   never silently reset (that would forget what carpd has in the kernel).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::carp::Sysctl;
use crate::config::MaintenanceConfig;
use crate::kernel::{BootId, Kernel, KernelError};

/// The ledger's file name inside `state_dir`.
pub const LEDGER_FILE: &str = "ledger.json";
/// The lock file serializing carpd processes (CLI and daemon) inside `state_dir`.
pub const LOCK_FILE: &str = "ledger.lock";
/// Version tag of the file format.
pub const SCHEMA: &str = "carpd.ledger.v1";
/// Largest delta one entry may hold: the kernel caps advskew + demotion at 240, so more
/// never changes an election.
pub const MAX_DELTA: u32 = 240;
/// Largest ledger file carpd reads: a real one holds two entries and a few doubts (under
/// 2 KiB); anything much bigger is not a ledger carpd wrote, and reading it whole would let
/// a stray file grow the daemon's memory.
pub const MAX_FILE_SIZE: u64 = 256 * 1024;

/// Why carpd demotes this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `carpd maintenance enter`.
    Maintenance,
    /// The daemon's readiness checks failed (`readiness.demotion`).
    NotReady,
}

impl Reason {
    pub const ALL: [Reason; 2] = [Reason::Maintenance, Reason::NotReady];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Maintenance => "maintenance",
            Reason::NotReady => "not_ready",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an entry stands with respect to the kernel of its `boot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// Written before the add: if found later, the add was interrupted and may or may not
    /// have reached the kernel (treated as not applied).
    Pending,
    /// Added to the kernel of `boot`.
    Applied,
    /// Written before the subtraction: if found later, the removal was interrupted and may
    /// or may not have reached the kernel (treated as done).
    Removing,
}

/// One contribution of carpd to the kernel's demotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub reason: Reason,
    /// What carpd adds for this reason (1..=240).
    pub delta: u32,
    /// When the reason was first set (Unix seconds); kept when re-applied after a reboot.
    pub since: u64,
    /// The boot the entry was (or is being) applied in.
    pub boot: BootId,
    pub state: EntryState,
}

/// The kernel may hold up to `delta` more than the ledger says, because an operation was
/// interrupted at a point where carpd cannot know whether the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Doubt {
    pub reason: Reason,
    pub delta: u32,
    /// The boot it concerns; a reboot makes the doubt moot (demotion resets).
    pub boot: BootId,
    /// When carpd found the interrupted operation (Unix seconds).
    pub at: u64,
    pub what: String,
}

/// The whole ledger, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    pub schema: String,
    /// At most one entry per reason, sorted by reason.
    #[serde(default)]
    pub entries: Vec<Entry>,
    #[serde(default)]
    pub doubts: Vec<Doubt>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            schema: SCHEMA.to_string(),
            entries: Vec::new(),
            doubts: Vec::new(),
        }
    }
}

impl Ledger {
    pub fn entry(&self, reason: Reason) -> Option<&Entry> {
        self.entries.iter().find(|e| e.reason == reason)
    }

    /// What carpd has in the kernel of `boot`, according to the ledger: its applied entries.
    pub fn in_kernel(&self, boot: &BootId) -> i64 {
        self.entries
            .iter()
            .filter(|e| e.state == EntryState::Applied && e.boot == *boot)
            .map(|e| i64::from(e.delta))
            .sum()
    }

    /// How much more than [`Ledger::in_kernel`] the kernel of `boot` may hold after
    /// interrupted operations.
    pub fn in_doubt(&self, boot: &BootId) -> i64 {
        self.doubts
            .iter()
            .filter(|d| d.boot == *boot)
            .map(|d| i64::from(d.delta))
            .sum()
    }

    /// Whether `reason`'s entry is applied in `boot` (in force now).
    pub fn is_applied(&self, reason: Reason, boot: &BootId) -> bool {
        self.entry(reason)
            .is_some_and(|e| e.state == EntryState::Applied && e.boot == *boot)
    }

    /// Reasons whose entry is not in the kernel of `boot` and should be: applied in another
    /// boot, or an interrupted add.
    pub fn to_restore(&self, boot: &BootId) -> Vec<Reason> {
        self.entries
            .iter()
            .filter(|e| e.state != EntryState::Removing)
            .filter(|e| e.boot != *boot || e.state == EntryState::Pending)
            .map(|e| e.reason)
            .collect()
    }

    /// Decodes and checks the file's bytes: the whole of what [`LedgerStore`] believes about
    /// the disk goes through here (fuzzed: never panics, re-encodes to the same ledger). The
    /// error says what is wrong, without the file name (the caller adds it).
    pub fn decode(bytes: &[u8]) -> Result<Ledger, String> {
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(format!(
                "is {} bytes long, more than the {MAX_FILE_SIZE} bytes a ledger can take",
                bytes.len()
            ));
        }
        let l: Ledger = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        l.check()?;
        Ok(l)
    }

    /// Checks what serde cannot: one entry per reason, deltas in range, a known schema.
    fn check(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema is {:?}, this carpd reads {SCHEMA:?} (written by another carpd version?)",
                self.schema
            ));
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.delta == 0 || e.delta > MAX_DELTA {
                return Err(format!(
                    "entry {i} ({}) has delta {}, allowed 1..={MAX_DELTA}",
                    e.reason, e.delta
                ));
            }
            if self.entries[..i].iter().any(|o| o.reason == e.reason) {
                return Err(format!("reason {} appears twice", e.reason));
            }
        }
        Ok(())
    }

    fn set(&mut self, entry: Entry) {
        self.entries.retain(|e| e.reason != entry.reason);
        self.entries.push(entry);
        self.entries.sort_by_key(|e| e.reason);
    }

    fn drop_entry(&mut self, reason: Reason) {
        self.entries.retain(|e| e.reason != reason);
    }

    fn doubt(&mut self, e: &Entry, now: u64, what: &str) {
        self.doubts.push(Doubt {
            reason: e.reason,
            delta: e.delta,
            boot: e.boot.clone(),
            at: now,
            what: what.to_string(),
        });
    }

    /// Resolves what crashed processes left behind, under the lock: an interrupted removal
    /// counts as done (dropped; a doubt when it concerns this boot); doubts about other
    /// boots are forgotten (the reboot reset the kernel's demotion). Interrupted adds stay
    /// `pending`: the caller (re-)applies or drops them.
    fn settle(&mut self, boot: &BootId, now: u64) {
        let removing: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.state == EntryState::Removing)
            .cloned()
            .collect();
        for e in removing {
            self.drop_entry(e.reason);
            if e.boot == *boot {
                self.doubt(
                    &e,
                    now,
                    "a removal was interrupted; carpd counts it as done, so the kernel may still hold this much",
                );
            }
        }
        self.doubts.retain(|d| d.boot == *boot);
    }
}

/// What an add did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AddOutcome {
    /// A new entry, added to the kernel.
    Added { delta: u32 },
    /// Already applied in this boot: nothing changed (the recorded delta is kept).
    AlreadyApplied { delta: u32, since: u64 },
    /// An entry from a previous boot (which reset the kernel's demotion), applied again.
    ReappliedAfterReboot { delta: u32, since: u64 },
    /// An add interrupted in this boot, applied again (the kernel may now hold it twice:
    /// recorded as a doubt).
    ReappliedAfterInterruption { delta: u32, since: u64 },
    /// Applied in this boot, but the kernel's demotion had fallen below carpd's part
    /// (carp.ko reloaded, VNET re-created): applied again.
    ReappliedAfterKernelReset { delta: u32, since: u64 },
}

impl AddOutcome {
    /// What was added to the kernel by this call.
    pub fn kernel_delta(&self) -> i64 {
        match self {
            AddOutcome::AlreadyApplied { .. } => 0,
            AddOutcome::Added { delta }
            | AddOutcome::ReappliedAfterReboot { delta, .. }
            | AddOutcome::ReappliedAfterInterruption { delta, .. }
            | AddOutcome::ReappliedAfterKernelReset { delta, .. } => i64::from(*delta),
        }
    }
}

/// What a removal did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RemoveOutcome {
    /// Subtracted from the kernel and dropped. `subtracted` is less than `delta` only when
    /// the kernel held less than carpd's entries (something reset it without a reboot,
    /// e.g. carp.ko reloaded): carpd never takes the level below its own other entries.
    Removed { delta: u32, subtracted: i64 },
    /// No entry for this reason: nothing to do.
    NotInLedger,
    /// The entry was applied in a previous boot; the reboot already removed it from the
    /// kernel. Dropped without touching the kernel.
    LostByReboot { delta: u32 },
    /// The entry's add was interrupted in this boot: unknown whether the kernel has it.
    /// Dropped without subtracting (a doubt is recorded).
    DroppedInterrupted { delta: u32 },
}

impl RemoveOutcome {
    /// What was subtracted from the kernel by this call (>= 0).
    pub fn kernel_delta(&self) -> i64 {
        match self {
            RemoveOutcome::Removed { subtracted, .. } => *subtracted,
            _ => 0,
        }
    }
}

/// One ledger transaction, planned without I/O: write `intent` (when any) before the
/// kernel, add `delta` to the kernel (when not 0), then write `done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Txn<O> {
    /// The write-ahead record; `None` when the kernel is not touched.
    pub intent: Option<Ledger>,
    /// Added to the kernel's demotion between the two writes.
    pub delta: i64,
    /// The ledger after success (also the result of settling, when nothing else changes).
    pub done: Ledger,
    /// The ledger to put back if the kernel call fails (settled, otherwise unchanged).
    pub rollback: Ledger,
    pub outcome: O,
}

/// Plans adding `delta` for `reason` in `boot` at `now` (Unix seconds). Idempotent: an entry
/// applied in this boot is left alone.
pub fn plan_add(
    ledger: &Ledger,
    reason: Reason,
    delta: u32,
    boot: &BootId,
    now: u64,
) -> Txn<AddOutcome> {
    let mut l = ledger.clone();
    l.settle(boot, now);
    let rollback = l.clone();
    let existing = l.entry(reason).cloned();
    let (since, outcome) = match &existing {
        Some(e) if e.state == EntryState::Applied && e.boot == *boot => {
            return Txn {
                intent: None,
                delta: 0,
                done: l,
                rollback,
                outcome: AddOutcome::AlreadyApplied {
                    delta: e.delta,
                    since: e.since,
                },
            };
        }
        Some(e) if e.boot == *boot => {
            // Pending in this boot: a crash between the write-ahead and the end. Apply again
            // (over-demote rather than risk promoting) and say the kernel may have it twice.
            l.doubt(
                e,
                now,
                "an add was interrupted and applied again; if the first attempt had reached the kernel, it holds this much more",
            );
            (
                e.since,
                AddOutcome::ReappliedAfterInterruption {
                    delta,
                    since: e.since,
                },
            )
        }
        Some(e) => (
            e.since,
            AddOutcome::ReappliedAfterReboot {
                delta,
                since: e.since,
            },
        ),
        None => (now, AddOutcome::Added { delta }),
    };
    let mut entry = Entry {
        reason,
        delta,
        since,
        boot: boot.clone(),
        state: EntryState::Pending,
    };
    let mut intent = l.clone();
    intent.set(entry.clone());
    entry.state = EntryState::Applied;
    let mut done = l;
    done.set(entry);
    Txn {
        intent: Some(intent),
        delta: i64::from(delta),
        done,
        rollback,
        outcome,
    }
}

/// Whether the kernel lost carpd's part without a reboot: its demotion `kernel_now` is
/// below what the ledger says carpd applied in `boot` (nothing else can take the level
/// below carpd's own part: the kernel's and pfsync's contributions are never negative).
pub fn kernel_lost_its_part(ledger: &Ledger, boot: &BootId, kernel_now: i64) -> bool {
    kernel_now < ledger.in_kernel(boot)
}

/// Plans applying `reason`'s entry again in `boot` after the kernel lost carpd's part
/// (see [`kernel_lost_its_part`]); `kernel_now` is the kernel's level before. The part of
/// `kernel_now` that might still be carpd's becomes a doubt (the kernel may now hold it
/// twice). Only for an entry applied in `boot`; anything else is left to [`plan_add`].
pub fn plan_reapply(
    ledger: &Ledger,
    reason: Reason,
    boot: &BootId,
    now: u64,
    kernel_now: i64,
) -> Option<Txn<AddOutcome>> {
    let mut l = ledger.clone();
    l.settle(boot, now);
    let rollback = l.clone();
    let e = l.entry(reason).cloned()?;
    if e.state != EntryState::Applied || e.boot != *boot {
        return None;
    }
    let survived = u32::try_from(kernel_now.clamp(0, i64::from(e.delta))).unwrap_or(0);
    let mut intent = l.clone();
    intent.set(Entry {
        state: EntryState::Pending,
        ..e.clone()
    });
    let mut done = l;
    if survived > 0 {
        done.doubts.push(Doubt {
            reason,
            delta: survived,
            boot: boot.clone(),
            at: now,
            what: "the kernel's demotion fell below carpd's part (carp.ko reloaded?) and carpd applied it again; if part of it had survived, the kernel holds up to this much more".to_string(),
        });
    }
    done.set(e.clone());
    Some(Txn {
        intent: Some(intent),
        delta: i64::from(e.delta),
        done,
        rollback,
        outcome: AddOutcome::ReappliedAfterKernelReset {
            delta: e.delta,
            since: e.since,
        },
    })
}

/// Plans removing `reason`'s contribution in `boot`, given the kernel's current demotion.
/// Subtracts exactly what was recorded as applied in this boot, clamped so the kernel never
/// goes below what carpd's other applied entries account for.
pub fn plan_remove(
    ledger: &Ledger,
    reason: Reason,
    boot: &BootId,
    now: u64,
    kernel_now: i64,
) -> Txn<RemoveOutcome> {
    let mut l = ledger.clone();
    l.settle(boot, now);
    let rollback = l.clone();
    let Some(e) = l.entry(reason).cloned() else {
        return Txn {
            intent: None,
            delta: 0,
            done: l,
            rollback,
            outcome: RemoveOutcome::NotInLedger,
        };
    };
    let no_kernel = |mut l: Ledger, outcome| {
        l.drop_entry(reason);
        Txn {
            intent: None,
            delta: 0,
            done: l,
            rollback: rollback.clone(),
            outcome,
        }
    };
    if e.boot != *boot {
        return no_kernel(l, RemoveOutcome::LostByReboot { delta: e.delta });
    }
    if e.state == EntryState::Pending {
        l.doubt(
            &e,
            now,
            "an add was interrupted and then removed without subtracting; if it had reached the kernel, the kernel still holds this much",
        );
        return no_kernel(l, RemoveOutcome::DroppedInterrupted { delta: e.delta });
    }
    let others = l.in_kernel(boot) - i64::from(e.delta);
    let subtract = i64::from(e.delta).min((kernel_now - others).max(0));
    let mut intent = l.clone();
    intent.set(Entry {
        state: EntryState::Removing,
        ..e.clone()
    });
    let mut done = l;
    done.drop_entry(reason);
    Txn {
        intent: Some(intent),
        delta: -subtract,
        done,
        rollback,
        outcome: RemoveOutcome::Removed {
            delta: e.delta,
            subtracted: subtract,
        },
    }
}

/// A ledger operation that failed: which file or kernel call, why, and the fix.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The state directory cannot be used.
    #[error("demotion ledger directory {dir}: {detail}. {fix}")]
    Dir {
        dir: PathBuf,
        detail: String,
        fix: String,
    },
    /// Reading or writing a file of the ledger failed.
    #[error("demotion ledger {path}: cannot {op}: {source}. {fix}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
        fix: String,
    },
    /// The ledger does not parse or is inconsistent: carpd will not guess.
    #[error(
        "demotion ledger {path} is corrupt ({detail}). carpd will not guess what it added to net.inet.carp.demotion: compare `sysctl net.inet.carp.demotion` with what you expect carpd to hold (240 per maintenance), undo carpd's part by hand if needed (`sysctl net.inet.carp.demotion=-N`: writes add), then move the file away (mv {path} {path}.bad) and enter maintenance again if wanted"
    )]
    Corrupt { path: PathBuf, detail: String },
    /// The kernel refused; the ledger was rolled back (or says why not).
    #[error("{err}{rollback}")]
    Kernel { err: KernelError, rollback: String },
    /// A delta outside 1..=240.
    #[error("a demotion of {0} cannot be recorded: allowed 1..={MAX_DELTA}")]
    InvalidDelta(u32),
}

/// The ledger on disk: `<dir>/ledger.json`, locked by `<dir>/ledger.lock`.
#[derive(Clone, Debug)]
pub struct LedgerStore {
    dir: PathBuf,
}

fn unix(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d: Duration| d.as_secs())
}

/// A Unix time as RFC 3339 (UTC, seconds).
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn io_fix(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            "The ledger belongs to root: run carpd as root".to_string()
        }
        _ => "Check the file system (space, permissions)".to_string(),
    }
}

impl LedgerStore {
    pub fn new(dir: impl Into<PathBuf>) -> LedgerStore {
        LedgerStore { dir: dir.into() }
    }

    /// The store `maintenance.state_dir` names.
    pub fn from_config(m: &MaintenanceConfig) -> LedgerStore {
        LedgerStore::new(m.state_dir.clone())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/ledger.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(LEDGER_FILE)
    }

    /// Creates the directory (0700) when missing and refuses one others can write or
    /// another user owns (src/statedir.rs).
    fn ensure_dir(&self) -> Result<(), LedgerError> {
        crate::statedir::ensure(&self.dir).map_err(|p| LedgerError::Dir {
            dir: self.dir.clone(),
            detail: p.detail,
            fix: p.fix,
        })
    }

    /// Takes the exclusive lock (creating the directory and lock file when missing).
    fn lock(&self) -> Result<fs::File, LedgerError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let io = |op, source: std::io::Error| LedgerError::Io {
            path: path.clone(),
            op,
            fix: io_fix(&source),
            source,
        };
        let f = crate::statedir::open_in_place(&path).map_err(|e| io("open the lock file", e))?;
        f.lock().map_err(|e| io("lock", e))?;
        Ok(f)
    }

    /// Reads and checks the ledger; a missing file is an empty ledger.
    fn load(&self) -> Result<Ledger, LedgerError> {
        let path = self.path();
        // Read at most one byte past the limit: enough for decode to say the file is too
        // big, never the whole of a runaway file.
        // A directory others could have written is not believed (src/statedir.rs).
        crate::statedir::check_existing(&self.dir).map_err(|p| LedgerError::Dir {
            dir: self.dir.clone(),
            detail: p.detail,
            fix: p.fix,
        })?;
        let bytes = match crate::statedir::read_bounded(&path, MAX_FILE_SIZE) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(Ledger::default()),
            Err(e) => {
                return Err(LedgerError::Io {
                    path,
                    op: "read",
                    fix: io_fix(&e),
                    source: e,
                });
            }
        };
        Ledger::decode(&bytes).map_err(|detail| LedgerError::Corrupt { path, detail })
    }

    /// Atomically replaces the ledger: exclusive temp file, fsync, rename, fsync of the
    /// directory (so the rename itself survives a power loss); src/statedir.rs.
    fn save(&self, l: &Ledger) -> Result<(), LedgerError> {
        let path = self.path();
        let mut bytes = serde_json::to_vec_pretty(l).map_err(|e| LedgerError::Corrupt {
            path: path.clone(),
            detail: format!("cannot encode: {e}"),
        })?;
        bytes.push(b'\n');
        crate::statedir::write_atomic(&self.dir, LEDGER_FILE, &bytes).map_err(|e| LedgerError::Io {
            path: e.path,
            op: e.op,
            fix: io_fix(&e.source),
            source: e.source,
        })
    }

    /// Carries out a planned transaction under the lock `_lock` (held by the caller).
    fn execute<O>(
        &self,
        kernel: &dyn Kernel,
        on_disk: &Ledger,
        txn: Txn<O>,
    ) -> Result<O, LedgerError> {
        if let Some(intent) = &txn.intent {
            self.save(intent)?;
        }
        if txn.delta != 0
            && let Err(err) = kernel.demotion_add(txn.delta)
        {
            // A kernel error means the write did not happen: put the ledger back.
            let rollback = match self.save(&txn.rollback) {
                Ok(()) => format!(" (the ledger {} is unchanged)", self.path().display()),
                Err(e) => format!(
                    "; and the ledger could not be rolled back ({e}): it records the change as interrupted, which carpd resolves towards more demotion"
                ),
            };
            return Err(LedgerError::Kernel { err, rollback });
        }
        if txn.intent.is_some() || txn.done != *on_disk {
            self.save(&txn.done)?;
        }
        Ok(txn.outcome)
    }

    /// Adds `delta` for `reason` (idempotent within a boot): the ledger records it before the
    /// kernel is touched. `delta` must be 1..=240.
    pub fn add(
        &self,
        kernel: &dyn Kernel,
        reason: Reason,
        delta: u32,
        now: SystemTime,
    ) -> Result<AddOutcome, LedgerError> {
        if delta == 0 || delta > MAX_DELTA {
            return Err(LedgerError::InvalidDelta(delta));
        }
        let _lock = self.lock()?;
        let boot = kernel.boot_id().map_err(kernel_err)?;
        let on_disk = self.load()?;
        // Already applied in this boot: still in the kernel, unless carp.ko was reloaded.
        if on_disk.is_applied(reason, &boot) {
            let kernel_now = kernel.sysctl_get(Sysctl::Demotion).map_err(kernel_err)?;
            if kernel_lost_its_part(&on_disk, &boot, kernel_now)
                && let Some(txn) = plan_reapply(&on_disk, reason, &boot, unix(now), kernel_now)
            {
                return self.execute(kernel, &on_disk, txn);
            }
        }
        let txn = plan_add(&on_disk, reason, delta, &boot, unix(now));
        self.execute(kernel, &on_disk, txn)
    }

    /// Removes exactly what carpd recorded as applied for `reason` in this boot (nothing when
    /// a reboot already reset it).
    pub fn remove(
        &self,
        kernel: &dyn Kernel,
        reason: Reason,
        now: SystemTime,
    ) -> Result<RemoveOutcome, LedgerError> {
        // No ledger, nothing to remove: create nothing (the daemon calls this on every
        // readiness check that passes). Only a certain "absent": a directory this user
        // cannot read is reported by the lock below, not taken for an empty ledger.
        if matches!(self.path().try_exists(), Ok(false)) {
            return Ok(RemoveOutcome::NotInLedger);
        }
        let _lock = self.lock()?;
        let boot = kernel.boot_id().map_err(kernel_err)?;
        let on_disk = self.load()?;
        // Only an applied entry of this boot needs the kernel's level (for the clamp); avoid
        // the read otherwise, so leaving works even when the kernel cannot be read.
        let kernel_now = if on_disk.is_applied(reason, &boot) {
            kernel.sysctl_get(Sysctl::Demotion).map_err(kernel_err)?
        } else {
            0
        };
        let txn = plan_remove(&on_disk, reason, &boot, unix(now), kernel_now);
        self.execute(kernel, &on_disk, txn)
    }

    /// After a reboot, an interrupted add, or a kernel that lost carpd's part without a
    /// reboot (carp.ko reloaded, VNET re-created): applies every entry that is not in the
    /// current kernel. The daemon calls this at start and at every full resync; it is a
    /// no-op when nothing is missing (one read of the demotion level when carpd has a part).
    pub fn restore(
        &self,
        kernel: &dyn Kernel,
        now: SystemTime,
    ) -> Result<Vec<(Reason, AddOutcome)>, LedgerError> {
        // No ledger, nothing to restore: create nothing (a daemon that never demotes never
        // needs state_dir). Only a certain "absent", as in `remove`.
        if matches!(self.path().try_exists(), Ok(false)) {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let boot = kernel.boot_id().map_err(kernel_err)?;
        let mut on_disk = self.load()?;
        let mut done = Vec::new();
        if on_disk.in_kernel(&boot) > 0 {
            let kernel_now = kernel.sysctl_get(Sysctl::Demotion).map_err(kernel_err)?;
            if kernel_lost_its_part(&on_disk, &boot, kernel_now) {
                // What may still be carpd's, shared out between the entries as doubts.
                let mut left = kernel_now;
                for reason in Reason::ALL {
                    let Some(txn) = plan_reapply(&on_disk, reason, &boot, unix(now), left) else {
                        continue;
                    };
                    left = (left - txn.delta).max(0);
                    let next = txn.done.clone();
                    let outcome = self.execute(kernel, &on_disk, txn)?;
                    on_disk = next;
                    done.push((reason, outcome));
                }
            }
        }
        for reason in on_disk.to_restore(&boot) {
            let Some(delta) = on_disk.entry(reason).map(|e| e.delta) else {
                continue;
            };
            let txn = plan_add(&on_disk, reason, delta, &boot, unix(now));
            let next = txn.done.clone();
            let outcome = self.execute(kernel, &on_disk, txn)?;
            on_disk = next;
            done.push((reason, outcome));
        }
        // Nothing to apply may still leave crash debris to settle (old doubts, removals).
        let mut settled = on_disk.clone();
        settled.settle(&boot, unix(now));
        if settled != on_disk {
            self.save(&settled)?;
        }
        Ok(done)
    }

    /// The ledger as stored, without changing anything (no lock needed: writes are atomic
    /// renames). A missing directory or file is an empty ledger.
    pub fn read(&self) -> Result<Ledger, LedgerError> {
        self.load()
    }

    /// Everything `carpd maintenance status` and `carpd status` show: the entries and where
    /// they stand, carpd's part, the kernel's level and the rest. Never fails: problems are
    /// listed in `errors`.
    pub fn status(&self, kernel: &dyn Kernel) -> Status {
        let mut errors = Vec::new();
        // A shared lock, when possible, so an operation in flight is not shown as
        // interrupted; without one (not root) the atomic writes still give a whole file.
        let _lock = fs::File::open(self.dir.join(LOCK_FILE))
            .ok()
            .filter(|f| f.lock_shared().is_ok());
        let ledger = match self.load() {
            Ok(l) => l,
            Err(e) => {
                errors.push(e.to_string());
                Ledger::default()
            }
        };
        let boot = match kernel.boot_id() {
            Ok(b) => Some(b),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        let kernel_demotion = match kernel.sysctl_get(Sysctl::Demotion) {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        };
        status_of(
            &self.path(),
            &ledger,
            boot.as_ref(),
            kernel_demotion,
            errors,
        )
    }
}

fn kernel_err(err: KernelError) -> LedgerError {
    LedgerError::Kernel {
        err,
        rollback: String::new(),
    }
}

/// Schema tag of [`Status`] in JSON.
pub const STATUS_SCHEMA: &str = "carpd.maintenance-status.v1";

/// The ledger and the kernel's demotion, for humans (`to_text`) and machines (JSON, schema
/// `carpd.maintenance-status.v1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub schema: &'static str,
    /// The ledger file.
    pub ledger: String,
    /// This boot's identity; null when the kernel could not say.
    pub boot: Option<String>,
    /// Whether a maintenance entry exists (in force, or waiting to be restored).
    pub maintenance: bool,
    pub entries: Vec<EntryStatus>,
    /// What carpd's applied entries add in this boot.
    pub carpd_demotion: i64,
    /// How much more than `carpd_demotion` the kernel may hold after interrupted operations.
    pub carpd_uncertain: i64,
    /// `net.inet.carp.demotion` now; null when it could not be read.
    pub kernel_demotion: Option<i64>,
    /// The part that is not carpd's (the kernel's own: interfaces down, send errors; and
    /// pfsync): `kernel_demotion - carpd_demotion`.
    pub other_demotion: Option<i64>,
    pub doubts: Vec<DoubtStatus>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EntryStatus {
    pub reason: Reason,
    pub delta: u32,
    /// RFC 3339, UTC.
    pub since: String,
    pub since_unix: u64,
    /// `applied` (in the kernel now), `lost_by_reboot` (applied in an earlier boot; the
    /// daemon re-applies it at start), `interrupted_add`, `interrupted_removal`, or
    /// `unknown` (the boot could not be read).
    pub state: &'static str,
    /// The boot it was applied in.
    pub boot: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DoubtStatus {
    pub reason: Reason,
    pub delta: u32,
    pub at: String,
    pub what: String,
}

/// Builds the status (pure).
pub fn status_of(
    path: &Path,
    ledger: &Ledger,
    boot: Option<&BootId>,
    kernel_demotion: Option<i64>,
    errors: Vec<String>,
) -> Status {
    let entries = ledger
        .entries
        .iter()
        .map(|e| EntryStatus {
            reason: e.reason,
            delta: e.delta,
            since: rfc3339(e.since),
            since_unix: e.since,
            state: match boot {
                None => "unknown",
                Some(b) if e.boot != *b => "lost_by_reboot",
                Some(_) => match e.state {
                    EntryState::Applied => "applied",
                    EntryState::Pending => "interrupted_add",
                    EntryState::Removing => "interrupted_removal",
                },
            },
            boot: e.boot.to_string(),
        })
        .collect();
    let (carpd, uncertain) = match boot {
        Some(b) => (ledger.in_kernel(b), ledger.in_doubt(b)),
        None => (0, 0),
    };
    let doubts = ledger
        .doubts
        .iter()
        .filter(|d| boot.is_some_and(|b| d.boot == *b))
        .map(|d| DoubtStatus {
            reason: d.reason,
            delta: d.delta,
            at: rfc3339(d.at),
            what: d.what.clone(),
        })
        .collect();
    Status {
        schema: STATUS_SCHEMA,
        ledger: path.display().to_string(),
        boot: boot.map(|b| b.to_string()),
        maintenance: ledger.entry(Reason::Maintenance).is_some(),
        entries,
        carpd_demotion: carpd,
        carpd_uncertain: uncertain,
        kernel_demotion,
        other_demotion: kernel_demotion
            .filter(|_| boot.is_some())
            .map(|k| k - carpd),
        doubts,
        errors,
    }
}

impl Status {
    /// The human form.
    pub fn to_text(&self) -> String {
        let mut s = format!("demotion ledger {}", self.ledger);
        if let Some(b) = &self.boot {
            s.push_str(&format!(" (this boot: {b})"));
        }
        s.push('\n');
        if self.entries.is_empty() {
            s.push_str("  no entries: carpd adds nothing to net.inet.carp.demotion\n");
        }
        for e in &self.entries {
            let state = match e.state {
                "applied" => "applied in this boot".to_string(),
                "lost_by_reboot" => {
                    "lost by a reboot: not in the kernel; the daemon re-applies it at start"
                        .to_string()
                }
                "interrupted_add" => {
                    "interrupted while being added: the next enter or daemon start applies it"
                        .to_string()
                }
                "interrupted_removal" => {
                    "interrupted while being removed: counted as removed".to_string()
                }
                other => other.to_string(),
            };
            s.push_str(&format!(
                "  {:<12} {:>4}  since {}  {state}\n",
                e.reason.as_str(),
                e.delta,
                e.since
            ));
        }
        s.push_str(&format!("carpd's part: {}", self.carpd_demotion));
        if self.carpd_uncertain > 0 {
            s.push_str(&format!(
                " (up to {} more after interrupted operations)",
                self.carpd_uncertain
            ));
        }
        s.push('\n');
        match (self.kernel_demotion, self.other_demotion) {
            (Some(k), Some(o)) => s.push_str(&format!(
                "kernel demotion (net.inet.carp.demotion): {k}, of which {o} not carpd's (interfaces down, send errors, pfsync)\n"
            )),
            (Some(k), None) => s.push_str(&format!(
                "kernel demotion (net.inet.carp.demotion): {k}\n"
            )),
            _ => s.push_str("kernel demotion: unknown\n"),
        }
        for d in &self.doubts {
            s.push_str(&format!(
                "  doubt: {} {} at {}: {}. If `sysctl net.inet.carp.demotion` shows it, undo it with sysctl net.inet.carp.demotion=-{}\n",
                d.reason, d.delta, d.at, d.what, d.delta
            ));
        }
        for e in &self.errors {
            s.push_str(&format!("  error: {e}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests;
