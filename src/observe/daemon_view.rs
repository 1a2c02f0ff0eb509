//! The running daemon's view, as `carpd status` shows it: uptime, devd connection, recent
//! events, the last reconcile, the last kernel changes and each group's transition history.
//!
//! It crosses the control socket as JSON (the `daemon` field of status schema
//! `carpd.status.v1`, documented in the README), so it derives both `Serialize` and
//! `Deserialize`; fields are only added within v1. Times are RFC 3339 UTC strings.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::devd::DevdStatsSnapshot;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonView {
    pub pid: u32,
    pub version: String,
    pub node: String,
    /// The configuration file in use.
    pub config: String,
    /// The kernel backend ("netlink", "ioctl", "sim", ...).
    pub kernel: String,
    /// Whether the daemon applies the configuration to the kernel (`--no-apply` clears it).
    pub apply: bool,
    /// Set once SIGTERM arrived: the daemon finishes open claims (within `daemon.stop_grace`)
    /// and starts nothing new.
    #[serde(default)]
    pub stopping: bool,
    pub started_at: String,
    pub uptime_s: u64,
    pub resync_interval_ms: u64,
    pub coalesce_ms: u64,
    /// Time until the next periodic kernel re-read.
    pub next_resync_ms: u64,
    pub devd: DevdStatsSnapshot,
    /// devd CARP events received since start.
    pub events: u64,
    /// Group readings since start.
    pub reconciles: u64,
    pub last_reconcile: Option<ReconcileView>,
    /// The last time the kernel was changed to match the configuration, or found to differ.
    pub last_apply: Option<ApplyView>,
    pub last_reload: Option<ReloadView>,
    /// The Vault agent (token kept alive for failovers); `null` without `vault:`, or when the
    /// agent was busy talking to Vault.
    #[serde(default)]
    pub vault: Option<crate::vault::agent::AgentView>,
    /// Most recent first.
    pub recent_events: Vec<EventView>,
    pub groups: Vec<GroupView>,
    /// Failover IPs (`failover_ips:`): expected and actual binding, last claim, next check.
    #[serde(default)]
    pub failover_ips: Vec<FailoverIpView>,
    /// Per group MASTER here: n of m failover IPs bound here, the slowest and why.
    #[serde(default)]
    pub failovers: Vec<super::progress::FailoverProgressView>,
    /// Could this node complete a failover now? `null` when there is nothing to be ready for.
    #[serde(default)]
    pub readiness: Option<ReadinessView>,
    /// The demotion ledger and the kernel's demotion (`carpd.maintenance-status.v1`, as
    /// `carpd maintenance status --json` prints it).
    #[serde(default)]
    pub maintenance: Option<serde_json::Value>,
    /// Groups configured from the local copy of their Vault password because Vault was
    /// unreachable or sealed (`<group>: <why>`, src/secrets/copy.rs); empty normally.
    #[serde(default)]
    pub passwords_from_local_copy: Vec<String>,
}

/// One failover IP as the daemon knows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailoverIpView {
    pub ip: String,
    pub group: String,
    /// `virtual_mac` or `ip_move`.
    pub mode: String,
    /// This node's vMAC or service.
    pub ours: String,
    /// The group's state here; `null` when the vhid does not exist.
    pub local_state: Option<String>,
    /// `here` while MASTER, else `not this node's business`.
    pub expected: String,
    /// Where OVH had it at the last check or claim; `null` when unknown.
    pub actual: Option<String>,
    pub bound_here: Option<bool>,
    pub checked_at: Option<String>,
    /// `claim` or `check` while one runs.
    pub in_flight: Option<crate::controller::claims::JobKind>,
    /// The running claim's phase (`observe`, `release from …`, `bind`, `verify`, `move`).
    #[serde(default)]
    pub phase: Option<String>,
    /// Whether the running claim is inside its open window (the IP may be bound nowhere
    /// until it finishes; a stop waits for it).
    #[serde(default)]
    pub window_open: bool,
    /// Milliseconds until the next read-only check.
    pub next_check_ms: Option<u64>,
    /// Set while a needed claim waits for the hold-down to pass.
    pub held_down_until: Option<String>,
    /// Consecutive failed jobs.
    pub failures: u32,
    pub last_error: Option<String>,
    pub last_claim: Option<ClaimView>,
    /// How long the running claim has run (slot wait included).
    #[serde(default)]
    pub claim_running_ms: Option<u64>,
}

