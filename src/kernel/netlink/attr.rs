//! Netlink attributes (NLA) as received: the 4-byte TLV header (`nla_len`, `nla_type`), the
//! value, padding to 4 bytes, and nested attribute lists.
//!
//! Pure decoding of kernel bytes: never panics, never trusts a length. Typed getters insist on
//! the exact size of the type (as FreeBSD's own `nlattr_get_uint32` does), so an attribute the
//! kernel changed in a future release is reported instead of being misread.

use super::codec::{DecodeError, align4, read_u16};

/// Size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// Flag bits in `nla_type`, masked off to get the type itself.
pub const NLA_F_NESTED: u16 = 1 << 15;
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// One attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The type, without the `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER` bits.
    pub ty: u16,
    /// The flag bits that were set on the type.
    pub flags: u16,
    /// The value, without the header and without padding.
    pub data: &'a [u8],
}

impl<'a> Attr<'a> {
    fn exact<const N: usize>(&self, what: &str) -> Result<[u8; N], DecodeError> {
        <[u8; N]>::try_from(self.data).map_err(|_| {
            DecodeError::new(format!(
                "attribute {} has {} bytes, expected {N} ({what})",
                self.ty,
                self.data.len()
            ))
        })
    }

    pub fn u8(&self) -> Result<u8, DecodeError> {
        self.exact::<1>("u8").map(|b| b[0])
    }

    pub fn u16(&self) -> Result<u16, DecodeError> {
        self.exact::<2>("u16").map(u16::from_ne_bytes)
    }

    pub fn u32(&self) -> Result<u32, DecodeError> {
        self.exact::<4>("u32").map(u32::from_ne_bytes)
    }

    pub fn i32(&self) -> Result<i32, DecodeError> {
        self.exact::<4>("s32").map(i32::from_ne_bytes)
    }

    /// Fixed-size raw bytes (addresses).
    pub fn array<const N: usize>(&self) -> Result<[u8; N], DecodeError> {
        self.exact::<N>("bytes")
    }

    /// A C string: the bytes up to the first NUL (or all of them when the sender left the
    /// NUL out), which must be UTF-8.
    pub fn cstr(&self) -> Result<&'a str, DecodeError> {
        let bytes = match self.data.iter().position(|&b| b == 0) {
            Some(n) => &self.data[..n],
            None => self.data,
        };
        std::str::from_utf8(bytes).map_err(|_| {
            DecodeError::new(format!(
                "attribute {} is not a UTF-8 string: '{}'",
                self.ty,
                bytes.escape_ascii()
            ))
        })
    }

    /// The attributes nested in this one.
    pub fn nested(&self) -> Attrs<'a> {
        attrs(self.data)
    }
}

/// Iterator over an attribute area. Yields an error (and then stops) at the first attribute
/// whose length does not fit; fewer than 4 bytes left at the end are padding and ignored,
/// as the kernels' own `nla_ok` does.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterates over the attributes in `buf`.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs {
        rest: buf,
        failed: false,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (Some(len), Some(raw_ty)) = (read_u16(self.rest, 0), read_u16(self.rest, 2)) else {
            return None;
        };
        let len = usize::from(len);
        let ty = raw_ty & NLA_TYPE_MASK;
        let data = if len < NLA_HDRLEN {
            Err(DecodeError::new(format!(
                "attribute {ty} claims a length of {len} bytes, less than its header"
            )))
        } else {
            self.rest.get(NLA_HDRLEN..len).ok_or_else(|| {
                DecodeError::new(format!(
                    "attribute {ty} claims {len} bytes but only {} remain",
                    self.rest.len()
                ))
            })
        };
        match data {
            Ok(data) => {
                self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
                Some(Ok(Attr {
                    ty,
                    flags: raw_ty & !NLA_TYPE_MASK,
                    data,
                }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_check_exact_sizes() {
        let buf = [
            5, 0, 1, 0, 7, 0, 0, 0, // type 1, u8 7, 3 padding bytes
            6, 0, 2, 0, 0x34, 0x12, 0, 0, // type 2, u16 0x1234
            8, 0, 3, 0, 0xff, 0xff, 0xff, 0xff, // type 3, s32 -1 / u32 max
            9, 0, 4, 0, b'v', b'm', b'x', b'1', 0, 0, 0, 0, // type 4, "vmx1\0"
        ];
        let v: Vec<_> = attrs(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].u8().unwrap(), 7);
        assert_eq!(v[1].u16().unwrap(), u16::from_ne_bytes([0x34, 0x12]));
        assert_eq!(v[2].i32().unwrap(), -1);
        assert_eq!(v[2].u32().unwrap(), u32::MAX);
        assert_eq!(v[3].cstr().unwrap(), "vmx1");
        let e = v[0].u32().unwrap_err().to_string();
        assert_eq!(e, "attribute 1 has 1 bytes, expected 4 (u32)");
        assert!(v[3].u16().is_err());
    }

    #[test]
    fn nested_attributes_and_flag_bits() {
        // A nested attribute (type 7 | NLA_F_NESTED) holding two u32 attributes.
        let buf = [
            20, 0, 7, 0x80, // nla_len 20, type 7 with the nested bit
            8, 0, 1, 0, 1, 0, 0, 0, // inner type 1 = 1
            8, 0, 2, 0, 2, 0, 0, 0, // inner type 2 = 2
        ];
        let outer = attrs(&buf).next().unwrap().unwrap();
        assert_eq!((outer.ty, outer.flags), (7, NLA_F_NESTED));
        let inner: Vec<_> = outer.nested().map(|a| a.unwrap().u32().unwrap()).collect();
        assert_eq!(inner, [1, 2]);
    }

    #[test]
    fn lying_lengths_are_errors_not_panics() {
        // Zero length would loop forever in a naive parser.
        let mut it = attrs(&[0, 0, 1, 0, 0, 0, 0, 0]);
        assert!(
            it.next()
                .unwrap()
                .unwrap_err()
                .to_string()
                .contains("less than its header")
        );
        assert!(it.next().is_none());
        // Longer than the buffer.
        let e = attrs(&[200, 0, 1, 0, 0]).next().unwrap().unwrap_err();
        assert!(e.to_string().contains("only 5 remain"), "{e}");
        // Trailing bytes shorter than a header are padding.
        assert!(attrs(&[4, 0, 1, 0, 0, 0]).nth(1).is_none());
        // A string without its NUL, and one that is not UTF-8.
        assert_eq!(
            attrs(&[6, 0, 1, 0, b'o', b'k'])
                .next()
                .unwrap()
                .unwrap()
                .cstr()
                .unwrap(),
            "ok"
        );
        let e = attrs(&[6, 0, 1, 0, 0xff, 0])
            .next()
            .unwrap()
            .unwrap()
            .cstr()
            .unwrap_err();
        assert!(e.to_string().contains("\\xff"), "{e}");
    }
}
