//! Prometheus metrics of `carpd run`: the [`Metrics`] handle the daemon updates, and its
//! rendering in the Prometheus text exposition format 0.0.4.
//!
//! Two ways out, both off by default (`metrics:` in carpd.yaml): an HTTP listener on a
//! loopback address ([`http::serve`]) and a file for node_exporter's textfile collector
//! ([`textfile::textfile_loop`]).
//!
//! Why no metrics crate: the Prometheus org's `prometheus-client` encodes only the OpenMetrics
//! text format (counters typed without their `_total` suffix, `# EOF`, an `info` type), and
//! node_exporter's textfile collector parses only the 0.0.4 format: it would type every
//! counter as untyped and refuse the whole file on an `info` family. The metric set here is
//! fixed and small (a dozen families), so a registry of plain maps and a 0.0.4 writer of about
//! a hundred lines, pinned by exact-output tests and a strict parser, is the smaller and
//! surer piece of code.
//!
//! Invariants:
//! - Updates take one mutex for the time of a map lookup or insert; `render` holds it while
//!   it formats (microseconds: the series are bounded, below). Nothing does I/O, awaits or
//!   logs while holding it. A poisoned mutex is recovered (the data are plain counters).
//! - Cardinality is bounded: each family holds at most a fixed number of label sets
//!   ([`MAX_GROUPS`], [`MAX_IPS`], [`MAX_KINDS`], [`MAX_CHECKS`]). Label values come from the
//!   configuration (IPs, groups) or fixed sets (kinds, checks); an update that would add a
//!   label set beyond the cap is dropped and counted in `carpd_metrics_dropped_total{family}`,
//!   so a bug can neither grow memory without bound nor go unnoticed.
//! - The output is deterministic: families in a fixed order, series sorted by label values.
//! - Label values and HELP text are escaped as the format requires (`\\`, `\"`, `\n`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::carp::{CarpState, GroupId};

pub mod http;
pub mod kinds;
pub mod textfile;

#[cfg(test)]
mod expo;
#[cfg(test)]
mod tests;

pub use kinds::{ovh_error_kind, vault_error_kind};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most groups (vhid@interface) tracked per family.
pub const MAX_GROUPS: usize = 256;
/// Most failover IPs tracked per family.
pub const MAX_IPS: usize = 256;
/// Most error kinds tracked per family (the fixed sets in [`kinds`] have about a dozen).
pub const MAX_KINDS: usize = 32;
/// Most readiness checks tracked.
pub const MAX_CHECKS: usize = 32;

/// Upper bounds (seconds) of the claim duration buckets: an already-bound IP answers in one
/// GET (milliseconds); an OVH move is one or two tasks of seconds to a minute each; the claim
/// deadline is minutes.
pub const CLAIM_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0,
    120.0, 180.0, 300.0,
];

/// Upper bounds (seconds) of the outage buckets: from the moment this node became MASTER to
/// the failover IP verified bound here; CARP's own detection time (3 advertisements) is
/// outside it.
pub const OUTAGE_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0,
    600.0,
];

/// How one claim of a failover IP ended (`carpd_claims_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClaimMetric {
    /// The IP was already bound here: nothing changed.
    AlreadyBound,
    /// carpd moved the IP here and verified it.
    Claimed,
    /// A newer observation superseded the claim (or fencing stopped it) before it finished.
    Cancelled,
    /// The claim failed (OVH error, deadline, refusal).
    Failed,
    /// Not attempted: the IP's hold-down period had not elapsed.
    HeldDown,
}

impl ClaimMetric {
    pub const ALL: [ClaimMetric; 5] = [
        ClaimMetric::AlreadyBound,
        ClaimMetric::Claimed,
        ClaimMetric::Cancelled,
        ClaimMetric::Failed,
        ClaimMetric::HeldDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClaimMetric::AlreadyBound => "already_bound",
            ClaimMetric::Claimed => "claimed",
            ClaimMetric::Cancelled => "cancelled",
            ClaimMetric::Failed => "failed",
            ClaimMetric::HeldDown => "held_down",
        }
    }
}

const STATES: [CarpState; 3] = [CarpState::Init, CarpState::Backup, CarpState::Master];

/// The label of a transition's target; `NONE` when the group disappeared (as in the logs).
fn to_label(to: Option<CarpState>) -> &'static str {
    to.map_or("NONE", CarpState::as_str)
}

