#   -------------------------------------------------------------
#   carpd: Vault/OpenBao wiring for carpd's AppRole
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    terraform/modules/carpd-approle/versions.tf
#   -------------------------------------------------------------

terraform {
  required_version = ">= 1.5"

  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = "~> 5.0"
    }
  }
}
