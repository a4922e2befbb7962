//! The route table and its handlers. Each row: method, path, handler, action, resource,
//! success status, request body, query, response body, summary.
//!
//! The resource column says what the action is authorized against: `path "secret/{name}"`
//! fills the template from path parameters; `body "secret/{name}"` (creates) from the
//! JSON body's fields, so a create is authorized against the resource it would create;
//! a template without placeholders (`*` for lists and server-wide routes, `key/*` for a
//! key whose id the server picks) is the same for every request.

mod audit;
mod kms;
mod ram;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strongbox_schemas as api;

use super::{ApiError, AppState, ResourceRule, RouteSpec};
use audit::*;
use kms::*;
use ram::*;

type ApiResult<T> = Result<T, ApiError>;

macro_rules! schema_fn {
    (-) => {
        None
    };
    (($t:ty)) => {
        Some(|g: &mut schemars::SchemaGenerator| g.subschema_for::<$t>())
    };
    // A body that may be left out.
    ([$t:ty]) => {
        Some(|g: &mut schemars::SchemaGenerator| g.subschema_for::<$t>())
    };
}

/// `req: [T]` marks a body that may be left out (an `OptionalJson` handler).
macro_rules! optional_body {
    ([$t:ty]) => {
        true
    };
    ($other:tt) => {
        false
    };
}

macro_rules! resource_rule {
    (path $t:literal) => {
        ResourceRule::Path($t)
    };
    (body $t:literal) => {
        ResourceRule::Body($t)
    };
}

