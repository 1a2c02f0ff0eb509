#!/usr/bin/env python3
# The Salt formula (salt/carpd) checked on Linux, without applying it: for router-002 and
# router-003 of salt/pillar.example, `salt-call --local state.show_sls` renders every state,
# every template is rendered with the context its state passes, each carpd.yaml passes
# `carpd check` against a simulated kernel, the secretsmith file is mode 0400 and holds the
# AppRole credentials, and no credential appears anywhere else (other files, state output).
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
ROUTERS = ("router-002", "router-003")

SALT_CALL = os.environ.get("SALT_CALL", "salt-call")
CARPD_BIN = os.environ.get("CARPD_BIN", str(REPO / "target" / "debug" / "carpd"))

# Values the test puts in the pillar instead of pillar.example's placeholders, so that a leak
# cannot be a coincidence. Random per run.
ROLE_ID = "role-" + secrets.token_hex(12)
SECRET_ID = "secret-" + secrets.token_hex(12)


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
    """One throwaway minion configuration (file roots = the formula) per minion id."""

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
        extra = {
            "carpd": {"secretsmith": {"role_id": ROLE_ID, "secret_id": SECRET_ID}}
        }
        (pillar / "test_secrets.sls").write_text(json.dumps(extra))
        tops = ["carpd", "test_secrets"]
        if pillar_extra is not None:
            (pillar / "test_extra.sls").write_text(json.dumps(pillar_extra))
            tops.append("test_extra")
        (pillar / "top.sls").write_text(yaml.safe_dump({"base": {"*": tops}}))
        (conf / "minion").write_text(
            yaml.safe_dump(
                {
                    "id": minion_id,
                    "root_dir": str(self.base / "root"),
                    "file_client": "local",
                    "file_roots": {"base": [str(FORMULA_ROOT)]},
                    "pillar_roots": {"base": [str(pillar)]},
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
            salt = Salt(cls.tmp, router)
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
            self.assertEqual(self.state(r, "carpd_package", "pkg", "installed")["name"], "carpd")
            loader = self.state(r, "/boot/loader.conf.d/carp.conf", "file", "managed")
            self.assertEqual(loader["source"], "salt://carpd/files/loader.conf")
            kld = self.state(r, "carp_kernel_module", "cmd", "run")
            self.assertEqual(kld["name"], "kldload -n carp")
            self.assertEqual(kld["unless"], "kldstat -q -m carp")
            devd_rule = self.state(r, "/usr/local/etc/devd/carpd.conf", "file", "managed")
            self.assertEqual(devd_rule["source"], "salt://carpd/files/devd/carpd.conf")
            devd = self.state(r, "devd", "service", "running")
            self.assertNotIn("reload", devd, "devd only reads rules at start: restart it")
            self.assertIn(("file", "/usr/local/etc/devd/carpd.conf"), requisites(devd, "watch"))

            svc = self.state(r, "carpd", "service", "running")
            self.assertIs(svc["reload"], True)
            watched = requisites(svc, "watch")
            self.assertIn(("file", "/usr/local/etc/carpd.yaml"), watched)
            self.assertIn(("file", "/usr/local/etc/secrets/carp-secretsmith.yaml"), watched)
            restart = self.state(r, "carpd_restart", "cmd", "run")
            self.assertEqual(restart["name"], "service carpd restart")
            self.assertIn(("pkg", "carpd_package"), requisites(restart, "onchanges"))
            self.assertIn(("file", "/etc/rc.conf.d/carpd"), requisites(restart, "onchanges"))

            conf = self.state(r, "/usr/local/etc/carpd.yaml", "file", "managed")
            self.assertEqual(conf["check_cmd"], "/usr/local/sbin/carpd check -c")
            self.assertEqual(conf["mode"], "0644")
            self.assertIn(
                ("file", "/usr/local/etc/secrets/carp-secretsmith.yaml"),
                requisites(conf, "require"),
                "carpd check reads the secretsmith file: write it first",
            )

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
            self.assertTrue(text.startswith("# ---"), "managed files start with a banner")
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

    def test_no_credential_outside_the_secretsmith_file(self):
        placeholders = yaml.safe_load(PILLAR_EXAMPLE.read_text())["carpd"]["secretsmith"]
        needles = [ROLE_ID, SECRET_ID, placeholders["role_id"], placeholders["secret_id"]]
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

    def test_syslog_fragment_and_rotation(self):
        for r in ROUTERS:
            files = self.rendered[r]["files"]
            conf = [
                l
                for l in files["/usr/local/etc/syslog.d/carpd.conf"].splitlines()
                if l and not l.startswith("#")
            ]
            self.assertEqual([l.split() for l in conf], [["!carpd"], ["*.*", "/var/log/carpd.log"]])
            rot = [
                l.split()
                for l in files["/usr/local/etc/newsyslog.conf.d/carpd.conf"].splitlines()
                if l and not l.startswith("#")
            ]
            self.assertEqual(rot, [["/var/log/carpd.log", "root:wheel", "644", "7", "1000", "*", "JC"]])
            log = self.state(r, "/var/log/carpd.log", "file", "managed")
            self.assertIs(log["replace"], False, "syslogd does not create files; never empty it")
            syslogd = self.state(r, "syslogd", "service", "running")
            self.assertIs(syslogd["reload"], True)
            watched = requisites(syslogd, "watch")
            for sid in (
                "/usr/local/etc/syslog.d/carpd.conf",
                "/var/log/carpd.log",
                "/etc/syslog.conf without carpd in /var/log/messages",
            ):
                self.assertIn(("file", sid), watched)

    def test_messages_exclusion_edits_syslog_conf_once(self):
        args = self.state(
            "router-003", "/etc/syslog.conf without carpd in /var/log/messages", "file", "replace"
        )
        fixture = (Path(__file__).parent / "syslog.conf").read_text()
        work = Path(tempfile.mkdtemp(dir=self.tmp)) / "syslog.conf"
        work.write_text(fixture)
        salt = Salt(self.tmp / "replace", "router-003")
        # Salt's own file.replace, with the state's arguments, on a copy of FreeBSD's file.
        call = [
            "file.replace",
            str(work),
            "pattern=" + args["pattern"],
            "repl=" + args["repl"],
            "flags=" + json.dumps(args["flags"]),
            "backup=False",
        ]
        salt.call(*call)
        once = work.read_text()
        lines = once.splitlines()
        i = next(
            n for n, l in enumerate(lines) if l.endswith("/var/log/messages") and l[0] not in "#!"
        )
        self.assertEqual(lines[i - 1], "!-carpd")
        self.assertEqual(lines[i + 1], "!*")
        # Nothing else moved: removing the two added lines gives the original back.
        self.assertEqual(lines[: i - 1] + [lines[i]] + lines[i + 2 :], fixture.splitlines())
        # The commented example line is left alone.
        self.assertIn("#*.notice\t/var/log/messages", once)
        salt.call(*call)
        self.assertEqual(work.read_text(), once, "a second run must change nothing")

    # --- variants ---------------------------------------------------------------------------

    def render_variant(self, minion_id, pillar_base):
        salt = Salt(self.tmp / "variant", minion_id, pillar_base=pillar_base)
        states = states_of(salt.show_sls()[0])
        args = states["/usr/local/etc/carpd.yaml"][2]
        dest = self.tmp / "variant" / minion_id / "carpd.yaml"
        return states, salt.render(args["source"], args["context"], dest)

    def test_node_and_secretsmith_path_filled_in(self):
        states, text = self.render_variant(
            "router-x",
            {
                "carpd": {
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
        _, text = self.render_variant("router-y", {"carpd": {"config": config}})
        got = yaml.safe_load(text)
        self.assertEqual(
            list(got), ["node", "groups", "readiness", "maintenance", "metrics", "future"]
        )
        self.assertEqual(got, dict(config, node="router-y"))
        # Without a secretsmith role_id, no secretsmith file and no vault section appear.
        self.assertNotIn("vault", got)

    def test_binary_install_without_a_package(self):
        salt = Salt(
            self.tmp / "binary",
            "router-003",
            {"carpd": {"install": {"method": "binary", "binary_source": "salt://dist/carpd"}}},
        )
        states = states_of(salt.show_sls()[0])
        self.assertNotIn("carpd_package", states)
        self.assertEqual(states["/usr/local/sbin/carpd"][:2], ("file", "managed"))
        self.assertEqual(states["/usr/local/sbin/carpd"][2]["source"], "salt://dist/carpd")
        self.assertEqual(states["/usr/local/sbin/carpd"][2]["mode"], "0555")
        rc = states["/usr/local/etc/rc.d/carpd"][2]
        self.assertEqual(rc["source"], "salt://carpd/files/rc.d/carpd")
        self.assertIn(
            ("file", "/usr/local/sbin/carpd"),
            requisites(states["carpd_restart"][2], "onchanges"),
        )

    def test_legacy_files_removed_with_their_daemons_told(self):
        salt = Salt(
            self.tmp / "legacy",
            "router-002",
            {
                "carpd": {
                    "legacy": {
                        "absent": [
                            "/etc/rc.conf.d/netif/carp",
                            "/usr/local/etc/devd/carp.conf",
                            "/usr/local/etc/syslog.d/carp.conf",
                        ]
                    }
                }
            },
        )
        states = states_of(salt.show_sls()[0])
        self.assertEqual(states["/etc/rc.conf.d/netif/carp"][:2], ("file", "absent"))
        self.assertIn(
            ("service", "devd"), requisites(states["/usr/local/etc/devd/carp.conf"][2], "watch_in")
        )
        self.assertIn(
            ("service", "syslogd"),
            requisites(states["/usr/local/etc/syslog.d/carp.conf"][2], "watch_in"),
        )
        # By default (pillar.example) nothing is removed.
        self.assertFalse(
            [s for s, (m, f, _) in self.rendered["router-002"]["states"].items() if f == "absent"]
        )


if __name__ == "__main__":
    unittest.main(verbosity=2)
