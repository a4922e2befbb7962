use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Interval, Timestamp};

/// The kind of key material.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum KeySpec {
    /// 256-bit symmetric key (AES-256-GCM).
    #[default]
    #[serde(rename = "AES_256")]
    Aes256,
}

/// Lifecycle state of a CMK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum KeyState {
    /// Usable.
    Enabled,
    /// Kept, but refuses to encrypt or decrypt.
    Disabled,
    /// Material will be destroyed at `delete_date` unless deletion is cancelled.
    PendingDeletion,
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Only `AES_256`.
    #[serde(default)]
    pub key_spec: KeySpec,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Rotate the key material on a schedule.
    #[serde(default)]
    pub automatic_rotation: bool,
    /// Period of automatic rotation, 7d–730d (default 365d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<Interval>,
}

/// A customer master key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Key {
    /// Key id.
    pub key_id: String,
    /// Resource name.
    pub arn: String,
    /// Free text.
    pub description: String,
    /// Kind of material.
    pub key_spec: KeySpec,
    /// Lifecycle state.
    pub state: KeyState,
    /// Version used for new encryptions.
    pub primary_key_version: u32,
    /// Creation time.
    pub creation_date: Timestamp,
    /// When the material will be destroyed (state `PendingDeletion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_date: Option<Timestamp>,
    /// Automatic rotation on.
    pub automatic_rotation: bool,
    /// Period of automatic rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<Interval>,
    /// Last rotation of the material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_date: Option<Timestamp>,
    /// Next automatic rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<Timestamp>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// `PATCH /v1/keys/{key_id}`: absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Replaces the tag map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Turns automatic rotation on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_rotation: Option<bool>,
    /// Period of automatic rotation, 7d–730d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_interval: Option<Interval>,
}

/// `POST /v1/keys/{key_id}/schedule-deletion`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleKeyDeletionRequest {
    /// Days before the material is destroyed, 7–366 (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_window_in_days: Option<u32>,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListKeysResponse {
    /// One page of keys.
    pub keys: Vec<Key>,
    /// Pass as `page_token` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `PUT /v1/aliases/{alias}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAliasRequest {
    /// The key the alias points to.
    pub key_id: String,
}

/// An alias of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Alias {
    /// `alias/NAME`.
    pub alias_name: String,
    /// The key it points to.
    pub key_id: String,
    /// Resource name.
    pub arn: String,
}

/// `GET /v1/aliases`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListAliasesResponse {
    /// One page of the aliases the caller may describe, by name.
    pub aliases: Vec<Alias>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}
