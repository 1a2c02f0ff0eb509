//! Property tests across the netlink layers: every decoder survives arbitrary bytes and
//! mutations of valid messages (truncations, lying lengths, flipped bytes) without panicking,
//! and what the encoders produce decodes back to what was encoded.
//!
//! The mutations start from messages shaped like the kernels' (a carp dump, a controller
//! answer with nested groups, an error with extended-ack text), because random bytes rarely
//! get past the first header check and would leave the deeper decoders untested.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::carp::{CarpKey, CarpState, KeyView, MULTICAST_V4, MULTICAST_V6, Vhid};
use crate::kernel::SetRequest;

use super::attr::attrs;
use super::builder::MsgBuilder;
use super::carp::{
    CARP_NL_ADDR, CARP_NL_ADDR6, CARP_NL_ADVBASE, CARP_NL_ADVSKEW, CARP_NL_CMD_SET, CARP_NL_IFNAME,
    CARP_NL_KEY, CARP_NL_STATE, CARP_NL_VHID, CarpRecord, Dump, build_set, encode_record,
    finish_get, parse_record, record_from_msg,
};
use super::codec::{
    ErrorMsg, GenlMsg, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_MULTI, NLMSG_DONE, NLMSG_ERROR,
    NlHeader, messages, stamp,
};
use super::ctrl::{
    CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_VERSION, CTRL_CMD_NEWFAMILY, GENL_ID_CTRL, parse_family,
};
use super::exchange::{Progress, handle_datagram};

const FAMILY: u16 = 0x21;
const SEQ: u32 = 7;

fn walk_attrs(buf: &[u8], depth: u32) {
    for a in attrs(buf).flatten() {
        let _ = (a.u8(), a.u16(), a.u32(), a.i32(), a.cstr());
        let _ = (a.array::<4>(), a.array::<16>());
        if depth < 4 {
            walk_attrs(a.data, depth + 1);
        }
    }
}

/// Runs every decoder over `bytes`, as a datagram and as a bare payload.
fn exercise(bytes: &[u8]) {
    for m in messages(bytes).flatten() {
        let _ = m.classify();
        for flags in [
            m.header.flags,
            NLM_F_ACK_TLVS,
            NLM_F_ACK_TLVS | NLM_F_CAPPED,
        ] {
            let _ = ErrorMsg::parse(flags, m.payload);
        }
        if let Ok(g) = GenlMsg::parse(m.payload) {
            walk_attrs(g.attrs, 0);
        }
        let _ = parse_family(m.payload);
        let _ = parse_record(m.payload);
    }
    walk_attrs(bytes, 0);
    let _ = parse_family(bytes);
    let _ = parse_record(bytes);
    let _ = ErrorMsg::parse(NLM_F_ACK_TLVS, bytes);
    let mut records = Dump::default();
    let result = handle_datagram("FUZZ", bytes, SEQ, &mut |m| {
        records.push(record_from_msg("FUZZ", FAMILY, m)?);
        Ok(())
    });
    let _ = finish_get("vmx1", None, result.map(|_| ()), records);
}

fn sample_record(vhid: u32, key: KeyView) -> CarpRecord {
    CarpRecord {
        vhid: Vhid::new(vhid).unwrap(),
        state: CarpState::Backup,
        advbase: 1,
        advskew: 100,
        key,
        peer: Some(Ipv4Addr::new(178, 32, 70, 110)),
        peer6: None,
    }
}

fn done(seq: u32, error: i32) -> Vec<u8> {
    let mut b = NlHeader {
        len: 20,
        ty: NLMSG_DONE,
        flags: NLM_F_MULTI,
        seq,
        pid: 0,
    }
    .encode()
    .to_vec();
    b.extend_from_slice(&error.to_ne_bytes());
    b
}

/// Valid messages shaped like the kernels' answers, as seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let mut dump = encode_record(
        FAMILY,
        SEQ,
        &sample_record(1, KeyView::Hidden),
        &[(10, vec![2])],
    );
    let key = KeyView::Known(CarpKey::new(b"pw".to_vec()).unwrap());
    dump.extend(encode_record(FAMILY, SEQ, &sample_record(2, key), &[]));
    dump.extend(done(SEQ, 0));

    let mut fam = MsgBuilder::genl(GENL_ID_CTRL, NLM_F_MULTI, CTRL_CMD_NEWFAMILY, 2);
    fam.put_cstr(CTRL_ATTR_FAMILY_NAME, "carp")
        .put_u16(CTRL_ATTR_FAMILY_ID, FAMILY)
        .put_u32(CTRL_ATTR_VERSION, 2);
    let groups = fam.begin_nested(CTRL_ATTR_MCAST_GROUPS);
    let g1 = fam.begin_nested(1);
    fam.put_cstr(CTRL_ATTR_MCAST_GRP_NAME, "CARP")
        .put_u32(CTRL_ATTR_MCAST_GRP_ID, 3);
    fam.end_nested(g1);
    fam.end_nested(groups);
    let mut fam = fam.finish().unwrap().to_vec();
    stamp(&mut fam, SEQ, 0).unwrap();

    // An error as Linux sends it with NETLINK_CAP_ACK and NETLINK_EXT_ACK: code, the request's
    // header, then the message attribute.
    let mut err = NlHeader {
        len: 0,
        ty: NLMSG_ERROR,
        flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
        seq: SEQ,
        pid: 0,
    }
    .encode()
    .to_vec();
    err.extend_from_slice(&(-libc::EINVAL).to_ne_bytes());
    err.extend_from_slice(
        &NlHeader {
            len: 40,
            ty: FAMILY,
            flags: 5,
            seq: SEQ,
            pid: 0,
        }
        .encode(),
    );
    err.extend_from_slice(&[13, 0, 1, 0]);
    err.extend_from_slice(b"bad vhid\0\0\0\0");
    let len = err.len() as u32;
    err[0..4].copy_from_slice(&len.to_ne_bytes());

    vec![dump, fam, err]
}

