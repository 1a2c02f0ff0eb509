//! What carpd shows operators: the status model and its renderings, and the Prometheus
//! metrics (HTTP listener and node_exporter textfile).

pub mod daemon_view;
pub mod logging;
pub mod metrics;
pub mod progress;
pub mod status;
