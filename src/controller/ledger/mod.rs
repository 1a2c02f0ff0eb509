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
//!
//! Files: this one holds the ledger's data ([`Ledger`], entries, doubts); `plan.rs` the pure
//! planners; `store.rs` the I/O ([`LedgerStore`]); `status.rs` what `carpd maintenance
//! status` shows.

mod plan;
mod status;
mod store;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::carp::Sysctl;
use crate::config::MaintenanceConfig;
use crate::kernel::{BootId, Kernel, KernelError};

pub use plan::{
    AddOutcome, RemoveOutcome, Txn, kernel_lost_its_part, plan_add, plan_reapply, plan_remove,
};
pub use status::{DoubtStatus, EntryStatus, STATUS_SCHEMA, Status, status_of};
pub use store::{LedgerError, LedgerStore, rfc3339};

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

#[cfg(test)]
mod tests;