fn upper(m: &'static str) -> &'static str {
    match m {
        "get" => "GET",
        "post" => "POST",
        "put" => "PUT",
        "patch" => "PATCH",
        "delete" => "DELETE",
        other => other,
    }
}

macro_rules! routes {
    ($( $method:ident $path:literal => $handler:ident, $action:literal, $from:ident $resource:literal,
        $status:literal, req: $req:tt, query: $q:tt, resp: $resp:tt, $summary:literal; )*) => {
        /// Every route, as data: what the router, the authorization check, the audit
        /// trail and the OpenAPI document are built from.
        pub fn route_table() -> Vec<RouteSpec> {
            vec![$(RouteSpec {
                method: upper(stringify!($method)),
                path: $path,
                action: $action,
                resource: resource_rule!($from $resource),
                summary: $summary,
                status: $status,
                request: schema_fn!($req),
                optional_body: optional_body!($req),
                query: schema_fn!($q),
                response: schema_fn!($resp),
            },)*]
        }

        /// The router built from the same rows.
        pub(crate) fn router() -> Router<AppState> {
            let mut r = Router::new();
            $( r = r.route($path, axum::routing::$method($handler)); )*
            r
        }
    };
}

routes! {
    get "/v1/health" => health, "", path "", 200, req: -, query: -, resp: (api::Health), "Liveness; no token needed, not audited";
    get "/v1/openapi.json" => openapi, "sys:ReadApiDocument", path "*", 200, req: -, query: -, resp: -, "This document";
    get "/metrics" => metrics, "sys:ReadMetrics", path "*", 200, req: -, query: -, resp: -, "Prometheus metrics";

    post "/v1/keys" => create_key, "kms:CreateKey", path "key/*", 201, req: (api::CreateKeyRequest), query: -, resp: (api::Key), "Create a CMK";
    get "/v1/keys" => list_keys, "kms:ListKeys", path "*", 200, req: -, query: (PageQuery), resp: (api::ListKeysResponse), "List CMKs (those the caller may describe)";
    get "/v1/keys/{key_id}" => describe_key, "kms:DescribeKey", path "key/{key_id}", 200, req: -, query: -, resp: (api::Key), "Describe a CMK (id or alias)";
    patch "/v1/keys/{key_id}" => update_key, "kms:UpdateKey", path "key/{key_id}", 200, req: (api::UpdateKeyRequest), query: -, resp: (api::Key), "Update a CMK's description, tags or automatic rotation";
    post "/v1/keys/{key_id}/enable" => enable_key, "kms:EnableKey", path "key/{key_id}", 200, req: -, query: -, resp: (api::Key), "Enable a CMK";
    post "/v1/keys/{key_id}/disable" => disable_key, "kms:DisableKey", path "key/{key_id}", 200, req: -, query: -, resp: (api::Key), "Disable a CMK";
    post "/v1/keys/{key_id}/rotate" => rotate_key, "kms:RotateKey", path "key/{key_id}", 200, req: -, query: -, resp: (api::Key), "Add a new primary key version";
    post "/v1/keys/{key_id}/schedule-deletion" => schedule_key_deletion, "kms:ScheduleKeyDeletion", path "key/{key_id}", 200, req: [api::ScheduleKeyDeletionRequest], query: -, resp: (api::Key), "Schedule destruction of the key material";
    post "/v1/keys/{key_id}/cancel-deletion" => cancel_key_deletion, "kms:CancelKeyDeletion", path "key/{key_id}", 200, req: -, query: -, resp: (api::Key), "Cancel a scheduled deletion";
    post "/v1/keys/{key_id}/encrypt" => encrypt, "kms:Encrypt", path "key/{key_id}", 200, req: (api::EncryptRequest), query: -, resp: (api::EncryptResponse), "Encrypt up to 6 KiB (base64) under the key's primary version, bound to an optional encryption context";
    post "/v1/keys/{key_id}/decrypt" => decrypt, "kms:Decrypt", path "key/{key_id}", 200, req: (api::DecryptRequest), query: -, resp: (api::DecryptResponse), "Decrypt a blob made under this key (by any of its versions) with the encryption context it was made with";
    post "/v1/keys/{key_id}/re-encrypt" => re_encrypt, "kms:ReEncryptTo", path "key/{key_id}", 200, req: (api::ReEncryptRequest), query: -, resp: (api::ReEncryptResponse), "Decrypt a blob and encrypt its data under this key's primary version, without the data leaving the server (also needs kms:ReEncryptFrom on the key that made the blob); after a rotation, re-encrypt under the same key to move a blob to the new version";
    post "/v1/keys/{key_id}/generate-data-key" => generate_data_key, "kms:GenerateDataKey", path "key/{key_id}", 200, req: [api::GenerateDataKeyRequest], query: -, resp: (api::GenerateDataKeyResponse), "A fresh random data key, in the clear and encrypted under the key (envelope encryption; the body is optional, AES_256 by default)";
    post "/v1/keys/{key_id}/generate-data-key-without-plaintext" => generate_data_key_without_plaintext, "kms:GenerateDataKeyWithoutPlaintext", path "key/{key_id}", 200, req: [api::GenerateDataKeyRequest], query: -, resp: (api::GenerateDataKeyWithoutPlaintextResponse), "A fresh random data key, only encrypted under the key (decrypt it later where it is used)";

    get "/v1/aliases" => list_aliases, "kms:ListAliases", path "*", 200, req: -, query: (PageQuery), resp: (api::ListAliasesResponse), "List aliases (those the caller may describe)";
    put "/v1/aliases/{alias}" => put_alias, "kms:CreateAlias", path "{alias}", 200, req: (api::PutAliasRequest), query: -, resp: (api::Alias), "Create or move an alias (alias/NAME, percent-encoded); with `If-None-Match: *` only create it (`AlreadyExists` when it exists)";
    get "/v1/aliases/{alias}" => get_alias, "kms:DescribeAlias", path "{alias}", 200, req: -, query: -, resp: (api::Alias), "Describe an alias";
    delete "/v1/aliases/{alias}" => delete_alias, "kms:DeleteAlias", path "{alias}", 204, req: -, query: -, resp: -, "Delete an alias";

    post "/v1/secrets" => create_secret, "kms:CreateSecret", body "secret/{name}", 201, req: (api::CreateSecretRequest), query: -, resp: (api::Secret), "Create a secret";
    get "/v1/secrets" => list_secrets, "kms:ListSecrets", path "*", 200, req: -, query: (ListSecretsParams), resp: (api::ListSecretsResponse), "List secrets the caller may describe (filter with name_prefix, key_id and tag.KEY=VALUE)";
    get "/v1/secrets/{name}" => describe_secret, "kms:DescribeSecret", path "secret/{name}", 200, req: -, query: -, resp: (api::Secret), "Describe a secret";
    patch "/v1/secrets/{name}" => update_secret, "kms:UpdateSecret", path "secret/{name}", 200, req: (api::UpdateSecretRequest), query: -, resp: (api::Secret), "Update a secret's metadata";
    delete "/v1/secrets/{name}" => delete_secret, "kms:DeleteSecret", path "secret/{name}", 200, req: -, query: (api::DeleteSecretParams), resp: (api::DeleteSecretResponse), "Delete a secret (with a recovery window, or forced)";
    get "/v1/secrets/{name}/value" => get_secret_value, "kms:GetSecretValue", path "secret/{name}", 200, req: -, query: (GetValueParams), resp: (api::SecretValue), "Read a version's value (default ACSCurrent)";
    post "/v1/secrets/{name}/versions" => put_secret_value, "kms:PutSecretValue", path "secret/{name}", 201, req: (api::PutSecretValueRequest), query: -, resp: (api::SecretVersionRef), "Add a version";
    get "/v1/secrets/{name}/versions" => list_secret_versions, "kms:ListSecretVersionIds", path "secret/{name}", 200, req: -, query: -, resp: (api::ListSecretVersionsResponse), "List versions";
    post "/v1/secrets/{name}/stages" => update_secret_stage, "kms:UpdateSecretVersionStage", path "secret/{name}", 200, req: (api::UpdateSecretStageRequest), query: -, resp: (api::ListSecretVersionsResponse), "Move or remove a stage label";
    post "/v1/secrets/{name}/rotate" => rotate_secret, "kms:RotateSecret", path "secret/{name}", 200, req: [api::RotateSecretRequest], query: -, resp: (api::RotateSecretResponse), "Rotate now with the attached policy's strategy; answers when the rotation has finished or failed (the body and its version_id are optional)";
    get "/v1/random-password" => random_password, "kms:GetRandomPassword", path "*", 200, req: -, query: (RandomPasswordParams), resp: (api::RandomPassword), "Generate a password (the rules of the random rotation strategy)";
    post "/v1/secrets/{name}/restore" => restore_secret, "kms:RestoreSecret", path "secret/{name}", 200, req: -, query: -, resp: (api::Secret), "Cancel a scheduled deletion";

    post "/v1/rotation-policies" => create_rotation_policy, "kms:CreateRotationPolicy", body "rotation-policy/{name}", 201, req: (api::CreateRotationPolicyRequest), query: -, resp: (api::RotationPolicy), "Create a rotation policy";
    get "/v1/rotation-policies" => list_rotation_policies, "kms:ListRotationPolicies", path "*", 200, req: -, query: (PageQuery), resp: (api::ListRotationPoliciesResponse), "List rotation policies (those the caller may describe)";
    get "/v1/rotation-policies/{name}" => describe_rotation_policy, "kms:DescribeRotationPolicy", path "rotation-policy/{name}", 200, req: -, query: -, resp: (api::RotationPolicy), "Describe a rotation policy";
    patch "/v1/rotation-policies/{name}" => update_rotation_policy, "kms:UpdateRotationPolicy", path "rotation-policy/{name}", 200, req: (api::UpdateRotationPolicyRequest), query: -, resp: (api::RotationPolicy), "Update a rotation policy";
    delete "/v1/rotation-policies/{name}" => delete_rotation_policy, "kms:DeleteRotationPolicy", path "rotation-policy/{name}", 204, req: -, query: -, resp: -, "Delete a rotation policy no secret uses";

    post "/v1/principals" => create_principal, "ram:CreatePrincipal", body "principal/{name}", 201, req: (api::CreatePrincipalRequest), query: -, resp: (api::Principal), "Create a principal";
    get "/v1/principals" => list_principals, "ram:ListPrincipals", path "*", 200, req: -, query: (PageQuery), resp: (api::ListPrincipalsResponse), "List principals (those the caller may get)";
    get "/v1/principals/{name}" => get_principal, "ram:GetPrincipal", path "principal/{name}", 200, req: -, query: -, resp: (api::Principal), "Describe a principal";
    patch "/v1/principals/{name}" => update_principal, "ram:UpdatePrincipal", path "principal/{name}", 200, req: (api::UpdatePrincipalRequest), query: -, resp: (api::Principal), "Change a principal's description or attached policies";
    delete "/v1/principals/{name}" => delete_principal, "ram:DeletePrincipal", path "principal/{name}", 204, req: -, query: -, resp: -, "Delete a principal and revoke its tokens";
    post "/v1/principals/{name}/tokens" => create_token, "ram:CreateToken", path "principal/{name}", 201, req: [api::CreateTokenRequest], query: -, resp: (api::CreatedToken), "Create a token (its value is returned only this once)";
    get "/v1/principals/{name}/tokens" => list_tokens, "ram:ListTokens", path "principal/{name}", 200, req: -, query: -, resp: (api::ListTokensResponse), "List a principal's tokens (metadata only)";
    delete "/v1/principals/{name}/tokens/{token_id}" => delete_token, "ram:DeleteToken", path "principal/{name}", 204, req: -, query: -, resp: -, "Revoke a token, effective at once";

    post "/v1/policies" => create_policy, "ram:CreatePolicy", body "policy/{name}", 201, req: (api::CreatePolicyRequest), query: -, resp: (api::Policy), "Create an access policy";
    get "/v1/policies" => list_policies, "ram:ListPolicies", path "*", 200, req: -, query: (PageQuery), resp: (api::ListPoliciesResponse), "List access policies (those the caller may get)";
    get "/v1/policies/{name}" => get_policy, "ram:GetPolicy", path "policy/{name}", 200, req: -, query: -, resp: (api::Policy), "Describe an access policy";
    patch "/v1/policies/{name}" => update_policy, "ram:UpdatePolicy", path "policy/{name}", 200, req: (api::UpdatePolicyRequest), query: -, resp: (api::Policy), "Change an access policy's description or document";
    delete "/v1/policies/{name}" => delete_policy, "ram:DeletePolicy", path "policy/{name}", 204, req: -, query: -, resp: -, "Delete an access policy no principal uses";

    get "/v1/audit" => list_audit, "audit:Read", path "*", 200, req: -, query: (AuditParams), resp: (api::ListAuditResponse), "Read the audit trail, oldest first (filters, pagination)";
    get "/v1/backup" => backup, "sys:Backup", path "*", 200, req: -, query: -, resp: -, "A backup of the whole database from one snapshot (application/octet-stream: values stay sealed; restore it with strongbox restore and the same root key)";
    post "/v1/audit/prune" => prune_audit, "sys:PruneAudit", path "*", 200, req: (api::PruneAuditRequest), query: -, resp: (api::PruneAuditResponse), "Delete the oldest records, those older than older_than (at least the server's minimum retention), at most 10,000 a call; the chain is checked from the base the prune leaves";
    get "/v1/audit/verify" => verify_audit, "audit:Verify", path "*", 200, req: -, query: (AuditVerifyParams), resp: (api::AuditVerifyReport), "Check the audit trail's HMAC chain and head (and that it still holds what an earlier verify saw); names the first bad record";
}

/// Every action a route or a delegated check (`service::DELEGATED_ACTIONS`) can
/// require, for checking policy documents.
pub fn known_actions() -> Vec<&'static str> {
    let mut a: Vec<&'static str> = route_table()
        .into_iter()
        .map(|r| r.action)
        .filter(|a| !a.is_empty())
        .chain(crate::service::DELEGATED_ACTIONS)
        .collect();
    a.sort_unstable();
    a.dedup();
    a
}

