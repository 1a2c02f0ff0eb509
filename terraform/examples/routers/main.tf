#   -------------------------------------------------------------
#   carpd: AppRole for Nasqueron's routers (router-002, router-003)
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    terraform/examples/routers/main.tf
#   -------------------------------------------------------------
#
#   The Vault side of the routers' carpd: policy "router", AppRole
#   "router" (tokens of 300 s, secret_id usable only from the routers'
#   IntraNought addresses), a secret_id, and both stored at
#   ops/secrets/network/router/vault for Salt (pillar carpd:secretsmith).
#
#   The provider reads VAULT_ADDR and VAULT_TOKEN (or its usual
#   login settings) from the environment.

terraform {
  required_version = ">= 1.5"

  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = "~> 5.0"
    }
  }
}

provider "vault" {}

module "router" {
  source = "../../modules/carpd-approle"

  role_name = "router"

  # carpd.yaml: ovh.credentials.vault
  ovh_credentials_path = "apps/network/carp-hyper-001-switch"

  # carpd.yaml: groups[].password.vault (vhid 2 on vmx1)
  carp_password_paths = [
    "ops/secrets/network/carp/2",
  ]

  # router-002 and router-003 on vmx0 (IntraNought): login goes there.
  secret_id_bound_cidrs = [
    "172.27.27.11/32",
    "172.27.27.12/32",
  ]

  token_ttl     = 300
  token_max_ttl = 3600

  credentials_mount = "ops"
  credentials_path  = "secrets/network/router/vault"
}

output "role_id" {
  value = module.router.role_id
}

output "secret_id_accessor" {
  value = module.router.secret_id_accessor
}

output "credentials_path" {
  value = module.router.credentials_path
}
