//! The vocabulary of kernel CARP, shared by every module: vhids, group names (`2@vmx1`),
//! states, keys, the sysctl knobs and the statistics block.
//!
//! Nothing here does I/O. Types enforce the kernel's ranges at construction so that a value
//! that exists is a value the kernel accepts (vhid 1..=255, key at most 20 bytes).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Highest vhid the kernel accepts (`CARP_MAXVHID`).
pub const MAX_VHID: u32 = 255;
/// Highest effective advskew (`CARP_MAXSKEW`); the kernel clamps `advskew + demotion` to it.
pub const MAX_SKEW: u32 = 240;
/// Length of the kernel's key buffer (`CARP_KEY_LEN`).
pub const KEY_LEN: usize = 20;
/// The CARP multicast groups; a SET with these addresses means "back to multicast".
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// A virtual host id, 1..=255.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vhid(u8);

impl Vhid {
    pub fn new(v: u32) -> Option<Vhid> {
        if (1..=MAX_VHID).contains(&v) {
            Some(Vhid(v as u8))
        } else {
            None
        }
    }
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

impl TryFrom<u32> for Vhid {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        Vhid::new(v).ok_or_else(|| format!("vhid {v} is out of range: allowed 1..{MAX_VHID}"))
    }
}

impl From<Vhid> for u32 {
    fn from(v: Vhid) -> u32 {
        v.get()
    }
}

impl fmt::Display for Vhid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A CARP group as the kernel and devd name it: `<vhid>@<ifname>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId {
    pub ifname: String,
    pub vhid: Vhid,
}

impl GroupId {
    pub fn new(ifname: impl Into<String>, vhid: Vhid) -> GroupId {
        GroupId {
            ifname: ifname.into(),
            vhid,
        }
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.vhid, self.ifname)
    }
}

impl FromStr for GroupId {
    type Err = String;
    /// Parses `2@vmx1`. Interface names follow FreeBSD's rules: 1..15 bytes (IFNAMSIZ 16 with
    /// the NUL) of ASCII letters, digits, `.`, `_` and `-`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (vhid, ifname) = s.split_once('@').ok_or_else(|| {
            format!("'{s}' is not a CARP group: expected <vhid>@<interface>, e.g. 2@vmx1")
        })?;
        let n: u32 = vhid
            .parse()
            .map_err(|_| format!("'{s}': vhid '{vhid}' is not a number (allowed 1..{MAX_VHID})"))?;
        let vhid = Vhid::try_from(n).map_err(|e| format!("'{s}': {e}"))?;
        validate_ifname(ifname).map_err(|e| format!("'{s}': {e}"))?;
        Ok(GroupId::new(ifname, vhid))
    }
}

/// FreeBSD's IFNAMSIZ is 16 including the terminating NUL.
pub const IFNAMSIZ: usize = 16;

/// Checks an interface name the way the kernel would see it (length) and the way devd
/// reports it (the characters).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the interface name is empty".into());
    }
    if name.len() >= IFNAMSIZ {
        return Err(format!(
            "interface name '{name}' is {} bytes long: FreeBSD allows at most {}",
            name.len(),
            IFNAMSIZ - 1
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "interface name '{}' contains characters other than letters, digits, '.', '_' and '-'",
            name.escape_default()
        ));
    }
    Ok(())
}

/// The state of one vhid, with the kernel's numbering (`carpr_state`, `CARP_NL_STATE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CarpState {
    Init,
    Backup,
    Master,
}

impl CarpState {
    pub fn from_kernel(v: u32) -> Option<CarpState> {
        match v {
            0 => Some(CarpState::Init),
            1 => Some(CarpState::Backup),
            2 => Some(CarpState::Master),
            _ => None,
        }
    }
    pub fn to_kernel(self) -> u32 {
        match self {
            CarpState::Init => 0,
            CarpState::Backup => 1,
            CarpState::Master => 2,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CarpState::Init => "INIT",
            CarpState::Backup => "BACKUP",
            CarpState::Master => "MASTER",
        }
    }
}

impl fmt::Display for CarpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CarpState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "INIT" => Ok(CarpState::Init),
            "BACKUP" => Ok(CarpState::Backup),
            "MASTER" => Ok(CarpState::Master),
            _ => Err(format!(
                "'{}' is not a CARP state: expected INIT, BACKUP or MASTER",
                s.escape_default()
            )),
        }
    }
}

/// A CARP password as the kernel stores it: raw bytes, at most 20, not hashed.
///
/// Zeroized on drop; `Debug` never shows the bytes. Equality is needed to decide whether the
/// kernel's key already matches the configured one.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct CarpKey(Vec<u8>);