/// The last claim of a failover IP.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaimView {
    pub at: String,
    /// `claimed`, `already_bound`, `cancelled` or `failed`.
    pub result: String,
    /// The operation's record: steps with task times, outage, first mutation, elapsed.
    pub outcome: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Readiness: every check, and whether all passed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessView {
    pub ready: bool,
    pub checks: Vec<crate::controller::readiness::Check>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileView {
    pub at: String,
    /// startup, event, resync, timer, nudge or reload.
    pub trigger: String,
    /// "all" or the groups read.
    pub scope: String,
    pub duration_us: u64,
    /// The kernel read failed: nothing was believed changed.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyView {
    pub at: String,
    pub trigger: String,
    /// Changes made (or, with `apply: false`, found needed).
    pub changes: Vec<String>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadView {
    pub at: String,
    pub ok: bool,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub at: String,
    pub group: String,
    /// The state devd announced (a hint; the kernel's answer is in `groups`).
    pub state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub group: String,
    pub state: String,
    pub since: String,
    /// How the current state was learned.
    pub learned: String,
    /// Named by the configuration (`groups` or `failover_ips`).
    pub managed: bool,
    pub events: u64,
    pub reconciles: u64,
    /// Actions the last reconcile decided for this group.
    pub actions: Vec<String>,
    /// Most recent first.
    pub history: Vec<TransitionView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionView {
    /// Correlation id, as in the log line.
    pub id: String,
    pub at: String,
    /// "NONE" when the group did not exist.
    pub from: String,
    pub to: String,
    pub learned: String,
}

/// Converts monotonic instants to wall-clock strings, relative to one moment.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `at` as RFC 3339 UTC (millisecond precision).
    pub fn stamp(&self, at: Instant) -> String {
        let wall = if at <= self.mono {
            self.wall - (self.mono - at)
        } else {
            self.wall + (at - self.mono)
        };
        humantime::format_rfc3339_millis(wall).to_string()
    }

    pub fn wall_stamp(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t).to_string()
    }
}

fn ms(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The human form, appended to `carpd status` when a daemon answers.
pub fn to_text(v: &DaemonView) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "daemon: pid {} (carpd {}), up {}, config {}, kernel {}{}",
        v.pid,
        v.version,
        ms(Duration::from_secs(v.uptime_s)),
        v.config,
        v.kernel,
        if v.apply {
            ""
        } else {
            ", not applying (--no-apply)"
        }
    );
    let _ = writeln!(
        o,
        "  devd: {} ({} CARP events, {} ignored, {} dropped, {} reconnects){}",
        if v.devd.connected {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        v.devd.carp_events,
        v.devd.other_system + v.devd.garbage + v.devd.truncated,
        v.devd.dropped,
        v.devd.connects.saturating_sub(1),
        v.devd
            .last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    );
    if let Some(r) = &v.last_reconcile {
        let _ = writeln!(
            o,
            "  last reconcile: {} ({}, {}, {} µs){}; next full re-read in {} ms",
            r.at,
            r.trigger,
            r.scope,
            r.duration_us,
            r.error
                .as_deref()
                .map(|e| format!(", FAILED: {e}"))
                .unwrap_or_default(),
            v.next_resync_ms
        );
    }
    if let Some(a) = &v.last_apply {
        let _ = writeln!(
            o,
            "  last kernel change: {} ({}): {}{}",
            a.at,
            a.trigger,
            if a.changes.is_empty() {
                "-".to_string()
            } else {
                a.changes.join("; ")
            },
            a.error
                .as_deref()
                .map(|e| format!("; FAILED: {e}"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = &v.last_reload {
        let _ = writeln!(
            o,
            "  last reload: {} {}: {}",
            r.at,
            if r.ok { "ok" } else { "REFUSED" },
            r.message
        );
    }
    if let Some(a) = &v.vault {
        let _ = writeln!(
            o,
            "  vault: {} token{}{}",
            a.server,
            match (a.token, a.token_ttl_s) {
                (true, Some(ttl)) => format!(" valid ({ttl} s left)"),
                (true, None) => " valid".to_string(),
                (false, _) => " NONE".to_string(),
            },
            a.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        );
    }
    for p in &v.passwords_from_local_copy {
        let _ = writeln!(o, "  PASSWORD FROM LOCAL COPY: {p}");
    }
    for g in &v.groups {
        let _ = writeln!(
            o,
            "  {} {} since {} (learned by {}){}",
            g.group,
            g.state,
            g.since,
            g.learned,
            if g.actions.is_empty() {
                String::new()
            } else {
                format!("; wants: {}", g.actions.join(", "))
            }
        );
        for t in g.history.iter().take(5) {
            let _ = writeln!(
                o,
                "    {} {} -> {} ({}, {})",
                t.at, t.from, t.to, t.learned, t.id
            );
        }
    }
    for p in &v.failovers {
        let _ = writeln!(
            o,
            "  failover of {}: {} of {} IPs bound here{}",
            p.group,
            p.bound,
            p.ips,
            p.slowest
                .as_ref()
                .map(|s| format!(
                    "; slowest {}{}: {}",
                    s.ip,
                    s.running_ms
                        .map(|ms| format!(" ({:.1} s)", ms as f64 / 1000.0))
                        .unwrap_or_default(),
                    s.why
                ))
                .unwrap_or_default()
        );
    }
    for f in &v.failover_ips {
        failover_text(&mut o, f);
    }
    if let Some(m) = &v.maintenance {
        let n = |k: &str| m[k].as_i64().map_or("?".to_string(), |v| v.to_string());
        let _ = writeln!(
            o,
            "  demotion: kernel {} = carpd {} + other {}{}",
            n("kernel_demotion"),
            n("carpd_demotion"),
            n("other_demotion"),
            if m["maintenance"].as_bool() == Some(true) {
                "; IN MAINTENANCE (carpd maintenance leave ends it)"
            } else {
                ""
            }
        );
    }
    if let Some(r) = &v.readiness {
        let _ = writeln!(
            o,
            "  readiness: {}",
            if r.ready { "ready" } else { "NOT READY" }
        );
        for c in &r.checks {
            let _ = writeln!(
                o,
                "    {} {}: {}",
                if c.ok { "ok " } else { "BAD" },
                c.name,
                c.detail
            );
        }
    }
    o
}

/// One failover IP, two to four lines: binding, expectation, last claim, trouble.
fn failover_text(o: &mut String, f: &FailoverIpView) {
    let agree = match (f.local_state.as_deref(), f.bound_here) {
        (Some("MASTER"), Some(true)) => "ok",
        (Some("MASTER"), Some(false)) => "WRONG: should be here",
        (Some("MASTER"), None) => "unknown yet",
        _ => "ok (not this node's business)",
    };
    let _ = writeln!(
        o,
        "  failover IP {} ({} {}, follows {} {}): {} [{}]",
        f.ip,
        f.mode,
        f.ours,
        f.group,
        f.local_state.as_deref().unwrap_or("absent"),
        f.actual.as_deref().unwrap_or("binding unknown"),
        agree
    );
    let mut next = Vec::new();
    if let Some(k) = f.in_flight {
        let what = if k == crate::controller::claims::JobKind::Claim {
            "claim"
        } else {
            "check"
        };
        next.push(match (&f.phase, f.window_open) {
            (Some(p), true) => {
                format!("{what} running ({p}: the IP may be bound nowhere until it ends)")
            }
            (Some(p), false) => format!("{what} running ({p})"),
            (None, _) => format!("{what} running"),
        });
    } else if let Some(ms) = f.next_check_ms {
        next.push(format!("next check in {:.1} s", ms as f64 / 1000.0));
    }
    if let Some(c) = &f.checked_at {
        next.push(format!("checked {c}"));
    }
    if let Some(h) = &f.held_down_until {
        next.push(format!("claim HELD DOWN until {h}"));
    }
    let _ = writeln!(o, "    {}", next.join("; "));
    if let Some(c) = &f.last_claim {
        let o_ = c.outcome.as_ref();
        let num = |k: &str| o_.and_then(|v| v[k].as_f64());
        let mut parts = vec![format!("last claim {} {}", c.at, c.result)];
        if let Some(ms) = num("elapsed") {
            parts.push(format!("took {ms:.0} ms"));
        }
        if let Some(ms) = num("first_mutation_after") {
            parts.push(format!("first change after {ms:.1} ms"));
        }
        if let Some(ms) = num("outage") {
            parts.push(format!("outage {ms:.0} ms"));
        }
        let _ = writeln!(o, "    {}", parts.join(", "));
    }
    if let Some(e) = &f.last_error {
        let _ = writeln!(o, "    error ({} in a row): {e}", f.failures);
    }
}