/// A cumulative histogram with fixed buckets.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last slot is the `+Inf` overflow.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// The families whose label sets are capped, for `carpd_metrics_dropped_total{family}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    GroupState,
    Transitions,
    Claims,
    OvhErrors,
    VaultErrors,
    Ready,
    RightsMissing,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::GroupState => "carpd_group_state",
            Family::Transitions => "carpd_transitions_total",
            Family::Claims => "carpd_claims_total",
            Family::OvhErrors => "carpd_ovh_errors_total",
            Family::VaultErrors => "carpd_vault_errors_total",
            Family::Ready => "carpd_ready",
            Family::RightsMissing => "carpd_ovh_rights_missing",
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Registry {
    group_state: BTreeMap<String, CarpState>,
    /// group -> to -> count. A group that disappears keeps its counters (they must not go
    /// back to zero while carpd runs); the group cap bounds them.
    transitions: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// ip -> per-result counts (every result present once the IP is known), histograms.
    claims: BTreeMap<String, IpSeries>,
    ovh_errors: BTreeMap<String, u64>,
    vault_errors: BTreeMap<String, u64>,
    ready: BTreeMap<String, bool>,
    ready_all: Option<bool>,
    /// ip -> the access rules its claim needs and the credential lacks (a handful at most).
    rights_missing: BTreeMap<String, Vec<String>>,
    demotion_kernel: Option<i64>,
    demotion_carpd: Option<i64>,
    maintenance: Option<bool>,
    dropped: BTreeMap<Family, u64>,
    /// Set when a family drops for the first time, taken by [`Metrics::update`] to log once.
    first_drop: Option<Family>,
}

#[derive(Clone, Debug)]
struct IpSeries {
    results: BTreeMap<ClaimMetric, u64>,
    duration: Histogram,
    outage: Histogram,
}

impl IpSeries {
    fn new() -> IpSeries {
        IpSeries {
            results: ClaimMetric::ALL.iter().map(|r| (*r, 0)).collect(),
            duration: Histogram::new(CLAIM_DURATION_BUCKETS),
            outage: Histogram::new(OUTAGE_BUCKETS),
        }
    }
}

impl Registry {
    /// The entry for `key` in `map`, created unless the map is at `cap`; a refusal is
    /// counted under `family`.
    fn entry<'m, V>(
        drops: (&mut BTreeMap<Family, u64>, &mut Option<Family>),
        map: &'m mut BTreeMap<String, V>,
        key: &str,
        cap: usize,
        family: Family,
        new: impl FnOnce() -> V,
    ) -> Option<&'m mut V> {
        if !map.contains_key(key) {
            if map.len() >= cap {
                let n = drops.0.entry(family).or_insert(0);
                if *n == 0 {
                    *drops.1 = Some(family);
                }
                *n += 1;
                return None;
            }
            map.insert(key.to_string(), new());
        }
        map.get_mut(key)
    }
}

