#   -------------------------------------------------------------
#   carpd: Vault/OpenBao wiring for carpd's AppRole
#   - - - - - - - - - - - - - - - - - - - - - - - - - - - - - - -
#   Project:        carpd
#   License:        see the carpd repository
#   Source file:    terraform/modules/carpd-approle/outputs.tf
#   -------------------------------------------------------------

output "policy_name" {
  description = "The policy attached to the role's tokens."
  value       = vault_policy.carpd.name
}

output "role_id" {
  description = "The AppRole's role_id (not a secret on its own)."
  value       = vault_approle_auth_backend_role.carpd.role_id
}

output "secret_id_accessor" {
  description = "Accessor of the current secret_id, safe to log (to revoke or look it up)."
  value       = vault_approle_auth_backend_role_secret_id.carpd.accessor
}

output "credentials_path" {
  description = "Where Salt reads role_id and secret_id: <mount>/<path> of a kv-v2 secret."
  value       = "${var.credentials_mount}/${var.credentials_path}"
}
