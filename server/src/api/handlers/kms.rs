//! Handlers of the key, alias, secret and rotation-policy routes, and the server-wide
//! ones. Lists show only what the caller may describe.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strongbox_schemas::{self as api, ErrorCode};

use super::super::extract::{ApiJson, ApiPath, ApiQuery, Caller, OptionalJson};
use super::{
    ApiError, ApiResult, AppState, GetValueParams, PageQuery, RandomPasswordParams, created,
};
use crate::service::{Actor, ListSecretsQuery, ListVisibility};

/// `ok`, or 503 `storage_failing` while the last commit failed (disk full, I/O error):
/// writes, and reads (whose audit records are writes), are refused until it recovers,
/// and a supervisor or load balancer should know.
pub(super) async fn health(State(s): State<AppState>) -> Response {
    let stats = s.service.store().stats();
    let failing = stats.failing.load(std::sync::atomic::Ordering::Relaxed)
        || stats.broken.load(std::sync::atomic::Ordering::Relaxed);
    let body = Json(api::Health {
        status: if failing { "storage_failing" } else { "ok" }.into(),
        version: env!("CARGO_PKG_VERSION").into(),
    });
    if failing {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        body.into_response()
    }
}

pub(super) async fn openapi() -> Json<serde_json::Value> {
    Json(super::super::openapi_document())
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            // What the encoder writes (`# EOF`, `_total` samples under a `counter`
            // family): Prometheus' 0.0.4 text parser would take those counters as
            // untyped.
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

pub(super) async fn create_key(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::CreateKeyRequest>,
) -> ApiResult<Response> {
    Ok(created(s.service.create_key(req).await?))
}

pub(super) async fn list_keys(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<api::ListKeysResponse>> {
    let limit = q.limit()?;
    let visible = |id: &str| who.allows("kms:DescribeKey", &format!("key/{id}"));
    Ok(Json(s.service.list_keys(
        limit,
        q.page_token.as_deref(),
        &visible,
    )?))
}

pub(super) async fn describe_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    Ok(Json(s.service.describe_key(&id, &Actor::Caller(who))?))
}

pub(super) async fn update_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateKeyRequest>,
) -> ApiResult<Json<api::Key>> {
    let who = Actor::Caller(who);
    let key = s.service.update_key(&id, req, &who).await?;
    Ok(Json(key_shown_to(&who, key)))
}

/// A write's answer about a key, for a caller that may not describe it: without its
/// description and tags, which only describing shows (otherwise `PATCH {}` would read
/// them); its id, state and dates are what the write is about.
fn key_shown_to(who: &Actor, mut key: api::Key) -> api::Key {
    if !who.allows("kms:DescribeKey", &format!("key/{}", key.key_id)) {
        key.description = String::new();
        key.tags.clear();
    }
    key
}

pub(super) async fn enable_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    let who = Actor::Caller(who);
    let key = s.service.enable_key(&id, &who).await?;
    Ok(Json(key_shown_to(&who, key)))
}

pub(super) async fn disable_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    let who = Actor::Caller(who);
    let key = s.service.disable_key(&id, &who).await?;
    Ok(Json(key_shown_to(&who, key)))
}

pub(super) async fn rotate_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    let who = Actor::Caller(who);
    let key = s.service.rotate_key(&id, &who).await?;
    Ok(Json(key_shown_to(&who, key)))
}

pub(super) async fn schedule_key_deletion(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<api::ScheduleKeyDeletionRequest>,
) -> ApiResult<Json<api::Key>> {
    let who = Actor::Caller(who);
    let key = s
        .service
        .schedule_key_deletion(&id, req.pending_window_in_days, &who)
        .await?;
    Ok(Json(key_shown_to(&who, key)))
}

pub(super) async fn cancel_key_deletion(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<api::Key>> {
    let who = Actor::Caller(who);
    let key = s.service.cancel_key_deletion(&id, &who).await?;
    Ok(Json(key_shown_to(&who, key)))
}

pub(super) async fn encrypt(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::EncryptRequest>,
) -> ApiResult<Json<api::EncryptResponse>> {
    Ok(Json(s.service.encrypt(&id, &req, &Actor::Caller(who))?))
}

pub(super) async fn decrypt(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::DecryptRequest>,
) -> ApiResult<Json<api::DecryptResponse>> {
    Ok(Json(s.service.decrypt(&id, &req, &Actor::Caller(who))?))
}

pub(super) async fn re_encrypt(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<api::ReEncryptRequest>,
) -> ApiResult<Json<api::ReEncryptResponse>> {
    Ok(Json(s.service.re_encrypt(
        &id,
        &req,
        &Actor::Caller(who),
    )?))
}

pub(super) async fn generate_data_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<api::GenerateDataKeyRequest>,
) -> ApiResult<Json<api::GenerateDataKeyResponse>> {
    use base64::Engine as _;
    let k = s
        .service
        .generate_data_key(&id, &req, "kms:GenerateDataKey", &Actor::Caller(who))?;
    Ok(Json(api::GenerateDataKeyResponse {
        plaintext: base64::engine::general_purpose::STANDARD.encode(k.plaintext.as_slice()),
        key_id: k.key_id,
        key_version: k.key_version,
        ciphertext_blob: k.ciphertext_blob,
    }))
}

