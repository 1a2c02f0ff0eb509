//! Checks of the files carpd ships for the system rather than builds: `rc.d/carpd` and
//! `devd/carpd.conf`, so that a typo cannot ship.
//!
//! - rc.d/carpd: `sh -n`; shellcheck (required: CI installs Debian's package); its rcorder
//!   header; and real runs of a copy under a minimal rc.subr-compatible harness (a fake
//!   `rc.subr`, `daemon` and `carpd` in a temporary directory) checking the command line
//!   `start` builds, the configuration check before start and reload, `reload` signalling carpd
//!   itself, `stop`/`status` using daemon(8)'s pidfile, and `configtest`.
//! - scripts/freebsd-acceptance: POSIX sh (`sh -n`, shellcheck --shell=sh) and its
//!   `--dry-run` plan; scripts/freebsd-binary: shellcheck.
//! - devd/carpd.conf: parsed structurally (one notify block, balanced braces, the three
//!   matches, one action with an absolute path and exactly `$subsystem $type`), and its match
//!   patterns run through `grep -E` anchored the way devd anchors them.
//!
//! The production script is never edited for the tests: the harness copies it and rewrites
//! its absolute paths (`/etc/rc.subr`, `/usr/sbin/daemon`, `/usr/local/sbin/carpd`,
//! `/var/run/`) to the temporary directory, and fails if any of them is missing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// rc.d/carpd: static checks

#[test]
fn rc_script_parses_with_sh_n() {
    let out = Command::new("/bin/sh")
        .arg("-n")
        .arg(repo("rc.d/carpd"))
        .output()
        .expect("run /bin/sh");
    assert!(
        out.status.success(),
        "sh -n rc.d/carpd failed:\n{}",
        text(&out)
    );
}

/// The project's own bash scripts (the README's two commands, the fuzz runner): a typo in
/// `scripts/lab` or `scripts/test-all` would break the front door.
#[test]
fn project_scripts_pass_shellcheck() {
    let shellcheck = Path::new("/usr/bin/shellcheck");
    assert!(
        shellcheck.exists(),
        "shellcheck is missing: install it (Debian: apt-get install shellcheck)"
    );
    for script in [
        "scripts/lab",
        "scripts/test-all",
        "scripts/fuzz",
        "scripts/freebsd-binary",
        ".ci/run",
    ] {
        let out = Command::new(shellcheck)
            .args(["--norc", "--shell=bash"])
            .arg(repo(script))
            .output()
            .expect("run shellcheck");
        assert!(out.status.success(), "shellcheck {script}:\n{}", text(&out));
    }
}

/// scripts/freebsd-binary's ELF check refuses what is not a FreeBSD program: the Linux carpd
/// this test runs against (glibc, /lib64/ld-linux-x86-64.so.2) and a file that is no ELF.
/// (`scripts/test-all` runs the positive case on the real FreeBSD build.)
#[test]
fn the_freebsd_binary_check_refuses_a_linux_binary() {
    let out = Command::new(repo("scripts/freebsd-binary"))
        .arg("--check")
        .arg(env!("CARGO_BIN_EXE_carpd"))
        .output()
        .expect("run scripts/freebsd-binary --check");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a FreeBSD binary"), "{}", text(&out));
    let out = Command::new(repo("scripts/freebsd-binary"))
        .arg("--check")
        .arg(repo("rc.d/carpd"))
        .output()
        .expect("run scripts/freebsd-binary --check");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not an x86-64 ELF"),
        "{}",
        text(&out)
    );
}

/// scripts/freebsd-acceptance runs on a FreeBSD host's /bin/sh: POSIX sh, shellcheck-clean.
#[test]
fn the_acceptance_script_is_posix_sh_and_passes_shellcheck() {
    let shellcheck = Path::new("/usr/bin/shellcheck");
    assert!(
        shellcheck.exists(),
        "shellcheck is missing: install it (Debian: apt-get install shellcheck)"
    );
    let script = repo("scripts/freebsd-acceptance");
    let out = Command::new(shellcheck)
        .args(["--norc", "--shell=sh"])
        .arg(&script)
        .output()
        .expect("run shellcheck");
    assert!(out.status.success(), "shellcheck:\n{}", text(&out));
    let out = Command::new("/bin/sh")
        .arg("-n")
        .arg(&script)
        .output()
        .expect("run sh -n");
    assert!(out.status.success(), "sh -n:\n{}", text(&out));
}

