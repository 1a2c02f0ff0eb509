//! Fuzz the devd record parser (src/devd/event.rs): any record must classify without a panic;
//! a record accepted as a CARP event must be byte for byte the kernel's line for that event
//! (the parser's strictness invariant) and re-parse to the same event; a rejection's reason
//! stays a bounded log line whatever the record's size.
#![no_main]

use carpd::devd::event::{Record, parse_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_record(data) {
        Record::Carp(ev) => {
            let line = ev.to_record();
            let body = data.strip_suffix(b"\n").unwrap_or(data);
            assert_eq!(line.as_bytes().strip_suffix(b"\n"), Some(body));
            assert_eq!(parse_record(line.as_bytes()), Record::Carp(ev));
        }
        Record::Garbage(why) => assert!(why.len() <= 1024, "reason of {} bytes", why.len()),
        Record::OtherSystem => {}
    }
});
