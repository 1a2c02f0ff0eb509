//! The raw socket calls behind the devd client and the fake devd server: a non-blocking
//! `AF_UNIX`/`SOCK_SEQPACKET` socket, connect, bind/listen/accept, one record per receive with
//! truncation reported, one record per send.
//!
//! Why raw calls: neither std nor tokio offers SOCK_SEQPACKET unix sockets, and the only
//! socket crates that do are not dependencies of carpd. This is the only `unsafe` code of the
//! devd module; every block is a single libc call on buffers owned by the caller.
//!
//! Must not: block (every descriptor is created `SOCK_NONBLOCK`, readiness is tokio's job),
//! leak descriptors (every one is an [`OwnedFd`], created `SOCK_CLOEXEC` so that a hook or a
//! child process never inherits the devd connection), or raise SIGPIPE (`MSG_NOSIGNAL`).
//!
//! Compiles for Linux (tests, lab) and FreeBSD (production): the only differences are
//! `sun_len` in `sockaddr_un` and the integer types of `msghdr`, both handled here.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;

/// Registers a socket with the tokio reactor of the current runtime.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd keeps its descriptor open until it is dropped, which happens only
    // when the AsyncFd that owns it is dropped, and its as_raw_fd() never changes.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// A new non-blocking, close-on-exec `AF_UNIX` `SOCK_SEQPACKET` socket.
pub fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; on success we are the only owner of the result.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Builds the socket address for `path`, refusing paths the kernel would truncate or
/// misread (empty, embedded NUL, too long for `sun_path` with its terminating NUL).
fn unix_addr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { mem::zeroed() };
    let capacity = addr.sun_path.len() - 1;
    if bytes.is_empty() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "'{}' cannot be a unix socket path (empty or contains a NUL byte)",
                path.display()
            ),
        ));
    }
    if bytes.len() > capacity {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unix socket path '{}' is {} bytes long: this system allows at most {capacity}; \
                 use a shorter path",
                path.display(),
                bytes.len()
            ),
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    #[cfg(any(
        target_os = "freebsd",
        target_os = "dragonfly",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "macos"
    ))]
    {
        // BSD sockaddrs carry their own length; `len` is at most 106, so it fits.
        addr.sun_len = len as u8;
    }
    Ok((addr, len as libc::socklen_t))
}

/// What a non-blocking connect returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    Done,
    /// The kernel finishes the connection later: wait for writability, then read `SO_ERROR`.
    /// Unix sockets normally connect at once; this covers the cases where they do not.
    InProgress,
}

pub fn connect(fd: BorrowedFd<'_>, path: &Path) -> io::Result<Connect> {
    let (addr, len) = unix_addr(path)?;
    // SAFETY: `addr` lives across the call and `len` does not exceed its size.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == 0 {
        return Ok(Connect::Done);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINPROGRESS) | Some(libc::EINTR) => Ok(Connect::InProgress),
        _ => Err(err),
    }
}

/// The pending error of a socket (`SO_ERROR`), which also clears it.
pub fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and describe each other.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut value).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((value != 0).then(|| io::Error::from_raw_os_error(value)))
}

/// A non-blocking listening SEQPACKET socket bound at `path` (which must not exist).
#[cfg(any(test, feature = "testkit"))]
pub fn bind_listen(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    let fd = seqpacket_socket()?;
    let (addr, len) = unix_addr(path)?;
    // SAFETY: `addr` lives across the call and `len` does not exceed its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) takes no pointers.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Accepts one pending connection as a non-blocking, close-on-exec socket.
#[cfg(any(test, feature = "testkit"))]
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: null address pointers are allowed: we do not want the peer's address.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: `fd` is a fresh descriptor nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// One received record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes stored in the buffer (at most its length).
    pub len: usize,
    /// The record was longer than the buffer; the kernel discarded the rest of it
    /// (SEQPACKET keeps record boundaries, so the next receive starts a new record).
    pub truncated: bool,
}

/// Receives exactly one record. `len == 0` without truncation means the peer closed the
/// connection: devd never sends empty records.
pub fn recv_record(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast::<libc::c_void>(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain old data for which all-zero bytes are a valid value
        // (no name, no control data).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        // size_t on Linux, int on FreeBSD.
        msg.msg_iovlen = 1 as _;
        // SAFETY: `msg` points at one iovec describing `buf`, both alive across the call.
        // recvmsg (not recv) because only recvmsg reports MSG_TRUNC on both Linux and FreeBSD.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
        if n >= 0 {
            return Ok(Received {
                len: n as usize,
                truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends one record; never raises SIGPIPE (a vanished peer is an `EPIPE` error).
#[cfg(any(test, feature = "testkit"))]
pub fn send_record(fd: BorrowedFd<'_>, record: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `record` is valid for reads of its length across the call.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                record.as_ptr().cast::<libc::c_void>(),
                record.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Shuts down the read side, as devd does for its clients: they only receive.
#[cfg(any(test, feature = "testkit"))]
pub fn shutdown_read(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown(2) takes no pointers.
    if unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn addresses_refuse_paths_the_kernel_would_mangle() {
        assert!(unix_addr(Path::new("")).is_err());
        let long = "/tmp/".to_string() + &"x".repeat(200);
        let e = unix_addr(Path::new(&long)).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let (addr, len) = unix_addr(Path::new("/var/run/devd.seqpacket.pipe")).unwrap();
        assert_eq!(
            len as usize,
            mem::offset_of!(libc::sockaddr_un, sun_path) + "/var/run/devd.seqpacket.pipe".len() + 1
        );
        assert_eq!(addr.sun_path[0] as u8, b'/');
    }

    #[test]
    fn records_keep_their_boundaries_and_truncation_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = bind_listen(&path, 4).unwrap();
        let client = seqpacket_socket().unwrap();
        // A unix connect to a listening socket completes at once (it sits in the backlog).
        assert_eq!(connect(client.as_fd(), &path).unwrap(), Connect::Done);
        let server = accept(listener.as_fd()).unwrap();
        assert!(take_error(client.as_fd()).unwrap().is_none());

        assert_eq!(send_record(server.as_fd(), b"first\n").unwrap(), 6);
        assert_eq!(send_record(server.as_fd(), &[b'x'; 100]).unwrap(), 100);
        assert_eq!(send_record(server.as_fd(), b"third").unwrap(), 5);

        let mut buf = [0u8; 16];
        let r = recv_record(client.as_fd(), &mut buf).unwrap();
        assert_eq!((r.len, r.truncated), (6, false));
        assert_eq!(&buf[..6], b"first\n");
        let r = recv_record(client.as_fd(), &mut buf).unwrap();
        assert!(
            r.truncated,
            "a 100-byte record in a 16-byte buffer must be flagged"
        );
        assert_eq!(r.len, 16);
        let r = recv_record(client.as_fd(), &mut buf).unwrap();
        assert_eq!(
            (r.len, r.truncated),
            (5, false),
            "the tail of the long record was discarded"
        );
        assert_eq!(&buf[..5], b"third");

        let e = recv_record(client.as_fd(), &mut buf).unwrap_err();
        assert_eq!(
            e.kind(),
            io::ErrorKind::WouldBlock,
            "the socket must be non-blocking"
        );
        drop(server);
        let r = recv_record(client.as_fd(), &mut buf).unwrap();
        assert_eq!(
            (r.len, r.truncated),
            (0, false),
            "EOF after the server closed"
        );
    }

    #[test]
    fn connecting_to_nothing_fails_with_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let client = seqpacket_socket().unwrap();
        let e = connect(client.as_fd(), &dir.path().join("absent")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
