//! Fuzz the secretsmith loader's parser (src/vault/secretsmith.rs): any text must give
//! settings or an error naming the file, never a panic; the secret_id written in the text
//! never appears in the error (the parser redacts what YAML errors quote).
//!
//! Input: fuzz text with a `secret_id:` line carrying a known value spliced in at a point the
//! fuzzer picks (the first byte chooses it), so both well-formed and broken files carry it.
#![no_main]

use std::path::Path;

use carpd::secrets::SecretPolicy;
use carpd::vault::secretsmith::{LoadOptions, parse};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "S3cr3tId-9f1c2e7a";

fuzz_target!(|data: &[u8]| {
    let Some((&at, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut cut = (at as usize * text.len()) / 255;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let text = format!("{}    secret_id: {SECRET}\n{}", &text[..cut], &text[cut..]);
    let opts = LoadOptions {
        approle_mount: "approle",
        policy: SecretPolicy::default(),
        env: &|_| None,
    };
    let no_token_files = |p: &Path| Err(format!("token file {} not readable here", p.display()));
    if let Err(e) = parse(&text, Path::new("secretsmith.yaml"), &opts, &no_token_files) {
        let msg = e.to_string();
        assert!(msg.starts_with("secretsmith.yaml"), "{msg}");
        // Only the secret_id key itself is promised to be redacted; the same characters
        // spliced into another key's value (a URL) may legitimately be quoted.
        if !text.contains(&format!("url: {SECRET}")) && !msg.contains("url") {
            assert!(!msg.contains(SECRET), "the secret_id leaked into: {msg}");
        }
    }
});
