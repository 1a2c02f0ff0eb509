#   -------------------------------------------------------------
#   carpd: the paths to add to a site's existing router policy
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    terraform/site/router-carpd.hcl
#   -------------------------------------------------------------
#
#   Nasqueron's policies/router.hcl already lets the routers' AppRole
#   read the OVH credentials (apps/data/network/carp-hyper-001-switch).
#   carpd also reads the CARP passwords, one kv-v2 secret per vhid:
#   append these blocks to that file, so that the policy keeps one
#   owner (the site's tree), instead of applying modules/carpd-approle.

path "ops/data/secrets/network/carp/2" {
    capabilities = ["read"]
}

path "ops/data/secrets/network/carp/1" {
    capabilities = ["read"]
}
