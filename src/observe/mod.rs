//! What carpd shows operators: the status model and its renderings.

pub mod daemon_view;
pub mod logging;
pub mod status;
