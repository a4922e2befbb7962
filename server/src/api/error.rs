//! Errors at the edge: every failure, including the framework's own rejections,
//! becomes `{"code", "message", "request_id"}` with the status of its code.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strongbox_schemas::{ErrorBody, ErrorCode};

use crate::Error;

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub(crate) static REQUEST_ID: String;
}

/// Current request id, or empty outside a request.
pub(crate) fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An error response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl ApiError {
    /// From a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(Error::new(code, message))
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.0.code,
            message: self.0.message,
            request_id: current_request_id(),
        };
        let mut resp = (status, Json(body)).into_response();
        resp.extensions_mut().insert(self.0.code);
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the body must be JSON with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
            }
            other => ApiError::new(
                ErrorCode::InvalidParameter,
                format!("body: {}", other.body_text()),
            ),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("path: {}", r.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("query: {}", r.body_text()),
        )
    }
}
