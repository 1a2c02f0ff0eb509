#!/usr/bin/env python3
# The Salt formula (salt/carpd) checked on Linux, without applying it: for router-002 and
# router-003 of salt/pillar.example (as a site without a previous CARP setup would apply it:
# migration step done, the formula writing the secretsmith and loader.conf files),
# `salt-call --local state.show_sls` renders every state, every template is rendered with the
# context its state passes, each carpd.yaml passes `carpd check` against a simulated kernel,
# the secretsmith file is mode 0400 and holds the AppRole credentials read through the
# configured Salt function (the site's credentials.read_secret, a stand-in here: see
# tests/site/README.md), and no credential appears anywhere else (pillar, other files, state
# output). The syslog exclusion is run with Salt's own file.replace on FreeBSD's syslog.conf
# and on one that already has the site's "!-carp-ovh" block. test_migration.py renders the
# formula at each migration step beside the site's states.
#
# Run by scripts/test-deploy, which provides a virtualenv with the pinned Salt and sets
# SALT_CALL (its salt-call) and CARPD_BIN (the debug carpd binary). Standard library
# unittest plus PyYAML (a Salt dependency) only.

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FORMULA_ROOT = REPO / "salt"
PILLAR_EXAMPLE = FORMULA_ROOT / "pillar.example"
SITE_ROOT = FORMULA_ROOT / "tests" / "site"
ROUTERS = ("router-002", "router-003")

SALT_CALL = os.environ.get("SALT_CALL", "salt-call")
CARPD_BIN = os.environ.get("CARPD_BIN", str(REPO / "target" / "debug" / "carpd"))

# The AppRole credentials the stand-in credentials.read_secret returns (never in pillar), so
# that a leak cannot be a coincidence. Random per run.
ROLE_ID = "role-" + secrets.token_hex(12)
SECRET_ID = "secret-" + secrets.token_hex(12)
# The clear-text CARP password the stand-in node.get_carp_entries returns in each entry, as
# the site's rc.conf fragment needs it: carpd.yaml must never receive it.
CARP_PASSWORD = "carp-" + secrets.token_hex(12)
SALT_ENV = dict(
    os.environ,
    CARPD_TEST_SECRETS=json.dumps(
        {"network/router/vault": {"role_id": ROLE_ID, "secret_id": SECRET_ID}}
    ),
    CARPD_TEST_CARP_PASSWORD=CARP_PASSWORD,
)
# A site without a previous CARP setup: the formula writes everything.
NEW_SITE = {"carpd": {"migration": {"step": "done"}, "manage": {"secretsmith": True, "loader_conf": True}}}


def states_of(show_sls):
    """show_sls output -> {state id: (module, function, {argument: value})}."""
    out = {}
    for sid, body in show_sls.items():
        for module, chunks in body.items():
            if module.startswith("__"):
                continue
            fun, args = None, {}
            for c in chunks:
                if isinstance(c, str):
                    fun = c
                else:
                    args.update(c)
            out[sid] = (module, fun, args)
    return out


def requisites(args, kind):
    """[(module, id), ...] of a requisite list such as watch or require."""
    out = []
    for item in args.get(kind, []):
        out.extend(item.items())
    return out