#[derive(Clone, Debug)]
enum Mutation {
    Byte(usize, u8),
    U16(usize, u16),
    U32(usize, u32),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let u16s = prop_oneof![
        Just(0u16),
        Just(1),
        Just(3),
        Just(4),
        Just(5),
        Just(0xffff),
        any::<u16>()
    ];
    let u32s = prop_oneof![
        Just(0u32),
        Just(15),
        Just(16),
        Just(17),
        Just(u32::MAX),
        any::<u32>()
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        (any::<usize>(), u16s).prop_map(|(i, v)| Mutation::U16(i, v)),
        (any::<usize>(), u32s).prop_map(|(i, v)| Mutation::U32(i, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Byte(i, b) => {
            if !buf.is_empty() {
                let i = at(*i, buf.len());
                buf[i] = *b;
            }
        }
        // Lengths sit at 4-byte boundaries: aim the wide writes there.
        Mutation::U16(i, v) => {
            if buf.len() >= 2 {
                let i = at(*i, buf.len() - 1) & !1;
                buf[i..i + 2].copy_from_slice(&v.to_ne_bytes());
            }
        }
        Mutation::U32(i, v) => {
            if buf.len() >= 4 {
                let i = at(*i, buf.len() - 3) & !3;
                buf[i..i + 4].copy_from_slice(&v.to_ne_bytes());
            }
        }
        Mutation::Truncate(n) => buf.truncate(at(*n, buf.len() + 1)),
        Mutation::Insert(i, bytes) => {
            let i = at(*i, buf.len() + 1);
            buf.splice(i..i, bytes.iter().copied());
        }
        Mutation::Remove(i, n) => {
            if !buf.is_empty() {
                let i = at(*i, buf.len());
                let end = (i + n).min(buf.len());
                buf.drain(i..end);
            }
        }
    }
}

fn unicast_v4() -> impl Strategy<Value = Option<Ipv4Addr>> {
    prop::option::of(
        any::<[u8; 4]>()
            .prop_map(Ipv4Addr::from)
            .prop_filter("unicast", |ip| !ip.is_unspecified() && *ip != MULTICAST_V4),
    )
}

fn unicast_v6() -> impl Strategy<Value = Option<Ipv6Addr>> {
    prop::option::of(
        any::<[u8; 16]>()
            .prop_map(Ipv6Addr::from)
            .prop_filter("unicast", |ip| !ip.is_unspecified() && *ip != MULTICAST_V6),
    )
}

fn state() -> impl Strategy<Value = CarpState> {
    (0u32..=2).prop_map(|v| CarpState::from_kernel(v).unwrap())
}

fn key_view() -> impl Strategy<Value = KeyView> {
    prop_oneof![
        Just(KeyView::Unset),
        Just(KeyView::Hidden),
        // The kernel pads keys with zeros: a key that ends in zeros reads back without them.
        prop::collection::vec(any::<u8>(), 1..=20)
            .prop_filter("no trailing NUL", |k| k.last() != Some(&0))
            .prop_map(|k| KeyView::Known(CarpKey::new(k).unwrap())),
    ]
}

fn record() -> impl Strategy<Value = CarpRecord> {
    (
        1u32..=255,
        state(),
        0u32..=i32::MAX as u32,
        0u32..=i32::MAX as u32,
        key_view(),
        unicast_v4(),
        unicast_v6(),
    )
        .prop_map(
            |(vhid, state, advbase, advskew, key, peer, peer6)| CarpRecord {
                vhid: Vhid::new(vhid).unwrap(),
                state,
                advbase,
                advskew,
                key,
                peer,
                peer6,
            },
        )
}

/// Attributes a newer kernel may add (types past VRRP_ADV_INTER), with any content. VERSION
/// and VRRP_* have their own tests in carp.rs.
fn extras() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    prop::collection::vec(
        (13u16..300, prop::collection::vec(any::<u8>(), 0..24)),
        0..4,
    )
}

fn set_request() -> impl Strategy<Value = SetRequest> {
    let key = prop::option::of(
        prop::collection::vec(any::<u8>(), 0..=20).prop_map(|k| CarpKey::new(k).unwrap()),
    );
    let state = prop::option::of(state());
    let peer = prop::option::of(any::<[u8; 4]>().prop_map(Ipv4Addr::from));
    let peer6 = prop::option::of(any::<[u8; 16]>().prop_map(Ipv6Addr::from));
    (
        1u32..=255,
        0u32..=i32::MAX as u32,
        0u32..=i32::MAX as u32,
        key,
        peer,
        peer6,
        state,
    )
        .prop_map(
            |(vhid, advbase, advskew, key, peer, peer6, state)| SetRequest {
                vhid: Vhid::new(vhid).unwrap(),
                advbase,
                advskew,
                key,
                peer,
                peer6,
                state,
            },
        )
}

/// Reads a SET back the way FreeBSD's `carp_nl_set` parser does (test-side decoder).
fn decode_set(bytes: &[u8]) -> (String, SetRequest) {
    let msgs: Vec<_> = messages(bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(msgs.len(), 1);
    let g = GenlMsg::parse(msgs[0].payload).unwrap();
    assert_eq!(g.cmd, CARP_NL_CMD_SET);
    let mut ifname = String::new();
    let mut r = SetRequest {
        vhid: Vhid::new(1).unwrap(),
        advbase: u32::MAX,
        advskew: u32::MAX,
        key: None,
        peer: None,
        peer6: None,
        state: None,
    };
    for a in attrs(g.attrs) {
        let a = a.unwrap();
        match a.ty {
            CARP_NL_IFNAME => ifname = a.cstr().unwrap().to_string(),
            CARP_NL_VHID => r.vhid = Vhid::new(a.u32().unwrap()).unwrap(),
            CARP_NL_ADVBASE => r.advbase = a.i32().unwrap() as u32,
            CARP_NL_ADVSKEW => r.advskew = a.i32().unwrap() as u32,
            CARP_NL_KEY => r.key = Some(CarpKey::new(a.data.to_vec()).unwrap()),
            CARP_NL_ADDR => r.peer = Some(Ipv4Addr::from(a.array::<4>().unwrap())),
            CARP_NL_ADDR6 => r.peer6 = Some(Ipv6Addr::from(a.array::<16>().unwrap())),
            CARP_NL_STATE => r.state = CarpState::from_kernel(a.u32().unwrap()),
            t => panic!("unexpected attribute {t} in a SET"),
        }
    }
    (ifname, r)
}

proptest! {
    #[test]
    fn decoders_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn decoders_survive_mutated_messages(
        seed in 0usize..3,
        muts in prop::collection::vec(mutation(), 1..8),
    ) {
        let mut buf = seeds().swap_remove(seed);
        for m in &muts {
            apply(&mut buf, m);
        }
        exercise(&buf);
    }

    #[test]
    fn records_round_trip_through_a_dump(
        recs in prop::collection::vec((record(), extras()), 1..6),
        split in any::<prop::sample::Index>(),
    ) {
        let encoded: Vec<Vec<u8>> = recs.iter().map(|(r, x)| encode_record(FAMILY, SEQ, r, x)).collect();
        // Deliver the dump in two reads, cut at a message boundary, as the kernel may.
        let cut = split.index(encoded.len() + 1);
        let first: Vec<u8> = encoded[..cut].concat();
        let mut second: Vec<u8> = encoded[cut..].concat();
        second.extend(done(SEQ, 0));

        let mut got = Dump::default();
        let mut on = |m: &super::codec::NlMsg<'_>| {
            got.push(record_from_msg("TEST", FAMILY, m)?);
            Ok(())
        };
        prop_assert_eq!(handle_datagram("TEST", &first, SEQ, &mut on), Ok(Progress::More));
        prop_assert_eq!(handle_datagram("TEST", &second, SEQ, &mut on), Ok(Progress::Finished));
        let got = finish_get("vmx1", None, Ok(()), got).unwrap().carp;

        let mut want: Vec<CarpRecord> = recs.into_iter().map(|(r, _)| r).collect();
        want.sort_by_key(|r| r.vhid);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn set_requests_encode_exactly_what_they_ask(req in set_request(), ifname in "[a-z]{1,6}[0-9]{1,3}") {
        let bytes = build_set(FAMILY, &ifname, &req).unwrap();
        let (name, got) = decode_set(&bytes);
        prop_assert_eq!(name, ifname);
        let want = SetRequest {
            key: req.key.clone().filter(|k| !k.is_empty()),
            state: req.state.filter(|s| *s != CarpState::Init),
            ..req
        };
        prop_assert_eq!(got, want);
    }
}
