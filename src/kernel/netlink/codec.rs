//! Netlink message framing: the 16-byte `nlmsghdr`, the 4-byte `genlmsghdr`, the control
//! messages (`NLMSG_ERROR`, `NLMSG_DONE`, ...) and the errors of decoding and encoding.
//!
//! Everything here is pure and works on byte slices: no I/O, no allocation beyond error
//! messages. Decoders take bytes straight from the kernel and must never panic, whatever the
//! bytes are (lengths that lie, zero, huge or truncated): every read goes through a bounds
//! check and every bad input becomes a [`DecodeError`] that says what was wrong.
//!
//! Why hand-written instead of `netlink-packet-core`/`netlink-packet-generic`: carpd needs a
//! dozen fixed-size attributes, one controller request and the error/done/ack rules, about 400
//! lines in all. Those crates change their API between minor versions (builders, buffer types,
//! trait names) and model every Linux family; FreeBSD's native errno sign (positive, see
//! [`ErrorMsg`]) and its `NLMSG_DONE` that carries the dump's error are easier to get right,
//! and to test byte for byte, in code that says exactly what it does.
//!
//! All integers are in host byte order, as netlink defines them, except where an attribute
//! says otherwise (CARP peer addresses are in network order).

use std::fmt;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct genlmsghdr`.
pub const GENL_HDRLEN: usize = 4;

/// Message types below `NLMSG_MIN_TYPE` are netlink's own control messages.
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;
pub const NLMSG_MIN_TYPE: u16 = 0x10;

/// `nlmsg_flags`: the same values on Linux and FreeBSD (`netlink/netlink.h`).
pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_ROOT: u16 = 0x100;
pub const NLM_F_MATCH: u16 = 0x200;
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
/// On an `NLMSG_ERROR`: only the request's header was echoed, not the whole request.
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an `NLMSG_ERROR`: extended-ack attributes follow the echoed request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// Extended-ack attribute carrying a human-readable error message (a C string).
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// Rounds `n` up to netlink's 4-byte alignment. Saturates instead of overflowing: a result of
/// `usize::MAX` is larger than any buffer, which every caller treats as "nothing follows".
pub fn align4(n: usize) -> usize {
    n.checked_add(3).map_or(usize::MAX, |v| v & !3)
}

/// Bytes from the kernel that do not form what they claim to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl DecodeError {
    pub fn new(msg: impl Into<String>) -> DecodeError {
        DecodeError(msg.into())
    }

    /// Prefixes the message with where the problem was found (e.g. the attribute's name).
    pub fn context(self, what: impl fmt::Display) -> DecodeError {
        DecodeError(format!("{what}: {}", self.0))
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// A message that cannot be encoded (an attribute or message longer than netlink's length
/// fields can say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EncodeError {}

pub(crate) fn read_u16(buf: &[u8], off: usize) -> Option<u16> {
    let b = buf.get(off..off.checked_add(2)?)?;
    Some(u16::from_ne_bytes([b[0], b[1]]))
}

pub(crate) fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let b = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn read_i32(buf: &[u8], off: usize) -> Option<i32> {
    read_u32(buf, off).map(|v| i32::from_ne_bytes(v.to_ne_bytes()))
}

/// `struct nlmsghdr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlHeader {
    /// Length of the whole message, header included.
    pub len: u32,
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Port id of the sender (0 = the kernel) or, in requests, of the requester.
    pub pid: u32,
}

impl NlHeader {
    /// Reads a header from the first 16 bytes of `buf` (no check of `len` against `buf`).
    pub fn parse(buf: &[u8]) -> Option<NlHeader> {
        Some(NlHeader {
            len: read_u32(buf, 0)?,
            ty: read_u16(buf, 4)?,
            flags: read_u16(buf, 6)?,
            seq: read_u32(buf, 8)?,
            pid: read_u32(buf, 12)?,
        })
    }

