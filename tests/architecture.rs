//! The shape of carpd's code, as the README's "Architecture" section describes it: the
//! top-level modules of `src/` import each other in one direction only (no circle), and the
//! configuration sits below the adapters (it uses only the shared vocabulary, `carp`, and the
//! OVH types its settings are parsed into).
//!
//! An edge is a `crate::<module>` path in a module's code; comments and unit tests (files
//! named `tests.rs`, a trailing inline `#[cfg(test)] mod tests { .. }`) do not count: a test may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module -> the modules it uses, with one place each use happens.
fn edges() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(&src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (!matches!(name, "lib" | "main")).then(|| name.to_string())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|p| module_of(p)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(f) else { continue };
        if f.file_name()
            .is_some_and(|n| n == "tests.rs" || n.to_string_lossy().ends_with("_tests.rs"))
        {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let code = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for piece in line.split("crate::").skip(1) {
                let to: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if to != from && modules.contains(&to) {
                    edges
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("{}:{}", f.display(), n + 1));
                }
            }
        }
    }
    edges
}

/// A path `from -> ... -> from`, if there is one.
fn circle_through(
    start: &str,
    edges: &BTreeMap<String, BTreeMap<String, String>>,
) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in edges.get(&at).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                let mut p = path.clone();
                p.push(next.clone());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_in_one_direction() {
    let edges = edges();
    assert!(
        edges
            .get("daemon")
            .is_some_and(|m| m.contains_key("controller")),
        "the scan found no daemon -> controller edge: it is broken"
    );
    let mut circles = Vec::new();
    for m in edges.keys() {
        if let Some(c) = circle_through(m, &edges) {
            let places: Vec<String> = c
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], edges[&w[0]][&w[1]]))
                .collect();
            circles.push(places.join("; "));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between top-level modules (move the shared item down, into the module both use):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_configuration_depends_only_on_the_vocabulary_and_the_ovh_types() {
    let edges = edges();
    let allowed = ["carp", "ovh"];
    let extra: Vec<String> = edges
        .get("config")
        .into_iter()
        .flatten()
        .filter(|(to, _)| !allowed.contains(&to.as_str()))
        .map(|(to, at)| format!("config -> {to} ({at})"))
        .collect();
    assert!(
        extra.is_empty(),
        "the configuration must not depend on the adapters, the controller or the edges: {extra:#?}"
    );
}
