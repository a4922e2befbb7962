//! Checks beyond the route's own action: a write that makes the rotation engine act
//! later must be one the caller could do itself now.
//!
//! The guard authorizes each route's action on its resource before the handler runs.
//! Some writes delegate authority: an `AccessKey` secret with a rotation policy makes
//! the engine issue and revoke tokens of the principal its value names; an `Ssh`
//! secret's `extended_config` decides where the rotation sends the current password.
//! The service checks those with [`require`], inside the write that commits the change
//! (so the check sees exactly the state it changes). Calls made by the server itself
//! ([`Actor::Trusted`]: the rotation engine, benchmarks) are not checked.

use std::sync::Arc;

use strongbox_schemas::ErrorCode;

use super::Identity;
use super::records::Principal;
use crate::error::{Error, Result};

/// Fails with `Forbidden` unless `identity`'s policies allow `action` on `resource`.
/// The message has the guard's form, plus why the action is needed.
pub fn require(identity: &Identity, action: &str, resource: &str, why: &str) -> Result<()> {
    require_shown_as(identity, action, resource, resource, why)
}

/// [`require`] on `resource`, naming `shown` in the refusal: for a resource the caller
/// reached through another name (a key through its alias) whose target it may not
/// learn from the refusal.
fn require_shown_as(
    identity: &Identity,
    action: &str,
    resource: &str,
    shown: &str,
    why: &str,
) -> Result<()> {
    if identity.allows(action, resource) {
        return Ok(());
    }
    Err(Error::new(
        ErrorCode::Forbidden,
        format!(
            "principal {} is not allowed {action} on {shown} ({why})",
            identity.principal()
        ),
    ))
}

/// Why choosing a secret's key needs the right to use it.
const KEY_USE_WHY: &str = "a secret is sealed under the key it names, and whoever controls that key controls the secret's values";

/// Why attaching a secret to a `webhook` rotation policy needs the right to read it.
pub(super) const WEBHOOK_SENDS_WHY: &str = "a webhook policy's rotations send the next value of every secret attached to it to the policy's url";

/// Why a `webhook` rotation policy needs the right to read its signing secret.
pub(super) const WEBHOOK_SIGNS_WHY: &str = "a webhook policy's rotations sign their calls with the value of the secret signing_secret names";

/// Actions no route requires that the service checks itself: known to policy
/// documents like the routes' actions.
pub const DELEGATED_ACTIONS: [&str; 4] =
    [ATTACH_POLICY, DETACH_POLICY, USE_KEY, "kms:ReEncryptFrom"];

/// Choosing the key a secret is sealed under (`encryption_key_id` on create or update).
pub(crate) const USE_KEY: &str = "kms:GenerateDataKey";

/// Attaching the access policy `policy/{name}` to a principal (create or update).
pub(super) const ATTACH_POLICY: &str = "ram:AttachPolicy";

/// Detaching the access policy `policy/{name}` from a principal (update): a policy's
/// `Deny` statements are taken off with it.
pub(super) const DETACH_POLICY: &str = "ram:DetachPolicy";

/// The actions a caller needs on a principal to have the rotation issue and revoke
/// that principal's tokens.
pub const TOKEN_ACTIONS: [&str; 2] = ["ram:CreateToken", "ram:DeleteToken"];

/// Who makes a service call.
#[derive(Debug, Clone)]
pub enum Actor {
    /// An API caller, authorized by the guard for the route; checked further here.
    Caller(Arc<Identity>),
    /// The server itself, on behalf of this principal: nothing more is checked.
    Trusted(Principal),
}

impl Actor {
    /// The id of the principal an API caller is (`None` for the server itself): told
    /// apart from a principal created again under the name.
    pub fn principal_id(&self) -> Option<String> {
        match self {
            Actor::Caller(id) if !id.principal_id().is_empty() => {
                Some(id.principal_id().to_string())
            }
            _ => None,
        }
    }

    /// The principal recorded as the author of what the call writes.
    pub fn principal(&self) -> Principal {
        match self {
            Actor::Caller(id) => Principal::Named(id.principal().to_string()),
            Actor::Trusted(p) => p.clone(),
        }
    }

    /// Whether this is the server itself (nothing is checked).
    pub fn is_trusted(&self) -> bool {
        matches!(self, Actor::Trusted(_))
    }

    /// Whether a policy allows `action` on `resource`; always for the server itself.
    pub fn allows(&self, action: &str, resource: &str) -> bool {
        match self {
            Actor::Caller(id) => id.allows(action, resource),
            Actor::Trusted(_) => true,
        }
    }

