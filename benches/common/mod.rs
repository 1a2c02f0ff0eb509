//! Helpers shared by the benchmarks (not a bench target itself: a module directory).
#![allow(dead_code)] // each bench uses its own part

#[cfg(target_os = "linux")]
use std::fs;

/// What /proc says about a process.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub struct Sample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: u64,
    /// Voluntary + involuntary context switches of every thread.
    pub switches: u64,
}

#[cfg(target_os = "linux")]
pub fn proc_sample(pid: u32) -> Option<Sample> {
    fn field(status: &str, key: &str) -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut switches = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path: std::path::PathBuf = task.ok()?.path().join("status");
        let s = fs::read_to_string(path).ok()?;
        switches += field(&s, "voluntary_ctxt_switches:")?;
        switches += field(&s, "nonvoluntary_ctxt_switches:")?;
    }
    Some(Sample {
        rss_kib: field(&status, "VmRSS:")?,
        hwm_kib: field(&status, "VmHWM:")?,
        threads: field(&status, "Threads:")?,
        switches,
    })
}

#[cfg(not(target_os = "linux"))]
pub fn proc_sample(_pid: u32) -> Option<Sample> {
    None
}
