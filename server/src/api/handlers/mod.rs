//! The route table and its handlers. Each row: method, path, handler, action, success
//! status, request body, query, response body, summary.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use strongbox_schemas::{self as api, ErrorCode};

use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, OptionalJson};
use super::{ApiError, AppState, RouteSpec};
use crate::service::ListSecretsQuery;

type ApiResult<T> = Result<T, ApiError>;

macro_rules! schema_fn {
    (-) => {
        None
    };
    (($t:ty)) => {
        Some(|g: &mut schemars::SchemaGenerator| g.subschema_for::<$t>())
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
    ($( $method:ident $path:literal => $handler:ident, $action:literal, $status:literal,
        req: $req:tt, query: $q:tt, resp: $resp:tt, $summary:literal; )*) => {
        /// Every route, as data.
        pub(crate) fn route_table() -> Vec<RouteSpec> {
            vec![$(RouteSpec {
                method: upper(stringify!($method)),
                path: $path,
                action: $action,
                summary: $summary,
                status: $status,
                request: schema_fn!($req),
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
    get "/v1/health" => health, "", 200, req: -, query: -, resp: (api::Health), "Liveness; no token needed";
    get "/v1/openapi.json" => openapi, "sys:ReadApiDocument", 200, req: -, query: -, resp: -, "This document";
    get "/metrics" => metrics, "sys:ReadMetrics", 200, req: -, query: -, resp: -, "Prometheus metrics";

    post "/v1/keys" => create_key, "kms:CreateKey", 201, req: (api::CreateKeyRequest), query: -, resp: (api::Key), "Create a CMK";
    get "/v1/keys" => list_keys, "kms:ListKeys", 200, req: -, query: (PageQuery), resp: (api::ListKeysResponse), "List CMKs";
    get "/v1/keys/{key_id}" => describe_key, "kms:DescribeKey", 200, req: -, query: -, resp: (api::Key), "Describe a CMK (id or alias)";
    patch "/v1/keys/{key_id}" => update_key, "kms:UpdateKey", 200, req: (api::UpdateKeyRequest), query: -, resp: (api::Key), "Update a CMK's description, tags or automatic rotation";
    post "/v1/keys/{key_id}/enable" => enable_key, "kms:EnableKey", 200, req: -, query: -, resp: (api::Key), "Enable a CMK";
    post "/v1/keys/{key_id}/disable" => disable_key, "kms:DisableKey", 200, req: -, query: -, resp: (api::Key), "Disable a CMK";
    post "/v1/keys/{key_id}/rotate" => rotate_key, "kms:RotateKey", 200, req: -, query: -, resp: (api::Key), "Add a new primary key version";
    post "/v1/keys/{key_id}/schedule-deletion" => schedule_key_deletion, "kms:ScheduleKeyDeletion", 200, req: (api::ScheduleKeyDeletionRequest), query: -, resp: (api::Key), "Schedule destruction of the key material";
    post "/v1/keys/{key_id}/cancel-deletion" => cancel_key_deletion, "kms:CancelKeyDeletion", 200, req: -, query: -, resp: (api::Key), "Cancel a scheduled deletion";

    get "/v1/aliases" => list_aliases, "kms:ListAliases", 200, req: -, query: -, resp: (api::ListAliasesResponse), "List aliases";
    put "/v1/aliases/{alias}" => put_alias, "kms:CreateAlias", 200, req: (api::PutAliasRequest), query: -, resp: (api::Alias), "Create or move an alias (alias/NAME, percent-encoded)";
    get "/v1/aliases/{alias}" => get_alias, "kms:DescribeAlias", 200, req: -, query: -, resp: (api::Alias), "Describe an alias";
    delete "/v1/aliases/{alias}" => delete_alias, "kms:DeleteAlias", 204, req: -, query: -, resp: -, "Delete an alias";

    post "/v1/secrets" => create_secret, "kms:CreateSecret", 201, req: (api::CreateSecretRequest), query: -, resp: (api::Secret), "Create a secret";
    get "/v1/secrets" => list_secrets, "kms:ListSecrets", 200, req: -, query: (ListSecretsParams), resp: (api::ListSecretsResponse), "List secrets (filter with name_prefix and tag.KEY=VALUE)";
    get "/v1/secrets/{name}" => describe_secret, "kms:DescribeSecret", 200, req: -, query: -, resp: (api::Secret), "Describe a secret";
    patch "/v1/secrets/{name}" => update_secret, "kms:UpdateSecret", 200, req: (api::UpdateSecretRequest), query: -, resp: (api::Secret), "Update a secret's metadata";
    delete "/v1/secrets/{name}" => delete_secret, "kms:DeleteSecret", 200, req: -, query: (DeleteSecretParams), resp: (api::DeleteSecretResponse), "Delete a secret (with a recovery window, or forced)";
    get "/v1/secrets/{name}/value" => get_secret_value, "kms:GetSecretValue", 200, req: -, query: (GetValueParams), resp: (api::SecretValue), "Read a version's value (default ACSCurrent)";
    post "/v1/secrets/{name}/versions" => put_secret_value, "kms:PutSecretValue", 201, req: (api::PutSecretValueRequest), query: -, resp: (api::SecretVersionRef), "Add a version";
    get "/v1/secrets/{name}/versions" => list_secret_versions, "kms:ListSecretVersionIds", 200, req: -, query: -, resp: (api::ListSecretVersionsResponse), "List versions";
    post "/v1/secrets/{name}/stages" => update_secret_stage, "kms:UpdateSecretVersionStage", 200, req: (api::UpdateSecretStageRequest), query: -, resp: (api::ListSecretVersionsResponse), "Move or remove a stage label";
    post "/v1/secrets/{name}/restore" => restore_secret, "kms:RestoreSecret", 200, req: -, query: -, resp: (api::Secret), "Cancel a scheduled deletion";

    post "/v1/rotation-policies" => create_rotation_policy, "kms:CreateRotationPolicy", 201, req: (api::CreateRotationPolicyRequest), query: -, resp: (api::RotationPolicy), "Create a rotation policy";
    get "/v1/rotation-policies" => list_rotation_policies, "kms:ListRotationPolicies", 200, req: -, query: -, resp: (api::ListRotationPoliciesResponse), "List rotation policies";
    get "/v1/rotation-policies/{name}" => describe_rotation_policy, "kms:DescribeRotationPolicy", 200, req: -, query: -, resp: (api::RotationPolicy), "Describe a rotation policy";
    patch "/v1/rotation-policies/{name}" => update_rotation_policy, "kms:UpdateRotationPolicy", 200, req: (api::UpdateRotationPolicyRequest), query: -, resp: (api::RotationPolicy), "Update a rotation policy";
    delete "/v1/rotation-policies/{name}" => delete_rotation_policy, "kms:DeleteRotationPolicy", 204, req: -, query: -, resp: -, "Delete a rotation policy no secret uses";
}

/// `limit` and `page_token`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// Page size, 1–100 (default 50).
    limit: Option<usize>,
    /// From the previous page's `next_page_token`.
    page_token: Option<String>,
}

/// Query of `GET /v1/secrets`; also any number of `tag.KEY=VALUE`. The handler parses
/// the pairs itself (tags are open-ended); this type documents them.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
pub(crate) struct ListSecretsParams {
    /// Page size, 1–100 (default 50).
    limit: Option<usize>,
    /// From the previous page's `next_page_token`.
    page_token: Option<String>,
    /// Only names starting with this.
    name_prefix: Option<String>,
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

/// Query of `DELETE /v1/secrets/{name}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteSecretParams {
    /// 7–30 days (default 30).
    recovery_window_in_days: Option<u32>,
    /// Delete at once, with no way back.
    force_delete_without_recovery: Option<bool>,
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

use axum::Json;

async fn health() -> Json<api::Health> {
    Json(api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi_document())
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn create_key(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::CreateKeyRequest>,
) -> ApiResult<Response> {
    Ok(created(s.service.create_key(req).await?))
}

async fn list_keys(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<api::ListKeysResponse>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "limit: must be between 1 and 100",
        ));
    }
    Ok(Json(s.service.list_keys(limit, q.page_token.as_deref())?))
}

async fn describe_key(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.describe_key(&id)?))
}

async fn update_key(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateKeyRequest>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.update_key(&id, req).await?))
}

