//! Claiming a failover IP by virtual MAC: observe (from a warm hint or a full listing), then
//! release it from the other vMAC and bind it on ours, the window in between never left
//! unmarked (see [`super::Phase`]).
//!
//! With a warm hint the claim's first request is the one safety read the last-IP rule needs
//! (the peer vMAC's IPs, fresh), and nothing precedes it: no listing, no token refresh, no
//! rate-limit wait ([`crate::ovh::client::claim_scope`]). A hint "unbound" is checked the
//! same way before the POST: the service's vMACs read afresh (their list from any earlier
//! read), ours first, until the IP is found. A claim costs 4 requests of its
//! own: the DELETE, one read of its task, the POST, one read of its task. Its polls read
//! the vMAC the step changes, and those reads, like the safety read and the read-back, are
//! shared with the other claims of the failover (`run.rs`, [`SharedReads`]): one request a
//! round for all of them, so a lone claim with tasks of the learned length costs about 9.
//!
//! After a DELETE or POST whose outcome is refused or unknown, the claim never writes again
//! before reading: pending tasks are waited for, then the vMAC it wrote to is read (our own
//! after a POST: seen there means bound, by the lost write), and a full observation follows
//! when that read does not settle it.

use std::net::Ipv4Addr;
use std::time::Duration;

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::time::Instant;

use super::super::api::{FailoverApi, TaskKind, TaskRef, parse_mac};
use super::super::client::claim_scope;
use super::super::error::OvhError;
use super::super::plan::{Found, VmacObservation, VmacStep, plan_vmac};
use super::run::{Mutation, Run, Seen, Step, within};
use super::shared::{Fresh, Release, SharedReads, VERIFY_COALESCE};
use super::{
    ClaimError, ClaimFailure, ClaimOptions, ClaimOutcome, ClaimResult, Fence, Phase, VmacTarget,
};

/// Where the IP is among the service's vMACs (no reverse lookup exists: list, then read each
/// vMAC's IPs). Also reports whether `ours` exists and the vMAC list.
pub async fn locate<A: FailoverApi>(
    api: &A,
    service: &str,
    ip: Ipv4Addr,
    ours: &str,
) -> Result<(VmacObservation, Vec<String>), OvhError> {
    let shared = SharedReads::new();
    let now = Fresh::Within(Duration::ZERO);
    locate_shared(api, service, ip, ours, &shared, now, now)
        .await
        .map(|(o, v, _)| (o, v))
}

/// [`locate`] through reads shared with other claims and checks: the list of vMACs as fresh
/// as `list_need` (it changes only when a vMAC is created or deleted), each vMAC's IPs as
/// fresh as `need`. Also returns the listing of the vMAC holding the IP (the last-IP rule's
/// input).
///
/// The vMACs are read one after the other, ours first, until the IP is found (an IP is on at
/// most one vMAC): the client speaks HTTP/1.1, so reads side by side would each need a
/// connection of their own, and a new one costs more round trips (TCP, TLS) than the next
/// read on the warm one. Any read error is the caller's: a vMAC the list names but that
/// answers 404 is not taken for gone here.
pub async fn locate_shared<A: FailoverApi>(
    api: &A,
    service: &str,
    ip: Ipv4Addr,
    ours: &str,
    shared: &SharedReads,
    list_need: Fresh,
    need: Fresh,
) -> Result<(VmacObservation, Vec<String>, Option<Vec<Ipv4Addr>>), OvhError> {
    // Only MACs go near a path, each once (whatever the listing holds).
    let mut vmacs: Vec<String> = Vec::new();
    for m in shared
        .list_vmacs(api, service, list_need)
        .await?
        .iter()
        .filter_map(|m| parse_mac(m))
    {
        if !vmacs.contains(&m) {
            vmacs.push(m);
        }
    }
    let ours_exists = vmacs.iter().any(|m| m.eq_ignore_ascii_case(ours));
    // Ours first: when the IP is already ours (the common re-check), one read settles it.
    let mut order: Vec<&String> = vmacs.iter().collect();
    order.sort_by_key(|m| !m.eq_ignore_ascii_case(ours));
    let mut found = Found::Unbound;
    let mut listing = None;
    for mac in order {
        let ips = distinct(shared.vmac_ips(api, service, mac, need).await?);
        if ips.contains(&ip) {
            found = Found::Vmac {
                mac: mac.to_lowercase(),
                ips: ips.len(),
            };
            listing = Some(ips);
            break;
        }
    }
    Ok((
        VmacObservation {
            found,
            ours_exists: Some(ours_exists),
        },
        vmacs,
        listing,
    ))
}