/// `--dry-run` prints the whole plan, runs nothing (no root, no FreeBSD needed), exits 0;
/// and the plan holds every phase the issue asks for.
#[test]
fn the_acceptance_script_dry_run_prints_the_plan() {
    let out = Command::new("/bin/sh")
        .arg(repo("scripts/freebsd-acceptance"))
        .args(["--dry-run", "--carpd", "/nonexistent/carpd"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run the acceptance script");
    assert!(out.status.success(), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    for want in [
        "kldload carp",
        "jail -c name=carpd_acc_a path=/ host.hostname=router-a vnet persist",
        "ifconfig carp_a vnet carpd_acc_a",
        "/nonexistent/ovh-sim --listen 198.51.100.254:8080",
        "jexec carpd_acc_a sysctl net.inet.carp.allow=0",
        "daemon -p /tmp/carpd-acceptance/a/carpd.pid",
        "grep -q 'carp: MASTER vhid 1 '",
        "jexec carpd_acc_a ifconfig carp_a down",
        "maintenance enter --wait --timeout 60s",
        "kldunload carp",
        "sysctl -n net.inet.carp.demotion)\" = 240",
        "devd: connected",
        "dry run: nothing was run",
        "jail -r carpd_acc_a",
    ] {
        assert!(plan.contains(want), "the plan lacks {want:?}:\n{plan}");
    }
    assert!(!plan.contains("FAIL"), "{plan}");
    // Usage errors exit 2.
    let out = Command::new("/bin/sh")
        .arg(repo("scripts/freebsd-acceptance"))
        .arg("--bogus")
        .output()
        .expect("run the acceptance script");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// The boot-order lines shipped in examples/loader.conf (docs/boot-order.md): carp.ko at
/// boot, and CARP off until carpd allows it. loader.conf(5) syntax: name="value".
#[test]
fn the_loader_conf_example_loads_carp_and_holds_elections() {
    let text = fs::read_to_string(repo("examples/loader.conf")).expect("examples/loader.conf");
    let settings: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not a loader.conf line: {l:?}"));
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "loader.conf values are quoted: {l:?}"
            );
            (k, &v[1..v.len() - 1])
        })
        .collect();
    assert_eq!(
        settings,
        [("carp_load", "YES"), ("net.inet.carp.allow", "0")],
        "{text}"
    );
}

#[test]
fn rc_script_passes_shellcheck() {
    let shellcheck = Path::new("/usr/bin/shellcheck");
    assert!(
        shellcheck.exists(),
        "shellcheck is missing: install it (Debian: apt-get install shellcheck); CI installs it \
         and this test must not be skipped silently"
    );
    let out = Command::new(shellcheck)
        .args([
            "--norc",
            "--shell=sh",
            // Exclusions, each an rc.subr idiom and nothing else:
            // SC1091: /etc/rc.subr only exists on FreeBSD; shellcheck cannot follow it here.
            // SC2034: name, rcvar, command, pidfile, *_cmd, ... look unused but are read by
            //         rc.subr's run_rc_command.
            "--exclude=SC1091,SC2034",
        ])
        .arg(repo("rc.d/carpd"))
        .output()
        .expect("run shellcheck");
    assert!(
        out.status.success(),
        "shellcheck rc.d/carpd:\n{}",
        text(&out)
    );
}

#[test]
fn rc_script_header_orders_it_after_what_it_needs() {
    let script = fs::read_to_string(repo("rc.d/carpd")).expect("read rc.d/carpd");
    assert!(
        script.starts_with("#!/bin/sh\n"),
        "rc.d scripts start with #!/bin/sh"
    );
    let header = |key: &str| -> Vec<String> {
        let prefix = format!("# {key}:");
        let lines: Vec<&str> = script.lines().filter(|l| l.starts_with(&prefix)).collect();
        assert_eq!(lines.len(), 1, "exactly one '{prefix}' line for rcorder(8)");
        lines[0][prefix.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(header("PROVIDE"), ["carpd"]);
    let require = header("REQUIRE");
    for needed in ["NETWORKING", "devd", "syslogd"] {
        assert!(
            require.iter().any(|r| r == needed),
            "REQUIRE lacks {needed}: {require:?}"
        );
    }
    assert_eq!(header("KEYWORD"), ["shutdown"]);
    // run_rc_script skips scripts that are not executable.
    let mode = fs::metadata(repo("rc.d/carpd"))
        .expect("stat")
        .permissions()
        .mode();
    assert!(
        mode & 0o111 != 0,
        "rc.d/carpd must be executable (mode {mode:o})"
    );
}

// ---------------------------------------------------------------------------------------------
// rc.d/carpd under a fake rc.subr

/// The subset of FreeBSD's rc.subr(8) that rc.d/carpd relies on, with rc.subr's conventions:
/// rc_flags from ${name}_flags or $flags, ${cmd}_precmd then ${cmd}_cmd hooks, required_files
/// checked before start_precmd and required_modules after it, `$command $rc_flags
/// $command_args` evaluated after the precmd, rc_pid from check_pidfile $pidfile. Differences:
/// check_pidfile only checks that the pid is alive (the stand-in processes are not daemon(8)),
/// and required_modules are recorded in $RC_TEST_MODULES instead of kldloaded. `load_kld`
/// records the module in $RC_TEST_DIR/kld (the fake carpd's `check` fails like the real one
/// while carp is not there), and every step is appended to $RC_TEST_DIR/events so a test can
/// check their order; RC_TEST_KLD_FAIL makes kldload fail.
const FAKE_RC_SUBR: &str = r#"
load_kld()
{
	if ! grep -qx "$1" "$RC_TEST_DIR/kld" 2>/dev/null; then
		if [ -n "$RC_TEST_KLD_FAIL" ]; then
			echo "/etc/rc.subr: WARNING: Unable to load kernel module $1" 1>&2
			return 1
		fi
		echo "$1" >> "$RC_TEST_DIR/kld"
	fi
	echo "load_kld $1" >> "$RC_TEST_DIR/events"
}

checkyesno()
{
	eval _value=\$${1}
	case $_value in
	[Yy][Ee][Ss]|[Tt][Rr][Uu][Ee]|[Oo][Nn]|1) return 0 ;;
	[Nn][Oo]|[Ff][Aa][Ll][Ss][Ee]|[Oo][Ff][Ff]|0) return 1 ;;
	*) echo "\$${1} is not set properly - see rc.conf(5)." 1>&2; return 1 ;;
	esac
}

