//! The man pages stay true to the code: `man/carpd.8` against the clap command tree, and
//! `man/carpd.yaml.5` against the keys the configuration parser knows.
//!
//! Both directions are checked, so adding a subcommand, flag or key without documenting it
//! fails here, and so does documenting one that does not exist (a rename, a typo):
//!
//! - carpd.8: every visible leaf subcommand has a `.It Cm <path>` entry in COMMANDS naming its
//!   positional arguments (`Ar`) and long flags (`Fl -name`); every global option has an
//!   `.It Fl` entry before COMMANDS; every option's default, possible values and environment
//!   variable (ENVIRONMENT, `.It Ev`) are written down. Conversely every entry is a real
//!   subcommand and every `Fl -name` is a flag of the entry's command (or a global one).
//! - carpd.yaml.5: the key tree comes from the parser itself, not from a hand list. A probe
//!   `{__probe__: x}` is put at a key's place in an otherwise valid configuration and fed to
//!   `carpd::config::parse`; the refusal names the keys allowed there (serde's
//!   `deny_unknown_fields` list, or the hand-checked maps' own "allowed ..." messages), and
//!   "expected sequence start" marks a list. Every key found must have a `.It Cm <path>` entry
//!   in KEYS, and every entry must be a key the parser knows.
//! - Every complete configuration written in carpd.yaml.5 (a literal block starting with
//!   `node:`) or in docs/operations.md (a yaml block starting with `node:`) is accepted by the
//!   parser, and every key any of their YAML examples uses is documented in carpd.yaml.5.
//! - Every `carpd ...` line of the guide's sh blocks names a subcommand and flags that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::{ArgAction, CommandFactory};
use serde_json::{Value, json};

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of section `.Sh name` (up to the next `.Sh`).
fn section<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in page.lines() {
        if let Some(title) = line.strip_prefix(".Sh ") {
            inside = title.trim() == name;
            continue;
        }
        if inside {
            out.push(line);
        }
    }
    assert!(!out.is_empty(), "the man page has no `.Sh {name}` section");
    out
}

/// mdoc words of a line after its macro: `.It Cm failover-ip claim Ar ip` -> [Cm, failover-ip, ...].
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().skip(1).collect()
}

/// Long flags written as `Fl -name` in `text`, as `--name`.
fn long_flags_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with('.')) {
        let w: Vec<&str> = line.split_whitespace().collect();
        for pair in w.windows(2) {
            if pair[0] == "Fl" && pair[1].starts_with('-') && pair[1].len() > 1 {
                let name: String = pair[1][1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                out.insert(format!("--{name}"));
            }
        }
    }
    out
}

/// `--name` words of a shell line (`--timeout 2m`, `"--no-apply"`, `--config=x`).
fn dashed_words(line: &str) -> Vec<String> {
    line.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// carpd.8 against the clap command tree

struct Leaf {
    path: String,
    cmd: clap::Command,
}

/// Visible leaf subcommands, with their paths ("failover-ip claim").
fn leaves(cmd: &clap::Command, prefix: &str, out: &mut Vec<Leaf>) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let path = if prefix.is_empty() {
            sub.get_name().to_string()
        } else {
            format!("{prefix} {}", sub.get_name())
        };
        if sub.has_subcommands() {
            leaves(sub, &path, out);
        } else {
            out.push(Leaf {
                path,
                cmd: sub.clone(),
            });
        }
    }
}

fn visible_args(cmd: &clap::Command) -> impl Iterator<Item = &clap::Arg> {
    cmd.get_arguments().filter(|a| !a.is_hide_set())
}

