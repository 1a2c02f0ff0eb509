//! Encoding of netlink requests: header, generic netlink header, attributes (with padding),
//! nested attribute lists.
//!
//! Requests may carry a CARP key, so the buffer is a [`Zeroizing`] vector, allocated once with
//! room for any request carpd sends: growing it would leave an unzeroized copy of the key in
//! freed memory. The sequence number is left at 0; the transport stamps it just before sending
//! ([`super::codec::stamp`]).
//!
//! Building never panics: a value too long for netlink's 16-bit attribute length (or a string
//! with a NUL inside, which the kernel would silently cut) is remembered and reported by
//! [`MsgBuilder::finish`].

use zeroize::Zeroizing;

use super::attr::{NLA_F_NESTED, NLA_HDRLEN};
use super::codec::{EncodeError, GENL_HDRLEN, NLMSG_HDRLEN, NlHeader, align4};

/// Capacity reserved up front; carpd's largest request (a SET) is under 128 bytes.
const INITIAL_CAPACITY: usize = 512;

/// A request being built.
#[derive(Debug)]
pub struct MsgBuilder {
    buf: Zeroizing<Vec<u8>>,
    error: Option<EncodeError>,
}

/// Where a nested attribute started, to close it with [`MsgBuilder::end_nested`].
#[derive(Debug)]
#[must_use = "a nested attribute must be closed with end_nested"]
pub struct Nest(usize);

impl MsgBuilder {
    /// A message of type `ty` (a family id or a control type) with `flags`.
    pub fn new(ty: u16, flags: u16) -> MsgBuilder {
        let mut buf = Zeroizing::new(Vec::with_capacity(INITIAL_CAPACITY));
        let header = NlHeader {
            len: 0,
            ty,
            flags,
            seq: 0,
            pid: 0,
        };
        buf.extend_from_slice(&header.encode());
        MsgBuilder { buf, error: None }
    }

    /// A generic netlink message for `family` running `cmd`.
    pub fn genl(family: u16, flags: u16, cmd: u8, version: u8) -> MsgBuilder {
        let mut m = MsgBuilder::new(family, flags);
        m.buf.extend_from_slice(&[cmd, version, 0, 0]);
        debug_assert_eq!(m.buf.len(), NLMSG_HDRLEN + GENL_HDRLEN);
        m
    }

