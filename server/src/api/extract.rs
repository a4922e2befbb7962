//! Extractors whose rejections use the API's error format.

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

/// A JSON body that may be absent entirely (then `T::default()`).
#[derive(Debug, Clone, Default)]
pub(crate) struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty_len = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let has_type = req.headers().contains_key(axum::http::header::CONTENT_TYPE);
        if empty_len
            || (!has_type
                && !req
                    .headers()
                    .contains_key(axum::http::header::TRANSFER_ENCODING))
        {
            return Ok(Self(T::default()));
        }
        let ApiJson(v) = ApiJson::<T>::from_request(req, state).await?;
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
