//! Extractors whose rejections use the API's error format.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// JSON body; a missing body, wrong content type or unknown field is an API error.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub T);

/// Path parameters, percent-decoded.
#[derive(Debug, Clone, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// Query parameters.
#[derive(Debug, Clone, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
pub(crate) fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        // Media types are case-insensitive (RFC 9110), as axum's own Json takes them.
        .is_some_and(|m| {
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
}

/// A JSON body that may be absent entirely (then `T::default()`). A body that is not
/// empty must say it is JSON: otherwise it is refused (415 `UnsupportedMediaType`)
/// rather than ignored, since ignoring it would drop what the caller asked for (a
/// token's expiry, say).
#[derive(Debug, Clone, Default)]
pub(crate) struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::from(JsonRejection::from(e)))?;
        if bytes.is_empty() {
            return Ok(Self(T::default()));
        }
        if !json {
            return Err(ApiError::new(
                strongbox_schemas::ErrorCode::UnsupportedMediaType,
                "a body must be JSON with Content-Type: application/json (or be empty)",
            ));
        }
        let axum::Json(v) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(v))
    }
}

/// The authenticated and authorized caller, set by the guard before the handler runs.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub std::sync::Arc<crate::service::Identity>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                strongbox_schemas::ErrorCode::Unauthenticated,
                "no valid token",
            )
        })
    }
}
