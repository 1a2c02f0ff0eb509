//! OVH's classic request signature, and the JSON encoding python-ovh signs.
//!
//! `X-Ovh-Signature = "$1$" + sha1_hex(AS+"+"+CK+"+"+METHOD+"+"+FULL_URL+"+"+BODY+"+"+TS)`,
//! computed over the exact URL string and body bytes that go on the wire: callers build both
//! once and send what they signed. SHA-1 comes from ring (already in the tree through
//! rustls), never from hand-written code. The simulator verifies with the same function.
//!
//! Bodies are encoded like python-ovh's `json.dumps(data, separators=(',', ':'))`: no spaces,
//! fields in declaration order, non-ASCII escaped as `\uXXXX` (ensure_ascii). The body is
//! signed as bytes, so the encoding only matters for matching python-ovh byte for byte.

use std::io;

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use serde::Serialize;

/// The signature header value for one request.
pub fn signature(
    application_secret: &str,
    consumer_key: &str,
    method: &str,
    full_url: &str,
    body: &[u8],
    timestamp: i64,
) -> String {
    let ts = timestamp.to_string();
    let mut data = Vec::with_capacity(
        application_secret.len() + consumer_key.len() + full_url.len() + body.len() + 40,
    );
    for (i, part) in [
        application_secret.as_bytes(),
        consumer_key.as_bytes(),
        method.as_bytes(),
        full_url.as_bytes(),
        body,
        ts.as_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            data.push(b'+');
        }
        data.extend_from_slice(part);
    }
    let d = digest(&SHA1_FOR_LEGACY_USE_ONLY, &data);
    // The string to sign holds the application secret: wipe our copy.
    zeroize::Zeroize::zeroize(&mut data);
    let mut out = String::with_capacity(43);
    out.push_str("$1$");
    for b in d.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Constant-time comparison for signature checks (the simulator), so the check does not leak
/// how many leading characters matched.
pub fn signatures_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Encodes `value` as python-ovh does: compact, declaration order, ASCII only.
pub fn to_body<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiCompact);
    // Serializing plain request structs into a Vec cannot fail.
    value
        .serialize(&mut ser)
        .expect("request bodies are plain serializable structs");
    out
}

/// `serde_json`'s compact formatter, with Python's `ensure_ascii=True`.
struct AsciiCompact;

impl serde_json::ser::Formatter for AsciiCompact {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if c.is_ascii() {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(writer, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_encoding() {
        #[derive(Serialize)]
        struct Edge {
            b: bool,
            a: Option<u8>,
            name: &'static str,
            list: Vec<u8>,
        }
        let body = to_body(&Edge {
            b: true,
            a: None,
            name: "réseau",
            list: vec![1, 2],
        });
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"b":true,"a":null,"name":"r\u00e9seau","list":[1,2]}"#
        );
        // Outside the basic plane: a surrogate pair, like Python.
        assert_eq!(to_body("😀"), br#""\ud83d\ude00""#);
        assert_eq!(to_body("a\"\n"), br#""a\"\n""#);
    }

    #[test]
    fn constant_time_compare() {
        assert!(signatures_equal("$1$ab", "$1$ab"));
        assert!(!signatures_equal("$1$ab", "$1$ac"));
        assert!(!signatures_equal("$1$ab", "$1$abc"));
    }
}
