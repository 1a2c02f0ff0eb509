//! A fake devd: a real `AF_UNIX` `SOCK_SEQPACKET` listening socket at a path of the caller's
//! choosing, sending exact records to its clients the way devd does. For integration tests,
//! the lab and the benchmarks; nothing in the daemon uses it.
//!
//! What it reproduces of devd (sbin/devd/devd.cc): it removes a stale socket file before
//! binding; it shuts down the read side of each client (clients only receive); one record per
//! send, sent unchanged to every connected client; a client that stops reading is dropped;
//! stopping closes every client and the listener. What it does differently, on purpose:
//! - It has no background task. Pending connections are accepted whenever a method runs, so
//!   a client whose connect() returned is served by the next send: no race between "the
//!   client connected" and "the fake noticed", no sleep in tests.
//! - devd drops a client the moment a send to it fails (its 256 KiB SO_SNDBUF, or the 2 MiB
//!   of mbufs that implies, is full). Linux gives a
//!   SEQPACKET socket far less room than FreeBSD does, so that rule would drop clients that
//!   keep up perfectly well on FreeBSD. The fake instead waits up to
//!   [`FakeDevd::set_patience`] for room, then drops the client: "dropped" still means "it
//!   stopped reading", and a flood is delivered without loss to a client that reads.
//!
//! Must not: run outside a tokio runtime (its sockets are registered with the reactor),
//! replace anything but a socket at its path, or leave its socket file behind when dropped.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use carpd::devd::CarpEvent;
use carpd::devd::sys;

/// How long a send waits for a client to make room before dropping it, by default.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(5);

/// Listen backlog: connections waiting to be accepted (devd uses the system default).
const BACKLOG: i32 = 64;

/// A fake devd server. See the module documentation for how it differs from devd.
#[derive(Debug)]
pub struct FakeDevd {
    path: PathBuf,
    listener: Option<AsyncFd<OwnedFd>>,
    clients: Vec<AsyncFd<OwnedFd>>,
    patience: Duration,
    accepted: u64,
    dropped_unresponsive: u64,
    /// The socket file at `path` is ours to remove (created by us, not yet removed).
    owns_file: bool,
}

/// What happened to one client on one send.
enum Delivery {
    Sent,
    /// The client stopped reading for longer than the patience.
    Unresponsive,
    /// The client went away (EPIPE, ECONNRESET, ...).
    Gone,
}

