#   -------------------------------------------------------------
#   carpd: Vault/OpenBao wiring for carpd's AppRole
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    terraform/modules/carpd-approle/variables.tf
#   -------------------------------------------------------------

variable "role_name" {
  description = "Name of the AppRole the routers log in with."
  type        = string
  default     = "router"
}

variable "policy_name" {
  description = "Name of the policy; empty means the role name."
  type        = string
  default     = ""
}

variable "approle_backend" {
  description = "Mount of the AppRole auth method (carpd.yaml vault.approle_mount)."
  type        = string
  default     = "approle"
}

variable "ovh_credentials_path" {
  description = "kv-v2 secret with the OVH API credentials, as carpd.yaml names it: <mount>/<path> (ovh.credentials.vault)."
  type        = string

  validation {
    condition     = can(regex("^[^/]+/.+[^/]$", var.ovh_credentials_path))
    error_message = "ovh_credentials_path is <mount>/<path>, e.g. apps/network/carp-hyper-001-switch (no leading or trailing slash, no data/)."
  }
}

variable "carp_password_paths" {
  description = "kv-v2 secrets with CARP passwords, as carpd.yaml names them (groups[].password.vault): <mount>/<path>."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.carp_password_paths : can(regex("^[^/]+/.+[^/]$", p))])
    error_message = "Each CARP password path is <mount>/<path>, e.g. ops/secrets/network/carp/2."
  }
}

variable "secret_id_bound_cidrs" {
  description = "Source addresses allowed to log in with a secret_id (the routers' addresses towards Vault)."
  type        = list(string)

  validation {
    condition     = length(var.secret_id_bound_cidrs) > 0
    error_message = "Bind the secret_id to the routers' addresses, e.g. [\"172.27.27.11/32\", \"172.27.27.12/32\"]."
  }
}

variable "token_bound_cidrs" {
  description = "Source addresses allowed to use the tokens; empty: any."
  type        = list(string)
  default     = []
}

variable "token_ttl" {
  description = "Token TTL in seconds; carpd renews at 2/3 of it."
  type        = number
  default     = 300
}

variable "token_max_ttl" {
  description = "Longest a token lives through renewals, in seconds; carpd logs in again then."
  type        = number
  default     = 3600
}

variable "secret_id_ttl" {
  description = "Lifetime of a secret_id in seconds; 0: until rotated."
  type        = number
  default     = 0
}

variable "secret_id_rotation" {
  description = "Any value; changing it creates a new secret_id (and deletes the old one) on the next apply."
  type        = string
  default     = ""
}

variable "credentials_mount" {
  description = "kv-v2 mount where the role_id and secret_id are stored for Salt."
  type        = string
  default     = "ops"
}

variable "credentials_path" {
  description = "Path, inside credentials_mount, of the stored role_id and secret_id."
  type        = string
  default     = "secrets/network/router/vault"
}
