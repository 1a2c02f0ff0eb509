//! The generic netlink transport: one `AF_NETLINK`/`NETLINK_GENERIC` socket, through libc,
//! carrying one request/response exchange at a time.
//!
//! The `netlink-sys` crate does not build for FreeBSD and the libc crate has no FreeBSD netlink
//! definitions, so the few constants live here, per OS. The socket is never bound: the kernel
//! assigns a port on the first send, and every send goes to the kernel (port 0).
//!
//! Invariants:
//! - One exchange at a time per socket (a `Mutex`), each with a fresh sequence number; replies
//!   with another sequence number are stale and skipped ([`super::exchange`]), so a socket
//!   stays usable after a timeout or an error half-way through a dump.
//! - No call blocks forever: `SO_RCVTIMEO` bounds each receive and a deadline bounds the
//!   exchange, so a misbehaving kernel (or a flood of stale messages) cannot hang carpd.
//! - The receive buffer is zeroized after every exchange (CARP keys come back to root).
//! - Only messages from the kernel (sender port 0) are read.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use libc::c_int;
use zeroize::Zeroize;

use crate::kernel::KernelError;

use super::codec::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlMsg, stamp};
use super::exchange::{Progress, handle_datagram};

/// `AF_NETLINK`: 16 on Linux; 38 on FreeBSD (`sys/socket.h`), where libc lacks it.
#[cfg(target_os = "linux")]
pub const AF_NETLINK: c_int = 16;
#[cfg(target_os = "freebsd")]
pub const AF_NETLINK: c_int = 38;
/// `NETLINK_GENERIC`: 16 on both.
pub const NETLINK_GENERIC: c_int = 16;
/// Socket options of the netlink level (same values on both kernels).
const SOL_NETLINK: c_int = 270;
const NETLINK_CAP_ACK: c_int = 10;
const NETLINK_EXT_ACK: c_int = 11;

/// How long one exchange may take before carpd gives up on the kernel.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive buffer: larger than any reply batch either kernel sends at once (Linux sizes dump
/// batches to at most 32 KiB; FreeBSD never splits a message and fills whole messages).
const RECV_BUFFER: usize = 64 * 1024;

/// A generic netlink socket. `Send + Sync`: exchanges are serialized inside.
#[derive(Debug)]
pub struct GenlSocket {
    inner: Mutex<Inner>,
    timeout: Duration,
}

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    seq: u32,
    buf: Box<[u8]>,
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn os_error_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

impl GenlSocket {
    /// Opens a socket with [`DEFAULT_TIMEOUT`].
    pub fn open() -> Result<GenlSocket, KernelError> {
        GenlSocket::open_with_timeout(DEFAULT_TIMEOUT)
    }

    /// Opens a socket whose exchanges give up after `timeout` (at least 1 ms: a zero
    /// `SO_RCVTIMEO` would mean "wait forever").
    pub fn open_with_timeout(timeout: Duration) -> Result<GenlSocket, KernelError> {
        const OP: &str = "open a generic netlink socket";
        let timeout = timeout.max(Duration::from_millis(1));
        // SAFETY: plain syscall with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if raw < 0 {
            let e = last_errno();
            let err = KernelError::errno(OP, e);
            return Err(match e {
                libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT => err.detail(
                    "this kernel offers no generic netlink sockets (FreeBSD before 14, or netlink not loaded)",
                ),
                _ => err.detail(format!("socket() failed: {}", os_error_text(e))),
            });
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let tv = libc::timeval {
            tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_usec: timeout.subsec_micros().into(),
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv).map_err(|e| {
            KernelError::errno(OP, e).detail(format!(
                "setting the receive timeout failed: {}",
                os_error_text(e)
            ))
        })?;
        // Best effort, both supported by Linux 4.12+ and FreeBSD 14+: echo only the request's
        // header in errors (the request may hold a CARP key), and ask for the kernel's error
        // text. Without them everything still works, errors are just less explicit.
        let _ = setsockopt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, &1 as &c_int);
        let _ = setsockopt(&fd, SOL_NETLINK, NETLINK_EXT_ACK, &1 as &c_int);

