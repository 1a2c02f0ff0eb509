//! Helpers shared by integration tests.
#![allow(dead_code)] // each test crate uses its own part

pub mod bao;
pub mod daemon_lab;
pub mod pair;
pub mod redirect;
