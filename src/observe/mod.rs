//! What carpd shows operators: the status model and its renderings.

pub mod status;
pub mod logging;
