//! The ledger's I/O: the state directory, the lock, write-ahead atomic writes, the kernel
//! call and the rollback when the kernel refuses.

use super::*;

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
