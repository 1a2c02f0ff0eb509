//! The FreeBSD port skeleton (packaging/freebsd/sysutils/carpd) cannot be built here (no
//! ports framework on Linux), so what can go wrong in it without FreeBSD is checked instead:
//!
//! - its rc.d script `files/carpd.in` is `rc.d/carpd` (the tested source of truth) with
//!   `/usr/local` turned into `%%PREFIX%%`, plus a banner: nothing else may differ;
//! - `pkg-plist` lists exactly what the Makefile's install target installs, in the form the
//!   framework expects (man pages `.gz`, `@sample` for the sample configuration, no rc.d
//!   script since `USE_RC_SUBR` adds it), and every installed source file exists;
//! - every man page in `man/` is installed, the binary is the crate's, and `DISTVERSION` is
//!   the crate's version.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const PORT: &str = "packaging/freebsd/sysutils/carpd";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The port Makefile's logical lines (continuations joined).
fn makefile_lines() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read(&format!("{PORT}/Makefile")).lines() {
        match line.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// `NAME=\tvalue` of the Makefile.
fn variable(name: &str) -> Option<String> {
    makefile_lines().iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == name).then(|| v.split('#').next().unwrap_or("").trim().to_string())
    })
}

/// (source, destination under ${PREFIX}) of every `${INSTALL_*}` line.
fn installs() -> Vec<(String, String)> {
    const STAGE: &str = "${STAGEDIR}${PREFIX}/";
    let mut out = Vec::new();
    for line in makefile_lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words.first().is_some_and(|w| w.starts_with("${INSTALL_")) {
            continue;
        }
        assert_eq!(
            words.len(),
            3,
            "one source and one destination per install line: {line}"
        );
        let dest = words[2]
            .strip_prefix(STAGE)
            .unwrap_or_else(|| panic!("install into {STAGE}: {line}"));
        let source_name = words[1].rsplit('/').next().unwrap_or("");
        // carpd.8 -> .../man8/carpd.8, carpd.yaml -> .../carpd.yaml.sample
        assert!(
            dest.rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with(source_name),
            "write the destination file in full (the plist check needs it): {line}"
        );
        out.push((words[1].to_string(), dest.to_string()));
    }
    assert!(out.len() >= 5, "too few install lines found: {out:?}");
    out
}

#[test]
fn the_port_rc_script_is_rc_d_carpd_with_prefix_substituted() {
    let port = read(&format!("{PORT}/files/carpd.in"));
    let source = read("rc.d/carpd");
    let fix = "run packaging/freebsd/sync-rc-script after editing rc.d/carpd";
    // The banner (lines 2-4) names the substitution; the script itself must have none left.
    assert!(
        !port.lines().skip(4).any(|l| l.contains("/usr/local")),
        "files/carpd.in still has a /usr/local: {fix}"
    );
    assert!(port.contains("%%PREFIX%%/sbin/carpd"), "{fix}");
    let banner = |l: &str| {
        l.starts_with("# Port copy of rc.d/carpd") || l.starts_with("# (/usr/local -> %%PREFIX%%)")
    };
    let lines: Vec<&str> = port.lines().collect();
    assert!(
        lines.iter().filter(|l| banner(l)).count() == 2,
        "files/carpd.in lost its banner: {fix}"
    );
    // Shebang, then "#" and the two banner lines, then the rest of rc.d/carpd.
    let mut back: Vec<String> = vec![lines[0].to_string()];
    back.extend(
        lines[4..]
            .iter()
            .map(|l| l.replace("%%PREFIX%%", "/usr/local")),
    );
    assert!(
        banner(lines[2]) && banner(lines[3]) && lines[1] == "#",
        "{fix}"
    );
    let back = back.join("\n") + "\n";
    assert!(
        back == source,
        "files/carpd.in differs from rc.d/carpd beyond %%PREFIX%%: {fix}"
    );
}

