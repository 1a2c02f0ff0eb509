//! Logging setup. Foreground commands log to stderr; the daemon's syslog setup joins later.
//! Never log a secret: secret types redact themselves in `Debug` and are not `Display`.

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` (error, warn, info, debug, trace, or an EnvFilter directive).
/// An invalid level falls back to `warn` and says so.
pub fn init_stderr(level: &str) {
    let (filter, bad) = match EnvFilter::try_new(level) {
        Ok(f) => (f, false),
        Err(_) => (EnvFilter::new("warn"), true),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    if bad {
        tracing::warn!(level, "invalid --log-level, using warn");
    }
}
