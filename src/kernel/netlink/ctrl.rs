//! The generic netlink controller ("nlctrl", family id 0x10): turns a family name such as
//! "carp" into the id its messages must carry, and lists the families a kernel offers.
//!
//! Linux and FreeBSD implement the same controller messages (`CTRL_CMD_GETFAMILY` with
//! `CTRL_ATTR_FAMILY_NAME`, answered by `CTRL_CMD_NEWFAMILY`), which is what lets the
//! transport be tested for real on Linux. Building and parsing are pure; the round trips are
//! methods on [`GenlSocket`](super::socket::GenlSocket).

use zeroize::Zeroizing;

use super::attr::attrs;
use super::builder::MsgBuilder;
use super::codec::{
    DecodeError, EncodeError, GenlMsg, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlMsg,
};

/// The controller's own, fixed family id.
pub const GENL_ID_CTRL: u16 = 0x10;
/// The controller's family name.
pub const CTRL_FAMILY_NAME: &str = "nlctrl";
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// Controller protocol version sent in requests (Linux's; FreeBSD ignores it).
const CTRL_VERSION: u8 = 2;

pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
pub const CTRL_ATTR_VERSION: u16 = 3;
pub const CTRL_ATTR_MAXATTR: u16 = 5;
pub const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
pub const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
pub const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// A generic netlink family as the controller describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    pub id: u16,
    pub name: String,
    /// The family's protocol version (carp: 2); 0 when not sent.
    pub version: u32,
    /// Highest attribute number the family knows; 0 when not sent.
    pub max_attr: u32,
    /// Multicast groups (e.g. FreeBSD 15's "nlsysevent" has one per devd system, "CARP").
    pub mcast_groups: Vec<McastGroup>,
}

/// A multicast group of a family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct McastGroup {
    pub name: String,
    pub id: u32,
}

/// `GENL_NAMSIZ`: a family name has at most 15 bytes plus its NUL (Linux and FreeBSD).
pub const GENL_NAMSIZ: usize = 16;

/// `CTRL_CMD_GETFAMILY` for one family, by name (a request to be acknowledged).
pub fn build_get_family(name: &str) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    if name.is_empty() || name.len() >= GENL_NAMSIZ {
        return Err(EncodeError(format!(
            "\"{}\" cannot be a generic netlink family name: 1..{} bytes",
            name.escape_default(),
            GENL_NAMSIZ - 1
        )));
    }
    let mut m = MsgBuilder::genl(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        CTRL_CMD_GETFAMILY,
        CTRL_VERSION,
    );
    m.put_cstr(CTRL_ATTR_FAMILY_NAME, name);
    m.finish()
}

/// `CTRL_CMD_GETFAMILY` as a dump of every family.
pub fn build_list_families() -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    MsgBuilder::genl(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_DUMP,
        CTRL_CMD_GETFAMILY,
        CTRL_VERSION,
    )
    .finish()
}

/// Parses the generic netlink payload of a `CTRL_CMD_NEWFAMILY` message. Attributes carpd has
/// no use for (operations, policies, header size) are skipped.
pub fn parse_family(payload: &[u8]) -> Result<Family, DecodeError> {
    let g = GenlMsg::parse(payload)?;
    if g.cmd != CTRL_CMD_NEWFAMILY {
        return Err(DecodeError::new(format!(
            "controller answered with command {}, expected CTRL_CMD_NEWFAMILY ({CTRL_CMD_NEWFAMILY})",
            g.cmd
        )));
    }
    let (mut id, mut name) = (None, None);
    let mut family = Family {
        id: 0,
        name: String::new(),
        version: 0,
        max_attr: 0,
        mcast_groups: Vec::new(),
    };
    for a in attrs(g.attrs) {
        let a = a?;
        match a.ty {
            CTRL_ATTR_FAMILY_ID => {
                id = Some(a.u16().map_err(|e| e.context("CTRL_ATTR_FAMILY_ID"))?)
            }
            CTRL_ATTR_FAMILY_NAME => {
                name = Some(a.cstr().map_err(|e| e.context("CTRL_ATTR_FAMILY_NAME"))?)
            }
            CTRL_ATTR_VERSION => {
                family.version = a.u32().map_err(|e| e.context("CTRL_ATTR_VERSION"))?
            }
            CTRL_ATTR_MAXATTR => {
                family.max_attr = a.u32().map_err(|e| e.context("CTRL_ATTR_MAXATTR"))?
            }
            CTRL_ATTR_MCAST_GROUPS => {
                for entry in a.nested() {
                    let entry = entry.map_err(|e| e.context("CTRL_ATTR_MCAST_GROUPS"))?;
                    family.mcast_groups.push(
                        parse_mcast_group(entry.data)
                            .map_err(|e| e.context("CTRL_ATTR_MCAST_GROUPS"))?,
                    );
                }
            }
            _ => {}
        }
    }
    family.id =
        id.ok_or_else(|| DecodeError::new("the controller's answer has no CTRL_ATTR_FAMILY_ID"))?;
    family.name = name
        .ok_or_else(|| DecodeError::new("the controller's answer has no CTRL_ATTR_FAMILY_NAME"))?
        .to_string();
    Ok(family)
}

