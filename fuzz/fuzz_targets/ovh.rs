//! Fuzz what carpd reads from outside on the OVH side (src/ovh/): ovh.conf text and API
//! answers (error bodies, tasks, IP info, vMAC and IP lists, task id lists, the server time)
//! must parse or be refused, never panic; an error answer becomes a message of bounded size
//! that names the method and path of the call.
#![no_main]

use carpd::ovh::error::{ApiError, CODE_MAX, ErrorBody, MESSAGE_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(conf) = carpd::ovh::conf::parse(text)
    {
        let _ = conf.credentials(&|_| None, None);
    }
    let body = ErrorBody::decode(data);
    for code in [&body.class, &body.error_code, &body.http_code].into_iter().flatten() {
        assert!(code.chars().count() <= CODE_MAX + 1);
    }
    if let Some(m) = &body.message {
        assert!(m.chars().count() <= MESSAGE_MAX + 1);
    }
    let status = data.first().map(|&b| 400 + u16::from(b) % 200).unwrap_or(500);
    let e = ApiError {
        method: "POST".into(),
        endpoint: "ovh-eu".into(),
        path: "/dedicated/server/ns1.ip-1-2-3.eu/virtualMac/02:00:00:aa:bb:cc/virtualAddress".into(),
        status,
        body,
        query_id: None,
        retry_after: None,
    };
    let _ = e.kind();
    let msg = e.to_string();
    assert!(msg.starts_with("OVH API POST /dedicated/server/"), "{msg}");
    assert!(msg.len() < 8 * 1024, "an error message of {} bytes", msg.len());
    let _ = serde_json::from_slice::<carpd::ovh::api::Task>(data);
    let _ = serde_json::from_slice::<carpd::ovh::api::IpInfo>(data);
    let _ = serde_json::from_slice::<Vec<String>>(data);
    let _ = serde_json::from_slice::<Vec<std::net::Ipv4Addr>>(data);
    let _ = serde_json::from_slice::<Vec<u64>>(data);
    let _ = serde_json::from_slice::<i64>(data);
});
