#!/usr/bin/env python3
# The Terraform module (terraform/modules/carpd-approle) and its example root
# (terraform/examples/routers), checked without Terraform (it cannot be installed here):
#
# - Parse and format: every .tf parses as HCL2 (python-hcl2), starts with the house banner,
#   indents by 2 spaces (4 in the policy template), has no tabs or trailing blanks; the
#   provider constraint is hashicorp/vault ~> 5.0; every resource argument exists in the
#   vault provider 5.x schema; every variable the module uses is declared, and the example
#   sets every required one and nothing unknown.
# - Semantics, against a real OpenBao dev server: the policy text the module renders (its own
#   template, its own path rewrite), the AppRole with the module's settings as the example
#   sets them, a secret_id stored in kv-v2 where the module stores it; then an AppRole login
#   proves the CIDR binding and the token TTL and policies, reads exactly the secrets carpd
#   needs and is refused everything else; finally carpd itself (`carpd secrets check`) logs
#   in with those credentials through a secretsmith file and reads its password.
#
# Run by scripts/test-deploy (virtualenv with python-hcl2); needs CARPD_TEST_BAO (the bao
# binary) and CARPD_BIN (the debug carpd binary).

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import hcl2

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "terraform" / "modules" / "carpd-approle"
EXAMPLE = REPO / "terraform" / "examples" / "routers"
# The minimal path for a site that already owns its router policy (README.md).
SITE_POLICY = REPO / "terraform" / "site" / "router-carpd.hcl"
# That policy's one rule today (shared/reference/deployment.md).
SITE_ROUTER_POLICY = 'path "apps/data/network/carp-hyper-001-switch" { capabilities = ["read"] }\n'
CARPD_BIN = os.environ.get("CARPD_BIN", str(REPO / "target" / "debug" / "carpd"))

# Arguments of the resources the module uses, as hashicorp/vault 5.x defines them
# (vault/resource_*.go and auth_token.go at v5.3.0, the version the first site runs).
TOKEN_FIELDS = {
    "token_bound_cidrs", "token_max_ttl", "token_ttl", "token_explicit_max_ttl",
    "token_no_default_policy", "token_period", "token_policies", "token_type",
    "token_num_uses",
}
META = {"lifecycle", "depends_on", "count", "for_each", "provider"}
SCHEMA = {
    "vault_policy": {"name", "policy", "namespace"},
    "vault_approle_auth_backend_role": {
        "role_name", "role_id", "bind_secret_id", "secret_id_bound_cidrs",
        "secret_id_num_uses", "secret_id_ttl", "backend", "namespace",
    } | TOKEN_FIELDS,
    "vault_approle_auth_backend_role_secret_id": {
        "role_name", "secret_id", "cidr_list", "metadata", "ttl", "num_uses", "backend",
        "with_wrapped_accessor", "wrapping_ttl", "namespace",
    },
    "vault_kv_secret_v2": {
        "mount", "name", "cas", "options", "disable_read", "data_json", "data_json_wo",
        "data_json_wo_version", "delete_all_versions", "custom_metadata", "namespace",
    },
}


