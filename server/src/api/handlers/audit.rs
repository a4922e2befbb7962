//! Handlers of the audit trail.

use axum::Json;
use axum::extract::State;
use strongbox_schemas::{self as api, ErrorCode};

use super::super::extract::ApiQuery;
use super::{ApiError, ApiResult, AppState, AuditParams};
use crate::service::AuditQuery;

pub(super) async fn list_audit(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<api::ListAuditResponse>> {
    let after = match p.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => t.parse::<u64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                "page_token: not a token returned by a list call (or a record's seq)",
            )
        })?,
    };
    let q = AuditQuery {
        principal: p.principal,
        action: p.action,
        resource_prefix: p.resource_prefix,
        request_id: p.request_id,
        start_time: p.start_time.map(|t| t.unix()),
        end_time: p.end_time.map(|t| t.unix()),
        limit: p.limit.unwrap_or(100),
        after,
    };
    Ok(Json(s.service.list_audit(&q)?))
}

pub(super) async fn verify_audit(
    State(s): State<AppState>,
) -> ApiResult<Json<api::AuditVerifyReport>> {
    // A walk of the whole trail: off the async workers, so requests go on meanwhile.
    let service = s.service.clone();
    let report = tokio::task::spawn_blocking(move || service.verify_audit())
        .await
        .map_err(crate::Error::internal)??;
    Ok(Json(report))
}
