//! Fuzz the configuration loader: any bytes, as a file's contents, must give a Config or a
//! ConfigError naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = carpd::config::parse(text, std::path::Path::new("carpd.yaml")) {
            assert!(e.to_string().starts_with("carpd.yaml"));
        }
    }
});