async fn enable_key(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.enable_key(&id).await?))
}

async fn disable_key(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.disable_key(&id).await?))
}

async fn rotate_key(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.rotate_key(&id).await?))
}

async fn schedule_key_deletion(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<api::ScheduleKeyDeletionRequest>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(
        s.service
            .schedule_key_deletion(&id, req.pending_window_in_days)
            .await?,
    ))
}

async fn cancel_key_deletion(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.cancel_key_deletion(&id).await?))
}

async fn list_aliases(State(s): State<AppState>) -> ApiResult<Json<api::ListAliasesResponse>> {
    Ok(Json(s.service.list_aliases()?))
}

async fn put_alias(
    State(s): State<AppState>,
    ApiPath(alias): ApiPath<String>,
    ApiJson(req): ApiJson<api::PutAliasRequest>,
) -> ApiResult<Json<api::Alias>> {
    Ok(Json(s.service.put_alias(&alias, &req.key_id).await?))
}

async fn get_alias(
    State(s): State<AppState>,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<Json<api::Alias>> {
    Ok(Json(s.service.get_alias(&alias)?))
}

async fn delete_alias(
    State(s): State<AppState>,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_alias(&alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_secret(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<api::CreateSecretRequest>,
) -> ApiResult<Response> {
    Ok(created(s.service.create_secret(req, &who).await?))
}

async fn list_secrets(
    State(s): State<AppState>,
    ApiQuery(pairs): ApiQuery<Vec<(String, String)>>,
) -> ApiResult<Json<api::ListSecretsResponse>> {
    let mut q = ListSecretsQuery {
        limit: 50,
        ..Default::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                q.limit = v.parse().map_err(|_| {
                    ApiError::new(ErrorCode::InvalidParameter, "limit: must be a whole number")
                })?
            }
            "page_token" => q.page_token = Some(v),
            "name_prefix" => q.name_prefix = Some(v),
            _ => match k.strip_prefix("tag.") {
                Some(tag) if !tag.is_empty() => {
                    q.tags.insert(tag.to_string(), v);
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!(
                            "query: unknown parameter {k}; expected limit, page_token, name_prefix or tag.KEY"
                        ),
                    ));
                }
            },
        }
    }
    Ok(Json(s.service.list_secrets(&q)?))
}