load_rc_config()
{
	if [ -n "${RC_CONF}" ] && [ -r "${RC_CONF}" ]; then
		. "${RC_CONF}"
	fi
}

check_pidfile()
{
	[ -r "$1" ] || return 0
	read -r _pid _junk < "$1"
	[ -n "$_pid" ] || return 0
	if kill -0 "$_pid" 2>/dev/null; then
		echo "$_pid"
	fi
}

run_rc_command()
{
	rc_arg=$1
	case "$rc_arg" in
	one*) rc_arg=${rc_arg#one}; eval "${rcvar}=YES" ;;
	force*) rc_arg=${rc_arg#force}; rc_force=yes; eval "${rcvar}=YES" ;;
	esac
	if [ -n "$flags" ]; then
		rc_flags=$flags
	else
		eval rc_flags=\$${name}_flags
	fi
	_procname=${procname:-$command}
	rc_pid=
	if [ -n "$pidfile" ]; then
		rc_pid=$(check_pidfile "$pidfile" "$_procname")
	fi
	case " start stop status $extra_commands " in
	*" $rc_arg "*) ;;
	*) echo "$0: unknown directive '$rc_arg'." 1>&2; return 1 ;;
	esac
	if [ "$rc_arg" != stop ] && [ "$rc_arg" != status ] && ! checkyesno "$rcvar"; then
		echo "Cannot '$rc_arg' $name. Set $rcvar to YES in /etc/rc.conf."
		return 0
	fi
	eval _cmd=\$${rc_arg}_cmd _precmd=\$${rc_arg}_precmd
	if [ -n "$_cmd" ]; then
		if [ -n "$_precmd" ]; then
			eval "$_precmd" || return 1
		fi
		eval "$_cmd"
		return $?
	fi
	case "$rc_arg" in
	start)
		if [ -n "$rc_pid" ]; then
			echo "$name already running? (pid=$rc_pid)." 1>&2
			return 1
		fi
		for _f in $required_files; do
			if [ ! -r "$_f" ]; then
				echo "$0: WARNING: $_f is not readable." 1>&2
				[ -n "$rc_force" ] || return 1
			fi
		done
		if [ -n "$_precmd" ]; then
			eval "$_precmd" || [ -n "$rc_force" ] || return 1
		fi
		for _m in $required_modules; do
			echo "$_m" >> "$RC_TEST_MODULES"
			echo "required_modules $_m" >> "$RC_TEST_DIR/events"
		done
		echo "Starting $name."
		eval "$command $rc_flags $command_args"
		;;
	stop)
		if [ -z "$rc_pid" ]; then
			echo "$name not running? (check $pidfile)." 1>&2
			return 1
		fi
		echo "Stopping $name."
		kill -"${sig_stop:-TERM}" "$rc_pid"
		;;
	status)
		if [ -n "$rc_pid" ]; then
			echo "$name is running as pid $rc_pid."
		else
			echo "$name is not running."
			return 1
		fi
		;;
	reload)
		if [ -z "$rc_pid" ]; then
			echo "$name not running? (check $pidfile)." 1>&2
			return 1
		fi
		kill -"${sig_reload:-HUP}" "$rc_pid"
		;;
	esac
}
"#;

