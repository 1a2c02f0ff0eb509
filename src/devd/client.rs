//! The devd client: reads devd's `SOCK_SEQPACKET` socket, turns CARP records into
//! [`DevdMessage`]s on a tokio channel, reconnects with backoff and asks for a resync after
//! every (re)connect.
//!
//! Why not the devd-rs crate: 0.3.6 is synchronous (a blocking read, so a thread beside the
//! current-thread runtime), has no reconnect, returns empty reads forever once devd closes the
//! connection (a caller must detect that spin itself), and hands back its own parse of the
//! line. Wrapping it would leave us writing the reconnect, the EOF detection, the counters and
//! the strict CARP parse anyway; what it would save is a socket() and a connect(). This client
//! is those two calls plus `recvmsg` (in `sys`) under tokio's `AsyncFd`, on the runtime the
//! rest of the daemon uses, with no new dependency.
//!
//! Behaviour:
//! - One record per `recvmsg` into a bounded buffer ([`RECORD_BUFFER`], devd's own maximum);
//!   longer records are counted as truncated and skipped (SEQPACKET discards their tail).
//! - Reads promptly, whatever the consumer does: devd disconnects a client as soon as one
//!   send to it fails, and events are lost then. Its room is smaller than devd's 256 KiB
//!   SO_SNDBUF (CLIENT_BUFSIZE) suggests: that setting also caps the socket's mbufs at
//!   2 MiB (kern.ipc.sockbuf_waste_factor 8), and by devd's own account a short record can
//!   occupy a 4.5 KiB mbuf, so a few hundred unread records (not thousands of 45-byte CARP
//!   lines) can be enough. So the socket is never left unread because the
//!   channel is full: an event that does not fit is dropped, counted, and a
//!   [`DevdMessage::Lagged`] notice is delivered as soon as there is room. Dropping is safe
//!   because events are hints: the consumer re-reads the kernel on `Lagged`. Before it comes
//!   to that, a channel more than half full makes the client yield after each event, so a
//!   consumer that is only waiting for its turn on the runtime catches up without loss.
//! - EOF or a socket error is a disconnect: [`DevdMessage::Disconnected`], then reconnect
//!   after the delay [`Backoff`] gives; every successful connect sends
//!   [`DevdMessage::Connected`], which means "re-read the kernel": events were missed while
//!   disconnected, and the kernel sends none for groups created or destroyed meanwhile.
//! - Garbage and other systems' records are counted ([`DevdStats`]) and ignored, never fatal.
//!
//! Must not: block the runtime, panic on anything devd sends, or decide anything about CARP
//! state (that is the controller's job, from kernel reads).
//!
//! Invariants: for each connection the consumer sees `Connected` before any `Event` of that
//! connection, events in the order devd sent them, and `Disconnected` last; `Lagged` comes
//! before any event received after the drops it reports.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;

use super::backoff::{Backoff, BackoffPolicy};
use super::event::{CarpEvent, Record, parse_record};
use super::sys;

/// devd's record socket.
pub const DEFAULT_SOCKET: &str = "/var/run/devd.seqpacket.pipe";

/// Receive buffer: devd reads kernel events into an 8 KiB buffer (DEVCTL_MAXBUF) and
/// republishes them unchanged, so no devd record is longer. A CARP record is under 64 bytes.
pub const RECORD_BUFFER: usize = 8192;

/// A sensible capacity for the channel handed to [`DevdClient::run`]: room for a burst of
/// events between two turns of the consumer. Past it, events are dropped and `Lagged` sent.
pub const CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// devd's SEQPACKET socket ([`DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    pub backoff: BackoffPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            backoff: BackoffPolicy::default(),
        }
    }
}

/// What the client tells its consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DevdMessage {
    /// Connected to devd (the first time, or again): re-read the kernel. `connection`
    /// counts connections since the client started, from 1.
    Connected { connection: u64 },
    /// A CARP state change, as devd published it. A hint to look, not the truth.
    Event(CarpEvent),
    /// The consumer fell behind and `dropped` events were discarded: re-read the kernel.
    Lagged { dropped: u64 },
    /// The connection ended; the client reconnects by itself.
    Disconnected {
        connection: u64,
        reason: DisconnectReason,
    },
}

