//! One devd record, classified: a CARP state change, something else devd publishes, or garbage.
//!
//! The kernel (kern_devctl.c) emits exactly one line per CARP transition and devd republishes
//! it unchanged on its sockets:
//!
//! ```text
//! !system=CARP subsystem=2@vmx1 type=MASTER\n
//! ```
//!
//! Other records share the stream: other systems' notifications (`!system=IFNET ...`) and
//! attach, detach and nomatch records (`+`, `-`, `?`).
//!
//! Pure: no I/O, no clock, no logging; never panics, whatever the bytes (property-tested).
//!
//! Invariant: a record is accepted as [`Record::Carp`] only if it is byte for byte what the
//! kernel prints for that event (optionally without the trailing newline):
//! `!system=CARP subsystem=<vhid>@<ifname> type=<INIT|BACKUP|MASTER>`, single spaces, no other
//! field, canonical vhid (no sign, no leading zero). Anything else that claims `system=CARP`
//! is garbage: a record we do not fully understand is never turned into an event. Nothing is
//! lost by this strictness: events are only hints and the controller re-reads the kernel
//! periodically and after every reconnect; garbage is counted and shown.

use std::fmt;
use std::str::FromStr;

use crate::carp::{CarpState, GroupId};

/// A CARP state change announced by the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CarpEvent {
    pub group: GroupId,
    pub state: CarpState,
}

impl CarpEvent {
    pub fn new(group: GroupId, state: CarpState) -> CarpEvent {
        CarpEvent { group, state }
    }

    /// The exact line the kernel emits for this event, trailing newline included.
    pub fn to_record(&self) -> String {
        format!(
            "!system=CARP subsystem={} type={}\n",
            self.group, self.state
        )
    }
}

impl fmt::Display for CarpEvent {
    /// `2@vmx1 MASTER`: the two arguments devd passes to an action as `$subsystem $type`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.group, self.state)
    }
}

/// What one devd record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A well-formed CARP state change.
    Carp(CarpEvent),
    /// A well-formed record that is not about CARP: another system's notification or an
    /// attach (`+`), detach (`-`) or nomatch (`?`) record. Only its kind is checked.
    OtherSystem,
    /// Not a record devd would publish, or a CARP record that is not exactly the kernel's
    /// format. The reason names the fault and quotes (escaped, bounded) the record.
    Garbage(String),
}

/// Longest excerpt of a bad record quoted in a reason: enough to recognise it in a log line,
/// bounded because a record can be up to 8 KiB of anything.
const EXCERPT_MAX: usize = 120;

/// Classifies one record as received from devd (one SEQPACKET record, or one line of the
/// stream socket without its newline). A single trailing `\n` is accepted and ignored.
pub fn parse_record(raw: &[u8]) -> Record {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let Some((&kind, rest)) = body.split_first() else {
        return Record::Garbage("empty record".to_string());
    };
    match kind {
        b'+' | b'-' | b'?' => return Record::OtherSystem,
        b'!' => {}
        _ => {
            return garbage(
                "unknown record kind: devd records start with '!', '+', '-' or '?'",
                raw,
            );
        }
    }
    let Some(after) = rest.strip_prefix(b"system=") else {
        return garbage("notification does not start with 'system='", raw);
    };
    let (system, fields) = match after.iter().position(|&b| b == b' ') {
        Some(i) => (&after[..i], Some(&after[i + 1..])),
        None => (after, None),
    };
    if system.is_empty() {
        return garbage("notification with an empty system", raw);
    }
    if system != b"CARP" {
        // Other systems may carry free-form data (quoted values, non-UTF-8 device strings):
        // none of it is ours to judge.
        return Record::OtherSystem;
    }
    let Some(fields) = fields else {
        return garbage("CARP record without subsystem and type", raw);
    };
    match parse_carp_fields(fields) {
        Ok(event) => Record::Carp(event),
        Err(why) => garbage(&why, raw),
    }
}

/// Parses `subsystem=<vhid>@<ifname> type=<STATE>` strictly (see the module invariant).
fn parse_carp_fields(fields: &[u8]) -> Result<CarpEvent, String> {
    const EXPECTED: &str = "expected 'subsystem=<vhid>@<ifname> type=<INIT|BACKUP|MASTER>'";
    let fields = std::str::from_utf8(fields)
        .map_err(|_| format!("CARP record is not valid UTF-8: {EXPECTED}"))?;
    let mut parts = fields.split(' ');
    let (Some(first), Some(second), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "CARP record does not have exactly two fields after system=CARP: {EXPECTED}"
        ));
    };
    let subsystem = first
        .strip_prefix("subsystem=")
        .ok_or_else(|| format!("CARP record: first field is not subsystem=: {EXPECTED}"))?;
    let state = second
        .strip_prefix("type=")
        .ok_or_else(|| format!("CARP record: second field is not type=: {EXPECTED}"))?;
    let group = GroupId::from_str(subsystem).map_err(|e| format!("CARP record: subsystem {e}"))?;
    // GroupId parses the vhid as a number, so "+2" and "02" would pass; the kernel prints %d.
    if group.to_string() != subsystem {
        return Err(format!(
            "CARP record: subsystem '{}' is not in the kernel's form (that would be '{group}')",
            subsystem.escape_default()
        ));
    }
    let state = CarpState::from_str(state).map_err(|e| format!("CARP record: type {e}"))?;
    Ok(CarpEvent::new(group, state))
}

