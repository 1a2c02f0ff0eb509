//! The OVH API simulator as a standalone server, for `scripts/freebsd-acceptance`: two carpd
//! instances in VNET jails reach it over a bridge, standing in for OVH (nothing here talks to
//! the real API). Not part of the carpd binary.
//!
//! ```text
//! ovh-sim --listen 198.51.100.254:8080 --service ns1.test \
//!         --vmac 02:00:00:00:00:0a=192.0.2.10 --vmac 02:00:00:00:00:0b=192.0.2.11,192.0.2.100
//! ```
//!
//! Prints its base URL and the test credentials (python-ovh ovh.conf format, the keys of
//! `carpd_testkit::ovh::SimConfig::default`, which are not secrets) on stdout, then serves until
//! SIGTERM or SIGINT. `--task-delay MS` makes OVH tasks take that long.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use carpd_testkit::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};

struct Args {
    listen: SocketAddr,
    service: String,
    vmacs: Vec<(String, Vec<Ipv4Addr>)>,
    task_delay: Duration,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut service = None;
    let mut vmacs = Vec::new();
    let mut task_delay = Duration::from_millis(500);
    while let Some(a) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--service" => service = Some(value("--service")?),
            "--vmac" => {
                let v = value("--vmac")?;
                let (mac, ips) = v
                    .split_once('=')
                    .ok_or(format!("--vmac {v}: write MAC=IP[,IP...]"))?;
                let ips = ips
                    .split(',')
                    .map(|ip| ip.parse().map_err(|e| format!("--vmac {v}: {ip}: {e}")))
                    .collect::<Result<Vec<Ipv4Addr>, String>>()?;
                vmacs.push((mac.to_string(), ips));
            }
            "--task-delay" => {
                let v = value("--task-delay")?;
                let ms: u64 = v.parse().map_err(|e| format!("--task-delay {v}: {e}"))?;
                task_delay = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen ADDR:PORT is required")?,
        service: service.ok_or("--service NAME is required")?,
        vmacs,
        task_delay,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ovh-sim: {e}");
            eprintln!(
                "usage: ovh-sim --listen ADDR:PORT --service NAME [--vmac MAC=IP[,IP...]]... [--task-delay MS]"
            );
            return ExitCode::from(2);
        }
    };
    let sim = match OvhSim::start_on(SimConfig::default(), args.listen).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ovh-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    sim.with_world(|w| {
        w.task_delay = args.task_delay;
        for (mac, ips) in &args.vmacs {
            w.add_vmac(&args.service, mac, ips);
        }
    });
    println!("# ovh-sim serving {}", sim.base_url());
    println!(
        "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={TEST_CK}",
        sim.base_url()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ovh-sim: cannot catch SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}