    pub fn encode(&self) -> [u8; NLMSG_HDRLEN] {
        let mut b = [0u8; NLMSG_HDRLEN];
        b[0..4].copy_from_slice(&self.len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.ty.to_ne_bytes());
        b[6..8].copy_from_slice(&self.flags.to_ne_bytes());
        b[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        b[12..16].copy_from_slice(&self.pid.to_ne_bytes());
        b
    }
}

/// One netlink message inside a received buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub header: NlHeader,
    /// The bytes after the header, `header.len - 16` of them.
    pub payload: &'a [u8],
}

/// What a message is, by its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// `NLMSG_NOOP`: to be ignored.
    Noop,
    /// `NLMSG_ERROR`: an error (`error != 0`) or an acknowledgement (`error == 0`).
    Error(ErrorMsg),
    /// `NLMSG_DONE`: the end of a dump, with the dump's own result.
    Done { error: i32 },
    /// `NLMSG_OVERRUN`: data was lost.
    Overrun,
    /// Any other type below `NLMSG_MIN_TYPE` (reserved, unknown).
    Reserved(u16),
    /// A family's own message (type >= `NLMSG_MIN_TYPE`).
    Data(&'a [u8]),
}

impl<'a> NlMsg<'a> {
    pub fn classify(&self) -> Result<Payload<'a>, DecodeError> {
        match self.header.ty {
            NLMSG_NOOP => Ok(Payload::Noop),
            NLMSG_ERROR => ErrorMsg::parse(self.header.flags, self.payload).map(Payload::Error),
            NLMSG_DONE => {
                // Linux and FreeBSD put the dump's result (an int) after the header; some
                // senders leave the payload empty, which means success.
                let error = if self.payload.is_empty() {
                    0
                } else {
                    read_i32(self.payload, 0).ok_or_else(|| {
                        DecodeError::new(format!(
                            "NLMSG_DONE carries {} bytes, expected an int (4 bytes)",
                            self.payload.len()
                        ))
                    })?
                };
                Ok(Payload::Done { error })
            }
            NLMSG_OVERRUN => Ok(Payload::Overrun),
            t if t < NLMSG_MIN_TYPE => Ok(Payload::Reserved(t)),
            _ => Ok(Payload::Data(self.payload)),
        }
    }
}

/// Iterator over the messages of one received buffer. Yields an error (and then stops) at the
/// first message whose length does not fit.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Splits a received buffer into messages.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages {
        rest: buf,
        failed: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NlMsg<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let result = self.split_one();
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

impl<'a> Messages<'a> {
    fn split_one(&mut self) -> Result<NlMsg<'a>, DecodeError> {
        let have = self.rest.len();
        let header = NlHeader::parse(self.rest).ok_or_else(|| {
            DecodeError::new(format!(
                "{have} bytes left over, too few for a netlink header ({NLMSG_HDRLEN})"
            ))
        })?;
        let len = usize::try_from(header.len).unwrap_or(usize::MAX);
        if len < NLMSG_HDRLEN {
            return Err(DecodeError::new(format!(
                "message of type {} claims a length of {len} bytes, less than its header",
                header.ty
            )));
        }
        let payload = self.rest.get(NLMSG_HDRLEN..len).ok_or_else(|| {
            DecodeError::new(format!(
                "message of type {} claims {len} bytes but only {have} were received (truncated)",
                header.ty
            ))
        })?;
        // The next message starts at the aligned length; the last one may omit its padding.
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Ok(NlMsg { header, payload })
    }
}

/// `struct nlmsgerr` and its extended-ack attributes.
///
/// The sign of `error` differs: Linux sends a negative errno, FreeBSD's native netlink a
/// positive one (its Linux-compatibility layer negates it). [`ErrorMsg::errno`] accepts both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorMsg {
    /// As sent: 0 for an acknowledgement, else an errno of either sign.
    pub error: i32,
    /// The header of the request this answers, when echoed.
    pub request: Option<NlHeader>,
    /// The kernel's extended-ack message (`NLMSGERR_ATTR_MSG`), when it sent one.
    pub message: Option<String>,
}

