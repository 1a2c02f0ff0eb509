//! Fuzz every number carpd takes from a server (src/remote.rs): Vault token TTLs through the
//! token lifecycle (login, renewal, the next step at any instant), an OVH OAuth2 `expires_in`,
//! a `Retry-After` header and the retry delay built on it. The input is read as 64-bit
//! numbers, so u64::MAX, 0 and their neighbours come at once (seeds hold them). Never a
//! panic; TTLs are capped at MAX_REMOTE_DURATION.
#![no_main]

use std::time::{Duration, Instant};

use carpd::ovh::client::{TOKEN_LIFE_MAX, parse_retry_after, token_timing};
use carpd::ovh::policy::RetryPolicy;
use carpd::remote::{MAX_REMOTE_DURATION, later, remote_secs};
use carpd::vault::TokenInfo;
use carpd::vault::lifecycle::Lifecycle;
use libfuzzer_sys::fuzz_target;

fn numbers(data: &[u8]) -> impl Iterator<Item = u64> + '_ {
    data.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    })
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut l = Lifecycle::new();
    let mut n = numbers(data);
    while let (Some(ttl), Some(step)) = (n.next(), n.next()) {
        let info = TokenInfo {
            ttl: (ttl % 3 != 0).then(|| remote_secs(ttl)),
            renewable: step & 1 == 1,
            policies: Vec::new(),
        };
        assert!(info.ttl.is_none_or(|t| t <= MAX_REMOTE_DURATION));
        let at = later(now, remote_secs(step >> 1));
        if step & 2 == 0 {
            l.logged_in(at, &info);
        } else {
            l.renewed(at, &info);
        }
        let _ = l.step(later(at, remote_secs(step.rotate_left(17))));
        let _ = l.expires_at();
        let _ = l.has_token(at);
        let (refresh, life) = token_timing((step & 4 == 0).then_some(ttl));
        assert!(refresh <= life && life <= TOKEN_LIFE_MAX);
        let _ = later(now, life);
        let text = String::from_utf8_lossy(data);
        if let Some(d) = parse_retry_after(&text) {
            assert!(d <= MAX_REMOTE_DURATION);
        }
        if let Some(d) = parse_retry_after(&step.to_string()) {
            let p = RetryPolicy::default();
            let _ = p.delay(
                (ttl % 20) as u32,
                (step as f64) / (u64::MAX as f64),
                Some(d),
                Duration::from_secs(30),
            );
        }
    }
});