impl DevdMessage {
    /// True when events may have been missed, so the kernel must be read again.
    pub fn requires_resync(&self) -> bool {
        matches!(
            self,
            DevdMessage::Connected { .. } | DevdMessage::Lagged { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// devd closed the connection: it stopped or restarted, or it dropped this client as
    /// unresponsive.
    Closed,
    /// Reading the socket failed.
    Error(String),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::Closed => f.write_str(
                "devd closed the connection (devd stopped or restarted, or dropped carpd as unresponsive)",
            ),
            DisconnectReason::Error(e) => write!(f, "reading the devd socket failed: {e}"),
        }
    }
}

/// Why [`DevdClient::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future completed.
    Shutdown,
    /// The receiving end of the channel was dropped: nobody listens any more.
    ReceiverDropped,
}

/// Counters and last errors, shared with whoever reports status. Updated with relaxed
/// atomics: each counter is exact, a [`DevdStats::snapshot`] is not one instant.
#[derive(Debug, Default)]
pub struct DevdStats {
    connected: AtomicBool,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    records: AtomicU64,
    carp_events: AtomicU64,
    other_system: AtomicU64,
    garbage: AtomicU64,
    truncated: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_garbage: Mutex<Option<String>>,
}

/// A copy of [`DevdStats`] for status output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevdStatsSnapshot {
    /// Connected to devd right now.
    pub connected: bool,
    /// Successful connects since start.
    pub connects: u64,
    /// Failed connection attempts since start.
    pub connect_failures: u64,
    /// Connections lost since start.
    pub disconnects: u64,
    /// Records received, of every kind.
    pub records: u64,
    /// Well-formed CARP events.
    pub carp_events: u64,
    /// Records of other systems and kinds, ignored.
    pub other_system: u64,
    /// Records that are not what devd publishes, or malformed CARP records, ignored.
    pub garbage: u64,
    /// Records longer than [`RECORD_BUFFER`], skipped.
    pub truncated: u64,
    /// CARP events dropped because the consumer was behind (each reported by `Lagged`).
    pub dropped: u64,
    /// The last connection or socket error.
    pub last_error: Option<String>,
    /// Why the last garbage record was rejected (with an escaped excerpt of it).
    pub last_garbage: Option<String>,
}

impl DevdStats {
    pub fn snapshot(&self) -> DevdStatsSnapshot {
        DevdStatsSnapshot {
            connected: self.connected.load(Relaxed),
            connects: self.connects.load(Relaxed),
            connect_failures: self.connect_failures.load(Relaxed),
            disconnects: self.disconnects.load(Relaxed),
            records: self.records.load(Relaxed),
            carp_events: self.carp_events.load(Relaxed),
            other_system: self.other_system.load(Relaxed),
            garbage: self.garbage.load(Relaxed),
            truncated: self.truncated.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            last_error: read(&self.last_error),
            last_garbage: read(&self.last_garbage),
        }
    }
}

