//! The daemon in-process, for integration tests: `Daemon` on a simulated kernel (a state
//! file the test also opens to play the network), a fake devd on a real SOCK_SEQPACKET socket
//! and the real control socket, all in a temporary directory. The daemon reports what it does
//! through `Note`s, so tests wait for exactly what they expect, never for a fixed time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::devd::FakeDevd;
use carpd::carp::{CarpState, GroupId};
use carpd::control::{self, Reply, Request};
use carpd::controller::{Trigger, Work};
use carpd::daemon::{Daemon, Note, Settings};
use carpd::devd::{BackoffPolicy, CarpEvent, ClientConfig};
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::observe::daemon_view::DaemonView;
use carpd::secrets::SecretPolicy;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const LIMIT: Duration = Duration::from_secs(20);

pub struct Lab {
    pub dir: tempfile::TempDir,
    /// The test's handle on the simulated kernel: the network's side.
    pub kernel: SimKernel,
    pub devd: FakeDevd,
    pub daemon: Option<Running>,
    /// Adjusts the settings before each start (tests that need other OVH client options).
    pub tweak: Option<fn(&mut Settings)>,
}

pub struct Running {
    pub notes: mpsc::UnboundedReceiver<Note>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl Lab {
    pub async fn new(config: &str) -> Lab {
        Lab::new_in(tempfile::tempdir().unwrap(), config).await
    }

    /// A lab in `dir` (which may already hold files the configuration names).
    pub async fn new_in(dir: tempfile::TempDir, config: &str) -> Lab {
        std::fs::write(dir.path().join("carpd.yaml"), config).unwrap();
        let kernel =
            SimKernel::open(Flavour::FreeBsd14, Some(dir.path().join("kernel.json"))).unwrap();
        let devd = FakeDevd::bind(dir.path().join("devd.pipe")).unwrap();
        let mut lab = Lab {
            dir,
            kernel,
            devd,
            daemon: None,
            tweak: None,
        };
        lab.start().await;
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn settings(&self) -> Settings {
        Settings {
            config_path: self.path("carpd.yaml"),
            policy: SecretPolicy {
                allow_insecure_files: true,
            },
            apply: true,
            control_socket: self.path("carpd.sock"),
            devd: ClientConfig {
                socket: self.path("devd.pipe"),
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(5),
                    max: Duration::from_millis(50),
                    stable_after: Duration::from_secs(60),
                },
            },
            ovh_client: carpd::ovh::ClientOptions::default(),
        }
    }

    /// Starts a daemon and waits until it has read the kernel and connected to devd.
    pub async fn start(&mut self) {
        let k = SimKernel::open(Flavour::FreeBsd14, Some(self.path("kernel.json"))).unwrap();
        let (tx, notes) = mpsc::unbounded_channel();
        let mut settings = self.settings();
        if let Some(tweak) = self.tweak {
            tweak(&mut settings);
        }
        let daemon = Daemon::start(settings, Box::new(k))
            .expect("daemon starts")
            .with_notes(tx);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon.run(async move {
            let _ = stopped.await;
        }));
        self.daemon = Some(Running {
            notes,
            stop: Some(stop),
            task,
        });
        self.reconciled("the start-up read", |w, _| {
            w == &Work::Full(Trigger::Startup)
        })
        .await;
        within(
            "the daemon connecting to the fake devd",
            self.devd.wait_for_clients(1),
        )
        .await
        .unwrap();
        // devd's connect triggers a resync read; let it pass so tests start from quiet.
        self.reconciled("the resync after connecting to devd", |w, _| {
            w == &Work::Full(Trigger::Resync)
        })
        .await;
    }

    pub async fn stop(&mut self) {
        let mut d = self.daemon.take().expect("running");
        let _ = d.stop.take().unwrap().send(());
        within("the daemon shutting down", d.task).await.unwrap();
    }

    pub fn notes(&mut self) -> &mut mpsc::UnboundedReceiver<Note> {
        &mut self.daemon.as_mut().expect("running").notes
    }

    /// Waits for the next reconcile matching `want`, skipping others; returns its outcome.
    pub async fn reconciled(
        &mut self,
        what: &str,
        mut want: impl FnMut(&Work, &carpd::controller::Outcome) -> bool,
    ) -> (Work, carpd::controller::Outcome, Instant) {
        let notes = self.notes();
        within(what, async {
            loop {
                match notes.recv().await.expect("daemon running") {
                    Note::Reconciled { work, outcome, at } if want(&work, &outcome) => {
                        return (work, outcome, at);
                    }
                    _ => {}
                }
            }
        })
        .await
    }

    /// The network moves `group` to `state` (no event by itself).
    pub fn network(&self, group: &str, state: CarpState) {
        let g: GroupId = group.parse().unwrap();
        self.kernel.set_state(&g.ifname, g.vhid, state).unwrap();
    }

    pub async fn event(&mut self, group: &str, state: CarpState) {
        let ev = CarpEvent::new(group.parse().unwrap(), state);
        self.devd.send_event(&ev).await.unwrap();
    }

    pub async fn request(&self, req: Request) -> Reply {
        let path = self.path("carpd.sock");
        tokio::task::spawn_blocking(move || control::request(&path, &req, LIMIT))
            .await
            .unwrap()
            .expect("control request")
    }

    pub async fn status(&self) -> DaemonView {
        match self.request(Request::Status).await {
            Reply::Status { daemon } => *daemon,
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

pub async fn within<T>(fault: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {LIMIT:?} waiting for {fault}"),
    }
}
