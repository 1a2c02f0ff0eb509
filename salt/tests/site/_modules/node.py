# Stand-in for the site's node execution module (tests only): get_carp_entries() returns
# this minion's CARP groups in the shape the site's rc.conf template reads, from the
# network table of shared/reference/deployment.md (vhid 1 is the planned internal group).
# The site's entries may carry the clear-text password its rc.conf fragment needs; the
# stand-in does too, so the test can prove carpd.yaml never receives it.
import json
import os

ENTRIES = {
    "router-002": [
        {"interface": "vmx1", "vhid": 2, "advskew": 100, "peer": "178.32.70.111",
         "vip": "51.68.252.230/32"},
        {"interface": "vmx0", "vhid": 1, "advskew": 0, "vip": "172.27.27.13/27"},
    ],
    "router-003": [
        {"interface": "vmx1", "vhid": 2, "advskew": 0, "peer": "178.32.70.110",
         "vip": "51.68.252.230/32"},
        {"interface": "vmx0", "vhid": 1, "advskew": 100, "vip": "172.27.27.13/27"},
    ],
}


def get_carp_entries():
    password = os.environ.get("CARPD_TEST_CARP_PASSWORD", "")
    entries = ENTRIES.get(__grains__["id"], [])
    return [dict(e, password=password) for e in json.loads(json.dumps(entries))]