/// daemon(8) stand-in: records its arguments, one per line, and returns.
const FAKE_DAEMON: &str = r#"#!/bin/sh
for a in "$@"; do
	printf '%s\n' "$a"
done > "$RC_TEST_DIR/daemon.args"
"#;

/// carpd stand-in: logs each invocation; `check` fails when the configuration file contains
/// the word "bad", like a real configuration error would.
const FAKE_CARPD: &str = r#"#!/bin/sh
echo "$*" >> "$RC_TEST_DIR/carpd.log"
echo "carpd $3" >> "$RC_TEST_DIR/events"
if [ "$1" = "-c" ] && [ "$3" = "check" ]; then
	if ! grep -qx carp "$RC_TEST_DIR/kld" 2>/dev/null; then
		echo "carp.ko not loaded: run kldload carp" 1>&2
		exit 1
	fi
	if grep -q bad "$2" 2>/dev/null; then
		echo "$2:1: bad is not a valid key" 1>&2
		exit 1
	fi
	echo "configuration OK"
	exit 0
fi
exit 0
"#;

/// A temporary directory holding the fakes, a rewritten copy of rc.d/carpd, a configuration
/// file and an rc.conf.
struct Harness {
    dir: tempfile::TempDir,
}

impl Harness {
    fn new(rc_conf: &str) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = Harness { dir };
        let root = h.root();
        fs::create_dir(root.join("bin")).expect("mkdir bin");
        fs::create_dir(root.join("run")).expect("mkdir run");
        fs::write(root.join("rc.subr"), FAKE_RC_SUBR).expect("write rc.subr");
        h.executable("bin/daemon", FAKE_DAEMON);
        h.executable("bin/carpd", FAKE_CARPD);
        fs::write(root.join("carpd.yaml"), "node: test\n").expect("write config");
        // carp.ko loaded, as on a host with carp_load="YES"; `bare_host` removes it.
        fs::write(root.join("kld"), "carp\n").expect("write kld");
        fs::write(
            root.join("rc.conf"),
            rc_conf.replace("@DIR@", &root.display().to_string()),
        )
        .expect("write rc.conf");

        let original = fs::read_to_string(repo("rc.d/carpd")).expect("read rc.d/carpd");
        let mut copy = original.clone();
        for (from, to) in [
            (". /etc/rc.subr", format!(". {}/rc.subr", root.display())),
            ("/usr/sbin/daemon", format!("{}/bin/daemon", root.display())),
            (
                "/usr/local/sbin/carpd",
                format!("{}/bin/carpd", root.display()),
            ),
            ("/var/run/", format!("{}/run/", root.display())),
        ] {
            assert!(
                original.contains(from),
                "rc.d/carpd no longer contains '{from}': update this harness"
            );
            copy = copy.replace(from, &to);
        }
        h.executable("carpd.rc", &copy);
        h
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> String {
        self.root().join(rel).display().to_string()
    }

