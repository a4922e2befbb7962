//! Handlers of principals, tokens and access policies.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use strongbox_schemas::{self as api, ErrorCode, PolicyDocument};

use super::super::extract::{ApiJson, ApiPath, ApiQuery, Caller, OptionalJson};
use super::{ApiError, ApiResult, AppState, PageQuery, created, known_actions};
use crate::service::Actor;

/// Every action pattern of a document must name at least one action some route
/// requires, so that a typo (`kms:GetSecretValeu`) is refused instead of granting
/// nothing in silence.
fn check_actions(doc: &PolicyDocument) -> ApiResult<()> {
    let known = known_actions();
    for (i, s) in doc.statements().iter().enumerate() {
        for (j, a) in s.actions.iter().enumerate() {
            if !known.iter().any(|k| a.matches(k)) {
                return Err(ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "document.Statement[{i}].Action[{j}]: {} matches no action; actions are named like kms:GetSecretValue, ram:CreatePrincipal, audit:Read",
                        a.as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub(super) async fn create_principal(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<api::CreatePrincipalRequest>,
) -> ApiResult<Response> {
    Ok(created(
        s.service.create_principal(req, &Actor::Caller(who)).await?,
    ))
}

pub(super) async fn list_principals(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<api::ListPrincipalsResponse>> {
    let visible = |n: &str| who.allows("ram:GetPrincipal", &format!("principal/{n}"));
    Ok(Json(s.service.list_principals(
        q.limit()?,
        q.page_token.as_deref(),
        &visible,
    )?))
}

pub(super) async fn get_principal(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::Principal>> {
    Ok(Json(s.service.describe_principal(&name)?))
}

pub(super) async fn update_principal(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdatePrincipalRequest>,
) -> ApiResult<Json<api::Principal>> {
    let who = Actor::Caller(who);
    let mut p = s.service.update_principal(&name, req, &who).await?;
    // As for every write's answer: no more than describing shows (`PATCH {}` would
    // otherwise read a principal's description and attached policies).
    if !who.allows("ram:GetPrincipal", &format!("principal/{name}")) {
        p.description.clear();
        p.policies.clear();
        // Comparing ids across answers would tell whether it was created again.
        p.principal_id.clear();
    }
    Ok(Json(p))
}

pub(super) async fn delete_principal(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_principal(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn create_token(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    OptionalJson(req): OptionalJson<api::CreateTokenRequest>,
) -> ApiResult<Response> {
    Ok(created(s.service.create_token(&name, req).await?))
}

pub(super) async fn list_tokens(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::ListTokensResponse>> {
    let secret_visible = |n: &str| who.allows("kms:DescribeSecret", &format!("secret/{n}"));
    Ok(Json(s.service.list_tokens_shown(&name, &secret_visible)?))
}

pub(super) async fn delete_token(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath((name, token_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    s.service
        .delete_token(&name, &token_id, who.principal())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn create_policy(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::CreatePolicyRequest>,
) -> ApiResult<Response> {
    check_actions(&req.document)?;
    Ok(created(s.service.create_policy(req).await?))
}

pub(super) async fn list_policies(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<api::ListPoliciesResponse>> {
    let visible = |n: &str| who.allows("ram:GetPolicy", &format!("policy/{n}"));
    Ok(Json(s.service.list_policies(
        q.limit()?,
        q.page_token.as_deref(),
        &visible,
    )?))
}

pub(super) async fn get_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<api::Policy>> {
    Ok(Json(s.service.describe_policy(&name)?))
}

pub(super) async fn update_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<api::UpdatePolicyRequest>,
) -> ApiResult<Json<api::Policy>> {
    if let Some(d) = &req.document {
        check_actions(d)?;
    }
    let mut p = s.service.update_policy(&name, req).await?;
    // No more than describing shows: a caller that may not read the policy gets its
    // name, ARN and dates, not its document or description.
    if !who.allows("ram:GetPolicy", &format!("policy/{name}")) {
        p.description.clear();
        p.document = None;
    }
    Ok(Json(p))
}

pub(super) async fn delete_policy(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    s.service.delete_policy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