/// `limit` and `page_token`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// Page size, 1–100 (default 50).
    #[schemars(range(min = 1, max = 100))]
    limit: Option<usize>,
    /// From the previous page's `next_page_token`.
    page_token: Option<String>,
}

impl PageQuery {
    /// The page size asked for, 50 when none was.
    fn limit(&self) -> Result<usize, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::new(
                api::ErrorCode::InvalidParameter,
                "limit: must be between 1 and 100",
            ));
        }
        Ok(limit)
    }
}

/// Query of `GET /v1/secrets`; also any number of `tag.KEY=VALUE`. The handler parses
/// the pairs itself (tags are open-ended); this type documents them.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
pub(crate) struct ListSecretsParams {
    /// Page size, 1–100 (default 50).
    #[schemars(range(min = 1, max = 100))]
    limit: Option<usize>,
    /// From the previous page's `next_page_token`.
    page_token: Option<String>,
    /// Only names starting with this.
    name_prefix: Option<String>,
    /// Only secrets that use this key (a key id, or `alias/NAME` for the key it points
    /// at now; needs `kms:DescribeKey` on it, and on the alias as written): those
    /// that name it, by id or by an alias that points at it now (an alias the caller may
    /// describe), and those with a version sealed under it.
    key_id: Option<String>,
}