    /// Creates an executable file. Tests run in parallel threads, and a thread that forks
    /// while this process holds a file open for writing passes that descriptor to its child
    /// until the child execs; executing the file meanwhile fails with ETXTBSY. So the
    /// executable itself is written by `cp`, never opened for writing by this process.
    fn executable(&self, rel: &str, body: &str) {
        let p = self.root().join(rel);
        let source = self
            .root()
            .join(format!("{}.source", rel.replace('/', "_")));
        fs::write(&source, body).expect("write");
        let status = Command::new("cp")
            .arg(&source)
            .arg(&p)
            .status()
            .expect("run cp");
        assert!(status.success(), "cp {} {}", source.display(), p.display());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A host booted without carp_load="YES": carp.ko is not in the kernel.
    fn bare_host(self) -> Harness {
        fs::remove_file(self.root().join("kld")).expect("remove kld");
        self
    }

    fn events(&self) -> Vec<String> {
        self.read("events")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn run(&self, command: &str) -> Output {
        self.run_env(command, &[])
    }

    fn run_env(&self, command: &str, env: &[(&str, &str)]) -> Output {
        Command::new("/bin/sh")
            .arg(self.root().join("carpd.rc"))
            .arg(command)
            .env_clear()
            .envs(env.iter().copied())
            .env("PATH", "/usr/bin:/bin")
            .env("RC_CONF", self.root().join("rc.conf"))
            .env("RC_TEST_DIR", self.root())
            .env("RC_TEST_MODULES", self.root().join("modules"))
            .output()
            .expect("run the rc.d script")
    }

    fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.root().join(rel)).ok()
    }

    fn daemon_args(&self) -> Option<Vec<String>> {
        self.read("daemon.args")
            .map(|s| s.lines().map(str::to_string).collect())
    }

    fn carpd_calls(&self) -> Vec<String> {
        self.read("carpd.log")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A stand-in process whose pid goes into `pidfile` (relative to the run directory).
    fn process(&self, pidfile: &str) -> Stand {
        let child = Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        fs::write(
            self.root().join("run").join(pidfile),
            format!("{}\n", child.id()),
        )
        .expect("write pidfile");
        Stand(child)
    }
}

const ENABLED: &str = "carpd_enable=YES\ncarpd_config=@DIR@/carpd.yaml\n";

/// A child process killed when the test ends, whatever happens.
struct Stand(Child);

impl Stand {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }

    /// Waits for the process to end and returns the signal that ended it.
    fn wait_for_signal(&mut self, fault: &str) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return status.signal();
            }
            assert!(Instant::now() < deadline, "timed out after 10 s: {fault}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn start_checks_the_configuration_then_runs_carpd_under_daemon() {
    let h = Harness::new(&format!("{ENABLED}carpd_flags=\"--no-apply\"\n"));
    let out = h.run("start");
    assert!(out.status.success(), "{}", text(&out));
    let config = h.path("carpd.yaml");
    assert_eq!(
        h.daemon_args().expect("daemon(8) was not run"),
        [
            "-P",
            &h.path("run/carpd.pid"),
            "-p",
            &h.path("run/carpd.child.pid"),
            "-r",
            "-S",
            "-T",
            "carpd",
            &h.path("bin/carpd"),
            "-c",
            &config,
            "run",
            "--no-apply",
        ],
        "{}",
        text(&out)
    );
    assert_eq!(h.carpd_calls(), [format!("-c {config} check")]);
    assert_eq!(
        h.read("modules").as_deref(),
        Some("carp\n"),
        "required_modules"
    );
}

/// issue 16: rc.subr loads required_modules only after the precmd, whose `carpd check` fails
/// without carp.ko: on a host without carp_load="YES" the service never started. The precmd
/// loads carp itself, before the check.
#[test]
fn start_on_a_bare_host_loads_carp_before_the_check() {
    let h = Harness::new(ENABLED).bare_host();
    let out = h.run("start");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        h.daemon_args().is_some(),
        "daemon(8) was not run: {}",
        text(&out)
    );
    assert_eq!(
        h.events(),
        ["load_kld carp", "carpd check", "required_modules carp"],
        "carp.ko must be loaded before `carpd check`: {}",
        text(&out)
    );
}

