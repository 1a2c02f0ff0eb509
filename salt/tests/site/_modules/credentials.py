# Stand-in for the site's credentials execution module (tests only): read_secret(path)
# returns the secret the test put in the environment, so that a leak in the test's output
# cannot be a coincidence. The real module reads Vault from the Salt master.
import json
import os


def read_secret(path):
    secrets = json.loads(os.environ.get("CARPD_TEST_SECRETS", "{}"))
    if path not in secrets:
        raise KeyError(f"stand-in credentials.read_secret: no secret {path!r}")
    return secrets[path]