    /// [`require`] for a caller; always `Ok` for the server itself.
    pub fn require(&self, action: &str, resource: &str, why: &str) -> Result<()> {
        match self {
            Actor::Caller(id) => require(id, action, resource, why),
            Actor::Trusted(_) => Ok(()),
        }
    }

    /// `action` on `key/{key_id}` for a key route that named the key by `alias`: the
    /// guard authorized `key/{alias}` as written, and an explicit `Deny` on the key id
    /// must hold through any alias. The refusal names `key/{alias}`, not the key id.
    pub fn require_key_behind_alias(&self, action: &str, alias: &str, key_id: &str) -> Result<()> {
        match self {
            Actor::Caller(id) => require_shown_as(
                id,
                action,
                &format!("key/{key_id}"),
                &format!("key/{alias}"),
                "a key named by alias is also authorized as the key it names",
            ),
            Actor::Trusted(_) => Ok(()),
        }
    }

    /// [`USE_KEY`] on the key a secret is to be sealed under, as the caller named it
    /// (`key/{id}` or `key/alias/{name}`), checked before the key is looked up so that
    /// the refusal is the same whether it exists or not; an alias is checked again as
    /// the key it resolves to (`keys::check_through_alias`). Otherwise a caller allowed to update a secret could seal it under a key
    /// it controls, then disable or delete that key: the values gone, with no right to
    /// delete the secret and no recovery window.
    pub fn require_key_use(&self, key_ref: &str) -> Result<()> {
        self.require(USE_KEY, &format!("key/{key_ref}"), KEY_USE_WHY)
    }

    /// `kms:GetSecretValue` on `secret/{name}`: what the caller needs to make the
    /// rotation use that secret's value or send it somewhere.
    pub fn require_read(&self, name: &str, why: &str) -> Result<()> {
        self.require("kms:GetSecretValue", &format!("secret/{name}"), why)
    }

    /// [`require_read`](Self::require_read) on a secret attached to rotation policy
    /// `policy`, whose name the caller may not be allowed to see: the refusal names the
    /// policy's attached secrets, not the secret.
    pub fn require_read_attached(&self, name: &str, policy: &str, why: &str) -> Result<()> {
        match self {
            Actor::Caller(id) => require_shown_as(
                id,
                "kms:GetSecretValue",
                &format!("secret/{name}"),
                &format!("a secret attached to rotation-policy/{policy}"),
                why,
            ),
            Actor::Trusted(_) => Ok(()),
        }
    }

    /// [`require_token_authority`](Self::require_token_authority) on the principal
    /// `name` that a value of secret `secret` names (its current one, or one a
    /// rotation issued tokens for): a caller who may not read the secret's value is
    /// refused without being told which principal it is.
    pub fn require_token_authority_named_by(
        &self,
        name: &str,
        secret: &str,
        why: &str,
    ) -> Result<()> {
        let refused = self.require_token_authority(name, why);
        let Actor::Caller(id) = self else {
            return refused;
        };
        if refused.is_err() && !id.allows("kms:GetSecretValue", &format!("secret/{secret}")) {
            return Err(Error::new(
                ErrorCode::Forbidden,
                format!(
                    "principal {} is not allowed {} on a principal that the values of secret/{secret} name ({why})",
                    id.principal(),
                    TOKEN_ACTIONS.join(" and ")
                ),
            ));
        }
        refused
    }

    /// `ram:CreateToken` and `ram:DeleteToken` on `principal/{name}`: what the caller
    /// needs to make the rotation issue and revoke that principal's tokens. `name` may
    /// be a `prefix*` entry of a policy's `principals` setting (or `*`): that needs the
    /// actions on every principal under the prefix, so an `Allow` covering the whole
    /// prefix (e.g. `principal/prefix*` or `principal/*`; rights on single members do
    /// not add up to it) and no `Deny` on any principal under it.
    pub fn require_token_authority(&self, name: &str, why: &str) -> Result<()> {
        let resource = format!("principal/{name}");
        let Some(prefix) = resource.strip_suffix('*') else {
            for action in TOKEN_ACTIONS {
                self.require(action, &resource, why)?;
            }
            return Ok(());
        };
        let Actor::Caller(id) = self else {
            return Ok(());
        };
        for action in TOKEN_ACTIONS {
            if !id.allows_everything_under(action, prefix) {
                return Err(Error::new(
                    ErrorCode::Forbidden,
                    format!(
                        "principal {} is not allowed {action} on every principal matching {resource} ({why})",
                        id.principal()
                    ),
                ));
            }
        }
        Ok(())
    }
}