fn parse_mcast_group(data: &[u8]) -> Result<McastGroup, DecodeError> {
    let (mut name, mut id) = (None, None);
    for a in attrs(data) {
        let a = a?;
        match a.ty {
            CTRL_ATTR_MCAST_GRP_NAME => name = Some(a.cstr()?.to_string()),
            CTRL_ATTR_MCAST_GRP_ID => id = Some(a.u32()?),
            _ => {}
        }
    }
    match (name, id) {
        (Some(name), Some(id)) => Ok(McastGroup { name, id }),
        _ => Err(DecodeError::new("a multicast group lacks its name or id")),
    }
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod io {
    use super::*;
    use crate::kernel::KernelError;
    use crate::kernel::netlink::socket::GenlSocket;

    fn family_of(op: &str, m: &NlMsg<'_>) -> Result<Family, KernelError> {
        if m.header.ty != GENL_ID_CTRL {
            return Err(KernelError::new(
                op,
                format!(
                    "unexpected message type {} in the controller's answer (expected {GENL_ID_CTRL})",
                    m.header.ty
                ),
            ));
        }
        parse_family(m.payload)
            .map_err(|e| KernelError::new(op, format!("malformed controller answer: {e}")))
    }

    impl GenlSocket {
        /// Looks a family up by name. A family the kernel does not have is an ENOENT
        /// [`KernelError`] whose detail names it; callers add what it means (carp: not loaded).
        pub fn family(&self, name: &str) -> Result<Family, KernelError> {
            let op = format!(
                "resolve generic netlink family \"{}\"",
                name.escape_default()
            );
            let mut msg =
                build_get_family(name).map_err(|e| KernelError::new(&op, e.to_string()))?;
            let mut found = None;
            self.request(&op, &mut msg, |m| {
                found = Some(family_of(&op, m)?);
                Ok(())
            })
            .map_err(|mut e| {
                // The errno table's hints are about CARP requests; the controller is not one.
                if e.errno.is_some() {
                    e.hint = None;
                }
                if e.is_errno(libc::ENOENT) {
                    let detail = format!(
                        "the kernel has no generic netlink family \"{}\"",
                        name.escape_default()
                    );
                    e.detail(detail)
                } else {
                    e
                }
            })?;
            let family = found.ok_or_else(|| {
                KernelError::new(
                    &op,
                    "the controller acknowledged the request but described no family",
                )
            })?;
            if family.name != name {
                return Err(KernelError::new(
                    &op,
                    format!(
                        "the controller answered with family \"{}\"",
                        family.name.escape_default()
                    ),
                ));
            }
            Ok(family)
        }

        /// The id of the family `name` (see [`GenlSocket::family`]).
        pub fn resolve_family(&self, name: &str) -> Result<u16, KernelError> {
            self.family(name).map(|f| f.id)
        }

        /// Every family the kernel offers (a multi-part dump), e.g. for diagnostics.
        pub fn families(&self) -> Result<Vec<Family>, KernelError> {
            let op = "list generic netlink families";
            let mut msg = build_list_families().map_err(|e| KernelError::new(op, e.to_string()))?;
            let mut all = Vec::new();
            self.dump(op, &mut msg, |m| {
                all.push(family_of(op, m)?);
                Ok(())
            })?;
            Ok(all)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn get_family_request_bytes() {
        let m = build_get_family("carp").unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            32, 0, 0, 0,        // nlmsg_len = 16 + 4 + 12
            0x10, 0,            // nlmsg_type = GENL_ID_CTRL
            5, 0,               // NLM_F_REQUEST | NLM_F_ACK
            0, 0, 0, 0,         // seq (stamped when sent)
            0, 0, 0, 0,         // pid
            3, 2, 0, 0,         // CTRL_CMD_GETFAMILY, version 2
            9, 0, 2, 0,         // CTRL_ATTR_FAMILY_NAME, 4 + 5 bytes
            b'c', b'a', b'r', b'p', 0, 0, 0, 0, // "carp\0" + 3 bytes of padding
        ];
        assert_eq!(&m[..], expected);

        let m = build_list_families().unwrap();
        assert_eq!(&m[..8], &[20, 0, 0, 0, 0x10, 0, 0x01, 0x03]); // REQUEST | DUMP
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_a_newfamily_answer() {
        #[rustfmt::skip]
        let payload: &[u8] = &[
            1, 2, 0, 0,                         // CTRL_CMD_NEWFAMILY, version 2
            9, 0, 2, 0, b'c', b'a', b'r', b'p', 0, 0, 0, 0, // FAMILY_NAME "carp\0" + padding
            6, 0, 1, 0, 0x21, 0, 0, 0,          // FAMILY_ID 0x21 (u16) + padding
            8, 0, 3, 0, 2, 0, 0, 0,             // VERSION 2
            8, 0, 4, 0, 0, 0, 0, 0,             // HDRSIZE 0 (ignored)
            8, 0, 5, 0, 9, 0, 0, 0,             // MAXATTR 9
            28, 0, 7, 0x80,                     // MCAST_GROUPS (nested), 28 bytes
              24, 0, 1, 0x80,                   //   group #1 (nested), 24 bytes
                9, 0, 1, 0, b'C', b'A', b'R', b'P', 0, 0, 0, 0, // GRP_NAME "CARP"
                8, 0, 2, 0, 5, 0, 0, 0,         //     GRP_ID 5
            8, 0, 99, 0, 1, 2, 3, 4,            // an attribute from the future (ignored)
        ];
        assert_eq!(
            parse_family(payload).unwrap(),
            Family {
                id: 0x21,
                name: "carp".into(),
                version: 2,
                max_attr: 9,
                mcast_groups: vec![McastGroup {
                    name: "CARP".into(),
                    id: 5
                }],
            }
        );

        // A group without its id is malformed, and reported as such.
        #[rustfmt::skip]
        let payload: &[u8] = &[
            1, 2, 0, 0,
            9, 0, 2, 0, b'c', b'a', b'r', b'p', 0, 0, 0, 0,
            6, 0, 1, 0, 0x21, 0, 0, 0,
            20, 0, 7, 0x80,
              16, 0, 1, 0x80,
                9, 0, 1, 0, b'C', b'A', b'R', b'P', 0, 0, 0, 0,
        ];
        let e = parse_family(payload).unwrap_err();
        assert_eq!(
            e.to_string(),
            "CTRL_ATTR_MCAST_GROUPS: a multicast group lacks its name or id"
        );
    }

    #[test]
    fn family_names_are_checked_before_asking() {
        assert!(build_get_family("").is_err());
        let e = build_get_family("a-name-too-long-16").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"a-name-too-long-16\" cannot be a generic netlink family name: 1..15 bytes"
        );
        assert!(build_get_family("exactly15bytes_").is_ok());
    }

    #[test]
    fn rejects_answers_without_id_or_with_wrong_command() {
        let e = parse_family(&[1, 2, 0, 0, 9, 0, 2, 0, b'x', 0, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("no CTRL_ATTR_FAMILY_ID"), "{e}");
        let e = parse_family(&[3, 2, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("expected CTRL_CMD_NEWFAMILY"), "{e}");
        // FAMILY_ID must be exactly a u16.
        let e = parse_family(&[1, 2, 0, 0, 8, 0, 1, 0, 1, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().starts_with("CTRL_ATTR_FAMILY_ID:"), "{e}");
    }

    /// These talk to the running Linux kernel's controller: no root, no network.
    #[cfg(target_os = "linux")]
    mod linux_kernel {
        use super::*;
        use crate::kernel::netlink::socket::GenlSocket;

        fn socket() -> GenlSocket {
            GenlSocket::open().unwrap_or_else(|e| panic!("a generic netlink socket: {e}"))
        }

        #[test]
        fn resolves_nlctrl_to_its_fixed_id() {
            let s = socket();
            let f = s.family(CTRL_FAMILY_NAME).unwrap();
            assert_eq!(f.id, GENL_ID_CTRL);
            assert_eq!(f.name, "nlctrl");
            assert!(f.version >= 1, "{f:?}");
            // nlctrl announces family changes on its "notify" group: a real nested answer.
            assert!(f.mcast_groups.iter().any(|g| g.name == "notify"), "{f:?}");
            assert_eq!(s.resolve_family("nlctrl").unwrap(), 0x10);
        }

        #[test]
        fn dump_lists_every_family_and_each_resolves_by_name() {
            let s = socket();
            let all = s.families().unwrap();
            assert!(
                all.iter()
                    .any(|f| f.id == GENL_ID_CTRL && f.name == "nlctrl"),
                "{all:?}"
            );
            // Many exchanges on one socket: sequence numbers advance, answers match.
            for f in &all {
                assert_eq!(s.resolve_family(&f.name).unwrap(), f.id, "{}", f.name);
            }
        }

        #[test]
        fn unknown_family_is_enoent_naming_it() {
            let e = socket().family("carpd-nofamily").unwrap_err();
            assert_eq!(e.errno, Some(libc::ENOENT), "{e}");
            let s = e.to_string();
            assert!(
                s.starts_with("resolve generic netlink family \"carpd-nofamily\": the kernel has no generic netlink family \"carpd-nofamily\""),
                "{s}"
            );
        }

        #[test]
        fn one_socket_serves_threads() {
            let s = std::sync::Arc::new(socket());
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for _ in 0..25 {
                            assert_eq!(s.resolve_family("nlctrl").unwrap(), GENL_ID_CTRL);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
    }
}
