//! Benchmark: `carpd status` against a simulated kernel holding 255 vhids (the maximum).
//!
//! Reports, over many runs, the latency of (a) collecting and rendering the status in
//! process, JSON and text, and (b) the whole `carpd status` command as an operator runs it
//! (process start, state file read, render). The budget (DESIGN.md) is 20 ms for (b).
//!
//! Run: `cargo bench --bench status` (builds the release binary first).

use std::process::Command;
use std::time::{Duration, Instant};

use carpd::carp::Vhid;
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::kernel::{Kernel, SetRequest};
use carpd::observe::status::{collect, to_json, to_text};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut d: Vec<Duration>) {
    d.sort();
    println!(
        "{name:<44} n={:<5} p50={:>9.3?} p99={:>9.3?} max={:>9.3?}",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        d[d.len() - 1]
    );
}

fn populate(k: &SimKernel) {
    for v in 1..=255u32 {
        let vhid = Vhid::new(v).unwrap();
        k.set_raw(
            "vmx1",
            &SetRequest {
                vhid,
                advbase: 1,
                advskew: v % 240,
                key: None,
                peer: None,
                peer6: None,
                state: None,
            },
        )
        .unwrap();
        let addr = format!("10.{}.{}.1/32", v / 250, v % 250).parse().unwrap();
        k.add_address("vmx1", vhid, addr).unwrap();
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("kernel.json");
    let k = SimKernel::open(Flavour::FreeBsd14, Some(state.clone())).unwrap();
    populate(&k);
    let mem = SimKernel::from_state(Flavour::FreeBsd14, k.snapshot().unwrap());
    assert_eq!(mem.groups("vmx1").unwrap().len(), 255);

    let runs = 300;
    let mut json = Vec::new();
    let mut text = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let s = collect(&mem, None, None);
        std::hint::black_box(to_json(&s));
        json.push(t.elapsed());
        let t = Instant::now();
        let s = collect(&mem, None, None);
        std::hint::black_box(to_text(&s));
        text.push(t.elapsed());
    }
    println!("carpd status, 255 vhids on one interface");
    report("in process: collect + JSON (memory kernel)", json);
    report("in process: collect + text (memory kernel)", text);

    let bin = env!("CARGO_BIN_EXE_carpd");
    let mut cmd = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        let o = Command::new(bin)
            .args(["--kernel", "sim", "--sim-state"])
            .arg(&state)
            .args(
                [
                    "-c",
                    "/nonexistent/carpd.yaml",
                    "status",
                    if i % 2 == 0 { "--json" } else { "" },
                ]
                .iter()
                .filter(|a| !a.is_empty()),
            )
            .output()
            .unwrap();
        cmd.push(t.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    report("process: `carpd status [--json]` (state file)", cmd.clone());
    let mut sorted = cmd;
    sorted.sort();
    let p99 = percentile(&sorted, 0.99);
    println!(
        "budget 20 ms: {}",
        if p99 < Duration::from_millis(20) {
            "met (p99)"
        } else {
            "MISSED (p99)"
        }
    );
}