impl CarpKey {
    /// Fails (with the length, never the content) when longer than the kernel's 20 bytes.
    /// Configuration sources also refuse NUL bytes (see [`has_nul`]); keys read back from the
    /// kernel are taken as they are.
    pub fn new(bytes: Vec<u8>) -> Result<CarpKey, usize> {
        if bytes.len() > KEY_LEN {
            let n = bytes.len();
            let mut b = bytes;
            b.zeroize();
            return Err(n);
        }
        Ok(CarpKey(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether a configured password holds a NUL byte. The kernel keeps its key in a NUL-padded
/// buffer and treats a leading NUL as "keep the current key", so such a password could never
/// be set or compared reliably: configuration sources refuse it.
pub fn has_nul(bytes: &[u8]) -> bool {
    bytes.contains(&0)
}

impl fmt::Debug for CarpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CarpKey([redacted])")
    }
}

/// What a read tells about a vhid's key. The kernel returns the key to root only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyView {
    /// No key set (an empty key).
    Unset,
    /// A key is set and we were allowed to read it.
    Known(CarpKey),
    /// The kernel did not tell (not root): a key may or may not be set.
    Hidden,
}

impl KeyView {
    pub fn describe(&self) -> &'static str {
        match self {
            KeyView::Unset => "none",
            KeyView::Known(_) => "set",
            KeyView::Hidden => "unknown (not root)",
        }
    }
}

/// The `net.inet.carp.*` integer knobs carpd knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sysctl {
    Allow,
    Preempt,
    Log,
    Dscp,
    /// A write ADDS the written value; see [`crate::kernel::Kernel::demotion_add`].
    Demotion,
    SenderrDemotionFactor,
    IfdownDemotionFactor,
}

impl Sysctl {
    pub const ALL: [Sysctl; 7] = [
        Sysctl::Allow,
        Sysctl::Preempt,
        Sysctl::Log,
        Sysctl::Dscp,
        Sysctl::Demotion,
        Sysctl::SenderrDemotionFactor,
        Sysctl::IfdownDemotionFactor,
    ];
    /// The short name (`preempt`), as used in carpd.yaml's `carp:` section.
    pub fn key(self) -> &'static str {
        match self {
            Sysctl::Allow => "allow",
            Sysctl::Preempt => "preempt",
            Sysctl::Log => "log",
            Sysctl::Dscp => "dscp",
            Sysctl::Demotion => "demotion",
            Sysctl::SenderrDemotionFactor => "senderr_demotion_factor",
            Sysctl::IfdownDemotionFactor => "ifdown_demotion_factor",
        }
    }
    /// The full MIB name for sysctlbyname(3).
    pub fn mib(self) -> &'static str {
        match self {
            Sysctl::Allow => "net.inet.carp.allow",
            Sysctl::Preempt => "net.inet.carp.preempt",
            Sysctl::Log => "net.inet.carp.log",
            Sysctl::Dscp => "net.inet.carp.dscp",
            Sysctl::Demotion => "net.inet.carp.demotion",
            Sysctl::SenderrDemotionFactor => "net.inet.carp.senderr_demotion_factor",
            Sysctl::IfdownDemotionFactor => "net.inet.carp.ifdown_demotion_factor",
        }
    }
    /// FreeBSD's default value (after boot, before anyone writes).
    pub fn default_value(self) -> i64 {
        match self {
            Sysctl::Allow => 1,
            Sysctl::Preempt => 0,
            Sysctl::Log => 1,
            Sysctl::Dscp => 56,
            Sysctl::Demotion => 0,
            Sysctl::SenderrDemotionFactor => 240,
            Sysctl::IfdownDemotionFactor => 240,
        }
    }
}

/// `struct carpstats` (`net.inet.carp.stats`): 16 little-endian u64 counters, 128 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarpStats {
    pub ipackets: u64,
    pub ipackets6: u64,
    pub badif: u64,
    pub badttl: u64,
    pub hdrops: u64,
    pub badsum: u64,
    pub badver: u64,
    pub badlen: u64,
    pub badauth: u64,
    pub badvhid: u64,
    pub badaddrs: u64,
    pub opackets: u64,
    pub opackets6: u64,
    pub onomem: u64,
    pub ostates: u64,
    pub preempt: u64,
}

impl CarpStats {
    /// Size of `struct carpstats` on every FreeBSD architecture (16 x uint64_t).
    pub const SIZE: usize = 128;

