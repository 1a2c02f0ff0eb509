//! Fuzz the demotion ledger's file decoder (src/controller/ledger.rs, `Ledger::decode`):
//! any bytes must give a checked ledger or an error, never a panic; a ledger that decodes
//! re-encodes (as carpd writes it) to bytes that decode to the same ledger.
#![no_main]

use carpd::controller::ledger::Ledger;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match Ledger::decode(data) {
        Ok(l) => {
            let bytes = serde_json::to_vec_pretty(&l).expect("a ledger encodes");
            assert_eq!(Ledger::decode(&bytes), Ok(l));
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
