//! The rules of one request/response exchange, as a pure function over received datagrams:
//! which messages belong to the request, what ends it, what is an error.
//!
//! Kept apart from the socket so that the rules are tested on hand-written bytes, and fuzzed,
//! without a kernel. The transport ([`super::socket`]) only feeds datagrams in until
//! [`Progress::Finished`].
//!
//! The rules, valid for both kernels:
//! - Messages whose sequence number is not the request's are stale answers to an earlier,
//!   abandoned exchange (a timeout, an error in the middle of a dump): skipped. This is what
//!   lets one socket be reused after any failure.
//! - `NLMSG_ERROR` ends the exchange: an acknowledgement when its code is 0, else the errno
//!   (negative on Linux, positive on FreeBSD).
//! - `NLMSG_DONE` ends the exchange too, with the errno it carries. FreeBSD reports a dump's
//!   error there and sends no `NLMSG_ERROR` after it (carp's GET answers ENOENT this way for
//!   an interface without CARP); it may also end a non-dump request this way.
//! - Family messages are handed to the caller, in order.

use crate::kernel::KernelError;

use super::codec::{NLM_F_DUMP_INTR, NlMsg, Payload, errno_of, messages};

/// Whether an exchange needs more datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    More,
    Finished,
}

/// A kernel errno as a [`KernelError`], with the kernel's own explanation when it sent one.
pub fn kernel_error(op: &str, errno: i32, message: Option<&str>) -> KernelError {
    let e = KernelError::errno(op, errno);
    match message {
        Some(m) => {
            let detail = format!("{} (the kernel says: {m})", e.detail);
            e.detail(detail)
        }
        None => e,
    }
}

/// Processes one received datagram of the exchange with sequence number `seq`.
/// `on_data` sees every family message of the exchange; its error ends the exchange.
pub fn handle_datagram(
    op: &str,
    datagram: &[u8],
    seq: u32,
    on_data: &mut dyn FnMut(&NlMsg<'_>) -> Result<(), KernelError>,
) -> Result<Progress, KernelError> {
    for msg in messages(datagram) {
        let msg = msg.map_err(|e| malformed(op, e))?;
        if msg.header.seq != seq {
            tracing::debug!(
                op,
                seq = msg.header.seq,
                expected = seq,
                ty = msg.header.ty,
                "skipping a stale netlink message"
            );
            continue;
        }
        match msg.classify().map_err(|e| malformed(op, e))? {
            Payload::Noop => {}
            Payload::Reserved(ty) => {
                tracing::debug!(op, ty, "skipping a reserved netlink control message");
            }
            Payload::Overrun => {
                return Err(KernelError::new(
                    op,
                    "the kernel reported lost netlink messages (NLMSG_OVERRUN)",
                ));
            }
            Payload::Error(e) if e.error == 0 => return Ok(Progress::Finished),
            Payload::Error(e) => {
                return Err(kernel_error(op, e.errno(), e.message.as_deref()));
            }
            Payload::Done { error: 0 } => return Ok(Progress::Finished),
            Payload::Done { error } => return Err(kernel_error(op, errno_of(error), None)),
            Payload::Data(_) => {
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    return Err(KernelError::new(
                        op,
                        "the kernel's table changed during the dump (NLM_F_DUMP_INTR)",
                    )
                    .hint("transient: read again"));
                }
                on_data(&msg)?;
            }
        }
    }
    Ok(Progress::More)
}

