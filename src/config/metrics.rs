//! The `metrics:` section of carpd.yaml: where `carpd run` exposes its Prometheus metrics.
//!
//! Both outputs are off unless configured: `listen` (an HTTP listener, loopback only: the
//! endpoint has no authentication, so another host must scrape through node_exporter or a
//! proxy) and `textfile` (a `.prom` file for node_exporter's textfile collector), rewritten
//! every `textfile_interval`. Pure validation: no socket is opened and no directory is read
//! here; the daemon reports those failures when it starts (see `observe::metrics`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::daemon::{RawDuration, duration};
use super::error::{Pos, Problems};

/// How often the textfile is rewritten when `textfile_interval` is not given.
pub const DEFAULT_TEXTFILE_INTERVAL: Duration = Duration::from_secs(15);

const TEXTFILE_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: Option<Spanned<String>>,
    pub textfile: Option<Spanned<String>>,
    pub textfile_interval: Option<Spanned<RawDuration>>,
}

/// The checked `metrics:` settings; the default exposes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Loopback address of the HTTP listener (`GET /metrics`); `None` = no listener.
    pub listen: Option<SocketAddr>,
    /// node_exporter textfile (`*.prom`); `None` = no file.
    pub textfile: Option<PathBuf>,
    pub textfile_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            textfile: None,
            textfile_interval: DEFAULT_TEXTFILE_INTERVAL,
        }
    }
}

pub fn validate_metrics(
    raw: Option<&RawMetrics>,
    p: &mut Problems,
    warnings: &mut Problems,
) -> MetricsConfig {
    let mut out = MetricsConfig::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(l) = &raw.listen {
        out.listen = listen(&l.value)
            .map_err(|m| p.add(Pos::of(l), "metrics.listen", m))
            .ok();
    }
    if let Some(t) = &raw.textfile {
        out.textfile = textfile(&t.value)
            .map_err(|m| p.add(Pos::of(t), "metrics.textfile", m))
            .ok();
    }
    if let Some(v) = &raw.textfile_interval {
        if let Some(d) = duration(p, "metrics.textfile_interval", v, TEXTFILE_INTERVAL_RANGE) {
            out.textfile_interval = d;
        }
        if raw.textfile.is_none() {
            warnings.add(
                Pos::of(v),
                "metrics.textfile_interval",
                "has no effect without metrics.textfile: add the textfile's path, or remove this key",
            );
        }
    }
    out
}

fn listen(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let addr: SocketAddr = t.parse().map_err(|_| {
        format!(
            "'{}' is not an address and port: write e.g. 127.0.0.1:9745 or [::1]:9745",
            t.escape_default()
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the metrics endpoint has no authentication, so carpd serves it on 127.0.0.1 or [::1] only. Use e.g. 127.0.0.1:9745, and let a remote Prometheus scrape node_exporter (metrics.textfile) or a proxy on this host"
        ));
    }
    if addr.port() == 0 {
        return Err(format!(
            "{addr} has port 0, which would pick a random port Prometheus cannot know: choose one, e.g. {}:9745",
            match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        ));
    }
    Ok(addr)
}