/// `.It Cm` entries of COMMANDS: path -> (the `.It` line, the entry's text).
fn command_entries(page: &str) -> BTreeMap<String, (String, String)> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in section(page, "COMMANDS") {
        if let Some(rest) = line.strip_prefix(".It Cm ") {
            let path: Vec<&str> = rest
                .split_whitespace()
                .take_while(|w| {
                    w.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
                .collect();
            let path = path.join(" ");
            assert!(
                !out.contains_key(&path),
                "carpd.8 documents `{path}` twice in COMMANDS"
            );
            out.insert(path.clone(), (line.to_string(), format!("{line}\n")));
            current = Some(path);
        } else if let Some(p) = &current {
            let entry = out.get_mut(p).expect("current entry");
            entry.1.push_str(line);
            entry.1.push('\n');
        }
    }
    out
}

/// `.It Fl` entries of the option list before COMMANDS: long flag -> the entry's text,
/// nested lists (the backends of --kernel) included.
fn option_entries(page: &str) -> BTreeMap<String, String> {
    let before = page
        .split("\n.Sh COMMANDS")
        .next()
        .expect("text before COMMANDS");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut depth = 0usize;
    for line in before.lines() {
        if line.starts_with(".Sh ") {
            current = None;
        } else if line.starts_with(".Bl ") {
            depth += 1;
        } else if line.starts_with(".El") {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                current = None;
            }
        } else if depth == 1 && line.starts_with(".It ") {
            current = None;
            if line.starts_with(".It Fl ") {
                let flags = long_flags_in(line);
                assert_eq!(flags.len(), 1, "one long flag per option entry: {line}");
                let flag = flags.into_iter().next().expect("one flag");
                out.insert(flag.clone(), String::new());
                current = Some(flag);
            }
        }
        if let Some(f) = &current {
            let t = out.get_mut(f).expect("current option");
            t.push_str(line);
            t.push('\n');
        }
    }
    out
}