pub(super) async fn generate_data_key_without_plaintext(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(req): OptionalJson<api::GenerateDataKeyRequest>,
) -> ApiResult<Json<api::GenerateDataKeyWithoutPlaintextResponse>> {
    let k = s.service.generate_data_key(
        &id,
        &req,
        "kms:GenerateDataKeyWithoutPlaintext",
        &Actor::Caller(who),
    )?;
    Ok(Json(api::GenerateDataKeyWithoutPlaintextResponse {
        key_id: k.key_id,
        key_version: k.key_version,
        ciphertext_blob: k.ciphertext_blob,
    }))
}

pub(super) async fn list_aliases(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<api::ListAliasesResponse>> {
    let visible = |a: &str| who.allows("kms:DescribeAlias", a);
    Ok(Json(s.service.list_aliases(
        q.limit()?,
        q.page_token.as_deref(),
        &visible,
    )?))
}

pub(super) async fn put_alias(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(alias): ApiPath<String>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<api::PutAliasRequest>,
) -> ApiResult<Json<api::Alias>> {
    // `If-None-Match: *` (HTTP's "only if it is not there"): create, never move.
    let create_only = match headers.get(axum::http::header::IF_NONE_MATCH) {
        None => false,
        Some(v) if v.as_bytes() == b"*" => true,
        Some(_) => {
            return Err(crate::error::Error::invalid(
                "If-None-Match",
                "only * is supported (create the alias, never move it)",
            )
            .into());
        }
    };
    Ok(Json(
        s.service
            .put_alias_with(&alias, &req.key_id, create_only, &Actor::Caller(who))
            .await?,
    ))
}

pub(super) async fn get_alias(
    State(s): State<AppState>,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<Json<api::Alias>> {
    Ok(Json(s.service.get_alias(&alias)?))
}

pub(super) async fn delete_alias(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(alias): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_alias(&alias, &Actor::Caller(who)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn create_secret(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<api::CreateSecretRequest>,
) -> ApiResult<Response> {
    Ok(created(
        s.service.create_secret(req, &Actor::Caller(who)).await?,
    ))
}

pub(super) async fn list_secrets(
    State(s): State<AppState>,
    Caller(who): Caller,
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
            "key_id" => {
                if v.is_empty() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameter,
                        "key_id: give a key's id or alias/NAME",
                    ));
                }
                // Which secrets use a key says something of the key: the caller must be
                // allowed to describe it (and, for a secret that names an alias, the
                // alias: see `ListVisibility`). A key named by alias is authorized as
                // written, before it is looked up (so a refusal says nothing of whether
                // it exists), then as the key it names, as on the key routes.
                let actor = Actor::Caller(who.clone());
                actor.require(
                    "kms:DescribeKey",
                    &format!("key/{v}"),
                    "listing secrets by key_id",
                )?;
                q.key_id = Some(if v.starts_with("alias/") {
                    let key_id = s.service.get_alias(&v)?.key_id;
                    actor.require_key_behind_alias("kms:DescribeKey", &v, &key_id)?;
                    key_id
                } else {
                    v
                });
            }
            _ => match k.strip_prefix("tag.") {
                Some(tag) if !tag.is_empty() => {
                    q.tags.insert(tag.to_string(), v);
                }
                _ => {
                    // A parameter without a value (`?hunter2`) may be a value itself:
                    // only a name given one is repeated.
                    let which = if v.is_empty() {
                        "an unknown parameter".to_string()
                    } else {
                        format!("unknown parameter {k}")
                    };
                    return Err(ApiError::new(
                        ErrorCode::InvalidParameter,
                        format!(
                            "query: {which}; expected limit, page_token, name_prefix, key_id or tag.KEY"
                        ),
                    ));
                }
            },
        }
    }
    // A filter that matches little may read many records (each decoded and checked):
    // off the async workers, so other requests go on meanwhile.
    let service = s.service.clone();
    let page = tokio::task::spawn_blocking(move || {
        let secret = |name: &str| who.allows("kms:DescribeSecret", &format!("secret/{name}"));
        let alias = |alias: &str| who.allows("kms:DescribeAlias", alias);
        let visible = ListVisibility {
            secret: &secret,
            alias: &alias,
        };
        service.list_secrets(&q, &visible)
    })
    .await
    .map_err(crate::Error::internal)??;
    Ok(Json(page))
}