fn textfile(text: &str) -> Result<PathBuf, String> {
    let t = text.trim();
    let path = PathBuf::from(t);
    if !path.is_absolute() {
        return Err(format!(
            "'{}' must be an absolute path in node_exporter's textfile directory, e.g. /var/tmp/node_exporter/carpd.prom",
            t.escape_default()
        ));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if t.ends_with('/') || !name.ends_with(".prom") || name == ".prom" {
        return Err(format!(
            "'{}' must name a file ending in .prom (node_exporter's textfile collector reads only those), e.g. /var/tmp/node_exporter/carpd.prom",
            t.escape_default()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError, parse};

    fn parse_str(s: &str) -> Result<Config, ConfigError> {
        parse(s, Path::new("carpd.yaml"))
    }

    #[test]
    fn off_by_default() {
        let c = parse_str("node: n\n").unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.metrics.listen, None);
        assert_eq!(c.metrics.textfile, None);
        assert_eq!(c.metrics.textfile_interval, Duration::from_secs(15));
        let c = parse_str("node: n\nmetrics: {}\n").unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
    }

    #[test]
    fn a_full_section() {
        let c = parse_str(
            "node: n\nmetrics:\n  listen: 127.0.0.1:9745\n  textfile: /var/tmp/node_exporter/carpd.prom\n  textfile_interval: 1m\n",
        )
        .unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9745".parse().unwrap()));
        assert_eq!(
            c.metrics.textfile.as_deref(),
            Some(Path::new("/var/tmp/node_exporter/carpd.prom"))
        );
        assert_eq!(c.metrics.textfile_interval, Duration::from_secs(60));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = parse_str("node: n\nmetrics: { listen: \"[::1]:9745\", textfile_interval: 30 }\n");
        let c = c.unwrap();
        assert_eq!(c.metrics.listen, Some("[::1]:9745".parse().unwrap()));
        assert_eq!(c.metrics.textfile_interval, Duration::from_secs(30));
        // An interval without a file does nothing: said, not refused.
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0]
                .to_string()
                .contains("metrics.textfile_interval: has no effect without metrics.textfile"),
            "{}",
            c.warnings[0]
        );
        let c = parse_str("node: n\nmetrics:\n  listen: 127.0.0.2:9100\n").unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.2:9100".parse().unwrap()));
    }

    #[test]
    fn the_commented_example_is_valid() {
        let example = include_str!("../../examples/carpd.yaml");
        let block: Vec<&str> = example
            .lines()
            .skip_while(|l| *l != "# metrics:")
            .take_while(|l| l.starts_with("# "))
            .map(|l| &l[2..])
            .collect();
        assert!(
            block.len() == 4,
            "examples/carpd.yaml lost its metrics: block: {block:?}"
        );
        let c = parse_str(&format!("node: n\n{}\n", block.join("\n"))).unwrap();
        assert_eq!(c.metrics.listen, Some("127.0.0.1:9745".parse().unwrap()));
        assert_eq!(c.metrics.textfile_interval, DEFAULT_TEXTFILE_INTERVAL);
    }

    #[test]
    fn problems_name_key_line_and_fix() {
        let table = [
            (
                "node: n\nmetrics:\n  listen: 0.0.0.0:9745\n",
                "carpd.yaml:3:11: metrics.listen: 0.0.0.0:9745 is not a loopback address",
            ),
            (
                "node: n\nmetrics:\n  listen: 192.0.2.1:9745\n",
                "only. Use e.g. 127.0.0.1:9745",
            ),
            (
                "node: n\nmetrics:\n  listen: \"[::]:9745\"\n",
                "metrics.listen: [::]:9745 is not a loopback address",
            ),
            (
                "node: n\nmetrics:\n  listen: localhost:9745\n",
                "metrics.listen: 'localhost:9745' is not an address and port: write e.g. 127.0.0.1:9745",
            ),
            (
                "node: n\nmetrics:\n  listen: 127.0.0.1\n",
                "metrics.listen: '127.0.0.1' is not an address and port",
            ),
            (
                "node: n\nmetrics:\n  listen: 127.0.0.1:0\n",
                "metrics.listen: 127.0.0.1:0 has port 0, which would pick a random port Prometheus cannot know: choose one, e.g. 127.0.0.1:9745",
            ),
            (
                "node: n\nmetrics:\n  textfile: carpd.prom\n",
                "carpd.yaml:3:13: metrics.textfile: 'carpd.prom' must be an absolute path",
            ),
            (
                "node: n\nmetrics:\n  textfile: /var/tmp/node_exporter/carpd.txt\n",
                "metrics.textfile: '/var/tmp/node_exporter/carpd.txt' must name a file ending in .prom",
            ),
            (
                "node: n\nmetrics:\n  textfile: /var/tmp/node_exporter/\n",
                "must name a file ending in .prom",
            ),
            (
                "node: n\nmetrics:\n  textfile: /x/carpd.prom\n  textfile_interval: 0s\n",
                "carpd.yaml:4:22: metrics.textfile_interval: 0s is out of range: allowed 1s to 1h",
            ),
            (
                "node: n\nmetrics:\n  textfile: /x/carpd.prom\n  textfile_interval: often\n",
                "metrics.textfile_interval: \"often\" is not a duration",
            ),
            ("node: n\nmetrics:\n  port: 9745\n", "unknown field `port`"),
        ];
        for (text, want) in table {
            let e = parse_str(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}\n got: {e}\nwant: {want}");
        }
    }
}