    /// Decodes the sysctl's bytes (native endianness, as the kernel copies the struct out).
    pub fn decode(bytes: &[u8]) -> Result<CarpStats, String> {
        if bytes.len() != Self::SIZE {
            return Err(format!(
                "net.inet.carp.stats returned {} bytes, expected {} (struct carpstats)",
                bytes.len(),
                Self::SIZE
            ));
        }
        let mut v = [0u64; 16];
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            v[i] = u64::from_ne_bytes(chunk.try_into().expect("chunks_exact(8)"));
        }
        Ok(CarpStats {
            ipackets: v[0],
            ipackets6: v[1],
            badif: v[2],
            badttl: v[3],
            hdrops: v[4],
            badsum: v[5],
            badver: v[6],
            badlen: v[7],
            badauth: v[8],
            badvhid: v[9],
            badaddrs: v[10],
            opackets: v[11],
            opackets6: v[12],
            onomem: v[13],
            ostates: v[14],
            preempt: v[15],
        })
    }

    pub fn fields(&self) -> [(&'static str, u64); 16] {
        [
            ("ipackets", self.ipackets),
            ("ipackets6", self.ipackets6),
            ("badif", self.badif),
            ("badttl", self.badttl),
            ("hdrops", self.hdrops),
            ("badsum", self.badsum),
            ("badver", self.badver),
            ("badlen", self.badlen),
            ("badauth", self.badauth),
            ("badvhid", self.badvhid),
            ("badaddrs", self.badaddrs),
            ("opackets", self.opackets),
            ("opackets6", self.opackets6),
            ("onomem", self.onomem),
            ("ostates", self.ostates),
            ("preempt", self.preempt),
        ]
    }
}

/// Effective advertisement skew: what the kernel puts on the wire,
/// `clamp(advskew + demotion, 0, 240)`.
pub fn effective_skew(advskew: u32, demotion: i64) -> u32 {
    (i64::from(advskew) + demotion).clamp(0, i64::from(MAX_SKEW)) as u32
}

/// What a backend can do, shown in `carpd status` and used by validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    /// "netlink", "ioctl", "sim" or "sim13".
    pub name: &'static str,
    /// Whether unicast `peer`/`peer6` can be set and read (netlink only).
    pub unicast: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn group_id_round_trips() {
        let g: GroupId = "2@vmx1".parse().unwrap();
        assert_eq!(g.vhid.get(), 2);
        assert_eq!(g.ifname, "vmx1");
        assert_eq!(g.to_string(), "2@vmx1");
    }

    #[test]
    fn group_id_rejects_with_reason() {
        for (input, needle) in [
            ("vmx1", "expected <vhid>@<interface>"),
            ("0@vmx1", "out of range"),
            ("256@vmx1", "out of range"),
            ("x@vmx1", "not a number"),
            ("2@", "empty"),
            ("2@averyveryverylongname0", "at most 15"),
            ("2@vm x", "characters"),
        ] {
            let e = input.parse::<GroupId>().unwrap_err();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn key_debug_is_redacted_and_length_checked() {
        let k = CarpKey::new(b"hunter2".to_vec()).unwrap();
        assert!(!format!("{k:?}").contains("hunter2"));
        assert_eq!(CarpKey::new(vec![b'a'; 21]).unwrap_err(), 21);
        assert!(CarpKey::new(vec![b'a'; 20]).is_ok());
        assert!(has_nul(b"a\0b") && !has_nul(b"ab"));
    }

    #[test]
    fn stats_decode_checks_size_and_order() {
        let mut b = Vec::new();
        for i in 0..16u64 {
            b.extend_from_slice(&(i + 1).to_ne_bytes());
        }
        let s = CarpStats::decode(&b).unwrap();
        assert_eq!(s.ipackets, 1);
        assert_eq!(s.badauth, 9);
        assert_eq!(s.preempt, 16);
        assert!(
            CarpStats::decode(&b[..120])
                .unwrap_err()
                .contains("120 bytes")
        );
    }

    #[test]
    fn effective_skew_clamps() {
        assert_eq!(effective_skew(100, 0), 100);
        assert_eq!(effective_skew(100, 240), 240);
        assert_eq!(effective_skew(100, -200), 0);
        assert_eq!(effective_skew(0, 50), 50);
    }

    proptest! {
        #[test]
        fn group_id_parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<GroupId>();
        }

        #[test]
        fn vhid_range(v in 0u32..1000) {
            prop_assert_eq!(Vhid::new(v).is_some(), (1..=255).contains(&v));
        }
    }
}
