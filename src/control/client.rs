//! The CLI's end of the control socket: one request, one reply, a hard deadline.
//!
//! Blocking std I/O on purpose: `carpd hook` must be in and out in milliseconds, and starting
//! an async runtime for one round trip would cost more than the round trip.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::protocol::{self, ProtocolError, Reply, Request};

/// Where `carpd run` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/carpd.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens: no daemon (or a stale socket file).
    #[error("no carpd daemon is running (nothing answers on {path})")]
    NotRunning { path: PathBuf },
    #[error("control socket {path}: permission denied; the control socket is for root")]
    PermissionDenied { path: PathBuf },
    #[error(
        "control socket {path}: no reply within {timeout:?}; the daemon may be stuck (see its log)"
    )]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Protocol {
        path: PathBuf,
        source: ProtocolError,
    },
}

/// Sends `req` and waits for its reply, all within `timeout`.
pub fn request(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let deadline = Instant::now() + timeout;
    let at = |e: io::Error| classify(path, e, timeout);
    let stream = UnixStream::connect(path).map_err(at)?;
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left(deadline))).map_err(at)?;
    // A daemon that refuses us (not root, busy) replies and closes, possibly before our
    // request is written: a failed write still leaves its reply to read.
    let written = (&stream).write_all(&protocol::encode_request(req));
    stream.set_read_timeout(Some(left(deadline))).map_err(at)?;
    let mut reader = BufReader::new((&stream).take(protocol::MAX_RESPONSE as u64 + 1));
    let mut line = Vec::new();
    // A slow daemon may deliver the line in pieces: keep reading until the newline, the
    // size limit or the deadline.
    loop {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with(b"\n") => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(at(written.err().unwrap_or(e))),
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout {
                path: path.to_path_buf(),
                timeout,
            });
        }
        stream.set_read_timeout(Some(left(deadline))).map_err(at)?;
    }
    if line.is_empty() {
        written.map_err(at)?;
        return Err(ClientError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without replying",
            ),
        });
    }
    protocol::decode_reply(&line).map_err(|source| ClientError::Protocol {
        path: path.to_path_buf(),
        source,
    })
}

fn classify(path: &Path, e: io::Error, timeout: Duration) -> ClientError {
    let path = path.to_path_buf();
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { path }
        }
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path },
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            ClientError::Timeout { path, timeout }
        }
        _ => ClientError::Io { path, source: e },
    }
}
