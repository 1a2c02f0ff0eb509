//! The node_exporter textfile collector output (`metrics.textfile`): the same exposition as
//! the HTTP listener, written to a `.prom` file every `metrics.textfile_interval`.
//!
//! Atomic: the text goes to a hidden temporary file in the same directory (its name does not
//! end in `.prom`, so the collector never reads it), which is then renamed over the target; a
//! reader sees the old file or the new one, never a partial one. The file is mode 0644 (the
//! collector usually runs as an unprivileged user) whatever the umask.
//!
//! The temporary file is created with O_EXCL after removing any leftover, so a symlink
//! planted at its name is never followed (carpd runs as root).
//!
//! On shutdown [`textfile_loop`] removes the file: node_exporter would otherwise keep
//! exporting the last state of a stopped daemon as if it were current (an `absent()` alert
//! on `carpd_build_info` then says carpd is not running).

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Metrics;

/// Writing the textfile failed; names the path and what to do.
#[derive(Debug, thiserror::Error)]
#[error("metrics.textfile: cannot write {}: {source}. Fix: {fix}", path.display())]
pub struct TextfileError {
    pub path: PathBuf,
    pub source: io::Error,
    pub fix: String,
}

/// The temporary file beside `path`: hidden, and not ending in `.prom`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "carpd.prom".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

fn fail(path: &Path, source: io::Error) -> TextfileError {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => ".".into(),
    };
    let fix = match source.kind() {
        io::ErrorKind::NotFound => format!(
            "the directory {dir} does not exist: create it (it is node_exporter's --collector.textfile.directory), or point metrics.textfile at the collector's directory"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "carpd may not write in {dir}: give it write access, or point metrics.textfile at a directory it may write"
        ),
        _ => format!("check the directory {dir} and the file system"),
    };
    TextfileError {
        path: path.to_path_buf(),
        source,
        fix,
    }
}

/// Writes `metrics` to `path` atomically, mode 0644.
pub fn write_textfile(path: &Path, metrics: &Metrics) -> Result<(), TextfileError> {
    let text = metrics.render();
    let tmp = temp_path(path);
    // A leftover of a crashed run (or anything planted there) goes first; create_new below
    // then refuses whatever appears in between instead of following it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(path, e)),
    }
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        // The umask may have narrowed the mode given to open.
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.flush()?;
        drop(f);
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(path, e)
    })
}

/// Writes the textfile at once, then every `interval`, until `shutdown`; then removes it.
/// Failures are logged when they start, change or end, not on every attempt.
pub async fn textfile_loop(
    path: PathBuf,
    interval: Duration,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let (p, m) = (path.clone(), metrics.clone());
        // A small local write, but it is file I/O: keep it off the runtime's thread.
        let result = match tokio::task::spawn_blocking(move || write_textfile(&p, &m)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("metrics.textfile: the writer task failed: {e}")),
        };
        match result {
            Ok(()) => {
                if last_error.take().is_some() {
                    tracing::info!(path = %path.display(), "metrics: textfile written again");
                }
            }
            Err(msg) => {
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!("{msg}");
                    last_error = Some(msg);
                }
            }
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            path = %path.display(),
            error = %e,
            "metrics: could not remove the textfile at shutdown; node_exporter keeps exporting its last values: remove it by hand"
        ),
    }
}