fn read(slot: &Mutex<Option<String>>) -> Option<String> {
    // A poisoned lock only means a panic elsewhere while holding it; the value is still a
    // complete Option<String>.
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn store(slot: &Mutex<Option<String>>, value: String) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// The devd client. Create it, keep [`DevdClient::stats`] for status, then [`DevdClient::run`].
#[derive(Debug)]
pub struct DevdClient {
    config: ClientConfig,
    stats: Arc<DevdStats>,
}

/// How one connection ended.
enum End {
    Shutdown,
    ReceiverDropped,
    Lost(DisconnectReason),
}

impl DevdClient {
    pub fn new(config: ClientConfig) -> DevdClient {
        DevdClient {
            config,
            stats: Arc::new(DevdStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<DevdStats> {
        Arc::clone(&self.stats)
    }

    /// Connects, reads and reconnects until `shutdown` completes or `tx`'s receiver is
    /// dropped. A connection attempt, a backoff delay or a read never delays shutdown.
    pub async fn run(
        self,
        tx: mpsc::Sender<DevdMessage>,
        shutdown: impl Future<Output = ()>,
    ) -> Stopped {
        let mut shutdown = pin!(shutdown);
        let mut backoff = Backoff::new(self.config.backoff);
        let mut buf = vec![0u8; RECORD_BUFFER];
        let mut connection = 0u64;
        // The first failure of a streak is a warning; repeats would flood syslog while devd
        // is down, so they are debug lines (the counters keep the full story).
        let mut failing = false;
        let socket = self.config.socket.as_path();
        loop {
            let delay = backoff.delay();
            if !delay.is_zero() {
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Stopped::Shutdown,
                    () = tx.closed() => return Stopped::ReceiverDropped,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            let attempt = tokio::select! {
                biased;
                () = shutdown.as_mut() => return Stopped::Shutdown,
                () = tx.closed() => return Stopped::ReceiverDropped,
                attempt = connect(socket) => attempt,
            };
            let fd = match attempt {
                Ok(fd) => fd,
                Err(e) => {
                    backoff.connect_failed();
                    let why = connect_error(socket, &e);
                    bump(&self.stats.connect_failures);
                    if failing {
                        tracing::debug!(failures = backoff.failures(), retry_in = ?backoff.delay(), "{why}");
                    } else {
                        tracing::warn!(retry_in = ?backoff.delay(), "{why}");
                        failing = true;
                    }
                    store(&self.stats.last_error, why);
                    continue;
                }
            };
            failing = false;
            connection += 1;
            bump(&self.stats.connects);
            self.stats.connected.store(true, Relaxed);
            tracing::info!(socket = %socket.display(), connection, "connected to devd");

            let since = Instant::now();
            let mut outbox = Outbox::new(connection);
            let end = self
                .read_connection(&fd, &tx, &mut outbox, shutdown.as_mut(), &mut buf)
                .await;
            drop(fd);
            self.stats.connected.store(false, Relaxed);
            let reason = match end {
                End::Shutdown => return Stopped::Shutdown,
                End::ReceiverDropped => return Stopped::ReceiverDropped,
                End::Lost(reason) => reason,
            };
            let connected_for = since.elapsed();
            backoff.disconnected(connected_for);
            bump(&self.stats.disconnects);
            tracing::warn!(
                socket = %socket.display(),
                connection,
                connected_for = ?connected_for,
                reconnect_in = ?backoff.delay(),
                "devd connection lost: {reason}"
            );
            if let DisconnectReason::Error(e) = &reason {
                store(&self.stats.last_error, format!("{}: {e}", socket.display()));
            }
            // Nothing is read while disconnected, so these may wait for room: the notice the
            // connection still owed (the consumer must not miss a Connected), then the
            // disconnect itself.
            let mut last = outbox.take().into_iter().collect::<Vec<_>>();
            last.push(DevdMessage::Disconnected { connection, reason });
            for message in last {
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => return Stopped::Shutdown,
                    sent = tx.send(message) => if sent.is_err() {
                        return Stopped::ReceiverDropped;
                    },
                }
            }
        }
    }

    /// Reads one connection until it ends. One record per turn of the loop, so a flood yields
    /// to the runtime through tokio's cooperative budget instead of starving the consumer.
    async fn read_connection<S: Future<Output = ()>>(
        &self,
        fd: &AsyncFd<OwnedFd>,
        tx: &mpsc::Sender<DevdMessage>,
        outbox: &mut Outbox,
        mut shutdown: Pin<&mut S>,
        buf: &mut [u8],
    ) -> End {
        let mut garbage_warned = false;
        loop {
            if outbox.flush(tx).is_err() {
                return End::ReceiverDropped;
            }
            let mut ready = tokio::select! {
                biased;
                () = shutdown.as_mut() => return End::Shutdown,
                permit = tx.reserve(), if outbox.is_pending() => match permit {
                    Ok(permit) => {
                        outbox.deliver(permit);
                        continue;
                    }
                    Err(_) => return End::ReceiverDropped,
                },
                () = tx.closed() => return End::ReceiverDropped,
                ready = fd.readable() => match ready {
                    Ok(ready) => ready,
                    Err(e) => return End::Lost(DisconnectReason::Error(e.to_string())),
                },
            };
            let received = match ready.try_io(|fd| sys::recv_record(fd.get_ref().as_fd(), buf)) {
                // The readiness was stale; try_io cleared it, wait again.
                Err(_would_block) => continue,
                Ok(Err(e)) => return End::Lost(DisconnectReason::Error(e.to_string())),
                Ok(Ok(received)) => received,
            };
            if received.len == 0 && !received.truncated {
                return End::Lost(DisconnectReason::Closed);
            }
            bump(&self.stats.records);
            if received.truncated {
                bump(&self.stats.truncated);
                tracing::warn!(
                    buffer = RECORD_BUFFER,
                    "skipped a devd record longer than the receive buffer"
                );
                continue;
            }
            match parse_record(&buf[..received.len]) {
                Record::Carp(event) => {
                    bump(&self.stats.carp_events);
                    tracing::debug!(group = %event.group, state = %event.state, "devd event");
                    match outbox.push(tx, DevdMessage::Event(event)) {
                        Push::Sent => {
                            // The channel is filling: let the consumer run before reading
                            // on. The socket holds the backlog meanwhile (a few hundred
                            // records at least: see the module documentation), and a
                            // consumer that is merely unscheduled is not
                            // mistaken for one that is stuck. A stuck one costs one yield
                            // per record, then drops and a Lagged notice.
                            if tx.capacity() * 2 < tx.max_capacity() {
                                tokio::task::yield_now().await;
                            }
                        }
                        Push::Dropped => bump(&self.stats.dropped),
                        Push::Closed => return End::ReceiverDropped,
                    }
                }
                Record::OtherSystem => bump(&self.stats.other_system),
                Record::Garbage(why) => {
                    bump(&self.stats.garbage);
                    // Once per connection as a warning: a devd sending garbage sends a lot.
                    if garbage_warned {
                        tracing::debug!("ignored a devd record: {why}");
                    } else {
                        tracing::warn!(
                            "ignored a devd record (further ones at debug level): {why}"
                        );
                        garbage_warned = true;
                    }
                    store(&self.stats.last_garbage, why);
                }
            }
        }
    }
}

/// Connects a fresh non-blocking SEQPACKET socket to `path`.
async fn connect(path: &Path) -> io::Result<AsyncFd<OwnedFd>> {
    let fd = sys::seqpacket_socket()?;
    let status = sys::connect(fd.as_fd(), path)?;
    let fd = sys::register(fd)?;
    if status == sys::Connect::InProgress {
        let _ready = fd.writable().await?;
        if let Some(e) = sys::take_error(fd.get_ref().as_fd())? {
            return Err(e);
        }
    }
    Ok(fd)
}

/// A connection failure, with the likely fix.
fn connect_error(socket: &Path, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            "is devd running? (service devd status)"
        }
        io::ErrorKind::PermissionDenied => "devd's socket is mode 0666 normally: check its mode",
        io::ErrorKind::InvalidInput => "fix the devd socket path in the configuration",
        _ => "retrying",
    };
    format!(
        "cannot connect to devd at {}: {e}; {hint}",
        socket.display()
    )
}

/// The notice a connection still owes its consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Connected,
    Lagged(u64),
}

enum Push {
    Sent,
    Dropped,
    Closed,
}

/// Keeps at most one undelivered notice beside the channel, so that the socket is read even
/// while the channel is full, and orders it before any later event.
#[derive(Debug)]
struct Outbox {
    connection: u64,
    pending: Option<Notice>,
}

impl Outbox {
    /// A new connection owes its consumer a `Connected`.
    fn new(connection: u64) -> Outbox {
        Outbox {
            connection,
            pending: Some(Notice::Connected),
        }
    }

    fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn message(&self, notice: Notice) -> DevdMessage {
        match notice {
            Notice::Connected => DevdMessage::Connected {
                connection: self.connection,
            },
            Notice::Lagged(dropped) => DevdMessage::Lagged { dropped },
        }
    }

    /// The pending notice as a message, leaving nothing pending.
    fn take(&mut self) -> Option<DevdMessage> {
        self.pending.take().map(|n| self.message(n))
    }

    /// Hands the pending notice over if there is room now. Err: the receiver is gone.
    fn flush(&mut self, tx: &mpsc::Sender<DevdMessage>) -> Result<(), ()> {
        let Some(notice) = self.pending else {
            return Ok(());
        };
        match tx.try_send(self.message(notice)) {
            Ok(()) => {
                self.pending = None;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(()),
        }
    }

    fn deliver(&mut self, permit: mpsc::Permit<'_, DevdMessage>) {
        if let Some(message) = self.take() {
            permit.send(message);
        }
    }

    /// Sends an event unless that would wait; otherwise drops it and owes a `Lagged`.
    fn push(&mut self, tx: &mpsc::Sender<DevdMessage>, message: DevdMessage) -> Push {
        if self.flush(tx).is_err() {
            return Push::Closed;
        }
        if self.pending.is_some() {
            // The pending notice must come first, so this event cannot overtake it.
            self.note_drop();
            return Push::Dropped;
        }
        match tx.try_send(message) {
            Ok(()) => Push::Sent,
            Err(TrySendError::Full(_)) => {
                self.note_drop();
                Push::Dropped
            }
            Err(TrySendError::Closed(_)) => Push::Closed,
        }
    }

    fn note_drop(&mut self) {
        self.pending = match self.pending {
            None => Some(Notice::Lagged(1)),
            Some(Notice::Lagged(n)) => Some(Notice::Lagged(n.saturating_add(1))),
            // An undelivered Connected already asks for a full resync, which covers these.
            Some(Notice::Connected) => Some(Notice::Connected),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carp::CarpState;

    fn event(vhid: u32) -> DevdMessage {
        DevdMessage::Event(CarpEvent::new(
            format!("{vhid}@vmx1").parse().unwrap(),
            CarpState::Master,
        ))
    }

    fn drain(rx: &mut mpsc::Receiver<DevdMessage>) -> Vec<DevdMessage> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn connected_comes_first_and_lag_is_reported_in_order() {
        let (tx, mut rx) = mpsc::channel(3);
        let mut outbox = Outbox::new(7);
        assert!(matches!(outbox.push(&tx, event(1)), Push::Sent));
        assert!(matches!(outbox.push(&tx, event(2)), Push::Sent));
        // Full: Connected + 2 events.
        assert!(matches!(outbox.push(&tx, event(3)), Push::Dropped));
        assert!(matches!(outbox.push(&tx, event(4)), Push::Dropped));
        assert_eq!(
            drain(&mut rx),
            [DevdMessage::Connected { connection: 7 }, event(1), event(2)]
        );
        // Room again: the notice goes first, then new events.
        assert!(matches!(outbox.push(&tx, event(5)), Push::Sent));
        assert_eq!(
            drain(&mut rx),
            [DevdMessage::Lagged { dropped: 2 }, event(5)]
        );
        assert!(!outbox.is_pending());
    }

    #[test]
    fn drops_before_connected_is_delivered_fold_into_the_resync() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(event(9)).unwrap();
        let mut outbox = Outbox::new(1);
        assert!(matches!(outbox.push(&tx, event(1)), Push::Dropped));
        assert_eq!(outbox.pending, Some(Notice::Connected));
        assert_eq!(drain(&mut rx), [event(9)]);
        outbox.flush(&tx).unwrap();
        assert_eq!(drain(&mut rx), [DevdMessage::Connected { connection: 1 }]);
    }

    #[test]
    fn a_gone_receiver_is_reported() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut outbox = Outbox::new(1);
        assert!(outbox.flush(&tx).is_err());
        assert!(matches!(outbox.push(&tx, event(1)), Push::Closed));
    }

    #[test]
    fn resync_is_required_after_connect_and_lag_only() {
        assert!(DevdMessage::Connected { connection: 1 }.requires_resync());
        assert!(DevdMessage::Lagged { dropped: 1 }.requires_resync());
        assert!(!event(1).requires_resync());
        assert!(
            !DevdMessage::Disconnected {
                connection: 1,
                reason: DisconnectReason::Closed
            }
            .requires_resync()
        );
    }

    #[test]
    fn connect_errors_name_the_socket_and_the_fix() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        let msg = connect_error(Path::new(DEFAULT_SOCKET), &e);
        assert!(msg.contains(DEFAULT_SOCKET), "{msg}");
        assert!(msg.contains("service devd status"), "{msg}");
        // EACCES (a socket another user's mode keeps us from) takes the same retry path as
        // every connect error; it cannot be provoked as root, so its message is checked here.
        let e = io::Error::from_raw_os_error(libc::EACCES);
        let msg = connect_error(Path::new(DEFAULT_SOCKET), &e);
        assert!(msg.contains("check its mode"), "{msg}");
    }
}