#[test]
fn start_fails_cleanly_when_carp_cannot_be_loaded() {
    let h = Harness::new(ENABLED).bare_host();
    let out = h.run_env("start", &[("RC_TEST_KLD_FAIL", "1")]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unable to load kernel module carp"),
        "{}",
        text(&out)
    );
    assert!(h.daemon_args().is_none(), "daemon(8) must not run");
    assert!(h.carpd_calls().is_empty(), "no check without carp.ko");
}

#[test]
fn start_without_flags_passes_nothing_extra_and_honours_flags_override() {
    let h = Harness::new(ENABLED);
    let out = h.run("start");
    assert!(out.status.success(), "{}", text(&out));
    let args = h.daemon_args().expect("daemon(8) was not run");
    assert_eq!(args.last().map(String::as_str), Some("run"), "{args:?}");

    // `flags=... service carpd start` overrides carpd_flags in rc.subr: still after "run".
    let h = Harness::new(&format!(
        "{ENABLED}carpd_flags=\"--no-apply\"\nflags=\"--x\"\n"
    ));
    let out = h.run("start");
    assert!(out.status.success(), "{}", text(&out));
    let args = h.daemon_args().expect("daemon(8) was not run");
    assert_eq!(args[0], "-P", "flags must not reach daemon(8): {args:?}");
    assert_eq!(&args[args.len() - 2..], ["run", "--x"]);
}

#[test]
fn start_refuses_a_bad_configuration() {
    let h = Harness::new(ENABLED);
    fs::write(h.root().join("carpd.yaml"), "bad: 1\n").expect("write config");
    let out = h.run("start");
    assert!(
        !out.status.success(),
        "started with a bad configuration:\n{}",
        text(&out)
    );
    assert!(
        h.daemon_args().is_none(),
        "daemon(8) ran despite the failed check"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad is not a valid key"),
        "the check's message must reach the operator:\n{}",
        text(&out)
    );
}

#[test]
fn the_default_configuration_path_is_required() {
    let h = Harness::new("carpd_enable=YES\n");
    let out = h.run("start");
    let all = format!("{}{}", text(&out), h.carpd_calls().join("\n"));
    assert!(
        all.contains("/usr/local/etc/carpd.yaml"),
        "the default carpd_config is /usr/local/etc/carpd.yaml:\n{all}"
    );
    if !Path::new("/usr/local/etc/carpd.yaml").exists() {
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            h.daemon_args().is_none(),
            "started without a configuration file"
        );
    }
}

#[test]
fn configtest_runs_the_configuration_check() {
    let h = Harness::new(ENABLED);
    let out = h.run("configtest");
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    assert_eq!(
        h.carpd_calls(),
        [format!("-c {} check", h.path("carpd.yaml"))]
    );
    assert!(
        h.daemon_args().is_none(),
        "configtest must not start anything"
    );

    fs::write(h.root().join("carpd.yaml"), "bad: 1\n").expect("write config");
    let out = h.run("configtest");
    assert!(
        !out.status.success(),
        "a failed check must fail configtest:\n{}",
        text(&out)
    );
}

#[test]
fn reload_checks_then_sends_sighup_to_carpd_not_to_daemon() {
    let h = Harness::new(ENABLED);
    let mut supervisor = h.process("carpd.pid");
    let mut carpd = h.process("carpd.child.pid");

    // A bad configuration: no signal at all, and a failure the operator sees.
    fs::write(h.root().join("carpd.yaml"), "bad: 1\n").expect("write config");
    let out = h.run("reload");
    assert!(
        !out.status.success(),
        "reload accepted a bad configuration:\n{}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Reloading"));

    fs::write(h.root().join("carpd.yaml"), "node: test\n").expect("write config");
    let out = h.run("reload");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        carpd.wait_for_signal("carpd (the child pid) never received the reload signal"),
        Some(libc::SIGHUP),
        "{}",
        text(&out)
    );
    assert!(
        supervisor.is_running(),
        "daemon(8) (pid {}) was signalled: it does not pass SIGHUP on",
        supervisor.pid()
    );
    let check = format!("-c {} check", h.path("carpd.yaml"));
    assert_eq!(h.carpd_calls(), [check.clone(), check]);

    // carpd gone: reload says so instead of succeeding silently.
    let out = h.run("reload");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

