//! Logging setup: stderr for commands run by hand, syslog (facility daemon, ident `carpd`)
//! for the service and the devd hook, which have no terminal.
//!
//! Lines are `key=value` fields after a short message (tracing's default format), one line per
//! thing worth knowing. Never log a secret: secret types redact themselves in `Debug` and are
//! not `Display`.
//!
//! Why a hand-written syslog sender instead of the `syslog` crate: that crate stamps local
//! messages with the UTC time, and FreeBSD's syslogd keeps a sender's RFC 3164 timestamp, so
//! /var/log/carp.log would mix UTC and local times. What carpd needs is one datagram per line,
//! `<priority>carpd[pid]: message`, to the local socket; syslogd adds the time and host name
//! itself. That is [`SyslogSink`], about a screen of code.

use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Where log lines go (`--log-target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// syslog when stderr is not a terminal (the service, the devd hook), else stderr.
    Auto,
    Stderr,
    Syslog,
}

/// The local syslog socket: FreeBSD's syslogd listens on /var/run/log, Linux's on /dev/log.
pub const SYSLOG_SOCKET: &str = if cfg!(target_os = "freebsd") {
    "/var/run/log"
} else {
    "/dev/log"
};

/// syslog facility `daemon` (3), shifted as RFC 3164 encodes it.
const FACILITY_DAEMON: u8 = 3 << 3;

/// Longest message sent in one datagram: FreeBSD's syslogd reads at most 8 KiB (MAXLINE).
const MAX_DATAGRAM: usize = 8192;

/// Sets up logging at `level` (error, warn, info, debug, trace, or an EnvFilter directive).
/// `syslog_socket` overrides [`SYSLOG_SOCKET`] (tests). When syslog cannot be reached, lines
/// go to stderr (and, if syslog was asked for explicitly, the first says why). An invalid
/// level falls back to `warn`, and says so. Returns whether lines go to syslog.
pub fn init(level: &str, target: LogTarget, syslog_socket: Option<&Path>) -> bool {
    // Libraries that log their own view of errors carpd reports itself, with context and a
    // fix (vaultrs/rustify log every Vault error response at ERROR): keep them quiet unless
    // the operator names them in a directive.
    let directives = if level.contains('=') {
        level.to_string()
    } else {
        format!(
            "{level},rustify=off,vaultrs=off,hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn"
        )
    };
    let (filter, bad) = match EnvFilter::try_new(&directives) {
        Ok(f) => (f, false),
        Err(_) => (EnvFilter::new("warn"), true),
    };
    let use_syslog = match target {
        LogTarget::Stderr => false,
        LogTarget::Syslog => true,
        LogTarget::Auto => !io::stderr().is_terminal(),
    };
    let mut unreachable = None;
    if use_syslog {
        let path = syslog_socket.unwrap_or(Path::new(SYSLOG_SOCKET));
        match SyslogSink::connect(path, "carpd") {
            Ok(sink) => {
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_writer(sink)
                    .with_ansi(false)
                    .without_time()
                    // The priority carries the level; syslogd adds time and host.
                    .with_level(false)
                    .with_target(false)
                    .try_init();
                if bad {
                    tracing::warn!(level, "invalid --log-level, using warn");
                }
                return true;
            }
            Err(e) if target == LogTarget::Syslog => {
                unreachable = Some(format!("{}: {e}", path.display()))
            }
            // auto: no syslogd (a container, a chroot): stderr is the honest fallback.
            Err(_) => {}
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    if bad {
        tracing::warn!(level, "invalid --log-level, using warn");
    }
    if let Some(why) = unreachable {
        tracing::warn!("syslog is unreachable ({why}); logging to stderr");
    }
    false
}

/// Logs to stderr at `level`; for tests and tools that never want syslog.
pub fn init_stderr(level: &str) {
    init(level, LogTarget::Stderr, None);
}

/// A connected local syslog socket; cheap to clone, one datagram per log line.
#[derive(Clone, Debug)]
pub struct SyslogSink {
    inner: Arc<Mutex<SinkInner>>,
}

#[derive(Debug)]
struct SinkInner {
    path: PathBuf,
    socket: UnixDatagram,
    /// `carpd[pid]: `, the RFC 3164 TAG and its separator.
    tag: String,
}

impl SyslogSink {
    pub fn connect(path: &Path, ident: &str) -> io::Result<SyslogSink> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(SyslogSink {
            inner: Arc::new(Mutex::new(SinkInner {
                path: path.to_path_buf(),
                socket,
                tag: format!("{ident}[{}]: ", std::process::id()),
            })),
        })
    }

    /// Sends one message at `level`. If syslogd was restarted (the socket was re-created),
    /// reconnects once and retries; a line that still cannot be sent is dropped, since there
    /// is nowhere better to say so.
    pub fn send(&self, level: Level, message: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let datagram = encode(&inner.tag, level, message);
        if inner.socket.send(&datagram).is_ok() {
            return;
        }
        if let Ok(socket) = UnixDatagram::unbound()
            && socket.connect(&inner.path).is_ok()
        {
            inner.socket = socket;
            let _ = inner.socket.send(&datagram);
        }
    }
}

/// `<priority>tag message`, without a timestamp (syslogd adds it), cut to what syslogd reads.
pub fn encode(tag: &str, level: Level, message: &str) -> Vec<u8> {
    let severity: u8 = match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    };
    let mut out = format!("<{}>{tag}", FACILITY_DAEMON | severity).into_bytes();
    let message = message.trim_end_matches('\n');
    // One record per datagram: a newline inside a message would look like two lines in the
    // log file, the second without tag or time.
    for b in message.bytes() {
        out.push(if b == b'\n' || b == b'\r' { b' ' } else { b });
    }
    if out.len() > MAX_DATAGRAM {
        let mut cut = MAX_DATAGRAM;
        while cut > 0 && (out[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// One log line being formatted; sent when tracing drops the writer.
pub struct SyslogLine {
    sink: SyslogSink,
    level: Level,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // Bounded: a runaway message must not grow memory; the tail is cut at send anyway.
        let room = (MAX_DATAGRAM + 1).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink
                .send(self.level, &String::from_utf8_lossy(&self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for SyslogSink {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        self.line(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        self.line(*meta.level())
    }
}

impl SyslogSink {
    fn line(&self, level: Level) -> SyslogLine {
        SyslogLine {
            sink: self.clone(),
            level,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_priority_for_facility_daemon_without_timestamp() {
        let tag = "carpd[42]: ";
        assert_eq!(encode(tag, Level::ERROR, "x\n"), b"<27>carpd[42]: x");
        assert_eq!(encode(tag, Level::WARN, "x"), b"<28>carpd[42]: x");
        assert_eq!(encode(tag, Level::INFO, "x"), b"<30>carpd[42]: x");
        assert_eq!(encode(tag, Level::DEBUG, "x"), b"<31>carpd[42]: x");
        assert_eq!(encode(tag, Level::TRACE, "x"), b"<31>carpd[42]: x");
    }

    #[test]
    fn keeps_one_record_per_datagram_and_bounds_it() {
        assert_eq!(encode("t: ", Level::INFO, "a\nb\r\nc\n"), b"<30>t: a b  c");
        let long = "é".repeat(MAX_DATAGRAM);
        let d = encode("t: ", Level::INFO, &long);
        assert!(d.len() <= MAX_DATAGRAM);
        // Cut on a character boundary.
        assert!(std::str::from_utf8(&d).is_ok());
    }

    #[test]
    fn sends_through_a_real_datagram_socket_and_reconnects_after_a_syslogd_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let sink = SyslogSink::connect(&path, "carpd").unwrap();
        sink.send(Level::WARN, "first");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(got, format!("<28>carpd[{}]: first", std::process::id()));

        // syslogd restarts: the socket file is re-created.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        let server = UnixDatagram::bind(&path).unwrap();
        sink.send(Level::INFO, "second");
        let n = server.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .ends_with(": second")
        );
    }

    #[test]
    fn a_line_writer_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let sink = SyslogSink::connect(&path, "carpd").unwrap();
        {
            let mut line = sink.line(Level::INFO);
            for _ in 0..10_000 {
                line.write_all(&[b'x'; 100]).unwrap();
            }
            assert!(line.buf.len() <= MAX_DATAGRAM + 1);
        }
        let mut buf = vec![0u8; 2 * MAX_DATAGRAM];
        let n = server.recv(&mut buf).unwrap();
        assert!(n <= MAX_DATAGRAM);
    }
}
