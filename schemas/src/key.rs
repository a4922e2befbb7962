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

/// Largest plaintext `POST /v1/keys/{key_id}/encrypt` takes, in bytes (as Alibaba Cloud
/// KMS's `Encrypt`). Larger data is encrypted locally under a data key
/// (`generate-data-key`).
pub const MAX_ENCRYPT_PLAINTEXT_BYTES: usize = 6144;
/// Largest data key `generate-data-key` makes, in bytes.
pub const MAX_DATA_KEY_BYTES: u32 = 1024;
/// Most bytes of an encryption context (every key and value together).
pub const MAX_ENCRYPTION_CONTEXT_BYTES: usize = 8192;
/// The first bytes of every ciphertext blob the key routes make (format 1).
pub const CIPHERTEXT_BLOB_MAGIC: &[u8; 4] = b"SBK1";

/// The key id and key version a ciphertext blob names in its clear header (see
/// `docs/design/crypto.md`), without opening it: so that a client can send a blob to the
/// key that made it. `None` if the bytes are not a blob of this format.
pub fn ciphertext_blob_key(blob: &[u8]) -> Option<(&str, u32)> {
    let rest = blob.strip_prefix(CIPHERTEXT_BLOB_MAGIC.as_slice())?;
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    if rest.len() < len + 4 {
        return None;
    }
    let key_id = std::str::from_utf8(&rest[..len]).ok()?;
    let version = u32::from_be_bytes(rest[len..len + 4].try_into().ok()?);
    Some((key_id, version))
}

/// `POST /v1/keys/{key_id}/encrypt`: encrypts up to 6 KiB under the key's primary
/// version.
#[derive(Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptRequest {
    /// The data, base64 (1–6144 bytes once decoded).
    pub plaintext: String,
    /// Names and values bound to the ciphertext: decrypting needs the same map. Not
    /// secret (it is recorded nowhere, but do not put secrets in it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: BTreeMap<String, String>,
}

impl std::fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("plaintext", &"<redacted>")
            .field("encryption_context", &self.encryption_context)
            .finish()
    }
}

/// Answer of `encrypt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EncryptResponse {
    /// The key that encrypted (its id, also when the request named an alias).
    pub key_id: String,
    /// The key version that encrypted.
    pub key_version: u32,
    /// The ciphertext blob, base64: it names the key and version, so any later primary
    /// version still decrypts it.
    pub ciphertext_blob: String,
}

/// `POST /v1/keys/{key_id}/decrypt`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptRequest {
    /// A blob from `encrypt` or `generate-data-key` under this key, base64.
    pub ciphertext_blob: String,
    /// The encryption context given when the blob was made.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: BTreeMap<String, String>,
}

/// Answer of `decrypt`.
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DecryptResponse {
    /// The key that decrypted.
    pub key_id: String,
    /// The key version that decrypted (the one that encrypted).
    pub key_version: u32,
    /// The data, base64.
    pub plaintext: String,
}

impl std::fmt::Debug for DecryptResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptResponse")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("plaintext", &"<redacted>")
            .finish()
    }
}

/// `POST /v1/keys/{key_id}/re-encrypt`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReEncryptRequest {
    /// A blob, base64.
    pub ciphertext_blob: String,
    /// The key that made the blob (id or alias); the key the blob names when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key_id: Option<String>,
    /// The encryption context the blob was made with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_encryption_context: BTreeMap<String, String>,
    /// The encryption context of the new blob: when absent, the source's (a rotation
    /// keeps the binding); `{}` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_encryption_context: Option<BTreeMap<String, String>>,
}

/// Answer of `re-encrypt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReEncryptResponse {
    /// The key that made the blob sent.
    pub source_key_id: String,
    /// Its version that made it.
    pub source_key_version: u32,
    /// The key of the new blob.
    pub key_id: String,
    /// The key version of the new blob.
    pub key_version: u32,
    /// The new blob, base64.
    pub ciphertext_blob: String,
}

/// The size of a data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DataKeySpec {
    /// 32 bytes.
    #[serde(rename = "AES_256")]
    Aes256,
    /// 16 bytes.
    #[serde(rename = "AES_128")]
    Aes128,
}

/// `POST /v1/keys/{key_id}/generate-data-key` and
/// `…/generate-data-key-without-plaintext`: `key_spec` or `number_of_bytes`, not both;
/// neither means `AES_256`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateDataKeyRequest {
    /// `AES_256` (32 bytes) or `AES_128` (16 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<DataKeySpec>,
    /// Length of the data key, 1–1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_bytes: Option<u32>,
    /// Bound to the encrypted copy, as in `encrypt`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub encryption_context: BTreeMap<String, String>,
}

/// Answer of `generate-data-key`: a fresh random data key, in the clear and encrypted
/// under the CMK. Use the plaintext, keep only the blob; `decrypt` gives the key back.
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GenerateDataKeyResponse {
    /// The key that encrypted the data key.
    pub key_id: String,
    /// The key version that encrypted it.
    pub key_version: u32,
    /// The data key encrypted under the CMK, base64.
    pub ciphertext_blob: String,
    /// The data key, base64.
    pub plaintext: String,
}

impl std::fmt::Debug for GenerateDataKeyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateDataKeyResponse")
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .field("ciphertext_blob", &self.ciphertext_blob)
            .field("plaintext", &"<redacted>")
            .finish()
    }
}

/// Answer of `generate-data-key-without-plaintext`: the data key only encrypted, for a
/// component that stores it and lets another decrypt it when needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    /// The key that encrypted the data key.
    pub key_id: String,
    /// The key version that encrypted it.
    pub key_version: u32,
    /// The data key encrypted under the CMK, base64.
    pub ciphertext_blob: String,
}

#[cfg(test)]
mod blob_tests {
    use super::ciphertext_blob_key;

    #[test]
    fn a_blob_header_names_its_key_and_version() {
        let mut blob = b"SBK1".to_vec();
        blob.push(3);
        blob.extend_from_slice(b"k-1");
        blob.extend_from_slice(&7u32.to_be_bytes());
        blob.extend_from_slice(&[0; 60]);
        assert_eq!(ciphertext_blob_key(&blob), Some(("k-1", 7)));
        assert_eq!(ciphertext_blob_key(&blob[..10]), None, "cut in the version");
        assert_eq!(ciphertext_blob_key(b"SBK2\x03k-1\0\0\0\x07"), None);
        assert_eq!(ciphertext_blob_key(b""), None);
        let mut bad = blob.clone();
        bad[5] = 0xff;
        assert_eq!(
            ciphertext_blob_key(&bad),
            None,
            "a key id that is not UTF-8"
        );
    }
}