/// The daemon's metrics: a cheap, cloneable, thread-safe handle; every clone updates and
/// renders the same registry.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Registry>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Runs `f` on the registry; returns the family whose first label set this call dropped,
    /// if any (the caller logs it, outside the lock).
    fn update(&self, f: impl FnOnce(&mut Registry)) -> Option<Family> {
        let mut reg = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut reg);
        reg.first_drop.take()
    }

    fn update_logged(&self, f: impl FnOnce(&mut Registry)) {
        if let Some(family) = self.update(f) {
            tracing::warn!(
                family = family.name(),
                "metrics: too many label sets; further new ones are dropped (see carpd_metrics_dropped_total). This is a carpd bug: please report it"
            );
        }
    }

    /// The current state of a group; `None` when the group is gone: its state series are
    /// removed (its transition counters stay).
    pub fn group_state(&self, group: &GroupId, state: Option<CarpState>) {
        let key = group.to_string();
        self.update_logged(|r| match state {
            None => {
                r.group_state.remove(&key);
            }
            Some(s) => {
                if let Some(v) = Registry::entry(
                    (&mut r.dropped, &mut r.first_drop),
                    &mut r.group_state,
                    &key,
                    MAX_GROUPS,
                    Family::GroupState,
                    || s,
                ) {
                    *v = s;
                }
            }
        });
    }

    /// One transition of a group, to `to` (`None`: the group disappeared).
    pub fn transition(&self, group: &GroupId, to: Option<CarpState>) {
        let key = group.to_string();
        self.update_logged(|r| {
            if let Some(m) = Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.transitions,
                &key,
                MAX_GROUPS,
                Family::Transitions,
                BTreeMap::new,
            ) {
                *m.entry(to_label(to)).or_insert(0) += 1;
            }
        });
    }

    /// Declares a configured failover IP: its claim series appear (at zero) before its first
    /// claim, so dashboards and `rate()` see it from the start.
    pub fn failover_ip(&self, ip: &str) {
        self.update_logged(|r| {
            Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.claims,
                ip,
                MAX_IPS,
                Family::Claims,
                IpSeries::new,
            );
        });
    }

    /// One finished claim of `ip`: its result, how long it took, and, when it ended an
    /// outage (the IP was bound here after this node became MASTER), the outage window.
    /// A held-down claim made no request, so its duration is not observed.
    pub fn claim(
        &self,
        ip: &str,
        result: ClaimMetric,
        duration: Duration,
        outage: Option<Duration>,
    ) {
        self.update_logged(|r| {
            if let Some(s) = Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.claims,
                ip,
                MAX_IPS,
                Family::Claims,
                IpSeries::new,
            ) {
                *s.results.entry(result).or_insert(0) += 1;
                if result != ClaimMetric::HeldDown {
                    s.duration.observe(duration.as_secs_f64());
                }
                if let Some(o) = outage {
                    s.outage.observe(o.as_secs_f64());
                }
            }
        });
    }

    /// One OVH error, by kind (see [`ovh_error_kind`]).
    pub fn ovh_error(&self, kind: &str) {
        self.update_logged(|r| {
            if let Some(n) = Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.ovh_errors,
                kind,
                MAX_KINDS,
                Family::OvhErrors,
                || 0,
            ) {
                *n += 1;
            }
        });
    }

    /// One Vault error, by kind (see [`vault_error_kind`]).
    pub fn vault_error(&self, kind: &str) {
        self.update_logged(|r| {
            if let Some(n) = Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.vault_errors,
                kind,
                MAX_KINDS,
                Family::VaultErrors,
                || 0,
            ) {
                *n += 1;
            }
        });
    }

    /// The outcome of one readiness check.
    pub fn readiness(&self, check: &str, ok: bool) {
        self.update_logged(|r| {
            if let Some(v) = Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.ready,
                check,
                MAX_CHECKS,
                Family::Ready,
                || ok,
            ) {
                *v = ok;
            }
        });
    }

    /// The access rules (`POST /dedicated/server/.../virtualAddress`) a claim of `ip` needs
    /// and the credential lacks, as last judged; empty: none missing (the series go away).
    pub fn rights_missing(&self, ip: &str, rules: &[String]) {
        self.update_logged(|r| {
            if rules.is_empty() {
                r.rights_missing.remove(ip);
            } else if let Some(v) = Registry::entry(
                (&mut r.dropped, &mut r.first_drop),
                &mut r.rights_missing,
                ip,
                MAX_IPS,
                Family::RightsMissing,
                Vec::new,
            ) {
                *v = rules.to_vec();
            }
        });
    }

    /// Whether every readiness check passes.
    pub fn ready(&self, ok: bool) {
        self.update(|r| r.ready_all = Some(ok));
    }

    /// `net.inet.carp.demotion` as read from the kernel (`None`: could not be read, the
    /// series is removed) and the part carpd's ledger holds.
    pub fn demotion(&self, kernel: Option<i64>, carpd: i64) {
        self.update(|r| {
            r.demotion_kernel = kernel;
            r.demotion_carpd = Some(carpd);
        });
    }

    /// Whether this node is in maintenance (`carpd maintenance enter`).
    pub fn maintenance(&self, on: bool) {
        self.update(|r| r.maintenance = Some(on));
    }

    /// Every metric in the Prometheus text exposition format 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let reg = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        render(&reg, crate::observe::logging::dropped_lines())
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    escape_help(help, out);
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// One sample line: `name{l1="v1",...} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A float as the format writes it: Rust's shortest round-trip decimal, which never uses an
/// exponent and so is valid for Go's ParseFloat; non-finite values spelled as Prometheus does.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, name: &str, label: (&str, &str), h: &Histogram) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, b) in h.bounds.iter().enumerate() {
        cumulative += h.counts[i];
        sample(out, &bucket, &[label, ("le", &float(*b))], cumulative);
    }
    cumulative += h.counts[h.bounds.len()];
    sample(out, &bucket, &[label, ("le", "+Inf")], cumulative);
    sample(out, &format!("{name}_sum"), &[label], float(h.sum));
    sample(out, &format!("{name}_count"), &[label], h.count);
}

fn bool_value(b: bool) -> u8 {
    u8::from(b)
}