class Salt:
    """One throwaway minion configuration per minion id: file roots = the formula and the
    stand-in site states, module_dirs = the stand-in site modules, pillar = pillar.example
    (or pillar_base) merged with each of pillar_extra (a dict or a list of dicts)."""

    def __init__(self, base, minion_id, pillar_extra=None, pillar_base=None):
        self.base = base / minion_id
        conf = self.base / "conf"
        pillar = self.base / "pillar"
        conf.mkdir(parents=True)
        pillar.mkdir()
        if pillar_base is None:
            shutil.copy(PILLAR_EXAMPLE, pillar / "carpd.sls")
        else:
            (pillar / "carpd.sls").write_text(json.dumps(pillar_base))
        tops = ["carpd"]
        extras = pillar_extra if isinstance(pillar_extra, list) else [pillar_extra]
        for n, extra in enumerate(e for e in extras if e is not None):
            (pillar / f"test_extra{n}.sls").write_text(json.dumps(extra))
            tops.append(f"test_extra{n}")
        (pillar / "top.sls").write_text(yaml.safe_dump({"base": {"*": tops}}))
        (conf / "minion").write_text(
            yaml.safe_dump(
                {
                    "id": minion_id,
                    "root_dir": str(self.base / "root"),
                    "file_client": "local",
                    "file_roots": {"base": [str(FORMULA_ROOT), str(SITE_ROOT)]},
                    "module_dirs": [str(SITE_ROOT / "_modules")],
                    "pillar_roots": {"base": [str(pillar)]},
                    "pillar_source_merging_strategy": "recurse",
                    "log_level": "warning",
                }
            )
        )
        self.conf = conf

    def call(self, *args):
        p = subprocess.run(
            [SALT_CALL, "--config-dir", str(self.conf), "--local", "--out", "json", *args],
            capture_output=True,
            text=True,
            check=False,
            env=SALT_ENV,
        )
        if p.returncode != 0:
            raise AssertionError(f"salt-call {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        return json.loads(p.stdout)["local"], p.stdout

    def show_sls(self, sls="carpd"):
        data, raw = self.call("state.show_sls", sls)
        if not isinstance(data, dict):
            raise AssertionError(f"state.show_sls {sls} did not render:\n{raw}")
        return data, raw

    def render(self, source, context, dest):
        """Renders a template as file.managed does: Jinja with salt, pillar, grains and the
        state's context."""
        self.call(
            "cp.get_template",
            source,
            str(dest),
            "template=jinja",
            "context=" + json.dumps(context),
        )
        return dest.read_text()


def pillar_config(router):
    """The carpd.yaml settings pillar.example gives this router (shared, then its own)."""
    p = yaml.safe_load(PILLAR_EXAMPLE.read_text())["carpd"]
    config = dict(p["config"])
    config.update(p["nodes"][router]["config"])
    return config


class FormulaTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="carpd-salt-"))
        cls.rendered = {}
        for router in ROUTERS:
            salt = Salt(cls.tmp, router, NEW_SITE)
            show, raw = salt.show_sls()
            states = states_of(show)
            files = {}
            out = cls.tmp / router / "out"
            out.mkdir()
            for sid, (module, fun, args) in states.items():
                if module == "file" and fun == "managed" and args.get("template") == "jinja":
                    dest = out / sid.strip("/").replace("/", "_")
                    files[sid] = salt.render(args["source"], args.get("context", {}), dest)
            cls.rendered[router] = {"states": states, "raw": raw, "files": files, "out": out}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def state(self, router, sid, module, fun):
        states = self.rendered[router]["states"]
        self.assertIn(sid, states, f"{router}: no state {sid}; have {sorted(states)}")
        m, f, args = states[sid]
        self.assertEqual((m, f), (module, fun), f"{router}: {sid}")
        return args

    # --- every part of the formula is there, wired as intended ----------------------------

    def test_install_kmod_devd_and_service_states(self):
        for r in ROUTERS:
            self.assertEqual(self.state(r, "carpd-package", "pkg", "installed")["name"], "carpd")
            loader = self.state(r, "/boot/loader.conf.d/carp.conf", "file", "managed")
            self.assertEqual(loader["source"], "salt://carpd/files/loader.conf")
            gate = self.state(r, "/boot/loader.conf.d/carpd.conf", "file", "managed")
            self.assertEqual(gate["source"], "salt://carpd/files/loader-boot-gate.conf")
            kld = self.state(r, "carpd-kmod-load", "cmd", "run")
            self.assertEqual(kld["name"], "kldload -n carp")
            self.assertEqual(kld["unless"], "kldstat -q -m carp")
            devd_rule = self.state(r, "/usr/local/etc/devd/carpd.conf", "file", "managed")
            self.assertEqual(devd_rule["source"], "salt://carpd/files/devd/carpd.conf")
            devd = self.state(r, "carpd-devd-restart", "service", "running")
            self.assertEqual(devd["name"], "devd")
            self.assertNotIn("reload", devd, "devd only reads rules at start: restart it")
            self.assertIn(("file", "/usr/local/etc/devd/carpd.conf"), requisites(devd, "watch"))

            svc = self.state(r, "carpd-service", "service", "running")
            self.assertEqual(svc["name"], "carpd")
            self.assertIs(svc["reload"], True)
            watched = requisites(svc, "watch")
            self.assertIn(("file", "/usr/local/etc/carpd.yaml"), watched)
            self.assertIn(("file", "/usr/local/etc/secrets/carp-secretsmith.yaml"), watched)
            restart = self.state(r, "carpd-service-restart", "cmd", "run")
            self.assertEqual(restart["name"], "service carpd restart")
            self.assertIn(("pkg", "carpd-package"), requisites(restart, "onchanges"))
            self.assertIn(("file", "/etc/rc.conf.d/carpd"), requisites(restart, "onchanges"))

            conf = self.state(r, "/usr/local/etc/carpd.yaml", "file", "managed")
            self.assertEqual(conf["check_cmd"], "/usr/local/sbin/carpd check -c")
            self.assertEqual(conf["mode"], "0644")
            self.assertIn(
                ("file", "/usr/local/etc/secrets/carp-secretsmith.yaml"),
                requisites(conf, "require"),
                "carpd check reads the secretsmith file: write it first",
            )

    def test_state_ids_are_paths_or_carpd_prefixed(self):
        # The site's house style: a file state's ID is its path; everything else is named
        # for carpd so that it cannot collide with another formula's "devd" or "syslogd".
        for r in ROUTERS:
            for sid, (module, fun, args) in self.rendered[r]["states"].items():
                if module == "file":
                    self.assertTrue(
                        sid.startswith("/") or sid.startswith("carpd-"), f"{r}: state ID {sid}"
                    )
                else:
                    self.assertTrue(sid.startswith("carpd-"), f"{r}: state ID {sid}")

    def test_every_file_starts_with_the_house_banner(self):
        # The site's house style: a banner naming the file's source. Every state file and
        # every file the formula writes, as rendered (the rc.d script, whose first line must
        # be its shebang, and the devd rule, a copy of the repository's, excepted).
        banner = re.compile(
            r"^#   -{61}\n#   carpd( formula)? — .+\n#   (- ){30}-\n(#   .+\n)*?"
            r"#   Source file:    (salt/carpd/\S+)\n#   -{61}\n"
        )
        carpd = FORMULA_ROOT / "carpd"
        for path in sorted(carpd.glob("*.sls")) + [carpd / "defaults.yaml"]:
            m = banner.match(path.read_text())
            self.assertTrue(m, f"{path.relative_to(FORMULA_ROOT)}: no house banner")
            self.assertEqual(m[4], str(path.relative_to(REPO)))
        for r in ROUTERS:
            for sid, text in self.rendered[r]["files"].items():
                m = banner.match(text)
                self.assertTrue(m, f"{r}: {sid} does not start with the banner:\n{text[:300]}")
                source = self.rendered[r]["states"][sid][2]["source"]
                self.assertEqual("salt://" + m[4].removeprefix("salt/"), source, sid)
        for name in ("loader.conf", "loader-boot-gate.conf"):
            loader = (carpd / "files" / name).read_text()
            self.assertTrue(banner.match(loader), f"files/{name}: no house banner")
        gate = (carpd / "files" / "loader-boot-gate.conf").read_text()
        self.assertIn('\nnet.inet.carp.allow="0"\n', gate)

    def test_devd_rule_and_rc_script_are_the_repository_files(self):
        for copy, original in (
            ("carpd/files/devd/carpd.conf", "devd/carpd.conf"),
            ("carpd/files/rc.d/carpd", "rc.d/carpd"),
        ):
            self.assertEqual(
                (FORMULA_ROOT / copy).read_bytes(),
                (REPO / original).read_bytes(),
                f"salt/{copy} differs from {original}: cp {original} salt/{copy}",
            )

    def test_rc_conf_enables_the_service(self):
        for r in ROUTERS:
            text = self.rendered[r]["files"]["/etc/rc.conf.d/carpd"]
            lines = [l for l in text.splitlines() if l and not l.startswith("#")]
            self.assertEqual(
                lines,
                ['carpd_enable="YES"', "carpd_config='/usr/local/etc/carpd.yaml'", "carpd_flags=''"],
            )

    # --- carpd.yaml -------------------------------------------------------------------------

    def test_carpd_yaml_is_the_pillar_config(self):
        for r in ROUTERS:
            text = self.rendered[r]["files"]["/usr/local/etc/carpd.yaml"]
            self.assertTrue(text.startswith("#   ---"), "managed files start with a banner")
            got = yaml.safe_load(text)
            want = pillar_config(r)
            want["node"] = r
            self.assertEqual(got, want)
            # Written in pillar order, node first: readable next to carpd.yaml(5).
            self.assertEqual(list(got)[:3], ["node", "carp", "groups"])
            self.assertEqual(list(got["groups"][0])[:2], ["interface", "vhid"])

    def carpd_check(self, router, interfaces):
        """Runs the state's check_cmd (`carpd check -c <file>`) on the rendered carpd.yaml,
        with its secretsmith path pointed at the rendered secretsmith file (mode 0400),
        against a simulated kernel with these interfaces."""
        r = self.rendered[router]
        work = Path(tempfile.mkdtemp(dir=self.tmp))
        secretsmith = work / "carp-secretsmith.yaml"
        secretsmith.write_text(r["files"]["/usr/local/etc/secrets/carp-secretsmith.yaml"])
        secretsmith.chmod(0o400)
        text = r["files"]["/usr/local/etc/carpd.yaml"]
        moved, n = re.subn(
            r"(?m)^(  secretsmith: )\"/usr/local/etc/secrets/carp-secretsmith.yaml\"$",
            lambda m: m.group(1) + json.dumps(str(secretsmith)),
            text,
        )
        self.assertEqual(n, 1, f"{router}: carpd.yaml names the secretsmith file once:\n{text}")
        config = work / "carpd.yaml"
        config.write_text(moved)
        kernel = work / "kernel.json"
        kernel.write_text(json.dumps({"interfaces": {i: {} for i in interfaces}}))
        # The state's own check_cmd, as Salt runs it (the new file's path appended), with
        # the debug binary and the simulated kernel chosen through the environment.
        check_cmd = r["states"]["/usr/local/etc/carpd.yaml"][2]["check_cmd"].split()
        self.assertEqual(check_cmd[0], "/usr/local/sbin/carpd")
        args = [CARPD_BIN, *check_cmd[1:], str(config)]
        if os.getuid() != 0:
            # carpd trusts only root-owned secret files; a non-root run cannot make one.
            args.append("--allow-insecure-files")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARPD_", "VAULT_"))}
        env.update(CARPD_KERNEL="sim", CARPD_SIM_STATE=str(kernel))
        return subprocess.run(args, capture_output=True, text=True, env=env)

    def test_carpd_check_accepts_each_rendered_configuration(self):
        for r in ROUTERS:
            p = self.carpd_check(r, ["lo0", "vmx0", "vmx1"])
            self.assertEqual(p.returncode, 0, f"{r}:\n{p.stdout}{p.stderr}")
            self.assertIn("configuration OK", p.stdout)
            self.assertIn(f"(node {r}, 2 group(s))", p.stdout)
            self.assertNotIn("warning", p.stdout)

    def test_carpd_check_is_not_vacuous(self):
        # The same file on a router without vmx1 must fail: the check really ran.
        p = self.carpd_check("router-003", ["lo0", "vmx0"])
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("interface vmx1 does not exist", p.stdout)

    # --- the secretsmith file and secrecy ---------------------------------------------------

    def test_secretsmith_file_is_root_only_and_holds_the_credentials(self):
        for r in ROUTERS:
            sid = "/usr/local/etc/secrets/carp-secretsmith.yaml"
            args = self.state(r, sid, "file", "managed")
            self.assertEqual(args["mode"], "0400")
            self.assertEqual(args["user"], "root")
            self.assertIs(args["show_changes"], False, "a diff would print the secret_id")
            got = yaml.safe_load(self.rendered[r]["files"][sid])
            self.assertEqual(
                got,
                {
                    "vault": {
                        "server": {
                            "url": "https://172.27.27.7:8200",
                            "verify": "/usr/local/share/certs/nasqueron-vault-ca.crt",
                        },
                        "auth": {"method": "approle", "role_id": ROLE_ID, "secret_id": SECRET_ID},
                    }
                },
            )

    def test_credentials_come_from_the_salt_function_not_pillar(self):
        def keys(value):
            if isinstance(value, dict):
                for k, v in value.items():
                    yield k
                    yield from keys(v)
            elif isinstance(value, list):
                for v in value:
                    yield from keys(v)

        example = yaml.safe_load(PILLAR_EXAMPLE.read_text())
        found = {"role_id", "secret_id"} & set(keys(example))
        self.assertFalse(found, f"pillar.example holds AppRole credential keys {found}")
        salt = Salt(self.tmp / "pillar", "router-003", NEW_SITE)
        pillar, raw = salt.call("pillar.items")
        for needle in (ROLE_ID, SECRET_ID, CARP_PASSWORD):
            self.assertNotIn(needle, raw, "a credential reached the pillar")
        self.assertEqual(pillar["carpd"]["secretsmith"]["read_with"], "credentials.read_secret")
        # A site whose function has another name says so; the state calls that one.
        other = Salt(
            self.tmp / "pillar-fn",
            "router-003",
            [NEW_SITE, {"carpd": {"secretsmith": {"read_with": "nosuchmodule.read"}}}],
        )
        with self.assertRaises(AssertionError) as failed:
            other.show_sls()
        self.assertIn("nosuchmodule.read", str(failed.exception))

    def test_no_credential_outside_the_secretsmith_file(self):
        needles = [ROLE_ID, SECRET_ID, CARP_PASSWORD]
        sid = "/usr/local/etc/secrets/carp-secretsmith.yaml"
        for r in ROUTERS:
            rendered = self.rendered[r]
            for path, text in rendered["files"].items():
                if path == sid:
                    continue
                for n in needles:
                    self.assertNotIn(n, text, f"{r}: {path} holds a credential")
            # The state output, less the secretsmith state (its context carries them by
            # design, and show_changes: False keeps them out of a real run's output).
            show = json.loads(rendered["raw"])["local"]
            self.assertIn(sid, show)
            del show[sid]
            dump = json.dumps(show)
            for n in needles:
                self.assertNotIn(n, dump, f"{r}: a state other than {sid} carries a credential")

    # --- syslog -----------------------------------------------------------------------------

    def test_syslog_join_mode_writes_one_block_for_both_programs(self):
        # pillar.example joins the site's CARP log: one program block naming the failover
        # script and carpd, into /var/log/carp.log, in the site's fragment; no second
        # newsyslog entry for that log (the site's stays) and no state for the log file.
        for r in ROUTERS:
            files = self.rendered[r]["files"]
            conf = [
                l
                for l in files["/usr/local/etc/syslog.d/carp.conf"].splitlines()
                if l and not l.startswith("#")
            ]
            self.assertEqual(
                [l.split() for l in conf], [["!carp-ovh,carpd"], ["*.*", "/var/log/carp.log"]]
            )
            states = self.rendered[r]["states"]
            self.assertNotIn("/usr/local/etc/newsyslog.conf.d/carpd.conf", states)
            self.assertNotIn("/var/log/carp.log", states)
            syslogd = self.state(r, "carpd-syslogd-reload", "service", "running")
            self.assertEqual(syslogd["name"], "syslogd")
            self.assertIs(syslogd["reload"], True)
            watched = requisites(syslogd, "watch")
            for sid in (
                "/usr/local/etc/syslog.d/carp.conf",
                "carpd-syslog-exclude-/var/log/messages",
            ):
                self.assertIn(("file", sid), watched)

    def test_syslog_own_mode_has_its_file_and_rotation(self):
        salt = Salt(
            self.tmp / "own",
            "router-003",
            [NEW_SITE, {"carpd": {"syslog": {
                "mode": "own", "file": "/var/log/carpd.log",
                "conf": "/usr/local/etc/syslog.d/carpd.conf", "programs": ["carpd"]}}}],
        )
        states = states_of(salt.show_sls()[0])
        out = self.tmp / "own" / "out"
        out.mkdir()
        def render(sid):
            args = states[sid][2]
            return salt.render(args["source"], args["context"], out / sid.strip("/").replace("/", "_"))
        conf = [l.split() for l in render("/usr/local/etc/syslog.d/carpd.conf").splitlines()
                if l and not l.startswith("#")]
        self.assertEqual(conf, [["!carpd"], ["*.*", "/var/log/carpd.log"]])
        rot = [l.split() for l in render("/usr/local/etc/newsyslog.conf.d/carpd.conf").splitlines()
               if l and not l.startswith("#")]
        self.assertEqual(rot, [["/var/log/carpd.log", "root:wheel", "644", "7", "1000", "*", "JC"]])
        log = states["/var/log/carpd.log"][2]
        self.assertIs(log["replace"], False, "syslogd does not create files; never empty it")
        self.assertEqual(states["carpd-syslog-exclude-/var/log/messages"][2]["repl"],
                         "!-carpd\\n\\1\\n!*")

    def run_replace(self, salt, args, path):
        """Salt's own file.replace with a state's arguments, on a file."""
        call = [
            "file.replace",
            str(path),
            "pattern=" + args["pattern"],
            "repl=" + args["repl"],
            "flags=" + json.dumps(args.get("flags", [])),
            "backup=False",
        ]
        salt.call(*call)
        return path.read_text()

    def test_messages_exclusion_on_freebsd_syslog_conf(self):
        args = self.state(
            "router-003", "carpd-syslog-exclude-/var/log/messages", "file", "replace"
        )
        self.assertEqual(args["name"], "/etc/syslog.conf")
        fixture = (Path(__file__).parent / "syslog.conf").read_text()
        work = Path(tempfile.mkdtemp(dir=self.tmp)) / "syslog.conf"
        work.write_text(fixture)
        salt = Salt(self.tmp / "replace", "router-003")
        once = self.run_replace(salt, args, work)
        lines = once.splitlines()
        i = next(
            n for n, l in enumerate(lines) if l.endswith("/var/log/messages") and l[0] not in "#!"
        )
        self.assertEqual(lines[i - 1], "!-carp-ovh,carpd")
        self.assertEqual(lines[i + 1], "!*")
        # Nothing else moved: removing the two added lines gives the original back.
        self.assertEqual(lines[: i - 1] + [lines[i]] + lines[i + 2 :], fixture.splitlines())
        # The commented example line is left alone.
        self.assertIn("#*.notice\t/var/log/messages", once)
        self.assertEqual(self.run_replace(salt, args, work), once, "a second run must change nothing")

    def test_messages_exclusion_extends_the_sites_block(self):
        # /etc/syslog.conf as the site's role leaves it: its own file.replace (the stand-in's,
        # run by Salt) put "!-carp-ovh" above the messages line. carpd's edit must give one
        # block naming both programs -- not a second "!-carpd" wrap, which would replace the
        # site's selector and send carp-ovh's lines back to /var/log/messages.
        site = Salt(self.tmp / "site-syslog", "router-003")
        site_states = states_of(site.show_sls("roles.router.carp")[0])
        site_args = site_states["/etc/syslog.conf"][2]
        fixture = (Path(__file__).parent / "syslog.conf").read_text()
        work = Path(tempfile.mkdtemp(dir=self.tmp)) / "syslog.conf"
        work.write_text(fixture)
        with_site = self.run_replace(site, site_args, work)
        lines = with_site.splitlines()
        i = next(n for n, l in enumerate(lines) if l.endswith("/var/log/messages") and l[0] not in "#!")
        self.assertEqual(lines[i - 1], "!-carp-ovh", "the stand-in's edit did not apply")

        args = self.state("router-003", "carpd-syslog-exclude-/var/log/messages", "file", "replace")
        once = self.run_replace(site, args, work)
        lines = once.splitlines()
        i = next(n for n, l in enumerate(lines) if l.endswith("/var/log/messages") and l[0] not in "#!")
        self.assertEqual(lines[i - 1], "!-carp-ovh,carpd")
        self.assertEqual(lines[i + 1], "!*")
        program_lines = [l for l in lines if l.startswith("!")]
        self.assertEqual(program_lines, ["!-carp-ovh,carpd", "!*", "!-devd", "!*"], once)
        self.assertEqual(self.run_replace(site, args, work), once, "a second run must change nothing")

    # --- variants ---------------------------------------------------------------------------

    def render_variant(self, minion_id, pillar_base, extra=None):
        base = Path(tempfile.mkdtemp(dir=self.tmp))
        salt = Salt(base, minion_id, extra, pillar_base=pillar_base)
        states = states_of(salt.show_sls()[0])
        args = states["/usr/local/etc/carpd.yaml"][2]
        dest = base / minion_id / "carpd.yaml"
        return states, salt.render(args["source"], args["context"], dest)

    def test_node_and_secretsmith_path_filled_in(self):
        states, text = self.render_variant(
            "router-x",
            {
                "carpd": {
                    "manage": {"secretsmith": True},
                    "secretsmith": {"path": "/usr/local/etc/secrets/other.yaml", "url": "https://v:8200"},
                    "config": {
                        "vault": {},
                        "groups": [{"interface": "em0", "vhid": 5, "addresses": ["192.0.2.5/32"]}],
                    },
                }
            },
        )
        got = yaml.safe_load(text)
        self.assertEqual(got["node"], "router-x")
        self.assertEqual(got["vault"], {"secretsmith": "/usr/local/etc/secrets/other.yaml"})
        self.assertEqual(states["/usr/local/etc/secrets/other.yaml"][2]["mode"], "0400")

    def test_sections_newer_than_the_formula_pass_through_in_order(self):
        config = {
            "future": {"knob": 1},
            "metrics": {"listen": "127.0.0.1:9745"},
            "groups": [{"interface": "em0", "vhid": 5, "addresses": ["192.0.2.5/32"]}],
            "readiness": {"interval": "30s", "demotion": 0},
            "maintenance": {"state_dir": "/var/db/carpd"},
        }
        states, text = self.render_variant("router-y", {"carpd": {"config": config}})
        got = yaml.safe_load(text)
        self.assertEqual(
            list(got), ["node", "groups", "readiness", "maintenance", "metrics", "future"]
        )
        self.assertEqual(got, dict(config, node="router-y"))
        # Without a vault section, none appears; the default step is done (a new site).
        self.assertNotIn("vault", got)
        self.assertEqual(states["/etc/rc.conf.d/carpd"][2]["context"]["flags"], "")

    def test_groups_from_the_sites_node_data(self):
        # pillar.example without its groups, node_data pointing at the site's
        # node.get_carp_entries (a stand-in returning the reference's network table): the
        # groups carpd.yaml gets are exactly the ones pillar.example spells out, every one with
        # its Vault password source, and the clear-text password in the site's entries never
        # reaches carpd.yaml.
        base = yaml.safe_load(PILLAR_EXAMPLE.read_text())
        for node in base["carpd"]["nodes"].values():
            del node["config"]["groups"]
        base["carpd"]["node_data"] = {
            "function": "node.get_carp_entries",
            "password_vault": "ops/secrets/network/carp/{vhid}",
        }
        for r in ROUTERS:
            _, text = self.render_variant(r, base)
            self.assertNotIn(CARP_PASSWORD, text)
            got = yaml.safe_load(text)
            self.assertEqual(got["groups"], pillar_config(r)["groups"], f"{r}:\n{text}")
        # Without a password source the run fails, naming the key to set.
        del base["carpd"]["node_data"]["password_vault"]
        states, _ = self.render_variant("router-003", base)
        fails = [a["name"] for s, (m, f, a) in states.items() if f == "fail_without_changes"]
        self.assertTrue(fails and "carpd:node_data:password_vault" in fails[0], fails)

    def test_every_group_in_pillar_example_has_a_password_source(self):
        example = yaml.safe_load(PILLAR_EXAMPLE.read_text())["carpd"]
        for name, node in example["nodes"].items():
            for g in node["config"]["groups"]:
                self.assertIn("password", g, f"{name}: {g['vhid']}@{g['interface']} has no password")
                source = g["password"]
                self.assertTrue(source.get("vault") or source.get("file"), f"{name}: {source}")

    def test_binary_install_without_a_package(self):
        salt = Salt(
            self.tmp / "binary",
            "router-003",
            [NEW_SITE, {"carpd": {"install": {"method": "binary", "binary_source": "salt://dist/carpd"}}}],
        )
        states = states_of(salt.show_sls()[0])
        self.assertNotIn("carpd-package", states)
        self.assertEqual(states["/usr/local/sbin/carpd"][:2], ("file", "managed"))
        self.assertEqual(states["/usr/local/sbin/carpd"][2]["source"], "salt://dist/carpd")
        self.assertEqual(states["/usr/local/sbin/carpd"][2]["mode"], "0555")
        rc = states["/usr/local/etc/rc.d/carpd"][2]
        self.assertEqual(rc["source"], "salt://carpd/files/rc.d/carpd")
        self.assertIn(
            ("file", "/usr/local/sbin/carpd"),
            requisites(states["carpd-service-restart"][2], "onchanges"),
        )

    def test_legacy_files_removed_with_their_daemons_told(self):
        salt = Salt(
            self.tmp / "legacy",
            "router-002",
            [NEW_SITE, {"carpd": {"migration": {"absent_when_done": ["/usr/local/etc/syslog.d/carp-old.conf"]}}}],
        )
        states = states_of(salt.show_sls()[0])
        self.assertEqual(states["/etc/rc.conf.d/netif/carp"][:2], ("file", "absent"))
        self.assertEqual(states["/usr/local/libexec/carp/carp-ovh-failover"][:2], ("file", "absent"))
        self.assertIn(
            ("service", "carpd-devd-restart"),
            requisites(states["/usr/local/etc/devd/carp.conf"][2], "watch_in"),
        )
        self.assertIn(
            ("service", "carpd-syslogd-reload"),
            requisites(states["/usr/local/etc/syslog.d/carp-old.conf"][2], "watch_in"),
        )

    def test_a_wrong_migration_step_fails_the_run(self):
        salt = Salt(self.tmp / "step", "router-002", {"carpd": {"migration": {"step": "later"}}})
        states = states_of(salt.show_sls()[0])
        fails = [a["name"] for s, (m, f, a) in states.items() if f == "fail_without_changes"]
        self.assertEqual(len(fails), 1, fails)
        self.assertIn("carpd:migration:step is later", fails[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