#[test]
fn stop_and_status_use_the_supervisor_pidfile() {
    let h = Harness::new(ENABLED);
    let out = h.run("status");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("carpd is not running"));

    let mut supervisor = h.process("carpd.pid");
    let mut carpd = h.process("carpd.child.pid");
    let out = h.run("status");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("carpd is running as pid {}", supervisor.pid())),
        "{}",
        text(&out)
    );

    // stop signals daemon(8), which stops carpd and does not restart it; signalling carpd
    // directly would make daemon -r start it again.
    let out = h.run("stop");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        supervisor.wait_for_signal("the supervisor never received SIGTERM"),
        Some(libc::SIGTERM)
    );
    assert!(
        carpd.is_running(),
        "stop must go through daemon(8), not to carpd"
    );
}

// ---------------------------------------------------------------------------------------------
// devd/carpd.conf

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Str(String),
    Punct(char),
}

/// devd.conf(5) lexical structure: words, double-quoted strings, `{ } ;`, `#` comments.
fn tokenize(src: &str) -> Result<Vec<(usize, Token)>, String> {
    let mut out = Vec::new();
    let mut chars = src.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '{' | '}' | ';' => out.push((line, Token::Punct(c))),
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => return Err(format!("line {line}: escapes are not expected")),
                        Some('\n') | None => {
                            return Err(format!("line {line}: unterminated string"));
                        }
                        Some(c) => s.push(c),
                    }
                }
                out.push((line, Token::Str(s)));
            }
            c if c.is_ascii_alphanumeric() => {
                let mut w = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        w.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push((line, Token::Word(w)));
            }
            c => return Err(format!("line {line}: unexpected character '{c}'")),
        }
    }
    Ok(out)
}

#[derive(Debug, Default)]
struct Notify {
    priority: String,
    matches: Vec<(String, String)>,
    actions: Vec<String>,
}

/// Parses `notify <n> { match "var" "re"; ... action "cmd"; };` blocks, nothing else.
fn parse_devd_conf(src: &str) -> Result<Vec<Notify>, String> {
    let tokens = tokenize(src)?;
    let mut it = tokens.into_iter().peekable();
    let mut blocks = Vec::new();
    let expect = |it: &mut std::iter::Peekable<std::vec::IntoIter<(usize, Token)>>,
                  want: Token|
     -> Result<(), String> {
        match it.next() {
            Some((_, t)) if t == want => Ok(()),
            Some((l, t)) => Err(format!("line {l}: expected {want:?}, found {t:?}")),
            None => Err(format!(
                "end of file: expected {want:?} (unbalanced braces?)"
            )),
        }
    };
    while let Some((line, tok)) = it.next() {
        if tok != Token::Word("notify".into()) {
            return Err(format!(
                "line {line}: expected a notify block, found {tok:?}"
            ));
        }
        let mut block = Notify::default();
        match it.next() {
            Some((_, Token::Word(n))) if n.bytes().all(|b| b.is_ascii_digit()) => {
                block.priority = n
            }
            other => {
                return Err(format!(
                    "line {line}: notify needs a priority, found {other:?}"
                ));
            }
        }
        expect(&mut it, Token::Punct('{'))?;
        loop {
            match it.next() {
                Some((_, Token::Punct('}'))) => break,
                Some((_, Token::Word(w))) if w == "match" => {
                    let (Some((_, Token::Str(var))), Some((_, Token::Str(re)))) =
                        (it.next(), it.next())
                    else {
                        return Err(format!("line {line}: match needs two strings"));
                    };
                    expect(&mut it, Token::Punct(';'))?;
                    block.matches.push((var, re));
                }
                Some((_, Token::Word(w))) if w == "action" => {
                    let Some((_, Token::Str(cmd))) = it.next() else {
                        return Err(format!("line {line}: action needs a string"));
                    };
                    expect(&mut it, Token::Punct(';'))?;
                    block.actions.push(cmd);
                }
                Some((l, t)) => return Err(format!("line {l}: unexpected {t:?} in notify block")),
                None => return Err("end of file inside a notify block: unbalanced braces".into()),
            }
        }
        expect(&mut it, Token::Punct(';'))?;
        blocks.push(block);
    }
    Ok(blocks)
}