#[test]
fn sync_rc_script_regenerates_the_port_copy_exactly() {
    // The script writes into the tree; run it on a copy of the two files it touches.
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    std::fs::create_dir_all(root.join("rc.d")).unwrap();
    std::fs::create_dir_all(root.join("packaging/freebsd/sysutils/carpd/files")).unwrap();
    std::fs::copy(repo("rc.d/carpd"), root.join("rc.d/carpd")).unwrap();
    std::fs::copy(
        repo("packaging/freebsd/sync-rc-script"),
        root.join("packaging/freebsd/sync-rc-script"),
    )
    .unwrap();
    let out = Command::new("/bin/sh")
        .arg(root.join("packaging/freebsd/sync-rc-script"))
        .output()
        .expect("run sync-rc-script");
    assert!(out.status.success(), "{out:?}");
    let made = std::fs::read_to_string(root.join(format!("{PORT}/files/carpd.in"))).unwrap();
    assert!(
        made == read(&format!("{PORT}/files/carpd.in")),
        "files/carpd.in is not what packaging/freebsd/sync-rc-script makes: run it"
    );
    let shellcheck = Path::new("/usr/bin/shellcheck");
    assert!(
        shellcheck.exists(),
        "shellcheck is missing: apt-get install shellcheck"
    );
    let out = Command::new(shellcheck)
        .arg("--norc")
        .arg(repo("packaging/freebsd/sync-rc-script"))
        .output()
        .expect("run shellcheck");
    assert!(out.status.success(), "shellcheck sync-rc-script: {out:?}");
}

#[test]
fn pkg_plist_lists_exactly_what_the_makefile_installs() {
    let mut installed = BTreeSet::new();
    for (source, dest) in installs() {
        if let Some(rel) = source.strip_prefix("${WRKSRC}/") {
            assert!(
                repo(rel).is_file(),
                "the Makefile installs {rel}, which does not exist"
            );
        } else {
            assert_eq!(
                source, "${CARGO_TARGET_DIR}/${CARGO_BUILD_TARGET}/release/carpd",
                "unexpected install source"
            );
        }
        // The framework compresses man pages; the plist names the compressed file.
        let is_man = dest.starts_with("share/man/");
        installed.insert(if is_man { format!("{dest}.gz") } else { dest });
    }
    let mut listed = BTreeSet::new();
    for line in read(&format!("{PORT}/pkg-plist")).lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let path = match line.strip_prefix("@sample ") {
            Some(p) => {
                assert!(
                    p.ends_with(".sample"),
                    "@sample takes the .sample file: {line}"
                );
                p
            }
            None => {
                assert!(
                    !line.starts_with('@'),
                    "unexpected keyword in pkg-plist: {line}"
                );
                line
            }
        };
        assert!(listed.insert(path.to_string()), "listed twice: {path}");
    }
    assert!(
        !listed.contains("etc/rc.d/carpd"),
        "USE_RC_SUBR adds etc/rc.d/carpd to the plist itself: remove it from pkg-plist"
    );
    assert_eq!(
        installed, listed,
        "pkg-plist must list exactly what the Makefile installs (left: installed, right: listed)"
    );
    assert_eq!(variable("USE_RC_SUBR").as_deref(), Some("carpd"));
    assert!(repo(&format!("{PORT}/files/carpd.in")).is_file());
    assert!(variable("USES").is_some_and(|u| u.split_whitespace().any(|w| w == "cargo")));
}

#[test]
fn every_man_page_is_installed_and_the_binary_and_version_are_the_crates() {
    let installed: Vec<String> = installs().into_iter().map(|(s, _)| s).collect();
    for entry in std::fs::read_dir(repo("man")).expect("man/") {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            installed.contains(&format!("${{WRKSRC}}/man/{name}")),
            "man/{name} is not installed by the port"
        );
    }
    let manifest = read("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml version");
    assert_eq!(
        variable("DISTVERSION").as_deref(),
        Some(version),
        "DISTVERSION in the port Makefile must be Cargo.toml's version"
    );
    assert!(
        manifest.contains("[[bin]]\nname = \"carpd\""),
        "the port installs the binary named carpd"
    );
}
