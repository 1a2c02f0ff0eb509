//! Simulators of the external systems carpd talks to, as library code: tests, the lab and
//! the benchmarks start them in-process. They listen on loopback only.
//!
//! - [`ovh`]: the OVH API (signatures, vMACs, IPs, tasks, faults).

pub mod ovh;