impl ErrorMsg {
    pub fn parse(flags: u16, payload: &[u8]) -> Result<ErrorMsg, DecodeError> {
        let error = read_i32(payload, 0).ok_or_else(|| {
            DecodeError::new(format!(
                "NLMSG_ERROR carries {} bytes, too few for its error code",
                payload.len()
            ))
        })?;
        let request = payload.get(4..).and_then(NlHeader::parse);
        // Extended-ack attributes are a best-effort explanation: the errno is what counts, so
        // a malformed TLV area is ignored rather than turned into an error.
        let message = match request {
            Some(req) if flags & NLM_F_ACK_TLVS != 0 => {
                let tlv_at = if flags & NLM_F_CAPPED != 0 {
                    4 + NLMSG_HDRLEN
                } else {
                    4usize.saturating_add(align4(usize::try_from(req.len).unwrap_or(usize::MAX)))
                };
                payload.get(tlv_at..).and_then(ext_ack_message)
            }
            _ => None,
        };
        Ok(ErrorMsg {
            error,
            request,
            message,
        })
    }

    /// The errno as a positive number (0 for an acknowledgement).
    pub fn errno(&self) -> i32 {
        errno_of(self.error)
    }
}

/// Normalizes a netlink error code of either sign to a positive errno.
pub fn errno_of(code: i32) -> i32 {
    code.checked_abs().unwrap_or(i32::MAX)
}

fn ext_ack_message(tlvs: &[u8]) -> Option<String> {
    super::attr::attrs(tlvs)
        .map_while(Result::ok)
        .find(|a| a.ty == NLMSGERR_ATTR_MSG)
        .and_then(|a| a.cstr().ok())
        .filter(|s| !s.is_empty())
        .map(|s| s.escape_default().to_string())
}

/// `struct genlmsghdr` and the attributes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenlMsg<'a> {
    pub cmd: u8,
    pub version: u8,
    /// The attribute area, to be read with [`super::attr::attrs`].
    pub attrs: &'a [u8],
}

impl<'a> GenlMsg<'a> {
    pub fn parse(payload: &'a [u8]) -> Result<GenlMsg<'a>, DecodeError> {
        match payload {
            [cmd, version, _, _, attrs @ ..] => Ok(GenlMsg {
                cmd: *cmd,
                version: *version,
                attrs,
            }),
            _ => Err(DecodeError::new(format!(
                "generic netlink message of {} bytes, too short for its 4-byte header",
                payload.len()
            ))),
        }
    }
}

/// Writes the sequence number and ORs `flags` into an encoded request's header.
pub fn stamp(msg: &mut [u8], seq: u32, flags: u16) -> Result<(), EncodeError> {
    let header = NlHeader::parse(msg)
        .ok_or_else(|| EncodeError(format!("a request of {} bytes has no header", msg.len())))?;
    let stamped = NlHeader {
        seq,
        flags: header.flags | flags,
        ..header
    };
    msg[..NLMSG_HDRLEN].copy_from_slice(&stamped.encode());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(len: u32, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        NlHeader {
            len,
            ty,
            flags,
            seq,
            pid: 0,
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn align4_rounds_up_and_saturates() {
        assert_eq!(align4(0), 0);
        assert_eq!(align4(1), 4);
        assert_eq!(align4(4), 4);
        assert_eq!(align4(9), 12);
        assert_eq!(align4(usize::MAX), usize::MAX);
    }

    #[test]
    fn splits_consecutive_messages_with_padding() {
        let mut b = hdr(17, 0x20, 0, 1);
        b.extend_from_slice(&[0xaa, 0, 0, 0]); // 1 payload byte + 3 padding
        b.extend(hdr(16, NLMSG_DONE, 0, 1));
        let v: Vec<_> = messages(&b).collect::<Result<_, _>>().unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].payload, &[0xaa]);
        assert_eq!(v[1].header.ty, NLMSG_DONE);
        assert_eq!(v[1].classify().unwrap(), Payload::Done { error: 0 });
    }

    #[test]
    fn rejects_lying_lengths() {
        let e = messages(&hdr(8, 0x20, 0, 1)).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("less than its header"), "{e}");
        let e = messages(&hdr(64, 0x20, 0, 1)).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = messages(&hdr(u32::MAX, 0x20, 0, 1))
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = messages(&[1, 2, 3]).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("3 bytes left over"), "{e}");
        // After an error the iterator stops instead of resynchronising on garbage.
        let mut it = messages(&[1, 2, 3]);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn error_sign_is_normalized() {
        let mut linux = (-libc::ENOENT).to_ne_bytes().to_vec();
        linux.extend(hdr(20, 0x20, NLM_F_REQUEST, 7));
        let e = ErrorMsg::parse(NLM_F_CAPPED, &linux).unwrap();
        assert_eq!(e.errno(), libc::ENOENT);
        assert_eq!(e.request.unwrap().seq, 7);
        let freebsd = libc::ENOENT.to_ne_bytes();
        assert_eq!(ErrorMsg::parse(0, &freebsd).unwrap().errno(), libc::ENOENT);
        assert_eq!(errno_of(i32::MIN), i32::MAX);
    }