pub(super) async fn describe_secret(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::Secret>> {
    Ok(Json(s.service.describe_secret(&name)?))
}

pub(super) async fn update_secret(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateSecretRequest>,
) -> ApiResult<Json<api::Secret>> {
    let who = Actor::Caller(who);
    let updated = s.service.update_secret(&name, req, &who).await?;
    Ok(Json(secret_shown_to(&who, updated)))
}

/// A write's answer about a secret, for a caller that may not describe it: its name,
/// ARN, type, key, policy and dates, without what only describing shows (description,
/// tags, `extended_config`, `last_rotation_error`). Otherwise `PATCH {}` would read them.
/// (AWS's UpdateSecret answers with the name and ARN alone.)
fn secret_shown_to(who: &Actor, mut secret: api::Secret) -> api::Secret {
    if !who.allows("kms:DescribeSecret", &format!("secret/{}", secret.name)) {
        secret.description = String::new();
        secret.tags.clear();
        secret.extended_config = None;
        secret.last_rotation_error = None;
    }
    secret
}

pub(super) async fn delete_secret(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<api::DeleteSecretParams>,
) -> ApiResult<Json<api::DeleteSecretResponse>> {
    let force = q.force_delete_without_recovery.unwrap_or(false);
    Ok(Json(
        s.service
            .delete_secret(&name, q.recovery_window_in_days, force, &Actor::Caller(who))
            .await?,
    ))
}

pub(super) async fn get_secret_value(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<GetValueParams>,
) -> ApiResult<Json<api::SecretValue>> {
    Ok(Json(s.service.get_secret_value_as(
        &name,
        q.version_id.as_deref(),
        q.version_stage.as_deref(),
        &Actor::Caller(who),
    )?))
}

pub(super) async fn put_secret_value(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::PutSecretValueRequest>,
) -> ApiResult<Response> {
    Ok(created(
        s.service
            .put_secret_value(&name, req, &Actor::Caller(who))
            .await?,
    ))
}

pub(super) async fn list_secret_versions(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::ListSecretVersionsResponse>> {
    let key_visible = |k: &str| who.allows("kms:DescribeKey", &format!("key/{k}"));
    Ok(Json(
        s.service.list_secret_versions_shown(&name, &key_visible)?,
    ))
}

pub(super) async fn update_secret_stage(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateSecretStageRequest>,
) -> ApiResult<Json<api::ListSecretVersionsResponse>> {
    let who = Actor::Caller(who);
    let mut versions = s.service.update_secret_stage(&name, req, &who).await?;
    // The versions as they are now, only to a caller that may list them (ids, labels,
    // who made each): otherwise a move would read them. (AWS answers with the name and
    // ARN alone.)
    if !who.allows("kms:ListSecretVersionIds", &format!("secret/{name}")) {
        versions.versions.clear();
    }
    Ok(Json(versions))
}

pub(super) async fn restore_secret(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::Secret>> {
    let restored = s.service.restore_secret(&name).await?;
    Ok(Json(secret_shown_to(&Actor::Caller(who), restored)))
}

pub(super) async fn create_rotation_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<api::CreateRotationPolicyRequest>,
) -> ApiResult<Response> {
    Ok(created(
        s.service
            .create_rotation_policy(req, &Actor::Caller(who))
            .await?,
    ))
}

pub(super) async fn list_rotation_policies(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<api::ListRotationPoliciesResponse>> {
    let visible = |n: &str| {
        who.allows(
            "kms:DescribeRotationPolicy",
            &format!("rotation-policy/{n}"),
        )
    };
    Ok(Json(s.service.list_rotation_policies(
        q.limit()?,
        q.page_token.as_deref(),
        &visible,
    )?))
}

pub(super) async fn describe_rotation_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::RotationPolicy>> {
    Ok(Json(s.service.describe_rotation_policy(&name)?))
}

pub(super) async fn update_rotation_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdateRotationPolicyRequest>,
) -> ApiResult<Json<api::RotationPolicy>> {
    let who = Actor::Caller(who);
    let mut p = s.service.update_rotation_policy(&name, req, &who).await?;
    // For a caller that may not describe the policy, without its settings (a webhook's
    // url and signing secret, the principals an access_key policy may issue for):
    // otherwise `PATCH {}` would read them.
    if !who.allows(
        "kms:DescribeRotationPolicy",
        &format!("rotation-policy/{}", p.name),
    ) {
        p.settings.clear();
    }
    Ok(Json(p))
}

pub(super) async fn delete_rotation_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_rotation_policy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn rotate_secret(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    OptionalJson(req): OptionalJson<api::RotateSecretRequest>,
) -> ApiResult<Json<api::RotateSecretResponse>> {
    Ok(Json(s.service.rotate_secret(&name, req).await?))
}

pub(super) async fn random_password(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<RandomPasswordParams>,
) -> ApiResult<Json<api::RandomPassword>> {
    Ok(Json(s.service.random_password(&q.to_settings())?))
}
