#!/usr/bin/env python3
# The migration of docs/migration.md, rendered at every step with real `salt-call --local`:
# for router-002 and router-003, salt/pillar.example with carpd:migration:step set to watch,
# kernel, ip and done, together with stand-in states of the site's roles/router/carp
# (tests/site/, written from shared/reference/deployment.md) as the guide has the operator
# trim them by that step. At every step this proves:
#
# - Salt renders both together: no "Detected conflicting IDs";
# - no path is managed twice (two file states, whatever their IDs, naming one path);
# - at most one active devd notify rule for system CARP (devd runs only the first match);
# - exactly one program acts on MASTER (the site's failover script through its devd rule,
#   or carpd's daemon with failover_ips and without --no-apply);
# - exactly one owner of the kernel's CARP groups (the site's rc.conf fragment, or carpd
#   applying its groups);
# - the owners are the ones the guide promises for that step.
#
# Then the checker is shown not to be vacuous: the same renders with one of the guide's
# site edits left out fail in the way that edit prevents.
#
# Run by scripts/test-deploy (SALT_CALL, CARPD_BIN as for test_formula.py).

import re
import tempfile
import unittest
from pathlib import Path

from test_formula import FORMULA_ROOT, ROUTERS, SITE_ROOT, Salt, states_of

STEPS = ("watch", "kernel", "ip", "done")
SITE_SLS = "roles.router.carp"

# What docs/migration.md has the operator delete from the site's roles/router/carp before
# applying each step (the stand-in's stand_in:removed switches). Cumulative.
SITE_EDITS = {
    # The formula's syslog fragment (join mode) and exclusion replace the site's.
    "watch": ["syslog", "syslog_exclusion"],
    # carpd configures the kernel: the rc.conf fragment goes.
    "kernel": ["netif"],
    # carpd moves the IP: the devd hook goes.
    "ip": ["devd"],
    # The failover script and its pip dependencies go.
    "done": ["script"],
}

# Who the guide says owns what at each step.
EXPECTED = {
    "watch": {"master": ["carp-ovh-failover"], "kernel": ["rc.conf fragment"]},
    "kernel": {"master": ["carp-ovh-failover"], "kernel": ["carpd"]},
    "ip": {"master": ["carpd"], "kernel": ["carpd"]},
    "done": {"master": ["carpd"], "kernel": ["carpd"]},
}

FILE_FUNCTIONS = {"managed", "absent", "replace", "symlink", "directory", "recurse", "line",
                  "append", "prepend", "blockreplace", "comment", "uncomment", "copy", "rename"}
PRESENT = {"managed", "symlink", "copy", "recurse"}
DEVD_DIRS = ("/etc/devd/", "/usr/local/etc/devd/")
NOTIFY = re.compile(r"notify\s+-?\d+\s*\{(.*?)\};", re.S)


def removed_by(step):
    out = []
    for s in STEPS[: STEPS.index(step) + 1]:
        out.extend(SITE_EDITS[s])
    return out


def source_text(url):
    """The text of a salt:// source, from the file roots on disk."""
    rel = url.removeprefix("salt://")
    for root in (FORMULA_ROOT, SITE_ROOT):
        if (root / rel).is_file():
            return (root / rel).read_text()
    raise AssertionError(f"source {url} is in no file root")