async fn describe_secret(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::Secret>> {
    Ok(Json(s.service.describe_secret(&name)?))
}

async fn update_secret(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateSecretRequest>,
) -> ApiResult<Json<api::Secret>> {
    Ok(Json(s.service.update_secret(&name, req).await?))
}

async fn delete_secret(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteSecretParams>,
) -> ApiResult<Json<api::DeleteSecretResponse>> {
    let force = q.force_delete_without_recovery.unwrap_or(false);
    Ok(Json(
        s.service
            .delete_secret(&name, q.recovery_window_in_days, force)
            .await?,
    ))
}

async fn get_secret_value(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetValueParams>,
) -> ApiResult<Json<api::SecretValue>> {
    Ok(Json(s.service.get_secret_value(
        &name,
        q.version_id.as_deref(),
        q.version_stage.as_deref(),
    )?))
}

async fn put_secret_value(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::PutSecretValueRequest>,
) -> ApiResult<Response> {
    Ok(created(s.service.put_secret_value(&name, req, &who).await?))
}

async fn list_secret_versions(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::ListSecretVersionsResponse>> {
    Ok(Json(s.service.list_secret_versions(&name)?))
}

async fn update_secret_stage(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateSecretStageRequest>,
) -> ApiResult<Json<api::ListSecretVersionsResponse>> {
    Ok(Json(s.service.update_secret_stage(&name, req).await?))
}

async fn restore_secret(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::Secret>> {
    Ok(Json(s.service.restore_secret(&name).await?))
}

async fn create_rotation_policy(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::CreateRotationPolicyRequest>,
) -> ApiResult<Response> {
    Ok(created(s.service.create_rotation_policy(req).await?))
}

async fn list_rotation_policies(
    State(s): State<AppState>,
) -> ApiResult<Json<api::ListRotationPoliciesResponse>> {
    Ok(Json(s.service.list_rotation_policies()?))
}

async fn describe_rotation_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::RotationPolicy>> {
    Ok(Json(s.service.describe_rotation_policy(&name)?))
}

async fn update_rotation_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateRotationPolicyRequest>,
) -> ApiResult<Json<api::RotationPolicy>> {
    Ok(Json(s.service.update_rotation_policy(&name, req).await?))
}

async fn delete_rotation_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_rotation_policy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