    #[test]
    fn error_with_extended_ack_message() {
        // Capped error: error, echoed header, then NLMSGERR_ATTR_MSG "bad vhid\0".
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend(hdr(40, 0x20, NLM_F_REQUEST, 3));
        p.extend_from_slice(&[13, 0, 1, 0]);
        p.extend_from_slice(b"bad vhid\0\0\0\0");
        let e = ErrorMsg::parse(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(e.message.as_deref(), Some("bad vhid"));
        // Uncapped: the whole 20-byte request is echoed before the TLVs.
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend(hdr(20, 0x20, NLM_F_REQUEST, 3));
        p.extend_from_slice(&[9, 9, 9, 9]);
        p.extend_from_slice(&[8, 0, 1, 0]);
        p.extend_from_slice(b"abc\0");
        let e = ErrorMsg::parse(NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(e.message.as_deref(), Some("abc"));
        // A lying echoed length only loses the message, never the errno.
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend(hdr(u32::MAX, 0x20, NLM_F_REQUEST, 3));
        let e = ErrorMsg::parse(NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!((e.errno(), e.message), (libc::EINVAL, None));
    }

    #[test]
    fn short_control_payloads_are_errors() {
        let m = NlMsg {
            header: NlHeader::parse(&hdr(18, NLMSG_ERROR, 0, 1)).unwrap(),
            payload: &[1, 2],
        };
        assert!(m.classify().unwrap_err().to_string().contains("error code"));
        let m = NlMsg {
            header: NlHeader::parse(&hdr(18, NLMSG_DONE, 0, 1)).unwrap(),
            payload: &[1, 2],
        };
        assert!(m.classify().unwrap_err().to_string().contains("NLMSG_DONE"));
    }

    #[test]
    fn genl_header_and_stamp() {
        let g = GenlMsg::parse(&[3, 2, 0, 0, 8, 0, 1, 0]).unwrap();
        assert_eq!((g.cmd, g.version, g.attrs.len()), (3, 2, 4));
        assert!(GenlMsg::parse(&[3, 2]).is_err());

        let mut m = hdr(16, 0x10, NLM_F_REQUEST, 0);
        stamp(&mut m, 0x0102_0304, NLM_F_ACK).unwrap();
        let h = NlHeader::parse(&m).unwrap();
        assert_eq!((h.seq, h.flags), (0x0102_0304, NLM_F_REQUEST | NLM_F_ACK));
        assert!(stamp(&mut [0u8; 3], 1, 0).is_err());
    }
}
