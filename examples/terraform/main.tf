# A realistic Strongbox setup: a customer master key with an alias, secrets encrypted
# under it (one holding database credentials as JSON), a rotation policy, and a data
# source that reads a secret back into a sensitive output.
#
# The provider takes its settings from STRONGBOX_ADDR, STRONGBOX_TOKEN and
# STRONGBOX_CACERT (see README.md); nothing is hard-coded here.

terraform {
  required_providers {
    strongbox = {
      source = "strongbox/strongbox"
    }
  }
}

provider "strongbox" {}

variable "environment" {
  description = "Prefix of every secret name."
  type        = string
  default     = "prod"
}

variable "db_password" {
  description = "Initial password of the application's database account."
  type        = string
  sensitive   = true
  default     = "initial-Passw0rd-change-me"
}

locals {
  tags = {
    environment = var.environment
    managed-by  = "terraform"
  }
}

# --- Keys -------------------------------------------------------------------------------

resource "strongbox_cmk" "app" {
  description            = "Encrypts the ${var.environment} application secrets"
  automatic_rotation     = true
  rotation_interval      = "90d"
  pending_window_in_days = 7
  tags                   = local.tags
}

resource "strongbox_cmk_alias" "app" {
  name   = "alias/${var.environment}/app"
  key_id = strongbox_cmk.app.id
}

# --- Rotation ---------------------------------------------------------------------------

resource "strongbox_rotation_policy" "api_token" {
  name     = "${var.environment}-api-token-monthly"
  interval = "30d"
  window   = "2h"
  strategy = "random"
  settings = {
    length = "40"
  }
}

# --- Secrets ----------------------------------------------------------------------------

# Database credentials as JSON; the name contains "/".
resource "strongbox_secret" "db" {
  name        = "${var.environment}/app/db"
  description = "Credentials of the application's database account"
  secret_type = "Rds"
  secret_data = jsonencode({
    AccountName     = "app"
    AccountPassword = var.db_password
  })
  # Where the database is and how a `postgresql`/`mysql` policy would rotate the account
  # (docs/design/database-rotation.md); AdminSecret names the secret holding the admin
  # account, which must exist (and be readable) before such a policy is attached: this
  # example attaches none.
  extended_config = jsonencode({
    SecretSubType = "DoubleUsers"
    Host          = "db.internal"
    Port          = 5432
    Database      = "app"
    TlsMode       = "verify-full"
    AdminSecret   = "${var.environment}/app/db-admin"
  })
  encryption_key_id       = strongbox_cmk_alias.app.name
  recovery_window_in_days = 7
  tags                    = local.tags
}

# A token rotated by the policy above.
resource "strongbox_secret" "api_token" {
  name                    = "${var.environment}/app/api-token"
  description             = "Token the application presents to the billing API"
  secret_data             = "initial-token-rotated-by-policy"
  encryption_key_id       = strongbox_cmk.app.id
  rotation_policy         = strongbox_rotation_policy.api_token.name
  recovery_window_in_days = 7
  tags                    = local.tags
}

# Plain settings, one secret per entry.
resource "strongbox_secret" "settings" {
  for_each = {
    feature-flags = jsonencode({ new_checkout = true })
    smtp-relay    = "smtp.internal:587"
  }

  name                    = "${var.environment}/app/${each.key}"
  secret_data             = each.value
  encryption_key_id       = strongbox_cmk_alias.app.name
  recovery_window_in_days = 7
  tags                    = local.tags
}

# --- Reading a secret back --------------------------------------------------------------

data "strongbox_secret" "db" {
  name = strongbox_secret.db.name
}

output "db_password" {
  description = "The database password, read back through the data source."
  value       = jsondecode(data.strongbox_secret.db.secret_data).AccountPassword
  sensitive   = true
}

output "cmk_arn" {
  value = strongbox_cmk.app.arn
}

output "secret_arns" {
  value = merge(
    {
      db        = strongbox_secret.db.arn
      api_token = strongbox_secret.api_token.arn
    },
    { for k, s in strongbox_secret.settings : k => s.arn },
  )
}
