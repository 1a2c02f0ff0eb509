//! Fuzz the carp netlink reply decoder: kernel bytes must never panic carpd.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = carpd::kernel::netlink::parse_record(data);
});