    fn fail(&mut self, e: String) {
        if self.error.is_none() {
            self.error = Some(EncodeError(e));
        }
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// An attribute made of `parts` laid end to end.
    fn put_parts(&mut self, ty: u16, parts: &[&[u8]]) -> &mut Self {
        let data_len: usize = parts.iter().map(|p| p.len()).sum();
        let Ok(len) = u16::try_from(NLA_HDRLEN + data_len) else {
            self.fail(format!(
                "attribute {ty} holds {data_len} bytes: a netlink attribute holds at most {}",
                usize::from(u16::MAX) - NLA_HDRLEN
            ));
            return self;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.pad();
        self
    }

    /// A raw attribute.
    pub fn put(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        self.put_parts(ty, &[data])
    }

    pub fn put_u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.put(ty, &[v])
    }

    pub fn put_u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    pub fn put_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    pub fn put_i32(&mut self, ty: u16, v: i32) -> &mut Self {
        self.put(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string. Refuses a string with a NUL inside: the kernel would read
    /// only the part before it (e.g. another interface's name).
    pub fn put_cstr(&mut self, ty: u16, s: &str) -> &mut Self {
        if s.contains('\0') {
            self.fail(format!(
                "attribute {ty}: the string '{}' contains a NUL byte",
                s.escape_default()
            ));
            return self;
        }
        self.put_parts(ty, &[s.as_bytes(), &[0]])
    }

    /// Opens a nested attribute; the attributes added until [`MsgBuilder::end_nested`] go
    /// inside it.
    pub fn begin_nested(&mut self, ty: u16) -> Nest {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        Nest(start)
    }

    /// Closes a nested attribute: writes its length.
    pub fn end_nested(&mut self, nest: Nest) -> &mut Self {
        let len = self.buf.len().saturating_sub(nest.0);
        match (u16::try_from(len), self.buf.get_mut(nest.0..nest.0 + 2)) {
            (Ok(len), Some(slot)) => slot.copy_from_slice(&len.to_ne_bytes()),
            _ => self.fail(format!(
                "a nested attribute holds {len} bytes: a netlink attribute holds at most {}",
                u16::MAX
            )),
        }
        self
    }

    /// The encoded message, with its length written in the header.
    pub fn finish(mut self) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let len = u32::try_from(self.buf.len()).map_err(|_| {
            EncodeError(format!(
                "a message of {} bytes is too long for netlink",
                self.buf.len()
            ))
        })?;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::attr::attrs;
    use crate::kernel::netlink::codec::{GenlMsg, messages};

    // The byte-exact expectations below are written for little-endian hosts (amd64), the
    // targets carpd ships for; netlink integers are in host order.
    #[cfg(target_endian = "little")]
    #[test]
    fn encodes_header_genl_header_padding_and_nesting() {
        let mut m = MsgBuilder::genl(0x0010, 0x0005, 3, 2);
        m.put_u16(1, 0x0102).put_cstr(2, "ab");
        let n = m.begin_nested(7);
        m.put_u32(1, 9);
        m.end_nested(n);
        let bytes = m.finish().unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            48, 0, 0, 0,            // nlmsg_len = 16 + 4 + 8 + 8 + 12
            0x10, 0,                // nlmsg_type = 0x10 (nlctrl)
            5, 0,                   // nlmsg_flags = REQUEST | ACK
            0, 0, 0, 0,             // nlmsg_seq (stamped by the transport)
            0, 0, 0, 0,             // nlmsg_pid
            3, 2, 0, 0,             // genl cmd 3, version 2, reserved
            6, 0, 1, 0, 0x02, 0x01, 0, 0,   // u16 attr 1 = 0x0102, 2 bytes of padding
            7, 0, 2, 0, b'a', b'b', 0, 0,   // string attr 2 = "ab\0", 1 byte of padding
            12, 0, 7, 0x80,         // nested attr 7 (NLA_F_NESTED), 12 bytes
            8, 0, 1, 0, 9, 0, 0, 0, //   u32 attr 1 = 9
        ];
        assert_eq!(&bytes[..], expected);
    }

    #[test]
    fn output_decodes_back() {
        let mut m = MsgBuilder::genl(0x20, 1, 1, 2);
        m.put(5, &[1, 2, 3]).put_i32(3, -2).put_u8(10, 2);
        let bytes = m.finish().unwrap();
        let msg = messages(&bytes).next().unwrap().unwrap();
        assert_eq!(msg.header.len as usize, bytes.len());
        let g = GenlMsg::parse(msg.payload).unwrap();
        let v: Vec<_> = attrs(g.attrs).map(Result::unwrap).collect();
        assert_eq!(v[0].data, &[1, 2, 3]);
        assert_eq!(v[1].i32().unwrap(), -2);
        assert_eq!(v[2].u8().unwrap(), 2);
    }

    #[test]
    fn overlong_values_and_inner_nul_are_reported() {
        let mut m = MsgBuilder::genl(0x20, 1, 1, 2);
        m.put(5, &vec![0u8; 70_000]);
        let e = m.finish().unwrap_err();
        assert!(e.to_string().contains("at most 65531"), "{e}");

        let mut m = MsgBuilder::genl(0x20, 1, 1, 2);
        m.put_cstr(9, "vmx1\0em0");
        assert!(m.finish().unwrap_err().to_string().contains("NUL"));

        let mut m = MsgBuilder::genl(0x20, 1, 1, 2);
        let n = m.begin_nested(1);
        for _ in 0..2000 {
            m.put(2, &[0u8; 60]);
        }
        m.end_nested(n);
        assert!(m.finish().unwrap_err().to_string().contains("nested"));
    }
}
