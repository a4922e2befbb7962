//! Principals, their tokens, and access policies.

use serde::{Deserialize, Serialize};

use crate::{PolicyDocument, Timestamp};

/// Name of the principal that owns the token printed by `strongbox init`.
pub const ROOT_PRINCIPAL: &str = "root";
/// Name of the built-in policy that allows everything.
pub const ADMINISTRATOR_ACCESS: &str = "AdministratorAccess";

/// `POST /v1/principals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipalRequest {
    /// 1–64 characters of `A-Za-z0-9_.@+=-`.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Names of the access policies attached (each must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
}

/// `PATCH /v1/principals/{name}`: absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrincipalRequest {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Replaces the list of attached policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
}

/// Someone or something that calls the API with tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Principal {
    /// Name.
    pub name: String,
    /// This principal's own id, never reused: a principal deleted and created again under
    /// the same name gets a new one (as an IAM user's unique id). `AccessKey` rotation
    /// records it in the values it writes and refuses to issue tokens to a principal
    /// whose id changed. (Empty from a server older than ids, whose answers lack it.)
    #[serde(default)]
    pub principal_id: String,
    /// Resource name.
    pub arn: String,
    /// Free text.
    pub description: String,
    /// Attached access policies.
    pub policies: Vec<String>,
    /// Built in (`root`): cannot be changed or deleted.
    pub builtin: bool,
    /// Creation time.
    pub creation_date: Timestamp,
    /// Last change.
    pub update_date: Timestamp,
}

/// `GET /v1/principals`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListPrincipalsResponse {
    /// One page of the principals the caller may see, by name.
    pub principals: Vec<Principal>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `POST /v1/principals/{name}/tokens` (the body may be omitted).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// When the token stops working (never when absent); must be in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Free text, e.g. where the token is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A new token: the only time its value is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreatedToken {
    /// Id, to list and revoke it.
    pub token_id: String,
    /// The bearer token (`sbx_…`). Stored by the server only as a SHA-256 hash.
    pub token: String,
    /// Whose token it is.
    pub principal: String,
    /// When it stops working.
    pub expires_at: Option<Timestamp>,
    /// Creation time.
    pub creation_date: Timestamp,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token_id", &self.token_id)
            .field("token", &"<redacted>")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A token's metadata (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenInfo {
    /// Id.
    pub token_id: String,
    /// Whose token it is.
    pub principal: String,
    /// Free text.
    pub description: String,
    /// Creation time.
    pub creation_date: Timestamp,
    /// When it stops working.
    pub expires_at: Option<Timestamp>,
    /// Whether `expires_at` has passed.
    pub expired: bool,
}

/// `GET /v1/principals/{name}/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListTokensResponse {
    /// Tokens of the principal, by id.
    pub tokens: Vec<TokenInfo>,
}

/// `POST /v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePolicyRequest {
    /// 1–128 characters of `A-Za-z0-9_.-`.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The policy document.
    pub document: PolicyDocument,
}

/// `PATCH /v1/policies/{name}`: absent fields are left as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicyRequest {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Replaces the document; takes effect on the next request of every principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<PolicyDocument>,
}

/// An access policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// Resource name.
    pub arn: String,
    /// Free text.
    pub description: String,
    /// The document, in canonical form (`Action` and `Resource` always arrays). Absent
    /// only in the answer to an update by a caller that may not read the policy
    /// (`ram:GetPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<PolicyDocument>,
    /// Built in (`AdministratorAccess`): cannot be changed or deleted.
    pub builtin: bool,
    /// Creation time.
    pub creation_date: Timestamp,
    /// Last change.
    pub update_date: Timestamp,
}

/// `GET /v1/policies`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ListPoliciesResponse {
    /// One page of the policies the caller may see, by name (built-in ones included).
    pub policies: Vec<Policy>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}
