use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The stage that marks the version applications read by default.
pub const STAGE_CURRENT: &str = "ACSCurrent";
/// The stage of the version that was current before the last change.
pub const STAGE_PREVIOUS: &str = "ACSPrevious";
/// The stage of a version being introduced by a rotation.
pub const STAGE_PENDING: &str = "ACSPending";

/// How `secret_data` is written in JSON.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SecretDataType {
    /// UTF-8 text, written as is.
    #[default]
    Text,
    /// Bytes, written as standard base64.
    Binary,
}

/// What a secret holds; decides which rotation strategies apply.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SecretType {
    /// Any value.
    #[default]
    Generic,
    /// A database account: `{"AccountName", "AccountPassword"}`.
    Rds,
    /// Credentials of a Strongbox principal.
    AccessKey,
    /// An SSH key pair or password.
    Ssh,
}

/// `POST /v1/secrets`.
// `Debug` is written out below: it leaves out `secret_data`.
#[derive(Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecretRequest {
    /// 1–192 characters of `A-Za-z0-9_/+=.@-`.
    pub name: String,
    /// The first version's value (base64 when `secret_data_type` is `binary`); at most 30,720 bytes.
    pub secret_data: String,
    /// `text` (default) or `binary`.
    #[serde(default)]
    pub secret_data_type: SecretDataType,
    /// Id of the first version (generated when absent); at most 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Key id or `alias/NAME` of the CMK that protects this secret; the default CMK when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_id: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// `Generic` (default), `Rds`, `AccessKey` or `Ssh`.
    #[serde(default)]
    pub secret_type: SecretType,
    /// Type-specific settings (a JSON object: at most 16 KiB as JSON besides a `CaCert`
    /// of up to 160 KiB, and 8 levels deep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Name of the rotation policy attached to this secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<String>,
}

/// A secret's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Secret {
    /// Name.
    pub name: String,
    /// Resource name.
    pub arn: String,
    /// Free text (empty when none).
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The CMK as the caller named it (key id or alias).
    pub encryption_key_id: String,
    /// Kind of secret.
    pub secret_type: SecretType,
    /// Type-specific settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_config: Option<serde_json::Map<String, serde_json::Value>>,
    /// Attached rotation policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<String>,
    /// Id of the `ACSCurrent` version.
    pub version_id: String,
    /// Creation time.
    pub creation_date: Timestamp,
    /// Last change of metadata or value.
    pub update_date: Timestamp,
    /// When a secret scheduled for deletion will be purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_delete_time: Option<Timestamp>,
    /// Last completed rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_date: Option<Timestamp>,
    /// When the next rotation window opens (when a policy is attached and enabled): an
    /// interval after the last rotation, or creation, or failed attempt. The engine
    /// rotates at a point within the policy's `window` from then; an unfinished rotation
    /// is resumed sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<Timestamp>,
    /// State of the running or last rotation; absent before the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_status: Option<crate::RotationStatus>,
    /// Why the last rotation failed (never contains secret values); absent after a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_error: Option<String>,
}

