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
//!
//! Like FreeBSD's libc syslog(3), the sink connects to `/var/run/logpriv` first (root only;
//! syslogd never drops what arrives there) and falls back to `/var/run/log`. Unlike libc, it
//! never waits for syslogd: the socket is non-blocking, and a line syslogd cannot take now
//! (its buffer is full: EAGAIN/ENOBUFS) is dropped and counted, so a stalled syslogd can
//! never stall the daemon's loop. The count is [`dropped_lines`], exported as the metric
//! `carpd_log_lines_dropped_total`.

use std::io::{self, IsTerminal, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// Where log lines go (`--log-target`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// syslog when stderr is not a terminal (the service, the devd hook), else stderr.
    Auto,
    Stderr,
    Syslog,
}

/// The local syslog sockets, in the order libc tries them: FreeBSD's syslogd listens on
/// /var/run/logpriv (mode 0600: root only, never dropped) and /var/run/log; Linux's on
/// /dev/log.
pub const SYSLOG_SOCKETS: &[&str] = if cfg!(target_os = "freebsd") {
    &["/var/run/logpriv", "/var/run/log"]
} else {
    &["/dev/log"]
};

/// Lines the process's syslog sink dropped because syslogd could not take them at once.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines the process's syslog sink has dropped (`carpd_log_lines_dropped_total`).
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// syslog facility `daemon` (3), shifted as RFC 3164 encodes it.
const FACILITY_DAEMON: u8 = 3 << 3;

/// Longest message sent in one datagram: FreeBSD's syslogd reads at most 8 KiB (MAXLINE).
const MAX_DATAGRAM: usize = 8192;

/// Sets up logging at `level`: error, warn, info, debug, trace, or directives
/// `level,target=level,...` (tracing's `Targets` syntax; no span or field filters, which would
/// bring a regular-expression engine into the router's binary for no operator need).
/// `syslog_socket` overrides [`SYSLOG_SOCKETS`] (tests). When syslog cannot be reached, lines
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
    let (filter, bad) = match directives.parse::<Targets>() {
        Ok(f) => (f, false),
        Err(_) => (Targets::new().with_default(tracing::Level::WARN), true),
    };
    let use_syslog = match target {
        LogTarget::Stderr => false,
        LogTarget::Syslog => true,
        LogTarget::Auto => !io::stderr().is_terminal(),
    };
    let mut unreachable = None;
    if use_syslog {
        let paths: Vec<PathBuf> = match syslog_socket {
            Some(p) => vec![p.to_path_buf()],
            None => SYSLOG_SOCKETS.iter().map(PathBuf::from).collect(),
        };
        match SyslogSink::connect_first(&paths, "carpd") {
            Ok(mut sink) => {
                sink.counts_for_process();
                let layer = tracing_subscriber::fmt::layer()
                    .with_writer(sink)
                    .with_ansi(false)
                    .without_time()
                    // The priority carries the level; syslogd adds time and host.
                    .with_level(false)
                    .with_target(false);
                let _ = tracing_subscriber::registry()
                    .with(layer.with_filter(filter))
                    .try_init();
                if bad {
                    tracing::warn!(level, "invalid --log-level, using warn");
                }
                return true;
            }
            Err(e) if target == LogTarget::Syslog => unreachable = Some(e.to_string()),
            // auto: no syslogd (a container, a chroot): stderr is the honest fallback.
            Err(_) => {}
        }
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
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
    /// Lines this sink dropped.
    dropped: Arc<AtomicU64>,
    /// Whether drops also count in [`dropped_lines`] (the process's logger).
    process: bool,
}

#[derive(Debug)]
struct SinkInner {
    /// The sockets to try, in order (logpriv first).
    paths: Vec<PathBuf>,
    socket: UnixDatagram,
    /// `carpd[pid]: `, the RFC 3164 TAG and its separator.
    tag: String,
}

