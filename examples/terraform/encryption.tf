# --- Encrypting with the CMK -------------------------------------------------------------

# A value encrypted under the application's key (at most 6144 bytes): the blob can go
# into the application's configuration, and only callers allowed kms:Decrypt on the key
# open it, with the same encryption context. The plaintext is kept in state (sensitive).
resource "strongbox_ciphertext" "signing_key" {
  key_id             = strongbox_cmk_alias.app.name
  plaintext          = "example-signing-key-change-me"
  encryption_context = { app = "prod/app" }
}

# Decrypting a blob, naming the key that must have made it. For a blob kept in the
# configuration itself, the ephemeral "strongbox_plaintext" (Terraform >= 1.10) feeds a
# secret's secret_data_wo without the value ever being in plan or state.
data "strongbox_plaintext" "signing_key" {
  ciphertext_blob    = strongbox_ciphertext.signing_key.ciphertext_blob
  key_id             = strongbox_cmk_alias.app.name
  encryption_context = { app = "prod/app" }
}

output "signing_key_blob" {
  description = "The encrypted signing key, safe to hand to the application's configuration."
  value       = strongbox_ciphertext.signing_key.ciphertext_blob
}

output "signing_key" {
  description = "The signing key, decrypted again through the data source."
  value       = data.strongbox_plaintext.signing_key.plaintext
  sensitive   = true
}
