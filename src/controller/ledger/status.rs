//! What `carpd maintenance status` (and the daemon's status) shows of the ledger and the
//! kernel: carpd's part of `net.inet.carp.demotion`, the others', entries and doubts.

use super::*;

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
