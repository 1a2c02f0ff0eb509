//! The daemon in-process: `Daemon` on a simulated kernel (a state file the test also opens to
//! play the network), a fake devd on a real SOCK_SEQPACKET socket and the real control socket,
//! all in a temporary directory. The daemon reports what it does through `Note`s, so the
//! tests wait for exactly the reconcile they expect, never for a fixed time.
//!
//! Covered: events are hints read from the kernel; garbage and other systems are counted and
//! ignored; INIT; devd restart (reconnect + resync); a 10,000-event burst (no drop, bounded
//! reconciles); a restart while MASTER (no spurious transition); the periodic re-read;
//! reload through the control socket (valid and invalid); control-socket abuse.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use carpd::carp::{CarpState, Vhid};
use carpd::control::{self, Reply, Request};
use carpd::controller::{Trigger, Work};
use carpd::daemon::{Daemon, Note};
use carpd::devd::CarpEvent;
use carpd::kernel::Kernel;
use carpd::kernel::sim::{Flavour, SimKernel};
use tokio::sync::{mpsc, oneshot};

use carpd_testkit::daemon::{LIMIT, Lab, Running, within};

const CONFIG: &str = "\
node: test
daemon: { resync_interval: 1h, coalesce: 200ms }
groups:
  - { interface: vmx1, vhid: 2, advskew: 0, addresses: [192.0.2.2/32] }
  - { interface: vmx0, vhid: 1, advskew: 100, addresses: [192.0.2.1/24] }
";

fn reads(work: &Work, group: &str) -> bool {
    matches!(work, Work::Groups(gs) if gs.iter().any(|(g, _)| g.to_string() == group))
}

#[tokio::test]
async fn start_applies_the_configuration_and_events_are_hints_read_from_the_kernel() {
    let mut lab = Lab::new(CONFIG).await;
    // Applied at start-up, as `carpd apply` would.
    let g = lab
        .kernel
        .group("vmx1", Vhid::new(2).unwrap())
        .unwrap()
        .expect("2@vmx1 created");
    assert_eq!(g.addresses.len(), 1);
    let before = g.state;
    assert_ne!(before, CarpState::Master);

    // A MASTER event while the kernel says otherwise: read, not believed.
    lab.event("2@vmx1", CarpState::Master).await;
    let (_, out, _) = lab
        .reconciled("the event's read", |w, _| reads(w, "2@vmx1"))
        .await;
    assert!(out.transitions.is_empty(), "{:?}", out.transitions);
    assert_eq!(out.readings[0].state, before);

    // The network makes us MASTER and devd says so (after the coalescing window).
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    let (_, out, _) = lab
        .reconciled("the MASTER transition", |w, o| {
            reads(w, "2@vmx1") && !o.transitions.is_empty()
        })
        .await;
    let t = &out.transitions[0];
    assert_eq!(
        (t.from, t.to, t.learned),
        (Some(before), Some(CarpState::Master), Trigger::Event)
    );

    let view = lab.status().await;
    let g = view.groups.iter().find(|g| g.group == "2@vmx1").unwrap();
    assert_eq!(g.state, "MASTER");
    assert_eq!(g.learned, "event");
    assert_eq!(g.history.len(), 1);
    assert_eq!(g.history[0].id, t.id);
    assert!(g.managed);
    assert_eq!(view.recent_events[0].state, "MASTER");
    assert!(view.devd.connected);
    lab.stop().await;
    assert!(
        !lab.path("carpd.sock").exists(),
        "socket removed on shutdown"
    );
}

#[tokio::test]
async fn garbage_other_systems_and_init_events() {
    let mut lab = Lab::new(CONFIG).await;
    for junk in [
        &b"!system=IFNET subsystem=vmx1 type=LINK_UP\n"[..],
        b"+uhub0 at bus=0\n",
        b"!system=CARP subsystem=2@vmx1 type=PROMOTED\n",
        b"!system=CARP subsystem=2@ type=MASTER\n",
        b"\xff\xfe garbage",
    ] {
        lab.devd.send(junk).await.unwrap();
    }
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    lab.reconciled("the event after the junk", |w, o| {
        reads(w, "2@vmx1") && !o.transitions.is_empty()
    })
    .await;
    // INIT (link down): announced like the others, and a loss of MASTER.
    lab.network("2@vmx1", CarpState::Init);
    lab.event("2@vmx1", CarpState::Init).await;
    let (_, out, _) = lab
        .reconciled("the INIT transition", |w, o| {
            reads(w, "2@vmx1") && !o.transitions.is_empty()
        })
        .await;
    assert_eq!(out.transitions[0].to, Some(CarpState::Init));
    let view = lab.status().await;
    assert_eq!(view.devd.other_system, 2, "{:?}", view.devd);
    assert_eq!(view.devd.garbage, 3, "{:?}", view.devd);
    assert_eq!(view.devd.carp_events, 2);
    assert!(view.devd.connected, "junk must never cost the connection");
    lab.stop().await;
}