        Ok(GenlSocket {
            inner: Mutex::new(Inner {
                fd,
                seq: 0,
                buf: vec![0u8; RECV_BUFFER].into_boxed_slice(),
            }),
            timeout,
        })
    }

    /// Sends a request with `NLM_F_REQUEST | NLM_F_ACK` and waits for its acknowledgement;
    /// `on_reply` sees each family message that comes before it. `op` names the operation in
    /// errors ("SET carp 2@vmx1 (netlink)").
    pub fn request(
        &self,
        op: &str,
        msg: &mut [u8],
        mut on_reply: impl FnMut(&NlMsg<'_>) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        self.exchange(op, msg, NLM_F_REQUEST | NLM_F_ACK, &mut on_reply)
    }

    /// Sends a dump request (`NLM_F_REQUEST | NLM_F_DUMP`) and hands every message of the
    /// multi-part answer to `on_reply`, until `NLMSG_DONE`.
    pub fn dump(
        &self,
        op: &str,
        msg: &mut [u8],
        mut on_reply: impl FnMut(&NlMsg<'_>) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        self.exchange(op, msg, NLM_F_REQUEST | NLM_F_DUMP, &mut on_reply)
    }

    fn exchange(
        &self,
        op: &str,
        msg: &mut [u8],
        flags: u16,
        on_reply: &mut dyn FnMut(&NlMsg<'_>) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        // A panic in another exchange's callback leaves the socket itself intact (stale
        // replies are skipped by sequence number), so a poisoned lock is still usable.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.seq = inner.seq.wrapping_add(1).max(1);
        let seq = inner.seq;
        stamp(msg, seq, flags).map_err(|e| KernelError::new(op, e.to_string()))?;
        let result = inner
            .send(op, msg)
            .and_then(|()| inner.receive(op, seq, self.timeout, on_reply));
        inner.buf.zeroize();
        result
    }
}

impl Inner {
    fn send(&self, op: &str, msg: &[u8]) -> Result<(), KernelError> {
        loop {
            // SAFETY: `msg` is a valid buffer of `msg.len()` bytes for the whole call.
            let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
            if n < 0 {
                let e = last_errno();
                if e == libc::EINTR {
                    continue;
                }
                return Err(KernelError::errno(op, e).detail(format!(
                    "sending the request to the kernel failed: {}",
                    os_error_text(e)
                )));
            }
            if usize::try_from(n).ok() != Some(msg.len()) {
                return Err(KernelError::new(
                    op,
                    format!("the kernel took {n} of the request's {} bytes", msg.len()),
                ));
            }
            return Ok(());
        }
    }

    fn receive(
        &mut self,
        op: &str,
        seq: u32,
        timeout: Duration,
        on_reply: &mut dyn FnMut(&NlMsg<'_>) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        let deadline = Instant::now() + timeout;
        loop {
            if Instant::now() >= deadline {
                return Err(timed_out(op, timeout));
            }
            let n = self.recv_from_kernel(op, timeout)?;
            let datagram = self.buf.get(..n).unwrap_or(&[]);
            if handle_datagram(op, datagram, seq, on_reply)? == Progress::Finished {
                return Ok(());
            }
        }
    }

    /// Receives one batch of messages sent by the kernel; returns its length in `buf`.
    fn recv_from_kernel(&mut self, op: &str, timeout: Duration) -> Result<usize, KernelError> {
        loop {
            // SAFETY: all-zero is a valid sockaddr_storage, iovec and msghdr.
            let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            let mut mh: libc::msghdr = unsafe { mem::zeroed() };
            mh.msg_name = (&raw mut addr).cast();
            mh.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            mh.msg_iov = &raw mut iov;
            mh.msg_iovlen = 1;
            // SAFETY: `mh` points at `addr` and `iov`, which point at live buffers of the
            // sizes given; all outlive the call.
            let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut mh, 0) };
            if n < 0 {
                let e = last_errno();
                if e == libc::EINTR {
                    continue;
                }
                // SO_RCVTIMEO expired (EWOULDBLOCK is EAGAIN on both kernels, but say both).
                if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                    return Err(timed_out(op, timeout));
                }
                return Err(KernelError::errno(op, e).detail(format!(
                    "receiving the kernel's answer failed: {}",
                    os_error_text(e)
                )));
            }
            let n = usize::try_from(n).unwrap_or(0);
            if mh.msg_flags & libc::MSG_TRUNC != 0 {
                return Err(KernelError::new(
                    op,
                    format!(
                        "the kernel's answer did not fit in {} bytes and was truncated",
                        self.buf.len()
                    ),
                ));
            }
            // sockaddr_nl has nl_pid at offset 4 on both kernels (Linux: u16 family, u16 pad;
            // FreeBSD: u8 len, u8 family, u16 pad). Another process could only reach this
            // port with privileges, but its messages are still not the kernel's answer.
            if mh.msg_namelen >= 8 {
                // SAFETY: `addr` is a plain byte-initialized struct of this size.
                let bytes = unsafe {
                    std::slice::from_raw_parts(
                        (&raw const addr).cast::<u8>(),
                        mem::size_of::<libc::sockaddr_storage>(),
                    )
                };
                let pid = super::codec::read_u32(bytes, 4).unwrap_or(0);
                if pid != 0 {
                    tracing::debug!(op, pid, "ignoring a netlink message not sent by the kernel");
                    continue;
                }
            }
            return Ok(n.min(self.buf.len()));
        }
    }
}

fn timed_out(op: &str, timeout: Duration) -> KernelError {
    KernelError::new(
        op,
        format!(
            "the kernel did not answer within {} ms",
            timeout.as_millis()
        ),
    )
    .hint("retry; if it persists, the kernel's netlink handler is stuck (check dmesg)")
}

fn setsockopt<T>(fd: &OwnedFd, level: c_int, name: c_int, value: &T) -> Result<(), i32> {
    // SAFETY: `value` is a valid T for the duration of the call and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GenlSocket>();
    }

    /// Against the running Linux kernel (no root, no network): the transport's recovery and
    /// error paths, which the pure `exchange` tests cannot reach.
    #[cfg(target_os = "linux")]
    mod linux_kernel {
        use super::*;
        use crate::kernel::netlink::builder::MsgBuilder;
        use crate::kernel::netlink::ctrl::{
            CTRL_ATTR_FAMILY_NAME, CTRL_CMD_GETFAMILY, GENL_ID_CTRL, build_get_family,
        };

        #[test]
        fn a_stale_answer_from_an_abandoned_exchange_is_skipped() {
            let s = GenlSocket::open().unwrap();
            {
                // An exchange abandoned after sending: its answer stays queued on the socket.
                // It asks for a family that does not exist, so its answer (ENOENT) differs
                // from the next exchange's: taken for that one's, it fails the resolve.
                let inner = s.inner.lock().unwrap();
                let mut msg = build_get_family("no-such-family").unwrap();
                stamp(&mut msg, 1000, NLM_F_REQUEST | NLM_F_ACK).unwrap();
                inner.send("TEST", &msg).unwrap();
            }
            assert_eq!(s.resolve_family("nlctrl").unwrap(), GENL_ID_CTRL);
            assert_eq!(s.resolve_family("nlctrl").unwrap(), GENL_ID_CTRL);
        }

        #[test]
        fn silence_times_out_instead_of_hanging() {
            let timeout = Duration::from_millis(50);
            let s = GenlSocket::open_with_timeout(timeout).unwrap();
            let mut inner = s.inner.lock().unwrap();
            let start = Instant::now();
            let e = inner
                .receive("TEST", 1, timeout, &mut |_| Ok(()))
                .unwrap_err();
            let took = start.elapsed();
            assert!(e.detail.contains("did not answer within 50 ms"), "{e}");
            assert!(
                took >= Duration::from_millis(40) && took < Duration::from_secs(2),
                "{took:?}"
            );
        }

        /// A datagram larger than the receive buffer is an error saying so, never a cut
        /// message parsed as an answer: a 64-byte buffer cannot hold nlctrl's description
        /// (hundreds of bytes), so the kernel sets MSG_TRUNC. Without the check this fails
        /// as a "malformed netlink reply" instead.
        #[test]
        fn an_answer_larger_than_the_buffer_is_reported_as_truncated() {
            let s = GenlSocket::open().unwrap();
            s.inner.lock().unwrap().buf = vec![0u8; 64].into_boxed_slice();
            let e = s.resolve_family("nlctrl").unwrap_err();
            assert!(
                e.detail
                    .contains("did not fit in 64 bytes and was truncated"),
                "{e}"
            );
            // With the real buffer, the dump of every family reads to its end.
            let s = GenlSocket::open().unwrap();
            let all = s.families().unwrap();
            assert!(all.iter().any(|f| f.id == GENL_ID_CTRL), "{all:?}");
        }

        #[test]
        fn the_kernels_extended_ack_text_reaches_the_error() {
            // Linux limits family names to 15 bytes by policy: a longer one is refused with
            // EINVAL and an explanation (which `build_get_family` would have prevented).
            let mut m = MsgBuilder::genl(
                GENL_ID_CTRL,
                NLM_F_REQUEST | NLM_F_ACK,
                CTRL_CMD_GETFAMILY,
                2,
            );
            m.put_cstr(CTRL_ATTR_FAMILY_NAME, "a-name-longer-than-15-bytes");
            let mut msg = m.finish().unwrap();
            let s = GenlSocket::open().unwrap();
            let e = s.request("TEST", &mut msg, |_| Ok(())).unwrap_err();
            assert_eq!(e.errno, Some(libc::EINVAL), "{e}");
            assert!(e.detail.contains("(the kernel says: "), "{e}");
            // The socket is still in step afterwards.
            assert_eq!(s.resolve_family("nlctrl").unwrap(), GENL_ID_CTRL);
        }
    }
}
