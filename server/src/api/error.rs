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
                format!("body: {}", without_values(&other.body_text())),
            ),
        }
    }
}

/// A JSON error message without the values it quotes: serde names what it found
/// (``invalid type: integer `123456`, expected a string``, ``unknown variant `x` ``),
/// and what it found may be a secret sent in the wrong shape or field. The field's
/// path, the kind of value and what was expected stay.
fn without_values(message: &str) -> String {
    const MARKS: [&str; 3] = ["invalid type: ", "invalid value: ", "unknown variant "];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, mark)) = MARKS
        .iter()
        .filter_map(|m| rest.find(m).map(|i| (i, *m)))
        .min_by_key(|(i, _)| *i)
    {
        let start = at + mark.len();
        out.push_str(&rest[..start]);
        // What was found runs to the last ", expected" (what is expected comes from the
        // code; what was found may itself hold ", expected"), or to the end.
        let found_len = rest[start..]
            .rfind(", expected")
            .unwrap_or(rest.len() - start);
        let found = &rest[start..start + found_len];
        // Its kind is what comes before a quoted value: `integer`, `string`, ….
        let kind = found
            .find(['`', '"'])
            .map_or(found, |q| &found[..q])
            .trim_end();
        if kind.is_empty() {
            out.push('…');
        } else {
            out.push_str(kind);
        }
        rest = &rest[start + found_len..];
    }
    out.push_str(rest);
    out
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
            format!(
                "query: {}",
                without_unknown_name(&without_values(&r.body_text()))
            ),
        )
    }
}

/// A query error without the name of an unknown parameter: in `?hunter2` the "name" is
/// what the caller typed, which may be a value or a token. The framework names it twice
/// (``Failed …: hunter2: unknown field `hunter2`, expected …``): what comes after its own
/// first `": "` goes, up to serde's words after the name. What was expected stays.
fn without_unknown_name(message: &str) -> String {
    const MARK: &str = "unknown field `";
    let Some(at) = message.find(MARK) else {
        return message.to_string();
    };
    let start = at + MARK.len();
    // The name runs to the last place where serde's own words follow it (the name may
    // itself hold them), or to the end.
    let end = ["`, expected", "`, there are no fields"]
        .iter()
        .filter_map(|w| message[start..].rfind(w))
        .max()
        .map_or(message.len(), |e| start + e + 1);
    let keep = message[..at].find(": ").map_or(at, |p| p + 2);
    format!(
        "{}an unknown parameter{}",
        &message[..keep],
        &message[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::{without_unknown_name, without_values};

    #[test]
    fn query_errors_do_not_repeat_an_unknown_parameter() {
        let cases = [
            (
                "Failed to deserialize query string: unknown field `sbx_AbC`, expected `version_stage` or `version_id`",
                "Failed to deserialize query string: an unknown parameter, expected `version_stage` or `version_id`",
            ),
            (
                "Failed to deserialize query string: sbx_AbC: unknown field `sbx_AbC`, expected `limit`",
                "Failed to deserialize query string: an unknown parameter, expected `limit`",
            ),
            (
                "Failed to deserialize query string: unknown field `x`, there are no fields",
                "Failed to deserialize query string: an unknown parameter, there are no fields",
            ),
            (
                "Failed to deserialize query string: unknown field `a`, expected b`, expected `c`",
                "Failed to deserialize query string: an unknown parameter, expected `c`",
            ),
            (
                "Failed to deserialize query string: unknown field `cut",
                "Failed to deserialize query string: an unknown parameter",
            ),
            (
                "Failed to deserialize query string: limit: invalid digit found in string",
                "Failed to deserialize query string: limit: invalid digit found in string",
            ),
        ];
        for (given, wanted) in cases {
            assert_eq!(without_unknown_name(given), wanted, "{given}");
        }
    }

    #[test]
    fn json_errors_name_the_field_and_the_kind_but_not_the_value() {
        let cases = [
            (
                "secret_data: invalid type: integer `123456`, expected a string at line 1 column 21",
                "secret_data: invalid type: integer, expected a string at line 1 column 21",
            ),
            (
                r#"a: invalid type: string "pw-4711", expected u32 at line 1 column 9"#,
                "a: invalid type: string, expected u32 at line 1 column 9",
            ),
            (
                "b: invalid value: floating point `2.5`, expected u8",
                "b: invalid value: floating point, expected u8",
            ),
            (
                "secret_data_type: unknown variant `hunter2`, expected `text` or `binary`",
                "secret_data_type: unknown variant …, expected `text` or `binary`",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
            (
                "unknown field `colour`, expected one of `name`, `tags`",
                "unknown field `colour`, expected one of `name`, `tags`",
            ),
            (
                "trailing: invalid type: integer `7`",
                "trailing: invalid type: integer",
            ),
            // A value that itself holds the words that end it.
            (
                "secret_data_type: unknown variant `x, expected hunter2`, expected `text` or `binary`",
                "secret_data_type: unknown variant …, expected `text` or `binary`",
            ),
            (
                r#"a: invalid type: string "pw, expected 4711", expected u32 at line 1 column 9"#,
                "a: invalid type: string, expected u32 at line 1 column 9",
            ),
        ];
        for (given, wanted) in cases {
            assert_eq!(without_values(given), wanted, "{given}");
        }
    }
}