/// How old a list of the service's vMACs may be when it only checks an "unbound" hint.
const LISTING_AGE: Duration = Duration::from_secs(3600);

/// The IPs of a listing, each once: the last-IP rule counts distinct addresses, so an IP
/// listed twice can never make a vMAC's only IP look like one of two.
fn distinct(ips: Vec<Ipv4Addr>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Claims `t.ip` for our vMAC. `hint` is a cached observation (the daemon keeps one fresh
/// while BACKUP): it saves the listing, but the vMAC it names is read once before anything is
/// deleted, and "unbound" is checked by reading the vMACs before the POST, so a stale hint
/// costs a read or two, never a wrong DELETE (nor a refused POST, unless a vMAC was created
/// since the list was last read). Runs with claim priority; the outcome counts the HTTP
/// requests it sent.
pub async fn claim_vmac<A: FailoverApi>(
    api: &A,
    t: &VmacTarget,
    opts: &ClaimOptions,
    hint: Option<&Found>,
    fence: &dyn Fence,
) -> Result<ClaimOutcome, ClaimFailure> {
    claim_vmac_shared(api, t, opts, hint, fence, &SharedReads::new()).await
}

/// [`claim_vmac`] sharing its reads with the other claims of a failover ([`SharedReads`]):
/// the safety read before the DELETE, the listing, and the read-back; the last-IP rule
/// counts every release in flight from the same vMAC.
pub async fn claim_vmac_shared<A: FailoverApi>(
    api: &A,
    t: &VmacTarget,
    opts: &ClaimOptions,
    hint: Option<&Found>,
    fence: &dyn Fence,
    shared: &SharedReads,
) -> Result<ClaimOutcome, ClaimFailure> {
    let (mut r, n) = claim_scope(claim_vmac_inner(api, t, opts, hint, fence, shared)).await;
    super::set_requests(&mut r, n);
    r
}

async fn claim_vmac_inner<A: FailoverApi>(
    api: &A,
    t: &VmacTarget,
    opts: &ClaimOptions,
    hint: Option<&Found>,
    fence: &dyn Fence,
    shared: &SharedReads,
) -> Result<ClaimOutcome, ClaimFailure> {
    let ip_s = t.ip.to_string();
    let mut run = Run::new(ip_s.clone(), opts);
    // Task polls read the steps' effects through the failover's shared reads.
    run.shared = Some(shared);
    let allow_last = t.allow_last_ip_release || opts.force;
    let mut hint = hint.cloned();
    let mut next: Option<VmacStep> = None;
    let mut deleted_at: Option<Instant> = None;
    let mut delete_time: Option<Duration> = None;
    // Whether our DELETE may have been applied and the IP not yet bound here since.
    let mut released = false;
    // The fresh listing of the vMAC holding the IP, from the last observation.
    let mut listing: Option<Vec<Ipv4Addr>> = None;
    // This claim's release reserved on that vMAC (the last-IP rule across claims).
    let mut _release: Option<Release<'_>> = None;
    loop {
        let step = match next.take() {
            Some(s) => s,
            None => {
                if !released {
                    fence.phase(&Phase::Observe);
                }
                // Answers from before this observation never serve it (the last-IP rule
                // needs the vMAC as it is now); one in flight now does.
                let need = Fresh::AnsweredAfter(Instant::now());
                listing = None;
                let obs = match hint.take() {
                    Some(Found::Vmac { mac, .. }) => {
                        let ips = within(
                            run.deadline,
                            &ip_s,
                            "reading the vMAC",
                            opts.deadline,
                            shared.vmac_ips(api, &t.service, &mac, need),
                        )
                        .await;
                        match ips.map(distinct) {
                            Ok(ips) if ips.contains(&t.ip) => Some(VmacObservation {
                                found: Found::Vmac {
                                    mac: mac.to_lowercase(),
                                    ips: ips.len(),
                                },
                                ours_exists: None,
                            })
                            .inspect(|_| listing = Some(ips)),
                            // Stale or unreadable hint: observe fully.
                            _ => None,
                        }
                    }
                    // "Unbound" is checked before anything is written: seen while BACKUP
                    // in the middle of the other router's failover, it is stale as soon as
                    // that failover binds the IP, and a POST on it would only meet OVH's
                    // refusal and a re-plan (a pending-task wait and a backoff: far more
                    // than the read or two of this check). The vMAC list rarely changes:
                    // any this process read serves (a vMAC created since is found by the
                    // re-plan after a refused POST); the vMACs' IPs are read afresh. Our
                    // own vMAC missing from an old list, or a read that fails (a vMAC of
                    // an old list gone), is never the end: a full observation reads the
                    // list again.
                    Some(Found::Unbound) => {
                        let r = within(
                            run.deadline,
                            &ip_s,
                            "locating the IP",
                            opts.deadline,
                            locate_shared(
                                api,
                                &t.service,
                                t.ip,
                                &t.mac,
                                shared,
                                Fresh::Within(LISTING_AGE),
                                need,
                            ),
                        )
                        .await;
                        match r {
                            Ok((o, _, l)) if o.ours_exists != Some(false) => {
                                listing = l;
                                Some(o)
                            }
                            // The claim's deadline: no second try.
                            Err(e @ ClaimError::Deadline { .. }) => return Err(run.fail(e)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let obs = match obs {
                    Some(o) => o,
                    None => within(
                        run.deadline,
                        &ip_s,
                        "locating the IP",
                        opts.deadline,
                        locate_shared(api, &t.service, t.ip, &t.mac, shared, need, need),
                    )
                    .await
                    .map(|(o, _, l)| {
                        run.outcome.found.get_or_insert(o.found.clone());
                        listing = l;
                        o
                    })
                    .map_err(|e| run.fail(e))?,
                };
                run.outcome.found.get_or_insert(obs.found.clone());
                match &obs.found {
                    // Bound here (by a write of ours whose answer was lost): the window
                    // is closed by the bind itself.
                    Found::Vmac { mac, .. } if released && mac.eq_ignore_ascii_case(&t.mac) => {
                        fence.phase(&Phase::Verify);
                    }
                    // Our DELETE did not apply (or someone bound it): bound again, the
                    // window is closed (the next step opens it again if needed).
                    Found::Vmac { .. } if released => {
                        fence.phase(&Phase::Observe);
                    }
                    _ => {}
                }
                let step = plan_vmac(&obs, &t.mac, allow_last);
                tracing::debug!(ip = %t.ip, found = %obs.found, ?step, "vMAC claim plan");
                step
            }
        };
        match step {
            VmacStep::Done => {
                let r = run.done();
                return Ok(run.finish(r));
            }
            VmacStep::RefuseLastIp { mac } => {
                return Err(run.fail(ClaimError::LastIp {
                    ip: t.ip,
                    mac,
                    service: t.service.clone(),
                }));
            }
            VmacStep::OursMissing => {
                let have = api
                    .list_vmacs(&t.service)
                    .await
                    .map(|v| v.join(", "))
                    .unwrap_or_else(|_| "?".into());
                return Err(run.fail(ClaimError::OursMissing {
                    mac: t.mac.clone(),
                    service: t.service.clone(),
                    have,
                }));
            }
            VmacStep::Remove { from } => {
                // The last-IP rule for every IP of the failover at once: the fresh listing
                // minus the releases other claims have in flight from that vMAC.
                _release = None;
                let Some(listed) = listing.as_deref() else {
                    // Never a DELETE without a fresh listing of its vMAC: observe again.
                    hint = Some(Found::Vmac { mac: from, ips: 0 });
                    continue;
                };
                let allow = allow_last;
                match shared.reserve_release(&t.service, &from, t.ip, listed, allow) {
                    Some(r) => _release = Some(r),
                    None => {
                        return Err(run.fail(ClaimError::LastIp {
                            ip: t.ip,
                            mac: from,
                            service: t.service.clone(),
                        }));
                    }
                }
                let action = format!("DELETE {} from virtual MAC {from}", t.ip);
                let would = vec![
                    action.clone(),
                    format!("POST {} on virtual MAC {}", t.ip, t.mac),
                ];
                let service = t.service.clone();
                // From here until the POST's task is done the IP may be bound nowhere.
                released = true;
                let step = Step {
                    action,
                    would,
                    phase: Phase::Release { from: from.clone() },
                    kind: TaskKind::VmacRemove,
                    settle: Some(&t.service),
                    seen: Seen::OnVmac {
                        service: t.service.clone(),
                        mac: from.clone(),
                        ip: t.ip,
                        present: false,
                    },
                    expect: None,
                };
                match run
                    .mutate(
                        api,
                        step,
                        fence,
                        api.remove_vmac_ip(&t.service, &from, t.ip),
                        |id| TaskRef::Server {
                            service: service.clone(),
                            id,
                        },
                    )
                    .await?
                {
                    Mutation::Done { task_time } => {
                        deleted_at = Some(Instant::now());
                        delete_time = Some(task_time);
                        shared.wrote(&t.service, &from);
                    }
                    // Pending tasks have ended: re-read only that vMAC first (one request,
                    // not a full listing; a 5xx storm must not spend the rate budget on
                    // listings). Still there: the DELETE did not apply, send it again;
                    // gone: a full observation finds it unbound and POSTs.
                    Mutation::Replan => {
                        hint = Some(Found::Vmac { mac: from, ips: 0 });
                        continue;
                    }
                    Mutation::Ended => return Ok(run.outcome.clone()),
                }
                // The IP was just seen leaving: go straight to the POST (the outage runs).
                next = Some(VmacStep::Add);
            }
            VmacStep::Add => {
                // The IP is bound nowhere (released by us, or found so): binding it is an
                // open window too, finished even by a stopping daemon.
                released = true;
                let action = format!("POST {} on virtual MAC {}", t.ip, t.mac);
                let service = t.service.clone();
                let step = Step {
                    action: action.clone(),
                    would: vec![action],
                    phase: Phase::Bind,
                    kind: TaskKind::VmacAdd,
                    settle: Some(&t.service),
                    seen: Seen::OnVmac {
                        service: t.service.clone(),
                        mac: t.mac.clone(),
                        ip: t.ip,
                        present: true,
                    },
                    expect: delete_time,
                };
                match run
                    .mutate(
                        api,
                        step,
                        fence,
                        api.add_vmac_ip(&t.service, &t.mac, t.ip, &t.virtual_machine_name),
                        |id| TaskRef::Server {
                            service: service.clone(),
                            id,
                        },
                    )
                    .await?
                {
                    Mutation::Done { .. } => {
                        if let Some(d) = deleted_at.take() {
                            run.outcome.outage = Some(d.elapsed());
                        }
                        released = false;
                        shared.wrote(&t.service, &t.mac);
                        fence.phase(&Phase::Verify);
                    }
                    // Refused or unknown: never POST again before reading. Pending tasks
                    // have ended; read our vMAC (bound there: the POST landed, done), and
                    // observe fully when it is not there.
                    Mutation::Replan => {
                        hint = Some(Found::Vmac {
                            mac: t.mac.clone(),
                            ips: 0,
                        });
                        continue;
                    }
                    Mutation::Ended => return Ok(run.outcome.clone()),
                }
                // Read back and verify: one read sent after this bind, shared with the
                // binds of the same failover that end in the next few milliseconds.
                let need = Fresh::SentAfter {
                    at: Instant::now(),
                    coalesce: VERIFY_COALESCE,
                };
                let ips = within(
                    run.deadline,
                    &ip_s,
                    "verifying",
                    opts.deadline,
                    shared.vmac_ips(api, &t.service, &t.mac, need),
                )
                .await;
                match ips {
                    Ok(ips) if ips.contains(&t.ip) => {
                        return Ok(run.finish(ClaimResult::Claimed));
                    }
                    Ok(_) => {
                        let e = ClaimError::Api(OvhError::Config(format!(
                            "the POST task finished but {} is not on {} when read back",
                            t.ip, t.mac
                        )));
                        run.replan(&e).await?;
                    }
                    Err(e) => {
                        run.replan(&e).await?;
                    }
                }
            }
        }
    }
}