impl FakeDevd {
    /// Starts listening at `path`, replacing a stale socket file there as devd does.
    pub fn bind(path: impl Into<PathBuf>) -> io::Result<FakeDevd> {
        let mut fake = FakeDevd {
            path: path.into(),
            listener: None,
            clients: Vec::new(),
            patience: DEFAULT_PATIENCE,
            accepted: 0,
            dropped_unresponsive: 0,
            owns_file: false,
        };
        fake.listen()?;
        Ok(fake)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long a send waits for a full client before dropping it.
    pub fn set_patience(&mut self, patience: Duration) {
        self.patience = patience;
    }

    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Listens again after [`FakeDevd::stop`] or [`FakeDevd::kill`]: devd (re)started.
    /// Does nothing if already listening.
    pub fn listen(&mut self) -> io::Result<()> {
        if self.listener.is_some() {
            return Ok(());
        }
        // Replace a stale socket as devd does, but never anything else: a wrong path in a
        // test must not delete a file.
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(&self.path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket: refusing to replace it",
                        self.path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fd = sys::bind_listen(&self.path, BACKLOG)?;
        self.owns_file = true;
        self.listener = Some(sys::register(fd)?);
        Ok(())
    }

    /// devd exits cleanly: every client sees EOF, the socket file is removed, new
    /// connections fail with ENOENT until [`FakeDevd::listen`].
    pub fn stop(&mut self) {
        self.close_all();
        self.remove_file();
    }

    fn remove_file(&mut self) {
        if self.owns_file {
            let _ = std::fs::remove_file(&self.path);
            self.owns_file = false;
        }
    }

    /// devd dies: every client sees EOF, but the socket file stays behind, so new
    /// connections fail with ECONNREFUSED until [`FakeDevd::listen`].
    pub fn kill(&mut self) {
        self.close_all();
    }

    /// devd stops and starts again.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.listen()
    }

    fn close_all(&mut self) {
        self.clients.clear();
        // Closing the listener also resets the connections still waiting in its backlog.
        self.listener = None;
    }

    /// Closes every connected client but keeps listening, as when devd drops its clients.
    /// Returns how many were closed.
    pub fn disconnect_clients(&mut self) -> io::Result<usize> {
        self.accept_pending()?;
        let n = self.clients.len();
        self.clients.clear();
        Ok(n)
    }

    /// Accepts every connection waiting in the backlog; returns the number of clients.
    pub fn accept_pending(&mut self) -> io::Result<usize> {
        let Some(listener) = &self.listener else {
            return Ok(self.clients.len());
        };
        loop {
            match sys::accept(listener.get_ref().as_fd()) {
                Ok(fd) => {
                    // devd does the same: clients never write. Failing here only means the
                    // client is already gone; the next send will notice.
                    let _ = sys::shutdown_read(fd.as_fd());
                    self.clients.push(sys::register(fd)?);
                    self.accepted += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The client gave up before being accepted: nothing to serve.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(self.clients.len())
    }

    /// Number of clients, after accepting pending connections.
    pub fn client_count(&mut self) -> io::Result<usize> {
        self.accept_pending()
    }

    /// Connections accepted since the fake was created.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Clients dropped because they stopped reading.
    pub fn dropped_unresponsive(&self) -> u64 {
        self.dropped_unresponsive
    }

    /// Waits until at least `n` clients are connected. Wrap it in a timeout: it waits for
    /// ever if nobody connects, and fails if the fake is not listening.
    pub async fn wait_for_clients(&mut self, n: usize) -> io::Result<()> {
        loop {
            if self.accept_pending()? >= n {
                return Ok(());
            }
            let Some(listener) = &self.listener else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the fake devd is not listening: call listen() first",
                ));
            };
            let mut ready = listener.readable().await?;
            // accept_pending (next turn) consumes the backlog; clear readiness so the next
            // wait sleeps until a new connection arrives.
            ready.clear_ready();
        }
    }

    /// Sends one record, unchanged, to every client (accepting pending ones first). Clients
    /// that are gone or unresponsive are dropped. Returns how many clients received it.
    pub async fn send(&mut self, record: &[u8]) -> io::Result<usize> {
        self.accept_pending()?;
        let mut delivered = 0;
        let mut i = 0;
        while i < self.clients.len() {
            match deliver(&self.clients[i], record, self.patience).await {
                Delivery::Sent => {
                    delivered += 1;
                    i += 1;
                }
                Delivery::Unresponsive => {
                    self.dropped_unresponsive += 1;
                    self.clients.swap_remove(i);
                }
                Delivery::Gone => {
                    self.clients.swap_remove(i);
                }
            }
        }
        Ok(delivered)
    }

    /// Sends the kernel's line for `event`.
    pub async fn send_event(&mut self, event: &CarpEvent) -> io::Result<usize> {
        self.send(event.to_record().as_bytes()).await
    }

    /// Sends records back to back, as fast as the clients take them. Returns how many
    /// records were sent (to however many clients were connected at that moment).
    pub async fn flood<I>(&mut self, records: I) -> io::Result<u64>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut sent = 0;
        for record in records {
            self.send(record.as_ref()).await?;
            sent += 1;
        }
        Ok(sent)
    }
}

impl Drop for FakeDevd {
    /// Removes the socket file, including the stale one [`FakeDevd::kill`] left.
    fn drop(&mut self) {
        self.remove_file();
    }
}

/// Sends one record to one client, waiting at most `patience` for room.
async fn deliver(client: &AsyncFd<OwnedFd>, record: &[u8], patience: Duration) -> Delivery {
    let attempt = async {
        loop {
            let mut ready = client.writable().await?;
            match ready.try_io(|fd| sys::send_record(fd.get_ref().as_fd(), record)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    };
    match tokio::time::timeout(patience, attempt).await {
        // SEQPACKET sends are atomic: a short count would be a kernel bug; treat the client
        // as broken rather than pretend the record went out.
        Ok(Ok(n)) if n == record.len() => Delivery::Sent,
        Ok(Ok(_)) | Ok(Err(_)) => Delivery::Gone,
        Err(_elapsed) => Delivery::Unresponsive,
    }
}
