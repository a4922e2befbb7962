//! Handlers of the audit trail.

use axum::Json;
use axum::extract::State;
use futures_util::StreamExt as _;
use strongbox_schemas::{self as api, ErrorCode};

use super::super::extract::{ApiJson, ApiQuery};
use super::{ApiError, ApiResult, AppState, AuditParams, AuditVerifyParams};
use crate::service::AuditQuery;

pub(super) async fn list_audit(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<api::ListAuditResponse>> {
    #[cfg(any(test, feature = "failpoints"))]
    s.service.audit_list_hold_point().await;
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
        // Records keep whole seconds: a record at second `t` is at or after a start
        // `s` (before an end `e`) exactly when `t` is at or after (before) the first
        // whole second not before `s` (`e`). Cutting the fraction off would take in a
        // record from before the start and leave out one from before the end.
        start_time: p.start_time.map(|t| t.unix_ceil()),
        end_time: p.end_time.map(|t| t.unix_ceil()),
        limit: p.limit.unwrap_or(100),
        after,
    };
    // A page may read (and parse) up to 10,000 records: off the async workers.
    let service = s.service.clone();
    let page = tokio::task::spawn_blocking(move || service.list_audit(&q))
        .await
        .map_err(crate::Error::internal)??;
    Ok(Json(page))
}

pub(super) async fn verify_audit(
    State(s): State<AppState>,
    ApiQuery(p): ApiQuery<AuditVerifyParams>,
) -> ApiResult<Json<api::AuditVerifyReport>> {
    // A walk of the whole trail: off the async workers, so requests go on meanwhile.
    let service = s.service.clone();
    let report =
        tokio::task::spawn_blocking(move || service.verify_audit_since(p.since.as_deref()))
            .await
            .map_err(crate::Error::internal)??;
    Ok(Json(report))
}

pub(super) async fn prune_audit(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<api::PruneAuditRequest>,
) -> ApiResult<Json<api::PruneAuditResponse>> {
    Ok(Json(s.service.prune_audit(&req).await?))
}

/// How long the stream of a backup waits for a client that takes no bytes before it
/// gives up (the backup holds a snapshot open, which keeps redb from reusing pages).
const BACKUP_STALL: std::time::Duration = std::time::Duration::from_secs(300);

/// `GET /v1/backup`: every table of one snapshot, streamed as the snapshot is read (see
/// `crate::backup`); one at a time (`InvalidState` while another runs). An error before
/// the first bytes is an error answer; one after them cuts the body short, which
/// `strongbox backup` and `strongbox restore` both detect, and the server logs. (The
/// audit record, written when the answer starts, says it succeeded.)
pub(super) async fn backup(State(s): State<AppState>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let claim = s.service.claim_backup().ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidState,
            "a backup is being taken; try again when it is done",
        )
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, crate::Error>>(4);
    let service = s.service.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _claim = claim;
        let mut sink = |chunk: Vec<u8>| match handle
            .block_on(tokio::time::timeout(BACKUP_STALL, tx.send(Ok(chunk))))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took no bytes for 300 s",
            )),
        };
        if let Err(e) = service.backup(&mut sink) {
            if tx.is_closed() {
                tracing::warn!("a backup stopped: the client went away");
            } else {
                let _ = tx.blocking_send(Err(crate::Error::internal(format!("backup: {e:#}"))));
            }
        }
    });
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e.into()),
        None => {
            return Err(crate::Error::internal("the backup stopped before its first bytes").into());
        }
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| {
            let item = item.map_err(|e| std::io::Error::other(e.message));
            (item, rx)
        })
    });
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}