def unquote(v):
    """python-hcl2 keeps string literals quoted; give their value."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return json.loads(v)
    if isinstance(v, list):
        return [unquote(x) for x in v]
    return v


def blocks(parsed, kind):
    """{label: body} of top-level blocks such as variable "x" or module "y"."""
    out = {}
    for entry in parsed.get(kind, []):
        for label, body in entry.items():
            out[unquote(label)] = body
    return out


def load(directory):
    merged = {}
    for f in sorted(directory.glob("*.tf")):
        with f.open() as fh:
            for kind, items in hcl2.load(fh).items():
                if not kind.startswith("__"):
                    merged.setdefault(kind, []).extend(items)
    return merged


class Module:
    """The module's parsed text, evaluated for the inputs the example gives it."""

    def __init__(self):
        self.parsed = load(MODULE)
        self.example = load(EXAMPLE)
        self.variables = blocks(self.parsed, "variable")
        call = blocks(self.example, "module")["router"]
        self.inputs = {k: unquote(v) for k, v in call.items() if not k.startswith("__")}
        self.resources = {}
        for entry in self.parsed.get("resource", []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    self.resources[(unquote(rtype), unquote(name))] = body
        self.locals = {}
        for entry in self.parsed.get("locals", []):
            self.locals.update({k: v for k, v in entry.items() if not k.startswith("__")})

    def var(self, name):
        if name in self.inputs:
            return self.inputs[name]
        if "default" not in self.variables[name]:
            raise AssertionError(f"variable {name} has no default and the example does not set it")
        return unquote(self.variables[name]["default"])

    def local(self, name):
        expr = self.locals[name]
        m = re.fullmatch(r'\$\{var\.(\w+) != "" \? var\.\1 : var\.(\w+)\}', expr)
        if m:
            return self.var(m[1]) or self.var(m[2])
        m = re.fullmatch(
            r'\$\{\[for (\w+) in concat\(\[var\.(\w+)\], var\.(\w+)\) : '
            r'replace\(\1, "/(.*)/", "(.*)"\)\]\}',
            expr,
        )
        if m:
            # Terraform's replace() with a /regex/ pattern; $1 is the first group.
            pattern, repl = m[4], re.sub(r"\$(\d)", r"\\\1", m[5])
            return [re.sub(pattern, repl, p, count=1) for p in [self.var(m[2])] + self.var(m[3])]
        raise AssertionError(f"local.{name}: the test does not know this expression: {expr}")

    def value(self, v):
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if not isinstance(v, str):
            return v
        if v.startswith('"'):
            return unquote(v)
        m = re.fullmatch(r"\$\{var\.(\w+)\}", v)
        if m:
            return self.var(m[1])
        m = re.fullmatch(r"\$\{local\.(\w+)\}", v)
        if m:
            return self.local(m[1])
        m = re.fullmatch(r"\$\{(vault_\w+)\.(\w+)\.(\w+)\}", v)
        if m and (m[1], m[2]) in self.resources and m[3] in self.resources[(m[1], m[2])]:
            return self.value(self.resources[(m[1], m[2])][m[3]])
        raise AssertionError(f"the test does not know this expression: {v}")

    def arg(self, rtype, name):
        (body,) = [b for (t, _), b in self.resources.items() if t == rtype]
        return self.value(body[name])

    def policy_text(self):
        """The policy exactly as templatefile() renders it for these inputs."""
        (body,) = [b for (t, _), b in self.resources.items() if t == "vault_policy"]
        m = re.fullmatch(
            r'\$\{templatefile\("\$\{path\.module\}/([^"]+)", \{(\w+) = local\.(\w+)\}\)\}',
            body["policy"],
        )
        assert m, f"vault_policy.policy: unexpected expression {body['policy']}"
        return render_template((MODULE / m[1]).read_text(), {m[2]: self.local(m[3])})


def render_template(text, variables):
    """The subset of Terraform's template language the policy template uses: one
    `%{ for x in list ~}` ... `%{ endfor ~}` loop (the ~ strips the newline after it) and
    `${name}` interpolation. Anything else is an error, not a silent pass."""

    def loop(m):
        name, seq, body = m[1], m[2], m[3]
        return "".join(body.replace("${" + name + "}", item) for item in variables[seq])

    out = re.sub(
        r"%\{ for (\w+) in (\w+) ~\}\n(.*?)%\{ endfor ~\}\n?", loop, text, flags=re.DOTALL
    )
    for name, value in variables.items():
        if isinstance(value, str):
            out = out.replace("${" + name + "}", value)
    if "${" in out or "%{" in out:
        raise AssertionError(f"template constructs the test cannot render:\n{out}")
    return out


class SourceTest(unittest.TestCase):
    def test_every_file_parses_and_follows_the_house_style(self):
        files = sorted(MODULE.rglob("*.tf")) + sorted(EXAMPLE.rglob("*.tf"))
        files += sorted(MODULE.rglob("*.tftpl")) + [SITE_POLICY]
        self.assertGreaterEqual(len(files), 7)
        for f in files:
            text = f.read_text()
            rel = f.relative_to(REPO)
            if f.suffix == ".tf":
                with f.open() as fh:
                    hcl2.load(fh)  # raises on a syntax error
            lines = text.splitlines()
            self.assertTrue(lines[0].startswith("#   ---"), f"{rel}: starts with the banner")
            self.assertIn(f"Source file:    {rel}", text, rel)
            self.assertTrue(text.endswith("\n") and not text.endswith("\n\n"), rel)
            step = 4 if f.suffix in (".tftpl", ".hcl") else 2
            for n, line in enumerate(lines, 1):
                self.assertNotIn("\t", line, f"{rel}:{n}: tab")
                self.assertEqual(line, line.rstrip(), f"{rel}:{n}: trailing blank")
                indent = len(line) - len(line.lstrip(" "))
                if not line.lstrip().startswith("#"):
                    self.assertEqual(indent % step, 0, f"{rel}:{n}: indent by {step}")
            if f.suffix == ".tf":
                self.assert_equals_aligned(rel, lines)

    def assert_equals_aligned(self, rel, lines):
        """terraform fmt (hclwrite) aligns the = of adjacent one-per-line arguments at one
        depth; a blank line, a comment or a block ends the run, and an argument whose value
        opens a bracket it closes on a later line is aligned with nothing (so
        `name = x` above `policy = f({` keeps one space). scripts/test-deploy also runs
        hclwrite's own formatter (hclfmt) or terraform fmt, which are authoritative."""
        run = []
        for n, line in enumerate(lines + [""], 1):
            m = re.match(r"^( *)([A-Za-z_][\w-]*) *= ", line)
            if m and line.rstrip().endswith(("{", "(", "[")):
                self.assertRegex(line, r"^ *[A-Za-z_][\w-]* = ", f"{rel}:{n}: one space before =")
                m = None
            self.assertNotRegex(
                line, r'= "\$\{[^}]*\}"$', f"{rel}:{n}: interpolation-only string (terraform fmt unwraps it)"
            )
            key = (len(m[1]), line.index("=")) if m else None
            if m and run and run[-1][1][0] == key[0] and run[-1][0] == n - 1:
                run.append((n, key))
                continue
            columns = {c for _, (_, c) in run}
            self.assertLessEqual(len(columns), 1, f"{rel}:{run[0][0] if run else n}: align =")
            run = [(n, key)] if m else []

    def test_provider_constraint_is_vault_5(self):
        for parsed in (load(MODULE), load(EXAMPLE)):
            (tf,) = parsed["terraform"]
            (providers,) = tf["required_providers"]
            self.assertEqual(unquote(providers["vault"]["source"]), "hashicorp/vault")
            self.assertEqual(unquote(providers["vault"]["version"]), "~> 5.0")

    def test_resources_use_only_provider_5_arguments(self):
        m = Module()
        self.assertEqual({t for t, _ in m.resources}, set(SCHEMA))
        for (rtype, name), body in m.resources.items():
            args = {k for k in body if not k.startswith("__")}
            unknown = args - SCHEMA[rtype] - META
            self.assertFalse(unknown, f"{rtype}.{name}: not in provider 5.x: {unknown}")

    def test_variables_declared_and_example_complete(self):
        m = Module()
        text = "".join(f.read_text() for f in MODULE.glob("*.tf"))
        used = set(re.findall(r"\bvar\.(\w+)", text))
        self.assertFalse(used - set(m.variables), "undeclared variables")
        self.assertFalse(set(m.variables) - used, "declared but unused variables")
        given = set(m.inputs) - {"source"}
        self.assertFalse(given - set(m.variables), "the example sets unknown inputs")
        required = {n for n, b in m.variables.items() if "default" not in b}
        self.assertFalse(required - given, "the example misses required inputs")
        self.assertEqual(m.inputs["source"], "../../modules/carpd-approle")
        self.assertTrue((EXAMPLE / m.inputs["source"]).resolve() == MODULE.resolve())

    def test_outputs_never_expose_the_secret_id(self):
        text = (MODULE / "outputs.tf").read_text()
        self.assertNotRegex(text, r"role_secret_id\.carpd\.secret_id\b")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bao:
    """An OpenBao dev server on 127.0.0.1 and a small HTTP client for it."""

    def __init__(self):
        binary = os.environ.get("CARPD_TEST_BAO", "bao")
        self.port = free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root = "root-" + os.urandom(8).hex()
        self.proc = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-root-token-id={self.root}",
             f"-dev-listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.req("GET", "sys/health", token=None)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise AssertionError("the OpenBao dev server did not come up")
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def req(self, method, path, body=None, token="root"):
        headers = {}
        if token is not None:
            headers["X-Vault-Token"] = self.root if token == "root" else token
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(f"{self.addr}/v1/{path}", data, headers, method=method)
        try:
            with urllib.request.urlopen(r, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else {}

    def ok(self, method, path, body=None, token="root"):
        status, data = self.req(method, path, body, token)
        assert status in (200, 204), f"{method} {path}: HTTP {status}: {data}"
        return data


class OpenBaoTest(unittest.TestCase):
    """The policy and AppRole exactly as the module creates them, in a real server."""

    @classmethod
    def setUpClass(cls):
        cls.m = Module()
        cls.bao = Bao()

    @classmethod
    def tearDownClass(cls):
        cls.bao.stop()

    def test_the_role_reads_exactly_what_carpd_needs(self):
        m, bao = self.m, self.bao
        ovh_path = m.var("ovh_credentials_path")
        carp_paths = m.var("carp_password_paths")
        self.assertEqual(ovh_path, "apps/network/carp-hyper-001-switch")
        self.assertEqual(carp_paths, ["ops/secrets/network/carp/2"])
        store_mount = m.arg("vault_kv_secret_v2", "mount")
        store_name = m.arg("vault_kv_secret_v2", "name")
        self.assertEqual(f"{store_mount}/{store_name}", "ops/secrets/network/router/vault")

        # The world carpd lives in: kv-v2 mounts apps and ops, the secrets and neighbours.
        for mount in sorted({p.split("/")[0] for p in [ovh_path, *carp_paths]} | {store_mount}):
            bao.ok("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})

        def api(path):  # carpd's <mount>/<path> -> kv-v2 data path
            mount, rest = path.split("/", 1)
            return f"{mount}/data/{rest}"

        ovh = {"application_key": "ak", "application_secret": "as-x", "consumer_key": "ck-y"}
        bao.ok("POST", api(ovh_path), {"data": ovh})
        bao.ok("POST", api("apps/network/carp-hyper-002-switch"), {"data": {"x": "sibling"}})
        bao.ok("POST", api(carp_paths[0]), {"data": {"password": "carp-pass-2"}})
        bao.ok("POST", api("ops/secrets/network/carp/3"), {"data": {"password": "other"}})

        # The module's resources, in the order Terraform creates them.
        policy_name = m.arg("vault_policy", "name")
        self.assertEqual(policy_name, "router")
        policy = m.policy_text()
        self.assertEqual(
            re.findall(r'^path "([^"]+)"', policy, re.M),
            ["apps/data/network/carp-hyper-001-switch", "ops/data/secrets/network/carp/2"],
        )
        bao.ok("PUT", f"sys/policies/acl/{policy_name}", {"policy": policy})
        self.assertEqual(bao.ok("GET", f"sys/policies/acl/{policy_name}")["data"]["policy"], policy)

        backend = m.arg("vault_approle_auth_backend_role", "backend")
        role = m.arg("vault_approle_auth_backend_role", "role_name")
        self.assertEqual(m.arg("vault_approle_auth_backend_role_secret_id", "role_name"), role)
        settings = {
            k: m.arg("vault_approle_auth_backend_role", k)
            for k in ("token_policies", "token_ttl", "token_max_ttl", "token_bound_cidrs",
                      "secret_id_bound_cidrs", "secret_id_ttl", "secret_id_num_uses")
        }
        self.assertEqual(settings["token_policies"], ["router"])
        self.assertEqual(settings["token_ttl"], 300)
        self.assertEqual(settings["secret_id_bound_cidrs"], ["172.27.27.11/32", "172.27.27.12/32"])
        bao.ok("POST", f"sys/auth/{backend}", {"type": "approle"})
        bao.ok("POST", f"auth/{backend}/role/{role}", settings)

        def new_credentials():
            role_id = bao.ok("GET", f"auth/{backend}/role/{role}/role-id")["data"]["role_id"]
            secret_id = bao.ok("POST", f"auth/{backend}/role/{role}/secret-id", {})["data"]["secret_id"]
            bao.ok("POST", api(f"{store_mount}/{store_name}"),
                   {"data": {"role_id": role_id, "secret_id": secret_id}})
            # What Salt reads back and renders into the secretsmith file.
            stored = bao.ok("GET", api(f"{store_mount}/{store_name}"))["data"]["data"]
            return stored["role_id"], stored["secret_id"]

        def login(creds):
            return bao.req("POST", f"auth/{backend}/login",
                           {"role_id": creds[0], "secret_id": creds[1]}, token=None)

        # Bound to the routers' addresses: this test runs from 127.0.0.1 and is refused.
        status, data = login(new_credentials())
        self.assertEqual(status, 400, data)
        self.assertIn("CIDR", json.dumps(data))

        # Same role with 127.0.0.1 added to the binding (the only change from the module's
        # settings), so the rest can log in from here.
        widened = dict(settings, secret_id_bound_cidrs=settings["secret_id_bound_cidrs"] + ["127.0.0.1/32"])
        bao.ok("POST", f"auth/{backend}/role/{role}", widened)
        creds = new_credentials()
        status, data = login(creds)
        self.assertEqual(status, 200, data)
        token = data["auth"]["client_token"]
        self.assertEqual(sorted(data["auth"]["token_policies"]), ["default", "router"])
        self.assertEqual(data["auth"]["lease_duration"], 300)
        me = bao.ok("GET", "auth/token/lookup-self", token=token)["data"]
        self.assertLessEqual(me["ttl"], 300)
        self.assertGreater(me["ttl"], 280)

        # Allowed: exactly the secrets carpd reads.
        got = bao.ok("GET", api(ovh_path), token=token)["data"]["data"]
        self.assertEqual(got, ovh)
        got = bao.ok("GET", api(carp_paths[0]), token=token)["data"]["data"]
        self.assertEqual(got, {"password": "carp-pass-2"})

        # Refused: everything else.
        denied = [
            ("GET", api("apps/network/carp-hyper-002-switch"), None),
            ("GET", api("ops/secrets/network/carp/3"), None),
            ("GET", api(f"{store_mount}/{store_name}"), None),
            ("GET", "apps/metadata/network/carp-hyper-001-switch", None),
            ("LIST", "apps/metadata/network", None),
            ("LIST", "ops/metadata/secrets/network/carp", None),
            ("POST", api(ovh_path), {"data": {"application_key": "mine"}}),
            ("POST", api(carp_paths[0]), {"data": {"password": "mine"}}),
            ("DELETE", api(carp_paths[0]), None),
            ("POST", f"auth/{backend}/role/{role}/secret-id", {}),
            ("GET", f"auth/{backend}/role/{role}/role-id", None),
            ("GET", f"sys/policies/acl/{policy_name}", None),
        ]
        for method, path, body in denied:
            status, data = bao.req(method, path, body, token=token)
            self.assertEqual(status, 403, f"{method} {path} must be denied: {status} {data}")
        # Nothing was changed by the refused writes.
        got = bao.ok("GET", api(ovh_path))["data"]["data"]
        self.assertEqual(got, ovh)

        self.carpd_reads_its_password(creds, carp_paths[0], backend)

    def test_the_sites_router_policy_with_carpds_paths_appended(self):
        # The documented minimal path: the site's own router policy, with
        # terraform/site/router-carpd.hcl appended, gives a token exactly what carpd reads
        # (the OVH credentials and both vhids' passwords) and nothing else.
        bao = self.bao
        for mount in ("apps", "ops"):
            bao.req("POST", f"sys/mounts/{mount}", {"type": "kv", "options": {"version": "2"}})
        bao.ok("POST", "apps/data/network/carp-hyper-001-switch", {"data": {"application_key": "k"}})
        for vhid in (1, 2, 3):
            bao.ok("POST", f"ops/data/secrets/network/carp/{vhid}", {"data": {"password": f"p{vhid}"}})
        bao.ok("POST", "ops/data/secrets/network/router/vault", {"data": {"role_id": "r"}})
        policy = SITE_ROUTER_POLICY + "\n" + SITE_POLICY.read_text()
        bao.ok("PUT", "sys/policies/acl/site-router", {"policy": policy})
        token = bao.ok("POST", "auth/token/create", {"policies": ["site-router"], "ttl": "300s"})[
            "auth"]["client_token"]
        got = bao.ok("GET", "apps/data/network/carp-hyper-001-switch", token=token)["data"]["data"]
        self.assertEqual(got, {"application_key": "k"})
        for vhid in (1, 2):
            got = bao.ok("GET", f"ops/data/secrets/network/carp/{vhid}", token=token)["data"]["data"]
            self.assertEqual(got, {"password": f"p{vhid}"})
        for method, path, body in (
            ("GET", "ops/data/secrets/network/carp/3", None),
            ("GET", "ops/data/secrets/network/router/vault", None),
            ("POST", "ops/data/secrets/network/carp/2", {"data": {"password": "mine"}}),
            ("LIST", "ops/metadata/secrets/network/carp", None),
        ):
            status, data = bao.req(method, path, body, token=token)
            self.assertEqual(status, 403, f"{method} {path} must be denied: {status} {data}")

    def carpd_reads_its_password(self, creds, carp_path, backend):
        """carpd itself, with a secretsmith file like the Salt formula writes, logs in and
        reads the password: the policy is enough for the real client. A group whose
        password lives on a path the policy does not cover fails the same check."""
        work = Path(tempfile.mkdtemp(prefix="carpd-tf-"))
        secretsmith = work / "carp-secretsmith.yaml"
        secretsmith.write_text(
            "vault:\n"
            f"  server:\n    url: {self.bao.addr}\n"
            f"  auth:\n    method: approle\n    role_id: {creds[0]}\n    secret_id: {creds[1]}\n"
        )
        secretsmith.chmod(0o400)

        def check(path):
            config = work / "carpd.yaml"
            config.write_text(
                "node: router-003\n"
                f"vault: {{ secretsmith: {secretsmith}, approle_mount: {backend} }}\n"
                "groups:\n  - interface: vmx1\n    vhid: 2\n"
                f"    password: {{ vault: {path} }}\n    addresses: [51.68.252.230/32]\n"
            )
            args = [CARPD_BIN, "-c", str(config), "secrets", "check"]
            if os.getuid() != 0:
                args.insert(1, "--allow-insecure-files")
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CARPD_", "VAULT_"))}
            return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)

        p = check(carp_path)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("secrets OK", p.stdout)
        self.assertIn("policies: default, router", p.stdout)
        self.assertNotIn("carp-pass-2", p.stdout + p.stderr)
        p = check("ops/secrets/network/carp/3")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("403", p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