fn environment(page: &str) -> BTreeSet<String> {
    section(page, "ENVIRONMENT")
        .iter()
        .filter_map(|l| l.strip_prefix(".It Ev "))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// An entry's words without mdoc macros, on one line: `default\n.Pa /x )` -> `default /x )`.
fn plain(text: &str) -> String {
    let is_macro = |w: &str| {
        (2..=3).contains(&w.len())
            && w.starts_with(|c: char| c.is_ascii_uppercase())
            && w[1..].chars().all(|c| c.is_ascii_lowercase())
    };
    text.lines()
        .flat_map(|l| {
            let macro_line = l.starts_with('.');
            l.trim_start_matches('.')
                .split_whitespace()
                .filter(move |w| !(macro_line && is_macro(w)))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What every documented option must say: its default, its possible values, its variable.
fn check_option_text(
    what: &str,
    arg: &clap::Arg,
    text: &str,
    env: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let plain = plain(text);
    for d in arg.get_default_values() {
        let d = d.to_string_lossy();
        let needle = format!("default {d}");
        let stated = plain.match_indices(&needle).any(|(i, _)| {
            !plain[i + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        });
        if !stated {
            problems.push(format!("{what}: `default {d}` is not stated"));
        }
    }
    // A switch (--json) has the possible values true/false: nothing to describe.
    let values = if arg.get_action().takes_values() {
        arg.get_possible_values()
    } else {
        Vec::new()
    };
    for v in values.iter().filter(|v| !v.is_hide_set()) {
        let needle = format!(" {}", v.get_name());
        if !text.contains(&needle) {
            problems.push(format!(
                "{what}: the value `{}` is not described",
                v.get_name()
            ));
        }
    }
    if let Some(var) = arg.get_env() {
        let var = var.to_string_lossy().to_string();
        if !env.contains(&var) {
            problems.push(format!(
                "{what}: its variable {var} is not in ENVIRONMENT (`.It Ev {var}`)"
            ));
        }
        if !text.contains(&var) {
            problems.push(format!(
                "{what}: the entry does not name its variable {var}"
            ));
        }
    }
}

#[test]
fn carpd_8_documents_every_subcommand_and_flag_and_nothing_else() {
    let page = read("man/carpd.8");
    let root = carpd::cli::Cli::command();
    let mut code = Vec::new();
    leaves(&root, "", &mut code);
    assert!(
        code.len() >= 10,
        "too few subcommands found: the walk is broken"
    );
    let entries = command_entries(&page);
    let options = option_entries(&page);
    let env = environment(&page);
    let globals: BTreeSet<String> = visible_args(&root)
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut problems = Vec::new();

    // Code -> page.
    for leaf in &code {
        let Some((it_line, text)) = entries.get(&leaf.path) else {
            problems.push(format!(
                "subcommand `{}` has no `.It Cm {}` entry in COMMANDS",
                leaf.path, leaf.path
            ));
            continue;
        };
        for arg in visible_args(&leaf.cmd) {
            let what = format!("`{}` {}", leaf.path, arg.get_id());
            if arg.is_positional() {
                let id = arg.get_id().as_str();
                let multiple = matches!(arg.get_action(), ArgAction::Append);
                let singular = id.strip_suffix('s').filter(|_| multiple);
                let named = words(it_line)
                    .windows(2)
                    .any(|w| w[0] == "Ar" && (w[1] == id || Some(w[1]) == singular));
                if !named {
                    problems.push(format!(
                        "{what}: the entry line does not name it as `Ar {id}`"
                    ));
                }
                continue;
            }
            if let Some(long) = arg.get_long()
                && !long_flags_in(text).contains(&format!("--{long}"))
            {
                problems.push(format!("{what}: `Fl -{long}` is not in its entry"));
            }
            if let Some(short) = arg.get_short()
                && !text.contains(&format!("Fl {short}"))
            {
                problems.push(format!("{what}: `Fl {short}` is not in its entry"));
            }
            check_option_text(&what, arg, text, &env, &mut problems);
        }
    }
    for arg in visible_args(&root) {
        let Some(long) = arg.get_long() else { continue };
        let what = format!("global option --{long}");
        match options.get(&format!("--{long}")) {
            None => problems.push(format!("{what} has no `.It Fl` entry before COMMANDS")),
            Some(text) => {
                if let Some(short) = arg.get_short()
                    && !text.contains(&format!("Fl {short}"))
                {
                    problems.push(format!("{what}: its short form `Fl {short}` is not shown"));
                }
                check_option_text(&what, arg, text, &env, &mut problems);
            }
        }
    }

    // Page -> code.
    let by_path: BTreeMap<&str, &clap::Command> =
        code.iter().map(|l| (l.path.as_str(), &l.cmd)).collect();
    let mut all_flags = globals.clone();
    for (path, (_, text)) in &entries {
        let known: BTreeSet<String> = match by_path.get(path.as_str()) {
            Some(cmd) => visible_args(cmd)
                .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
                .collect(),
            None => {
                problems.push(format!(
                    "COMMANDS documents `{path}`, which is not a subcommand"
                ));
                continue;
            }
        };
        for f in long_flags_in(text) {
            if !known.contains(&f) && !globals.contains(&f) {
                problems.push(format!(
                    "the `{path}` entry mentions {f}, which is neither its flag nor a global one"
                ));
            }
        }
        all_flags.extend(known);
    }
    for f in options.keys() {
        if !globals.contains(f) {
            problems.push(format!(
                "the option list documents {f}, which is not a global option"
            ));
        }
    }
    // Flags in running text, and in the examples' carpd command lines.
    let mut mentioned = long_flags_in(&page);
    for block in literal_blocks(&page) {
        for line in block.lines().filter(|l| l.contains("carpd")) {
            mentioned.extend(dashed_words(line));
        }
    }
    for f in mentioned {
        if !all_flags.contains(&f) {
            problems.push(format!("carpd.8 mentions {f}, which no command has"));
        }
    }
    assert!(
        problems.is_empty(),
        "carpd.8 is out of step with the CLI:\n{}",
        problems.join("\n")
    );
}

/// The walk itself sees hidden things as hidden: `simulate` and `--syslog-socket` stay out of
/// the page, and a hidden item documented by mistake would be reported as unknown.
#[test]
fn hidden_subcommands_and_flags_are_not_documented() {
    let page = read("man/carpd.8");
    let root = carpd::cli::Cli::command();
    let hidden_cmds: Vec<&str> = root
        .get_subcommands()
        .filter(|s| s.is_hide_set())
        .map(|s| s.get_name())
        .collect();
    assert!(hidden_cmds.contains(&"simulate"), "{hidden_cmds:?}");
    let entries = command_entries(&page);
    for h in hidden_cmds {
        assert!(!entries.contains_key(h), "hidden `{h}` is documented");
    }
    let hidden_flags: Vec<String> = root
        .get_arguments()
        .filter(|a| a.is_hide_set())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    assert!(hidden_flags.contains(&"--syslog-socket".to_string()));
    let documented = long_flags_in(&page);
    for f in hidden_flags {
        assert!(!documented.contains(&f), "hidden {f} is documented");
    }
}

// ---------------------------------------------------------------------------------------------
// carpd.yaml.5 against the configuration parser

const PROBE: &str = "__probe__";

/// A valid configuration with every section present, so that a probe anywhere reaches the
/// parser's check for that place. JSON is YAML, and is easy to edit by path.
fn base() -> Value {
    json!({
        "node": "probe",
        "carp": {},
        "groups": [{"interface": "vmx1", "vhid": 2, "addresses": ["51.68.252.230/32"]}],
        "daemon": {},
        "vault": {},
        "ovh": {"endpoint": "ovh-eu", "credentials": {"vault": "apps/network/x"}},
        "failover_ips": [{
            "ip": "51.68.252.230", "group": "2@vmx1",
            "ovh_virtual_mac": {"service": "ns1.eu", "mac": "02:00:00:aa:bb:cc"}
        }]
    })
}

fn parse_json(v: &Value) -> Result<(), String> {
    carpd::config::parse(&v.to_string(), Path::new("probe.yaml"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Sets `value` at `path` (`groups[].password` means the first element), creating maps.
fn set(root: &mut Value, path: &[String], value: Value) {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        let (name, list) = match seg.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (seg.as_str(), false),
        };
        let map = cur.as_object_mut().expect("a map on the way");
        let last = i + 1 == path.len();
        if last && !list {
            map.insert(name.to_string(), value);
            return;
        }
        let slot = map
            .entry(name.to_string())
            .or_insert_with(|| if list { json!([{}]) } else { json!({}) });
        cur = if list {
            let arr = slot.as_array_mut().expect("a list");
            if arr.is_empty() {
                arr.push(json!({}));
            }
            if last {
                arr[0] = value;
                return;
            }
            &mut arr[0]
        } else {
            slot
        };
    }
}

/// The keys allowed where a probe was refused, from the refusal's wording; `None` when the
/// place is not a map (a scalar, a list of scalars).
fn allowed_keys(message: &str) -> Option<Vec<String>> {
    // Problem lines start with the file name; the source snippet under them quotes the
    // input (the probe included) and is not a message.
    let first = message
        .lines()
        .find(|l| l.starts_with("probe.yaml:") && l.contains(PROBE))
        .unwrap_or_default();
    let names = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|s| s.trim().trim_matches('`').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    // serde's deny_unknown_fields: "unknown field `x`, expected one of a, b" / "expected `a`".
    if let Some(rest) = first.split("expected one of ").nth(1) {
        return Some(names(rest));
    }
    if let Some(rest) = first
        .split(&format!("unknown field `{PROBE}`, expected "))
        .nth(1)
    {
        return Some(names(rest));
    }
    // Hand-checked map with a list: "unknown: allowed a, b, c (what they mean)".
    if let Some(rest) = first.split("unknown: allowed ").nth(1) {
        return Some(names(rest.split(" (").next().unwrap_or(rest)));
    }
    // Hand-checked map by shapes: "expected {file: /path} or {vault: mount/path, field: name}".
    if let Some(rest) = first.split("expected {").nth(1) {
        let mut keys = Vec::new();
        for part in rest.split(['{', ',']) {
            if let Some((k, _)) = part.split_once(':') {
                let k = k.trim();
                if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    keys.push(k.to_string());
                }
            }
        }
        return Some(keys);
    }
    assert!(
        !first.contains(PROBE),
        "the parser refused the probe key in a way this test cannot read the allowed keys \
         from; teach allowed_keys() the new wording:\n{message}"
    );
    None
}

/// Every key path the parser knows, found by probing. Lists are written `name[]`.
fn code_keys() -> BTreeSet<String> {
    let base = base();
    parse_json(&base).unwrap_or_else(|e| panic!("the probe base must be valid:\n{e}"));
    let mut out = BTreeSet::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let mut v = base.clone();
        let probe = json!({ PROBE: "x" });
        if path.is_empty() {
            v.as_object_mut()
                .expect("map")
                .insert(PROBE.into(), json!("x"));
        } else {
            set(&mut v, &path, probe.clone());
        }
        let mut msg = match parse_json(&v) {
            Ok(()) => panic!("a probe at {} was accepted", path.join(".")),
            Err(m) => m,
        };
        let mut path = path;
        if msg.contains("expected sequence start") {
            // A list: probe its first element, and name it `key[]`.
            let mut v = base.clone();
            set(&mut v, &path, json!([probe]));
            msg = parse_json(&v).expect_err("probe in a list");
            let last = path.pop().expect("a list has a name");
            path.push(format!("{last}[]"));
        }
        if !path.is_empty() {
            out.insert(path.join("."));
        }
        if let Some(children) = allowed_keys(&msg) {
            assert!(!children.is_empty(), "no keys read from:\n{msg}");
            for c in children {
                let mut p = path.clone();
                p.push(c);
                todo.push(p);
            }
        }
    }
    // A list is documented by its name (`groups`), its elements' keys as `groups[].vhid`.
    out.into_iter()
        .map(|k| k.strip_suffix("[]").map_or(k.clone(), str::to_string))
        .collect()
}

/// `.It Cm <path>` entries of KEYS.
fn documented_keys(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in section(page, "KEYS") {
        if let Some(rest) = line.strip_prefix(".It Cm ") {
            let key = rest.split_whitespace().next().unwrap_or("").to_string();
            assert!(
                out.insert(key.clone()),
                "carpd.yaml.5 documents {key} twice"
            );
        }
    }
    out
}

#[test]
fn the_key_probe_finds_nested_and_hand_checked_keys() {
    // Guards the probe itself, so that a broken walk cannot make the comparison vacuous.
    let keys = code_keys();
    for k in [
        "node",
        "groups",
        "groups[].vhid",
        "groups[].password.file",
        "groups[].password.field",
        "daemon.coalesce",
        "ovh.credentials.fields.consumer_key",
        "failover_ips[].ovh_virtual_mac.mac",
        "failover_ips[].ovh_ip_move.block",
    ] {
        assert!(keys.contains(k), "{k} not found; found: {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.contains(PROBE)), "{keys:?}");
}

#[test]
fn carpd_yaml_5_documents_every_key_and_nothing_else() {
    let page = read("man/carpd.yaml.5");
    let code = code_keys();
    let documented = documented_keys(&page);
    let mut problems = Vec::new();
    for k in &code {
        if !documented.contains(k) {
            problems.push(format!("key {k} has no `.It Cm {k}` entry in KEYS"));
        }
    }
    for k in &documented {
        if !code.contains(k) {
            problems.push(format!(
                "carpd.yaml.5 documents {k}, which the parser does not know"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "carpd.yaml.5 is out of step with the parser:\n{}",
        problems.join("\n")
    );
}

/// Literal blocks (`.Bd -literal` ... `.Ed`) of a page, unescaped (`\e` is a backslash).
fn literal_blocks(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in page.lines() {
        if line.starts_with(".Bd -literal") {
            cur = Some(String::new());
        } else if line.starts_with(".Ed") {
            if let Some(b) = cur.take() {
                out.push(b);
            }
        } else if let Some(b) = &mut cur {
            b.push_str(&line.replace("\\e", "\\").replace("\\&", ""));
            b.push('\n');
        }
    }
    out
}

#[test]
fn complete_configurations_in_carpd_yaml_5_are_valid() {
    let page = read("man/carpd.yaml.5");
    let configs: Vec<String> = literal_blocks(&page)
        .into_iter()
        .filter(|b| b.trim_start().starts_with("node:"))
        .collect();
    assert!(
        configs.len() >= 2,
        "carpd.yaml.5 should show both routers' complete configurations"
    );
    for c in &configs {
        if let Err(e) = carpd::config::parse(c, Path::new("carpd.yaml.5")) {
            panic!("an example in carpd.yaml.5 is refused:\n{e}\n--- example\n{c}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The operations guide (docs/operations.md) and the examples of carpd.yaml.5 use only what
// exists: configurations parse, keys are documented, carpd command lines name real
// subcommands and flags.

/// Fenced code blocks of a Markdown file: (info string, text). A block inside a list item
/// is indented like its fence; that indent is removed (YAML depends on it).
fn fenced_blocks(md: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, String, usize)> = None;
    for line in md.lines() {
        let indent = line.len() - line.trim_start().len();
        let fence = line.trim_start().strip_prefix("```");
        match (&mut cur, fence) {
            (None, Some(info)) => cur = Some((info.trim().to_string(), String::new(), indent)),
            (Some(_), Some(_)) => {
                let (info, text, _) = cur.take().expect("open block");
                out.push((info, text));
            }
            (Some((_, text, fence_indent)), None) => {
                let cut = line.len().min(*fence_indent);
                let (lead, rest) = line.split_at(cut);
                assert!(lead.trim().is_empty(), "text left of its fence: {line}");
                text.push_str(rest);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// Key paths used by a YAML text, in carpd.yaml.5's notation (`groups[].vhid`).
fn yaml_key_paths(yaml: &str) -> BTreeSet<String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.insert(path.clone());
                    walk(child, &path, out);
                }
            }
            Value::Array(items) => {
                for item in items.iter().filter(|i| i.is_object()) {
                    walk(item, &format!("{prefix}[]"), out);
                }
            }
            _ => {}
        }
    }
    let v: Value = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let mut out = BTreeSet::new();
    walk(&v, "", &mut out);
    out
}

fn is_complete_config(yaml: &str) -> bool {
    yaml.lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .is_some_and(|l| l.starts_with("node:"))
}

#[test]
fn yaml_in_the_guide_and_the_man_page_parses_and_uses_documented_keys() {
    let documented = documented_keys(&read("man/carpd.yaml.5"));
    let guide = read("docs/operations.md");
    let mut blocks: Vec<(String, String)> = fenced_blocks(&guide)
        .into_iter()
        .filter(|(info, _)| info == "yaml")
        .map(|(_, t)| ("docs/operations.md".to_string(), t))
        .collect();
    let complete_in_guide = blocks.iter().filter(|(_, t)| is_complete_config(t)).count();
    assert!(
        complete_in_guide >= 2,
        "the guide should configure both routers in full"
    );
    blocks.extend(
        literal_blocks(&read("man/carpd.yaml.5"))
            .into_iter()
            .map(|t| ("man/carpd.yaml.5".to_string(), t)),
    );
    for (file, yaml) in &blocks {
        for k in yaml_key_paths(yaml) {
            assert!(
                documented.contains(&k),
                "{file} uses the key {k}, which carpd.yaml.5 does not document:\n{yaml}"
            );
        }
        if is_complete_config(yaml)
            && let Err(e) = carpd::config::parse(yaml, Path::new(file))
        {
            panic!("a configuration in {file} is refused:\n{e}\n--- it was\n{yaml}");
        }
    }
}

#[test]
fn carpd_command_lines_in_the_guide_exist() {
    let root = carpd::cli::Cli::command();
    let mut code = Vec::new();
    leaves(&root, "", &mut code);
    let commands: BTreeMap<String, BTreeSet<String>> = code
        .iter()
        .map(|l| {
            let flags = visible_args(&l.cmd)
                .filter_map(|a| a.get_long().map(|f| format!("--{f}")))
                .collect();
            (l.path.clone(), flags)
        })
        .collect();
    let mut globals = BTreeSet::new();
    let mut global_with_value = BTreeSet::new();
    for a in visible_args(&root) {
        let takes = a.get_action().takes_values();
        for name in a
            .get_long()
            .map(|l| format!("--{l}"))
            .into_iter()
            .chain(a.get_short().map(|s| format!("-{s}")))
        {
            globals.insert(name.clone());
            if takes {
                global_with_value.insert(name);
            }
        }
    }
    // The operations guide and the migration guide: both are what operators type from.
    let guide = read("docs/operations.md") + "\n" + &read("docs/migration.md");
    let mut problems = Vec::new();
    let mut seen = 0;
    for (info, text) in fenced_blocks(&guide) {
        if info != "sh" {
            continue;
        }
        for line in text.lines() {
            let line = line.split(" #").next().unwrap_or("").trim();
            let Some(rest) = line.strip_prefix("carpd ") else {
                continue;
            };
            seen += 1;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let mut path: Vec<&str> = Vec::new();
            let mut flags = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let w = words[i];
                if w.starts_with('-') {
                    let name = w.split('=').next().unwrap_or(w);
                    flags.push(name.to_string());
                    if global_with_value.contains(name) && !w.contains('=') {
                        i += 1;
                    }
                } else {
                    let candidate = if path.is_empty() {
                        w.to_string()
                    } else {
                        format!("{} {w}", path.join(" "))
                    };
                    if commands
                        .keys()
                        .any(|c| c == &candidate || c.starts_with(&format!("{candidate} ")))
                    {
                        path.push(w);
                    }
                }
                i += 1;
            }
            let path = path.join(" ");
            let Some(own) = commands.get(&path) else {
                problems.push(format!("`{line}`: `{path}` is not a carpd command"));
                continue;
            };
            for f in flags {
                if !own.contains(&f) && !globals.contains(&f) {
                    problems.push(format!("`{line}`: {f} is not a flag of `carpd {path}`"));
                }
            }
        }
    }
    assert!(
        seen >= 10,
        "too few carpd command lines found: the scan is broken"
    );
    assert!(
        problems.is_empty(),
        "docs/operations.md runs carpd in ways the CLI does not know:\n{}",
        problems.join("\n")
    );
}
