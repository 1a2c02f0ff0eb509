//! The FreeBSD port (packaging/freebsd/sysutils/carpd) cannot be built here (no ports
//! framework on Linux), so what can go wrong in it without FreeBSD is checked instead:
//!
//! - its rc.d script `files/carpd.in` is `rc.d/carpd` (the tested source of truth) with
//!   `/usr/local` turned into `%%PREFIX%%`, plus a banner: nothing else may differ;
//! - `pkg-plist` lists exactly what the Makefile's install target installs, in the form the
//!   framework expects (man pages `.gz`, `@sample` for the sample configuration, no rc.d
//!   script since `USE_RC_SUBR` adds it), and every installed source file exists;
//! - the devd rule is installed as an example only (devd runs only the first matching rule),
//!   and the sample configuration is a generic one that `carpd check` accepts;
//! - every man page in `man/` is installed, the binary is the crate's, and `DISTVERSION` is
//!   the crate's version;
//! - the distfile is the release tarball `packaging/freebsd/make-distfile` makes, and
//!   `Makefile.crates` is what `packaging/freebsd/gen-makefile-crates` makes from Cargo.lock
//!   (the tarball's own Cargo.lock included);
//! - portlint's layout rules that can be checked without FreeBSD.

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

/// `${EXAMPLESDIR}` (the Makefile) and `%%EXAMPLESDIR%%` (pkg-plist), under ${PREFIX}.
const EXAMPLES: &str = "share/examples/carpd";