/// Query of `GET /v1/secrets/{name}/value`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetValueParams {
    /// A version id.
    version_id: Option<String>,
    /// A stage (default `ACSCurrent`).
    version_stage: Option<String>,
}

/// Query of `GET /v1/random-password`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RandomPasswordParams {
    /// 8–128 characters (default 32).
    length: Option<u32>,
    /// Characters never used.
    exclude_characters: Option<String>,
    /// No `a-z`.
    exclude_lowercase: Option<bool>,
    /// No `A-Z`.
    exclude_uppercase: Option<bool>,
    /// No `0-9`.
    exclude_numbers: Option<bool>,
    /// No punctuation.
    exclude_punctuation: Option<bool>,
    /// At least one character of each included class (default true).
    require_each_included_type: Option<bool>,
}

impl RandomPasswordParams {
    /// The same settings map a `random` rotation policy has.
    fn to_settings(&self) -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        if let Some(l) = self.length {
            m.insert("length".to_string(), l.to_string());
        }
        if let Some(e) = &self.exclude_characters {
            m.insert("exclude_characters".to_string(), e.clone());
        }
        for (k, v) in [
            ("exclude_lowercase", self.exclude_lowercase),
            ("exclude_uppercase", self.exclude_uppercase),
            ("exclude_numbers", self.exclude_numbers),
            ("exclude_punctuation", self.exclude_punctuation),
            (
                "require_each_included_type",
                self.require_each_included_type,
            ),
        ] {
            if let Some(v) = v {
                m.insert(k.to_string(), v.to_string());
            }
        }
        m
    }
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only this principal's requests (`anonymous` for those without a valid token).
    principal: Option<String>,
    /// Only this action, e.g. `kms:GetSecretValue`.
    action: Option<String>,
    /// Only resources starting with this, e.g. `secret/app/` (the record's `resource`,
    /// or one of its `related_resources`).
    resource_prefix: Option<String>,
    /// Only the request with this id.
    request_id: Option<String>,
    /// Only records at or after this time (RFC 3339).
    start_time: Option<api::Timestamp>,
    /// Only records before this time (RFC 3339).
    end_time: Option<api::Timestamp>,
    /// Page size, 1–1000 (default 100).
    #[schemars(range(min = 1, max = 1000))]
    limit: Option<usize>,
    /// From the previous page's `next_page_token`, or any record's `seq` to read the
    /// records after it (how `strongbox audit tail` follows the trail).
    page_token: Option<String>,
}

/// Query of `GET /v1/audit/verify`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditVerifyParams {
    /// The `anchor` of an earlier report, kept outside the server: the trail must still
    /// hold those records, unchanged (a trail cut back to an older head of its own
    /// verifies without it).
    since: Option<String>,
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}