/// Does `value` match `re` the way devd matches (`^re$`, POSIX extended)? Uses grep -E.
fn devd_matches(re: &str, value: &str) -> bool {
    use std::io::Write;
    let mut grep = Command::new("grep")
        .args(["-E", "-q", "-e", &format!("^{re}$")])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run grep");
    grep.stdin
        .take()
        .expect("stdin")
        .write_all(format!("{value}\n").as_bytes())
        .expect("write to grep");
    match grep.wait().expect("grep").code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("grep -E rejected the pattern {re:?} (exit {other:?})"),
    }
}

#[test]
fn devd_rule_has_one_notify_block_with_the_hook_action() {
    let src = fs::read_to_string(repo("devd/carpd.conf")).expect("read devd/carpd.conf");
    let blocks = parse_devd_conf(&src).unwrap_or_else(|e| panic!("devd/carpd.conf: {e}"));
    assert_eq!(blocks.len(), 1, "exactly one notify block: {blocks:?}");
    let b = &blocks[0];
    assert_eq!(b.priority, "0");
    let vars: Vec<&str> = b.matches.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(vars, ["system", "subsystem", "type"]);
    assert_eq!(b.matches[0].1, "CARP");

    assert_eq!(b.actions.len(), 1, "exactly one action");
    let words: Vec<&str> = b.actions[0].split_whitespace().collect();
    assert_eq!(
        words,
        ["/usr/local/sbin/carpd", "hook", "$subsystem", "$type"],
        "devd's PATH lacks /usr/local: absolute path, then exactly `hook $subsystem $type`"
    );
    assert!(Path::new(words[0]).is_absolute());
    assert!(
        src.contains("PATH"),
        "the comment must explain the absolute path"
    );
    assert!(
        src.contains("Daemon mode") && src.contains("Hook mode"),
        "both modes explained"
    );
}

#[test]
fn devd_rule_patterns_admit_kernel_values_and_nothing_a_shell_would_interpret() {
    let src = fs::read_to_string(repo("devd/carpd.conf")).expect("read devd/carpd.conf");
    let blocks = parse_devd_conf(&src).unwrap_or_else(|e| panic!("devd/carpd.conf: {e}"));
    let pattern = |var: &str| -> String {
        blocks[0]
            .matches
            .iter()
            .find(|(v, _)| v == var)
            .map(|(_, re)| re.clone())
            .unwrap_or_else(|| panic!("no match on {var}"))
    };

    let subsystem = pattern("subsystem");
    for ok in ["2@vmx1", "255@lagg0.100", "1@em_0-a", "12@VLAN7"] {
        assert!(devd_matches(&subsystem, ok), "{subsystem} must match {ok}");
    }
    // $subsystem goes unquoted into a /bin/sh command line.
    for bad in [
        "2@vmx1;reboot",
        "2@vmx1 x",
        "2@$(id)",
        "2@`id`",
        "2@a|b",
        "2@a&",
        "2@a>b",
        "@vmx1",
        "2@",
        "x@vmx1",
        "2@vmx1\\",
    ] {
        assert!(
            !devd_matches(&subsystem, bad),
            "{subsystem} must not match {bad:?}"
        );
    }

    let ty = pattern("type");
    for ok in ["MASTER", "BACKUP", "INIT"] {
        assert!(devd_matches(&ty, ok), "{ty} must match {ok}");
    }
    for bad in ["master", "MASTERX", "", "INIT;id"] {
        assert!(!devd_matches(&ty, bad), "{ty} must not match {bad:?}");
    }
}

#[test]
fn the_devd_conf_parser_rejects_broken_files() {
    for (src, needle) in [
        ("notify 0 { match \"system\" \"CARP\";", "unbalanced"),
        ("notify 0 { action \"x\"; }", "end of file"),
        ("notify { };", "priority"),
        ("notify 0 { action \"x\" }; ", "expected Punct(';')"),
        ("notify 0 { match \"system\"; };", "two strings"),
        ("attach 0 { };", "expected a notify block"),
        ("notify 0 { action \"x; };", "unterminated"),
    ] {
        let e = parse_devd_conf(src).expect_err(src);
        assert!(e.contains(needle), "{src}: {e}");
    }
}