def analyse(states):
    """What the rendered states do: problems (list of sentences), master actors, kernel
    owners and active CARP devd rules."""
    problems = []
    paths = {}
    for sid, (module, fun, args) in states.items():
        if module == "file" and fun in FILE_FUNCTIONS:
            paths.setdefault(args.get("name", sid), []).append(f"{sid} (file.{fun})")
    for path, ids in sorted(paths.items()):
        if len(ids) > 1:
            problems.append(f"{path} is managed twice: {', '.join(ids)}")

    rules = []
    for sid, (module, fun, args) in states.items():
        name = args.get("name", sid)
        if module == "file" and fun in PRESENT and name.startswith(DEVD_DIRS):
            for block in NOTIFY.findall(source_text(args["source"])):
                if re.search(r'match\s+"system"\s+"CARP"', block):
                    action = re.search(r'action\s+"([^"]*)"', block).group(1)
                    rules.append((name, action))
    if len(rules) > 1:
        problems.append(
            f"{len(rules)} devd notify rules match system CARP ({', '.join(r for r, _ in rules)}): "
            "devd runs only the first"
        )

    master = []
    kernel = []
    for _, action in rules:
        if "carp-ovh-failover" in action:
            master.append("carp-ovh-failover")
    carpd_conf = states.get("/usr/local/etc/carpd.yaml")
    rc_conf = states.get("/etc/rc.conf.d/carpd")
    if carpd_conf and rc_conf and "carpd-service" in states:
        config = carpd_conf[2]["context"]["config"]
        applying = "--no-apply" not in rc_conf[2]["context"]["flags"].split()
        if applying and config.get("failover_ips"):
            master.append("carpd")
        if applying and config.get("groups"):
            kernel.append("carpd")
    fragment = states.get("/etc/rc.conf.d/netif/carp")
    if fragment and fragment[1] in PRESENT:
        kernel.append("rc.conf fragment")
    if len(master) != 1:
        problems.append(f"{len(master)} programs act on MASTER: {master}")
    if len(kernel) != 1:
        problems.append(f"{len(kernel)} owners of the kernel's CARP groups: {kernel}")
    return {"problems": problems, "master": master, "kernel": kernel, "rules": rules}


class MigrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="carpd-migration-"))

    def render(self, router, step, removed, extra=None):
        """state.show_sls of the formula and the site's stand-in together; raises
        AssertionError with Salt's message when they do not render (conflicting IDs...)."""
        salt = Salt(
            Path(tempfile.mkdtemp(dir=self.tmp)),
            router,
            [{"carpd": {"migration": {"step": step}}}, {"stand_in": {"removed": removed}}, extra],
        )
        return states_of(salt.show_sls(f"carpd,{SITE_SLS}")[0])

    def test_every_step_has_one_owner_for_everything(self):
        for router in ROUTERS:
            for step in STEPS:
                with self.subTest(router=router, step=step):
                    got = analyse(self.render(router, step, removed_by(step)))
                    self.assertEqual(got["problems"], [], f"{router} at step {step}")
                    self.assertEqual(got["master"], EXPECTED[step]["master"])
                    self.assertEqual(got["kernel"], EXPECTED[step]["kernel"])

    def test_the_devd_hook_changes_hands_in_one_run(self):
        # At step ip the site's hook is removed and carpd's rule installed by the same
        # highstate, and devd is restarted once after both.
        states = self.render("router-002", "ip", removed_by("ip"))
        old = states["/usr/local/etc/devd/carp.conf"]
        new = states["/usr/local/etc/devd/carpd.conf"]
        self.assertEqual((old[0], old[1], new[1]), ("file", "absent", "managed"))
        self.assertIn({"service": "carpd-devd-restart"}, old[2]["watch_in"])
        restart = states["carpd-devd-restart"][2]
        self.assertIn({"file": "/usr/local/etc/devd/carpd.conf"}, restart["watch"])
        # Before that step carpd's rule is absent (the package ships it as an example only).
        for step in ("watch", "kernel"):
            states = self.render("router-002", step, removed_by(step))
            self.assertEqual(states["/usr/local/etc/devd/carpd.conf"][1], "absent", step)

    def test_watch_only_changes_nothing(self):
        states = self.render("router-003", "watch", removed_by("watch"))
        self.assertEqual(states["/etc/rc.conf.d/carpd"][2]["context"]["flags"], "--no-apply")
        removed = [sid for sid, (m, f, _) in states.items() if f == "absent"]
        # carpd's devd rule, and its boot gate: carpd does not lift it while watching.
        self.assertEqual(
            sorted(removed), ["/boot/loader.conf.d/carpd.conf", "/usr/local/etc/devd/carpd.conf"]
        )
        # Kernel step: carpd.yaml without failover_ips, so carpd cannot claim the IP even
        # though it now applies.
        states = self.render("router-003", "kernel", removed_by("kernel"))
        self.assertEqual(states["/etc/rc.conf.d/carpd"][2]["context"]["flags"], "")
        self.assertNotIn("failover_ips", states["/usr/local/etc/carpd.yaml"][2]["context"]["config"])

    def test_the_boot_gate_is_shipped_only_where_carpd_lifts_it(self):
        gate = "/boot/loader.conf.d/carpd.conf"
        for step in STEPS:
            states = self.render("router-002", step, removed_by(step))
            want = "absent" if step == "watch" else "managed"
            self.assertEqual(states[gate][1], want, step)
        # Beside the site's own CARP loader.conf file, never in it.
        self.assertEqual(
            states[gate][2]["source"], "salt://carpd/files/loader-boot-gate.conf"
        )
        # carp.allow_at_start false, or --no-apply: carpd would not lift it.
        for extra in (
            {"carpd": {"config": {"carp": {"allow_at_start": False}}}},
            {"carpd": {"service": {"flags": "--no-apply"}}},
        ):
            states = self.render("router-002", "done", removed_by("done"), extra)
            self.assertEqual(states[gate][1], "absent", extra)

    # --- the checks are not vacuous: each edit of the guide, left out, is caught ------------

    def test_keeping_the_sites_devd_hook_at_step_ip_is_two_master_actors(self):
        removed = [r for r in removed_by("ip") if r != "devd"]
        with self.assertRaises(AssertionError) as failed:
            self.render("router-002", "ip", removed)
        # Both states are named for the path: Salt itself refuses them.
        self.assertIn("Detected conflicting IDs", str(failed.exception))
        self.assertIn("/usr/local/etc/devd/carp.conf", str(failed.exception))
        # With the formula told not to remove the old hook, Salt renders, and the checker
        # finds two CARP rules and two programs acting on MASTER.
        states = self.render(
            "router-002", "ip", removed, {"carpd": {"migration": {"legacy": {"devd_rule": ""}}}}
        )
        got = analyse(states)
        self.assertEqual(sorted(got["master"]), ["carp-ovh-failover", "carpd"])
        self.assertTrue(any("devd runs only the first" in p for p in got["problems"]), got)
        self.assertTrue(any("2 programs act on MASTER" in p for p in got["problems"]), got)

    def test_keeping_the_rc_conf_fragment_is_two_kernel_owners(self):
        removed = [r for r in removed_by("kernel") if r != "netif"]
        states = self.render(
            "router-003", "kernel", removed, {"carpd": {"migration": {"legacy": {"netif_fragment": ""}}}}
        )
        got = analyse(states)
        self.assertEqual(sorted(got["kernel"]), ["carpd", "rc.conf fragment"])
        self.assertTrue(any("2 owners of the kernel" in p for p in got["problems"]), got)

    def test_keeping_the_sites_syslog_edit_is_a_path_managed_twice(self):
        removed = [r for r in removed_by("watch") if r != "syslog_exclusion"]
        got = analyse(self.render("router-003", "watch", removed))
        self.assertIn(
            "/etc/syslog.conf is managed twice: carpd-syslog-exclude-/var/log/messages "
            "(file.replace), /etc/syslog.conf (file.replace)",
            got["problems"],
        )

    def test_the_formula_writing_the_sites_files_is_refused(self):
        # manage:secretsmith and manage:loader_conf are false in pillar.example because the
        # site's role writes those paths; turned on, Salt refuses the pair.
        with self.assertRaises(AssertionError) as failed:
            self.render(
                "router-003", "watch", removed_by("watch"),
                {"carpd": {"manage": {"loader_conf": True}}},
            )
        self.assertIn("Detected conflicting IDs", str(failed.exception))
        self.assertIn("/boot/loader.conf.d/carp.conf", str(failed.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