/// A non-blocking datagram socket connected to the first of `paths` that accepts.
fn connect_any(paths: &[PathBuf]) -> io::Result<UnixDatagram> {
    let mut errors = Vec::new();
    for p in paths {
        let attempt = UnixDatagram::unbound().and_then(|s| {
            s.connect(p)?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => errors.push(format!("{}: {e}", p.display())),
        }
    }
    Err(io::Error::other(if errors.is_empty() {
        "no syslog socket to try".to_string()
    } else {
        errors.join("; ")
    }))
}

/// syslogd cannot take the line now: drop it rather than wait.
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

impl SyslogSink {
    /// Connects to `path` alone.
    pub fn connect(path: &Path, ident: &str) -> io::Result<SyslogSink> {
        SyslogSink::connect_first(&[path.to_path_buf()], ident)
    }

    /// Connects to the first of `paths` that accepts (libc's order: logpriv, then log).
    pub fn connect_first(paths: &[PathBuf], ident: &str) -> io::Result<SyslogSink> {
        let socket = connect_any(paths)?;
        Ok(SyslogSink {
            inner: Arc::new(Mutex::new(SinkInner {
                paths: paths.to_vec(),
                socket,
                tag: format!("{ident}[{}]: ", std::process::id()),
            })),
            dropped: Arc::new(AtomicU64::new(0)),
            process: false,
        })
    }

    /// Counts this sink's drops in [`dropped_lines`] too.
    fn counts_for_process(&mut self) {
        self.process = true;
    }

    /// Lines this sink dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn drop_line(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        if self.process {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends one message at `level`, never waiting. A full syslogd drops the line (counted).
    /// If syslogd was restarted (the socket was re-created), reconnects once, in libc's
    /// order, and retries; a line that still cannot be sent is dropped and counted, since
    /// there is nowhere better to say so.
    pub fn send(&self, level: Level, message: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let datagram = encode(&inner.tag, level, message);
        match inner.socket.send(&datagram) {
            Ok(_) => return,
            Err(e) if is_full(&e) => return self.drop_line(),
            Err(_) => {}
        }
        let sent = connect_any(&inner.paths).and_then(|socket| {
            inner.socket = socket;
            inner.socket.send(&datagram)
        });
        if sent.is_err() {
            self.drop_line();
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

    /// issue 16: like FreeBSD's libc, logpriv first, then log.
    #[test]
    fn connects_to_logpriv_first_and_falls_back_to_log() {
        let dir = tempfile::tempdir().unwrap();
        let logpriv = dir.path().join("logpriv");
        let log = dir.path().join("log");
        let paths = [logpriv.clone(), log.clone()];
        let public = UnixDatagram::bind(&log).unwrap();
        public.set_nonblocking(true).unwrap();
        // No logpriv (not root, or syslogd without it): the public socket.
        let sink = SyslogSink::connect_first(&paths, "carpd").unwrap();
        sink.send(Level::INFO, "via log");
        let mut buf = [0u8; 256];
        let n = public.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().ends_with("via log"));
        // With logpriv: it is preferred.
        let private = UnixDatagram::bind(&logpriv).unwrap();
        let sink = SyslogSink::connect_first(&paths, "carpd").unwrap();
        sink.send(Level::INFO, "via logpriv");
        let n = private.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .ends_with("via logpriv")
        );
        assert!(public.recv(&mut buf).is_err(), "nothing on /var/run/log");
        // Neither: the error names both.
        let e = SyslogSink::connect_first(&[dir.path().join("a"), dir.path().join("b")], "carpd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/a:") && e.contains("/b:"), "{e}");
    }

    /// issue 16: a syslogd that does not read must never block the daemon: lines are
    /// dropped and counted instead.
    #[test]
    fn a_stalled_syslogd_never_blocks_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        let sink = SyslogSink::connect(&path, "carpd").unwrap();
        let line = "x".repeat(1000);
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            sink.send(Level::INFO, &line);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "sending to a stalled syslogd took {:?}",
            started.elapsed()
        );
        let dropped = sink.dropped();
        assert!(
            dropped > 0,
            "10 MB into a socket nobody reads: some must be dropped"
        );
        // What was not dropped arrived, whole.
        server.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 2048];
        let mut received = 0;
        while let Ok(n) = server.recv(&mut buf) {
            assert!(std::str::from_utf8(&buf[..n]).unwrap().ends_with(&line));
            received += 1;
        }
        assert_eq!(received + dropped, 10_000);
        // A sink that is not the process's logger leaves the process counter alone.
        assert_eq!(dropped_lines(), 0);
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
