#   -------------------------------------------------------------
#   carpd: Vault/OpenBao wiring for carpd's AppRole
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    terraform/modules/carpd-approle/main.tf
#   -------------------------------------------------------------
#
#   The policy lets the role read exactly the secrets carpd reads
#   (the OVH credentials, the CARP passwords), the AppRole hands out
#   short tokens to the routers' addresses only, and the role_id and
#   secret_id are stored in kv-v2 where Salt renders them into the
#   secretsmith file. The role cannot read that storage path.

locals {
  policy_name = var.policy_name != "" ? var.policy_name : var.role_name

  # carpd.yaml names a kv-v2 secret <mount>/<path>; its API path, which
  # policies name, is <mount>/data/<path>.
  read_paths = [
    for p in concat([var.ovh_credentials_path], var.carp_password_paths) :
    replace(p, "/^([^/]+)//", "$1/data/")
  ]
}

resource "vault_policy" "carpd" {
  name = local.policy_name
  policy = templatefile("${path.module}/policies/carpd.hcl.tftpl", {
    read_paths = local.read_paths
  })
}

resource "vault_approle_auth_backend_role" "carpd" {
  backend               = var.approle_backend
  role_name             = var.role_name
  token_policies        = [vault_policy.carpd.name]
  token_ttl             = var.token_ttl
  token_max_ttl         = var.token_max_ttl
  token_bound_cidrs     = var.token_bound_cidrs
  secret_id_bound_cidrs = var.secret_id_bound_cidrs
  secret_id_ttl         = var.secret_id_ttl
  secret_id_num_uses    = 0
}

resource "vault_approle_auth_backend_role_secret_id" "carpd" {
  backend   = var.approle_backend
  role_name = vault_approle_auth_backend_role.carpd.role_name

  # Every argument forces a new secret_id: changing secret_id_rotation
  # rotates it.
  metadata = jsonencode({
    managed_by = "terraform"
    module     = "carpd-approle"
    rotation   = var.secret_id_rotation
  })

  lifecycle {
    create_before_destroy = true
  }
}

resource "vault_kv_secret_v2" "approle_credentials" {
  mount = var.credentials_mount
  name  = var.credentials_path
  data_json = jsonencode({
    role_id   = vault_approle_auth_backend_role.carpd.role_id
    secret_id = vault_approle_auth_backend_role_secret_id.carpd.secret_id
  })
}
