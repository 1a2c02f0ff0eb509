//! The daemon's end of the control socket: accept, check the peer, read request lines, hand
//! them to the controller loop, write the replies.
//!
//! Rules:
//! - The socket is created 0600 and the peer's uid is checked on every connection (root, or
//!   the daemon's own uid for unprivileged test runs); others get one error reply and are
//!   closed. The mode alone would do on FreeBSD; the check is the defence if someone loosens
//!   the mode or the directory.
//! - Bounded everything: [`MAX_CLIENTS`] connections at once (more are told "busy" at once,
//!   in the accept loop, without a task per refusal: a flood costs no memory), request
//!   lines up to [`protocol::MAX_REQUEST`], an idle client is closed after [`IDLE_TIMEOUT`],
//!   a client that does not read its reply is dropped after [`WRITE_TIMEOUT`]. A stuck client
//!   can never block the controller: the loop only ever sees complete requests.
//! - A stale socket file from a crashed daemon is replaced; a live one (another daemon
//!   answers) is an error.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::protocol::{self, Reply, Request};

/// Connections served at once.
pub const MAX_CLIENTS: usize = 16;
/// A connected client that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply that cannot be written within this time is abandoned with its connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One complete request for the controller loop, and where its reply goes.
#[derive(Debug)]
pub struct Incoming {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "control socket {path}: another carpd is already running and answering there; stop it first (service carpd stop), or give this one another --control-socket"
    )]
    InUse { path: PathBuf },
    #[error(
        "control socket {path}: the path exists and is not a socket; remove it or choose another --control-socket"
    )]
    NotSocket { path: PathBuf },
    #[error("control socket {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
}

/// A bound control socket. Dropping it removes the socket file (if it is still ours).
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket we created, so we never remove a successor's.
    identity: (u64, u64),
    /// The socket's owner, i.e. this process's effective uid.
    own_uid: u32,
}

impl ControlServer {
    /// Binds `path` with mode 0600. Must be called inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<ControlServer, BindError> {
        let io_err = |op, source| BindError::Io {
            path: path.to_path_buf(),
            op,
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(BindError::NotSocket {
                    path: path.to_path_buf(),
                });
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(BindError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                // Nobody answers: a crashed daemon's leftover.
                Err(_) => {
                    std::fs::remove_file(path).map_err(|e| io_err("remove the stale socket", e))?
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("stat", e)),
        }
        let listener = UnixListener::bind(path).map_err(|e| io_err("bind", e))?;
        // connect(2) needs write permission on the socket: 0600 keeps everyone but the
        // owner out. The window between bind and chmod only allows the umask's mode, which
        // for daemons is 022 (no write for others).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("chmod 0600", e))?;
        let meta = std::fs::metadata(path).map_err(|e| io_err("stat", e))?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            own_uid: meta.uid(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections until `tx`'s receiver is dropped. Run it as a task; abort it (or
    /// drop the future) to stop.
    pub async fn serve(&self, tx: mpsc::Sender<Incoming>) {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let own_uid = self.own_uid;
        // The connections' tasks: owned here, so dropping this future (the daemon stops)
        // ends them all; finished ones are reaped as the loop goes.
        let mut clients = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                Some(_) = clients.join_next(), if !clients.is_empty() => continue,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => {
                    clients.spawn(async move {
                        serve_client(stream, tx, own_uid).await;
                        drop(permit);
                    });
                }
                Err(_) => refuse_now(
                    stream,
                    &format!(
                        "the daemon is busy ({MAX_CLIENTS} control connections open); try again"
                    ),
                ),
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a peer with `uid` may use the socket of a daemon running as `own_uid`.
pub fn authorized(uid: u32, own_uid: u32) -> bool {
    uid == 0 || uid == own_uid
}

/// How long a refused client gets to finish sending its request before the reply.
const REFUSE_READ: Duration = Duration::from_secs(1);

/// Replies with an error and closes. The client's request is read first (bounded in size and
/// time): closing with unread data would make the client's write fail with EPIPE, or the
/// close reset the connection, and the client would never see why it was refused.
async fn refuse(mut stream: UnixStream, message: String) {
    let mut sink = Vec::new();
    let read = async {
        let mut r = BufReader::new((&mut stream).take(protocol::MAX_REQUEST as u64 + 1));
        r.read_until(b'\n', &mut sink).await
    };
    let _ = tokio::time::timeout(REFUSE_READ, read).await;
    let line = protocol::encode_reply(&Reply::Error { message });
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&line)).await;
}

/// Refuses a connection past [`MAX_CLIENTS`] at once, in the accept loop: no task, no
/// wait, so a flood of connections costs one accept and one close each. What the client
/// already sent is drained (closing a unix socket with unread data resets the peer, which
/// would then miss the reply), the reply is written if the socket buffer takes it, and the
/// connection is closed. A client that had not sent its request yet still finds the reply
/// to read (the CLI reads after a failed write).
fn refuse_now(stream: UnixStream, message: &str) {
    let mut sink = [0u8; 4096];
    for _ in 0..(protocol::MAX_REQUEST / sink.len() + 1) {
        match stream.try_read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let line = protocol::encode_reply(&Reply::Error {
        message: message.to_string(),
    });
    let _ = stream.try_write(&line);
}

async fn serve_client(stream: UnixStream, tx: mpsc::Sender<Incoming>, own_uid: u32) {
    match stream.peer_cred() {
        Ok(cred) if authorized(cred.uid(), own_uid) => {}
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                pid = cred.pid().unwrap_or(0),
                "control socket: refused a client that is not root"
            );
            return refuse(
                stream,
                format!(
                    "permission denied: uid {} may not use the carpd control socket; run as root",
                    cred.uid()
                ),
            )
            .await;
        }
        Err(e) => {
            return refuse(stream, format!("cannot check your credentials: {e}")).await;
        }
    }
    let (read, mut write) = stream.into_split();
    // Take at most one byte past the limit so an oversized line is detected, not buffered.
    let mut reader = BufReader::new(read.take(u64::MAX));
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.get_mut().set_limit(protocol::MAX_REQUEST as u64 + 1);
        let n = match tokio::time::timeout(IDLE_TIMEOUT, reader.read_until(b'\n', &mut line)).await
        {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let reply = if line.len() > protocol::MAX_REQUEST {
            let r = Reply::Error {
                message: format!("request longer than {} bytes", protocol::MAX_REQUEST),
            };
            let _ =
                tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&protocol::encode_reply(&r)))
                    .await;
            return;
        } else {
            match protocol::decode_request(&line) {
                Ok(request) => {
                    let (reply_tx, reply_rx) = oneshot::channel();
                    if tx
                        .send(Incoming {
                            request,
                            reply: reply_tx,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    reply_rx.await.unwrap_or(Reply::Error {
                        message: "the daemon is shutting down".into(),
                    })
                }
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            }
        };
        let out = protocol::encode_reply(&reply);
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
