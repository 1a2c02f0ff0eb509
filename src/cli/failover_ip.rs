//! `carpd failover-ip status [--json]` and `carpd failover-ip claim <ip> [--dry-run] [--force]`.
//!
//! status: for each configured failover IP, where OVH has it, where it should be given the
//! local CARP state of its group (MASTER: here; BACKUP: elsewhere; INIT or absent: no
//! expectation), and whether the two agree. claim: runs the claim now, for operators and
//! drills, fenced by the local state: it refuses unless the group is MASTER here, and stops
//! before any mutating step once it no longer is.
//!
//! [`check_rights`] is the OVH part of `carpd check --online`: the credential's access rules
//! against every call a claim makes, and the rules or IAM actions to grant, ready to paste.
//!
//! Credentials: `{file: ...}` is read here (python-ovh INI, root-only); `{vault: ...}` through
//! a Vault agent (token lifecycle, read cache) on this command's runtime.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use crate::carp::{CarpState, GroupId};
use crate::config::Config;
use crate::config::ovh::{FailoverIp, FailoverMode, OvhConfig};
use crate::kernel::Kernel;
use crate::ovh::credentials::CredentialSource;
use crate::ovh::failover::{ClaimOptions, claim_move, claim_vmac, locate};
use crate::ovh::plan::Found;
use crate::ovh::{Client, ClientOptions, FailoverApi};
use crate::secrets::SecretPolicy;

use super::{Context, eprint_error};

pub use crate::daemon::cloud::VaultCredentials;

/// A credential source for `ovh.credentials` with an agent of its own (see
/// [`crate::daemon::cloud::credential_source`]).
pub fn credential_source(
    config: &Config,
    ovh: &OvhConfig,
    policy: SecretPolicy,
) -> Result<Arc<dyn CredentialSource>, String> {
    crate::daemon::cloud::credential_source(config, ovh, policy, None).map_err(|e| e.to_string())
}

