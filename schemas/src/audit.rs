//! The audit trail as the API shows it.

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, Interval, Timestamp};

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AuditOutcome {
    /// Authorized and done.
    Succeeded,
    /// Refused before anything was looked at: no or bad token (401), not allowed (403),
    /// or too many requests without a valid token from the caller's address (429).
    Denied,
    /// Authorized (or not routable) but it failed; see `error_code`.
    Failed,
}

/// One request, as recorded. Never holds a secret value, a token or a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditRecord {
    /// Position in the trail, from 1, without gaps (a pruned trail begins after the
    /// last record pruned).
    pub seq: u64,
    /// When the request arrived.
    pub time: Timestamp,
    /// The request id (also in the `x-request-id` header and error bodies).
    pub request_id: String,
    /// Who called; `anonymous` when no valid token was presented.
    pub principal: String,
    /// The action of the route, such as `kms:GetSecretValue` (empty when no route matched).
    pub action: String,
    /// The resource it was authorized against, such as `secret/app/db`.
    pub resource: String,
    /// Other resources the request acted on, as named: the key a re-encrypt read the
    /// blob's data under (`kms:ReEncryptFrom`). `resource_prefix` filters match them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_resources: Vec<String>,
    /// Succeeded, denied or failed.
    pub outcome: AuditOutcome,
    /// The error code when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// Client address (`ip:port`), when known.
    pub source: String,
    /// `User-Agent` header, cut to 256 characters.
    pub user_agent: String,
}

/// `GET /v1/audit`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListAuditResponse {
    /// Matching records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `page_token` to continue (absent at the end of the trail). A page may hold
    /// fewer than `limit` records when filters skip many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    /// Records ever appended to the trail when this page was read (pruned ones
    /// included): the last record's `seq`.
    pub count: u64,
    /// The oldest record kept: those before it were pruned (`POST /v1/audit/prune`).
    #[serde(default = "first")]
    pub first_seq: u64,
}

fn first() -> u64 {
    1
}

/// `GET /v1/audit/verify`: the result of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditVerifyReport {
    /// Every record and the head check out.
    pub intact: bool,
    /// Records ever appended, as the persisted head says (pruned ones included).
    pub count: u64,
    /// Records checked and found good before the first problem (all of them when intact:
    /// `count - pruned`).
    pub verified: u64,
    /// Records deleted from the start of the trail by `POST /v1/audit/prune`: the trail
    /// begins at record `pruned + 1`, and the chain is checked from the authenticated
    /// mark the prune left.
    #[serde(default)]
    pub pruned: u64,
    /// Sequence number of the first bad or missing record, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    /// What is wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// When intact: `COUNT:MAC`, the chain's value at its last record. A trail cut back
    /// to an older head of its own verifies on its own; kept outside the server and
    /// passed back as `since` to a later verify, this proves that the trail still holds
    /// those records unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
}

/// `POST /v1/audit/prune`: deletes the oldest records, those older than `older_than`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneAuditRequest {
    /// Records that arrived longer ago than this (`90d`, `2160h`) are deleted, from the
    /// start of the trail up to the first one that is newer. At least the server's
    /// minimum retention (`--audit-min-retention`, default 30 days).
    pub older_than: Interval,
}

/// The answer of `POST /v1/audit/prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PruneAuditResponse {
    /// Records deleted by this call.
    pub pruned: u64,
    /// The oldest record kept: the trail begins here.
    pub first_seq: u64,
    /// More records are older than `older_than` than one call deletes: call again.
    pub more: bool,
}
