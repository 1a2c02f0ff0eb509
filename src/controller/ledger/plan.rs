//! The ledger's pure planners: from the ledger, the boot identity, the kernel's reading
//! and the clock to a [`Txn`] (the ledger to write first, the kernel delta, the ledger to
//! write after). No I/O: [`super::LedgerStore`] carries them out.

use super::*;

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
