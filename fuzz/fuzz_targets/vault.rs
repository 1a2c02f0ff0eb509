//! Fuzz what carpd decodes of Vault's answers (src/vault/client.rs, `decoding`): the kv-v2
//! data object, the body of a 404 on a deleted version, error answers. Never a panic; every
//! error names the server and the operation (path), and a kv read's answer body never
//! reaches an error beyond the deleted version's number (the body may hold the secret).
#![no_main]

use carpd::vault::client::decoding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = "apps/network/carp".parse().expect("a valid path");
    if let Ok(fields) = decoding::kv_fields(data) {
        for name in fields.names() {
            assert!(fields.get(name).is_some());
        }
    }
    let text = String::from_utf8_lossy(data);
    if let Some((version, what)) = decoding::deleted(&text) {
        assert!(what == "deleted" || what == "destroyed");
        assert!(text.contains(&version.to_string()));
    }
    let code = data
        .first()
        .map(|&b| 400 + u16::from(b) % 200)
        .unwrap_or(500);
    let errors: Vec<String> = text.split('\n').map(str::to_string).collect();
    for e in [
        decoding::api_error(code, errors.clone(), Some(&path)),
        decoding::api_error(code, errors, None),
    ] {
        let msg = e.to_string();
        assert!(msg.contains("https://vault.example:8200"), "{msg}");
    }
    let e = decoding::raw_error(code, Some(text.to_string()), &path).to_string();
    assert!(e.contains("apps/network/carp"), "{e}");
    // The body reaches the message only through the deleted-version metadata (a number and
    // a word); any other body gives the message of no body at all. (A substring check would
    // not do: the fuzzer finds bodies that are a piece of the message itself.)
    if decoding::deleted(&text).is_none() {
        let without = decoding::raw_error(code, None, &path).to_string();
        assert_eq!(e, without, "the answer body changed the error message");
    }
});
