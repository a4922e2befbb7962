use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes. The string form (`code` in JSON) never changes
/// meaning; clients branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ErrorCode {
    /// Syntax, unknown or missing fields, values outside their rules (400).
    InvalidParameter,
    /// No token, or a token that is not valid (401).
    Unauthenticated,
    /// The caller may not do this (403).
    Forbidden,
    /// No such route (404).
    NotFound,
    /// No such secret (404).
    SecretNotFound,
    /// No such secret version or stage (404).
    VersionNotFound,
    /// No such key (404).
    KeyNotFound,
    /// No such alias (404).
    AliasNotFound,
    /// No such rotation policy (404).
    RotationPolicyNotFound,
    /// No such principal (404).
    PrincipalNotFound,
    /// No such access policy (404).
    PolicyNotFound,
    /// No such token (404).
    TokenNotFound,
    /// The method is not served on this path (405).
    MethodNotAllowed,
    /// A resource with this name already exists (409).
    AlreadyExists,
    /// The version id exists with different data (409).
    VersionConflict,
    /// The secret is scheduled for deletion (409).
    SecretPendingDeletion,
    /// The key is disabled (409).
    KeyDisabled,
    /// The key is scheduled for deletion (409).
    KeyPendingDeletion,
    /// The key's material has been destroyed (409).
    KeyDeleted,
    /// The rotation policy is still attached to secrets (409).
    RotationPolicyInUse,
    /// The access policy is still attached to principals (409).
    PolicyInUse,
    /// A rotation of this secret is already running (409).
    RotationInProgress,
    /// The request conflicts with the resource's state (409).
    InvalidState,
    /// A ciphertext blob that does not open: damaged, made under another key, or with
    /// another encryption context (400).
    InvalidCiphertext,
    /// A rotation step failed in the target system after its retries (502);
    /// `ACSCurrent` is unchanged.
    RotationFailed,
    /// Body or value larger than allowed (413).
    PayloadTooLarge,
    /// Body is not `application/json` (415).
    UnsupportedMediaType,
    /// The request was dropped before its answer (499, as nginx logs it): its client
    /// went away, or the server cut its connection at shutdown. Never sent to a client
    /// (none is left to receive it): it is how the audit trail records a read that
    /// ended so.
    ClientClosedRequest,
    /// Too many requests without a valid token from one client address, or from all of
    /// them together past the server-wide limit (429); see `Retry-After`. Requests with
    /// a valid token are never refused so.
    TooManyRequests,
    /// Something failed inside the server (500); details are in the server log.
    InternalError,
    /// The server cannot serve now (503).
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidParameter | InvalidCiphertext => 400,
            Unauthenticated => 401,
            Forbidden => 403,
            NotFound
            | SecretNotFound
            | VersionNotFound
            | KeyNotFound
            | AliasNotFound
            | RotationPolicyNotFound
            | PrincipalNotFound
            | PolicyNotFound
            | TokenNotFound => 404,
            MethodNotAllowed => 405,
            AlreadyExists
            | VersionConflict
            | SecretPendingDeletion
            | KeyDisabled
            | KeyPendingDeletion
            | KeyDeleted
            | RotationPolicyInUse
            | PolicyInUse
            | RotationInProgress
            | InvalidState => 409,
            PayloadTooLarge => 413,
            RotationFailed => 502,
            UnsupportedMediaType => 415,
            TooManyRequests => 429,
            ClientClosedRequest => 499,
            InternalError => 500,
            Unavailable => 503,
        }
    }

    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidParameter => "InvalidParameter",
            Unauthenticated => "Unauthenticated",
            Forbidden => "Forbidden",
            NotFound => "NotFound",
            SecretNotFound => "SecretNotFound",
            VersionNotFound => "VersionNotFound",
            KeyNotFound => "KeyNotFound",
            AliasNotFound => "AliasNotFound",
            RotationPolicyNotFound => "RotationPolicyNotFound",
            PrincipalNotFound => "PrincipalNotFound",
            PolicyNotFound => "PolicyNotFound",
            TokenNotFound => "TokenNotFound",
            MethodNotAllowed => "MethodNotAllowed",
            AlreadyExists => "AlreadyExists",
            VersionConflict => "VersionConflict",
            SecretPendingDeletion => "SecretPendingDeletion",
            KeyDisabled => "KeyDisabled",
            KeyPendingDeletion => "KeyPendingDeletion",
            KeyDeleted => "KeyDeleted",
            RotationPolicyInUse => "RotationPolicyInUse",
            PolicyInUse => "PolicyInUse",
            RotationInProgress => "RotationInProgress",
            InvalidState => "InvalidState",
            InvalidCiphertext => "InvalidCiphertext",
            RotationFailed => "RotationFailed",
            PayloadTooLarge => "PayloadTooLarge",
            UnsupportedMediaType => "UnsupportedMediaType",
            ClientClosedRequest => "ClientClosedRequest",
            TooManyRequests => "TooManyRequests",
            InternalError => "InternalError",
            Unavailable => "Unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Stable machine code.
    pub code: ErrorCode,
    /// What went wrong, for people. Never contains secret values.
    pub message: String,
    /// The request's id, also in the `x-request-id` header and the server log.
    #[serde(default)]
    pub request_id: String,
}