/// `log_dropped`: the process's dropped syslog lines ([`crate::observe::logging::dropped_lines`]).
fn render(r: &Registry, log_dropped: u64) -> String {
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "carpd_build_info",
        "gauge",
        "carpd's version; always 1.",
    );
    sample(
        &mut out,
        "carpd_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );

    header(
        &mut out,
        "carpd_group_state",
        "gauge",
        "CARP state of each group (vhid@interface): 1 for the current state, 0 for the others.",
    );
    for (g, s) in &r.group_state {
        for st in STATES {
            sample(
                &mut out,
                "carpd_group_state",
                &[("group", g), ("state", st.as_str())],
                bool_value(st == *s),
            );
        }
    }

    header(
        &mut out,
        "carpd_transitions_total",
        "counter",
        "CARP state transitions seen, by group and target state (NONE: the group disappeared).",
    );
    for (g, m) in &r.transitions {
        for (to, n) in m {
            sample(
                &mut out,
                "carpd_transitions_total",
                &[("group", g), ("to", to)],
                n,
            );
        }
    }

    header(
        &mut out,
        "carpd_claims_total",
        "counter",
        "Claims of each failover IP, by result: already_bound, claimed, cancelled, failed, held_down.",
    );
    for (ip, s) in &r.claims {
        for (res, n) in &s.results {
            sample(
                &mut out,
                "carpd_claims_total",
                &[("ip", ip), ("result", res.as_str())],
                n,
            );
        }
    }

    header(
        &mut out,
        "carpd_claim_duration_seconds",
        "histogram",
        "Time from the start of a claim to its end (bound and verified, cancelled or failed).",
    );
    for (ip, s) in &r.claims {
        histogram(
            &mut out,
            "carpd_claim_duration_seconds",
            ("ip", ip),
            &s.duration,
        );
    }

    header(
        &mut out,
        "carpd_claim_outage_seconds",
        "histogram",
        "Time from this node becoming MASTER to the failover IP verified bound here.",
    );
    for (ip, s) in &r.claims {
        histogram(
            &mut out,
            "carpd_claim_outage_seconds",
            ("ip", ip),
            &s.outage,
        );
    }

    header(
        &mut out,
        "carpd_ovh_errors_total",
        "counter",
        "Failed OVH API calls, by kind.",
    );
    for (k, n) in &r.ovh_errors {
        sample(&mut out, "carpd_ovh_errors_total", &[("kind", k)], n);
    }

    header(
        &mut out,
        "carpd_vault_errors_total",
        "counter",
        "Failed Vault/OpenBao calls, by kind.",
    );
    for (k, n) in &r.vault_errors {
        sample(&mut out, "carpd_vault_errors_total", &[("kind", k)], n);
    }

    header(
        &mut out,
        "carpd_ready",
        "gauge",
        "Readiness checks: 1 when the check passed on its last run, 0 when it failed.",
    );
    for (c, ok) in &r.ready {
        sample(&mut out, "carpd_ready", &[("check", c)], bool_value(*ok));
    }

    header(
        &mut out,
        "carpd_ready_all",
        "gauge",
        "1 when every readiness check passed: this node could complete a failover.",
    );
    if let Some(ok) = r.ready_all {
        sample(&mut out, "carpd_ready_all", &[], bool_value(ok));
    }

    header(
        &mut out,
        "carpd_ovh_rights_missing",
        "gauge",
        "1 for each access rule a claim of the failover IP needs that the OVH credential lacks.",
    );
    for (ip, rules) in &r.rights_missing {
        for rule in rules {
            sample(
                &mut out,
                "carpd_ovh_rights_missing",
                &[("ip", ip), ("rule", rule)],
                1,
            );
        }
    }

    header(
        &mut out,
        "carpd_demotion",
        "gauge",
        "CARP demotion: source=kernel is net.inet.carp.demotion, source=carpd the part carpd's ledger added.",
    );
    if let Some(d) = r.demotion_carpd {
        sample(&mut out, "carpd_demotion", &[("source", "carpd")], d);
    }
    if let Some(d) = r.demotion_kernel {
        sample(&mut out, "carpd_demotion", &[("source", "kernel")], d);
    }

    header(
        &mut out,
        "carpd_maintenance",
        "gauge",
        "1 while this node is in maintenance (carpd maintenance enter).",
    );
    if let Some(on) = r.maintenance {
        sample(&mut out, "carpd_maintenance", &[], bool_value(on));
    }

    header(
        &mut out,
        "carpd_metrics_dropped_total",
        "counter",
        "Metric updates dropped because a family reached its label-set cap (a carpd bug).",
    );
    for (f, n) in &r.dropped {
        sample(
            &mut out,
            "carpd_metrics_dropped_total",
            &[("family", f.name())],
            n,
        );
    }

    header(
        &mut out,
        "carpd_log_lines_dropped_total",
        "counter",
        "Log lines dropped because syslogd could not take them at once (carpd never waits for syslogd).",
    );
    sample(&mut out, "carpd_log_lines_dropped_total", &[], log_dropped);
    out
}
