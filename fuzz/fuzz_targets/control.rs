//! Fuzz the control-socket protocol (src/control/protocol.rs): any line must decode to a
//! request/reply or a protocol error, never a panic; whatever decodes re-encodes to a line
//! that decodes to the same message (so the daemon and the CLI never disagree on a message
//! one of them wrote).
#![no_main]

use carpd::control::protocol::{decode_reply, decode_request, encode_reply, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_request(data) {
        let line = encode_request(&r);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(decode_request(&line).as_ref(), Ok(&r));
    }
    if let Ok(r) = decode_reply(data) {
        let line = encode_reply(&r);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        assert_eq!(decode_reply(&line).as_ref(), Ok(&r));
    }
});