#[tokio::test]
async fn devd_restart_reconnects_and_resyncs_what_was_missed() {
    let mut lab = Lab::new(CONFIG).await;
    lab.devd.stop();
    // A transition while devd is down: its event is lost for good.
    lab.network("1@vmx0", CarpState::Master);
    lab.devd.listen().unwrap();
    let (_, out, _) = lab
        .reconciled("the resync after devd came back", |w, o| {
            w == &Work::Full(Trigger::Resync) && !o.transitions.is_empty()
        })
        .await;
    let t = &out.transitions[0];
    assert_eq!(t.group.to_string(), "1@vmx0");
    assert_eq!(
        (t.to, t.learned),
        (Some(CarpState::Master), Trigger::Resync)
    );
    let view = lab.status().await;
    assert_eq!(view.devd.connects, 2);
    lab.stop().await;
}

#[tokio::test]
async fn a_burst_of_10000_events_is_read_promptly_and_folded() {
    let mut lab = Lab::new(&CONFIG.replace("coalesce: 200ms", "coalesce: 1s")).await;
    lab.network("2@vmx1", CarpState::Master);
    let flap = [
        CarpEvent::new("2@vmx1".parse().unwrap(), CarpState::Master).to_record(),
        CarpEvent::new("2@vmx1".parse().unwrap(), CarpState::Backup).to_record(),
    ];
    let started = Instant::now();
    let sent = within(
        "the fake devd sending 10,000 events",
        lab.devd
            .flood((0..10_000).map(|i| flap[i % 2].as_bytes().to_vec())),
    )
    .await
    .unwrap();
    let burst = started.elapsed();
    assert_eq!(sent, 10_000);
    // devd never had to drop us: the client kept up.
    assert_eq!(lab.devd.dropped_unresponsive(), 0);

    // Count the group's reads until the trailing one after the last event.
    let mut group_reads = 0;
    let mut transitions = 0;
    loop {
        let (_, out, _) = lab
            .reconciled("the burst's reads", |w, _| reads(w, "2@vmx1"))
            .await;
        group_reads += 1;
        transitions += out.transitions.len();
        let view = lab.status().await;
        if view.devd.carp_events == 10_000 && view.events == 10_000 {
            // Everything arrived; one more read may be pending at the window's end.
            break;
        }
    }
    if group_reads == 1 {
        // The events after the first one share one read at the end of the window.
        let (_, out, _) = lab
            .reconciled("the trailing read", |w, _| reads(w, "2@vmx1"))
            .await;
        group_reads += 1;
        transitions += out.transitions.len();
    }
    let view = lab.status().await;
    assert_eq!(view.devd.dropped, 0, "{:?}", view.devd);
    assert_eq!(view.devd.disconnects, 0);
    // The kernel's one change is reported once, whatever the events claimed.
    assert_eq!(transitions, 1);
    // At once for the first event, then at most one read per 1 s window while it lasts.
    let bound = 2 + burst.as_secs() as usize;
    assert!(
        group_reads <= bound,
        "{group_reads} reads for a {burst:?} burst (bound {bound})"
    );
    if burst < Duration::from_secs(1) {
        assert_eq!(
            group_reads, 2,
            "one read at once, one for the rest of the burst"
        );
    }
    eprintln!("10,000 events in {burst:?}: {group_reads} read(s) of 2@vmx1");
    lab.stop().await;
}

