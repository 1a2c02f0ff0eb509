//! Fuzz what carpd reads from outside on the OVH side: ovh.conf text and API answers (error
//! bodies, tasks, IP info, lists) must parse or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(conf) = carpd::ovh::conf::parse(text)
    {
        let _ = conf.credentials(&|_| None, None);
    }
    let _ = carpd::ovh::error::ErrorBody::decode(data);
    let _ = serde_json::from_slice::<carpd::ovh::api::Task>(data);
    let _ = serde_json::from_slice::<carpd::ovh::api::IpInfo>(data);
    let _ = serde_json::from_slice::<Vec<std::net::Ipv4Addr>>(data);
});
