//! The Strongbox resource model: one definition of each resource, shared by the
//! server API, the Rust client, the Terraform provider and the template engine.
//!
//! This crate does no I/O. Every type that crosses the HTTP API is here, with its
//! JSON field names (the contract) and its JSON Schema (via `schemars`).

mod access;
mod audit;
mod duration;
mod error;
mod key;
mod names;
mod policy_document;
mod rotation;
mod secret;
mod time_fmt;

pub use access::{
    ADMINISTRATOR_ACCESS, CreatePolicyRequest, CreatePrincipalRequest, CreateTokenRequest,
    CreatedToken, ListPoliciesResponse, ListPrincipalsResponse, ListTokensResponse, Policy,
    Principal, ROOT_PRINCIPAL, TokenInfo, UpdatePolicyRequest, UpdatePrincipalRequest,
};
pub use audit::{
    AuditOutcome, AuditRecord, AuditVerifyReport, ListAuditResponse, PruneAuditRequest,
    PruneAuditResponse,
};
pub use duration::{Interval, IntervalError};
pub use error::{ErrorBody, ErrorCode};
pub use key::{
    Alias, CIPHERTEXT_BLOB_MAGIC, CreateKeyRequest, DataKeySpec, DecryptRequest, DecryptResponse,
    EncryptRequest, EncryptResponse, GenerateDataKeyRequest, GenerateDataKeyResponse,
    GenerateDataKeyWithoutPlaintextResponse, Key, KeySpec, KeyState, ListAliasesResponse,
    ListKeysResponse, MAX_DATA_KEY_BYTES, MAX_ENCRYPT_PLAINTEXT_BYTES,
    MAX_ENCRYPTION_CONTEXT_BYTES, PutAliasRequest, ReEncryptRequest, ReEncryptResponse,
    ScheduleKeyDeletionRequest, UpdateKeyRequest, ciphertext_blob_key,
};
pub use names::{
    DEFAULT_KEY_ALIAS, FieldError, RESERVED_ALIAS_PREFIX, validate_alias_name,
    validate_policy_name, validate_principal_name, validate_secret_name, validate_version_id,
    validate_version_stage,
};
pub use policy_document::{
    Decision, Effect, MAX_PATTERN_LEN, MAX_PATTERNS_PER_STATEMENT, MAX_STATEMENTS, POLICY_VERSION,
    Pattern, PolicyDocument, RESOURCE_TYPES, Statement, evaluate,
};
pub use rotation::{
    CreateRotationPolicyRequest, ListRotationPoliciesResponse, RandomPassword, RotateSecretRequest,
    RotateSecretResponse, RotationPolicy, RotationStatus, RotationStrategy,
    UpdateRotationPolicyRequest,
};
pub use secret::{
    CreateSecretRequest, DeleteSecretParams, DeleteSecretResponse, ListSecretVersionsResponse,
    ListSecretsResponse, PutSecretValueRequest, STAGE_CURRENT, STAGE_PENDING, STAGE_PREVIOUS,
    Secret, SecretDataType, SecretType, SecretValue, SecretVersion, SecretVersionRef,
    UpdateSecretRequest, UpdateSecretStageRequest,
};
pub use time_fmt::Timestamp;

/// Largest secret value accepted by default, in bytes (as Alibaba Cloud KMS).
pub const MAX_SECRET_VALUE_BYTES: usize = 30_720;

/// Health report served at `GET /v1/health`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Health {
    /// `ok` when the server is unsealed and serving; `storage_failing` (with HTTP 503)
    /// while its last commit failed (disk full, I/O error), when it refuses writes and reads.
    pub status: String,
    /// Server version.
    pub version: String,
}

/// Every resource type with a JSON Schema file under `schemas/json/`, by file stem.
pub fn resource_schemas() -> Vec<(&'static str, schemars::Schema)> {
    use schemars::schema_for;
    vec![
        ("secret", schema_for!(Secret)),
        ("secret_value", schema_for!(SecretValue)),
        ("secret_version", schema_for!(SecretVersion)),
        ("create_secret_request", schema_for!(CreateSecretRequest)),
        ("key", schema_for!(Key)),
        ("create_key_request", schema_for!(CreateKeyRequest)),
        ("alias", schema_for!(Alias)),
        ("rotation_policy", schema_for!(RotationPolicy)),
        (
            "create_rotation_policy_request",
            schema_for!(CreateRotationPolicyRequest),
        ),
        ("rotate_secret_request", schema_for!(RotateSecretRequest)),
        ("rotate_secret_response", schema_for!(RotateSecretResponse)),
        ("error", schema_for!(ErrorBody)),
        ("principal", schema_for!(Principal)),
        (
            "create_principal_request",
            schema_for!(CreatePrincipalRequest),
        ),
        ("token", schema_for!(TokenInfo)),
        ("policy", schema_for!(Policy)),
        ("create_policy_request", schema_for!(CreatePolicyRequest)),
        ("audit_record", schema_for!(AuditRecord)),
    ]
}