/// Longest explanation kept in a reason, in bytes. The explanations of parse errors quote the
/// field they reject (a `type=` of 8 KiB, escaped, could be 48 KiB): the reason is a log line
/// and a status field, so it is bounded like the excerpt (found by fuzzing, target `devd`).
const WHY_MAX: usize = 200;

// A whole reason (explanation, "...", ": ", the escaped excerpt and its length note) stays
// under 1 KiB: escaping turns one byte into at most 4.
const _: () = assert!(WHY_MAX + 5 + 4 * EXCERPT_MAX + 32 <= 1024);

fn garbage(why: &str, raw: &[u8]) -> Record {
    // Cut by bytes, on a character boundary, like the excerpt (see the assertion above).
    let why = if why.len() > WHY_MAX {
        let mut cut = WHY_MAX;
        while !why.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &why[..cut])
    } else {
        why.to_string()
    };
    Record::Garbage(format!("{why}: {}", excerpt(raw)))
}

/// The record quoted for a human: escaped, at most [`EXCERPT_MAX`] bytes, its length when cut.
fn excerpt(raw: &[u8]) -> String {
    if raw.len() <= EXCERPT_MAX {
        format!("'{}'", raw.escape_ascii())
    } else {
        format!(
            "'{}...' ({} bytes)",
            raw[..EXCERPT_MAX].escape_ascii(),
            raw.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carp::Vhid;
    use proptest::prelude::*;

    fn ev(group: &str, state: CarpState) -> Record {
        Record::Carp(CarpEvent::new(group.parse().unwrap(), state))
    }

    #[test]
    fn kernel_lines_parse_with_or_without_newline() {
        for (line, want) in [
            (
                &b"!system=CARP subsystem=2@vmx1 type=MASTER\n"[..],
                ev("2@vmx1", CarpState::Master),
            ),
            (
                b"!system=CARP subsystem=2@vmx1 type=BACKUP",
                ev("2@vmx1", CarpState::Backup),
            ),
            // INIT is emitted by the kernel too, although devd.conf(5) does not mention it.
            (
                b"!system=CARP subsystem=255@lagg0.100 type=INIT\n",
                ev("255@lagg0.100", CarpState::Init),
            ),
            (
                b"!system=CARP subsystem=1@em_0-a type=MASTER\n",
                ev("1@em_0-a", CarpState::Master),
            ),
        ] {
            assert_eq!(parse_record(line), want, "{}", line.escape_ascii());
        }
    }

    /// Regression (fuzz target `devd`): a CARP record with an 8 KiB `type=` made a reason of
    /// 32 KiB, because the state parser quotes the whole field. Every reason is now bounded.
    #[test]
    fn reasons_stay_short_whatever_the_field_lengths() {
        let long = "\u{12}".repeat(8000);
        for line in [
            format!("!system=CARP subsystem=255@la0.1.0 type=INI{long}T"),
            format!("!system=CARP subsystem=2@vmx1 type={}", "é".repeat(4000)),
            format!(
                "!system=CARP subsystem={}@vmx1 type=MASTER",
                "9".repeat(8000)
            ),
            format!("!system=CARP subsystem=2@{} type=MASTER", "v".repeat(8000)),
            format!("!system=CARP sub{long}system=2@vmx1 type=MASTER"),
        ] {
            let Record::Garbage(why) = parse_record(line.as_bytes()) else {
                panic!("accepted {line:?}");
            };
            assert!(why.len() <= 1024, "reason of {} bytes: {why}", why.len());
            assert!(
                why.contains("bytes)"),
                "the excerpt says how long the record was: {why}"
            );
        }
    }

    #[test]
    fn other_systems_and_record_kinds_are_not_ours() {
        for line in [
            &b"!system=IFNET subsystem=vmx1 type=LINK_UP\n"[..],
            b"!system=ZFS subsystem=ZFS type=sysevent.fs.zfs.config_sync pool_name=\"zroot\"\n",
            b"!system=USB subsystem=DEVICE type=ATTACH ugen=ugen0.2 product=\xff\xfe\n",
            b"!system=carp subsystem=2@vmx1 type=MASTER\n",
            b"+uhub0 at usbus0 on uhub1\n",
            b"-da0 at umass-sim0\n",
            b"? at port=0x60 on isa0\n",
            b"+",
        ] {
            assert_eq!(
                parse_record(line),
                Record::OtherSystem,
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for (line, needle) in [
            (&b""[..], "empty record"),
            (b"\n", "empty record"),
            (b"hello world\n", "unknown record kind"),
            (b"!type=MASTER\n", "does not start with 'system='"),
            (b"!system= subsystem=2@vmx1\n", "empty system"),
            (b"!system=CARP\n", "without subsystem and type"),
            (b"!system=CARP subsystem=2@vmx1\n", "exactly two fields"),
            (
                b"!system=CARP subsystem=2@vmx1 type=MASTER extra=1\n",
                "exactly two fields",
            ),
            (
                b"!system=CARP subsystem=2@vmx1  type=MASTER\n",
                "exactly two fields",
            ),
            (
                b"!system=CARP subsystem=2@vmx1 type=MASTER \n",
                "exactly two fields",
            ),
            (
                b"!system=CARP type=MASTER subsystem=2@vmx1\n",
                "first field",
            ),
            (
                b"!system=CARP subsystem=2@vmx1 state=MASTER\n",
                "second field",
            ),
            (
                b"!system=CARP subsystem=0@vmx1 type=MASTER\n",
                "out of range",
            ),
            (
                b"!system=CARP subsystem=256@vmx1 type=MASTER\n",
                "out of range",
            ),
            (
                b"!system=CARP subsystem=vmx1 type=MASTER\n",
                "<vhid>@<interface>",
            ),
            (
                b"!system=CARP subsystem=02@vmx1 type=MASTER\n",
                "kernel's form",
            ),
            (
                b"!system=CARP subsystem=+2@vmx1 type=MASTER\n",
                "kernel's form",
            ),
            (
                b"!system=CARP subsystem=2@vmx1 type=master\n",
                "not a CARP state",
            ),
            (
                b"!system=CARP subsystem=2@vmx1 type=MASTER\r\n",
                "not a CARP state",
            ),
            (
                b"!system=CARP subsystem=2@vmx1 type=MASTER\n\n",
                "not a CARP state",
            ),
            (
                b"!system=CARP subsystem=2@vm\xffx1 type=MASTER\n",
                "not valid UTF-8",
            ),
        ] {
            match parse_record(line) {
                Record::Garbage(why) => {
                    assert!(why.contains(needle), "{}: {why}", line.escape_ascii())
                }
                other => panic!("{} was accepted as {other:?}", line.escape_ascii()),
            }
        }
    }

    #[test]
    fn reasons_quote_a_bounded_escaped_excerpt() {
        let mut long = b"!system=CARP subsystem=".to_vec();
        long.extend(std::iter::repeat_n(b'\x01', 8000));
        let Record::Garbage(why) = parse_record(&long) else {
            panic!("accepted");
        };
        assert!(why.len() < 4 * EXCERPT_MAX + 200, "{} bytes", why.len());
        assert!(why.contains("(8023 bytes)"), "{why}");
        assert!(why.contains("\\x01"), "{why}");
    }

    #[test]
    fn display_and_record_forms() {
        let e = CarpEvent::new(
            GroupId::new("vmx1", Vhid::new(2).unwrap()),
            CarpState::Master,
        );
        assert_eq!(e.to_string(), "2@vmx1 MASTER");
        assert_eq!(e.to_record(), "!system=CARP subsystem=2@vmx1 type=MASTER\n");
    }

    fn any_event() -> impl Strategy<Value = CarpEvent> {
        (
            1u32..=255,
            "[A-Za-z0-9._-]{1,15}",
            prop_oneof![
                Just(CarpState::Init),
                Just(CarpState::Backup),
                Just(CarpState::Master)
            ],
        )
            .prop_map(|(v, ifname, state)| {
                CarpEvent::new(GroupId::new(ifname, Vhid::new(v).unwrap()), state)
            })
    }

    /// One edit of a record: replace, insert or delete one byte.
    #[derive(Debug, Clone)]
    enum Edit {
        Replace(usize, u8),
        Insert(usize, u8),
        Delete(usize),
    }

    fn any_edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Replace(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Delete),
        ]
    }

    fn apply(mut record: Vec<u8>, edit: &Edit) -> Vec<u8> {
        match *edit {
            Edit::Replace(i, b) => {
                let i = i % record.len();
                record[i] = b;
            }
            Edit::Insert(i, b) => record.insert(i % (record.len() + 1), b),
            Edit::Delete(i) => {
                let i = i % record.len();
                record.remove(i);
            }
        }
        record
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_record(&bytes);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse_record(s.as_bytes());
        }

        #[test]
        fn arbitrary_carp_tails_never_panic(tail in "\\PC{0,120}") {
            let _ = parse_record(format!("!system=CARP {tail}").as_bytes());
        }

        #[test]
        fn kernel_records_round_trip(event in any_event(), newline in any::<bool>()) {
            let mut record = event.to_record();
            if !newline {
                record.pop();
            }
            prop_assert_eq!(parse_record(record.as_bytes()), Record::Carp(event));
        }

        /// Strictness: whatever an edit does to a valid record, if the result is still
        /// accepted it is exactly the kernel's line for the event it was accepted as.
        #[test]
        fn accepted_records_are_canonical(event in any_event(), edit in any_edit()) {
            let edited = apply(event.to_record().into_bytes(), &edit);
            if let Record::Carp(got) = parse_record(&edited) {
                let canonical = got.to_record().into_bytes();
                prop_assert!(
                    edited == canonical || edited[..] == canonical[..canonical.len() - 1],
                    "{} accepted as {:?}", edited.escape_ascii(), got
                );
            }
        }
    }
}