/// An OVH client for `ovh`, its credential source running on `rt` (shared with
/// `maintenance enter --wait`).
pub(crate) fn client(
    ctx: &Context,
    config: &Config,
    ovh: &OvhConfig,
    rt: &tokio::runtime::Runtime,
) -> Result<Client, String> {
    let _in_runtime = rt.enter();
    let source = credential_source(config, ovh, ctx.policy)?;
    let opts = ClientOptions {
        proxy: ovh.proxy.clone(),
        rate: crate::ovh::policy::RateLimit::per_minute(
            ovh.requests_per_minute
                .unwrap_or(crate::ovh::policy::DEFAULT_PER_MINUTE),
        ),
        ..ClientOptions::default()
    };
    Client::new(ovh.endpoint.clone(), source, opts).map_err(|e| e.to_string())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn load(ctx: &Context) -> Result<(Config, OvhConfig), String> {
    let config = ctx.load_config().map_err(|e| e.to_string())?;
    let Some(ovh) = config.ovh.clone() else {
        return Err(format!(
            "{}: no ovh: section: failover IPs need an endpoint and credentials (see the README)",
            config.file.display()
        ));
    };
    Ok((config, ovh))
}

fn local_state(k: &dyn Kernel, g: &GroupId) -> Result<Option<CarpState>, String> {
    k.group(&g.ifname, g.vhid)
        .map(|o| o.map(|x| x.state))
        .map_err(|e| e.to_string())
}

#[derive(Serialize)]
struct IpStatus {
    ip: String,
    group: String,
    mode: &'static str,
    /// MASTER / BACKUP / INIT, or null when the vhid does not exist here.
    local_state: Option<String>,
    /// Where OVH has it.
    ovh: Option<Found>,
    /// This node's vMAC or service.
    ours: String,
    /// "here", "elsewhere", or null (no expectation).
    should_be: Option<&'static str>,
    /// null when unknown (an error, or no expectation).
    agrees: Option<bool>,
    error: Option<String>,
}

#[derive(Serialize)]
struct StatusReport {
    schema: &'static str,
    node: String,
    endpoint: String,
    failover_ips: Vec<IpStatus>,
}

/// Where OVH has `f` now, and whether that is this node (shared with `maintenance enter
/// --wait`, which waits for every IP to be bound away).
pub(crate) async fn observe<A: FailoverApi>(
    api: &A,
    f: &FailoverIp,
) -> Result<(Found, bool), String> {
    match &f.mode {
        FailoverMode::VirtualMac(t) => {
            let (obs, _) = locate(api, &t.service, t.ip, &t.mac)
                .await
                .map_err(|e| e.to_string())?;
            let here = matches!(&obs.found, Found::Vmac { mac, .. } if *mac == t.mac);
            Ok((obs.found, here))
        }
        FailoverMode::IpMove(t) => {
            let info = api.ip_info(t.block).await.map_err(|e| e.to_string())?;
            let service = info.service().map(str::to_string);
            let here = service.as_deref() == Some(t.service.as_str());
            Ok((Found::Service { service }, here))
        }
    }
}

pub fn status(ctx: &Context, json: bool, out: &mut dyn Write) -> bool {
    let (config, ovh) = match load(ctx) {
        Ok(x) => x,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let k = match ctx.open_kernel() {
        Ok(k) => k,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let api = match client(ctx, &config, &ovh, &rt) {
        Ok(c) => c,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let mut rows = Vec::new();
    for f in &config.failover_ips {
        let (mode, ours) = match &f.mode {
            FailoverMode::VirtualMac(t) => {
                ("ovh_virtual_mac", format!("{} on {}", t.mac, t.service))
            }
            FailoverMode::IpMove(t) => ("ovh_ip_move", t.service.clone()),
        };
        let mut row = IpStatus {
            ip: f.ip.to_string(),
            group: f.group.to_string(),
            mode,
            local_state: None,
            ovh: None,
            ours,
            should_be: None,
            agrees: None,
            error: None,
        };
        match local_state(k.as_ref(), &f.group) {
            Ok(s) => {
                row.local_state = s.map(|s| s.as_str().to_string());
                row.should_be = match s {
                    Some(CarpState::Master) => Some("here"),
                    Some(CarpState::Backup) => Some("elsewhere"),
                    _ => None,
                };
            }
            Err(e) => row.error = Some(e),
        }
        match rt.block_on(observe(&api, f)) {
            Ok((found, here)) => {
                row.agrees = row.should_be.map(|s| (s == "here") == here);
                row.ovh = Some(found);
            }
            Err(e) => row.error = Some(e),
        }
        rows.push(row);
    }
    let ok = rows
        .iter()
        .all(|r| r.error.is_none() && r.agrees != Some(false));
    let report = StatusReport {
        schema: "carpd.failover-ip-status.v1",
        node: config.node.clone(),
        endpoint: ovh.endpoint.to_string(),
        failover_ips: rows,
    };
    let text = if json {
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        let mut s = format!("node {}, OVH endpoint {}\n", report.node, report.endpoint);
        if report.failover_ips.is_empty() {
            s.push_str("no failover_ips configured\n");
        }
        for r in &report.failover_ips {
            let verdict = match (r.agrees, &r.error) {
                (_, Some(_)) => "ERROR",
                (Some(true), _) => "ok",
                (Some(false), _) => "MISMATCH",
                (None, _) => "-",
            };
            s.push_str(&format!(
                "{:<16} group {:<10} local {:<7} ovh: {}; ours: {}; should be {}: {verdict}\n",
                r.ip,
                r.group,
                r.local_state.as_deref().unwrap_or("absent"),
                r.ovh.as_ref().map_or("?".to_string(), |f| f.to_string()),
                r.ours,
                r.should_be.unwrap_or("anywhere"),
            ));
            if let Some(e) = &r.error {
                s.push_str(&format!("  error: {e}\n"));
            }
        }
        s
    };
    out.write_all(text.as_bytes()).is_ok() && ok
}

pub fn claim(ctx: &Context, ip: &str, dry_run: bool, force: bool, out: &mut dyn Write) -> bool {
    let (config, ovh) = match load(ctx) {
        Ok(x) => x,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let Some(f) = config
        .failover_ips
        .iter()
        .find(|f| f.ip.to_string() == ip.trim())
    else {
        eprint_error(format!(
            "{ip} is not in failover_ips of {} (have: {})",
            config.file.display(),
            config
                .failover_ips
                .iter()
                .map(|f| f.ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return false;
    };
    let k = match ctx.open_kernel() {
        Ok(k) => k,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    match local_state(k.as_ref(), &f.group) {
        Ok(Some(CarpState::Master)) => {}
        Ok(s) if !dry_run => {
            eprint_error(format!(
                "group {} is {} here: claiming {ip} would take it from the MASTER. Make this node MASTER first (or use --dry-run to see the plan)",
                f.group,
                s.map_or("absent", |s| s.as_str())
            ));
            return false;
        }
        Ok(_) => {}
        Err(e) => {
            eprint_error(e);
            return false;
        }
    }
    let (rt, api) = match runtime().and_then(|rt| client(ctx, &config, &ovh, &rt).map(|c| (rt, c)))
    {
        Ok(x) => x,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let opts = ClaimOptions {
        deadline: ovh.claim_deadline,
        dry_run,
        force,
        ..ClaimOptions::default()
    };
    let still_master = || {
        matches!(
            local_state(k.as_ref(), &f.group),
            Ok(Some(CarpState::Master))
        )
    };
    let r = rt.block_on(async {
        match &f.mode {
            FailoverMode::VirtualMac(t) => claim_vmac(&api, t, &opts, None, &still_master).await,
            FailoverMode::IpMove(t) => claim_move(&api, t, &opts, &still_master).await,
        }
    });
    match r {
        Ok(o) => {
            let text = serde_json::to_string_pretty(&o).unwrap_or_default();
            let _ = writeln!(out, "{text}");
            !matches!(
                o.result,
                crate::ovh::failover::ClaimResult::Cancelled { .. }
            )
        }
        Err(e) => {
            eprint_error(&e);
            false
        }
    }
}

/// `carpd check --online`, OVH part: reads the credential's access rules and judges every
/// call a claim of each failover IP makes (the DELETE checked against any other vMAC: the
/// documented rules use `*`). Prints the rules (or, for an OAuth2 service account, the IAM
/// actions) to grant, ready to paste; returns the problems.
pub fn check_rights(ctx: &Context, config: &Config, out: &mut dyn Write) -> Vec<String> {
    use crate::ovh::rights::{self, Credential, Need};
    let Some(ovh) = &config.ovh else {
        return Vec::new();
    };
    if config.failover_ips.is_empty() {
        return Vec::new();
    }
    let needs: Vec<(String, Vec<Need>)> = config
        .failover_ips
        .iter()
        .map(|f| {
            let n = match &f.mode {
                FailoverMode::VirtualMac(t) => rights::vmac_needs(t, None),
                FailoverMode::IpMove(t) => rights::move_needs(t),
            };
            (f.ip.to_string(), n)
        })
        .collect();
    let all: Vec<&Need> = needs.iter().flat_map(|(_, n)| n.iter()).collect();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return vec![e],
    };
    let api = match client(ctx, config, ovh, &rt) {
        Ok(c) => c,
        Err(e) => return vec![format!("ovh: {e}")],
    };
    let read = rt.block_on(async {
        api.warm_up().await?;
        if api.signs_with_time() == Some(false) {
            return Ok(None);
        }
        api.get::<Credential>(rights::CURRENT_CREDENTIAL)
            .await
            .map(Some)
    });
    let print_rules = |out: &mut dyn Write| {
        let _ = writeln!(
            out,
            "OVH access rules a consumer key needs (the accessRules of POST /auth/credential):\n{}",
            rights::access_rules_json(&all)
        );
    };
    let print_iam = |out: &mut dyn Write| {
        let region = match ovh.endpoint.name() {
            "ovh-ca" => "ca",
            "ovh-us" => "us",
            _ => "eu",
        };
        let _ = writeln!(
            out,
            "OVH IAM actions an OAuth2 service account needs (allow them in a policy on the servers' or IPs' resources, e.g. urn:v1:{region}:resource:dedicatedServer:<service>):"
        );
        let lines: Vec<String> = rights::iam_actions(&all)
            .iter()
            .map(|a| serde_json::json!({ "action": a }).to_string())
            .collect();
        let _ = writeln!(
            out,
            "{{\"permissions\": {{\"allow\": [\n  {}\n]}}}}",
            lines.join(",\n  ")
        );
    };
    match read {
        Ok(None) => {
            let _ = writeln!(
                out,
                "note: OVH rights unverified: an OAuth2 service account's IAM policy cannot be read by carpd"
            );
            print_iam(out);
            Vec::new()
        }
        Ok(Some(c)) => {
            let mut problems = Vec::new();
            for (ip, n) in &needs {
                let m = rights::missing(&c.rules, n);
                if !m.is_empty() {
                    let lines: Vec<String> = m.iter().map(|n| n.describe()).collect();
                    problems.push(format!("failover IP {ip}: {}", rights::fix(&lines)));
                }
            }
            if problems.is_empty() {
                let _ = writeln!(
                    out,
                    "OVH rights: the credential's access rules grant every call of a claim ({} failover IP(s))",
                    needs.len()
                );
            } else {
                print_rules(out);
                print_iam(out);
            }
            problems
        }
        Err(e) => {
            print_rules(out);
            vec![format!(
                "ovh: cannot read the credential's access rules: {e}"
            )]
        }
    }
}