#[tokio::test]
async fn a_restart_while_master_recovers_the_state_without_a_transition() {
    let mut lab = Lab::new(CONFIG).await;
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    lab.reconciled("MASTER", |w, o| {
        reads(w, "2@vmx1") && !o.transitions.is_empty()
    })
    .await;
    lab.stop().await;

    let k = SimKernel::open(Flavour::FreeBsd14, Some(lab.path("kernel.json"))).unwrap();
    let (tx, mut notes) = mpsc::unbounded_channel();
    let daemon = Daemon::start(lab.settings(), Box::new(k))
        .unwrap()
        .with_notes(tx);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(async move {
        let _ = stopped.await;
    }));
    let first = within("the second daemon's first read", notes.recv())
        .await
        .unwrap();
    match first {
        Note::Reconciled { work, outcome, .. } => {
            assert_eq!(work, Work::Full(Trigger::Startup));
            assert!(outcome.transitions.is_empty(), "{:?}", outcome.transitions);
            assert!(
                outcome
                    .initial
                    .contains(&("2@vmx1".parse().unwrap(), CarpState::Master))
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    lab.daemon = Some(Running {
        notes,
        stop: Some(stop),
        task,
    });
    let view = lab.status().await;
    let g = view.groups.iter().find(|g| g.group == "2@vmx1").unwrap();
    assert_eq!(
        (g.state.as_str(), g.learned.as_str()),
        ("MASTER", "startup")
    );
    assert!(g.history.is_empty());
    lab.stop().await;
}

#[tokio::test]
async fn the_periodic_read_notices_what_no_event_announced() {
    let mut lab = Lab::new(&CONFIG.replace("resync_interval: 1h", "resync_interval: 1s")).await;
    lab.network("1@vmx0", CarpState::Master);
    let (_, out, _) = lab
        .reconciled("the timer's read", |w, o| {
            w == &Work::Full(Trigger::Timer) && !o.transitions.is_empty()
        })
        .await;
    assert_eq!(out.transitions[0].learned, Trigger::Timer);
    lab.stop().await;
}

#[tokio::test]
async fn drift_is_repaired_at_the_next_full_read() {
    let mut lab = Lab::new(&CONFIG.replace("resync_interval: 1h", "resync_interval: 1s")).await;
    // Someone runs `ifconfig vmx0 vhid 1 advskew 7` by hand.
    carpd::kernel::merge::set_merged(
        &lab.kernel,
        "vmx0",
        Vhid::new(1).unwrap(),
        &carpd::kernel::merge::Changes {
            advskew: Some(7),
            ..Default::default()
        },
    )
    .unwrap();
    lab.reconciled("the timer's read", |w, _| w == &Work::Full(Trigger::Timer))
        .await;
    let g = lab
        .kernel
        .group("vmx0", Vhid::new(1).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(g.advskew, 100, "restored from the configuration");
    let view = lab.status().await;
    let applied = view.last_apply.expect("last_apply recorded");
    assert_eq!(applied.trigger, "timer");
    assert!(
        applied.changes[0].contains("advskew"),
        "{:?}",
        applied.changes
    );
    lab.stop().await;
}

#[tokio::test]
async fn reload_swaps_a_valid_configuration_and_keeps_the_old_one_otherwise() {
    let mut lab = Lab::new(CONFIG).await;
    std::fs::write(
        lab.path("carpd.yaml"),
        CONFIG.replace("advskew: 100", "advskew: 50"),
    )
    .unwrap();
    match lab.request(Request::Reload).await {
        Reply::Reloaded { message } => {
            assert!(message.contains("1 kernel change(s) made"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let g = lab
        .kernel
        .group("vmx0", Vhid::new(1).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(g.advskew, 50);

    std::fs::write(
        lab.path("carpd.yaml"),
        CONFIG.replace("advskew: 100", "advskew: 500"),
    )
    .unwrap();
    match lab.request(Request::Reload).await {
        Reply::Error { message } => {
            assert!(
                message.contains("running configuration stays in force"),
                "{message}"
            );
            assert!(message.contains("groups[1].advskew"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let g = lab
        .kernel
        .group("vmx0", Vhid::new(1).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(g.advskew, 50, "unchanged by the refused reload");
    let view = lab.status().await;
    assert!(!view.last_reload.unwrap().ok);
    // Still working.
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    lab.reconciled("an event after the refused reload", |w, o| {
        reads(w, "2@vmx1") && !o.transitions.is_empty()
    })
    .await;
    lab.stop().await;
}

/// The inline-password rule on reload is the one `check`, `apply` and `run` apply (issue 19,
/// item 6): a configuration that now holds a password inline while others can read it is
/// refused, the running one stays; made private, the same file is taken.
#[tokio::test]
async fn reload_refuses_an_inline_password_in_a_configuration_others_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let mut lab = Lab::new(CONFIG).await;
    lab.stop().await;
    lab.tweak = Some(|s| s.policy.allow_insecure_files = false);
    lab.start().await;
    let cfg = lab.path("carpd.yaml");
    let inline = CONFIG.replace(
        "advskew: 0, addresses",
        "advskew: 0, password: inlineSecret-5c1, addresses",
    );
    std::fs::write(&cfg, &inline).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    match lab.request(Request::Reload).await {
        Reply::Error { message } => {
            assert!(
                message.contains("inline password of 2@vmx1") && message.contains("mode 0644"),
                "{message}"
            );
            assert!(!message.contains("inlineSecret-5c1"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    match lab.request(Request::Reload).await {
        Reply::Reloaded { .. } => {}
        other => panic!("the private file must be taken: {other:?}"),
    }
    lab.stop().await;
}

/// Raw line exchange on the control socket, for abuse tests.
fn raw(path: &Path, line: &[u8]) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    s.write_all(line).unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    reply
}

/// A flood of connections past the limit is refused in the accept loop (issue 19, item 8):
/// hundreds of clients that connect and stay silent cost the daemon no task each.
#[tokio::test]
async fn a_connection_flood_is_refused_without_a_task_per_refusal() {
    let mut lab = Lab::new(CONFIG).await;
    let path = lab.path("carpd.sock");
    let idle: Vec<UnixStream> = (0..carpd::control::server::MAX_CLIENTS)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // Let the daemon accept the idle clients and start their tasks.
    let p = path.clone();
    let first = tokio::task::spawn_blocking(move || raw(&p, b"{\"v\":1,\"cmd\":\"status\"}\n"))
        .await
        .unwrap();
    assert!(first.contains("busy"), "{first}");
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let flood: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // Connections are accepted in order: once this one is answered, the flood was handled.
    let p = path.clone();
    let last = tokio::task::spawn_blocking(move || raw(&p, b"{\"v\":1,\"cmd\":\"status\"}\n"))
        .await
        .unwrap();
    assert!(last.contains("busy"), "{last}");
    let after = metrics.num_alive_tasks();
    assert!(
        after <= before + 5,
        "{} tasks alive after 300 refused connections ({before} before): a task per refusal",
        after
    );
    // Every flooded client got its reply, and nothing else.
    for mut c in flood.into_iter().take(5) {
        c.set_read_timeout(Some(LIMIT)).unwrap();
        let mut reply = String::new();
        BufReader::new(&mut c).read_line(&mut reply).unwrap();
        assert!(reply.contains("busy"), "{reply}");
    }
    drop(idle);
    lab.stop().await;
}

#[tokio::test]
async fn the_control_socket_survives_abuse() {
    let mut lab = Lab::new(CONFIG).await;
    let path = lab.path("carpd.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let p = path.clone();
    let replies = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        out.push(raw(&p, b"{\"v\":2,\"cmd\":\"status\"}\n"));
        out.push(raw(&p, b"hello\n"));
        let mut long = vec![b'x'; carpd::control::protocol::MAX_REQUEST + 10];
        long.push(b'\n');
        out.push(raw(&p, &long));
        out
    })
    .await
    .unwrap();
    assert!(
        replies[0].contains("protocol version 2 is not supported"),
        "{}",
        replies[0]
    );
    assert!(replies[1].contains("not a JSON object"), "{}", replies[1]);
    assert!(replies[2].contains("request longer than"), "{}", replies[2]);

    // Clients that connect and never send, or never read: others are still served, and
    // past the limit a client is told the daemon is busy.
    let p = path.clone();
    let idle: Vec<UnixStream> = (0..carpd::control::server::MAX_CLIENTS)
        .map(|_| UnixStream::connect(&p).unwrap())
        .collect();
    let p = path.clone();
    let busy = tokio::task::spawn_blocking(move || raw(&p, b"{\"v\":1,\"cmd\":\"status\"}\n"))
        .await
        .unwrap();
    assert!(busy.contains("busy"), "{busy}");
    drop(idle);
    // Slots free up as the idle clients go away.
    let view = within("status after the idle clients left", async {
        loop {
            let p = path.clone();
            let r = tokio::task::spawn_blocking(move || {
                control::request(&p, &Request::Status, Duration::from_secs(2))
            })
            .await
            .unwrap();
            if let Ok(Reply::Status { daemon }) = r {
                return daemon;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(view.node, "test");
    // The nudge reply says whether the configuration knows the group.
    for (group, known) in [("2@vmx1", true), ("9@vmx1", false)] {
        match lab
            .request(Request::Nudge {
                group: group.parse().unwrap(),
                state: Some(CarpState::Master),
            })
            .await
        {
            Reply::Nudged { known: k } => assert_eq!(k, known, "{group}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    lab.reconciled(
        "the nudge's read",
        |w, _| matches!(w, Work::Groups(gs) if gs.iter().any(|(_, t)| *t == Trigger::Nudge)),
    )
    .await;
    lab.stop().await;
}

#[test]
fn only_root_or_the_daemons_own_user_may_use_the_socket() {
    use carpd::control::server::authorized;
    assert!(authorized(0, 0));
    assert!(authorized(0, 1000));
    assert!(authorized(1000, 1000));
    assert!(!authorized(65534, 0));
    assert!(!authorized(1001, 1000));
}
