use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Interval;

/// How a rotation produces and applies a new value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RotationStrategy {
    /// A new random password.
    Random,
    /// A PostgreSQL account.
    Postgresql,
    /// A MySQL or MariaDB account.
    Mysql,
    /// A Strongbox principal's token.
    AccessKey,
    /// An SSH key of an account on a host.
    SshKey,
    /// A custom function called over HTTPS.
    Webhook,
}

/// `POST /v1/rotation-policies`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRotationPolicyRequest {
    /// 1–128 characters of `A-Za-z0-9_.-`.
    pub name: String,
    /// Time between rotations, 6h–365d.
    pub interval: Interval,
    /// Rotations start within this window after they fall due (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Interval>,
    /// How the new value is made and applied.
    pub strategy: RotationStrategy,
    /// Strategy settings (each value at most 8 KiB; `ca_cert` 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<BTreeMap<String, String>>,
    /// Whether rotations run (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A rotation policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RotationPolicy {
    /// Name.
    pub name: String,
    /// Resource name.
    pub arn: String,
    /// Time between rotations.
    pub interval: Interval,
    /// Start window.
    pub window: Interval,
    /// Strategy.
    pub strategy: RotationStrategy,
    /// Strategy settings.
    pub settings: BTreeMap<String, String>,
    /// Whether rotations run.
    pub enabled: bool,
    /// Creation time.
    pub creation_date: crate::Timestamp,
    /// Last change.
    pub update_date: crate::Timestamp,
}

/// `PATCH /v1/rotation-policies/{name}`: absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRotationPolicyRequest {
    /// Time between rotations, 6h–365d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// Start window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Interval>,
    /// Strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<RotationStrategy>,
    /// Replaces the settings map (each value given anew at most 8 KiB; `ca_cert` 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<BTreeMap<String, String>>,
    /// Whether rotations run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `GET /v1/rotation-policies`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListRotationPoliciesResponse {
    /// One page of the policies the caller may describe, by name.
    pub rotation_policies: Vec<RotationPolicy>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// State of a secret's running or last rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RotationStatus {
    /// A rotation is running (or will resume after a restart).
    InProgress,
    /// The last rotation finished: its version is `ACSCurrent`.
    Succeeded,
    /// The last rotation failed; `ACSCurrent` was left as it was.
    Failed,
}

/// `POST /v1/secrets/{name}/rotate` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// Id of the version the rotation creates (generated when absent). Repeating a
    /// request with the same id waits for, or returns, that same rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// Result of a finished rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RotateSecretResponse {
    /// Secret name.
    pub name: String,
    /// Resource name.
    pub arn: String,
    /// The version the rotation made `ACSCurrent`.
    pub version_id: String,
}

/// `GET /v1/random-password`.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RandomPassword {
    /// The generated password.
    pub random_password: String,
}

impl std::fmt::Debug for RandomPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomPassword")
            .field("random_password", &"<redacted>")
            .finish()
    }
}
