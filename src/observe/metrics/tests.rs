//! Tests of the metrics registry and its exposition (exact output, checked by the strict
//! parser in `expo.rs`), of the scrape server over real loopback TCP, and of the textfile
//! writer.

use std::time::Duration;

use proptest::prelude::*;

use super::expo::{self, value};
use super::*;
use crate::carp::Vhid;

fn gid(ifname: &str, vhid: u32) -> GroupId {
    GroupId::new(ifname, Vhid::new(vhid).unwrap())
}

fn parsed(m: &Metrics) -> Vec<expo::Family> {
    let text = m.render();
    expo::parse(&text).unwrap_or_else(|e| panic!("render() is not valid 0.0.4: {e}\n{text}"))
}

const GROUP_STATE_HEAD: &str = "\
# HELP carpd_group_state CARP state of each group (vhid@interface): 1 for the current state, 0 for the others.
# TYPE carpd_group_state gauge
";

#[test]
fn exact_exposition_of_a_small_scenario() {
    let m = Metrics::new();
    let g = gid("vmx1", 2);
    m.group_state(&g, Some(CarpState::Backup));
    m.transition(&g, Some(CarpState::Backup));
    m.group_state(&g, Some(CarpState::Master));
    m.transition(&g, Some(CarpState::Master));
    m.claim(
        "51.68.252.230",
        ClaimMetric::Claimed,
        Duration::from_millis(7500),
        Some(Duration::from_secs(8)),
    );
    m.ovh_error("server");
    m.ovh_error("server");
    m.vault_error("unreachable");
    m.readiness("credentials", true);
    m.readiness("vmac", false);
    m.ready(false);
    m.rights_missing("51.68.252.231", &["GET /ip/*".into()]);
    m.rights_missing(
        "51.68.252.230",
        &["POST /dedicated/server/ns1/virtualMac/*/virtualAddress".into()],
    );
    m.rights_missing("51.68.252.231", &[]);
    m.demotion(Some(240), 240);
    m.maintenance(true);
    let v = env!("CARGO_PKG_VERSION");
    let mut want = format!(
        "\
# HELP carpd_build_info carpd's version; always 1.
# TYPE carpd_build_info gauge
carpd_build_info{{version=\"{v}\"}} 1
{GROUP_STATE_HEAD}\
carpd_group_state{{group=\"2@vmx1\",state=\"INIT\"}} 0
carpd_group_state{{group=\"2@vmx1\",state=\"BACKUP\"}} 0
carpd_group_state{{group=\"2@vmx1\",state=\"MASTER\"}} 1
# HELP carpd_transitions_total CARP state transitions seen, by group and target state (NONE: the group disappeared).
# TYPE carpd_transitions_total counter
carpd_transitions_total{{group=\"2@vmx1\",to=\"BACKUP\"}} 1
carpd_transitions_total{{group=\"2@vmx1\",to=\"MASTER\"}} 1
# HELP carpd_claims_total Claims of each failover IP, by result: already_bound, claimed, cancelled, failed, held_down.
# TYPE carpd_claims_total counter
carpd_claims_total{{ip=\"51.68.252.230\",result=\"already_bound\"}} 0
carpd_claims_total{{ip=\"51.68.252.230\",result=\"claimed\"}} 1
carpd_claims_total{{ip=\"51.68.252.230\",result=\"cancelled\"}} 0
carpd_claims_total{{ip=\"51.68.252.230\",result=\"failed\"}} 0
carpd_claims_total{{ip=\"51.68.252.230\",result=\"held_down\"}} 0
# HELP carpd_claim_duration_seconds Time from the start of a claim to its end (bound and verified, cancelled or failed).
# TYPE carpd_claim_duration_seconds histogram
"
    );
    for b in CLAIM_DURATION_BUCKETS {
        let n = u8::from(*b >= 7.5);
        want += &format!(
            "carpd_claim_duration_seconds_bucket{{ip=\"51.68.252.230\",le=\"{b}\"}} {n}\n"
        );
    }
    want += "\
carpd_claim_duration_seconds_bucket{ip=\"51.68.252.230\",le=\"+Inf\"} 1
carpd_claim_duration_seconds_sum{ip=\"51.68.252.230\"} 7.5
carpd_claim_duration_seconds_count{ip=\"51.68.252.230\"} 1
# HELP carpd_claim_outage_seconds Time from this node becoming MASTER to the failover IP verified bound here.
# TYPE carpd_claim_outage_seconds histogram
";
    for b in OUTAGE_BUCKETS {
        let n = u8::from(*b >= 8.0);
        want +=
            &format!("carpd_claim_outage_seconds_bucket{{ip=\"51.68.252.230\",le=\"{b}\"}} {n}\n");
    }
    want += "\
carpd_claim_outage_seconds_bucket{ip=\"51.68.252.230\",le=\"+Inf\"} 1
carpd_claim_outage_seconds_sum{ip=\"51.68.252.230\"} 8
carpd_claim_outage_seconds_count{ip=\"51.68.252.230\"} 1
# HELP carpd_ovh_errors_total Failed OVH API calls, by kind.
# TYPE carpd_ovh_errors_total counter
carpd_ovh_errors_total{kind=\"server\"} 2
# HELP carpd_vault_errors_total Failed Vault/OpenBao calls, by kind.
# TYPE carpd_vault_errors_total counter
carpd_vault_errors_total{kind=\"unreachable\"} 1
# HELP carpd_ready Readiness checks: 1 when the check passed on its last run, 0 when it failed.
# TYPE carpd_ready gauge
carpd_ready{check=\"credentials\"} 1
carpd_ready{check=\"vmac\"} 0
# HELP carpd_ready_all 1 when every readiness check passed: this node could complete a failover.
# TYPE carpd_ready_all gauge
carpd_ready_all 0
# HELP carpd_ovh_rights_missing 1 for each access rule a claim of the failover IP needs that the OVH credential lacks.
# TYPE carpd_ovh_rights_missing gauge
carpd_ovh_rights_missing{ip=\"51.68.252.230\",rule=\"POST /dedicated/server/ns1/virtualMac/*/virtualAddress\"} 1
# HELP carpd_demotion CARP demotion: source=kernel is net.inet.carp.demotion, source=carpd the part carpd's ledger added.
# TYPE carpd_demotion gauge
carpd_demotion{source=\"carpd\"} 240
carpd_demotion{source=\"kernel\"} 240
# HELP carpd_maintenance 1 while this node is in maintenance (carpd maintenance enter).
# TYPE carpd_maintenance gauge
carpd_maintenance 1
# HELP carpd_metrics_dropped_total Metric updates dropped because a family reached its label-set cap (a carpd bug).
# TYPE carpd_metrics_dropped_total counter
# HELP carpd_log_lines_dropped_total Log lines dropped because syslogd could not take them at once (carpd never waits for syslogd).
# TYPE carpd_log_lines_dropped_total counter
carpd_log_lines_dropped_total 0
";
    let got = m.render();
    assert_eq!(got, want);
    // The bucket bounds print as Prometheus clients print them (no exponent, no ".0").
    assert!(got.contains("le=\"0.005\""), "{got}");
    assert!(got.contains("le=\"60\""), "{got}");
    let f = expo::parse(&got).unwrap();
    assert_eq!(f.len(), 15);
    assert!(f.iter().all(|f| f.name.starts_with("carpd_")));
}

#[test]
fn a_fresh_registry_renders_every_family_and_only_build_info() {
    let f = parsed(&Metrics::new());
    let samples = expo::samples(&f);
    // build_info, and the process-wide dropped log lines (a plain counter, 0 here).
    assert_eq!(samples.len(), 2, "{samples:?}");
    assert_eq!(samples[0].name, "carpd_build_info");
    assert_eq!(
        (samples[1].name.as_str(), samples[1].value),
        ("carpd_log_lines_dropped_total", 0.0)
    );
    let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
    for want in [
        "carpd_group_state",
        "carpd_transitions_total",
        "carpd_claims_total",
        "carpd_claim_duration_seconds",
        "carpd_claim_outage_seconds",
        "carpd_ovh_errors_total",
        "carpd_vault_errors_total",
        "carpd_ready",
        "carpd_ready_all",
        "carpd_demotion",
        "carpd_maintenance",
        "carpd_log_lines_dropped_total",
        "carpd_build_info",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn state_gauges_switch_and_transitions_count() {
    let m = Metrics::new();
    let a = gid("vmx1", 2);
    let b = gid("vmx0", 1);
    m.group_state(&a, Some(CarpState::Init));
    m.group_state(&b, Some(CarpState::Backup));
    let state = |f: &[expo::Family], g: &str, s: &str| {
        value(f, "carpd_group_state", &[("group", g), ("state", s)])
    };
    let f = parsed(&m);
    assert_eq!(state(&f, "2@vmx1", "INIT"), Some(1.0));
    assert_eq!(state(&f, "2@vmx1", "MASTER"), Some(0.0));
    assert_eq!(state(&f, "1@vmx0", "BACKUP"), Some(1.0));

    for to in [
        CarpState::Backup,
        CarpState::Master,
        CarpState::Backup,
        CarpState::Master,
        CarpState::Master,
    ] {
        m.transition(&a, Some(to));
        m.group_state(&a, Some(to));
    }
    m.transition(&a, None);
    let f = parsed(&m);
    assert_eq!(state(&f, "2@vmx1", "INIT"), Some(0.0));
    assert_eq!(state(&f, "2@vmx1", "BACKUP"), Some(0.0));
    assert_eq!(state(&f, "2@vmx1", "MASTER"), Some(1.0));
    let tr = |to: &str| {
        value(
            &f,
            "carpd_transitions_total",
            &[("group", "2@vmx1"), ("to", to)],
        )
    };
    assert_eq!(tr("MASTER"), Some(3.0));
    assert_eq!(tr("BACKUP"), Some(2.0));
    assert_eq!(tr("NONE"), Some(1.0));
    assert_eq!(tr("INIT"), None);
    // The other group is untouched.
    assert_eq!(state(&f, "1@vmx0", "BACKUP"), Some(1.0));
}

#[test]
fn a_gone_group_loses_its_state_series_but_keeps_its_counters() {
    let m = Metrics::new();
    let a = gid("vmx1", 2);
    let b = gid("vmx0", 1);
    m.group_state(&a, Some(CarpState::Master));
    m.transition(&a, Some(CarpState::Master));
    m.group_state(&b, Some(CarpState::Backup));
    m.transition(&a, None);
    m.group_state(&a, None);
    let f = parsed(&m);
    let a_states = expo::samples(&f)
        .into_iter()
        .filter(|s| s.name == "carpd_group_state" && s.label("group") == Some("2@vmx1"))
        .count();
    assert_eq!(a_states, 0, "{}", m.render());
    assert_eq!(
        value(
            &f,
            "carpd_group_state",
            &[("group", "1@vmx0"), ("state", "BACKUP")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &f,
            "carpd_transitions_total",
            &[("group", "2@vmx1"), ("to", "MASTER")]
        ),
        Some(1.0)
    );
    // It comes back: its series reappear.
    m.group_state(&a, Some(CarpState::Init));
    let f = parsed(&m);
    assert_eq!(
        value(
            &f,
            "carpd_group_state",
            &[("group", "2@vmx1"), ("state", "INIT")]
        ),
        Some(1.0)
    );
}

#[test]
fn histograms_fill_the_right_buckets() {
    let m = Metrics::new();
    let ip = "192.0.2.7";
    m.failover_ip(ip);
    let f = parsed(&m);
    assert_eq!(
        value(
            &f,
            "carpd_claims_total",
            &[("ip", ip), ("result", "failed")]
        ),
        Some(0.0),
        "a declared IP shows its counters at zero"
    );
    assert_eq!(
        value(&f, "carpd_claim_duration_seconds_count", &[("ip", ip)]),
        Some(0.0)
    );
    m.claim(
        ip,
        ClaimMetric::AlreadyBound,
        Duration::from_millis(3),
        None,
    );
    m.claim(ip, ClaimMetric::Claimed, Duration::from_millis(300), None);
    m.claim(
        ip,
        ClaimMetric::Claimed,
        Duration::from_secs(42),
        Some(Duration::from_secs(44)),
    );
    m.claim(ip, ClaimMetric::Failed, Duration::from_secs(1000), None);
    // Held down: no request was made, so no duration; its outage (if any) still counts.
    m.claim(ip, ClaimMetric::HeldDown, Duration::from_secs(5), None);
    let f = parsed(&m);
    let bucket =
        |name: &str, le: &str| value(&f, &format!("{name}_bucket"), &[("ip", ip), ("le", le)]);
    let d = "carpd_claim_duration_seconds";
    assert_eq!(bucket(d, "0.001"), None, "no such bound");
    assert_eq!(bucket(d, "0.0025"), None);
    assert_eq!(bucket(d, "0.005"), Some(1.0));
    assert_eq!(bucket(d, "0.25"), Some(1.0));
    assert_eq!(bucket(d, "0.5"), Some(2.0));
    assert_eq!(bucket(d, "30"), Some(2.0));
    assert_eq!(bucket(d, "45"), Some(3.0));
    assert_eq!(bucket(d, "300"), Some(3.0));
    assert_eq!(bucket(d, "+Inf"), Some(4.0));
    assert_eq!(value(&f, &format!("{d}_count"), &[("ip", ip)]), Some(4.0));
    let sum = value(&f, &format!("{d}_sum"), &[("ip", ip)]).unwrap();
    assert!((sum - 1042.303).abs() < 1e-9, "{sum}");
    let o = "carpd_claim_outage_seconds";
    assert_eq!(bucket(o, "30"), Some(0.0));
    assert_eq!(bucket(o, "45"), Some(1.0));
    assert_eq!(value(&f, &format!("{o}_count"), &[("ip", ip)]), Some(1.0));
    assert_eq!(value(&f, &format!("{o}_sum"), &[("ip", ip)]), Some(44.0));
    let claims = |r: &str| value(&f, "carpd_claims_total", &[("ip", ip), ("result", r)]);
    assert_eq!(claims("already_bound"), Some(1.0));
    assert_eq!(claims("claimed"), Some(2.0));
    assert_eq!(claims("failed"), Some(1.0));
    assert_eq!(claims("held_down"), Some(1.0));
    assert_eq!(claims("cancelled"), Some(0.0));
}

#[test]
fn odd_label_values_are_escaped_and_read_back() {
    let m = Metrics::new();
    let odd = "a\"b\\c\nd}e,f=g\r{h} é";
    m.ovh_error(odd);
    m.readiness("", true);
    let text = m.render();
    assert!(
        text.contains(r#"carpd_ovh_errors_total{kind="a\"b\\c\nd}e,f=g"#),
        "{text}"
    );
    let f = parsed(&m);
    assert_eq!(
        value(&f, "carpd_ovh_errors_total", &[("kind", odd)]),
        Some(1.0)
    );
    assert_eq!(value(&f, "carpd_ready", &[("check", "")]), Some(1.0));
}

#[test]
fn label_sets_are_capped_and_the_drops_counted() {
    let m = Metrics::new();
    for i in 0..MAX_IPS + 10 {
        m.claim(
            &format!("10.0.{}.{}", i / 256, i % 256),
            ClaimMetric::Claimed,
            Duration::from_secs(1),
            None,
        );
    }
    for i in 0..MAX_KINDS + 3 {
        m.vault_error(&format!("kind{i}"));
    }
    // A known IP and kind still update at the cap.
    m.claim(
        "10.0.0.0",
        ClaimMetric::Failed,
        Duration::from_secs(1),
        None,
    );
    m.vault_error("kind0");
    let f = parsed(&m);
    let ips: std::collections::BTreeSet<&str> = expo::samples(&f)
        .into_iter()
        .filter(|s| s.name == "carpd_claims_total")
        .filter_map(|s| s.label("ip"))
        .collect();
    assert_eq!(ips.len(), MAX_IPS);
    assert!(!ips.contains(&"10.0.1.9"), "an IP past the cap was kept");
    assert_eq!(
        value(
            &f,
            "carpd_metrics_dropped_total",
            &[("family", "carpd_claims_total")]
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &f,
            "carpd_metrics_dropped_total",
            &[("family", "carpd_vault_errors_total")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &f,
            "carpd_claims_total",
            &[("ip", "10.0.0.0"), ("result", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&f, "carpd_vault_errors_total", &[("kind", "kind0")]),
        Some(2.0)
    );
    let groups = Metrics::new();
    for i in 0..MAX_GROUPS + 1 {
        let g = gid(&format!("if{}", i / 255), (i % 255) as u32 + 1);
        groups.group_state(&g, Some(CarpState::Backup));
        groups.transition(&g, Some(CarpState::Backup));
    }
    let f = parsed(&groups);
    assert_eq!(
        expo::samples(&f)
            .iter()
            .filter(|s| s.name == "carpd_group_state")
            .count(),
        3 * MAX_GROUPS
    );
    assert_eq!(
        value(
            &f,
            "carpd_metrics_dropped_total",
            &[("family", "carpd_transitions_total")]
        ),
        Some(1.0)
    );
}

#[test]
fn ready_demotion_and_maintenance_gauges() {
    let m = Metrics::new();
    m.ready(true);
    m.maintenance(false);
    m.demotion(Some(0), 0);
    let f = parsed(&m);
    assert_eq!(value(&f, "carpd_ready_all", &[]), Some(1.0));
    assert_eq!(value(&f, "carpd_maintenance", &[]), Some(0.0));
    assert_eq!(
        value(&f, "carpd_demotion", &[("source", "kernel")]),
        Some(0.0)
    );
    m.demotion(None, 240);
    m.readiness("clock", true);
    m.readiness("clock", false);
    let f = parsed(&m);
    assert_eq!(value(&f, "carpd_demotion", &[("source", "kernel")]), None);
    assert_eq!(
        value(&f, "carpd_demotion", &[("source", "carpd")]),
        Some(240.0)
    );
    assert_eq!(value(&f, "carpd_ready", &[("check", "clock")]), Some(0.0));
}

#[test]
fn clones_share_one_registry_across_threads() {
    let m = Metrics::new();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    m.claim("192.0.2.1", ClaimMetric::Claimed, Duration::ZERO, None);
                    m.ovh_error("server");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let f = parsed(&m);
    assert_eq!(
        value(
            &f,
            "carpd_claims_total",
            &[("ip", "192.0.2.1"), ("result", "claimed")]
        ),
        Some(2000.0)
    );
    assert_eq!(
        value(&f, "carpd_ovh_errors_total", &[("kind", "server")]),
        Some(2000.0)
    );
}

proptest! {
    #[test]
    fn render_always_parses_and_label_values_round_trip(
        ip in "\\PC{0,20}|[\"\\\\\n\r{},= ]{0,8}",
        kind in any::<String>(),
        check in "(\\PC|\n|\"|\\\\){0,12}",
        ifname in "\\PC{0,12}",
        secs in 0u64..100_000,
        nanos in 0u32..1_000_000_000,
    ) {
        let m = Metrics::new();
        let g = gid(&ifname, 7);
        m.group_state(&g, Some(CarpState::Master));
        m.transition(&g, Some(CarpState::Master));
        m.claim(&ip, ClaimMetric::Cancelled, Duration::new(secs, nanos), Some(Duration::new(secs, nanos)));
        m.ovh_error(&kind);
        m.vault_error(&kind);
        m.readiness(&check, false);
        let text = m.render();
        let f = expo::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(value(&f, "carpd_claims_total", &[("ip", &ip), ("result", "cancelled")]), Some(1.0));
        prop_assert_eq!(value(&f, "carpd_ovh_errors_total", &[("kind", &kind)]), Some(1.0));
        prop_assert_eq!(value(&f, "carpd_ready", &[("check", &check)]), Some(0.0));
        let group = g.to_string();
        prop_assert_eq!(value(&f, "carpd_group_state", &[("group", &group), ("state", "MASTER")]), Some(1.0));
        let sum = value(&f, "carpd_claim_duration_seconds_sum", &[("ip", &ip)]).unwrap();
        prop_assert_eq!(sum, Duration::new(secs, nanos).as_secs_f64());
    }
}

mod http_server {
    //! The scrape server over real loopback TCP, with raw requests so every byte is ours.

    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::super::http::{ServeOptions, serve_with};
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<()>,
    }

    async fn start(metrics: Metrics, opts: ServeOptions) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(listener, metrics, opts, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Sends `request` raw and reads the whole answer (the server closes after one).
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        tokio::time::timeout(LIMIT, async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // The server may answer (431) and close before reading everything we send.
            let _ = s.write_all(request).await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        })
        .await
        .expect("no answer within 10 s: the metrics server is stuck or never closes the connection")
    }

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n").into_bytes()
    }

    fn status(answer: &str) -> u16 {
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"))
    }

    fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
        let head = answer.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn body(answer: &str) -> &str {
        answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[tokio::test]
    async fn routes_methods_and_content_type() {
        let m = Metrics::new();
        m.group_state(&gid("vmx1", 2), Some(CarpState::Master));
        let srv = start(m.clone(), ServeOptions::default()).await;

        let a = exchange(srv.addr, &get("/metrics")).await;
        assert_eq!(status(&a), 200, "{a}");
        let ct = header(&a, "content-type").unwrap();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let f = expo::parse(body(&a)).unwrap();
        assert_eq!(
            value(
                &f,
                "carpd_group_state",
                &[("group", "2@vmx1"), ("state", "MASTER")]
            ),
            Some(1.0)
        );
        // Each scrape renders anew.
        m.group_state(&gid("vmx1", 2), Some(CarpState::Backup));
        let a = exchange(srv.addr, &get("/metrics")).await;
        assert!(body(&a).contains("state=\"BACKUP\"} 1"), "{a}");

        let a = exchange(srv.addr, &get("/")).await;
        assert_eq!(status(&a), 200);
        assert!(body(&a).contains("/metrics"), "{a}");

        let a = exchange(srv.addr, &get("/metrics/x")).await;
        assert_eq!(status(&a), 404, "{a}");
        let a = exchange(srv.addr, &get("/favicon.ico")).await;
        assert_eq!(status(&a), 404, "{a}");

        let a = exchange(
            srv.addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        )
        .await;
        assert_eq!(status(&a), 405, "{a}");
        assert_eq!(header(&a, "allow"), Some("GET, HEAD"));
        let a = exchange(srv.addr, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status(&a), 405, "{a}");

        let a = exchange(srv.addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status(&a), 200, "{a}");
        assert_eq!(body(&a), "", "HEAD has no body");

        let a = exchange(srv.addr, b"this is not http\r\n\r\n").await;
        assert_eq!(status(&a), 400, "{a}");
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused() {
        let srv = start(Metrics::new(), ServeOptions::default()).await;
        let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 20 * 1024));
        req.extend(b"\r\n\r\n");
        let a = exchange(srv.addr, &req).await;
        assert_eq!(status(&a), 431, "{a}");
        assert!(!a.contains("carpd_build_info"));
        // A long URL too.
        let long = format!("/metrics?{}", "q".repeat(16 * 1024));
        let a = exchange(srv.addr, &get(&long)).await;
        assert!(a.is_empty() || [414, 431, 400].contains(&status(&a)), "{a}");
        // And the server still serves.
        let a = exchange(srv.addr, &get("/metrics")).await;
        assert_eq!(status(&a), 200);
    }

    #[tokio::test]
    async fn silent_clients_neither_block_others_nor_stay() {
        let opts = ServeOptions {
            max_connections: 2,
            deadline: Duration::from_millis(400),
        };
        let srv = start(Metrics::new(), opts).await;
        // One client connects and never sends.
        let mut idle = TcpStream::connect(srv.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        for _ in 0..5 {
            let a = exchange(srv.addr, &get("/metrics")).await;
            assert_eq!(status(&a), 200, "{a}");
        }
        assert!(
            t.elapsed() < opts.deadline,
            "scrapes waited for the silent client: {:?}",
            t.elapsed()
        );
        // The silent client is cut off at the deadline.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(LIMIT, idle.read(&mut buf))
            .await
            .expect("the silent client was never disconnected: no read deadline")
            .unwrap_or(0);
        assert_eq!(n, 0, "the silent client got data");

        // Two silent clients take every slot: a scrape waits, but only until the deadline.
        let _a = TcpStream::connect(srv.addr).await.unwrap();
        let _b = TcpStream::connect(srv.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        let a = exchange(srv.addr, &get("/metrics")).await;
        assert_eq!(status(&a), 200, "{a}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "a scrape waited {:?} behind silent clients",
            t.elapsed()
        );
        // It did wait for a slot: the connection cap holds.
        assert!(
            t.elapsed() >= opts.deadline / 2,
            "served at once although both slots were taken: max_connections is not enforced"
        );
    }

    #[tokio::test]
    async fn a_client_that_never_closes_after_its_answer_is_closed_at_the_deadline() {
        // The server ends its side after answering and drains what the client still sends
        // (a lingering close); a client that keeps its end open must not keep the slot.
        let opts = ServeOptions {
            max_connections: 1,
            deadline: Duration::from_millis(300),
        };
        let srv = start(Metrics::new(), opts).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(&get("/metrics")).await.unwrap();
        let mut out = Vec::new();
        // The answer ends with the server's end of the stream (its half-close)...
        tokio::time::timeout(LIMIT, s.read_to_end(&mut out))
            .await
            .expect("the server never ended its side after answering")
            .unwrap();
        assert_eq!(status(&String::from_utf8_lossy(&out)), 200);
        // ...while ours stays open and the server drains it: the only slot must come free at
        // the deadline, or this scrape waits forever.
        let a = exchange(srv.addr, &get("/metrics")).await;
        assert_eq!(status(&a), 200, "{a}");
        drop(s);
    }

    #[tokio::test]
    async fn a_slow_sender_is_cut_off() {
        let opts = ServeOptions {
            max_connections: 8,
            deadline: Duration::from_millis(300),
        };
        let srv = start(Metrics::new(), opts).await;
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let t = Instant::now();
        let r = tokio::time::timeout(LIMIT, async {
            // One byte every 50 ms: never a complete head before the deadline.
            for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa" {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            out
        })
        .await
        .expect("the slow client was never cut off");
        assert!(!String::from_utf8_lossy(&r).contains("carpd_build_info"));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn concurrent_scrapes_all_succeed() {
        let m = Metrics::new();
        for i in 0..50 {
            m.failover_ip(&format!("192.0.2.{i}"));
        }
        let srv = start(m, ServeOptions::default()).await;
        let mut tasks = Vec::new();
        for _ in 0..24 {
            let addr = srv.addr;
            tasks.push(tokio::spawn(async move {
                exchange(addr, &get("/metrics")).await
            }));
        }
        for t in tasks {
            let a = t.await.unwrap();
            assert_eq!(status(&a), 200);
            expo::parse(body(&a)).unwrap();
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let mut srv = start(Metrics::new(), ServeOptions::default()).await;
        let _idle = TcpStream::connect(srv.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        srv.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(LIMIT, &mut srv.task)
            .await
            .expect("serve() did not return after shutdown (an open connection kept it?)")
            .unwrap();
        // The listener is closed with it.
        let r = tokio::time::timeout(LIMIT, TcpStream::connect(srv.addr)).await;
        assert!(
            matches!(r, Ok(Err(_))),
            "the port still accepts after shutdown"
        );
    }

    #[tokio::test]
    async fn bind_errors_name_the_key_and_the_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let e = super::super::http::bind(addr)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("metrics.listen: cannot listen on {addr}")),
            "{e}"
        );
        assert!(e.contains("choose another port"), "{e}");
    }
}

mod textfile_writer {
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::super::textfile::{temp_path, textfile_loop, write_textfile};
    use super::*;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_the_exposition_with_mode_0644_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carpd.prom");
        let m = Metrics::new();
        m.maintenance(true);
        // A restrictive umask (nextest runs each test in its own process) must not make the
        // file unreadable to node_exporter.
        // SAFETY: umask has no memory-safety preconditions.
        let old = unsafe { libc::umask(0o077) };
        let r = write_textfile(&path, &m);
        unsafe { libc::umask(old) };
        r.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), m.render());
        assert_eq!(mode(&path), 0o644);
        // Nothing else is left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("carpd.prom")]);
        // An existing file with other permissions is replaced, not rewritten in place.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_textfile(&path, &m).unwrap();
        assert_eq!(mode(&path), 0o644);
    }

    #[test]
    fn the_temporary_file_is_hidden_from_the_collector() {
        let t = temp_path(std::path::Path::new("/var/tmp/node_exporter/carpd.prom"));
        assert_eq!(
            t.parent().unwrap(),
            std::path::Path::new("/var/tmp/node_exporter")
        );
        let name = t.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with('.') && !name.ends_with(".prom"), "{name}");
    }

    #[test]
    fn readers_never_see_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carpd.prom");
        let m = Metrics::new();
        write_textfile(&path, &m).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !done.load(Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).expect("the file vanished");
                    // Complete means valid and with every family, down to the last one
                    // (an empty or cut file can still be a valid exposition).
                    match expo::parse(&text) {
                        Ok(f) if f.len() == 15 => {}
                        Ok(f) => panic!("a reader saw a partial file: {} families", f.len()),
                        Err(e) => panic!("a reader saw a partial or broken file: {e}"),
                    }
                    reads += 1;
                }
                reads
            })
        };
        // Every write changes the size, so a torn read would fail to parse.
        for i in 0..150 {
            m.failover_ip(&format!("198.51.100.{}", i % 250));
            m.ovh_error(&"x".repeat(i % 31 + 1));
            write_textfile(&path, &m).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let reads = reader.join().expect("reader failed");
        assert!(reads > 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), m.render());
    }

    #[test]
    fn a_symlink_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carpd.prom");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, temp_path(&path)).unwrap();
        write_textfile(&path, &Metrics::new()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_file()
        );
    }

    #[test]
    fn a_missing_directory_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("carpd.prom");
        let e = write_textfile(&path, &Metrics::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "metrics.textfile: cannot write {}",
                path.display()
            )),
            "{e}"
        );
        assert!(
            e.contains("does not exist: create it") && e.contains("point metrics.textfile"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_loop_writes_refreshes_and_removes_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carpd.prom");
        let m = Metrics::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(textfile_loop(
            path.clone(),
            Duration::from_millis(30),
            m.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        let wait_for = |want: &'static str| {
            let path = path.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains(want)) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("the textfile never showed {want:?}"))
            }
        };
        wait_for("carpd_build_info").await;
        m.maintenance(true);
        wait_for("carpd_maintenance 1").await;
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("textfile_loop did not stop at shutdown")
            .unwrap();
        assert!(!path.exists(), "the textfile outlived the daemon");
    }
}