/// `GET /v1/secrets/{name}/value`: the plaintext of one version.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretValue {
    /// Secret name.
    pub name: String,
    /// Version id.
    pub version_id: String,
    /// Stages on this version.
    pub version_stages: Vec<String>,
    /// The value (base64 when `binary`).
    pub secret_data: String,
    /// `text` or `binary`.
    pub secret_data_type: SecretDataType,
    /// When this version was created.
    pub creation_date: Timestamp,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("version_id", &self.version_id)
            .field("version_stages", &self.version_stages)
            .field("secret_data", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/secrets/{name}/versions`.
#[derive(Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretValueRequest {
    /// The new value.
    pub secret_data: String,
    /// `text` (default) or `binary`.
    #[serde(default)]
    pub secret_data_type: SecretDataType,
    /// Id of the new version; the same id with the same data is a no-op for the principal
    /// that made that version or one that may read the secret (`VersionConflict` for
    /// anyone else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Stages for the new version; `["ACSCurrent"]` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stages: Option<Vec<String>>,
}

impl std::fmt::Debug for CreateSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecretRequest")
            .field("name", &self.name)
            .field("secret_data_type", &self.secret_data_type)
            .field("version_id", &self.version_id)
            .field("encryption_key_id", &self.encryption_key_id)
            .field("description", &self.description)
            .field("tags", &self.tags)
            .field("secret_type", &self.secret_type)
            .field("extended_config", &self.extended_config)
            .field("rotation_policy", &self.rotation_policy)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PutSecretValueRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretValueRequest")
            .field("version_id", &self.version_id)
            .field("version_stages", &self.version_stages)
            .finish_non_exhaustive()
    }
}

/// Result of a put: the version and where it stands.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretVersionRef {
    /// Secret name.
    pub name: String,
    /// Resource name.
    pub arn: String,
    /// Version id.
    pub version_id: String,
    /// Stages on this version.
    pub version_stages: Vec<String>,
}

/// One version's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecretVersion {
    /// Version id.
    pub version_id: String,
    /// Stages on this version.
    pub version_stages: Vec<String>,
    /// When it was created.
    pub creation_date: Timestamp,
    /// Who created it: `principal/NAME`, or `rotation` for the rotation engine.
    pub created_by: String,
    /// `text` or `binary`.
    pub secret_data_type: SecretDataType,
    /// The CMK this version is sealed under (its key id), shown when the caller may
    /// describe that key (`kms:DescribeKey`) or the secret names it by id. When the
    /// secret's `encryption_key_id` changes, the versions with a stage are sealed again
    /// under the new key (but one under a destroyed key, which cannot be opened); the
    /// others keep the key they were written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Of a version the rotation engine made `ACSCurrent`: the version that was
    /// `ACSCurrent` until then, the one the rotation replaced. A tool that wrote a value
    /// tells its rotations from another writer's change by following this back to its
    /// own version. Absent for versions made current before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<String>,
}

/// `GET /v1/secrets/{name}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListSecretVersionsResponse {
    /// Newest first.
    pub versions: Vec<SecretVersion>,
}

/// `POST /v1/secrets/{name}/stages`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecretStageRequest {
    /// The stage label to move or remove.
    pub version_stage: String,
    /// The version that receives the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to_version: Option<String>,
    /// The version that currently holds the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_from_version: Option<String>,
}

/// `PATCH /v1/secrets/{name}`: absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecretRequest {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Replaces the whole tag map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// The CMK (key id or `alias/NAME`) for new versions. The versions that carry a
    /// stage (`ACSCurrent`, `ACSPrevious`, `ACSPending`, custom labels) are sealed again
    /// under it in the same write, so they no longer depend on the old key; versions
    /// without a stage stay sealed under the key they were written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_id: Option<String>,
    /// Rotation policy name; the empty string detaches it. A request that only detaches
    /// it is also allowed while the secret is pending deletion (so that the policy can
    /// be deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_policy: Option<String>,
    /// Replaces the type-specific settings (at most 16 KiB as JSON besides a `CaCert` of
    /// up to 160 KiB, and 8 levels deep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /v1/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListSecretsResponse {
    /// One page of secrets, by name.
    pub secrets: Vec<Secret>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Query of `DELETE /v1/secrets/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteSecretParams {
    /// Days the secret can be restored before it is purged, 7–30 (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window_in_days: Option<u32>,
    /// Delete at once, with no recovery window (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_delete_without_recovery: Option<bool>,
}

/// `DELETE /v1/secrets/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeleteSecretResponse {
    /// Secret name.
    pub name: String,
    /// When it will be purged; absent when deleted at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_delete_time: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carrying_a_value_leave_it_out_of_debug_output() {
        let create = CreateSecretRequest {
            name: "app/db".into(),
            secret_data: "plaintext-marker-4711".into(),
            ..Default::default()
        };
        let shown = format!("{create:?}");
        assert!(shown.contains("app/db"), "{shown}");
        assert!(!shown.contains("plaintext-marker-4711"), "{shown}");
        let put = PutSecretValueRequest {
            secret_data: "plaintext-marker-4711".into(),
            ..Default::default()
        };
        assert!(!format!("{put:?}").contains("plaintext-marker-4711"));
    }
}