fn malformed(op: &str, e: impl std::fmt::Display) -> KernelError {
    KernelError::new(op, format!("malformed netlink reply: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::codec::{
        NLM_F_CAPPED, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NlHeader,
    };

    fn msg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = NlHeader {
            len: (16 + payload.len()) as u32,
            ty,
            flags,
            seq,
            pid: 0,
        }
        .encode()
        .to_vec();
        b.extend_from_slice(payload);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn ack(seq: u32, error: i32) -> Vec<u8> {
        let mut p = error.to_ne_bytes().to_vec();
        p.extend(
            NlHeader {
                len: 16,
                ty: 0x20,
                flags: 5,
                seq,
                pid: 0,
            }
            .encode(),
        );
        msg(NLMSG_ERROR, NLM_F_CAPPED, seq, &p)
    }

    fn run(datagrams: &[Vec<u8>], seq: u32) -> (Result<Progress, KernelError>, Vec<Vec<u8>>) {
        let mut seen = Vec::new();
        let mut last = Ok(Progress::More);
        for d in datagrams {
            last = handle_datagram("TEST", d, seq, &mut |m| {
                seen.push(m.payload.to_vec());
                Ok(())
            });
            if last != Ok(Progress::More) {
                break;
            }
        }
        (last, seen)
    }

    #[test]
    fn ack_finishes_and_data_before_it_is_delivered() {
        let mut d = msg(0x20, 0, 9, &[1, 0, 0, 0]);
        d.extend(ack(9, 0));
        let (r, seen) = run(&[d], 9);
        assert_eq!(r, Ok(Progress::Finished));
        assert_eq!(seen, vec![vec![1, 0, 0, 0]]);
    }

    #[test]
    fn dump_spans_datagrams_until_done() {
        let d1 = msg(0x20, NLM_F_MULTI, 4, &[1, 0, 0, 0]);
        let mut d2 = msg(NLMSG_NOOP, 0, 4, &[]);
        d2.extend(msg(0x20, NLM_F_MULTI, 4, &[2, 0, 0, 0]));
        d2.extend(msg(NLMSG_DONE, NLM_F_MULTI, 4, &0i32.to_ne_bytes()));
        let (r, seen) = run(std::slice::from_ref(&d1), 4);
        assert_eq!((r, seen.len()), (Ok(Progress::More), 1));
        let (r, seen) = run(&[d1, d2], 4);
        assert_eq!(r, Ok(Progress::Finished));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn stale_sequence_numbers_are_skipped() {
        let mut d = msg(0x20, 0, 3, &[7, 7, 7, 7]);
        d.extend(ack(3, -libc::EPERM));
        d.extend(ack(4, 0));
        let (r, seen) = run(&[d], 4);
        assert_eq!(r, Ok(Progress::Finished));
        assert!(seen.is_empty());
    }

    #[test]
    fn errors_of_either_sign_become_kernel_errors() {
        for code in [-libc::EPERM, libc::EPERM] {
            let (r, _) = run(&[ack(1, code)], 1);
            let e = r.unwrap_err();
            assert_eq!(e.errno, Some(libc::EPERM));
            assert!(e.to_string().starts_with("TEST: permission denied"), "{e}");
        }
        // FreeBSD: the dump's error inside NLMSG_DONE, positive.
        let d = msg(NLMSG_DONE, 0, 1, &libc::ENOENT.to_ne_bytes());
        assert_eq!(run(&[d], 1).0.unwrap_err().errno, Some(libc::ENOENT));
        // Linux: negative.
        let d = msg(NLMSG_DONE, 0, 1, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(run(&[d], 1).0.unwrap_err().errno, Some(libc::ENOENT));
    }

    #[test]
    fn overrun_interrupted_dump_and_garbage_are_errors() {
        let e = run(&[msg(NLMSG_OVERRUN, 0, 1, &[])], 1).0.unwrap_err();
        assert!(e.detail.contains("NLMSG_OVERRUN"), "{e}");
        let e = run(&[msg(0x20, NLM_F_DUMP_INTR, 1, &[])], 1).0.unwrap_err();
        assert!(e.detail.contains("NLM_F_DUMP_INTR"), "{e}");
        let e = run(&[vec![0xff; 10]], 1).0.unwrap_err();
        assert!(
            e.to_string().starts_with("TEST: malformed netlink reply"),
            "{e}"
        );
    }

    #[test]
    fn callback_errors_stop_the_exchange() {
        let mut d = msg(0x20, 0, 1, &[]);
        d.extend(ack(1, 0));
        let r = handle_datagram("TEST", &d, 1, &mut |_| Err(KernelError::new("TEST", "bad")));
        assert_eq!(r.unwrap_err().detail, "bad");
    }

    #[test]
    fn extended_ack_text_reaches_the_detail() {
        let e = kernel_error(
            "SET carp 2@vmx1 (netlink)",
            libc::EINVAL,
            Some("vhid out of range"),
        );
        assert!(
            e.to_string()
                .contains("(the kernel says: vhid out of range)"),
            "{e}"
        );
    }
}