/// (source, destination under ${PREFIX}) of every `${INSTALL_*}` line.
fn installs() -> Vec<(String, String)> {
    const STAGE: &str = "${STAGEDIR}${PREFIX}/";
    const STAGE_EXAMPLES: &str = "${STAGEDIR}${EXAMPLESDIR}/";
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
        let dest = match words[2].strip_prefix(STAGE_EXAMPLES) {
            Some(rest) => format!("{EXAMPLES}/{rest}"),
            None => words[2]
                .strip_prefix(STAGE)
                .unwrap_or_else(|| panic!("install into {STAGE}: {line}"))
                .to_string(),
        };
        let source_name = words[1].rsplit('/').next().unwrap_or("");
        // carpd.8 -> .../man8/carpd.8, carpd.yaml -> .../carpd.yaml.sample
        assert!(
            dest.rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with(source_name),
            "write the destination file in full (the plist check needs it): {line}"
        );
        out.push((words[1].to_string(), dest));
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
        } else if let Some(name) = source.strip_prefix("${WRKDIR}/") {
            // A SUB_FILES file: files/<name>.in with %%PREFIX%% and friends substituted.
            assert!(
                variable("SUB_FILES").is_some_and(|v| v.split_whitespace().any(|w| w == name)),
                "the Makefile installs ${{WRKDIR}}/{name}, which is not in SUB_FILES"
            );
            assert!(
                repo(&format!("{PORT}/files/{name}.in")).is_file(),
                "SUB_FILES {name} needs files/{name}.in"
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
        let line = line.replace("%%EXAMPLESDIR%%", EXAMPLES);
        let line = line.as_str();
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

#[test]
fn the_devd_rule_is_only_an_example_and_the_sample_is_generic() {
    let installed = installs();
    for (source, dest) in &installed {
        assert!(
            !dest.starts_with("etc/devd/"),
            "{source} is installed as an active devd rule ({dest}): devd runs only the first \
             matching rule, so the package must ship it as an example (share/examples/carpd)"
        );
    }
    assert!(
        installed
            .iter()
            .any(|(s, d)| s == "${WRKSRC}/devd/carpd.conf"
                && d == &format!("{EXAMPLES}/devd/carpd.conf")),
        "the devd rule is not installed as an example: {installed:?}"
    );
    assert!(
        installed
            .iter()
            .any(|(s, d)| s == "${WRKDIR}/carpd.yaml.sample" && d == "etc/carpd.yaml.sample"),
        "the sample configuration is not the generic files/carpd.yaml.sample.in"
    );
    let sample = read(&format!("{PORT}/files/carpd.yaml.sample.in"));
    for site in [
        "router-00",
        "51.68.",
        "178.32.",
        "172.27.27",
        "vmx",
        "hyper-001",
    ] {
        assert!(
            !sample.contains(site),
            "the package's sample names the first site ({site}): keep it generic"
        );
    }
    let active = |l: &&str| !l.trim_start().starts_with('#');
    let groups = sample
        .lines()
        .filter(active)
        .filter(|l| l.contains("- interface:"))
        .count();
    let passwords = sample
        .lines()
        .filter(active)
        .filter(|l| l.trim_start().starts_with("password:"))
        .count();
    assert!(
        groups >= 1 && passwords == groups,
        "every group of the sample has a password source ({groups} groups, {passwords} passwords)"
    );

    // The sample as the package installs it under a prefix, with its password file there,
    // passes `carpd check` on a kernel with its interface.
    let tmp = tempfile::tempdir().expect("tempdir");
    let prefix = tmp.path();
    let key_dir = prefix.join("etc/carpd");
    std::fs::create_dir_all(&key_dir).unwrap();
    let key = key_dir.join("vhid1.key");
    std::fs::write(&key, "sample-password\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = prefix.join("carpd.yaml");
    std::fs::write(
        &config,
        sample.replace("%%PREFIX%%", prefix.to_str().expect("utf-8 tempdir")),
    )
    .unwrap();
    let kernel = prefix.join("kernel.json");
    std::fs::write(&kernel, r#"{"interfaces": {"lo0": {}, "em0": {}}}"#).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_carpd"));
    cmd.arg("check").arg("-c").arg(&config);
    // carpd trusts only root-owned secret files; a non-root run cannot make one.
    if !nix_is_root() {
        cmd.arg("--allow-insecure-files");
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CARPD_") || k.starts_with("VAULT_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .env("CARPD_KERNEL", "sim")
        .env("CARPD_SIM_STATE", &kernel)
        .output()
        .expect("run carpd check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("configuration OK"),
        "carpd check rejects the package's sample: {out:?}"
    );
}

/// Whether this test runs as root (the owner of files it creates).
fn nix_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = tempfile::tempfile().expect("tempfile");
    probe.metadata().expect("metadata").uid() == 0
}

/// `<name>-<version>` of every crates.io package in a Cargo.lock, in its order: what
/// Makefile.crates must list (read here without the generator, to check it).
fn crates_of_lock(lock: &str) -> Vec<String> {
    let mut out = Vec::new();
    for package in lock.split("[[package]]").skip(1) {
        let field = |key: &str| {
            package.lines().find_map(|l| {
                l.strip_prefix(&format!("{key} = \""))
                    .and_then(|v| v.strip_suffix('"'))
            })
        };
        if field("source") == Some("registry+https://github.com/rust-lang/crates.io-index") {
            let (name, version) = (field("name").unwrap(), field("version").unwrap());
            out.push(format!("{name}-{version}"));
        }
    }
    out
}

/// The crate list of a Makefile.crates.
fn crates_of_makefile(text: &str) -> Vec<String> {
    let body = text
        .strip_prefix("CARGO_CRATES=\t")
        .expect("Makefile.crates starts with CARGO_CRATES=<tab>");
    body.split(" \\\n").map(|l| l.trim().to_string()).collect()
}

#[test]
fn makefile_crates_is_generated_from_cargo_lock() {
    let fix = "run packaging/freebsd/gen-makefile-crates after changing Cargo.lock";
    let checked_in = read(&format!("{PORT}/Makefile.crates"));
    let out = Command::new("python3")
        .arg(repo("packaging/freebsd/gen-makefile-crates"))
        .arg("--stdout")
        .output()
        .expect("run python3 packaging/freebsd/gen-makefile-crates");
    assert!(out.status.success(), "gen-makefile-crates: {out:?}");
    let generated = String::from_utf8(out.stdout).unwrap();
    assert!(
        generated == checked_in,
        "Makefile.crates is not what gen-makefile-crates makes: {fix}"
    );
    let want = crates_of_lock(&read("Cargo.lock"));
    assert!(
        want.len() > 100,
        "too few crates in Cargo.lock: {}",
        want.len()
    );
    assert_eq!(crates_of_makefile(&checked_in), want, "{fix}");
    // The layout make cargo-crates prints: continuation lines indented by two tabs.
    for line in checked_in.lines().skip(1) {
        assert!(line.starts_with("\t\t"), "Makefile.crates line: {line:?}");
    }
}

#[test]
fn the_distfile_is_the_release_tarball_make_distfile_makes() {
    let sites = variable("MASTER_SITES").unwrap_or_default();
    assert!(
        sites.starts_with("https://") && sites.contains("/v${DISTVERSION}/"),
        "MASTER_SITES must point at the release of the version: {sites:?}"
    );
    assert_eq!(
        variable("DISTFILES").as_deref(),
        Some("${DISTNAME}${EXTRACT_SUFX}")
    );
    let version = variable("DISTVERSION").unwrap();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new("/bin/sh")
        .arg(repo("packaging/freebsd/make-distfile"))
        .arg(tmp.path())
        .arg("HEAD")
        .output()
        .expect("run make-distfile");
    assert!(out.status.success(), "make-distfile: {out:?}");
    let shellcheck = Command::new("/usr/bin/shellcheck")
        .arg("--norc")
        .arg(repo("packaging/freebsd/make-distfile"))
        .output()
        .expect("run shellcheck (apt-get install shellcheck)");
    assert!(
        shellcheck.status.success(),
        "shellcheck make-distfile: {shellcheck:?}"
    );
    let tarball = tmp.path().join(format!("carpd-{version}.tar.gz"));
    assert!(tarball.is_file(), "make-distfile did not write {tarball:?}");
    let list = Command::new("tar")
        .arg("tzf")
        .arg(&tarball)
        .output()
        .expect("tar tzf");
    let list = String::from_utf8(list.stdout).unwrap();
    let top = format!("carpd-{version}/");
    assert!(
        list.lines().all(|l| l.starts_with(&top)),
        "every entry under {top}"
    );
    let mut needed = vec!["Cargo.lock".to_string(), "Cargo.toml".to_string()];
    needed.extend(
        installs()
            .into_iter()
            .filter_map(|(s, _)| s.strip_prefix("${WRKSRC}/").map(String::from)),
    );
    for rel in needed {
        assert!(
            list.lines().any(|l| l == format!("{top}{rel}")),
            "the distfile lacks {rel}"
        );
    }
    // The crates the port fetches are those of the tarball's own Cargo.lock.
    let lock = Command::new("tar")
        .arg("xzOf")
        .arg(&tarball)
        .arg(format!("{top}Cargo.lock"))
        .output()
        .expect("tar xzOf");
    assert_eq!(
        crates_of_lock(&String::from_utf8(lock.stdout).unwrap()),
        crates_of_makefile(&read(&format!("{PORT}/Makefile.crates"))),
        "Makefile.crates differs from the committed Cargo.lock: commit it, then run \
         packaging/freebsd/gen-makefile-crates"
    );
}

#[test]
fn the_port_follows_portlints_layout_rules() {
    let makefile = read(&format!("{PORT}/Makefile"));
    for (n, line) in makefile.lines().enumerate() {
        let n = n + 1;
        assert_eq!(line, line.trim_end(), "Makefile:{n}: trailing whitespace");
        if line.starts_with('#') || line.starts_with('\t') || line.starts_with('.') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            assert!(
                value.starts_with('\t'),
                "Makefile:{n}: a tab after {name}= (portlint)"
            );
            assert!(!value.trim().is_empty(), "Makefile:{n}: {name} is empty");
        }
    }
    // The order portlint expects for the header variables.
    let order = [
        "PORTNAME",
        "DISTVERSION",
        "CATEGORIES",
        "MASTER_SITES",
        "DISTFILES",
        "MAINTAINER",
        "COMMENT",
        "WWW",
        "LICENSE",
        "USES",
    ];
    let position = |name: &str| {
        makefile
            .lines()
            .position(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("the Makefile sets no {name}"))
    };
    for pair in order.windows(2) {
        assert!(
            position(pair[0]) < position(pair[1]),
            "{} must come before {}",
            pair[0],
            pair[1]
        );
    }
    let comment = variable("COMMENT").unwrap();
    assert!(
        comment.len() <= 70
            && !comment.ends_with('.')
            && comment.starts_with(|c: char| c.is_ascii_uppercase())
            && !["A ", "An ", "The "].iter().any(|a| comment.starts_with(a)),
        "COMMENT: at most 70 characters, capitalised, no article, no final period: {comment:?}"
    );
    for file in ["pkg-descr", "pkg-plist"] {
        for (n, line) in read(&format!("{PORT}/{file}")).lines().enumerate() {
            assert!(line.len() <= 80, "{file}:{}: longer than 80 columns", n + 1);
            assert_eq!(
                line,
                line.trim_end(),
                "{file}:{}: trailing whitespace",
                n + 1
            );
        }
    }
}
