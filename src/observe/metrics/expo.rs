//! A strict parser of the Prometheus text exposition format 0.0.4, for tests only.
//!
//! Written from the format's specification (prometheus.io, "Exposition formats"), stricter
//! than Prometheus itself where carpd's output should be: every family has HELP then TYPE
//! before its samples, a family's samples are contiguous, no comments, no timestamps, no
//! duplicate series or label names, only the three escapes in label values (`\\`, `\"`,
//! `\n`) and two in HELP (`\\`, `\n`), canonical float spelling, histograms complete (`le`
//! increasing, counts cumulative, `+Inf` equal to `_count`, a `_sum`), counters >= 0, and a
//! final line feed. Label values come back unescaped, so tests can compare them with what
//! went in.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: String,
    pub samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !s.starts_with("__")
}

fn unescape_help(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                other => return Err(format!("bad escape \\{other:?} in HELP")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let canonical = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'));
    if !canonical {
        return Err(format!("value {s:?} is not a number"));
    }
    s.parse::<f64>()
        .map_err(|e| format!("value {s:?} is not a number: {e}"))
}

/// `name{labels} value` with the labels unescaped.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("no value in {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end: Option<usize>;
        loop {
            // label name
            let start = match chars.peek() {
                Some((_, '}')) => {
                    end = chars.next().map(|(i, _)| i);
                    break;
                }
                Some((i, _)) => *i,
                None => return Err(format!("unterminated labels in {line:?}")),
            };
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let eq = eq.ok_or_else(|| format!("label without '=' in {line:?}"))?;
            let lname = &r[start..eq];
            if !is_label_name(lname) {
                return Err(format!("bad label name {lname:?} in {line:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label value not quoted in {line:?}"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value in {line:?}")),
                    Some((_, '"')) => break,
                    Some((_, '\n')) => return Err("raw line feed in a label value".into()),
                    Some((_, '\\')) => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => {
                            return Err(format!("bad escape \\{other:?} in {line:?}"));
                        }
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.iter().any(|(n, _): &(String, String)| n == lname) {
                return Err(format!("label {lname} twice in {line:?}"));
            }
            labels.push((lname.to_string(), value));
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    end = Some(i);
                    break;
                }
                _ => return Err(format!("expected ',' or '}}' after a label in {line:?}")),
            }
        }
        let end = end.ok_or_else(|| format!("unterminated labels in {line:?}"))?;
        rest = &r[end + 1..];
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no single space before the value in {line:?}"))?;
    if value.contains(' ') || value.contains('\t') {
        return Err(format!("extra field (timestamp?) in {line:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

/// Parses and checks a whole exposition.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition does not end with a line feed".into());
    }
    let mut families: Vec<Family> = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut pending_help: Option<(String, String)> = None;
    // Split on LF only: `str::lines` would also eat a CR, which is a valid raw character.
    let body = text.strip_suffix('\n').unwrap_or(text);
    for (n, line) in body.split('\n').enumerate().filter(|_| !text.is_empty()) {
        let at = |e: String| format!("line {}: {e}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest
                .split_once(' ')
                .ok_or_else(|| at("HELP without text".into()))?;
            if !is_metric_name(name) || names.contains(name) || pending_help.is_some() {
                return Err(at(format!("misplaced HELP for {name}")));
            }
            pending_help = Some((name.to_string(), unescape_help(help).map_err(at)?));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without a type".into()))?;
            let help = match pending_help.take() {
                Some((h, text)) if h == name => text,
                _ => return Err(at(format!("TYPE {name} not right after its HELP"))),
            };
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type {kind}")));
            }
            names.insert(name.to_string());
            families.push(Family {
                name: name.to_string(),
                help,
                kind: kind.to_string(),
                samples: Vec::new(),
            });
            continue;
        }
        if line.starts_with('#') {
            return Err(at("unexpected comment".into()));
        }
        if pending_help.is_some() {
            return Err(at("sample between HELP and TYPE".into()));
        }
        let s = parse_sample(line).map_err(at)?;
        let fam = families
            .last_mut()
            .ok_or_else(|| at("sample before any TYPE".into()))?;
        let ok_name = match fam.kind.as_str() {
            "histogram" => [
                format!("{}_bucket", fam.name),
                format!("{}_sum", fam.name),
                format!("{}_count", fam.name),
            ]
            .contains(&s.name),
            _ => s.name == fam.name,
        };
        if !ok_name {
            return Err(at(format!(
                "sample {} does not belong to the current family {}",
                s.name, fam.name
            )));
        }
        if s.label("le").is_some() != s.name.ends_with("_bucket") || s.label("quantile").is_some() {
            return Err(at(format!("misused le/quantile label on {}", s.name)));
        }
        if fam.kind == "counter" && (s.value.is_nan() || s.value < 0.0) {
            return Err(at(format!("negative or NaN counter {}", s.name)));
        }
        let mut key_labels = s.labels.clone();
        key_labels.sort();
        if !series.insert(format!("{}{:?}", s.name, key_labels)) {
            return Err(at(format!("duplicate series {line}")));
        }
        fam.samples.push(s);
    }
    if pending_help.is_some() {
        return Err("HELP without TYPE at the end".into());
    }
    for f in families.iter().filter(|f| f.kind == "histogram") {
        check_histogram(f)?;
    }
    Ok(families)
}

/// Buckets increasing in `le`, cumulative, ending with `+Inf` = `_count`, with a `_sum`.
fn check_histogram(f: &Family) -> Result<(), String> {
    type Key = Vec<(String, String)>;
    let mut buckets: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
    let mut sums: BTreeMap<Key, f64> = BTreeMap::new();
    let mut counts: BTreeMap<Key, f64> = BTreeMap::new();
    for s in &f.samples {
        let key: Key = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        if s.name.ends_with("_bucket") {
            let le = parse_value(s.label("le").unwrap_or(""))?;
            buckets.entry(key).or_default().push((le, s.value));
        } else if s.name.ends_with("_sum") {
            sums.insert(key, s.value);
        } else {
            counts.insert(key, s.value);
        }
    }
    for (key, bs) in &buckets {
        for w in bs.windows(2) {
            if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) || w[0].1 > w[1].1 {
                return Err(format!(
                    "{} {key:?}: buckets not increasing: {bs:?}",
                    f.name
                ));
            }
        }
        let last = bs.last().copied().unwrap_or((0.0, 0.0));
        if last.0 != f64::INFINITY {
            return Err(format!("{} {key:?}: no +Inf bucket", f.name));
        }
        if counts.get(key) != Some(&last.1) || !sums.contains_key(key) {
            return Err(format!("{} {key:?}: _count/_sum missing or wrong", f.name));
        }
    }
    if sums.len() != buckets.len() || counts.len() != buckets.len() {
        return Err(format!("{}: _sum/_count without buckets", f.name));
    }
    Ok(())
}

/// The samples of every family, flattened.
pub fn samples(families: &[Family]) -> Vec<&Sample> {
    families.iter().flat_map(|f| f.samples.iter()).collect()
}

/// The value of the one sample named `name` with exactly `labels`, if present.
pub fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(families)
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_checker_refuses_what_the_format_forbids() {
    let good = "# HELP a x\n# TYPE a counter\na{l=\"v\"} 1\n";
    assert!(parse(good).is_ok());
    let bad = [
        "# HELP a x\n# TYPE a counter\na{l=\"v\"} 1", // no final LF
        "# TYPE a counter\na 1\n",                    // no HELP
        "# HELP a x\n# TYPE a counter\na{l=\"v\\t\"} 1\n", // bad escape
        "# HELP a x\n# TYPE a counter\na{l=\"v\"\"} 1\n", // stray quote
        "# HELP a x\n# TYPE a counter\na{l=\"v\",l=\"w\"} 1\n", // label twice
        "# HELP a x\n# TYPE a counter\na 1\na 2\n",   // duplicate series
        "# HELP a x\n# TYPE a counter\nb 1\n",        // wrong family
        "# HELP a x\n# TYPE a counter\na -1\n",       // negative counter
        "# HELP a x\n# TYPE a gauge\na 1 1700000000\n", // timestamp
        "# HELP a x\n# TYPE a gauge\na inf\n",        // spelling
        "# HELP a x\n# TYPE a gauge\na{1l=\"v\"} 1\n", // label name
        "# HELP a x\n# TYPE a histogram\na_bucket{le=\"1\"} 1\na_sum 1\na_count 1\n", // no +Inf
        "# HELP a x\n# TYPE a histogram\na_bucket{le=\"1\"} 2\na_bucket{le=\"+Inf\"} 1\na_sum 1\na_count 1\n",
        "# HELP a x\n# TYPE a histogram\na_bucket{le=\"+Inf\"} 1\na_sum 1\na_count 2\n",
    ];
    for b in bad {
        assert!(parse(b).is_err(), "accepted: {b:?}");
    }
    let f =
        parse("# HELP a x\\\\y\\nz\n# TYPE a gauge\na{l=\"q\\\"\\\\\\n\",m=\"\"} 1.5\n").unwrap();
    assert_eq!(f[0].help, "x\\y\nz");
    assert_eq!(f[0].samples[0].label("l"), Some("q\"\\\n"));
    assert_eq!(f[0].samples[0].value, 1.5);
}
