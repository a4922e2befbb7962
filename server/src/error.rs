//! The domain error: a stable code plus a message safe to show the caller.

use strongbox_schemas::{ErrorCode, FieldError, IntervalError};

use crate::barrier::BarrierError;
use crate::storage::StorageError;

/// An error of a Strongbox operation. The message never contains secret values, tokens
/// or key material; internal details go to the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// Stable code; decides the HTTP status at the edge.
    pub code: ErrorCode,
    /// For the caller.
    pub message: String,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `InvalidParameter` naming the field and rule.
    pub fn invalid(field: &str, rule: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidParameter, format!("{field}: {rule}"))
    }

    /// An internal failure: logged with its detail, shown to the caller without it.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "internal error; see the server log",
        )
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        Self::new(ErrorCode::InvalidParameter, e.to_string())
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Self::internal(e)
    }
}

impl From<BarrierError> for Error {
    fn from(e: BarrierError) -> Self {
        Self::internal(e)
    }
}

/// Checks an interval's range, naming the field.
pub(crate) fn interval_in(
    field: &str,
    i: &strongbox_schemas::Interval,
    min: u64,
    max: u64,
) -> Result<()> {
    i.check_range(min, max)
        .map_err(|e: IntervalError| Error::invalid(field, e))
}
